"""Blend, shorten, face swap and image-seed over loopback HTTP."""

from __future__ import annotations

import re

import pytest

from tests.emulator.family_support import (
    act,
    answer,
    assert_distinct_panels,
    button,
    finished,
    image_of,
    imagine,
    stats,
    submit_ok,
    succeeded,
)

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 60, 220)


@pytest.fixture
def api(start_emulator, client_for):
    return client_for(start_emulator())


# ------------------------------------------------------------------------------------------- blend
@pytest.mark.parametrize("count", [2, 5])
def test_blend_runs_to_a_grid(api, png, data_url, count):
    images = [data_url(png(24, 24, (40 * i, 200 - 30 * i, 90))) for i in range(count)]
    task = succeeded(api, submit_ok(api, "/mj/submit/blend", {"base64Array": images}))
    assert task["action"] == "BLEND" and task["description"] == f"/blend {task['id']} {count}"
    image = image_of(api, task)
    assert image.size == (512, 512)
    assert_distinct_panels(image)
    assert [b["label"] for b in task["buttons"]][:4] == ["U1", "U2", "U3", "U4"]


@pytest.mark.parametrize(("dimensions", "wide"), [("PORTRAIT", False), ("LANDSCAPE", True)])
def test_blend_dimensions_shape_the_grid(api, png, data_url, dimensions, wide):
    body = {"base64Array": [data_url(png(8, 8, RED)), data_url(png(8, 8, BLUE))], "dimensions": dimensions}
    image = image_of(api, succeeded(api, submit_ok(api, "/mj/submit/blend", body)))
    assert (image.width > image.height) is wide and image.width != image.height


def test_blend_takes_its_colours_from_the_inputs(api, png, data_url):
    def grid(colour):
        body = {"base64Array": [data_url(png(8, 8, colour)), data_url(png(9, 9, colour))]}
        return image_of(api, succeeded(api, submit_ok(api, "/mj/submit/blend", body)))

    reds, greens = grid(RED), grid(GREEN)
    # Panel 1's background (top left corner) follows the input colour's hue.
    r1, g1, _ = reds.getpixel((2, 2))
    r2, g2, _ = greens.getpixel((2, 2))
    assert r1 > g1 and g2 > r2


@pytest.mark.parametrize("count", [0, 1, 6])
def test_blend_needs_two_to_five_images(api, png, data_url, count):
    body = {"base64Array": [data_url(png(4, 4, (i, i, i))) for i in range(count)]}
    result = answer(api, "/mj/submit/blend", body)
    assert result == {"code": 4, "description": "base64List参数错误", "result": None, "properties": {}}
    assert answer(api, "/mj/submit/blend", {})["description"] == "base64List参数错误"


def test_blend_refusals(api, png, data_url):
    pair = [data_url(png(4, 4, RED)), data_url(png(4, 4, BLUE))]
    null = answer(api, "/mj/submit/blend", {"base64Array": pair, "dimensions": None})
    assert (null["code"], null["description"]) == (4, "dimensions参数错误")
    bad = answer(api, "/mj/submit/blend", {"base64Array": [pair[0], "data:image/png;base64,###"]})
    assert (bad["code"], bad["description"]) == (4, "base64格式错误")
    unknown = answer(api, "/mj/submit/blend", {"base64Array": pair, "dimensions": "ROUND"})
    assert unknown["success"] is False and unknown["code"] == -1 and "ROUND" in unknown["message"]
    assert stats(api)["tasks_created"] == 0


# ----------------------------------------------------------------------------------------- shorten
def test_shorten_answers_five_numbered_prompts_and_buttons(api):
    prompt = "a very detailed portrait of an old fisherman with a pipe, dramatic lighting --ar 2:3"
    task_id = submit_ok(api, "/mj/submit/shorten", {"prompt": prompt})
    assert api.task(task_id)["description"] == f"/shorten {prompt}"
    task = succeeded(api, task_id)
    assert task["action"] == "SHORTEN" and task["imageUrl"] is None
    text = task["properties"]["finalPrompt"]
    assert task["description"] == text
    _head, marker, rest = text.partition("Shortened prompts")
    assert marker and text.rstrip().endswith("Click on a button to imagine one of the shortened prompts")
    numbered = re.findall(r"^(\d)\ufe0f\u20e3 (.+)$", rest, re.MULTILINE)
    assert [n for n, _ in numbered] == ["1", "2", "3", "4", "5"]
    prompts = [p for _, p in numbered]
    assert all(p.endswith("--ar 2:3") for p in prompts)
    assert [len(p) for p in prompts] == sorted((len(p) for p in prompts), reverse=True)
    assert len(prompts[0]) > len(prompts[4])
    assert [b["customId"] for b in task["buttons"]] == [f"MJ::Job::PromptAnalyzer::{i}" for i in range(1, 6)]
    assert [b["emoji"] for b in task["buttons"]] == ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣"]

    picked = act(api, task, "MJ::Job::PromptAnalyzer::2")
    assert picked["code"] == 21 and picked["properties"]["finalPrompt"] == prompts[1]
    submit_ok(api, "/mj/submit/modal", {"taskId": picked["result"]})
    assert succeeded(api, picked["result"])["prompt"] == prompts[1]


