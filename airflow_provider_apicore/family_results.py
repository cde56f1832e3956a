"""
Typed results of imagine, action, blend, shorten and swap-face tasks: what an operator returns to XCom.

Every result is JSON-serialisable and carries ``task_id``, ``status``, ``action``, ``image_url``,
``image_urls`` (when the server lists the four CDN pictures), ``buttons`` (``label``/``custom_id``/
``emoji`` plus the readable action), ``actions`` (what the buttons enable, e.g. ``"upscale 1-4"``),
``prompt`` / ``final_prompt`` and timings. Servers disagree on many fields (zero values instead of null,
gateway action names, strings instead of numbers), so everything beyond ``id`` and ``status`` is read
leniently from the task's raw object.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_apicore.buttons import available_actions, parse_buttons
from airflow_provider_apicore.exceptions import ApicoreError, TaskFailedError
from airflow_provider_apicore.models import MJTask, TaskStatus
from airflow_provider_apicore.prompts import parse_describe_prompts

#: Where the shortened prompts start in a SHORTEN analysis, and the footer that ends them.
_SHORTENED = re.compile(r"shortened\s+prompts?\s*[:：]?", re.IGNORECASE)
_FOOTER = re.compile(r"click\s+on\s+a\s+button", re.IGNORECASE)
_MARKDOWN = re.compile(r"\*\*|__")


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def image_urls(raw: dict[str, Any]) -> list[str]:
    """
    The individual picture URLs a server lists in ``imageUrls`` (C: ``[{"url", "thumbnail"}]``; some
    servers: plain strings). Empty when absent, which is the usual case through the new-api gateway.
    """
    urls = raw.get("imageUrls")
    if not isinstance(urls, list):
        return []
    found = []
    for item in urls:
        url = item.get("url") if isinstance(item, dict) else item
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            found.append(url)
    return found


def check_success(task: MJTask) -> None:
    """
    :raises TaskFailedError: the task ended FAILURE or CANCEL (carries ``failReason``)
    :raises ApicoreError: the task is not finished
    """
    if task.status in (TaskStatus.FAILURE, TaskStatus.CANCEL):
        raise TaskFailedError(task.id, task.status.value, task.fail_reason)
    if task.status is not TaskStatus.SUCCESS:
        raise ApicoreError(f"Midjourney task {task.id} is not finished (status {task.status.value})")


def task_result(task: MJTask, files: list[str] | None = None) -> dict[str, Any]:
    """
    The result of a successful image task (imagine, upscale, variation, zoom, pan, blend, swap-face...).

    :param task: the finished task
    :param files: paths where the operator stored the image(s), if it downloaded them
    :raises TaskFailedError: the task ended FAILURE or CANCEL
    """
    check_success(task)
    raw = task.raw or {}
    buttons = parse_buttons(raw.get("buttons"))
    properties = task.properties if isinstance(task.properties, dict) else {}
    final_prompt = _str_or_none(properties.get("finalPrompt"))
    duration = None
    if task.finish_time and task.submit_time:
        duration = round((task.finish_time - task.submit_time) / 1000, 3)
    result: dict[str, Any] = {
        "task_id": task.id,
        "status": task.status.value,
        "action": task.action or None,
        "image_url": task.image_url or None,
        "image_urls": image_urls(raw),
        "buttons": [{k: b[k] for k in ("label", "custom_id", "emoji", "action", "index")} for b in buttons],
        "actions": available_actions(buttons),
        "prompt": task.prompt or None,
        "prompt_en": task.prompt_en or None,
        "final_prompt": final_prompt,
        "description": task.description or None,
        "state": task.state or None,
        "width": _int_or_none(raw.get("imageWidth")) or _int_or_none(raw.get("width")),
        "height": _int_or_none(raw.get("imageHeight")) or _int_or_none(raw.get("height")),
        "seed": _str_or_none(raw.get("seed")),
        "submit_time": task.submit_time or None,
        "start_time": task.start_time or None,
        "finish_time": task.finish_time or None,
        "duration_seconds": duration,
    }
    if files is not None:
        result["files"] = list(files)
    return result


def parse_shortened_prompts(text: str | None) -> list[str]:
    """
    The shortened prompts out of a SHORTEN analysis text.

    Midjourney's answer lists important tokens, then a "Shortened prompts" section of numbered prompts
    (keycaps ``1️⃣`` or ``1.``), then a footer "Click on a button to imagine one of the shortened
    prompts". Only that section is parsed (like DESCRIBE's prompts); without the heading, the whole text
    is parsed.

    :param text: ``properties.finalPrompt`` (through new-api the only place it is) or ``description``
    """
    if not text or not text.strip():
        return []
    text = _MARKDOWN.sub("", text)
    heading = _SHORTENED.search(text)
    if heading:
        text = text[heading.end() :]
    footer = _FOOTER.search(text)
    if footer:
        text = text[: footer.start()]
    return parse_describe_prompts(text)


def shorten_result(task: MJTask) -> dict[str, Any]:
    """
    The result of a successful SHORTEN task: :func:`task_result` plus ``prompts`` (the shortened prompts)
    and ``analysis`` (the raw text they were read from).

    The text is read from ``properties.finalPrompt`` first (new-api copies only that field from the
    upstream), then ``description`` when that is the analysis (C servers replace it on success), then
    ``promptEn``.

    :raises TaskFailedError: the task ended FAILURE or CANCEL
    """
    result = task_result(task)
    candidates = [result["final_prompt"], task.description, task.prompt_en]
    analysis = None
    prompts: list[str] = []
    for text in candidates:
        found = parse_shortened_prompts(text)
        if found and (text is result["final_prompt"] or _SHORTENED.search(_MARKDOWN.sub("", text or ""))):
            analysis, prompts = text, found
            break
    result["prompts"] = prompts
    result["analysis"] = analysis
    return result
