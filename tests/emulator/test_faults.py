"""Every fault knob, observed from a real client, and seeded replay of the fault sequence."""

from __future__ import annotations

import socket
import time

import pytest
import requests


def _faulty(start_emulator, client_for, http: str = "auto", **faults):
    return client_for(start_emulator(faults=faults, http=http))


def _raw_request(url: str, path: str) -> bytes:
    """Send one GET over a plain socket and return every byte the server wrote before closing."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer emulator-token\r\n\r\n"
        sock.sendall(request.encode())
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        return received


@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize("style", ["close", "reset"])
def test_drop_before_closes_the_connection_unanswered_and_unprocessed(
    start_emulator, client_for, http, style
):
    api = _faulty(start_emulator, client_for, http=http, drop_before=1.0, drop_style=style)
    with pytest.raises(requests.ConnectionError) as caught:
        api.submit()
    expected = ("Remote end closed connection without response",) if style == "close" else ("reset",)
    assert any(word in str(caught.value) for word in expected), caught.value
    assert _raw_request(api.url, "/mj/task/1/fetch") == b""
    stats = api.server.stats()
    assert stats["tasks_created"] == 0
    assert stats["faults_injected"]["drop_before"] == 2
    assert stats["requests"]["submit"] == 1 and stats["requests"]["fetch"] == 1


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_drop_after_processes_the_request_then_hangs_up(start_emulator, client_for, http):
    api = _faulty(start_emulator, client_for, http=http, drop_after=1.0)
    with pytest.raises(requests.ConnectionError):
        api.submit(state="dropped-after")
    api.server.configure(faults={"drop_after": 0.0})
    created = api.server.tasks(state="dropped-after")
    assert len(created) == 1
    assert api.task(created[0]["id"])["state"] == "dropped-after"
    assert api.server.stats()["faults_injected"]["drop_after"] == 1


def test_server_errors_answer_5xx_without_processing(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, http_5xx=1.0)
    responses = [api.submit() for _ in range(12)]
    assert {r.status_code for r in responses} <= {500, 502, 503, 504}
    assert len({r.status_code for r in responses}) > 1
    content_types = {r.headers["content-type"].split(";")[0] for r in responses}
    assert content_types == {"application/json", "text/plain"}
    stats = api.server.stats()
    assert stats["tasks_created"] == 0 and stats["faults_injected"]["http_5xx"] == 12


def test_rate_limit_answers_429_with_retry_after(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, http_429=1.0, retry_after=3)
    response = api.submit()
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["error"]["type"] == "rate_limit"
    assert api.server.stats()["tasks_created"] == 0


def test_malformed_json_is_a_truncated_body(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, malformed_json=1.0)
    for response in (api.submit(), api.fetch("1"), api.session.post(f"{api.url}/mj/task/list-by-condition")):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        with pytest.raises(ValueError):
            response.json()
    assert api.server.stats()["tasks_created"] == 0


def test_html_error_is_an_nginx_502_page(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, html_error=1.0)
    response = api.submit()
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "<center>nginx</center>" in response.text
    assert api.server.stats()["tasks_created"] == 0


def test_slow_answers_arrive_after_slow_seconds_but_the_request_was_processed(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, slow=1.0, slow_seconds=0.6)
    with pytest.raises(requests.ReadTimeout):
        api.submit(timeout=0.2, state="slow-1")
    started = time.monotonic()
    answer = api.submit(timeout=5, state="slow-2")
    assert time.monotonic() - started >= 0.55
    assert answer.json()["code"] in (1, 22)
    assert len(api.server.tasks(state="slow-1")) == 1


def test_queue_full_fault_refuses_valid_submits_with_code_23(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, queue_full=1.0)
    answer = api.submit().json()
    assert answer["code"] == 23 and answer["result"] is None
    stats = api.server.stats()
    assert stats["tasks_created"] == 0
    assert stats["submissions_rejected"] == {"23": 1}
    assert stats["faults_injected"]["queue_full"] == 1


def test_task_failure_ends_in_failure_with_a_reason(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, task_failure=1.0)
    task = api.wait_status(api.submit_ok(), {"SUCCESS", "FAILURE"})
    assert task["status"] == "FAILURE"
    assert task["failReason"]
    assert task["finishTime"] >= task["startTime"]
    assert task["prompt"] is None
    assert api.server.stats()["faults_injected"]["task_failure"] == 1


def test_stuck_task_stays_in_progress_with_frozen_progress(start_emulator, client_for):
    server = start_emulator(concurrency=1, job_seconds=0.2, faults={"stuck": 1.0})
    api = client_for(server)
    stuck_id = api.submit_ok()
    api.wait_status(stuck_id, {"IN_PROGRESS"})
    time.sleep(0.5)  # more than twice the job duration
    frozen = api.task(stuck_id)
    time.sleep(0.2)
    assert api.task(stuck_id) == frozen
    assert frozen["status"] == "IN_PROGRESS" and frozen["progress"] != "100%"
    # By default the stuck job releases its slot: later jobs still run with concurrency 1.
    server.configure(faults={"stuck": 0.0})
    assert api.wait_status(api.submit_ok(), {"SUCCESS"})["status"] == "SUCCESS"
    assert server.stats()["faults_injected"]["stuck"] == 1


def test_stuck_task_can_hold_its_slot_forever(start_emulator, client_for):
    server = start_emulator(concurrency=1, faults={"stuck": 1.0, "stuck_holds_slot": True})
    api = client_for(server)
    api.wait_status(api.submit_ok(), {"IN_PROGRESS"})
    server.configure(faults={"stuck_holds_slot": True})  # new tasks run normally
    waiting = api.submit_ok()
    time.sleep(0.5)
    assert api.task(waiting)["status"] == "SUBMITTED"


def test_vanished_task_is_forgotten_once_running(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, vanish=1.0)
    task_id = api.submit_ok()
    assert api.task(task_id)["id"] == task_id
    deadline = time.monotonic() + 5
    while api.fetch(task_id).content:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert api.list([task_id]) == []
    stats = api.server.stats()
    assert stats["faults_injected"]["vanish"] == 1 and stats["tasks_known"] == 0


def test_token_expired_turns_every_authenticated_call_into_401(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, token_expired=True)
    for response in (api.submit(), api.fetch("1")):
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "unauthorized"
    assert requests.get(f"{api.url}/_emulator/stats", timeout=5).status_code == 200
    api.server.configure(faults={"token_expired": False})
    assert api.submit().json()["code"] == 1
    assert api.server.stats()["faults_injected"]["token_expired"] == 2


def test_endpoint_filter_limits_request_faults(start_emulator, client_for):
    api = _faulty(start_emulator, client_for, http_5xx=1.0, endpoints=["fetch"])
    task_id = api.submit_ok()
    assert api.fetch(task_id).status_code >= 500
    assert api.list([task_id])[0]["id"] == task_id


def _fault_sequence(api, n: int = 40) -> list[int]:
    return [api.fetch("42").status_code for _ in range(n)]


def test_same_seed_replays_the_same_fault_sequence(start_emulator, client_for):
    faults = {"http_5xx": 0.25, "http_429": 0.25, "html_error": 0.1}
    first = client_for(start_emulator(seed=7, faults=faults))
    sequence = _fault_sequence(first)
    assert len(set(sequence)) >= 3
    first.server.reset()
    assert _fault_sequence(first) == sequence
    assert _fault_sequence(client_for(start_emulator(seed=7, faults=faults))) == sequence
    assert _fault_sequence(client_for(start_emulator(seed=8, faults=faults))) != sequence


def test_same_seed_replays_the_same_task_fates(start_emulator, client_for):
    def fates(api) -> list[str]:
        ids = [api.submit_ok() for _ in range(12)]
        return [api.wait_status(i, {"SUCCESS", "FAILURE"})["status"] for i in ids]

    api = client_for(start_emulator(seed=3, concurrency=12, queue_size=12, faults={"task_failure": 0.5}))
    first = fates(api)
    assert set(first) == {"SUCCESS", "FAILURE"}
    api.server.reset()
    assert fates(api) == first
