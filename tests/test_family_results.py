"""Result mappers of imagine/action/blend/swap-face/shorten tasks, over every server's task shape."""

from __future__ import annotations

import json

import pytest

from airflow_provider_apicore.exceptions import ApicoreError, TaskFailedError
from airflow_provider_apicore.family_results import parse_shortened_prompts, shorten_result, task_result
from airflow_provider_apicore.models import MJTask

H = "0ddb91a0-af46-4ae9-8e8e-c271074eb6e6"
GRID_BUTTONS = [
    *[
        {"customId": f"MJ::JOB::upsample::{i}::{H}", "emoji": "", "label": f"U{i}", "type": 2, "style": 2}
        for i in (1, 2, 3, 4)
    ],
    {"customId": f"MJ::JOB::reroll::0::{H}::SOLO", "emoji": "🔄", "label": "", "type": 2, "style": 2},
    *[
        {"customId": f"MJ::JOB::variation::{i}::{H}", "emoji": "", "label": f"V{i}", "type": 2, "style": 2}
        for i in (1, 2, 3, 4)
    ],
]

# new-api's fetch DTO (protocol §9.5): every field present, zero values, description = submit text.
NEW_API = {
    "id": "1730621826053455",
    "action": "IMAGINE",
    "customId": "",
    "botType": "",
    "prompt": "pig --v 6.1",
    "promptEn": "pig --v 6.1",
    "description": "Submit success",
    "state": "",
    "submitTime": 1730621826053,
    "startTime": 1730621828024,
    "finishTime": 1730621855817,
    "imageUrl": "https://api.example/mj/image/1730621826053455",
    "videoUrl": "",
    "videoUrls": None,
    "status": "SUCCESS",
    "progress": "100%",
    "failReason": "",
    "buttons": GRID_BUTTONS,
    "maskBase64": "",
    "properties": {"finalPrompt": "pig --v 6.1 --ar 1:1", "finalZhPrompt": ""},
}

# C's task object with imageUrls and dimensions (protocol §11).
C_TASK = {
    **NEW_API,
    "imageUrls": [{"url": f"https://cdn.midjourney.com/{H}/0_{i}.png", "thumbnail": "t"} for i in range(4)],
    "imageWidth": 2048,
    "imageHeight": "2048",
    "seed": "3194567812",
    "state": "run-7",
}


def test_a_new_api_imagine_task_maps_to_the_typed_result() -> None:
    result = task_result(MJTask.from_json(NEW_API))
    assert result["task_id"] == "1730621826053455"
    assert result["status"] == "SUCCESS"
    assert result["action"] == "IMAGINE"
    assert result["image_url"] == "https://api.example/mj/image/1730621826053455"
    assert result["image_urls"] == []
    assert result["actions"] == ["upscale 1-4", "reroll", "variation 1-4"]
    assert result["buttons"][0] == {
        "label": "U1",
        "custom_id": f"MJ::JOB::upsample::1::{H}",
        "emoji": "",
        "action": "upscale",
        "index": 1,
    }
    assert result["prompt"] == "pig --v 6.1"
    assert result["final_prompt"] == "pig --v 6.1 --ar 1:1"
    assert result["state"] is None  # "" is no state
    assert result["duration_seconds"] == 29.764
    assert "files" not in result
    json.dumps(result)  # XCom-ready


def test_a_c_task_gives_image_urls_dimensions_and_seed() -> None:
    result = task_result(MJTask.from_json(C_TASK), files=["/out/a.png"])
    assert result["image_urls"] == [f"https://cdn.midjourney.com/{H}/0_{i}.png" for i in range(4)]
    assert (result["width"], result["height"], result["seed"]) == (2048, 2048, "3194567812")
    assert result["state"] == "run-7"
    assert result["files"] == ["/out/a.png"]


def test_zero_times_and_missing_buttons_give_nones_and_empty_lists() -> None:
    raw = {**NEW_API, "startTime": 0, "finishTime": 0, "buttons": None, "properties": {}}
    result = task_result(MJTask.from_json(raw))
    assert result["buttons"] == [] and result["actions"] == []
    assert result["start_time"] is None and result["duration_seconds"] is None
    assert result["final_prompt"] is None


def test_failed_and_unfinished_tasks_raise() -> None:
    with pytest.raises(TaskFailedError, match="banned"):
        task_result(MJTask.from_json({**NEW_API, "status": "FAILURE", "failReason": "banned prompt"}))
    with pytest.raises(ApicoreError, match="not finished"):
        task_result(MJTask.from_json({**NEW_API, "status": "IN_PROGRESS"}))


ANALYSIS = (
    "**IMPORTANT TOKENS**\n"
    "a (0.35) red fox (1.00) snowy (0.60) forest (0.40)\n\n"
    "**Shortened prompts**\n"
    "1️⃣ red fox in a snowy forest\n\n"
    "2️⃣ red fox, snowy forest, dawn\n\n"
    "3️⃣ red fox\n\n"
    "4️⃣ a red fox in the snow --ar 3:2\n\n"
    "5️⃣ fox, snow\n\n"
    "Click on a button to imagine one of the shortened prompts"
)
PROMPTS = [
    "red fox in a snowy forest",
    "red fox, snowy forest, dawn",
    "red fox",
    "a red fox in the snow --ar 3:2",
    "fox, snow",
]


def test_shortened_prompts_are_read_from_their_section_only() -> None:
    assert parse_shortened_prompts(ANALYSIS) == PROMPTS
    plain = ANALYSIS.replace("1️⃣", "1.").replace("2️⃣", "2.").replace("3️⃣", "3.").replace("4️⃣", "4.")
    assert parse_shortened_prompts(plain.replace("5️⃣", "5.")) == PROMPTS
    assert parse_shortened_prompts(None) == [] and parse_shortened_prompts("  ") == []


def shorten_task(**fields) -> MJTask:
    raw = {**NEW_API, "action": "SHORTEN", "imageUrl": "", "buttons": [], **fields}
    return MJTask.from_json(raw)


def test_shorten_through_new_api_reads_properties_final_prompt() -> None:
    # new-api keeps the submit description; only finalPrompt carries the analysis.
    result = shorten_result(shorten_task(properties={"finalPrompt": ANALYSIS}))
    assert result["prompts"] == PROMPTS
    assert result["analysis"] == ANALYSIS
    assert result["action"] == "SHORTEN" and result["image_url"] is None


def test_shorten_from_a_c_server_reads_the_description_when_final_prompt_is_absent() -> None:
    result = shorten_result(shorten_task(description=ANALYSIS, properties={}))
    assert result["prompts"] == PROMPTS


def test_final_prompt_wins_over_the_description() -> None:
    other = ANALYSIS.replace("fox, snow", "wolf")
    result = shorten_result(shorten_task(description=other, properties={"finalPrompt": ANALYSIS}))
    assert result["prompts"] == PROMPTS


def test_a_submit_description_is_not_taken_for_prompts() -> None:
    result = shorten_result(shorten_task(description="Submit success", properties={}, promptEn=""))
    assert result["prompts"] == [] and result["analysis"] is None
