"""The MODAL flow: Vary (Region), Custom Zoom, remix and the pick buttons wait for ``/mj/submit/modal``."""

from __future__ import annotations

import time

import pytest

from airflow_provider_apicore.emulator.cli import build_parser, resolve
from tests.emulator.family_support import (
    act,
    answer,
    assert_distinct_panels,
    button,
    configure,
    difference,
    finished,
    image_of,
    imagine,
    quadrants,
    stats,
    submit_ok,
    succeeded,
)


@pytest.fixture
def api(start_emulator, client_for):
    return client_for(start_emulator())


def upscaled(api, prompt: str = "a red barn in a wheat field") -> dict:
    grid = imagine(api, prompt)
    return succeeded(api, act(api, grid, button(grid, "U2"))["result"])


def assert_waits_for_modal(api, result: dict, pre_filled: str) -> dict:
    assert result["code"] == 21 and result["description"] == "Waiting for window confirm"
    assert result["properties"] == {"finalPrompt": pre_filled, "remix": True}
    task = api.task(result["result"])
    assert task["status"] == "MODAL" and task["imageUrl"] is None and task["buttons"] == []
    return task


@pytest.mark.parametrize(("label", "action"), [("Vary (Region)", "INPAINT"), ("Custom Zoom", "ZOOM")])
def test_region_and_custom_zoom_wait_in_modal_until_confirmed(api, label, action):
    parent = upscaled(api)
    result = act(api, parent, button(parent, label))
    task = assert_waits_for_modal(api, result, parent["prompt"])
    assert task["action"] == action and task["parentId"] == parent["id"]
    time.sleep(0.5)  # more than a whole job: a MODAL task is not queued
    assert api.task(result["result"])["status"] == "MODAL"
    assert stats(api)["tasks_by_status"]["MODAL"] == 1

    body = {"taskId": result["result"], "prompt": "a blue barn --zoom 1.5"}
    if label == "Vary (Region)":
        body["maskBase64"] = "data:image/png;base64,not-checked-at-submit"
    confirmed = answer(api, "/mj/submit/modal", body)
    assert confirmed["code"] == 1 and confirmed["result"] == result["result"]
    done = succeeded(api, result["result"])
    assert done["action"] == action and done["prompt"] == "a blue barn --zoom 1.5"
    assert done["properties"]["finalPrompt"] == "a blue barn --zoom 1.5"
    image = image_of(api, done)
    assert image.size == (512, 512)
    assert_distinct_panels(image, minimum=3)
    assert [b["label"] for b in done["buttons"]][:4] == ["U1", "U2", "U3", "U4"]


def test_custom_zoom_factor_comes_from_the_modal_prompt(api):
    parent = upscaled(api)
    sizes = {}
    for zoom in ("1.25", "2"):
        result = act(api, parent, button(parent, "Custom Zoom"))
        submit_ok(api, "/mj/submit/modal", {"taskId": result["result"], "prompt": f"barn --zoom {zoom}"})
        sizes[zoom] = image_of(api, succeeded(api, result["result"]))
    source = image_of(api, parent)
    for zoom, image in sizes.items():
        side = round(256 / float(zoom))
        start = (256 - side) // 2
        inner = image.crop((start, start, start + side, start + side))
        assert difference(inner, source.resize((side, side))) < 12, zoom


def test_blank_modal_prompt_falls_back_to_the_pre_filled_one(api):
    parent = upscaled(api, "an old mill")
    result = act(api, parent, button(parent, "Custom Zoom"))
    submit_ok(api, "/mj/submit/modal", {"taskId": result["result"], "prompt": "  "})
    assert succeeded(api, result["result"])["prompt"] == "an old mill"


def test_inpaint_without_prompt_falls_back_to_the_parent_prompt(api):
    parent = upscaled(api, "an old mill")
    result = act(api, parent, button(parent, "Vary (Region)"))
    assert api.task(result["result"])["prompt"] == ""
    submit_ok(api, "/mj/submit/modal", {"taskId": result["result"]})
    assert succeeded(api, result["result"])["prompt"] == "an old mill"


def test_modal_refusals(api):
    parent = upscaled(api)
    result = act(api, parent, button(parent, "Custom Zoom"))
    assert answer(api, "/mj/submit/modal", {"prompt": "x"}) == {
        "code": 4,
        "description": "参数错误",
        "result": None,
        "properties": {},
    }
    missing = answer(api, "/mj/submit/modal", {"taskId": "1700000000000555"}, 404)
    assert missing["code"] == 3 and missing["description"] == "关联任务不存在或已失效"
    banned = answer(api, "/mj/submit/modal", {"taskId": result["result"], "prompt": "blood moon"})
    assert banned["code"] == 24 and banned["properties"]["bannedWord"] == "blood"
    assert api.task(result["result"])["status"] == "MODAL"


def test_repeated_modal_starts_nothing_new(api):
    parent = upscaled(api)
    result = act(api, parent, button(parent, "Custom Zoom"))
    submit_ok(api, "/mj/submit/modal", {"taskId": result["result"], "prompt": "x --zoom 2"})
    created = stats(api)["tasks_created"]
    again = answer(api, "/mj/submit/modal", {"taskId": result["result"], "prompt": "x --zoom 2"})
    assert again["code"] == 21 and again["result"] == result["result"]
    assert stats(api)["tasks_created"] == created
    assert succeeded(api, result["result"])["status"] == "SUCCESS"


