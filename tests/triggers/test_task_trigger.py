"""MJTaskTrigger under asyncio against the emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from airflow.sdk._shared.module_loading import import_string
from airflow.sdk.bases.hook import BaseHook
from airflow.sdk.serde import deserialize, serialize

from airflow_provider_apicore.exceptions import TaskNotFoundError, TaskTimeoutError
from airflow_provider_apicore.hooks import transport as hook_module
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.results import describe_result, outcome
from airflow_provider_apicore.triggers.task import MJTaskTrigger
from tests.helpers.imagegen import make_png

POLL = 0.1


def data_url(seed: int) -> str:
    import base64

    png = make_png(4, 4, (seed % 256, (seed * 7) % 256, 90))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def submit(count: int) -> list[str]:
    """Submit ``count`` describe jobs through the sync hook; return their task ids."""
    hook = ApicoreHook()
    try:
        return [hook.submit_describe({"base64": data_url(i)}, validate=False).task_id for i in range(count)]
    finally:
        hook.close()


def first_event(trigger: MJTaskTrigger) -> dict[str, Any]:
    """Run the trigger on a fresh event loop, as the triggerer would, and return its one event."""

    async def run() -> dict[str, Any]:
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1, events
        return events[0]

    return asyncio.run(run())


@pytest.fixture
def counted_polls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The ids of every ``alist_tasks`` call the trigger makes (one entry per poll)."""
    calls: list[list[str]] = []
    original = ApicoreHook.alist_tasks

    async def alist_tasks(self: ApicoreHook, ids):
        calls.append(list(ids))
        return await original(self, ids)

    monkeypatch.setattr(ApicoreHook, "alist_tasks", alist_tasks)
    return calls


def test_follows_fifty_ids_with_one_list_request_per_poll(apicore_conn, counted_polls):
    apicore_conn.configure(concurrency=50, job_seconds=0.5)
    ids = submit(50)
    assert len(set(ids)) == 50
    before = apicore_conn.stats()["requests"]

    event = first_event(MJTaskTrigger(ids, poll_interval=POLL, end_time=time.time() + 60))

    assert event["status"] == "done"
    assert event["task_ids"] == ids
    assert event["pending"] == [] and event["not_found"] == []
    assert {raw["status"] for raw in event["tasks"].values()} == {"SUCCESS"}
    assert all(len(describe_result(outcome(event, i, 60))["prompts"]) == 4 for i in ids)

    requests_made = apicore_conn.stats()["requests"]
    polls = len(counted_polls)
    assert requests_made["list"] - before["list"] == polls
    assert requests_made["fetch"] == before["fetch"] == 0
    assert requests_made["submit"] == before["submit"] == 50
    # The first poll asks for all fifty at once; later polls only for what is still pending.
    assert counted_polls[0] == ids
    assert all(set(call) <= set(ids) and call for call in counted_polls)
    # Jobs last 0.5 s and polls are 0.1 s apart: a handful of polls, far fewer than one per id.
    assert 2 <= polls < 50


def test_transient_5xx_answers_are_retried_until_every_task_is_done(apicore_conn, counted_polls, monkeypatch):
    apicore_conn.use_connection(monkeypatch, max_retries=10)
    ids = submit(3)
    real_delay = hook_module.retry_delay
    delays: list[float] = []

    def quick_delay(*args, **kwargs) -> float:
        # Keep the real schedule's shape, a hundred times faster.
        delays.append(real_delay(*args, **kwargs))
        return delays[-1] / 100

    monkeypatch.setattr(hook_module, "retry_delay", quick_delay)
    apicore_conn.configure(faults={"http_5xx": 0.5, "endpoints": ["list"]})

    event = first_event(MJTaskTrigger(ids, poll_interval=POLL, end_time=time.time() + 60))

    assert event["status"] == "done"
    assert {raw["status"] for raw in event["tasks"].values()} == {"SUCCESS"}
    stats = apicore_conn.stats()
    injected = stats["faults_injected"]["http_5xx"]
    assert injected >= 1
    assert len(delays) == injected
    # Every list request was either a poll's answer or a 5xx that was retried.
    assert stats["requests"]["list"] == len(counted_polls) + injected


def test_times_out_with_the_last_status_and_progress_of_stuck_tasks(apicore_conn):
    apicore_conn.configure(job_seconds=0.3, faults={"stuck": 1.0})
    ids = submit(2)

    event = first_event(MJTaskTrigger(ids, poll_interval=POLL, end_time=time.time() + 1.5))

    assert event["status"] == "timeout"
    assert event["pending"] == ids
    for task_id in ids:
        raw = event["tasks"][task_id]
        assert raw["status"] == "IN_PROGRESS"
        with pytest.raises(TaskTimeoutError) as info:
            outcome(event, task_id, 1.5)
        assert info.value.last_status == "IN_PROGRESS"
        assert info.value.last_progress == raw["progress"]
        assert raw["progress"] in str(info.value)


