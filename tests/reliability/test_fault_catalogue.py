"""
Every fault class the emulator injects, through ApicoreHook (sync, async and its waiting path).

Each case asserts the outcome the README's Reliability section documents: retried (how often),
or failed with a specific error; and the emulator's ``faults_injected`` counter proves the fault
really happened.
A submit answered 500, 502 or 504 (JSON, text or an HTML error page), or with a body that cannot be
read, may have been processed: it is ``SubmissionFateUnknownError`` after one request, never retried.
503 and 429 say nothing was processed: retried (``ApicoreThrottledError`` when they persist). The
emulator's ``http_5xx`` draws 500/502/503/504 from a seeded stream, which the tests replay with the
emulator's own ``FaultDecider`` to know which status each request got.
Request-level faults are aimed at one endpoint class with the emulator's ``endpoints`` filter; the
connection allows 2 retries and a 1 s timeout, and the hook's backoff is scaled down to milliseconds
(the schedule itself is checked with the default settings at the end).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_apicore.emulator.faults import FAIL_REASONS, FaultDecider
from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreHTTPError,
    ApicoreQueueFullError,
    ApicoreResponseError,
    ApicoreThrottledError,
    ApicoreUnreachableError,
    SubmissionFateUnknownError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.images import to_data_url
from airflow_provider_apicore.results import describe_result, outcome
from tests.conftest import SEED
from tests.reliability.conftest import fast_hook, unique_png

RETRIES = 2  # the connection's max_retries in these tests: a persistent fault costs 3 requests


def seeded_5xx_statuses(count: int) -> list[int]:
    """The statuses the emulator's ``http_5xx`` fault answers with, in order, under the tests' seed."""
    decider = FaultDecider(SEED)
    return [decider.server_error()[0] for _ in range(count)]


UNKNOWN_ID = "1725017482366993"


def payload(index: int = 0) -> dict[str, str]:
    return {"base64": to_data_url(unique_png(index))}


def submit(hook: ApicoreHook) -> Any:
    return hook.submit_describe(payload())


def list_tasks(hook: ApicoreHook) -> Any:
    return hook.list_tasks([UNKNOWN_ID])


def alist_tasks(hook: ApicoreHook) -> Any:
    async def run():
        try:
            return await hook.alist_tasks([UNKNOWN_ID])
        finally:
            await hook.aclose()

    return asyncio.run(run())


def fetch_task(hook: ApicoreHook) -> Any:
    return hook.fetch_task(UNKNOWN_ID)


CALLS: dict[str, tuple[Callable[[ApicoreHook], Any], str]] = {
    "submit": (submit, "submit"),
    "list": (list_tasks, "list"),
    "async list": (alist_tasks, "list"),
    "fetch": (fetch_task, "fetch"),
}


@dataclass
class Case:
    """One fault class aimed at one call, and how it must end."""

    fault: str
    call: str
    error: type[Exception] | None  # None: the call succeeds after retries
    message: str = ""
    requests: int = 1  # requests the call makes to its endpoint
    created: int = 0  # tasks the emulator created (a submit that was processed)
    knobs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.fault}-{self.call}"


PERSISTENT = RETRIES + 1
CASES = [
    # 5xx and HTML error pages to a read: every call is retried, then gives up naming the status.
    *(
        Case("http_5xx", call, ApicoreHTTPError, f"{PERSISTENT} times;", PERSISTENT)
        for call in ("list", "async list", "fetch")
    ),
    *(
        Case("html_error", call, ApicoreHTTPError, "502 Bad Gateway", PERSISTENT)
        for call in ("list", "async list", "fetch")
    ),
    # ... to a submit: the client cannot know whether the job was created, so it is never sent again
    # (the seed's first 5xx is a 502, checked below; 503 is test_a_5xx_to_a_submit_...).
    Case("http_5xx", "submit", SubmissionFateUnknownError, "HTTP 502", 1, 0),
    Case("html_error", "submit", SubmissionFateUnknownError, "502 Bad Gateway", 1, 0),
    # 429: retried after the server's Retry-After, then gives up naming 429.
    *(
        Case("http_429", call, ApicoreHTTPError, "HTTP 429", PERSISTENT, knobs={"retry_after": 0})
        for call in CALLS
    ),
    # A body that is not JSON: reads are asked again; a submit is not (it may have been processed).
    Case("malformed_json", "submit", SubmissionFateUnknownError, "is not JSON", 1),
    *(
        Case("malformed_json", call, ApicoreResponseError, f"{PERSISTENT} times; gave up", PERSISTENT)
        for call in ("list", "async list", "fetch")
    ),
    # Connection dropped: a submit's fate is unknown to the client, whether or not it was processed.
    Case("drop_before", "submit", SubmissionFateUnknownError, "may or may not have been accepted", 1, 0),
    Case("drop_after", "submit", SubmissionFateUnknownError, "may or may not have been accepted", 1, 1),
    *(
        Case(kind, call, ApicoreUnreachableError, f"after {PERSISTENT} attempts", PERSISTENT)
        for kind in ("drop_before", "drop_after")
        for call in ("list", "async list", "fetch")
    ),
    # An answer slower than the connection's timeout: like a drop after the request was processed.
    Case("slow", "submit", SubmissionFateUnknownError, "Read timed out", 1, 1, {"slow_seconds": 1.0}),
    *(
        Case(
            "slow",
            call,
            ApicoreUnreachableError,
            f"after {PERSISTENT} attempts",
            PERSISTENT,
            0,
            {"slow_seconds": 1.0},
        )
        for call in ("list", "fetch")
    ),
    # Queue full (code 23): nothing was created; the hook reports it, the operators back off (see below).
    Case("queue_full", "submit", ApicoreQueueFullError, "code 23", 1, 0),
    # An expired token: never retried, names the connection.
    *(Case("token_expired", call, ApicoreAuthError, "connection 'apicore_default'", 1) for call in CALLS),
]


@pytest.fixture
def hook(emulator, monkeypatch) -> tuple[ApicoreHook, list[float]]:
    emulator.use_connection(monkeypatch, timeout=0.6, max_retries=RETRIES)
    return fast_hook()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_persistent_fault_ends_as_documented(emulator, hook, case):
    if case.id == "http_5xx-submit":
        assert seeded_5xx_statuses(1) == [502], "the case expects the seed's first injected 5xx to be a 502"
    the_hook, slept = hook
    call, endpoint = CALLS[case.call]
    faults: dict[str, Any] = {case.fault: True if case.fault == "token_expired" else 1.0, **case.knobs}
    faults["endpoints"] = [endpoint]
    emulator.configure(faults=faults)
    with pytest.raises(case.error) as info:
        call(the_hook)
    message = str(info.value)
    assert case.message in message
    assert emulator.token not in message
    stats = emulator.stats()
    assert stats["requests"][endpoint] == case.requests
    assert stats["faults_injected"][case.fault] == case.requests
    assert stats["tasks_created"] == case.created
    if case.call != "async list":  # the async path waits with asyncio.sleep
        assert len(slept) == case.requests - 1, "one wait before each retry"


@pytest.mark.parametrize(
    "fault", ["http_5xx", "http_429", "html_error", "malformed_json", "drop_before", "drop_after", "slow"]
)
@pytest.mark.parametrize("call", ["list", "async list", "fetch"])
def test_transient_read_faults_are_retried_until_the_answer_comes(emulator, hook, monkeypatch, fault, call):
    the_hook, _ = hook
    the_hook._max_retries = 6
    the_hook._settings = None
    do, endpoint = CALLS[call]
    emulator.configure(faults={fault: 0.4, "endpoints": [endpoint], "retry_after": 0, "slow_seconds": 1.0})
    calls = 10
    for _ in range(calls):
        try:
            answer = do(the_hook)
        except TaskNotFoundError:
            answer = None  # fetch of an unknown id: the protocol's "not found", reached after the retries
        assert answer in ([], None)
    stats = emulator.stats()
    injected = stats["faults_injected"][fault]
    assert injected >= 1, "the seeded fault stream hit at least once"
    assert stats["requests"][endpoint] == calls + injected, "each fault cost exactly one retry"


def test_transient_submit_faults_that_were_not_processed_are_retried(emulator, hook):
    # 429 says nothing was processed: the hook retries it, and each image gets exactly one job.
    the_hook, _ = hook
    the_hook._max_retries = 6
    the_hook._settings = None
    emulator.configure(faults={"http_429": 0.4, "endpoints": ["submit"], "retry_after": 0})
    ids = {the_hook.submit_describe(payload(i)).task_id for i in range(8)}
    stats = emulator.stats()
    injected = stats["faults_injected"]["http_429"]
    assert injected >= 1
    assert len(ids) == stats["tasks_created"] == 8 and stats["duplicate_submissions"] == 0
    assert stats["requests"]["submit"] == 8 + injected


def test_a_5xx_to_a_submit_is_fate_unknown_except_503_which_is_retried(emulator, hook):
    # Every submit answered 5xx: 503s are retried (nothing processed), the first 500/502/504 ends the
    # call with SubmissionFateUnknownError naming that status, and that request is never sent again.
    the_hook, slept = hook
    the_hook._max_retries = 6
    the_hook._settings = None
    emulator.configure(faults={"http_5xx": 1.0, "endpoints": ["submit"]})
    expected = seeded_5xx_statuses(40)
    assert 503 in expected[:12], "the seed must exercise a 503 within the first calls"
    for i in range(8):
        with pytest.raises(SubmissionFateUnknownError) as info:
            the_hook.submit_describe({**payload(i), "state": f"catalogue/{i}"})
        throttled = 0
        while expected[0] == 503:
            expected.pop(0)
            throttled += 1
        assert info.value.status == expected.pop(0) in (500, 502, 504), info.value
        assert info.value.state == f"catalogue/{i}" and f"HTTP {info.value.status}" in str(info.value)
        assert len(slept) == throttled, f"call {i}: one wait before each retry of a 503, none after a 50x"
        slept.clear()
    stats = emulator.stats()
    assert stats["requests"]["submit"] == stats["faults_injected"]["http_5xx"]
    assert stats["tasks_created"] == 0


def test_a_persistent_429_to_a_submit_is_throttled_after_the_retries(emulator, hook):
    # Nothing was processed: retried max_retries times, then ApicoreThrottledError (503 is retried the
    # same way, see test_a_5xx_to_a_submit_...).
    the_hook, slept = hook
    emulator.configure(faults={"http_429": 1.0, "endpoints": ["submit"], "retry_after": 0})
    with pytest.raises(ApicoreThrottledError) as info:
        the_hook.submit_describe(payload())
    assert info.value.status == 429 and len(slept) == RETRIES
    stats = emulator.stats()
    assert stats["requests"]["submit"] == PERSISTENT and stats["tasks_created"] == 0


def test_retry_after_is_what_the_hook_waits(emulator, hook):
    the_hook, slept = hook
    emulator.configure(faults={"http_429": 1.0, "retry_after": 7, "endpoints": ["list"]})
    with pytest.raises(ApicoreHTTPError, match="HTTP 429"):
        the_hook.list_tasks([UNKNOWN_ID])
    assert slept == [7.0] * RETRIES


def test_default_schedule_is_five_retries_in_at_most_31_seconds(emulator, monkeypatch):
    emulator.use_connection(monkeypatch)  # no extras: the defaults
    emulator.configure(faults={"http_5xx": 1.0, "endpoints": ["list"]})
    the_hook = ApicoreHook()
    slept: list[float] = []
    the_hook._sleep = slept.append  # record the schedule without waiting it out
    with pytest.raises(ApicoreHTTPError, match=r"6 times; .*\(max_retries=5\)"):
        the_hook.list_tasks([UNKNOWN_ID])
    assert len(slept) == 5
    for attempt, delay in enumerate(slept):
        ceiling = min(30.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert sum(slept) <= 31


# ------------------------------------------------------------------------------------ task faults
def wait(the_hook: ApicoreHook, task_id: str, timeout: float) -> Any:
    """The hook's waiting path, ending the way every operator ends: result or specific error."""
    event = the_hook.wait_for_tasks([task_id], poll_interval=0.05, timeout=timeout)
    return describe_result(outcome(event, task_id, timeout))


