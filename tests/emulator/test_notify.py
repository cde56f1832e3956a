"""notifyHook: the task object is POSTed on every status and progress change, best effort."""

from __future__ import annotations

import socket
import time

from tests.emulator.test_api import LIFECYCLE, TASK_KEYS


def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_every_change_is_posted_to_the_notify_hook(start_emulator, client_for, hook_receiver):
    hook_url, received = hook_receiver
    # One worker delivers callbacks in order, so the sequence can be checked exactly.
    api = client_for(start_emulator(notify_workers=1, job_seconds=0.4))
    task_id = api.submit_ok(notifyHook=hook_url, state="hooked")
    final = api.wait_status(task_id, {"SUCCESS"})
    _wait_for(lambda: received and received[-1]["status"] == "SUCCESS")

    assert all(set(body) == TASK_KEYS and body["id"] == task_id for body in received)
    statuses = [body["status"] for body in received]
    assert [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s] == LIFECYCLE
    progress = [int(body["progress"].rstrip("%")) for body in received if body["status"] == "IN_PROGRESS"]
    assert progress == sorted(set(progress)) and len(progress) >= 3
    assert received[-1] == final
    assert received[0]["properties"]["notifyHook"] == hook_url
    stats = api.server.stats()
    assert stats["notify_sent"] == len(received) and stats["notify_failed"] == 0


def test_tasks_without_notify_hook_send_nothing(start_emulator, client_for, hook_receiver):
    _, received = hook_receiver
    api = client_for(start_emulator())
    api.wait_status(api.submit_ok(), {"SUCCESS"})
    assert received == []
    assert api.server.stats()["notify_sent"] == 0


def test_unreachable_hook_is_counted_and_does_not_affect_the_task(start_emulator, client_for):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    api = client_for(start_emulator())
    task = api.wait_status(api.submit_ok(notifyHook=f"http://127.0.0.1:{closed_port}/hook"), {"SUCCESS"})
    assert task["status"] == "SUCCESS"
    _wait_for(lambda: api.server.stats()["notify_failed"] >= 4)
    assert api.server.stats()["notify_sent"] == 0
