"""The FastAPI application: the midjourney-proxy routes APICore relays, plus admin routes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from airflow_provider_apicore.emulator.billing import install_billing
from airflow_provider_apicore.emulator.config import EmulatorConfig
from airflow_provider_apicore.emulator.errors import EmulatorConfigError
from airflow_provider_apicore.emulator.family import add_family_routes
from airflow_provider_apicore.emulator.gate import guard
from airflow_provider_apicore.emulator.imageinfo import analyze_image
from airflow_provider_apicore.emulator.state import EmulatorState

log = logging.getLogger(__name__)

DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[^;,]*)*?;base64,(?P<data>.*)", re.DOTALL)
SUFFIXES = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
}
BASE64_EMPTY = "base64不能为空"
BASE64_INVALID = "base64格式错误"


class EmulatorApp(FastAPI):
    """FastAPI whose outermost layer is :func:`guard`, which needs uvicorn's own ``send``."""

    def __init__(self, state: EmulatorState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.emulator_state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await guard(self.emulator_state, scope, receive, send, super().__call__)


def suffix_for(mime: str) -> str:
    """File suffix for a mime type, as the original server guesses it."""
    known = SUFFIXES.get(mime.lower())
    if known:
        return known
    subtype = re.sub(r"[^a-z0-9]", "", mime.lower().partition("/")[2])
    return subtype or "png"


def parse_data_url(value: str) -> tuple[str, bytes] | None:
    """``(mime, bytes)`` from ``data:<mime>;base64,<data>``, or None when it is not one."""
    match = DATA_URL.fullmatch(value.strip())
    if match is None:
        return None
    try:
        data = base64.b64decode("".join(match["data"].split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not data:
        return None
    return match["mime"], data


def _validation_error(state: EmulatorState, description: str) -> JSONResponse:
    state.reject(4)
    return JSONResponse({"code": 4, "description": description, "result": None, "properties": {}})


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """
    Build the emulator application.

    :param config: behaviour of the emulated account; defaults to :class:`EmulatorConfig()`.
    :return: the ASGI application (run it with uvicorn; the connection-dropping faults need it).
    """
    config = config if config is not None else EmulatorConfig()
    state = EmulatorState(config)

    async def run_ticker() -> None:
        while True:
            try:
                state.tick()
            except Exception:  # keep ticking: one bad task must not freeze the whole account
                log.exception("emulator tick failed")
            await asyncio.sleep(state.config.tick_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await state.notifier.start()
        ticker = asyncio.create_task(run_ticker())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await state.notifier.stop()

    app = EmulatorApp(
        state,
        title="APICore emulator",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    # Per-token accounting: the state's charge/refund/token_check seams and the quota endpoints.
    install_billing(app, state)

    # ------------------------------------------------------------------------------------- API
    @app.post("/mj/submit/describe")
    async def submit_describe(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return JSONResponse(
                {"error": {"message": "request body must be a JSON object", "type": "invalid_request_error"}},
                status_code=400,
            )
        value = body.get("base64")
        if value is None or value == "":
            return _validation_error(state, BASE64_EMPTY)
        parsed = parse_data_url(value) if isinstance(value, str) else None
        if parsed is None:
            return _validation_error(state, BASE64_INVALID)
        mime, image = parsed
        info = await asyncio.to_thread(analyze_image, image)
        notify_hook = body.get("notifyHook")
        tag = body.get("state")
        answer = state.submit(
            image=image,
            mime=mime,
            suffix=suffix_for(mime),
            info=info,
            state=tag if tag is None or isinstance(tag, str) else json.dumps(tag),
            notify_hook=notify_hook if isinstance(notify_hook, str) and notify_hook else None,
            public_base=str(request.base_url).rstrip("/"),
        )
        return JSONResponse(answer)

    @app.get("/mj/task/{task_id}/fetch")
    async def fetch_task(task_id: str) -> Response:
        task = state.get(task_id)
        if task is None:
            # The original server answers 200 with an empty body for an unknown id.
            return Response(status_code=200)
        return JSONResponse(task.to_json())

    @app.post("/mj/task/list-by-condition")
    async def list_by_condition(request: Request) -> Response:
        body = await _json_body(request)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list):
            return JSONResponse([])
        found = []
        for task_id in dict.fromkeys(i for i in ids if isinstance(i, str)):
            task = state.get(task_id)
            if task is not None:
                found.append(task.to_json())
        return JSONResponse(found)

    # ----------------------------------------------------------------------------------- admin
    @app.get("/_emulator/health")
    async def health() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/_emulator/stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.get("/_emulator/tasks")
    async def tasks(request: Request) -> Response:
        if "state" in request.query_params:
            selected = state.tasks_with_state(request.query_params["state"])
        else:
            selected = list(state.tasks.values())
        status = request.query_params.get("status")
        return JSONResponse([t.to_json() for t in selected if status is None or t.status == status])

    @app.get("/_emulator/config")
    async def get_config() -> dict[str, Any]:
        return state.config.to_dict()

    @app.put("/_emulator/config")
    async def put_config(request: Request) -> Response:
        body = await _json_body(request)
        try:
            state.apply_config(body)
        except EmulatorConfigError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_config"}}, status_code=400)
        return JSONResponse(state.config.to_dict())

    @app.post("/_emulator/reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return {"ok": True}

    @app.get("/_emulator/submissions")
    async def submissions(request: Request) -> Response:
        # ?min_jobs=2 keeps only payloads, images and prompts that started two jobs or more.
        raw = request.query_params.get("min_jobs", "0")
        if not raw.isdigit():
            message = f"min_jobs must be a non-negative integer, got {raw!r}"
            return JSONResponse({"error": {"message": message, "type": "invalid_query"}}, status_code=400)
        return JSONResponse(state.submissions(int(raw)))

    @app.post("/_emulator/gateway/refresh")
    async def gateway_refresh() -> dict[str, Any]:
        # Refresh the gateway's copy now, as its next periodic refresh would.
        return {"updated": state.gateway.refresh(), **state.gateway.stats()}

    @app.get("/_emulator/images/{name}")
    async def image(name: str) -> Response:
        task = state.get(name.partition(".")[0])
        if task is None or not task.image_path.endswith("/" + name):
            return JSONResponse({"error": {"message": f"no image {name}", "type": "not_found"}}, 404)
        return Response(task.image, media_type=task.mime)

    # The rest of the Midjourney family (imagine, action, modal, blend, shorten, face swap, seed).
    add_family_routes(app, state)
    return app
