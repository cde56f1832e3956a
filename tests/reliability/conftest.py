"""Shared pieces of the reliability tier: fast hooks, unique images, and a routing loopback server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_apicore.hooks.apicore import ApicoreHook
from tests.helpers.airflow_run import connection_env
from tests.helpers.imagegen import make_png
from tests.helpers.scripted_server import Reply

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


class RoutedServer:
    """
    A loopback HTTP server that answers each request with ``route(method, path, body) -> Reply``.

    Unlike the scripted server it can answer submits and task queries differently, which is what
    operators that do both need. Every request is recorded as ``(method, path, body)``.
    """

    def __init__(self, route: Callable[[str, str, Any], Reply]) -> None:
        self.route = route
        self.requests: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                with server._lock:
                    server.requests.append((self.command, self.path, body))
                reply = server.route(self.command, self.path, body)
                if reply.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                if isinstance(reply.body, (dict, list)):
                    payload = json.dumps(reply.body).encode()
                elif isinstance(reply.body, str):
                    payload = reply.body.encode()
                else:
                    payload = reply.body or b""
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _handle
            do_POST = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def count(self, path_part: str) -> int:
        with self._lock:
            return sum(1 for _, path, _ in self.requests if path_part in path)

    def __enter__(self) -> RoutedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


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
