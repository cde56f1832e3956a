"""ApicoreHook over real loopback HTTP: code mapping, auth, retries, fate-unknown submits, masking."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import pytest

from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreBannedPromptError,
    ApicoreConfigError,
    ApicoreHTTPError,
    ApicoreNotFoundError,
    ApicoreQueueFullError,
    ApicoreResponseError,
    ApicoreSubmitError,
    ApicoreUnreachableError,
    ApicoreValidationError,
    PayloadValidationError,
    SubmissionFateUnknownError,
    TaskNotFoundError,
)
from airflow_provider_apicore.hooks.apicore import DEFAULT_HOST, ApicoreHook, retry_delay
from airflow_provider_apicore.models import TaskStatus
from tests.helpers.airflow_run import connection_env
from tests.helpers.imagegen import make_png
from tests.helpers.scripted_server import Reply, ScriptedServer

TOKEN = "sk-hooktest-6f1d2c9a8b7e"
PNG_URL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
PAYLOAD = {"base64": PNG_URL}


def use_conn(monkeypatch, url: str, token: str = TOKEN, conn_id: str = "apicore_default", **extra):
    for key, value in connection_env(url, token, conn_id, **extra).items():
        monkeypatch.setenv(key, value)


def hook_for(monkeypatch, server: ScriptedServer, **kwargs) -> tuple[ApicoreHook, list[float]]:
    use_conn(
        monkeypatch, server.url, timeout=kwargs.pop("timeout", 5), max_retries=kwargs.pop("max_retries", 3)
    )
    hook = ApicoreHook(retry_backoff=0.01, max_backoff=0.05, **kwargs)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    hook._sleep = sleep
    return hook, slept


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- connection settings
class TestConnectionSettings:
    def test_missing_token_is_a_config_error_naming_the_connection(self, monkeypatch):
        use_conn(monkeypatch, "http://127.0.0.1:1", token="")
        with pytest.raises(ApicoreConfigError, match="'apicore_default' has no API token"):
            ApicoreHook().settings  # noqa: B018

    def test_host_without_scheme_is_rejected_with_a_fix(self, monkeypatch):
        use_conn(monkeypatch, "api.apicore.ai")
        with pytest.raises(ApicoreConfigError, match=r"has no scheme.*'https://api.apicore.ai'"):
            ApicoreHook().settings  # noqa: B018

    def test_empty_host_defaults_to_the_public_api(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_APICORE_DEFAULT", json.dumps({"conn_type": "apicore", "password": TOKEN})
        )
        assert ApicoreHook().base_url == DEFAULT_HOST

    def test_extras_plain_or_prefixed_set_timeout_and_retries(self, monkeypatch):
        monkeypatch.setenv(
            "AIRFLOW_CONN_APICORE_DEFAULT",
            json.dumps(
                {
                    "conn_type": "apicore",
                    "host": "https://gw.example.com/",
                    "password": TOKEN,
                    "extra": {"extra__apicore__timeout": "12", "max_retries": 2},
                }
            ),
        )
        settings = ApicoreHook().settings
        assert (settings.base_url, settings.timeout, settings.max_retries) == (
            "https://gw.example.com",
            12.0,
            2,
        )

    @pytest.mark.parametrize(
        ("extra", "field"), [({"timeout": "soon"}, "timeout"), ({"max_retries": 99}, "max_retries")]
    )
    def test_bad_extras_name_the_field(self, monkeypatch, extra, field):
        use_conn(monkeypatch, "http://127.0.0.1:1", **extra)
        with pytest.raises(ApicoreConfigError, match=field):
            ApicoreHook().settings  # noqa: B018

    def test_settings_repr_never_shows_the_token(self, monkeypatch):
        use_conn(monkeypatch, "http://127.0.0.1:1")
        assert TOKEN not in repr(ApicoreHook().settings)

    def test_missing_connection_names_it(self, monkeypatch):
        monkeypatch.delenv("AIRFLOW_CONN_NOPE", raising=False)
        with pytest.raises(ApicoreConfigError, match=r"connection .nope. does not exist"):
            ApicoreHook("nope").settings  # noqa: B018

    def test_token_is_registered_with_the_secret_masker(self, monkeypatch):
        from airflow.sdk._shared.secrets_masker import redact

        use_conn(monkeypatch, "http://127.0.0.1:1", token="sk-mask-me-4711-abcdef")
        ApicoreHook().settings  # noqa: B018
        assert "sk-mask-me-4711-abcdef" not in redact("Authorization: Bearer sk-mask-me-4711-abcdef")


# ---------------------------------------------------------------- submit code mapping
ACCEPTED = [
    (
        {"code": 1, "description": "Submit success", "result": "1725017482366993"},
        "1725017482366993",
        "submitted",
    ),
    (
        {"code": 22, "description": "排队中，前面还有1个任务", "result": 1725017482366994},
        "1725017482366994",
        "queued",
    ),
    ({"code": 21, "description": "任务已存在", "result": "1725017482366995"}, "1725017482366995", "existed"),
]
REFUSED = [
    (23, ApicoreQueueFullError),
    (24, ApicoreBannedPromptError),
    (4, ApicoreValidationError),
    (3, ApicoreNotFoundError),
    # Code 9 is "queue full" on the C# server ("system error" on the Java one): try later, like 23.
    (9, ApicoreQueueFullError),
    (-1, ApicoreSubmitError),
]


@pytest.mark.parametrize(("answer", "task_id", "outcome"), ACCEPTED)
def test_accepted_submit_codes_return_the_task_id_as_a_string(monkeypatch, answer, task_id, outcome):
    with ScriptedServer([Reply(body=answer)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        result = hook.submit_describe(PAYLOAD)
    assert (result.task_id, result.outcome, result.code) == (task_id, outcome, answer["code"])
    sent = server.requests[0]
    assert (sent.method, sent.path) == ("POST", "/mj/submit/describe")
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(sent.body) == PAYLOAD


@pytest.mark.parametrize(("code", "error"), REFUSED)
def test_refused_submit_codes_raise_specific_errors_with_code_and_description(monkeypatch, code, error):
    answer = {"code": code, "description": f"refused-{code}", "properties": {"bannedWord": "gore"}}
    with ScriptedServer([Reply(body=answer)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(error) as info:
            hook.submit_describe(PAYLOAD)
    assert type(info.value) is error
    assert (info.value.code, info.value.description) == (code, f"refused-{code}")
    assert f"code {code}" in str(info.value)
    assert len(server.requests) == 1, "a refusal is final for the hook: no retry"
    if code == 24:
        assert info.value.banned_word == "gore"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(body="<html><body>oops</body></html>"), "not JSON"),
        (Reply(body={"description": "no code"}), "no integer 'code'"),
        (Reply(body={"code": 1, "result": ["x"]}), "no task id"),
        (Reply(body={"code": 1}), "no task id"),
        (Reply(body=[1, 2]), "not a JSON object"),
        (Reply(body='{"code": 1, "result": '), "not JSON"),
    ],
)
def test_malformed_submit_answers_are_lost_answers_never_resent(monkeypatch, reply, reason):
    # Whatever produced an unreadable answer may have let the request through: the job may exist.
    with ScriptedServer([reply]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(SubmissionFateUnknownError, match=reason):
            hook.submit_describe(PAYLOAD)
    assert len(server.requests) == 1


def test_invalid_payload_is_rejected_before_any_request(monkeypatch):
    with ScriptedServer() as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(PayloadValidationError) as info:
            hook.submit_describe({"base64": "not a data url"})
    assert info.value.field == "base64"
    assert server.requests == []


# ---------------------------------------------------------------- auth
@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_name_the_connection_never_the_token(monkeypatch, status):
    body = {"error": {"message": "invalid token", "type": "unauthorized"}}
    with ScriptedServer([Reply(status=status, body=body)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(ApicoreAuthError) as info:
            hook.list_tasks(["1"])
    message = str(info.value)
    assert "'apicore_default'" in message and f"HTTP {status}" in message and "invalid token" in message
    assert TOKEN not in message
    assert len(server.requests) == 1, "auth errors are not retried"


def test_wrong_token_against_the_emulator_is_an_auth_error(emulator, monkeypatch):
    use_conn(monkeypatch, emulator.url, token="sk-wrong-token-000")
    with pytest.raises(ApicoreAuthError, match="HTTP 401"):
        ApicoreHook().submit_describe(PAYLOAD)
    assert emulator.stats()["submissions_accepted"] == 0


# ---------------------------------------------------------------- retries
def test_retry_after_is_honoured(monkeypatch):
    replies = [
        Reply(status=429, body={"message": "slow down"}, headers={"Retry-After": "1"}),
        Reply(body={"code": 1, "result": "42"}),
    ]
    with ScriptedServer(replies) as server:
        hook, slept = hook_for(monkeypatch, server)
        assert hook.submit_describe(PAYLOAD).task_id == "42"
    assert slept == [1.0]
    assert server.requests[1].at - server.requests[0].at >= 1.0


def test_retry_after_as_http_date_is_honoured():
    from email.utils import formatdate

    delay = retry_delay(0, 1.0, 30.0, formatdate(time.time() + 3, usegmt=True))
    assert 1.0 <= delay <= 3.5


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_transient_statuses_are_retried_then_succeed(monkeypatch, status):
    replies = [Reply(status=status, body="<html>bad gateway</html>")] * 2 + [Reply(body=[])]
    with ScriptedServer(replies) as server:
        hook, slept = hook_for(monkeypatch, server)
        assert hook.list_tasks(["1"]) == []
    assert len(server.requests) == 3 and len(slept) == 2


def test_retries_are_capped_and_the_error_says_so(monkeypatch):
    with ScriptedServer([Reply(status=503, body="<html>down</html>")]) as server:
        hook, slept = hook_for(monkeypatch, server, max_retries=2)
        with pytest.raises(ApicoreHTTPError, match=r"HTTP 503 .* 3 times.*max_retries=2"):
            hook.list_tasks(["1"])
    assert len(server.requests) == 3 and len(slept) == 2


def test_backoff_grows_exponentially_with_jitter():
    delays = [retry_delay(a, 1.0, 30.0) for a in range(6)]
    for attempt, delay in enumerate(delays):
        ceiling = min(30.0, 2**attempt)
        assert ceiling / 2 <= delay <= ceiling


def test_connection_refused_is_retried_even_for_submit_then_unreachable(monkeypatch):
    use_conn(monkeypatch, f"http://127.0.0.1:{free_port()}", max_retries=2)
    hook = ApicoreHook(retry_backoff=0.01, max_backoff=0.02)
    attempts: list[float] = []
    hook._sleep = attempts.append
    with pytest.raises(ApicoreUnreachableError, match="after 3 attempts"):
        hook.submit_describe(PAYLOAD)
    assert len(attempts) == 2, "a refused connection was never sent, so the submit is safely retried"


def test_submit_read_timeout_is_fate_unknown_and_not_retried(monkeypatch):
    with ScriptedServer([Reply(body={"code": 1, "result": "7"}, delay=2.0)]) as server:
        hook, slept = hook_for(monkeypatch, server, timeout=0.5)
        with pytest.raises(SubmissionFateUnknownError, match="may or may not have been accepted") as info:
            hook.submit_describe({**PAYLOAD, "state": "run-1/img-9"})
    assert info.value.state == "run-1/img-9"
    assert len(server.requests) == 1 and slept == []


def test_submit_dropped_after_send_is_fate_unknown(monkeypatch):
    with ScriptedServer([Reply(drop=True)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(SubmissionFateUnknownError):
            hook.submit_describe(PAYLOAD)
    assert len(server.requests) == 1


def test_reads_dropped_after_send_are_retried(monkeypatch):
    with ScriptedServer([Reply(drop=True), Reply(body=[])]) as server:
        hook, _ = hook_for(monkeypatch, server)
        assert hook.list_tasks(["1"]) == []
    assert len(server.requests) == 2


# ---------------------------------------------------------------- fetch / list
@pytest.mark.parametrize(
    "reply", [Reply(body=b""), Reply(body="null"), Reply(status=404, body={"message": "no"})]
)
def test_unknown_task_is_task_not_found(monkeypatch, reply):
    with ScriptedServer([reply]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(TaskNotFoundError, match="'123'"):
            hook.fetch_task("123")
    assert server.requests[0].path == "/mj/task/123/fetch"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"tasks": []}, "not a JSON array"),
        ([{"id": "1", "status": "EXPLODED"}], "unknown status"),
        ([{"status": "SUCCESS"}], "no usable 'id'"),
    ],
)
def test_malformed_task_lists_raise_response_errors(monkeypatch, body, reason):
    with ScriptedServer([Reply(body=body)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(ApicoreResponseError, match=reason):
            hook.list_tasks(["1"])


def test_odd_optional_fields_do_not_fail_the_poll(monkeypatch):
    # Strict on id and status only: one float time or odd progress must not fail the poll of every id.
    body = [
        {"id": "1", "status": "SUCCESS", "submitTime": 1725017482366.0, "progress": 100, "startTime": "x"},
        {"id": "2", "status": "", "submitTime": 0, "progress": {"odd": True}, "properties": []},
    ]
    with ScriptedServer([Reply(body=body)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        first, second = hook.list_tasks(["1", "2"])
    assert (first.submit_time, first.progress, first.start_time) == (1725017482366, "100", None)
    assert first.raw["startTime"] == "x"
    assert (second.status, second.submit_time, second.progress, second.properties) == (
        TaskStatus.NOT_START,
        None,
        None,
        {},
    )


def test_list_tasks_of_nothing_sends_nothing(monkeypatch):
    with ScriptedServer() as server:
        hook, _ = hook_for(monkeypatch, server)
        assert hook.list_tasks([]) == []
    assert server.requests == []


# ---------------------------------------------------------------- against the emulator
def test_describe_round_trip_against_the_emulator(apicore_conn):
    hook = ApicoreHook()
    image = make_png(40, 30, (200, 40, 40))
    import base64

    payload = {"base64": "data:image/png;base64," + base64.b64encode(image).decode(), "state": "t1"}
    submitted = hook.submit_describe(payload)
    assert submitted.task_id.isdigit() and submitted.code in (1, 22)
    event = hook.wait_for_tasks([submitted.task_id], poll_interval=0.1, timeout=30)
    assert event["status"] == "done"
    task = hook.fetch_task(submitted.task_id)
    assert task.status is TaskStatus.SUCCESS and task.state == "t1"
    assert task.final_prompt.count("\n\n") >= 3
    listed = hook.list_tasks([submitted.task_id, "999"])
    assert [t.id for t in listed] == [submitted.task_id]
    with pytest.raises(TaskNotFoundError):
        hook.fetch_task("999")
    stats = apicore_conn.stats()
    assert stats["submissions_accepted"] == 1


def test_async_list_against_the_emulator(apicore_conn):
    hook = ApicoreHook()
    submitted = hook.submit_describe(PAYLOAD)

    async def poll():
        try:
            return await hook.alist_tasks([submitted.task_id])
        finally:
            await hook.aclose()

    tasks = asyncio.run(poll())
    assert [t.id for t in tasks] == [submitted.task_id]


def test_test_connection_reports_success_bad_token_and_unreachable(emulator, monkeypatch):
    use_conn(monkeypatch, emulator.url, token=emulator.token)
    ok, message = ApicoreHook().test_connection()
    assert ok and emulator.url in message
    use_conn(monkeypatch, emulator.url, token="sk-wrong-token-000")
    ok, message = ApicoreHook().test_connection()
    assert not ok and "rejected the API token" in message and "sk-wrong-token-000" not in message
    use_conn(monkeypatch, f"http://127.0.0.1:{free_port()}")
    ok, message = ApicoreHook().test_connection()
    assert not ok and "Could not reach APICore" in message


def test_submit_logs_name_size_but_never_token_or_image_data(apicore_conn, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    ApicoreHook().submit_describe({**PAYLOAD, "state": "log-check"})
    out, err = capfd.readouterr()
    # Airflow's structlog writes to the console; stdlib records land in caplog.
    text = caplog.text + out + err
    assert "Submitting describe job" in text and "KiB" in text
    assert apicore_conn.token not in text
    assert PNG_URL[30:] not in text
