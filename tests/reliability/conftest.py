"""Shared pieces of the reliability tier: fast hooks, unique images, and a routing loopback server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_apicore.hooks.apicore import ApicoreHook
from tests.helpers.airflow_run import connection_env
from tests.helpers.imagegen import make_png
from tests.helpers.scripted_server import LoopbackServer, Reply

#: Submit answer of a healthy server.
ACCEPTED = {"code": 1, "description": "Submit success", "result": "1725017482366993", "properties": {}}


def unique_png(index: int, size: int = 16) -> bytes:
    """A ``size`` x ``size`` PNG whose pixels encode ``index``: no two indexes give the same bytes."""
    return make_png(
        size, size, lambda x, y: ((index >> 16) & 255, (index >> 8) & 255, (index + x * 7 + y * 13) & 255)
    )


def write_images(directory: Path, count: int, size: int = 16, start: int = 0) -> list[Path]:
    """Write ``count`` distinct PNGs named ``img_00000.png`` ... under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = directory / f"img_{index:05d}.png"
        path.write_bytes(unique_png(index, size))
        paths.append(path)
    return paths


def use_connection(monkeypatch: pytest.MonkeyPatch, url: str, token: str, conn_id="apicore_default", **extra):
    for key, value in connection_env(url, token, conn_id, **extra).items():
        monkeypatch.setenv(key, value)


def fast_hook(conn_id: str = "apicore_default") -> tuple[ApicoreHook, list[float]]:
    """A hook whose backoff schedule is kept (and recorded) but scaled down to milliseconds."""
    hook = ApicoreHook(conn_id, retry_backoff=0.01, max_backoff=0.04)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(min(seconds, 0.05))

    hook._sleep = sleep
    return hook, slept


class RoutedServer(LoopbackServer):
    """
    Answers each request with ``route(method, path, body) -> Reply`` (body decoded from JSON when it
    is JSON), so submits and task queries can be answered differently, as operators that do both need.
    """

    def __init__(self, route: Callable[[str, str, Any], Reply]) -> None:
        super().__init__(lambda seen: route(seen.method, seen.path, _decoded(seen.body)))

    @property
    def requests(self) -> list[tuple[str, str, Any]]:
        """Every request as ``(method, path, body)``."""
        with self._lock:
            return [(seen.method, seen.path, _decoded(seen.body)) for seen in self.seen]

    def count(self, path_part: str) -> int:
        return sum(1 for _, path, _ in self.requests if path_part in path)


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., RoutedServer]]:
    """Factory: ``routed(route, max_retries=2)`` starts a RoutedServer and points apicore_default at it."""
    servers: list[RoutedServer] = []

    def start(route: Callable[[str, str, Any], Reply], **extra: Any) -> RoutedServer:
        server = RoutedServer(route).__enter__()
        servers.append(server)
        extra.setdefault("timeout", 5)
        extra.setdefault("max_retries", 2)
        use_connection(monkeypatch, server.url, "sk-routed-test-token", **extra)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
