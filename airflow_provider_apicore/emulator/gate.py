"""
The outermost ASGI layer: strips a speed-mode prefix, counts API requests, checks the Bearer
token, applies request-level faults (some before the request is processed, some after), runs
every submit through the accounting seams and the submission counters, and in gateway mode
answers like new-api (:mod:`airflow_provider_apicore.emulator.gateway`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from airflow_provider_apicore.emulator.connection import drain_request, drop_connection
from airflow_provider_apicore.emulator.faults import AFTER_FAULTS
from airflow_provider_apicore.emulator.gateway import (
    ACCEPTED_CODES,
    FREE,
    UnknownAction,
    action_for,
    base_url,
    fetch_image,
    gateway_error,
    model_for,
    rewrite_submit_answer,
    token_error,
)
from airflow_provider_apicore.emulator.state import EmulatorState

ADMIN_PREFIX = "/_emulator/"
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# What a body cut off mid-stream looks like for each endpoint.
TRUNCATED = {
    "submit": '{"code": 1, "description": "Submit success", "result": ',
    "fetch": '{"id": "1725017482366993", "action": "DESCRIBE", "status": "IN_PROGR',
    "list": '[{"id": "1725017482366993", "action": "DESCRIBE", "sta',
    "other": '{"code": 1, "result": ',
}


#: ``/<mode>/mj/...``: the speed-mode prefix new-api accepts (any segment) and the C proxy routes.
MODE_PREFIX = re.compile(r"/(?P<mode>[^/]+)(?P<rest>/mj/.*)", re.DOTALL)
PROXY_MODES = ("mj-fast", "mj-relax", "mj-turbo")
IMAGE_PREFIX = "/mj/image/"
#: Routes behind the gateway's read-only token auth (``TokenAuthReadOnly``): exhausted tokens pass.
READ_ONLY_PATHS = frozenset({"/api/usage/token/", "/api/usage/token"})
# Fields new-api removes from a submit body with its default settings.
GATEWAY_DROPPED_FIELDS = ("notifyHook", "accountFilter")
GATEWAY_TOKEN_MESSAGES = {
    "missing": "未提供令牌",
    "invalid": "无效的令牌",
    "expired": "该令牌已过期",
}
PROXY_TOKEN_MESSAGES = {
    "missing": "invalid token",
    "invalid": "invalid token",
    "expired": "token expired or revoked",
}


def strip_mode(scope: Scope, gateway: bool) -> str | None:
    """
    Route ``/mj-fast/mj/...`` (``mj-relax``, ``mj-turbo``; any first segment in gateway mode) as
    ``/mj/...``, rewriting the scope in place.

    :return: the mode segment, or None when the path has none.
    """
    match = MODE_PREFIX.fullmatch(scope["path"])
    if match is None or match["mode"] == "mj":
        return None
    mode = match["mode"]
    if mode not in PROXY_MODES and not gateway:
        return None
    scope["path"] = match["rest"]
    scope["raw_path"] = match["rest"].encode("utf-8")
    return mode


def is_submit(method: str, path: str) -> bool:
    """Whether a request asks for a job: ``POST /mj/submit/*`` or ``POST /mj/insight-face/swap``."""
    return method == "POST" and (path.startswith("/mj/submit/") or path == "/mj/insight-face/swap")


def classify(method: str, path: str) -> str:
    """Endpoint class of an API request: ``submit``, ``fetch``, ``list`` or ``other``."""
    if is_submit(method, path):
        return "submit"
    if method == "GET" and path.startswith("/mj/task/") and path.endswith("/fetch"):
        return "fetch"
    if method == "POST" and path == "/mj/task/list-by-condition":
        return "list"
    return "other"


def bearer_token(scope: Scope) -> str | None:
    """
    The token of a request: ``Authorization: Bearer <token>``, or the ``mj-api-secret`` header
    when ``Authorization`` is absent, empty or ``midjourney-proxy`` (as new-api reads it).
    """
    authorization = secret = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            authorization = value.decode("latin-1").strip()
        elif name == b"mj-api-secret":
            secret = value.decode("latin-1").strip()
    if not authorization or authorization == "midjourney-proxy":
        return secret or None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def send_body(
    send: Send,
    status: int,
    body: str | bytes,
    content_type: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = body.encode("utf-8") if isinstance(body, str) else body
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(data)).encode("latin-1")),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def send_json(send: Send, status: int, payload: Any, **kwargs: Any) -> None:
    body = json.dumps(payload, ensure_ascii=False)
    await send_body(send, status, body, "application/json", **kwargs)


@dataclass
class Outcome:
    """What processing one request did: the id of the job it created, if any."""

    job_id: str | None = None


@dataclass
class Captured:
    """An ASGI response held in memory (submit answers are small JSON bodies)."""

    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"content-length"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def replay(self, send: Send, body: bytes | None = None) -> None:
        data = self.body if body is None else body
        headers = [*self.headers, (b"content-length", str(len(data)).encode("latin-1"))]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replaying(body: bytes) -> Receive:
    """An ASGI ``receive`` that yields ``body`` once, then waits like a quiet client."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


def loads(raw: bytes) -> Any:
    """Decoded JSON, or None when the bytes are not JSON."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def with_body(scope: Scope, body: bytes) -> Scope:
    """A copy of ``scope`` whose Content-Length matches a rewritten body."""
    headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    return {**scope, "headers": headers}


async def guard(state: EmulatorState, scope: Scope, receive: Receive, send: Send, inner: ASGIApp) -> None:
    """
    Serve one HTTP request to the API through the fault and auth checks.

    :param state: emulator state (counters, config, fault decider).
    :param scope: ASGI scope of the request.
    :param receive: ASGI receive.
    :param send: ASGI send as given by uvicorn (needed to reach the transport).
    :param inner: the FastAPI application proper.
    """
    if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
        await inner(scope, receive, send)
        return
    gateway = state.config.gateway
    mode = strip_mode(scope, gateway)
    if mode is not None:
        state.requests_by_mode[mode] = state.requests_by_mode.get(mode, 0) + 1
    method, path = scope["method"], scope["path"]
    endpoint = classify(method, path)
    state.requests[endpoint] += 1
    faults = state.config.faults
    fault = state.decider.request_fault(faults, endpoint)

    if fault == "drop_before":
        state.faults_injected[fault] += 1
        await drain_request(receive)
        await drop_connection(send, faults.drop_style)
        return
    if fault in ("http_5xx", "http_429", "html_error", "malformed_json"):
        state.faults_injected[fault] += 1
        await drain_request(receive)
        await _answer_fault(state, fault, endpoint, send)
        return

    token = ""
    if not (gateway and method == "GET" and path.startswith(IMAGE_PREFIX)):  # no token needed
        problem, message = _token_problem(state, bearer_token(scope), read_only=path in READ_ONLY_PATHS)
        if problem is not None:
            state.unauthorized += 1
            if problem == "expired":
                state.faults_injected["token_expired"] += 1
            await drain_request(receive)
            proxy_body = {"error": {"message": message, "type": "unauthorized"}}
            # An exhausted token is the gateway's refusal (the proxy has no balance): its shape always.
            gateway_shape = gateway or problem == "exhausted"
            await send_json(send, 401, token_error(message) if gateway_shape else proxy_body)
            return
        token = bearer_token(scope) or ""

    # The remaining faults act after processing, so they only apply to authorised requests.
    if fault is not None:
        state.faults_injected[fault] += 1
    outcome = Outcome()

    async def process(target: Send) -> None:
        if endpoint == "submit":
            await _submit(state, scope, receive, target, inner, token, outcome)
        elif gateway:
            await _gateway_route(state, scope, receive, target, inner, token, endpoint)
        else:
            await inner(scope, receive, target)

    if fault in AFTER_FAULTS:

        async def discard(message: Message) -> None:
            return None

        await process(discard)
        if outcome.job_id is not None:
            state.jobs_unanswered += 1
        if fault == "drop_after":
            await drop_connection(send, faults.drop_style)
        else:
            await _answer_fault(state, fault, endpoint, send)
        return
    if fault == "slow":
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await process(hold)
        # Processed, answer not sent: what a test waits for before killing a client "mid-air".
        held_job = outcome.job_id is not None
        state.answers_held += 1
        state.jobs_held += held_job
        try:
            await asyncio.sleep(faults.slow_seconds)
            for message in held:
                await send(message)
        finally:
            state.answers_held -= 1
            state.jobs_held -= held_job
    else:
        await process(send)
    if outcome.job_id is not None:
        state.submit_answers_delivered += 1


def _token_problem(
    state: EmulatorState, token: str | None, read_only: bool = False
) -> tuple[str | None, str]:
    """
    ``(kind, message)`` of what is wrong with a token, or ``(None, "")``.

    :param read_only: the route has the gateway's read-only token auth, which accepts exhausted tokens
    """
    messages = GATEWAY_TOKEN_MESSAGES if state.config.gateway else PROXY_TOKEN_MESSAGES
    if state.config.faults.token_expired:
        return "expired", messages["expired"]
    if token is None:
        return "missing", messages["missing"]
    if token not in state.config.tokens:
        return "invalid", messages["invalid"]
    exhausted = None if read_only else state.token_check(token)
    if exhausted:
        return "exhausted", exhausted
    return None, ""


async def _submit(
    state: EmulatorState,
    scope: Scope,
    receive: Receive,
    send: Send,
    inner: ASGIApp,
    token: str,
    outcome: Outcome,
) -> None:
    """
    One submit: the balance check, (in gateway mode) the request and answer rewriting and the
    gateway's task row, and the submission counters.
    """
    gateway = state.config.gateway
    path = scope["path"]
    raw = await read_body(receive)
    payload = loads(raw)
    if gateway and not isinstance(payload, dict):
        await send_json(send, 400, gateway_error("bind_request_body_failed"))
        return
    try:
        action = action_for(path, payload if isinstance(payload, dict) else None)
    except UnknownAction:
        if gateway:
            await send_json(send, 400, gateway_error("unknown_action"))
            return
        action = "UNKNOWN"
    model = model_for(action)
    charged = action not in FREE
    if charged and not state.charge(token, model):
        state.quota_refused += 1
        await send_json(send, 400, gateway_error("quota_not_enough"))
        return
    if gateway and isinstance(payload, dict) and any(k in payload for k in GATEWAY_DROPPED_FIELDS):
        if payload.get("notifyHook"):
            state.gateway.notify_hooks_dropped += 1
        forwarded = {k: v for k, v in payload.items() if k not in GATEWAY_DROPPED_FIELDS}
        raw = json.dumps(forwarded, ensure_ascii=False).encode("utf-8")
        scope = with_body(scope, raw)
    captured = Captured()
    await inner(scope, replaying(raw), captured.send)
    answer = loads(captured.body) if captured.status == 200 else None
    outcome.job_id = state.record_submission(path, payload, answer)
    accepted = (
        isinstance(answer, dict)
        and answer.get("code") in ACCEPTED_CODES
        and isinstance(answer.get("result"), str)
    )
    if charged and not accepted:
        state.refund(token, model)
    if gateway and accepted:
        state.gateway.record(token, action, payload if isinstance(payload, dict) else None, answer)
        await captured.replay(send, rewrite_submit_answer(captured.body, action))
        return
    await captured.replay(send)


async def _gateway_route(
    state: EmulatorState,
    scope: Scope,
    receive: Receive,
    send: Send,
    inner: ASGIApp,
    token: str,
    endpoint: str,
) -> None:
    """Fetch, list, image and image-seed as new-api answers them; anything else goes to the proxy."""
    path, method = scope["path"], scope["method"]
    rows = state.gateway
    if endpoint == "fetch":
        await drain_request(receive)
        row = rows.row_for(path.split("/")[3], token)
        if row is None:
            await send_json(send, 400, gateway_error("task_no_found"))
        else:
            await send_json(send, 200, row.to_json(base_url(scope)))
        return
    if endpoint == "list":
        body = loads(await read_body(receive))
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list):
            await send_json(send, 400, gateway_error("do_request_failed"))
            return
        base = base_url(scope)
        found = []
        for task_id in dict.fromkeys(i for i in ids if isinstance(i, str)):
            row = rows.row_for(task_id, token)
            if row is not None:
                found.append(row.to_json(base))
        await send_json(send, 200, found)
        return
    if method == "GET" and path.startswith(IMAGE_PREFIX):
        await drain_request(receive)
        task_id = path[len(IMAGE_PREFIX) :]
        if task_id not in rows.rows:
            await send_json(send, 400, {"error": "midjourney_task_not_found"})
            return
        status, data, content_type = await fetch_image(state, task_id)
        await send_body(send, status, data, content_type)
        return
    seed = method == "GET" and path.startswith("/mj/task/") and path.endswith("/image-seed")
    if seed and rows.row_for(path.split("/")[3], token) is None:
        await drain_request(receive)
        await send_json(send, 400, gateway_error("task_no_found"))
        return
    await inner(scope, receive, send)


async def _answer_fault(state: EmulatorState, fault: str, endpoint: str, send: Send) -> None:
    faults = state.config.faults
    if fault == "http_5xx":
        status, as_json = state.decider.server_error()
        if as_json:
            payload = {"error": {"message": f"upstream error ({REASONS[status]})", "type": "server_error"}}
            await send_json(send, status, payload)
        else:
            await send_body(send, status, REASONS[status], "text/plain; charset=utf-8")
    elif fault == "http_429":
        payload = {"error": {"message": "rate limit exceeded, please retry later", "type": "rate_limit"}}
        await send_json(
            send, 429, payload, extra_headers=[(b"retry-after", str(faults.retry_after).encode("latin-1"))]
        )
    elif fault == "http_5xx_after":
        status, as_json = state.decider.server_error_after()
        if as_json:
            payload = {"error": {"message": f"upstream error ({REASONS[status]})", "type": "server_error"}}
            await send_json(send, status, payload)
        else:
            await send_body(send, status, REASONS[status], "text/plain; charset=utf-8")
    elif fault in ("html_error", "html_error_after"):
        await send_body(send, 502, NGINX_502, "text/html")
    else:
        await send_body(send, 200, TRUNCATED[endpoint], "application/json")