def test_an_end_time_already_past_still_polls_once_then_times_out(apicore_conn, counted_polls):
    apicore_conn.configure(job_seconds=30)
    ids = submit(1)
    event = first_event(MJTaskTrigger(ids, poll_interval=POLL, end_time=time.time() - 5))
    assert event["status"] == "timeout"
    assert len(counted_polls) == 1
    assert event["tasks"][ids[0]]["status"] in ("NOT_START", "SUBMITTED", "IN_PROGRESS")


def test_vanished_and_never_known_ids_end_as_not_found(apicore_conn):
    apicore_conn.configure(job_seconds=0.3, faults={"vanish": 1.0})
    ids = submit(2)
    unknown = "1725017482366000"

    event = first_event(MJTaskTrigger([*ids, unknown], poll_interval=POLL, end_time=time.time() + 30))

    assert event["status"] == "done"
    assert event["not_found"] == sorted([*ids, unknown])
    for task_id in [*ids, unknown]:
        with pytest.raises(TaskNotFoundError):
            outcome(event, task_id, 30)


def test_a_revoked_token_ends_the_wait_with_an_error_event(apicore_conn):
    ids = submit(1)
    apicore_conn.configure(faults={"token_expired": True})
    event = first_event(MJTaskTrigger(ids, poll_interval=POLL, end_time=time.time() + 30))
    assert event["status"] == "error"
    assert "HTTP 401" in event["message"]
    assert "apicore_default" in event["message"]
    assert apicore_conn.token not in event["message"]
    assert event["pending"] == ids


def test_serialize_round_trips_exactly_through_airflow_serde():
    trigger = MJTaskTrigger(["1", 22, "333"], apicore_conn_id="mj_prod", poll_interval=7, end_time=1.75e9)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_apicore.triggers.task.MJTaskTrigger"
    assert kwargs == {
        "task_ids": ["1", "22", "333"],
        "apicore_conn_id": "mj_prod",
        "poll_interval": 7.0,
        "end_time": 1.75e9,
    }
    # What the scheduler stores and the triggerer rebuilds (the same path `airflow dags test` takes).
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)

    endless = MJTaskTrigger(["1"])
    assert import_string(classpath)(**endless.serialize()[1]).serialize() == endless.serialize()

    early = MJTaskTrigger(["1", "2"], poll_interval=1, min_finished=1)
    assert early.serialize()[1]["min_finished"] == 1
    rebuilt = import_string(classpath)(**deserialize(serialize(early.serialize()[1])))
    assert rebuilt.serialize() == early.serialize()


def test_min_finished_returns_a_partial_event_while_others_still_run(apicore_conn):
    apicore_conn.configure(job_seconds=0.3)
    quick = submit(1)
    apicore_conn.configure(faults={"stuck": 1.0})
    stuck = submit(1)
    ids = quick + stuck

    event = first_event(MJTaskTrigger(ids, poll_interval=POLL, end_time=time.time() + 30, min_finished=1))

    assert event["status"] == "partial"
    assert event["pending"] == stuck
    assert event["tasks"][quick[0]]["status"] == "SUCCESS"


def test_run_makes_no_blocking_calls_on_the_event_loop(apicore_conn, monkeypatch):
    ids = submit(2)
    loop_thread = threading.get_ident()
    blocked: list[str] = []

    def forbid(name: str, original: Callable) -> Callable:
        def guarded(*args, **kwargs):
            # The emulator serves from its own thread; only the trigger's loop thread is watched.
            if threading.get_ident() == loop_thread:
                blocked.append(name)
            return original(*args, **kwargs)

        return guarded

    monkeypatch.setattr(time, "sleep", forbid("time.sleep", time.sleep))
    monkeypatch.setattr(requests.Session, "request", forbid("requests", requests.Session.request))
    # A classmethod: keep it callable the same way (the wrapped one is already bound).
    monkeypatch.setattr(
        BaseHook, "get_connection", staticmethod(forbid("get_connection", BaseHook.get_connection))
    )
    for name in ("list_tasks", "fetch_task", "wait_for_tasks", "settings"):
        original = getattr(ApicoreHook, name)
        if isinstance(original, property):
            monkeypatch.setattr(ApicoreHook, name, property(forbid(name, original.fget)))
        else:
            monkeypatch.setattr(ApicoreHook, name, forbid(name, original))
    monkeypatch.setattr(hook_module.Transport, "request", forbid("request", hook_module.Transport.request))
    # Reading extras synchronously runs a blocking masking round trip (extra_dejson); aextra_dejson does not.
    from airflow.sdk.definitions.connection import Connection

    monkeypatch.setattr(
        Connection, "extra_dejson", property(forbid("extra_dejson", Connection.extra_dejson.fget))
    )

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        assert threading.get_ident() == loop_thread
        loop.set_debug(True)
        async for event in MJTaskTrigger(ids, poll_interval=POLL, end_time=time.time() + 30).run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(run())
    assert event["status"] == "done"
    assert blocked == []
