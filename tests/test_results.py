"""results: the one mapping from a finished task (or a tracker event) to a result or an error."""

from __future__ import annotations

import json

import pytest

from airflow_provider_apicore.exceptions import (
    ApicoreError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.results import describe_result, outcome
from airflow_provider_apicore.tracking import TaskTracker

PROMPTS = [
    "a watercolor painting of a red balloon over rooftops, soft light --ar 4:3",
    "red balloon drifting in a pale sky, minimalist illustration --ar 4:3",
    "children's book style balloon above a small town --ar 4:3",
    "a single red balloon, muted pastel colours, dreamy atmosphere --ar 4:3",
]
KEYCAPS = ["1\ufe0f\u20e3", "2\ufe0f\u20e3", "3\ufe0f\u20e3", "4\ufe0f\u20e3"]
TEXT = "\n\n".join(f"{cap} {p}" for cap, p in zip(KEYCAPS, PROMPTS, strict=True))


def success(task_id: str = "1725017482366993", **overrides) -> dict:
    obj = {
        "id": task_id,
        "action": "DESCRIBE",
        "status": "SUCCESS",
        "progress": "100%",
        "prompt": TEXT,
        "promptEn": TEXT,
        "description": f"/describe {task_id}.png",
        "state": "run-42",
        "submitTime": 1725017482366,
        "startTime": 1725017483001,
        "finishTime": 1725017499123,
        "imageUrl": "https://cdn.example/image.png",
        "failReason": None,
        "properties": {"finalPrompt": TEXT},
    }
    obj.update(overrides)
    return obj


def event_for(*tasks: dict, timeout: float | None = None, grace: int = 3, polls: int = 1) -> dict:
    tracker = TaskTracker([t["id"] for t in tasks] or ["lost"], timeout=timeout, missing_grace=grace)
    for _ in range(polls):
        tracker.update([MJTask.from_json(t) for t in tasks])
    return tracker.event()


def test_success_gives_the_four_prompts_as_a_list_with_text_url_and_timings():
    result = describe_result(MJTask.from_json(success()))
    assert result["prompts"] == PROMPTS
    assert result["prompt"] == TEXT
    assert result["task_id"] == "1725017482366993"
    assert result["status"] == "SUCCESS"
    assert result["image_url"] == "https://cdn.example/image.png"
    assert result["state"] == "run-42"
    assert (result["submit_time"], result["start_time"], result["finish_time"]) == (
        1725017482366,
        1725017483001,
        1725017499123,
    )
    assert result["duration_seconds"] == pytest.approx(16.757)
    assert json.loads(json.dumps(result)) == result


def test_final_prompt_wins_over_prompt_en_and_prompt():
    other = "1. only one prompt here --ar 1:1"
    task = MJTask.from_json(
        success(prompt="ignored", promptEn="ignored too", properties={"finalPrompt": other})
    )
    result = describe_result(task)
    assert result["prompt"] == other
    assert result["prompts"] == ["only one prompt here --ar 1:1"]


def test_prompt_is_used_when_final_prompt_and_prompt_en_are_empty():
    task = MJTask.from_json(success(promptEn="", properties={}))
    assert describe_result(task)["prompts"] == PROMPTS


def test_missing_timings_give_no_duration():
    task = MJTask.from_json(success(submitTime=None, finishTime=None))
    assert describe_result(task)["duration_seconds"] is None


def test_failure_raises_task_failed_error_carrying_fail_reason():
    task = MJTask.from_json(success(status="FAILURE", prompt=None, failReason="Banned image detected"))
    with pytest.raises(TaskFailedError) as info:
        describe_result(task)
    assert info.value.fail_reason == "Banned image detected"
    assert info.value.status == "FAILURE"
    assert info.value.task_id == "1725017482366993"
    assert "Banned image detected" in str(info.value)


def test_cancel_raises_task_failed_error_even_without_a_reason():
    task = MJTask.from_json(success(status="CANCEL", failReason=None))
    with pytest.raises(TaskFailedError) as info:
        describe_result(task)
    assert info.value.status == "CANCEL"
    assert info.value.fail_reason is None
    assert "CANCEL" in str(info.value)


def test_an_unfinished_task_is_not_a_result():
    with pytest.raises(ApicoreError, match="not finished"):
        describe_result(MJTask.from_json(success(status="IN_PROGRESS", progress="50%")))


def test_outcome_of_a_done_event_is_the_finished_task():
    task = outcome(event_for(success("7")), "7", timeout=60)
    assert task.id == "7"
    assert describe_result(task)["prompts"] == PROMPTS


def test_outcome_accepts_an_integer_task_id():
    assert outcome(event_for(success("7")), 7, timeout=60).id == "7"


def test_outcome_of_a_failed_task_is_the_task_and_describe_result_raises():
    failed = success("8", status="FAILURE", failReason="Job timed out upstream")
    task = outcome(event_for(failed), "8", timeout=60)
    with pytest.raises(TaskFailedError, match="Job timed out upstream"):
        describe_result(task)


def test_outcome_of_a_vanished_id_raises_task_not_found():
    event = event_for(timeout=60, grace=1)
    assert event["not_found"] == ["lost"]
    with pytest.raises(TaskNotFoundError) as info:
        outcome(event, "lost", timeout=60)
    assert info.value.task_id == "lost"


def test_timeout_names_last_status_and_progress():
    running = success("9", status="IN_PROGRESS", progress="45%", finishTime=None)
    event = event_for(running, timeout=0)
    assert event["status"] == "timeout"
    with pytest.raises(TaskTimeoutError) as info:
        outcome(event, "9", timeout=30)
    err = info.value
    assert (err.last_status, err.last_progress, err.timeout) == ("IN_PROGRESS", "45%", 30)
    assert "IN_PROGRESS" in str(err)
    assert "45%" in str(err)
    assert "30s" in str(err)


def test_timeout_before_the_task_was_ever_listed_says_unknown():
    event = {"status": "timeout", "task_ids": ["10"], "tasks": {}, "not_found": [], "pending": ["10"]}
    with pytest.raises(TaskTimeoutError) as info:
        outcome(event, "10", timeout=5)
    assert info.value.last_status is None
    assert "status unknown" in str(info.value)


def test_error_event_keeps_the_trigger_message():
    event = {
        "status": "error",
        "message": "APICore answered HTTP 503 to /mj/task/list-by-condition 6 times; gave up",
        "task_ids": ["11"],
        "tasks": {},
        "not_found": [],
        "pending": ["11"],
    }
    with pytest.raises(ApicoreError, match="HTTP 503") as info:
        outcome(event, "11", timeout=5)
    assert not isinstance(info.value, (TaskTimeoutError, TaskNotFoundError))
    assert "11" in str(info.value)


def test_error_event_wins_even_if_the_task_had_finished():
    event = event_for(success("12"))
    event.update(status="error", message="boom")
    with pytest.raises(ApicoreError, match="boom"):
        outcome(event, "12", timeout=5)
