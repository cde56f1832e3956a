"""
Gateway mode: the emulator answers like new-api in front of a midjourney-proxy.

What the gateway changes, as APICore's clients see it:

- submit answers ``"code":21`` and ``"code":22`` become ``"code":1`` (21 stays for INPAINT and
  CUSTOM_ZOOM); ``notifyHook`` and ``accountFilter`` are removed from the request before the
  proxy sees it, so no callback is ever sent;
- fetch and list-by-condition answer from the gateway's own copy of each task, refreshed from
  the proxy every ``gateway_refresh`` seconds: a new task reads ``status: ""``, ``progress: "0%"``,
  ``startTime``/``finishTime`` ``0`` and ``description`` = the submit answer's text until then;
  every field is present with a zero value instead of null; ``prompt`` stays the submitted prompt;
- tasks belong to the token that submitted them: an unknown id, or another token's, answers
  HTTP 400 ``{"code":4,"description":"task_no_found ","type":"upstream_error"}``;
- ``imageUrl`` reads ``<base>/mj/image/<task id>`` (``?rand=<ns>`` while not SUCCESS), and
  ``GET /mj/image/<task id>`` streams the image without a token;
- a token problem is HTTP 401 ``{"error":{"message":…,"type":"new_api_error"}}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from starlette.types import Scope

if TYPE_CHECKING:
    from airflow_provider_apicore.emulator.state import EmulatorState

#: The fields new-api copies from the proxy's task on each refresh (besides properties, buttons).
STRING_FIELDS = ("progress", "promptEn", "state", "imageUrl", "status", "failReason")
TIME_FIELDS = ("submitTime", "startTime", "finishTime")
UPSTREAM_TIMEOUT_REASON = "上游任务超时（超过1小时）"
#: Submit answer codes that mean "accepted" to the gateway (it charges for them and keeps a row).
ACCEPTED_CODES = (1, 21, 22)
#: Actions whose code 21 the gateway leaves alone (they wait for /mj/submit/modal).
KEEP_21 = ("INPAINT", "CUSTOM_ZOOM")
#: Free actions: the gateway does not check the balance for them.
FREE = ("INPAINT", "CUSTOM_ZOOM")

SUBMIT_ACTIONS = {
    "describe": "DESCRIBE",
    "imagine": "IMAGINE",
    "blend": "BLEND",
    "shorten": "SHORTEN",
    "modal": "MODAL",
    "upload-discord-images": "UPLOAD",
    "video": "VIDEO",
    "edits": "EDITS",
}
JOB_ACTIONS = {
    "upsample": "UPSCALE",
    "variation": "VARIATION",
    "low_variation": "LOW_VARIATION",
    "high_variation": "HIGH_VARIATION",
    "reroll": "REROLL",
}
CHANGE_LETTERS = {"U": "UPSCALE", "V": "VARIATION", "R": "REROLL"}


class UnknownAction(ValueError):
    """The gateway cannot name the action of a submit (new-api answers ``unknown_action``)."""


def gateway_error(description: str, code: int = 4) -> dict[str, Any]:
    """The body of an error the gateway raises itself (note the trailing space)."""
    return {"code": code, "description": f"{description} ", "type": "upstream_error"}


def token_error(message: str) -> dict[str, Any]:
    """The body of new-api's 401 for a missing, invalid, expired or exhausted token."""
    return {"error": {"message": message, "type": "new_api_error"}}


def action_for(path: str, payload: dict[str, Any] | None) -> str:
    """
    The gateway's name for the action a submit starts (what its task row reports).

    :param path: the request path without any mode prefix, e.g. ``/mj/submit/describe``.
    :param payload: the JSON request body (None when it is not an object).
    :raises UnknownAction: for an ``action``/``change`` request whose action cannot be named.
    """
    if path == "/mj/insight-face/swap":
        return "SWAP_FACE"
    name = path.removeprefix("/mj/submit/")
    if name in SUBMIT_ACTIONS:
        return SUBMIT_ACTIONS[name]
    body = payload or {}
    if name == "action":
        return _custom_id_action(body.get("customId"))
    if name == "change":
        action = body.get("action")
        if isinstance(action, str) and action.upper() in CHANGE_LETTERS.values():
            return action.upper()
        raise UnknownAction(f"change action {action!r}")
    if name == "simple-change":
        content = body.get("content")
        parts = content.split() if isinstance(content, str) else []
        if len(parts) == 2 and parts[1][:1].upper() in CHANGE_LETTERS:
            return CHANGE_LETTERS[parts[1][:1].upper()]
        raise UnknownAction(f"simple-change content {content!r}")
    return name.upper().replace("-", "_")


