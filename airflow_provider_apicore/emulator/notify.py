"""notifyHook delivery: best effort, off the request path, bounded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

log = logging.getLogger(__name__)

# Callbacks waiting beyond this are dropped (and counted) rather than growing memory without bound.
MAX_PENDING = 20_000


class Notifier:
    """
    POSTs task objects to their notifyHook from a small pool of workers.

    :param workers: POSTs in flight at once.
    :param timeout: seconds allowed for one POST.
    """

    def __init__(self, workers: int, timeout: float) -> None:
        self.workers = workers
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(MAX_PENDING)
        self._client = httpx.AsyncClient(
            timeout=self.timeout,
            follow_redirects=False,
            # Proxy variables must not reroute callbacks meant for a local receiver.
            trust_env=False,
        )
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def reset_counters(self) -> None:
        self.sent = self.failed = self.dropped = 0

    def submit(self, url: str, payload: dict[str, Any]) -> None:
        """Queue one callback; never blocks and never raises."""
        if self._queue is None:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait((url, payload))
        except asyncio.QueueFull:
            self.dropped += 1

    @property
    def pending(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            url, payload = await self._queue.get()
            try:
                await self._post(url, payload)
            finally:
                self._queue.task_done()

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        client = self._client
        if client is None:
            self.failed += 1
            return
        try:
            response = await client.post(url, json=payload, timeout=self.timeout)
        except (httpx.HTTPError, ValueError, OSError) as exc:
            self.failed += 1
            log.debug("notifyHook %s failed: %s", url, exc)
            return
        if response.status_code >= 400:
            self.failed += 1
        else:
            self.sent += 1