def test_shorten_refusals(api):
    assert answer(api, "/mj/submit/shorten", {"prompt": ""})["description"] == "prompt不能为空"
    banned = answer(api, "/mj/submit/shorten", {"prompt": "a naughty robot"})
    assert banned["code"] == 24 and banned["properties"] == {
        "promptEn": "a naughty robot",
        "bannedWord": "naughty",
    }


# --------------------------------------------------------------------------------------- face swap
def test_swap_face_runs_to_an_image(api, png, data_url):
    body = {"sourceBase64": data_url(png(16, 16, RED)), "targetBase64": data_url(png(120, 90, BLUE))}
    task = succeeded(api, submit_ok(api, "/mj/insight-face/swap", body))
    assert task["action"] == "SWAP_FACE" and task["botType"] == "INSIGHT_FACE" and task["buttons"] == []
    image = image_of(api, task)
    assert image.size == (120, 90)
    # The target stays the background; the face in the source's colour sits in the middle.
    assert image.getpixel((2, 2)) == BLUE
    r, _g, b = image.getpixel((60, 36))
    assert r > 150 and b < 100


@pytest.mark.parametrize(
    ("fields", "description"),
    [
        ({"targetBase64": "T"}, "人脸图片不能为空"),
        ({"sourceBase64": "", "targetBase64": "T"}, "人脸图片不能为空"),
        ({"sourceBase64": "S"}, "目标图片不能为空"),
        ({"sourceBase64": "S", "targetBase64": "S"}, "人脸图片和目标图片不能相同"),
        ({"sourceBase64": "data:image/png;base64,%%%", "targetBase64": "T"}, "人脸图片格式错误"),
    ],
)
def test_swap_face_refusals(api, png, data_url, fields, description):
    images = {"S": data_url(png(8, 8, RED)), "T": data_url(png(8, 8, BLUE))}
    body = {key: images.get(value, value) for key, value in fields.items()}
    result = answer(api, "/mj/insight-face/swap", body)
    assert (result["code"], result["description"]) == (4, description)
    assert stats(api)["tasks_created"] == 0


# -------------------------------------------------------------------------------------- image-seed
def seed(api, task_id: str, status: int = 200) -> dict:
    response = api.session.get(f"{api.url}/mj/task/{task_id}/image-seed", timeout=10)
    assert response.status_code == status, response.text
    return response.json()


def test_image_seed_of_finished_jobs(api, png):
    first = imagine(api, "a lantern")
    again = imagine(api, "a lantern")
    other = imagine(api, "a kettle")
    answer_one = seed(api, first["id"])
    assert answer_one["code"] == 1 and answer_one["description"] == "成功" and answer_one["properties"] == {}
    assert re.fullmatch(r"\d{1,10}", answer_one["result"])
    assert seed(api, first["id"]) == answer_one
    assert seed(api, again["id"])["result"] == answer_one["result"]
    assert seed(api, other["id"])["result"] != answer_one["result"]
    upscaled = succeeded(api, act(api, first, button(first, "U1"))["result"])
    assert seed(api, upscaled["id"])["result"] != answer_one["result"]
    described = succeeded(api, api.submit_ok(png(10, 10)))
    assert re.fullmatch(r"\d+", seed(api, described["id"])["result"])


def test_image_seed_refusals(start_emulator, client_for):
    api = client_for(start_emulator(job_seconds=30))
    missing = seed(api, "1700000000000777", 404)
    assert (missing["code"], missing["description"]) == (3, "关联任务不存在或已失效")
    running = submit_ok(api, "/mj/submit/imagine", {"prompt": "still drawing"})
    early = seed(api, running, 400)
    assert (early["code"], early["description"]) == (4, "关联任务状态错误")


def test_image_seed_of_a_failed_job_is_refused(start_emulator, client_for):
    api = client_for(start_emulator(faults={"task_failure": 1.0}))
    task_id = submit_ok(api, "/mj/submit/imagine", {"prompt": "doomed"})
    assert finished(api, task_id)["status"] == "FAILURE"
    assert seed(api, task_id, 400)["description"] == "关联任务状态错误"
