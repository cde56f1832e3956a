"""``/mj/submit/imagine`` over loopback HTTP: the grid job, its buttons and picture, and refusals."""

from __future__ import annotations

import io
import re

import pytest
import requests
from PIL import Image

from tests.emulator.family_support import (
    GRID_LABELS,
    answer,
    assert_distinct_panels,
    image_of,
    imagine,
    quadrants,
    stats,
    submit_ok,
    succeeded,
)

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def test_imagine_runs_to_a_grid_of_four_distinct_panels(start_emulator, client_for):
    api = client_for(start_emulator())
    result = answer(api, "/mj/submit/imagine", {"prompt": "  a red fox in the snow  ", "state": "s1"})
    assert result["code"] == 1 and result["description"] == "Submit success"
    assert re.fullmatch(r"\d{16}", result["result"])
    assert set(result["properties"]) == {"discordChannelId", "discordInstanceId"}

    seen = {api.task(result["result"])["status"]}
    task = succeeded(api, result["result"])
    seen.add(task["status"])
    assert task["action"] == "IMAGINE" and task["state"] == "s1" and task["progress"] == "100%"
    assert task["prompt"] == "a red fox in the snow"
    assert task["description"] == "/imagine a red fox in the snow"
    assert task["properties"]["finalPrompt"] == "a red fox in the snow"
    job_hash = task["properties"]["messageHash"]
    assert re.fullmatch(UUID, job_hash)
    assert task["submitTime"] < task["startTime"] <= task["finishTime"]

    assert [b["label"] for b in task["buttons"]] == GRID_LABELS
    ids = [b["customId"] for b in task["buttons"]]
    assert ids[:4] == [f"MJ::JOB::upsample::{i}::{job_hash}" for i in range(1, 5)]
    assert ids[4] == f"MJ::JOB::reroll::0::{job_hash}::SOLO" and task["buttons"][4]["emoji"] == "🔄"
    assert ids[5:] == [f"MJ::JOB::variation::{i}::{job_hash}" for i in range(1, 5)]
    assert all(b["type"] == 2 and b["style"] == 2 for b in task["buttons"])

    image = image_of(api, task)
    assert image.size == (512, 512) == (task["imageWidth"], task["imageHeight"])
    assert_distinct_panels(image)


def test_buttons_and_image_appear_only_when_finished(start_emulator, client_for):
    api = client_for(start_emulator(job_seconds=5))
    task_id = submit_ok(api, "/mj/submit/imagine", {"prompt": "slow job"})
    task = api.task(task_id)
    assert task["status"] in ("NOT_START", "SUBMITTED", "IN_PROGRESS")
    assert task["buttons"] == [] and "messageHash" not in task["properties"]


def test_same_prompt_same_picture_other_prompt_other_picture(start_emulator, client_for):
    api = client_for(start_emulator())
    first = image_of(api, imagine(api, "a castle"))
    again = image_of(api, imagine(api, "a castle"))
    other = image_of(api, imagine(api, "a submarine"))
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_aspect_ratio_shapes_the_panels(start_emulator, client_for):
    api = client_for(start_emulator())
    wide = image_of(api, imagine(api, "a beach --ar 16:9"))
    tall = image_of(api, imagine(api, "a tower --ar 2:3"))
    assert wide.width > wide.height and tall.height > tall.width
    assert_distinct_panels(wide)


def test_reference_images_are_uploaded_and_prefix_the_prompt(start_emulator, client_for, png, data_url):
    api = client_for(start_emulator())
    reference = png(32, 32, (20, 200, 40))
    task = imagine(api, "a meadow", base64Array=[data_url(reference), ""])
    url, _, rest = task["prompt"].partition(" ")
    assert rest == "a meadow" and url.startswith(api.url + "/_emulator/uploads/")
    assert api.session.get(url, timeout=10).content == reference
    assert_distinct_panels(image_of(api, task))