def test_task_failure_ends_in_task_failed_error_with_the_fail_reason(emulator, hook):
    the_hook, _ = hook
    emulator.configure(faults={"task_failure": 1.0})
    task_id = submit(the_hook).task_id
    with pytest.raises(TaskFailedError) as info:
        wait(the_hook, task_id, timeout=10)
    assert info.value.fail_reason in FAIL_REASONS and info.value.fail_reason in str(info.value)
    assert emulator.stats()["faults_injected"]["task_failure"] == 1


def test_a_stuck_task_ends_in_a_timeout_naming_its_last_status_and_progress(emulator, hook):
    the_hook, _ = hook
    emulator.configure(faults={"stuck": 1.0})
    task_id = submit(the_hook).task_id
    with pytest.raises(TaskTimeoutError, match=r"within 1s; last seen status IN_PROGRESS, progress \d+%"):
        wait(the_hook, task_id, timeout=1)
    assert emulator.stats()["faults_injected"]["stuck"] == 1


def test_a_vanished_task_ends_in_task_not_found(emulator, hook):
    the_hook, _ = hook
    emulator.configure(faults={"vanish": 1.0})
    task_id = submit(the_hook).task_id
    with pytest.raises(TaskNotFoundError, match=task_id):
        wait(the_hook, task_id, timeout=10)
    with pytest.raises(TaskNotFoundError):
        the_hook.fetch_task(task_id)
    assert emulator.stats()["faults_injected"]["vanish"] == 1


def test_an_expired_token_while_waiting_ends_in_an_auth_error(emulator, hook):
    the_hook, _ = hook
    task_id = submit(the_hook).task_id
    emulator.configure(faults={"token_expired": True})
    with pytest.raises(ApicoreAuthError, match="HTTP 401"):
        wait(the_hook, task_id, timeout=10)
    assert emulator.stats()["requests"]["list"] == 1, "auth errors are not retried"
