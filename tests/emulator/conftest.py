"""Fixtures for the emulator tests: image builders, a server factory and an authenticated client."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from airflow_provider_apicore.emulator import EmulatorConfig, EmulatorServer

TOKEN = "emulator-token"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter_row(kind: int, raw: bytes, previous: bytes, bpp: int) -> bytes:
    out = bytearray()
    for i, value in enumerate(raw):
        left = raw[i - bpp] if i >= bpp else 0
        up = previous[i]
        up_left = previous[i - bpp] if i >= bpp else 0
        predictor = (0, left, up, (left + up) // 2, _paeth(left, up, up_left))[kind]
        out.append((value - predictor) % 256)
    return bytes(out)


def png_bytes(
    width: int,
    height: int,
    pixel: Callable[[int, int], tuple[int, ...]] | tuple[int, ...] = (200, 30, 30),
    *,
    colour_type: int = 2,
    interlace: int = 0,
    filter_type: int = 0,
) -> bytes:
    """
    A valid PNG built with zlib + struct; ``pixel`` is a colour or a function of (x, y), and every
    scanline is encoded with ``filter_type`` (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth).
    """
    channels = {0: 1, 2: 3, 3: 1, 6: 4}[colour_type]
    rows = []
    previous = bytes(width * channels)
    for y in range(height):
        raw = bytearray()
        for x in range(width):
            value = pixel(x, y) if callable(pixel) else pixel
            raw += bytes(value[:channels])
        rows.append(bytes([filter_type]) + _filter_row(filter_type, bytes(raw), previous, channels))
        previous = bytes(raw)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, interlace)
    chunks = _chunk(b"IHDR", header)
    if colour_type == 3:
        chunks += _chunk(b"PLTE", bytes([200, 30, 30]))
    chunks += _chunk(b"IDAT", zlib.compress(b"".join(rows))) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def to_data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class Api:
    """A requests session against one emulator, with the Bearer token set."""

    def __init__(self, server: EmulatorServer, token: str = TOKEN) -> None:
        self.server = server
        self.url = server.url
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {token}"

    def submit(self, image: bytes | None = None, timeout: float = 10, **fields: Any) -> requests.Response:
        body = {"base64": to_data_url(image if image is not None else png_bytes(64, 48)), **fields}
        return self.session.post(f"{self.url}/mj/submit/describe", json=body, timeout=timeout)

    def submit_ok(self, image: bytes | None = None, **fields: Any) -> str:
        answer = self.submit(image, **fields).json()
        assert answer["code"] in (1, 22), answer
        return answer["result"]

    def fetch(self, task_id: str, timeout: float = 10) -> requests.Response:
        return self.session.get(f"{self.url}/mj/task/{task_id}/fetch", timeout=timeout)

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.fetch(task_id)
        assert response.status_code == 200 and response.content, response.text
        return response.json()

    def list(self, ids: list[str], timeout: float = 10) -> list[dict[str, Any]]:
        url = f"{self.url}/mj/task/list-by-condition"
        response = self.session.post(url, json={"ids": ids}, timeout=timeout)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, task_id: str, statuses: set[str], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] in statuses:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task['status']} after {timeout} s")
            time.sleep(0.02)


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., EmulatorServer]]:
    """Factory: ``start_emulator(job_seconds=0.2, faults={...}, http="h11")`` -> running server."""
    servers: list[EmulatorServer] = []

    def start(*, http: str = "auto", **config: Any) -> EmulatorServer:
        config.setdefault("job_seconds", 0.2)
        config.setdefault("tick_seconds", 0.02)
        server = EmulatorServer(EmulatorConfig(**config), http=http)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(wait=False)


@pytest.fixture
def api(start_emulator: Callable[..., EmulatorServer]) -> Api:
    """A client of a default emulator (job_seconds 0.2)."""
    return Api(start_emulator())


@pytest.fixture
def hook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server recording every JSON body POSTed to it: ``(url, bodies)``."""
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def png() -> Callable[..., bytes]:
    return png_bytes


@pytest.fixture
def client_for() -> Callable[..., Api]:
    return Api


@pytest.fixture
def data_url() -> Callable[..., str]:
    return to_data_url
