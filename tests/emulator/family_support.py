"""Helpers for the family endpoint tests: plain HTTP calls, waiting, and reading the PNGs."""

from __future__ import annotations

import io
import time
from itertools import combinations
from typing import Any

import requests
from PIL import Image, ImageChops, ImageStat

FINISHED = ("SUCCESS", "FAILURE", "MODAL")
GRID_LABELS = ["U1", "U2", "U3", "U4", "", "V1", "V2", "V3", "V4"]
UPSCALE_LABELS = [
    "Upscale (Subtle)",
    "Upscale (Creative)",
    "Vary (Subtle)",
    "Vary (Strong)",
    "Vary (Region)",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Custom Zoom",
    "",
    "",
    "",
    "",
    "",
]


def post(api: Any, path: str, body: dict[str, Any]) -> requests.Response:
    """POST a JSON body to the emulator with the client's token."""
    return api.session.post(f"{api.url}{path}", json=body, timeout=10)


def answer(api: Any, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """The JSON answer of a POST, checking its HTTP status."""
    response = post(api, path, body)
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


def submit_ok(api: Any, path: str, body: dict[str, Any]) -> str:
    """Submit and return the new task id (code 1 or 22)."""
    result = answer(api, path, body)
    assert result["code"] in (1, 22), result
    return result["result"]


def finished(api: Any, task_id: str, timeout: float = 15) -> dict[str, Any]:
    """Poll fetch until the task is SUCCESS, FAILURE or MODAL."""
    deadline = time.monotonic() + timeout
    while True:
        task = api.task(task_id)
        if task["status"] in FINISHED:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {task['status']} after {timeout} s")
        time.sleep(0.02)


def succeeded(api: Any, task_id: str) -> dict[str, Any]:
    task = finished(api, task_id)
    assert task["status"] == "SUCCESS", task
    return task


def image_of(api: Any, task: dict[str, Any]) -> Image.Image:
    """Download the task's imageUrl and decode it as a PNG."""
    response = api.session.get(task["imageUrl"], timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == "PNG"
    return image.convert("RGB")


def quadrants(image: Image.Image) -> list[Image.Image]:
    """The four panels of a 2x2 grid: top left, top right, bottom left, bottom right."""
    w, h = image.width // 2, image.height // 2
    return [image.crop((x * w, y * h, (x + 1) * w, (y + 1) * h)) for y in range(2) for x in range(2)]


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel (0 identical, 255 opposite)."""
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def assert_distinct_panels(image: Image.Image, minimum: float = 12.0) -> None:
    """Every pair of the grid's panels differs visibly."""
    panels = quadrants(image)
    for (i, a), (j, b) in combinations(enumerate(panels, 1), 2):
        assert difference(a, b) > minimum, f"panels {i} and {j} differ by only {difference(a, b):.1f}"


def button(task: dict[str, Any], label: str = "", custom_id_part: str = "") -> str:
    """The customId of the task's first button with this label and customId fragment."""
    for item in task["buttons"]:
        if item["label"] == label and custom_id_part in item["customId"]:
            return item["customId"]
    raise AssertionError(f"no button {label!r}/{custom_id_part!r} in {task['buttons']}")


def imagine(api: Any, prompt: str = "a lighthouse on a cliff at dusk", **fields: Any) -> dict[str, Any]:
    """Imagine and wait for the finished grid task."""
    return succeeded(api, submit_ok(api, "/mj/submit/imagine", {"prompt": prompt, **fields}))


def act(api: Any, parent: dict[str, Any], custom_id: str, **fields: Any) -> dict[str, Any]:
    """Press a button of a finished task; returns the submit answer."""
    return answer(api, "/mj/submit/action", {"taskId": parent["id"], "customId": custom_id, **fields})


def stats(api: Any) -> dict[str, Any]:
    return api.session.get(f"{api.url}/_emulator/stats", timeout=10).json()


def configure(api: Any, **changes: Any) -> dict[str, Any]:
    response = api.session.put(f"{api.url}/_emulator/config", json=changes, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()
