"""``/mj/submit/action`` and the legacy ``/mj/submit/change``: buttons, their jobs and refusals."""

from __future__ import annotations

import pytest

from tests.emulator.family_support import (
    UPSCALE_LABELS,
    act,
    answer,
    assert_distinct_panels,
    button,
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


@pytest.mark.parametrize("index", [1, 2, 3, 4])
def test_upscale_is_the_grid_panel_alone_at_full_size(api, index):
    grid = imagine(api, "a lighthouse")
    result = act(api, grid, button(grid, f"U{index}"))
    assert result["code"] == 1 and result["result"] != grid["id"]
    task = succeeded(api, result["result"])
    assert task["action"] == "UPSCALE" and task["parentId"] == grid["id"]
    assert task["description"] == f"/up {grid['id']} U{index}"
    assert task["prompt"] == "a lighthouse"
    image = image_of(api, task)
    assert image.size == (256, 256) == (task["imageWidth"], task["imageHeight"])
    assert image.tobytes() == quadrants(image_of(api, grid))[index - 1].tobytes()


def test_upscale_offers_the_upscale_button_set(api):
    grid = imagine(api, "a lighthouse")
    task = succeeded(api, act(api, grid, button(grid, "U1"))["result"])
    job = task["properties"]["messageHash"]
    assert [b["label"] for b in task["buttons"]] == UPSCALE_LABELS
    ids = [b["customId"] for b in task["buttons"]]
    assert ids == [
        f"MJ::JOB::upsample_v7_2x_subtle::1::{job}::SOLO",
        f"MJ::JOB::upsample_v7_2x_creative::1::{job}::SOLO",
        f"MJ::JOB::low_variation::1::{job}::SOLO",
        f"MJ::JOB::high_variation::1::{job}::SOLO",
        f"MJ::Inpaint::1::{job}::SOLO",
        f"MJ::Outpaint::50::1::{job}::SOLO",
        f"MJ::Outpaint::75::1::{job}::SOLO",
        f"MJ::CustomZoom::1::{job}",
        f"MJ::JOB::pan_left::1::{job}::SOLO",
        f"MJ::JOB::pan_right::1::{job}::SOLO",
        f"MJ::JOB::pan_up::1::{job}::SOLO",
        f"MJ::JOB::pan_down::1::{job}::SOLO",
        f"MJ::JOB::reroll::0::{job}::SOLO",
    ]
    assert [b["emoji"] for b in task["buttons"]][8:] == ["⬅️", "➡️", "⬆️", "⬇️", "🔄"]


def test_prompt_version_picks_the_upscale_again_buttons(api):
    grid = imagine(api, "a lighthouse --v 5.2")
    assert button(grid, "U1")
    task = succeeded(api, act(api, grid, button(grid, "U1"))["result"])
    labels = [b["label"] for b in task["buttons"]]
    assert labels[:2] == ["Upscale (Subtle)", "Upscale (Creative)"]
    v5 = imagine(api, "a lighthouse --v 5")
    task5 = succeeded(api, act(api, v5, button(v5, "U1"))["result"])
    assert [b["label"] for b in task5["buttons"]][:2] == ["Upscale (2x)", "Upscale (4x)"]


def test_upscale_again_doubles_the_size(api):
    grid = imagine(api)
    upscaled = succeeded(api, act(api, grid, button(grid, "U2"))["result"])
    again = succeeded(api, act(api, upscaled, button(upscaled, "Upscale (Creative)"))["result"])
    assert again["action"] == "UPSCALE_HD"
    image = image_of(api, again)
    assert image.size == (512, 512)
    assert difference(image.resize((256, 256)), image_of(api, upscaled)) < 8


@pytest.mark.parametrize("label", ["V1", "V4"])
def test_variation_is_a_new_grid_close_to_its_panel(api, label):
    grid = imagine(api, "a windmill")
    task = succeeded(api, act(api, grid, button(grid, label))["result"])
    assert task["action"] == "VARIATION" and task["description"] == f"/up {grid['id']} {label}"
    image = image_of(api, task)
    assert image.size == (512, 512)
    assert_distinct_panels(image, minimum=3)
    source = quadrants(image_of(api, grid))[int(label[1]) - 1]
    others = [q for i, q in enumerate(quadrants(image_of(api, grid))) if i != int(label[1]) - 1]
    # Each variation looks more like its source panel than like the grid's other panels.
    for panel in quadrants(image):
        assert difference(panel, source) < min(difference(panel, other) for other in others)


def test_reroll_is_a_new_grid(api):
    grid = imagine(api, "a windmill")
    task = succeeded(api, act(api, grid, button(grid, "", "reroll"))["result"])
    assert task["action"] == "REROLL" and task["description"] == f"/up {grid['id']} R"
    image = image_of(api, task)
    assert_distinct_panels(image)
    assert difference(image, image_of(api, grid)) > 12
    assert [b["label"] for b in task["buttons"]][:4] == ["U1", "U2", "U3", "U4"]


def test_vary_subtle_and_strong_on_an_upscale(api):
    grid = imagine(api, "a windmill")
    upscaled = succeeded(api, act(api, grid, button(grid, "U3"))["result"])
    subtle = image_of(api, succeeded(api, act(api, upscaled, button(upscaled, "Vary (Subtle)"))["result"]))
    strong = image_of(api, succeeded(api, act(api, upscaled, button(upscaled, "Vary (Strong)"))["result"]))
    source = image_of(api, upscaled)
    spread_subtle = max(difference(panel, source) for panel in quadrants(subtle))
    spread_strong = max(difference(panel, source) for panel in quadrants(strong))
    assert 0 < spread_subtle < spread_strong


@pytest.mark.parametrize(("label", "factor"), [("Zoom Out 2x", 2), ("Zoom Out 1.5x", 1.5)])
def test_zoom_out_draws_the_parent_smaller_in_every_panel(api, label, factor):
    grid = imagine(api, "a cabin")
    upscaled = succeeded(api, act(api, grid, button(grid, "U1"))["result"])
    task = succeeded(api, act(api, upscaled, button(upscaled, label))["result"])
    assert task["action"] == "ZOOM"
    image = image_of(api, task)
    assert_distinct_panels(image, minimum=3)
    side = round(256 / factor)
    start = (256 - side) // 2
    parent = image_of(api, upscaled).resize((side, side))
    for panel in quadrants(image):
        assert difference(panel.crop((start, start, start + side, start + side)), parent) < 10


@pytest.mark.parametrize(("direction", "emoji"), [("left", "⬅️"), ("up", "⬆️")])
def test_pan_shifts_the_parent_and_draws_the_uncovered_part(api, direction, emoji):
    grid = imagine(api, "a cabin")
    upscaled = succeeded(api, act(api, grid, button(grid, "U4"))["result"])
    custom_id = next(b["customId"] for b in upscaled["buttons"] if b["emoji"] == emoji)
    assert f"pan_{direction}" in custom_id
    task = succeeded(api, act(api, upscaled, custom_id)["result"])
    assert task["action"] == "PAN"
    parent = image_of(api, upscaled)
    shift = round(256 / 3)
    for panel in quadrants(image_of(api, task)):
        if direction == "left":  # the old picture moved right: its left part is now on the right
            moved, kept = panel.crop((shift, 0, 256, 256)), parent.crop((0, 0, 256 - shift, 256))
        else:
            moved, kept = panel.crop((0, shift, 256, 256)), parent.crop((0, 0, 256, 256 - shift))
        assert moved.tobytes() == kept.tobytes()


# ------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("body", [{}, {"taskId": "", "customId": "x"}, {"taskId": "1", "customId": " "}])
def test_blank_task_id_or_custom_id_is_refused(api, body):
    result = answer(api, "/mj/submit/action", body)
    assert result == {"code": 4, "description": "参数错误", "result": None, "properties": {}}


def test_unknown_parent_is_a_404_with_code_3(api):
    result = answer(
        api, "/mj/submit/action", {"taskId": "1700000000000123", "customId": "MJ::JOB::upsample::1::x"}, 404
    )
    assert result["code"] == 3 and result["description"] == "关联任务不存在或已失效"


def test_parent_that_is_not_finished_is_refused(start_emulator, client_for):
    api = client_for(start_emulator(job_seconds=30))
    task_id = submit_ok(api, "/mj/submit/imagine", {"prompt": "a slow job"})
    result = answer(api, "/mj/submit/action", {"taskId": task_id, "customId": "MJ::JOB::upsample::1::x"})
    assert result["code"] == 4 and result["description"] == "关联任务状态错误"


def test_failed_parent_is_refused(start_emulator, client_for):
    api = client_for(start_emulator(faults={"task_failure": 1.0}))
    task_id = submit_ok(api, "/mj/submit/imagine", {"prompt": "doomed"})
    assert finished(api, task_id)["status"] == "FAILURE"
    result = answer(api, "/mj/submit/action", {"taskId": task_id, "customId": "MJ::JOB::upsample::1::x"})
    assert result["description"] == "关联任务状态错误"


def test_custom_id_the_parent_does_not_offer_is_refused(api):
    grid = imagine(api)
    other = imagine(api, "another")
    job = grid["properties"]["messageHash"]
    refused = [
        f"MJ::JOB::upsample::5::{job}",  # no fifth panel
        button(other, "U1"),  # another task's button
        f"MJ::JOB::pan_left::1::{job}::SOLO",  # an upscale's button, not a grid's
        "MJ::BOOKMARK::x",
    ]
    for custom_id in refused:
        result = act(api, grid, custom_id)
        assert result["code"] == 4 and result["description"] == "未知的 Action 类型", custom_id
    created = stats(api)["tasks_created"]
    assert created == 2


# ------------------------------------------------------------------------------------ legacy change
@pytest.mark.parametrize(
    ("action", "index", "expected"), [("UPSCALE", 3, "UPSCALE"), ("reroll", None, "REROLL")]
)
def test_change_runs_like_the_matching_button(api, action, index, expected):
    grid = imagine(api, "a harbour")
    body = {"taskId": grid["id"], "action": action, **({"index": index} if index else {})}
    task = succeeded(api, submit_ok(api, "/mj/submit/change", body))
    assert task["action"] == expected
    if expected == "UPSCALE":
        assert image_of(api, task).tobytes() == quadrants(image_of(api, grid))[2].tobytes()


def test_change_refusals(api):
    grid = imagine(api, "a harbour")
    upscaled = succeeded(api, act(api, grid, button(grid, "U1"))["result"])
    cases = [
        ({"action": "UPSCALE", "index": 1}, 200, 4, "taskId不能为空"),
        ({"taskId": grid["id"], "action": "ZOOM"}, 200, 4, "action参数错误"),
        ({"taskId": "1700000000000999", "action": "UPSCALE", "index": 1}, 404, 3, "关联任务不存在或已失效"),
        ({"taskId": upscaled["id"], "action": "VARIATION", "index": 1}, 200, 4, "关联任务不允许执行变化"),
    ]
    for body, status, code, description in cases:
        result = answer(api, "/mj/submit/change", body, status)
        assert (result["code"], result["description"]) == (code, description), body
