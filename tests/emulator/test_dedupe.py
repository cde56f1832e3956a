"""Code 21 ("task already exists") for a resubmitted image, when the emulator deduplicates."""

from __future__ import annotations

import base64

import requests

from airflow_provider_apicore.emulator import EmulatorConfig, EmulatorServer
from tests.helpers.imagegen import make_png

TOKEN = "dedupe-token"


def submit(url: str, image: bytes, state: str) -> dict:
    body = {"base64": "data:image/png;base64," + base64.b64encode(image).decode(), "state": state}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return requests.post(f"{url}/mj/submit/describe", json=body, headers=headers, timeout=10).json()


def test_resubmitted_image_answers_21_with_the_earlier_task_when_dedupe_is_on():
    image = make_png(8, 8, (1, 2, 3))
    with EmulatorServer(EmulatorConfig(tokens=[TOKEN], dedupe=True, job_seconds=5)) as server:
        first = submit(server.url, image, "a/1")
        again = submit(server.url, image, "a/2")
        other = submit(server.url, make_png(8, 8, (3, 2, 1)), "b/1")
        stats = server.stats()
    assert first["code"] == 1 and again["code"] == 21
    assert again["result"] == first["result"] and again["description"] == "任务已存在"
    assert other["code"] == 1 and other["result"] != first["result"]
    assert (stats["submissions_accepted"], stats["submissions_existed"], stats["duplicate_submissions"]) == (
        2,
        1,
        0,
    )


def test_without_dedupe_a_resubmitted_image_starts_a_second_job_and_counts_as_duplicate():
    image = make_png(8, 8, (9, 9, 9))
    with EmulatorServer(EmulatorConfig(tokens=[TOKEN], job_seconds=5)) as server:
        first = submit(server.url, image, "a/1")
        again = submit(server.url, image, "a/2")
        stats = server.stats()
    assert first["code"] == again["code"] == 1 and first["result"] != again["result"]
    assert (stats["submissions_existed"], stats["duplicate_submissions"]) == (0, 1)


def test_a_failed_task_does_not_block_a_resubmission():
    image = make_png(8, 8, (5, 5, 5))
    config = EmulatorConfig(tokens=[TOKEN], dedupe=True, job_seconds=0.05, faults={"task_failure": 1.0})
    with EmulatorServer(config) as server:
        first = submit(server.url, image, "a/1")
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and server.stats()["tasks_by_status"]["FAILURE"] < 1:
            time.sleep(0.05)
        again = submit(server.url, image, "a/2")
    assert again["code"] == 1 and again["result"] != first["result"]
