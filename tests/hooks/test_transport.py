"""
The transport's one rule, over real loopback HTTP: a submission that may have been processed is never
sent twice; only answers that prove nothing was processed are retried.

Each ambiguous case is a server that *did* receive (and could have processed) the request before
failing; each "safe to retry" case is one where nothing reached a request handler.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import pytest

from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreNotFoundError,
    ApicoreQueueFullError,
    ApicoreQuotaExceededError,
    ApicoreThrottledError,
    ApicoreUnreachableError,
    ApicoreValidationError,
    SubmissionFateUnknownError,
    TaskNotFoundError,
)
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.hooks.transport import httpx_error_sent, requests_error_sent
from tests.helpers.scripted_server import Reply, ScriptedServer
from tests.hooks.test_apicore_hook import PAYLOAD, TOKEN, hook_for, use_conn

HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"


@contextlib.contextmanager
def refusing_port():
    """A loopback port that is bound (so nobody else takes it) but not listening: connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("status", [500, 502, 504])
@pytest.mark.parametrize(
    "body", [{"code": 5, "description": "do_request_failed"}, "upstream error", HTML_502], ids=str
)
def test_ambiguous_statuses_to_a_submit_are_fate_unknown_after_one_request(monkeypatch, status, body):
    with ScriptedServer([Reply(status=status, body=body), Reply(body={"code": 1, "result": "2"})]) as server:
        hook, slept = hook_for(monkeypatch, server, max_retries=5)
        with pytest.raises(SubmissionFateUnknownError) as info:
            hook.submit_describe({**PAYLOAD, "state": "tag-1"})
    assert len(server.requests) == 1, "the job may exist upstream: a second POST could be a second paid job"
    assert slept == []
    assert (info.value.status, info.value.state) == (status, "tag-1")
    assert f"HTTP {status}" in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_the_same_statuses_are_retried_for_reads(monkeypatch, status):
    with ScriptedServer([Reply(status=status, body=HTML_502), Reply(body=[])]) as server:
        hook, _ = hook_for(monkeypatch, server)
        assert hook.list_tasks(["1"]) == []
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [429, 503])
def test_throttled_submits_are_retried_honouring_retry_after(monkeypatch, status):
    replies = [Reply(status=status, body={"message": "busy"}, headers={"Retry-After": "0.2"})]
    with ScriptedServer([*replies, Reply(body={"code": 1, "result": "9"})]) as server:
        hook, slept = hook_for(monkeypatch, server, max_retries=3)
        assert hook.submit_describe(PAYLOAD).task_id == "9"
    assert slept == [0.2] and len(server.requests) == 2


def test_throttled_submit_with_retries_off_raises_at_once_with_retry_after(monkeypatch):
    reply = Reply(status=429, body={"code": 30, "description": "saturated"}, headers={"Retry-After": "7"})
    with ScriptedServer([reply]) as server:
        hook, slept = hook_for(monkeypatch, server, max_retries=5)
        with pytest.raises(ApicoreThrottledError) as info:
            hook.submit_describe(PAYLOAD, retries=0)
    assert (info.value.status, info.value.retry_after) == (429, 7.0)
    assert len(server.requests) == 1 and slept == []


def test_refused_connection_is_safe_to_retry_for_a_submit(monkeypatch):
    with refusing_port() as port:
        use_conn(monkeypatch, f"http://127.0.0.1:{port}", max_retries=2)
        hook = ApicoreHook(retry_backoff=0.01, max_backoff=0.02)
        naps: list[float] = []
        hook._sleep = naps.append
        with pytest.raises(ApicoreUnreachableError, match="after 3 attempts"):
            hook.submit_describe(PAYLOAD)
    assert len(naps) == 2


def test_tls_handshake_failure_is_not_fate_unknown(monkeypatch):
    # An https URL to a plain-HTTP server: the TLS handshake fails before any request is written, so
    # nothing can have been processed (the server never sees a request line it could parse).
    with ScriptedServer([Reply(body={"code": 1, "result": "1"})]) as server:
        use_conn(monkeypatch, server.url.replace("http://", "https://"), max_retries=0)
        hook = ApicoreHook()
        with pytest.raises(ApicoreUnreachableError) as info:
            hook.submit_describe(PAYLOAD)
    assert "SSLError" in str(info.value)
    assert not [r for r in server.requests if r.method == "POST"]


