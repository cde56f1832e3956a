"""Emulator configuration: account limits, timing and fault knobs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_apicore.emulator.errors import (
    EmulatorConfigError,
    coerce_number,
    require_int,
    require_number,
)
from airflow_provider_apicore.emulator.faults import FaultConfig

__all__ = ["EmulatorConfig", "EmulatorConfigError", "FaultConfig"]


@dataclass
class EmulatorConfig:
    """
    Behaviour of the emulated APICore account.

    :param tokens: Bearer tokens the emulator accepts.
    :param job_seconds: how long a DESCRIBE job stays IN_PROGRESS before it finishes.
    :param concurrency: jobs the account runs at once (IN_PROGRESS slots).
    :param queue_size: jobs that may wait for a slot; beyond that submit answers code 23.
    :param tick_seconds: period of the scheduler that advances task states.
    :param seed: seed of every random choice (fault decisions, task id digits), so runs replay.
    :param progress_step: progress is reported in steps of this many percent (fewer callbacks).
    :param notify_timeout: seconds allowed for one notifyHook POST.
    :param notify_workers: notifyHook POSTs in flight at once.
    :param dedupe: answer code 21 ("task already exists") with the earlier task's id when the same
        image bytes are submitted again while that task is known and has not failed. Off by
        default, as on the real servers (midjourney-proxy never answers 21 to a describe, and
        new-api rewrites 21 to 1): every accepted image then starts a paid job, and
        ``duplicate_submissions`` / ``duplicate_jobs`` count the repeats.
    :param gateway: answer like the new-api gateway in front of the proxy (see
        :mod:`airflow_provider_apicore.emulator.gateway`): codes 21/22 rewritten to 1, fetch and
        list from a copy refreshed every ``gateway_refresh`` seconds, ``task_no_found`` as HTTP 400,
        ``notifyHook`` dropped, ``imageUrl`` forwarded through ``/mj/image/<id>``.
    :param gateway_refresh: seconds between two refreshes of the gateway's copy (new-api: 15).
    :param gateway_task_timeout: seconds after which the gateway marks a task it still sees
        unfinished FAILURE (new-api: one hour).
    :param remix: the account has remix on: variation, reroll and pan buttons answer code 21
        "Waiting for window confirm" and wait in status MODAL for ``/mj/submit/modal``, as
        Custom Zoom and Vary (Region) always do (a request's ``enableRemix: true`` does the same).
    :param image_urls: list each grid's four pictures in ``imageUrls`` (``[{"url", "thumbnail"}]``),
        as a server with its official-CDN option on does; off by default, as on most servers.
    :param faults: fault injection knobs, see :class:`FaultConfig`.
    """

    tokens: list[str] = field(default_factory=lambda: ["emulator-token"])
    job_seconds: float = 2.0
    concurrency: int = 3
    queue_size: int = 10
    tick_seconds: float = 0.05
    seed: int = 0
    progress_step: int = 10
    notify_timeout: float = 2.0
    notify_workers: int = 8
    dedupe: bool = False
    remix: bool = False
    image_urls: bool = False
    gateway: bool = False
    gateway_refresh: float = 15.0
    gateway_task_timeout: float = 3600.0
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        if isinstance(self.faults, dict):
            self.faults = FaultConfig.from_dict(self.faults)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`EmulatorConfigError` naming the first field that breaks its rule."""
        if not isinstance(self.tokens, list) or not all(isinstance(t, str) and t for t in self.tokens):
            raise EmulatorConfigError("tokens must be a list of non-empty strings")
        require_number("job_seconds", self.job_seconds, minimum=0.0)
        require_number("tick_seconds", self.tick_seconds, minimum=0.001)
        require_number("notify_timeout", self.notify_timeout, minimum=0.001)
        require_int("concurrency", self.concurrency, minimum=1)
        require_int("queue_size", self.queue_size, minimum=0)
        require_int("notify_workers", self.notify_workers, minimum=1)
        require_int("progress_step", self.progress_step, minimum=1, maximum=99)
        require_int("seed", self.seed, minimum=-(2**63))
        for name in ("dedupe", "gateway"):
            if not isinstance(getattr(self, name), bool):
                raise EmulatorConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        require_number("gateway_refresh", self.gateway_refresh, minimum=0.01)
        require_number("gateway_task_timeout", self.gateway_task_timeout, minimum=0.0)
        for name in ("remix", "image_urls"):
            if not isinstance(getattr(self, name), bool):
                raise EmulatorConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self.faults.validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable view (tokens included: the emulator holds no real secrets)."""
        data = dataclasses.asdict(self)
        data["faults"] = self.faults.to_dict()
        return data

    def update(self, changes: dict[str, Any]) -> None:
        """
        Apply a partial update atomically: either every change is valid and applied, or none is.

        :param changes: top-level fields to change. A ``faults`` object describes the whole fault
            scenario: knobs it leaves out go back to their defaults (so ``{}`` or null turns every
            fault off), which keeps one test's faults from leaking into the next.
        """
        if not isinstance(changes, dict):
            raise EmulatorConfigError("the configuration update must be a JSON object")
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise EmulatorConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        candidate = dataclasses.replace(self, faults=dataclasses.replace(self.faults))
        for name, value in changes.items():
            if name == "faults":
                candidate.faults = FaultConfig.from_dict(value if value is not None else {})
            else:
                setattr(candidate, name, coerce_number(getattr(self, name), value))
        candidate.validate()
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(candidate, f.name))
