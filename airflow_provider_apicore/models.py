"""Typed views of what APICore answers: submit results and Midjourney task objects."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_apicore.exceptions import ApicoreResponseError, redact_url_credentials, safe_excerpt


class TaskStatus(str, enum.Enum):
    """Status of a Midjourney task, as the midjourney-proxy protocol names it."""

    NOT_START = "NOT_START"
    SUBMITTED = "SUBMITTED"
    IN_PROGRESS = "IN_PROGRESS"
    MODAL = "MODAL"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCEL = "CANCEL"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCEL})

#: Submit codes that mean "a task id is in ``result``".
ACCEPTED_CODES = {1: "submitted", 21: "existed", 22: "queued"}


@dataclass(frozen=True)
class SubmitResult:
    """
    An accepted submission.

    :param task_id: the task id APICore assigned (always a string)
    :param code: 1 (submitted), 21 (already existed) or 22 (queued)
    :param description: the server's description (e.g. queue position)
    :param properties: the server's extension fields
    """

    task_id: str
    code: int
    description: str = ""
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def queued(self) -> bool:
        return self.code == 22

    @property
    def existed(self) -> bool:
        return self.code == 21

    @property
    def outcome(self) -> str:
        return ACCEPTED_CODES.get(self.code, str(self.code))


_log = logging.getLogger(__name__)
#: Odd fields already reported, so a poll of 5,000 tasks logs each kind of oddity once.
_REPORTED: set[tuple[str, str]] = set()


def _odd(key: str, value: Any) -> None:
    """Log once per field and type that a task field was not what the protocol says (the raw value stays)."""
    kind = (key, type(value).__name__)
    if kind not in _REPORTED:
        _REPORTED.add(kind)
        _log.warning(
            "APICore sent task field %r as %s (%s); ignoring it, the raw value stays in the task object",
            key,
            type(value).__name__,
            safe_excerpt(str(value), 40),
        )


def _opt_int(obj: dict, key: str) -> int | None:
    """Epoch milliseconds; ``0`` (the gateway's "not yet") and odd values are ``None``."""
    value = obj.get(key)
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        _odd(key, value)
        return None
    try:
        number = int(float(value)) if isinstance(value, (float, str)) else int(value)
    except (TypeError, ValueError, OverflowError):
        _odd(key, value)
        return None
    return number or None


def _opt_str(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    _odd(key, value)
    return None


def _has_credentials(url: Any) -> bool:
    return isinstance(url, str) and redact_url_credentials(url) != url


@dataclass(frozen=True)
class MJTask:
    """A Midjourney task object as returned by fetch / list-by-condition / notifyHook."""

    id: str
    status: TaskStatus
    action: str | None = None
    progress: str | None = None
    prompt: str | None = None
    prompt_en: str | None = None
    description: str | None = None
    state: str | None = None
    submit_time: int | None = None
    start_time: int | None = None
    finish_time: int | None = None
    image_url: str | None = None
    fail_reason: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    #: The task object as the server sent it (JSON-serialisable; what triggers put in events).
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any) -> MJTask:
        """
        Build a task from its JSON object.

        :raises ApicoreResponseError: when the object is not a task (no id, unknown status, wrong types)
        """
        if not isinstance(obj, dict):
            raise ApicoreResponseError(
                f"expected a task object, got {type(obj).__name__}", safe_excerpt(repr(obj), 80)
            )
        task_id = obj.get("id")
        if task_id is None or isinstance(task_id, (bool, dict, list)) or str(task_id) == "":
            raise ApicoreResponseError("task object has no usable 'id'", safe_excerpt(repr(obj), 120))
        raw_status = obj.get("status")
        if raw_status in (None, ""):
            # Freshly created tasks may not carry a status yet on some servers.
            status = TaskStatus.NOT_START
        else:
            try:
                status = TaskStatus(str(raw_status).upper())
            except ValueError:
                raise ApicoreResponseError(
                    f"task {task_id} has unknown status {safe_excerpt(str(raw_status), 40)!r}"
                ) from None
        properties = obj.get("properties") or {}
        if not isinstance(properties, dict):
            _odd("properties", properties)
            properties = {}
        # Servers echo the notifyHook URL; its credentials must not travel on into events, XCom or logs.
        if _has_credentials(properties.get("notifyHook")):
            properties = {**properties, "notifyHook": redact_url_credentials(properties["notifyHook"])}
            obj = {**obj, "properties": properties}
        if _has_credentials(obj.get("notifyHook")):
            obj = {**obj, "notifyHook": redact_url_credentials(obj["notifyHook"])}
        return cls(
            id=str(task_id),
            status=status,
            action=_opt_str(obj, "action"),
            progress=_opt_str(obj, "progress"),
            prompt=_opt_str(obj, "prompt"),
            prompt_en=_opt_str(obj, "promptEn"),
            description=_opt_str(obj, "description"),
            state=_opt_str(obj, "state"),
            submit_time=_opt_int(obj, "submitTime"),
            start_time=_opt_int(obj, "startTime"),
            finish_time=_opt_int(obj, "finishTime"),
            image_url=_opt_str(obj, "imageUrl"),
            fail_reason=_opt_str(obj, "failReason"),
            properties=properties,
            raw=obj,
        )

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def final_prompt(self) -> str | None:
        """The DESCRIBE output: first non-empty of ``properties.finalPrompt``, ``promptEn``, ``prompt``."""
        for candidate in (self.properties.get("finalPrompt"), self.prompt_en, self.prompt):
            if isinstance(candidate, str) and candidate.strip():
                return candidate
        return None
