"""The shared lifecycle applies to the family's jobs: faults, the queue limit, listing and callbacks."""

from __future__ import annotations

import time

import requests

from tests.emulator.family_support import (
    act,
    answer,
    button,
    finished,
    imagine,
    post,
    stats,
    submit_ok,
    succeeded,
)


def test_request_faults_hit_family_endpoints_and_create_nothing(start_emulator, client_for, png, data_url):
    api = client_for(start_emulator(faults={"http_429": 1.0, "retry_after": 3}))
    blend = {"base64Array": [data_url(png(4, 4, (1, 2, 3))), data_url(png(4, 4, (9, 9, 9)))]}
    for path, body in (
        ("/mj/submit/imagine", {"prompt": "x"}),
        ("/mj/submit/blend", blend),
        ("/mj/submit/shorten", {"prompt": "x"}),
        ("/mj/submit/action", {"taskId": "1", "customId": "MJ::JOB::upsample::1::x"}),
        ("/mj/submit/modal", {"taskId": "1"}),
    ):
        response = post(api, path, body)
        assert response.status_code == 429 and response.headers["retry-after"] == "3", path
    response = api.session.get(f"{api.url}/mj/task/1/image-seed", timeout=10)
    assert response.status_code == 429
    counters = stats(api)
    assert counters["tasks_created"] == 0 and counters["faults_injected"]["http_429"] == 6


def test_dropped_connection_after_processing_still_creates_the_job(start_emulator, client_for):
    api = client_for(start_emulator(faults={"drop_after": 1.0}))
    try:
        post(api, "/mj/submit/imagine", {"prompt": "lost answer"})
    except requests.ConnectionError:
        pass
    else:
        raise AssertionError("the answer should have been dropped")
    assert stats(api)["tasks_created"] == 1


def test_task_faults_apply_to_imagine_and_actions(start_emulator, client_for):
    api = client_for(start_emulator())
    grid = imagine(api, "a bridge")
    api.session.put(f"{api.url}/_emulator/config", json={"faults": {"task_failure": 1.0}}, timeout=10)
    failed = finished(api, act(api, grid, button(grid, "U1"))["result"])
    assert failed["status"] == "FAILURE" and failed["failReason"]
    assert failed["buttons"] == []
    imagined = finished(api, submit_ok(api, "/mj/submit/imagine", {"prompt": "also fails"}))
    assert imagined["status"] == "FAILURE"


def test_vanished_job_is_gone_from_fetch(start_emulator, client_for):
    api = client_for(start_emulator(faults={"vanish": 1.0}))
    task_id = submit_ok(api, "/mj/submit/imagine", {"prompt": "vanishes"})
    deadline = time.monotonic() + 10
    while api.fetch(task_id).content:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert api.list([task_id]) == []


def test_queue_full_fault_refuses_a_valid_imagine(start_emulator, client_for):
    api = client_for(start_emulator(faults={"queue_full": 1.0}))
    result = answer(api, "/mj/submit/imagine", {"prompt": "x"})
    assert result["code"] == 23 and result["result"] is None
    assert stats(api)["tasks_created"] == 0


def test_concurrency_and_queue_limits_count_family_jobs(start_emulator, client_for, png):
    api = client_for(start_emulator(concurrency=1, queue_size=1, job_seconds=1.0))
    codes = [answer(api, "/mj/submit/imagine", {"prompt": f"job {i}"})["code"] for i in range(2)]
    describe = api.submit(png(8, 8)).json()
    shorten = answer(api, "/mj/submit/shorten", {"prompt": "too many"})
    assert codes == [1, 22] and describe["code"] == 23 and shorten["code"] == 23
    assert describe["description"] == shorten["description"] == "队列已满，请稍后尝试"
    assert stats(api)["max_concurrent_in_progress"] <= 1


def test_family_jobs_are_listed_and_tagged(start_emulator, client_for):
    api = client_for(start_emulator())
    ids = [submit_ok(api, "/mj/submit/imagine", {"prompt": f"p{i}", "state": "tag"}) for i in range(3)]
    for task_id in ids:
        succeeded(api, task_id)
    listed = api.list([*ids, "nope"])
    assert [t["id"] for t in listed] == ids and all(t["status"] == "SUCCESS" for t in listed)
    tagged = api.session.get(f"{api.url}/_emulator/tasks", params={"state": "tag"}, timeout=10).json()
    assert sorted(t["id"] for t in tagged) == sorted(ids)


def test_notify_hook_gets_the_family_job_with_buttons(start_emulator, client_for, hook_receiver):
    url, received = hook_receiver
    api = client_for(start_emulator())
    task_id = submit_ok(api, "/mj/submit/imagine", {"prompt": "called back", "notifyHook": url})
    succeeded(api, task_id)
    deadline = time.monotonic() + 10
    while not any(body["status"] == "SUCCESS" for body in received):
        assert time.monotonic() < deadline, received
        time.sleep(0.02)
    final = next(body for body in received if body["status"] == "SUCCESS")
    assert final["id"] == task_id and final["action"] == "IMAGINE" and len(final["buttons"]) == 9
    # Every status change is called back; under load two callbacks may arrive out of order.
    statuses = {body["status"] for body in received}
    assert {"NOT_START", "IN_PROGRESS", "SUCCESS"} <= statuses, statuses


def test_token_is_required(start_emulator, client_for):
    api = client_for(start_emulator(), token="wrong")
    response = post(api, "/mj/submit/imagine", {"prompt": "x"})
    assert response.status_code == 401
    assert stats(api)["tasks_created"] == 0


def test_dedupe_answers_code_21_for_a_repeated_family_job(start_emulator, client_for):
    api = client_for(start_emulator(dedupe=True))
    first = submit_ok(api, "/mj/submit/imagine", {"prompt": "once", "state": "a"})
    again = answer(api, "/mj/submit/imagine", {"prompt": "once", "state": "b"})
    assert again["code"] == 21 and again["result"] == first and again["description"] == "任务已存在"
    other = answer(api, "/mj/submit/imagine", {"prompt": "twice"})
    assert other["code"] == 1 and other["result"] != first
    grid = succeeded(api, first)
    upscale = act(api, grid, button(grid, "U1"))
    assert upscale["code"] == 1
    assert act(api, grid, button(grid, "U1")) == {**upscale, "code": 21, "description": "任务已存在"}
    assert act(api, grid, button(grid, "U2"))["code"] == 1
    assert stats(api)["tasks_created"] == 4


def test_without_dedupe_a_repeated_family_job_runs_again(start_emulator, client_for):
    api = client_for(start_emulator())
    first = submit_ok(api, "/mj/submit/imagine", {"prompt": "once"})
    assert submit_ok(api, "/mj/submit/imagine", {"prompt": "once"}) != first
    assert stats(api)["tasks_created"] == 2
