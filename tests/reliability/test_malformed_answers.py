"""
Malformed server answers, through every path that reads them: the hook (sync and async), the trigger,
MJDescribeOperator and MJBatchDescribeOperator.

Each ends in a specific provider error (``ApicoreResponseError`` for answers that are not the
protocol, ``ApicoreHTTPError`` for error pages) whose message quotes a short, single-line excerpt;
never a ``KeyError``, ``JSONDecodeError`` or ``ValueError`` escaping to the user. Answers that are not
JSON at all (cut short, an HTML page with status 200) are transport damage: idempotent reads retry
them like a 5xx. A submit answer that cannot be read (not JSON, or JSON without a usable code or task
id) is ``SubmissionFateUnknownError``: the request may have been processed, so it is never sent again
(the batch records the image ``unknown_fate`` with its state tag). Task objects are strict only on
``id`` and ``status``; other fields of the wrong type are ignored (kept in ``raw``).

The hook's sync submit and list paths for the basic shapes are also in
tests/hooks/test_apicore_hook.py (test_malformed_submit_answers_..., test_malformed_task_lists_...).
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from airflow_provider_apicore.exceptions import (
    EXCERPT_LIMIT,
    ApicoreError,
    ApicoreHTTPError,
    ApicoreResponseError,
    SubmissionFateUnknownError,
)
from airflow_provider_apicore.hooks.apicore import retry_delay
from airflow_provider_apicore.images import to_data_url
from airflow_provider_apicore.manifest import SUCCESS, UNKNOWN_FATE, read_manifest
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from airflow_provider_apicore.triggers.task import MJTaskTrigger
from tests.helpers.imagegen import make_png
from tests.helpers.scripted_server import Reply
from tests.reliability.conftest import ACCEPTED, fast_hook, write_images

PAYLOAD = {"base64": to_data_url(make_png(1, 1))}
TASK_ID = "1725017482366993"
DONE = {
    "id": TASK_ID,
    "action": "DESCRIBE",
    "status": "SUCCESS",
    "progress": "100%",
    "prompt": "1\ufe0f\u20e3 a cat --ar 1:1\n\n2\ufe0f\u20e3 b\n\n3\ufe0f\u20e3 c\n\n4\ufe0f\u20e3 d",
    "submitTime": 1,
    "finishTime": 2,
}
HTML_200 = "<!DOCTYPE html><html><head><title>Sign in</title></head><body>" + "x" * 5000 + "</body></html>"
NGINX_502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>nginx</body>\r\n</html>"

#: Answers that are not JSON at all: cut short, HTML with status 200, plain text, binary junk, nothing.
NOT_JSON = {
    "truncated JSON": '[{"id": "1725017482366993", "status": "IN_PROGR',
    "HTML page with status 200": HTML_200,
    "plain text": "Service temporarily unavailable",
    "binary junk": b"\x00\xff\xfe\x81garbage\x1b[31m",
    "empty body": b"",
}

#: Submit answers that are JSON but not the protocol.
BAD_SUBMITS = {
    "missing code": ({"description": "ok", "result": TASK_ID}, "no integer 'code'"),
    "code not a number": ({"code": "ok", "result": TASK_ID}, "no integer 'code'"),
    "code with two minus signs": ({"code": "--1", "result": TASK_ID}, "no integer 'code'"),
    "code in superscript digits": ({"code": "\u00b9", "result": TASK_ID}, "no integer 'code'"),
    "code is a boolean": ({"code": True, "result": TASK_ID}, "no integer 'code'"),
    "code is a fraction": ({"code": 1.5, "result": TASK_ID}, "no integer 'code'"),
    "result is a list": ({"code": 1, "result": [TASK_ID]}, "no task id"),
    "result is an object": ({"code": 1, "result": {"id": TASK_ID}}, "no task id"),
    "result is a boolean": ({"code": 22, "result": True}, "no task id"),
    "answer is an array": ([ACCEPTED], "not a JSON object"),
    "answer is a string": ('"Submit success"', "not a JSON object"),
}

#: Task-list answers that are JSON but not the protocol (a task's ``id`` and ``status`` are strict).
BAD_LISTS = {
    "object instead of array": ({"code": 1, "result": [DONE]}, "not a JSON array"),
    "unknown status": ([{**DONE, "status": "EXPLODED"}], "unknown status 'EXPLODED'"),
    "task without id": ([{k: v for k, v in DONE.items() if k != "id"}], "no usable 'id'"),
    "task is a string": (["1725017482366993"], "expected a task object, got str"),
}

#: Tasks with an optional field of the wrong type: (field in the answer, bad value, typed attribute,
#: what the typed attribute holds instead). The task is still usable; the raw value stays in ``raw``.
ODD_FIELDS = {
    "properties not an object": ("properties", ["x"], "properties", {}),
    "time not a number": ("finishTime", "soon", "finish_time", None),
    "prompt of the wrong type": ("prompt", {"text": "x"}, "prompt", None),
}


def assert_safe_message(err: BaseException) -> str:
    """The message is one printable line, and any quoted excerpt is short."""
    message = str(err)
    assert "\n" not in message and "\r" not in message
    assert all(ch.isprintable() for ch in message), message
    excerpt = getattr(err, "excerpt", "")
    assert len(excerpt) <= EXCERPT_LIMIT
    assert len(message) < 2 * EXCERPT_LIMIT + 300
    assert not isinstance(err, (KeyError, json.JSONDecodeError)), type(err)
    return message


def always(reply: Reply):
    return lambda method, path, body: reply


def submits_then_lists(list_reply: Reply):
    """A server that accepts submits and answers every task query with ``list_reply``."""

    def route(method: str, path: str, body) -> Reply:
        if path == "/mj/submit/describe":
            return Reply(body=ACCEPTED)
        return list_reply

    return route


async def first_event(trigger: MJTaskTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


# ------------------------------------------------------------------------------------ the hook
@pytest.mark.parametrize("answer", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_a_submit_answer_that_is_not_json_is_a_fate_unknown_error_and_is_not_retried(routed, answer):
    server = routed(always(Reply(body=answer)))
    hook, slept = fast_hook()
    with pytest.raises(SubmissionFateUnknownError) as info:
        hook.submit_describe({**PAYLOAD, "state": "malformed/tag"})
    message = assert_safe_message(info.value)
    assert "/mj/submit/describe" in message and info.value.endpoint == "/mj/submit/describe"
    assert info.value.state == "malformed/tag", "the tag that finds the job if one was created"
    assert "not JSON" in info.value.cause or "empty" in info.value.cause, info.value.cause
    # The server may have processed it: sending it again could start a second paid job.
    assert server.count("/mj/submit/describe") == 1 and slept == []


@pytest.mark.parametrize("answer", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_a_task_query_answer_that_is_not_json_is_retried_then_a_response_error(routed, answer):
    server = routed(always(Reply(body=answer)), max_retries=2)
    hook, slept = fast_hook()
    with pytest.raises(ApicoreResponseError) as info:
        hook.list_tasks([TASK_ID])
    message = assert_safe_message(info.value)
    assert "list-by-condition" in message and "3 times" in message
    assert server.count("list-by-condition") == 3 and len(slept) == 2


@pytest.mark.parametrize("answer", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_async_task_queries_retry_answers_that_are_not_json_the_same_way(routed, answer):
    server = routed(always(Reply(body=answer)), max_retries=2)
    hook, _ = fast_hook()
    hook.retry_backoff = 0.001

    async def query():
        try:
            return await hook.alist_tasks([TASK_ID])
        finally:
            await hook.aclose()

    with pytest.raises(ApicoreResponseError) as info:
        asyncio.run(query())
    assert_safe_message(info.value)
    assert server.count("list-by-condition") == 3


def test_one_truncated_answer_to_a_task_query_is_retried_and_the_next_one_used(routed):
    answers = iter([Reply(body=NOT_JSON["truncated JSON"]), Reply(body=[DONE])])
    server = routed(lambda method, path, body: next(answers))
    hook, slept = fast_hook()
    [task] = hook.list_tasks([TASK_ID])
    assert task.status.value == "SUCCESS" and len(slept) == 1
    assert server.count("list-by-condition") == 2


@pytest.mark.parametrize(("answer", "reason"), list(BAD_SUBMITS.values()), ids=list(BAD_SUBMITS))
def test_submit_answers_that_break_the_protocol_are_fate_unknown_and_not_retried(routed, answer, reason):
    # A 200 the client cannot read may well mean a job was created: never sent a second time.
    server = routed(always(Reply(body=answer)))
    hook, slept = fast_hook()
    with pytest.raises(SubmissionFateUnknownError, match=reason) as info:
        hook.submit_describe(PAYLOAD)
    assert_safe_message(info.value)
    assert reason in info.value.cause
    assert server.count("/mj/submit/describe") == 1 and slept == []


@pytest.mark.parametrize(("answer", "reason"), list(BAD_LISTS.values()), ids=list(BAD_LISTS))
def test_task_answers_that_break_the_protocol_are_response_errors_sync_and_async(routed, answer, reason):
    server = routed(always(Reply(body=answer)))
    hook, _ = fast_hook()
    with pytest.raises(ApicoreResponseError, match=reason) as info:
        hook.list_tasks([TASK_ID])
    assert_safe_message(info.value)
    with pytest.raises(ApicoreResponseError, match=reason):
        asyncio.run(hook.alist_tasks([TASK_ID]))
    # Valid JSON in the wrong shape is not transport damage: asking again would get the same answer.
    assert server.count("list-by-condition") == 2


@pytest.mark.parametrize(("key", "bad", "attr", "typed"), list(ODD_FIELDS.values()), ids=list(ODD_FIELDS))
def test_task_fields_of_the_wrong_type_are_ignored_and_kept_raw_sync_and_async(routed, key, bad, attr, typed):
    server = routed(always(Reply(body=[{**DONE, key: bad}])))
    hook, _ = fast_hook()
    [task] = hook.list_tasks([TASK_ID])
    [atask] = asyncio.run(hook.alist_tasks([TASK_ID]))
    for t in (task, atask):
        assert t.id == TASK_ID and t.status.value == "SUCCESS" and t.is_terminal
        assert getattr(t, attr) == typed
        assert t.raw[key] == bad
    # The other fields still parse: only the odd one is dropped.
    if key != "finishTime":
        assert task.finish_time == DONE["finishTime"]
    assert server.count("list-by-condition") == 2


def test_an_html_error_page_is_retried_then_quoted_briefly(routed):
    server = routed(always(Reply(status=502, body=NGINX_502 + "<!--" + "y" * 4000 + "-->")), max_retries=1)
    hook, _ = fast_hook()
    with pytest.raises(ApicoreHTTPError) as info:
        hook.list_tasks([TASK_ID])
    message = assert_safe_message(info.value)
    assert "HTTP 502" in message and "502 Bad Gateway" in info.value.excerpt
    assert server.count("list-by-condition") == 2


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "soon", "Thu, 32 Foo 2020 99:99:99 GMT", ""])
def test_a_nonsense_retry_after_falls_back_to_the_backoff(value):
    delay = retry_delay(0, 1.0, 30.0, value)
    assert 0.0 <= delay <= 300.0
    assert delay == delay, "never NaN"


def test_a_429_with_a_nonsense_retry_after_is_retried_not_a_crash(routed):
    answers = iter([Reply(status=429, body="{}", headers={"Retry-After": "nan"}), Reply(body=[DONE])])
    routed(lambda method, path, body: next(answers))
    hook, slept = fast_hook()
    assert [t.id for t in hook.list_tasks([TASK_ID])] == [TASK_ID]
    assert len(slept) == 1 and slept[0] == slept[0] and 0 <= slept[0] <= 300


# ------------------------------------------------------------------------------------ the trigger
@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        (Reply(body=NOT_JSON["truncated JSON"]), "is not JSON"),
        (Reply(body=HTML_200), "is not JSON"),
        (Reply(body=BAD_LISTS["unknown status"][0]), "unknown status 'EXPLODED'"),
        (Reply(body=BAD_LISTS["object instead of array"][0]), "not a JSON array"),
    ],
    ids=["truncated JSON", "HTML page with status 200", "unknown status", "object instead of array"],
)
def test_the_trigger_ends_with_an_error_event_quoting_a_short_excerpt(routed, answer, needle):
    routed(always(answer), max_retries=1)
    trigger = MJTaskTrigger([TASK_ID], poll_interval=0.01)
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "error" and event["task_ids"] == [TASK_ID]
    assert needle in event["message"] and "Malformed APICore answer" in event["message"]
    assert len(event["message"]) < 2 * EXCERPT_LIMIT + 300 and "\n" not in event["message"]


# ------------------------------------------------------------------------------------ the operators
CONTEXT = {"ti": SimpleNamespace(dag_id="malformed", run_id="manual__1", xcom_push=lambda key, value: None)}


def test_describe_operator_waiting_on_a_malformed_task_list_fails_with_a_response_error(routed, tmp_path):
    from airflow_provider_apicore.operators.describe import MJDescribeOperator

    [image] = write_images(tmp_path, 1)
    routed(submits_then_lists(Reply(body=BAD_LISTS["unknown status"][0])))
    op = MJDescribeOperator(task_id="d", image=str(image), wait_for_completion=True, poll_interval=0.01)
    with pytest.raises(ApicoreResponseError, match="unknown status 'EXPLODED'") as info:
        op.execute(CONTEXT)
    assert_safe_message(info.value)


def _cut_short_then_accepted(routed):
    """A server whose first submit answer is cut short (it may have accepted it), the next accepted."""
    submits = iter([Reply(body='{"code": 1, "result": '), Reply(body=ACCEPTED)])

    def route(method: str, path: str, body) -> Reply:
        if path == "/mj/submit/describe":
            return next(submits)
        return Reply(body=[DONE])

    return routed(route)


def test_batch_operator_records_a_malformed_submit_answer_unknown_fate_and_never_resends(routed, tmp_path):
    server = _cut_short_then_accepted(routed)
    write_images(tmp_path / "src", 1)
    op = MJBatchDescribeOperator(
        task_id="b", source=str(tmp_path / "src"), manifest_path=str(tmp_path / "m.jsonl"), poll_interval=0.05
    )
    summary = op.execute(CONTEXT)
    assert summary["by_status"] == {UNKNOWN_FATE: 1}
    [record] = read_manifest(tmp_path / "m.jsonl")
    assert record.status == UNKNOWN_FATE and record.task_id is None and record.attempts == 1
    assert record.state, "the state tag that finds the job, if APICore created one"
    assert "not JSON" in (record.error or ""), record.error
    assert server.count("/mj/submit/describe") == 1, "a submission in doubt is never sent again"


def test_batch_operator_resends_a_malformed_submit_answer_only_when_told_to(routed, tmp_path):
    server = _cut_short_then_accepted(routed)
    write_images(tmp_path / "src", 1)
    op = MJBatchDescribeOperator(
        task_id="b",
        source=str(tmp_path / "src"),
        manifest_path=str(tmp_path / "m.jsonl"),
        poll_interval=0.05,
        on_unknown_fate="resubmit",
    )
    summary = op.execute(CONTEXT)
    assert summary["by_status"] == {SUCCESS: 1}
    [record] = read_manifest(tmp_path / "m.jsonl")
    assert record.attempts == 2 and record.task_id == TASK_ID
    assert server.count("/mj/submit/describe") == 2


def test_batch_operator_fails_on_malformed_task_lists_and_keeps_every_task_id(routed, tmp_path):
    server = routed(submits_then_lists(Reply(body=BAD_LISTS["unknown status"][0])))
    write_images(tmp_path / "src", 1)
    op = MJBatchDescribeOperator(
        task_id="b", source=str(tmp_path / "src"), manifest_path=str(tmp_path / "m.jsonl"), poll_interval=0.05
    )
    with pytest.raises(ApicoreError) as info:
        op.execute(CONTEXT)
    assert isinstance(info.value, ApicoreResponseError), type(info.value)
    assert_safe_message(info.value)
    [record] = read_manifest(tmp_path / "m.jsonl")
    assert record.task_id == TASK_ID, "a retry of the task resumes following the accepted job"
    assert server.count("/mj/submit/describe") == 1
