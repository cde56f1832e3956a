"""The midjourney-proxy endpoints over real loopback HTTP: auth, submit codes, lifecycle, queries."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from airflow_provider_apicore.emulator import FaultConfig

TASK_KEYS = {
    "id",
    "action",
    "status",
    "progress",
    "prompt",
    "promptEn",
    "description",
    "state",
    "submitTime",
    "startTime",
    "finishTime",
    "imageUrl",
    "failReason",
    "properties",
    "buttons",
}
LIFECYCLE = ["NOT_START", "SUBMITTED", "IN_PROGRESS", "SUCCESS"]


def _describe_url(api) -> str:
    return f"{api.url}/mj/submit/describe"


# ----------------------------------------------------------------------------------------------- auth
def test_missing_or_wrong_token_gets_401_gateway_error(api, data_url, png):
    body = {"base64": data_url(png(4, 4))}
    cases = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {api.url}"}]
    for headers in cases:
        response = requests.post(_describe_url(api), json=body, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {"error": {"message": "invalid token", "type": "unauthorized"}}
    fetch = requests.get(f"{api.url}/mj/task/1/fetch", timeout=5)
    assert fetch.status_code == 401
    stats = api.server.stats()
    assert stats["unauthorized"] == 4
    assert stats["tasks_created"] == 0


def test_any_configured_token_is_accepted(start_emulator, client_for):
    server = start_emulator(tokens=["first", "second"])
    assert client_for(server, token="second").submit().json()["code"] == 1
    assert client_for(server, token="emulator-token").submit().status_code == 401


def test_admin_endpoints_need_no_token(api):
    assert requests.get(f"{api.url}/_emulator/stats", timeout=5).status_code == 200
    assert requests.get(f"{api.url}/_emulator/config", timeout=5).status_code == 200


# ---------------------------------------------------------------------------------------- submit codes
def test_submit_answers_1_then_22_with_queue_position_then_23_when_full(start_emulator, client_for):
    api = client_for(start_emulator(concurrency=1, queue_size=2, job_seconds=30))
    first = api.submit().json()
    assert first["code"] == 1
    assert first["description"] == "Submit success"
    assert first["result"].isdigit() and len(first["result"]) == 16
    assert set(first["properties"]) == {"discordChannelId", "discordInstanceId"}
    assert all(isinstance(v, str) for v in first["properties"].values())

    second, third = api.submit().json(), api.submit().json()
    assert second["code"] == 22 and second["description"] == "排队中，前面还有0个任务"
    assert third["code"] == 22 and third["description"] == "排队中，前面还有1个任务"
    assert third["properties"]["numberOfQueues"] == 1

    full = api.submit().json()
    assert full == {
        "code": 23,
        "description": "队列已满，请稍后尝试",
        "result": None,
        "properties": first["properties"],
    }
    stats = api.server.stats()
    assert stats["tasks_created"] == 3
    assert stats["submissions_accepted"] == 3
    assert stats["submissions_rejected"] == {"23": 1}
    assert len({first["result"], second["result"], third["result"]}) == 3


def test_submit_rejects_empty_base64_with_code_4(api):
    for body in ({}, {"base64": ""}, {"base64": None}):
        answer = api.session.post(_describe_url(api), json=body, timeout=5).json()
        assert answer["code"] == 4
        assert answer["description"] == "base64不能为空"
    assert api.server.stats()["submissions_rejected"] == {"4": 3}


def test_submit_rejects_anything_but_a_base64_data_url_with_code_4(api, png):
    plain = base64.b64encode(png(4, 4)).decode()
    bad = (plain, "data:image/png;base64,@@not-base64@@", "data:image/png,abc", 12, "data:;base64,AAAA")
    for value in bad:
        answer = api.session.post(_describe_url(api), json={"base64": value}, timeout=5).json()
        assert answer["code"] == 4, value
        assert answer["description"] == "base64格式错误"
    assert api.server.stats()["tasks_created"] == 0


def test_task_description_uses_the_suffix_of_the_mime_type(api, data_url, png):
    answer = api.session.post(
        _describe_url(api), json={"base64": data_url(png(8, 8), "image/jpeg")}, timeout=5
    ).json()
    task = api.task(answer["result"])
    assert task["description"] == f"/describe {answer['result']}.jpg"


# ------------------------------------------------------------------------------------------ lifecycle
def test_task_moves_through_the_lifecycle_with_growing_progress(start_emulator, client_for, png):
    api = client_for(start_emulator(job_seconds=0.6, tick_seconds=0.02))
    task_id = api.submit_ok(png(64, 48), state="lifecycle")
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task = api.task(task_id)
        if not seen or seen[-1] != (task["status"], task["progress"]):
            seen.append((task["status"], task["progress"]))
        if task["status"] == "SUCCESS":
            break
        time.sleep(0.01)
    statuses = [status for status, _ in seen]
    assert statuses == sorted(statuses, key=LIFECYCLE.index)
    assert statuses[-1] == "SUCCESS"
    running = [int(progress.rstrip("%")) for status, progress in seen if status == "IN_PROGRESS"]
    assert running == sorted(running) and len(running) >= 3
    assert all(0 <= p <= 99 for p in running) and any(0 < p < 100 for p in running)

    assert set(task) == TASK_KEYS
    assert task["progress"] == "100%" and task["failReason"] is None and task["action"] == "DESCRIBE"
    assert task["state"] == "lifecycle"
    assert task["submitTime"] < task["startTime"] <= task["finishTime"]
    assert task["finishTime"] - task["startTime"] >= 550
    assert task["properties"]["finalPrompt"] == task["prompt"] == task["promptEn"]
    assert task["properties"]["discordInstanceId"] and isinstance(task["buttons"], list)


def test_fresh_task_is_not_started_and_has_no_times_or_prompt(start_emulator, client_for):
    api = client_for(start_emulator(tick_seconds=5))
    task = api.task(api.submit_ok())
    assert task["status"] == "NOT_START"
    assert task["startTime"] is None and task["finishTime"] is None
    assert task["prompt"] is None and task["imageUrl"] is None
    assert isinstance(task["submitTime"], int) and abs(task["submitTime"] / 1000 - time.time()) < 5


def test_concurrency_limit_is_never_exceeded_and_the_queue_is_fifo(start_emulator, client_for, png):
    api = client_for(start_emulator(concurrency=2, queue_size=20, job_seconds=0.5))
    ids = [api.submit_ok(png(8, 8, (i * 30, 0, 0))) for i in range(8)]
    tasks = [api.wait_status(task_id, {"SUCCESS"}) for task_id in ids]

    # Replay the start/finish timeline: at no instant were more than two tasks running.
    events = sorted([(t["startTime"], 1) for t in tasks] + [(t["finishTime"], -1) for t in tasks])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2
    starts = [t["startTime"] for t in tasks]
    assert starts == sorted(starts)

    stats = api.server.stats()
    assert stats["max_concurrent_in_progress"] == 2
    assert stats["max_active"] == 8
    assert stats["tasks_by_status"]["SUCCESS"] == 8


def test_raising_concurrency_at_run_time_starts_queued_tasks(start_emulator, client_for):
    api = client_for(start_emulator(concurrency=1, job_seconds=30))
    ids = [api.submit_ok() for _ in range(3)]
    api.wait_status(ids[0], {"IN_PROGRESS"})
    # Queued behind the single slot: it reaches SUBMITTED on a tick and stays there.
    api.wait_status(ids[2], {"SUBMITTED", "IN_PROGRESS"})
    assert api.task(ids[2])["status"] == "SUBMITTED"
    api.server.configure(concurrency=3)
    api.wait_status(ids[2], {"IN_PROGRESS"})
    assert api.server.stats()["running"] == 3


# -------------------------------------------------------------------------------------------- queries
def test_fetch_of_unknown_id_answers_200_with_an_empty_body(api):
    response = api.fetch("1725017482366993")
    assert response.status_code == 200
    assert response.content == b""


def test_list_by_condition_returns_known_tasks_only(api):
    ids = [api.submit_ok() for _ in range(3)]
    found = api.list([ids[0], "999", ids[1], ids[2], ids[0]])
    assert sorted(t["id"] for t in found) == sorted(ids)
    assert all(set(t) == TASK_KEYS for t in found)


def test_list_by_condition_with_missing_or_invalid_ids_returns_an_empty_array(api):
    api.submit_ok()
    url = f"{api.url}/mj/task/list-by-condition"
    for kwargs in ({"json": {}}, {"json": {"ids": "123"}}, {"json": []}, {"data": b"not json"}):
        response = api.session.post(url, timeout=5, **kwargs)
        assert response.status_code == 200 and response.json() == [], kwargs
    assert api.list([1, None]) == []


def test_image_url_serves_the_submitted_bytes(api, png):
    image = png(16, 9)
    task = api.wait_status(api.submit_ok(image), {"SUCCESS"})
    assert task["imageUrl"] == f"{api.url}/_emulator/images/{task['id']}.png"
    response = requests.get(task["imageUrl"], timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == image
    assert requests.get(f"{api.url}/_emulator/images/1.png", timeout=5).status_code == 404


def test_unreadable_image_bytes_end_in_failure(api, data_url):
    answer = api.session.post(
        _describe_url(api), json={"base64": data_url(b"not an image at all")}, timeout=5
    ).json()
    task = api.wait_status(answer["result"], {"SUCCESS", "FAILURE"})
    assert task["status"] == "FAILURE"
    assert "Invalid image" in task["failReason"]


def test_batch_of_1000_images_from_20_clients(start_emulator, client_for, png):
    server = start_emulator(concurrency=50, queue_size=1000, job_seconds=0.05)
    images = [png(2, 2, (i % 256, i // 256, 7)) for i in range(1000)]
    local = threading.local()

    def submit(image: bytes) -> str:
        if not hasattr(local, "api"):
            local.api = client_for(server)
        return local.api.submit_ok(image)

    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(submit, images))
    assert len(set(ids)) == 1000

    api = client_for(server)
    started = time.perf_counter()
    found = api.list(ids)
    assert time.perf_counter() - started < 1.0
    assert sorted(t["id"] for t in found) == sorted(ids)

    deadline = time.monotonic() + 20
    while sum(t["status"] == "SUCCESS" for t in api.list(ids)) < 1000:
        assert time.monotonic() < deadline, "batch did not finish"
        time.sleep(0.1)
    stats = server.stats()
    assert stats["duplicate_submissions"] == 0
    assert stats["requests"]["submit"] == 1000
    assert stats["max_concurrent_in_progress"] <= 50


def test_same_image_accepted_twice_counts_as_a_duplicate(api, png):
    image = png(5, 5)
    api.submit_ok(image)
    api.submit_ok(png(6, 5))
    api.submit_ok(image)
    assert api.server.stats()["duplicate_submissions"] == 1


# -------------------------------------------------------------------------------------------- admin
def test_tasks_admin_endpoint_filters_by_state_tag(api):
    tagged = {api.submit_ok(state="batch-a"), api.submit_ok(state="batch-a")}
    api.submit_ok(state="batch-b")
    api.submit_ok()
    assert {t["id"] for t in api.server.tasks(state="batch-a")} == tagged
    assert len(api.server.tasks()) == 4
    assert api.server.tasks(state="nobody") == []


def test_config_update_is_partial_and_applies_at_run_time(api):
    updated = api.server.configure(job_seconds=5, faults={"http_429": 0.5})
    assert updated["job_seconds"] == 5.0
    assert updated["faults"]["http_429"] == 0.5
    assert updated["concurrency"] == 3  # untouched
    assert api.server.stats()["config"]["faults"]["http_429"] == 0.5


def test_faults_object_replaces_the_whole_fault_scenario(api):
    api.server.configure(faults={"http_429": 0.5, "endpoints": ["list"]})
    updated = api.server.configure(faults={"vanish": 0.1})
    assert updated["faults"]["vanish"] == 0.1
    assert updated["faults"]["http_429"] == 0.0 and updated["faults"]["endpoints"] is None
    cleared = api.server.configure(faults={})
    assert cleared["faults"] == FaultConfig().to_dict()
    api.server.configure(faults={"slow": 1.0})
    assert api.server.configure(faults=None)["faults"] == FaultConfig().to_dict()
    assert cleared["job_seconds"] == 0.2


def test_invalid_config_update_is_refused_and_changes_nothing(api):
    url = f"{api.url}/_emulator/config"
    for body, field in (
        ({"concurrency": 0}, "concurrency"),
        ({"job_seconds": 1, "faults": {"http_5xx": 2}}, "faults.http_5xx"),
        ({"nope": 1}, "nope"),
        ({"faults": {"endpoints": ["everything"]}}, "faults.endpoints"),
    ):
        response = requests.put(url, json=body, timeout=5)
        assert response.status_code == 400
        assert field in response.json()["error"]["message"]
    config = requests.get(url, timeout=5).json()
    assert config["concurrency"] == 3 and config["job_seconds"] == 0.2
    assert config["faults"]["http_5xx"] == 0.0


def test_reset_forgets_tasks_and_counters(api):
    task_id = api.submit_ok()
    response = requests.post(f"{api.url}/_emulator/reset", timeout=5)
    assert response.status_code == 200
    assert api.fetch(task_id).content == b""
    stats = api.server.stats()
    assert stats["tasks_created"] == 0
    assert stats["requests"] == {"submit": 0, "fetch": 1, "list": 0, "other": 0}
    assert sum(stats["tasks_by_status"].values()) == 0