def _custom_id_action(custom_id: Any) -> str:
    if not isinstance(custom_id, str):
        raise UnknownAction("customId missing")
    parts = custom_id.split("::")
    if len(parts) >= 3 and parts[0] == "MJ" and parts[1] == "JOB":
        kind = parts[2]
        if kind.startswith("pan_"):
            return "PAN"
        if kind.startswith("upsample"):
            return "UPSCALE"
        if kind in JOB_ACTIONS:
            return JOB_ACTIONS[kind]
    if len(parts) >= 2 and parts[0] == "MJ":
        named = {"Outpaint": "ZOOM", "CustomZoom": "CUSTOM_ZOOM", "Inpaint": "INPAINT"}.get(parts[1])
        if named is not None:
            return named
    raise UnknownAction(f"customId {custom_id!r}")


def model_for(action: str) -> str:
    """The gateway's price name of an action: ``mj_describe``, ``swap_face``, ``mj_custom_zoom``…"""
    return "swap_face" if action == "SWAP_FACE" else "mj_" + action.lower()


def rewrite_submit_answer(body: bytes, action: str) -> bytes:
    """new-api's plain string replacement on the proxy's compact JSON answer."""
    if action not in KEEP_21:
        body = body.replace(b'"code":21', b'"code":1')
    return body.replace(b'"code":22', b'"code":1')


def base_url(scope: Scope) -> str:
    """``scheme://host[:port]`` the client used (the gateway's ServerAddress)."""
    scheme = scope.get("scheme", "http")
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return f"{scheme}://{value.decode('latin-1')}"
    host, port = scope.get("server") or ("127.0.0.1", 80)
    return f"{scheme}://{host}:{port}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Row:
    """The gateway's own record of one task (new-api's ``midjourneys`` table)."""

    id: str
    token: str
    action: str
    model: str
    prompt: str
    description: str
    custom_id: str = ""
    bot_type: str = ""
    mask_base64: str = ""
    created: float = field(default_factory=time.monotonic)
    fields: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    buttons: list[Any] = field(default_factory=list)
    refunded: bool = False

    def __post_init__(self) -> None:
        if not self.fields:
            self.fields = {
                "progress": "0%",
                "promptEn": "",
                "state": "",
                "submitTime": now_ms(),
                "startTime": 0,
                "finishTime": 0,
                "imageUrl": "",
                "status": "",
                "failReason": "",
            }

    def to_json(self, base: str) -> dict[str, Any]:
        """The fetch DTO: every field present, Go zero values instead of null."""
        f = self.fields
        image_url = f["imageUrl"]
        if image_url:
            image_url = f"{base}/mj/image/{self.id}"
            if f["status"] != "SUCCESS":
                image_url += f"?rand={time.time_ns()}"
        return {
            "id": self.id,
            "action": self.action,
            "customId": self.custom_id,
            "botType": self.bot_type,
            "prompt": self.prompt,
            "promptEn": f["promptEn"],
            "description": self.description,
            "state": f["state"],
            "submitTime": f["submitTime"],
            "startTime": f["startTime"],
            "finishTime": f["finishTime"],
            "imageUrl": image_url,
            "videoUrl": "",
            "videoUrls": [],
            "status": f["status"],
            "progress": f["progress"],
            "failReason": f["failReason"],
            "buttons": self.buttons,
            "maskBase64": self.mask_base64,
            "properties": {
                "finalPrompt": _text(self.properties.get("finalPrompt")),
                "finalZhPrompt": _text(self.properties.get("finalZhPrompt")),
            },
        }

    def copy_from(self, upstream: dict[str, Any]) -> None:
        """One refresh: copy what new-api copies, nulls becoming zero values."""
        for name in STRING_FIELDS:
            self.fields[name] = _text(upstream.get(name))
        for name in TIME_FIELDS:
            value = upstream.get(name)
            self.fields[name] = value if isinstance(value, int) and not isinstance(value, bool) else 0
        properties = upstream.get("properties")
        if isinstance(properties, dict):
            self.properties = dict(properties)
        buttons = upstream.get("buttons")
        if isinstance(buttons, list):
            self.buttons = list(buttons)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


