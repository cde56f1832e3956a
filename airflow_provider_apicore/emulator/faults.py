"""Fault knobs and the seeded decisions that apply them, so a run with the same seed replays."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from airflow_provider_apicore.emulator.errors import (
    EmulatorConfigError,
    coerce_number,
    require_int,
    require_number,
)

#: Faults decided per HTTP request, checked in this order (the first hit wins).
REQUEST_FAULTS: tuple[str, ...] = (
    "drop_before",
    "http_5xx",
    "http_429",
    "html_error",
    "malformed_json",
    "drop_after",
    "http_5xx_after",
    "html_error_after",
    "slow",
)
#: Request-level faults that act after the request was processed (a job may have been created).
AFTER_FAULTS: tuple[str, ...] = ("drop_after", "http_5xx_after", "html_error_after")
#: Faults decided per created task, checked in this order (the first hit wins).
TASK_FAULTS: tuple[str, ...] = ("task_failure", "stuck", "vanish")
#: Every rate knob (0..1).
RATE_FAULTS: tuple[str, ...] = (*REQUEST_FAULTS, "queue_full", *TASK_FAULTS)
#: Every fault kind counted in the stats (``token_expired`` is a switch, not a rate).
FAULT_KINDS: tuple[str, ...] = (*RATE_FAULTS, "token_expired")
#: Endpoint classes a request-level fault may be limited to.
ENDPOINTS: tuple[str, ...] = ("submit", "fetch", "list", "other")
DROP_STYLES: tuple[str, ...] = ("close", "reset")

SERVER_ERROR_STATUSES: tuple[int, ...] = (500, 502, 503, 504)
#: What a gateway or proxy answers when the upstream took the request and then failed or timed out.
AFTER_ERROR_STATUSES: tuple[int, ...] = (500, 502, 504)
FAIL_REASONS: tuple[str, ...] = (
    "Banned image detected",
    "Job timed out upstream",
    "Midjourney bot error: the image could not be processed",
    "Discord account unavailable, please retry",
)


@dataclass
class FaultConfig:
    """
    Fault injection knobs. Rates are probabilities from 0 to 1 drawn per request or per task.

    :param http_5xx: answer 500/502/503/504 without processing the request.
    :param http_429: answer 429 with ``Retry-After: retry_after`` without processing the request.
    :param retry_after: seconds announced in the 429 ``Retry-After`` header.
    :param drop_before: close the connection with no response; the request is not processed.
    :param drop_after: process the request, then close the connection with no response.
    :param http_5xx_after: process the request (a submit creates its job), then answer 500, 502
        or 504 with a JSON or plain-text body instead of the real answer.
    :param html_error_after: process the request (a submit creates its job), then answer a
        proxy's HTML 502 page instead of the real answer.
    :param slow: process the request, then hold the answer for ``slow_seconds``.
    :param slow_seconds: delay applied by ``slow``.
    :param malformed_json: answer 200 with a truncated JSON body without processing the request.
    :param html_error: answer 502 with an nginx HTML page without processing the request.
    :param queue_full: refuse a valid submit with code 23; nothing is created.
    :param task_failure: the task ends FAILURE with a ``failReason``.
    :param stuck: the task stays IN_PROGRESS forever with its progress frozen.
    :param vanish: the task is forgotten once it runs (fetch answers an empty body, list omits it).
    :param token_expired: every authenticated call answers 401, as if the token was revoked.
    :param endpoints: limit request-level faults to these endpoint classes
        (``submit``, ``fetch``, ``list``, ``other``); None means all of them.
    :param drop_style: ``close`` ends the connection with FIN, ``reset`` with RST.
    :param stuck_holds_slot: whether a stuck task keeps its concurrency slot forever (a hung
        account); by default it releases it so later jobs still run.
    """

    http_5xx: float = 0.0
    http_429: float = 0.0
    retry_after: int = 1
    drop_before: float = 0.0
    drop_after: float = 0.0
    http_5xx_after: float = 0.0
    html_error_after: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 5.0
    malformed_json: float = 0.0
    html_error: float = 0.0
    queue_full: float = 0.0
    task_failure: float = 0.0
    stuck: float = 0.0
    vanish: float = 0.0
    token_expired: bool = False
    endpoints: list[str] | None = None
    drop_style: str = "close"
    stuck_holds_slot: bool = False

    def validate(self) -> None:
        """Raise :class:`EmulatorConfigError` naming the first knob that breaks its rule."""
        for name in RATE_FAULTS:
            require_number(f"faults.{name}", getattr(self, name), minimum=0.0, maximum=1.0)
        require_int("faults.retry_after", self.retry_after, minimum=0)
        require_number("faults.slow_seconds", self.slow_seconds, minimum=0.0)
        for name in ("token_expired", "stuck_holds_slot"):
            if not isinstance(getattr(self, name), bool):
                raise EmulatorConfigError(f"faults.{name} must be true or false, got {getattr(self, name)!r}")
        if self.endpoints is not None and (
            not isinstance(self.endpoints, list) or not set(self.endpoints) <= set(ENDPOINTS)
        ):
            raise EmulatorConfigError(
                f"faults.endpoints must be null or a list from {list(ENDPOINTS)}, got {self.endpoints!r}"
            )
        if self.drop_style not in DROP_STYLES:
            raise EmulatorConfigError(
                f"faults.drop_style must be one of {list(DROP_STYLES)}, got {self.drop_style!r}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        """Build from a (partial) mapping; missing knobs keep their defaults."""
        config = cls()
        config.update(data)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, changes: Any) -> None:
        """
        Apply a partial update; either all changes are valid and applied or none is.

        :param changes: mapping of knob name to new value.
        """
        if not isinstance(changes, dict):
            raise EmulatorConfigError("faults must be a JSON object")
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise EmulatorConfigError(f"unknown fault knob(s): {', '.join(unknown)}")
        candidate = dataclasses.replace(self)
        for name, value in changes.items():
            setattr(candidate, name, coerce_number(getattr(self, name), value))
        candidate.validate()
        for name in changes:
            setattr(self, name, getattr(candidate, name))

    def applies_to(self, endpoint: str) -> bool:
        """Whether request-level faults may hit ``endpoint``."""
        return self.endpoints is None or endpoint in self.endpoints


@dataclass(frozen=True)
class TaskFate:
    """
    What will happen to one task.

    :param fault: ``task_failure``, ``stuck``, ``vanish`` or None for a normal run.
    :param at_fraction: fraction of the job duration at which the fault strikes.
    :param fail_reason: ``failReason`` for ``task_failure``.
    """

    fault: str | None = None
    at_fraction: float = 1.0
    fail_reason: str | None = None


class FaultDecider:
    """
    Seeded decisions. Each fault kind draws from its own stream, and every eligible request draws
    once from every stream whatever the rates, so the same seed and the same sequence of requests
    give the same faults, and changing one rate does not shift the others.

    :param seed: the seed of every stream.
    """

    def __init__(self, seed: int) -> None:
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        # String seeds go through SHA-512 in random.Random: stable across processes and platforms.
        self._streams = {kind: random.Random(f"{seed}:{kind}") for kind in RATE_FAULTS}
        self._status = random.Random(f"{seed}:http_5xx:status")
        self._status_after = random.Random(f"{seed}:http_5xx_after:status")
        self._detail = random.Random(f"{seed}:task:detail")
        self._ids = random.Random(f"{seed}:ids")

    def request_fault(self, faults: FaultConfig, endpoint: str) -> str | None:
        """The request-level fault to apply to one request to ``endpoint``, or None."""
        if not faults.applies_to(endpoint):
            return None
        hit = None
        for kind in REQUEST_FAULTS:
            roll = self._streams[kind].random()
            if hit is None and roll < getattr(faults, kind):
                hit = kind
        return hit

    def server_error(self) -> tuple[int, bool]:
        """Status code of an injected 5xx and whether its body is JSON (else plain text)."""
        return self._status.choice(SERVER_ERROR_STATUSES), self._status.random() < 0.5

    def server_error_after(self) -> tuple[int, bool]:
        """Status (500, 502 or 504) of an after-processing 5xx and whether its body is JSON."""
        return self._status_after.choice(AFTER_ERROR_STATUSES), self._status_after.random() < 0.5

    def id_digits(self) -> int:
        """Three random digits for a task id."""
        return self._ids.randrange(1000)

    def queue_full(self, faults: FaultConfig) -> bool:
        """Whether to refuse one otherwise valid submit with code 23."""
        return self._streams["queue_full"].random() < faults.queue_full

    def task_fate(self, faults: FaultConfig) -> TaskFate:
        """Decide the fate of one new task."""
        fault = None
        for kind in TASK_FAULTS:
            roll = self._streams[kind].random()
            if fault is None and roll < getattr(faults, kind):
                fault = kind
        at_fraction = round(self._detail.uniform(0.2, 0.8), 3)
        reason = self._detail.choice(FAIL_REASONS)
        if fault is None:
            return TaskFate()
        return TaskFate(fault, at_fraction, reason if fault == "task_failure" else None)
