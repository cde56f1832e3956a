"""
The outermost ASGI layer: counts API requests, checks the Bearer token and applies request-level
faults (some before the request is processed, some after).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from airflow_provider_apicore.emulator.connection import drain_request, drop_connection
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


def classify(method: str, path: str) -> str:
    """Endpoint class of an API request: ``submit``, ``fetch``, ``list`` or ``other``."""
    if method == "POST" and path == "/mj/submit/describe":
        return "submit"
    if method == "GET" and path.startswith("/mj/task/") and path.endswith("/fetch"):
        return "fetch"
    if method == "POST" and path == "/mj/task/list-by-condition":
        return "list"
    return "other"


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
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
    endpoint = classify(scope["method"], scope["path"])
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

    token = bearer_token(scope)
    if faults.token_expired or token not in state.config.tokens:
        state.unauthorized += 1
        if faults.token_expired:
            state.faults_injected["token_expired"] += 1
        message = "token expired or revoked" if faults.token_expired else "invalid token"
        await drain_request(receive)
        await send_json(send, 401, {"error": {"message": message, "type": "unauthorized"}})
        return

    # The remaining faults act after processing, so they only apply to authorised requests.
    if fault is not None:
        state.faults_injected[fault] += 1

    if fault == "drop_after":

        async def discard(message: Message) -> None:
            return None

        await inner(scope, receive, discard)
        await drop_connection(send, faults.drop_style)
        return
    if fault == "slow":
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await inner(scope, receive, hold)
        await asyncio.sleep(faults.slow_seconds)
        for message in held:
            await send(message)
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
    elif fault == "html_error":
        await send_body(send, 502, NGINX_502, "text/html")
    else:
        await send_body(send, 200, TRUNCATED[endpoint], "application/json")