class Gateway:
    """
    The gateway's task rows and the refresh loop's bookkeeping.

    :param state: the emulator state (the proxy behind the gateway).
    """

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.reset()

    def reset(self) -> None:
        self.rows: dict[str, Row] = {}
        self.refreshes = 0
        self.last_refresh = time.monotonic()
        self.notify_hooks_dropped = 0
        self.timed_out = 0

    # ------------------------------------------------------------------------------- submit side
    def record(self, token: str, action: str, payload: dict[str, Any] | None, answer: dict[str, Any]) -> None:
        """Keep a row for an accepted submit (HTTP 200, code 1/21/22, a task id)."""
        task_id = answer.get("result")
        if not isinstance(task_id, str) or task_id in self.rows:
            return
        body = payload or {}
        self.rows[task_id] = Row(
            id=task_id,
            token=token,
            action=action,
            model=model_for(action),
            prompt=_text(body.get("prompt")),
            description=_text(answer.get("description")),
            custom_id=_text(body.get("customId")),
            bot_type=_text(body.get("botType")),
            mask_base64=_text(body.get("maskBase64")),
        )

    # -------------------------------------------------------------------------------- query side
    def row_for(self, task_id: str, token: str) -> Row | None:
        """The row of ``task_id`` if it belongs to ``token`` (tasks are per user)."""
        row = self.rows.get(task_id)
        return row if row is not None and row.token == token else None

    # ----------------------------------------------------------------------------------- refresh
    def maybe_refresh(self) -> None:
        """Refresh when ``gateway_refresh`` seconds passed since the last refresh (called per tick)."""
        mono = time.monotonic()
        if mono - self.last_refresh >= self.state.config.gateway_refresh:
            self.refresh(mono)

    def refresh(self, mono: float | None = None) -> int:
        """
        Copy every unfinished row from the proxy's task, as new-api's background loop does.

        :return: how many rows were updated.
        """
        mono = time.monotonic() if mono is None else mono
        self.last_refresh = mono
        self.refreshes += 1
        timeout = self.state.config.gateway_task_timeout
        updated = 0
        for row in self.rows.values():
            if row.fields["progress"] == "100%":
                continue
            task = self.state.get(row.id)
            if task is not None:
                row.copy_from(task.to_json())
                updated += 1
            unfinished = row.fields["progress"] != "100%" and row.fields["status"] not in (
                "SUCCESS",
                "FAILURE",
            )
            if unfinished and mono - row.created > timeout:
                row.fields["status"] = "FAILURE"
                row.fields["progress"] = "100%"
                row.fields["failReason"] = UPSTREAM_TIMEOUT_REASON
                self.timed_out += 1
            if row.fields["status"] == "FAILURE" and not row.refunded:
                row.refunded = True
                self.state.refund(row.token, row.model)
        return updated

    def stats(self) -> dict[str, Any]:
        return {
            "rows": len(self.rows),
            "refreshes": self.refreshes,
            "notify_hooks_dropped": self.notify_hooks_dropped,
            "timed_out": self.timed_out,
        }


async def fetch_image(state: EmulatorState, task_id: str) -> tuple[int, bytes, str]:
    """
    ``GET /mj/image/<id>``: the image bytes of a task, as the gateway streams them.

    Asks the task for its bytes (``result_image()`` or its ``image``/``mime``), else downloads its
    upstream ``imageUrl`` as new-api does.

    :return: ``(HTTP status, body, content type)``.
    """
    found = state.image_for(task_id)
    if found is not None:
        data, mime = found
        return 200, data, mime or "image/jpeg"
    task = state.get(task_id)
    if task is None:
        return 400, json.dumps({"error": "midjourney_task_not_found"}).encode(), "application/json"
    url = task.to_json().get("imageUrl")
    if not isinstance(url, str) or not url:
        return 500, json.dumps({"error": "http_get_image_failed"}).encode(), "application/json"
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        return 500, json.dumps({"error": "http_get_image_failed"}).encode(), "application/json"
    if response.status_code != 200:
        return response.status_code, json.dumps({"error": response.text}).encode(), "application/json"
    return 200, response.content, response.headers.get("content-type", "image/jpeg")
