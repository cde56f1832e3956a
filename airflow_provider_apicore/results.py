"""
From a finished Midjourney task to what a DAG gets back: one mapping for every waiting path.

The polling operator, ``execute_complete`` after a trigger, the sensor and the batch operator all
call :func:`describe_result` / :func:`outcome`, so the same task always gives the same result or the
same error.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_apicore.exceptions import (
    ApicoreError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from airflow_provider_apicore.models import MJTask, TaskStatus
from airflow_provider_apicore.prompts import parse_describe_prompts
from airflow_provider_apicore.tracking import EVENT_ERROR


def describe_result(task: MJTask) -> dict[str, Any]:
    """
    The JSON-serialisable result of a successful DESCRIBE task.

    Keys: ``task_id``, ``status``, ``prompts`` (the four prompts, as a list), ``prompt`` (raw text),
    ``image_url``, ``state``, ``submit_time``, ``start_time``, ``finish_time`` (epoch ms) and
    ``duration_seconds``.

    :raises TaskFailedError: the task ended FAILURE or CANCEL (carries ``failReason``)
    """
    if task.status in (TaskStatus.FAILURE, TaskStatus.CANCEL):
        raise TaskFailedError(task.id, task.status.value, task.fail_reason)
    if task.status is not TaskStatus.SUCCESS:
        raise ApicoreError(f"Midjourney task {task.id} is not finished (status {task.status.value})")
    text = task.final_prompt
    duration = None
    if task.finish_time and task.submit_time:
        duration = round((task.finish_time - task.submit_time) / 1000, 3)
    return {
        "task_id": task.id,
        "status": task.status.value,
        "prompts": parse_describe_prompts(text),
        "prompt": text,
        "image_url": task.image_url,
        "state": task.state,
        "submit_time": task.submit_time,
        "start_time": task.start_time,
        "finish_time": task.finish_time,
        "duration_seconds": duration,
    }


def outcome(event: dict[str, Any], task_id: str, timeout: float) -> MJTask:
    """
    The finished task ``task_id`` out of a tracker event, or the error that ended the wait.

    :raises TaskNotFoundError: the server stopped knowing the id
    :raises TaskTimeoutError: the wait timed out; names the last status and progress seen
    :raises ApicoreError: the trigger itself failed (its message is kept)
    """
    task_id = str(task_id)
    if event.get("status") == EVENT_ERROR:
        raise ApicoreError(f"Waiting for Midjourney task {task_id} failed: {event.get('message')}")
    if task_id in event.get("not_found", ()):
        raise TaskNotFoundError(task_id)
    raw = event.get("tasks", {}).get(task_id)
    task = MJTask.from_json(raw) if raw else None
    if task is None or not task.is_terminal:
        raise TaskTimeoutError(
            task_id, timeout, task.status.value if task else None, task.progress if task else None
        )
    return task