def test_remix_option_sends_variation_reroll_and_pan_to_modal(api):
    grid = imagine(api, "a forest")
    plain = act(api, grid, button(grid, "V1"))
    assert plain["code"] == 1
    configure(api, remix=True)
    for custom_id in (button(grid, "V2"), button(grid, "", "reroll")):
        assert_waits_for_modal(api, act(api, grid, custom_id), "a forest")
    configure(api, remix=False)
    up = succeeded(api, act(api, grid, button(grid, "U1"))["result"])
    pan = act(api, up, button(up, "", "pan_right"), enableRemix=True)
    task = assert_waits_for_modal(api, pan, "a forest")
    submit_ok(api, "/mj/submit/modal", {"taskId": task["id"], "prompt": "a forest at night"})
    assert succeeded(api, task["id"])["action"] == "PAN"
    # Upscales never wait for a modal, remix or not.
    assert act(api, grid, button(grid, "U3"), enableRemix=True)["code"] == 1


def test_remix_option_is_validated(api):
    response = api.session.put(f"{api.url}/_emulator/config", json={"remix": "yes"}, timeout=10)
    assert response.status_code == 400 and "remix" in response.json()["error"]["message"]


def test_modal_confirm_respects_the_queue_limit(start_emulator, client_for):
    api = client_for(start_emulator(concurrency=1, queue_size=0, job_seconds=1.0))
    parent = upscaled(api)
    held = act(api, parent, button(parent, "Custom Zoom"))["result"]
    busy = submit_ok(api, "/mj/submit/imagine", {"prompt": "keeps the only slot"})
    refused = answer(api, "/mj/submit/modal", {"taskId": held, "prompt": "x"})
    assert refused["code"] == 23 and refused["result"] is None
    assert api.task(held)["status"] == "MODAL"
    succeeded(api, busy)
    assert answer(api, "/mj/submit/modal", {"taskId": held, "prompt": "x"})["code"] == 1
    assert finished(api, held)["status"] == "SUCCESS"


# --------------------------------------------------------------------------- describe pick buttons
def test_describe_offers_picreader_buttons_and_a_pick_waits_for_modal(api, png, data_url):
    describe_id = api.submit_ok(png(80, 60, (30, 90, 200)))
    described = succeeded(api, describe_id)
    ids = [b["customId"] for b in described["buttons"]]
    assert ids == [
        "MJ::Job::PicReader::1",
        "MJ::Job::PicReader::2",
        "MJ::Job::PicReader::3",
        "MJ::Job::PicReader::4",
        "MJ::Picread::Retry",
        "MJ::Job::PicReader::all",
    ]
    assert [b["emoji"] for b in described["buttons"]][:4] == ["1️⃣", "2️⃣", "3️⃣", "4️⃣"]
    third = described["prompt"].split("\n\n")[2].partition(" ")[2]
    result = act(api, described, "MJ::Job::PicReader::3")
    task = assert_waits_for_modal(api, result, third)
    assert task["action"] == "IMAGINE"
    submit_ok(api, "/mj/submit/modal", {"taskId": task["id"]})
    done = succeeded(api, task["id"])
    assert done["prompt"] == third and done["description"] == f"/imagine {third}"
    assert_distinct_panels(image_of(api, done))


def test_imagine_all_and_retry_on_a_describe(api, png):
    described = succeeded(api, api.submit_ok(png(40, 40)))
    result = act(api, described, "MJ::Job::PicReader::all", state="batch")
    assert result["code"] == 1 and result["description"] == "成功"
    ids = result["result"].split(",")
    assert len(ids) == 4
    tasks = [succeeded(api, task_id) for task_id in ids]
    assert [t["state"] for t in tasks] == ["batch::1", "batch::2", "batch::3", "batch::4"]
    prompts = [line.partition(" ")[2] for line in described["prompt"].split("\n\n")]
    assert [t["prompt"] for t in tasks] == prompts
    retry = succeeded(
        api,
        submit_ok(api, "/mj/submit/action", {"taskId": described["id"], "customId": "MJ::Picread::Retry"}),
    )
    assert retry["action"] == "DESCRIBE" and retry["prompt"] == described["prompt"]
    unknown = act(api, described, "MJ::Job::PicReader::5")
    assert unknown["code"] == 4 and unknown["description"] == "未知的 Action 类型"


def test_remix_is_a_command_line_option_and_an_environment_variable():
    assert resolve(build_parser().parse_args([]), {})[1].remix is False
    assert resolve(build_parser().parse_args(["--remix", "true"]), {})[1].remix is True
    assert resolve(build_parser().parse_args([]), {"APICORE_EMULATOR_REMIX": "1"})[1].remix is True


def test_vary_region_keeps_what_the_mask_leaves_black(api, png, data_url):
    parent = upscaled(api)
    held = act(api, parent, button(parent, "Vary (Region)"))["result"]
    # A mask of another size: left half black (keep), right half white (redraw).
    mask = png(64, 32, lambda x, y: (0, 0, 0) if x < 32 else (255, 255, 255))
    submit_ok(api, "/mj/submit/modal", {"taskId": held, "prompt": "a barn", "maskBase64": data_url(mask)})
    source = image_of(api, parent)
    for panel in quadrants(image_of(api, succeeded(api, held))):
        assert panel.crop((0, 0, 128, 256)).tobytes() == source.crop((0, 0, 128, 256)).tobytes()
        assert difference(panel.crop((128, 0, 256, 256)), source.crop((128, 0, 256, 256))) > 1