def test_proxy_refusal_is_not_fate_unknown(monkeypatch):
    with ScriptedServer() as server, refusing_port() as proxy_port:
        use_conn(monkeypatch, server.url, max_retries=0)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.delenv("no_proxy", raising=False)
        hook = ApicoreHook()
        with pytest.raises(ApicoreUnreachableError, match="ProxyError"):
            hook.submit_describe(PAYLOAD)
    assert server.requests == []


def test_classification_is_by_exception_type_not_message():
    import httpx
    import requests

    # Messages that would fool a text match: the types decide.
    assert requests_error_sent(requests.exceptions.ReadTimeout("NewConnectionError in message"))
    assert not requests_error_sent(requests.exceptions.SSLError("read timed out"))
    assert not requests_error_sent(requests.exceptions.ConnectTimeout("connection reset"))
    assert requests_error_sent(requests.exceptions.ConnectionError("NameResolutionError"))
    assert not httpx_error_sent(httpx.ConnectError("read error"))
    assert httpx_error_sent(httpx.ReadTimeout("ConnectError"))


def test_gateway_quota_refusal_is_a_quota_error(monkeypatch):
    body = {"code": 4, "description": "quota_not_enough ", "type": "upstream_error"}
    with ScriptedServer([Reply(status=400, body=body)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(ApicoreQuotaExceededError, match="quota_not_enough") as info:
            hook.submit_describe(PAYLOAD)
    assert "Top up" in str(info.value) and TOKEN not in str(info.value)
    assert len(server.requests) == 1


def test_exhausted_token_401_is_a_quota_error_other_401_auth(monkeypatch):
    exhausted = {
        "error": {"message": "该令牌额度已用尽 TokenStatusExhausted[sk-abc***xyz]", "type": "new_api_error"}
    }
    with ScriptedServer([Reply(status=401, body=exhausted)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(ApicoreQuotaExceededError):
            hook.submit_describe(PAYLOAD)
    invalid = {"error": {"message": "无效的令牌", "type": "new_api_error"}}
    with ScriptedServer([Reply(status=401, body=invalid)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(ApicoreAuthError):
            hook.submit_describe(PAYLOAD)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, {"code": 3, "description": "关联任务不存在或已失效"}, ApicoreNotFoundError),
        (
            400,
            {"code": 4, "description": "prompt_is_required ", "type": "upstream_error"},
            ApicoreValidationError,
        ),
        (200, {"code": 3, "description": "无可用的账号实例"}, ApicoreQueueFullError),
        (200, {"code": 9, "description": "提交失败，队列已满，请稍后重试"}, ApicoreQueueFullError),
        (
            200,
            {"success": False, "code": -1, "message": "State参数过长，最大255字符"},
            ApicoreValidationError,
        ),
    ],
)
def test_server_envelopes_with_any_status_map_by_code(monkeypatch, status, body, error):
    with ScriptedServer([Reply(status=status, body=body)]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(error):
            hook.submit_describe(PAYLOAD)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=204, body=b""),
        Reply(status=400, body={"code": 4, "description": "task_no_found ", "type": "upstream_error"}),
    ],
)
def test_gateway_and_csharp_unknown_ids_are_not_found(monkeypatch, reply):
    with ScriptedServer([reply]) as server:
        hook, _ = hook_for(monkeypatch, server)
        with pytest.raises(TaskNotFoundError):
            hook.fetch_task("123")


def test_speed_mode_prefixes_submissions_only(monkeypatch):
    with ScriptedServer([Reply(body={"code": 1, "result": "5"}), Reply(body=[])]) as server:
        use_conn(monkeypatch, server.url, mode="fast")
        hook = ApicoreHook()
        hook.submit_describe(PAYLOAD)
        hook.list_tasks(["5"])
    assert [r.path for r in server.requests] == ["/mj-fast/mj/submit/describe", "/mj/task/list-by-condition"]


def test_unknown_mode_is_a_config_error(monkeypatch):
    from airflow_provider_apicore.exceptions import ApicoreConfigError

    use_conn(monkeypatch, "http://127.0.0.1:9", mode="warp")
    with pytest.raises(ApicoreConfigError, match="mode must be one of fast, relax, turbo"):
        _ = ApicoreHook().settings


def test_ssl_module_available():
    # The TLS test above relies on requests' SSLError; make the dependency explicit.
    assert ssl.OPENSSL_VERSION
