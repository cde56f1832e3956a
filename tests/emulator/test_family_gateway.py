"""The gateway mode (new-api in front of the proxy) applies to the family's endpoints too."""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image

from tests.emulator.family_support import act, answer, button, submit_ok


@pytest.fixture
def api(start_emulator, client_for):
    return client_for(start_emulator(gateway=True, gateway_refresh=0.1))


def settled(api, task_id: str, status: str = "SUCCESS", timeout: float = 15) -> dict:
    """Fetch through the gateway until its copy shows ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        task = api.task(task_id)
        if task["status"] == status:
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.03)


def test_imagine_through_the_gateway(api):
    task_id = submit_ok(api, "/mj/submit/imagine", {"prompt": "a fox"})
    first = api.task(task_id)
    assert first["status"] == "" and first["startTime"] == 0 and first["action"] == "IMAGINE"
    task = settled(api, task_id)
    assert task["description"] == "Submit success" and task["prompt"] == "a fox"
    assert task["imageUrl"] == f"{api.url}/mj/image/{task_id}"
    assert [b["label"] for b in task["buttons"]][:4] == ["U1", "U2", "U3", "U4"]
    response = requests.get(task["imageUrl"], timeout=10)  # no token, as new-api serves it
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (512, 512)


def test_modal_answers_through_the_gateway(api):
    grid = settled(api, submit_ok(api, "/mj/submit/imagine", {"prompt": "a fox"}))
    upscaled = settled(api, act(api, grid, button(grid, "U1"))["result"])
    assert upscaled["action"] == "UPSCALE"
    # Custom Zoom keeps its code 21; a remix variation's 21 becomes 1, its task still reads MODAL.
    zoom = act(api, upscaled, button(upscaled, "Custom Zoom"))
    assert zoom["code"] == 21 and zoom["description"] == "Waiting for window confirm"
    assert settled(api, zoom["result"], "MODAL")["action"] == "CUSTOM_ZOOM"
    remix = act(api, grid, button(grid, "V2"), enableRemix=True)
    assert remix["code"] == 1 and remix["description"] == "Waiting for window confirm"
    assert settled(api, remix["result"], "MODAL")["action"] == "VARIATION"
    submit_ok(api, "/mj/submit/modal", {"taskId": zoom["result"], "prompt": "a fox --zoom 2"})
    done = settled(api, zoom["result"])
    assert done["imageUrl"].endswith(f"/mj/image/{zoom['result']}")


def test_shorten_result_is_read_from_final_prompt_through_the_gateway(api):
    task_id = submit_ok(api, "/mj/submit/shorten", {"prompt": "a small red boat on a calm lake"})
    task = settled(api, task_id)
    assert task["description"] == "Submit success"  # the gateway keeps the submit text
    assert "Shortened prompts" in task["properties"]["finalPrompt"]
    assert task["imageUrl"] == ""


def test_gateway_passes_upstream_refusals_through(api):
    banned = answer(api, "/mj/submit/imagine", {"prompt": "blood"})
    assert banned["code"] == 24 and banned["properties"]["bannedWord"] == "blood"
    missing = answer(api, "/mj/submit/action", {"taskId": "1", "customId": "MJ::JOB::upsample::1::x"}, 404)
    assert missing["code"] == 3