def test_image_is_served_without_a_token(start_emulator, client_for):
    api = client_for(start_emulator())
    task = imagine(api)
    response = requests.get(task["imageUrl"], timeout=10)
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).format == "PNG"


@pytest.mark.parametrize("prompt", ["", "   ", None, 12])
def test_blank_prompt_is_refused(start_emulator, client_for, prompt):
    api = client_for(start_emulator())
    result = answer(api, "/mj/submit/imagine", {"prompt": prompt})
    assert result == {"code": 4, "description": "prompt不能为空", "result": None, "properties": {}}
    assert stats(api)["tasks_created"] == 0


@pytest.mark.parametrize(
    ("prompt", "word"),
    [
        ("a pool of blood on the floor", "blood"),
        ("Twerk contest", "Twerk"),
        ("two people making love, oil painting", "making love"),
        ("a VOLUPTUOUS marble statue", "VOLUPTUOUS"),
        ("a naughty kitten", "naughty"),
    ],
)
def test_banned_word_is_refused_with_code_24_naming_it(start_emulator, client_for, prompt, word):
    api = client_for(start_emulator())
    result = answer(api, "/mj/submit/imagine", {"prompt": prompt})
    assert result["code"] == 24 and result["description"] == "可能包含敏感词" and result["result"] is None
    assert result["properties"] == {"promptEn": prompt, "bannedWord": word}
    assert stats(api)["tasks_created"] == 0
    assert stats(api)["submissions_rejected"] == {"24": 1}


def test_banned_words_match_whole_words_only(start_emulator, client_for):
    api = client_for(start_emulator())
    for prompt in ("a bloodhound in a field", "naughtyness", "lovemaking love"):
        assert answer(api, "/mj/submit/imagine", {"prompt": prompt})["code"] == 1


@pytest.mark.parametrize(
    "items",
    [["data:image/png;base64,@@@not-base64@@@"], ["https://example.com/a.png"], "not-a-list", [42]],
)
def test_bad_reference_image_is_refused(start_emulator, client_for, items):
    api = client_for(start_emulator())
    result = answer(api, "/mj/submit/imagine", {"prompt": "x", "base64Array": items})
    assert result["code"] == 4 and result["description"] == "base64格式错误"
    assert stats(api)["tasks_created"] == 0


def test_body_that_is_not_an_object_is_a_400(start_emulator, client_for):
    api = client_for(start_emulator())
    response = api.session.post(f"{api.url}/mj/submit/imagine", data=b"[1,2", timeout=10)
    assert response.status_code == 400 and "JSON object" in response.json()["error"]["message"]


def test_niji_bot_type_is_kept(start_emulator, client_for):
    api = client_for(start_emulator())
    assert imagine(api, "a koi", botType="NIJI_JOURNEY")["botType"] == "NIJI_JOURNEY"
    assert imagine(api, "a koi")["botType"] == "MID_JOURNEY"


def test_image_urls_option_lists_each_picture_of_the_grid(start_emulator, client_for):
    api = client_for(start_emulator(image_urls=True))
    task = imagine(api, "four windows")
    urls = [item["url"] for item in task["imageUrls"]]
    assert urls == [f"{api.url}/_emulator/images/{task['id']}/{i}.png" for i in range(4)]
    assert [item["thumbnail"] for item in task["imageUrls"]] == urls
    grid = quadrants(image_of(api, task))
    for url, quadrant in zip(urls, grid, strict=True):
        response = requests.get(url, timeout=10)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).convert("RGB").tobytes() == quadrant.tobytes()
    assert requests.get(f"{api.url}/_emulator/images/{task['id']}/4.png", timeout=10).status_code == 404
    upscale = succeeded(
        api,
        submit_ok(
            api, "/mj/submit/action", {"taskId": task["id"], "customId": task["buttons"][0]["customId"]}
        ),
    )
    assert upscale["imageUrls"] is None


def test_image_urls_are_absent_by_default(start_emulator, client_for):
    api = client_for(start_emulator())
    assert "imageUrls" not in imagine(api, "four windows")
