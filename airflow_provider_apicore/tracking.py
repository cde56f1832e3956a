"""
Following many Midjourney tasks at once: the bookkeeping shared by every waiting path.

:class:`TaskTracker` holds no I/O. The polling operator, the sensor, the batch operator and the async
trigger all drive the same tracker with the answer of one ``list-by-condition`` call per interval, so
"terminal", "vanished" and "timed out" mean the same thing everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from airflow_provider_apicore.models import MJTask

#: Consecutive polls a task id may be absent from the answer before it counts as not found.
#: One miss can be a gateway's replica lag right after submission.
DEFAULT_MISSING_GRACE = 3

EVENT_DONE = "done"
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"
#: A trigger asked to return early (``min_finished``) did so with some ids still pending.
EVENT_PARTIAL = "partial"


class TaskTracker:
    """
    Track a set of task ids until each is terminal, vanished, or the timeout passes.

    :param task_ids: the ids to follow
    :param timeout: seconds from now after which :attr:`timed_out` turns true (``None``: never)
    :param missing_grace: consecutive absent polls after which an id counts as not found
    :param clock: monotonic clock, replaceable in tests
    """

    def __init__(
        self,
        task_ids: Iterable[str],
        timeout: float | None = None,
        missing_grace: int = DEFAULT_MISSING_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self.missing_grace = missing_grace
        self.latest: dict[str, MJTask] = {}
        self.not_found: set[str] = set()
        self._misses: dict[str, int] = {}
        self._pending: dict[str, None] = dict.fromkeys(str(i) for i in task_ids)
        #: the ids given at construction (what an event reports); ids added later are not kept once
        #: finished, so a long batch holds only the ids in flight
        self._all: tuple[str, ...] = tuple(self._pending)
        #: ids that stopped being pending (terminal, not found or discarded)
        self._finished = 0
        self._initial = frozenset(self._all)

    # -- feeding
    def add(self, task_ids: Iterable[str]) -> None:
        """Follow more ids (the batch operator adds ids as it submits)."""
        for task_id in task_ids:
            task_id = str(task_id)
            if task_id in self._pending:
                continue
            if task_id not in self.latest or not self.latest[task_id].is_terminal:
                self._pending[task_id] = None

    def discard(self, task_ids: Iterable[str]) -> None:
        """Stop following ids (the batch operator gives up on a task after its timeout)."""
        for task_id in task_ids:
            if self._pending.pop(str(task_id), 0) is None:
                self._finished += 1
            self._misses.pop(str(task_id), None)

    def forget(self, task_ids: Iterable[str]) -> None:
        """
        Drop what was kept about finished ids (their last task object), once the caller has recorded
        them elsewhere: a long batch then holds only the tasks still in flight.
        """
        for task_id in task_ids:
            task_id = str(task_id)
            if task_id not in self._pending:
                self.latest.pop(task_id, None)

    @property
    def finished_count(self) -> int:
        """Ids no longer pending: terminal, not found or discarded."""
        return self._finished

    def update(self, tasks: Iterable[MJTask]) -> list[MJTask]:
        """
        Record one poll's answer for the pending ids; return the tasks that became terminal.

        Pending ids absent from ``tasks`` count a miss; after ``missing_grace`` misses in a row they
        move to :attr:`not_found`.
        """
        seen: set[str] = set()
        finished: list[MJTask] = []
        for task in tasks:
            if task.id not in self._pending:
                continue
            seen.add(task.id)
            self.latest[task.id] = task
            self._misses.pop(task.id, None)
            if task.is_terminal:
                finished.append(task)
        for task in finished:
            del self._pending[task.id]
            self._finished += 1
        for task_id in [i for i in self._pending if i not in seen]:
            misses = self._misses.get(task_id, 0) + 1
            self._misses[task_id] = misses
            if misses >= self.missing_grace:
                del self._pending[task_id]
                self._finished += 1
                self.not_found.add(task_id)
        return finished

    # -- state
    @property
    def pending(self) -> list[str]:
        """Ids still being followed, in the order they were added."""
        return list(self._pending)

    @property
    def done(self) -> bool:
        return not self._pending

    @property
    def timed_out(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def seconds_left(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - self._clock())

    def event(self, carry_results: bool = True) -> dict[str, Any]:
        """
        A JSON-serialisable summary: what a trigger yields and what :func:`results.outcome` reads.

        ``status`` is ``done`` when nothing is pending, else ``timeout``.

        :param carry_results: include what result mappers need of finished tasks (see
            :func:`compact_task`); ``False`` keeps only status, progress and failReason per id, for
            callers that fetch the finished tasks themselves (the batch, thousands of ids at a time).
        """
        return {
            "status": EVENT_DONE if self.done else EVENT_TIMEOUT,
            "task_ids": [*self._all, *(i for i in self._pending if i not in self._initial)],
            "tasks": {task_id: compact_task(task, carry_results) for task_id, task in self.latest.items()},
            "not_found": sorted(self.not_found),
            "pending": self.pending,
        }


#: Fields of a finished task that results need (the rest, e.g. the prompt three times over, stays out
#: of events: a trigger event is stored in the metadata database).
_RESULT_FIELDS = (
    "action",
    "state",
    "submitTime",
    "startTime",
    "finishTime",
    "imageUrl",
    "imageUrls",
    "failReason",
    "buttons",
    "description",
)


def compact_task(task: MJTask, carry_results: bool = True) -> dict[str, Any]:
    """
    A task as a trigger event carries it: status and progress while running; once finished, what the
    result mappers read, with the prompt text once (as ``properties.finalPrompt``), or with
    ``carry_results=False`` only the ``failReason``.
    """
    small: dict[str, Any] = {"id": task.id, "status": task.status.value, "progress": task.progress}
    if not task.is_terminal:
        return small
    if not carry_results:
        if task.fail_reason:
            small["failReason"] = task.fail_reason
        return small
    raw = task.raw or {}
    for key in _RESULT_FIELDS:
        if raw.get(key) not in (None, "", [], {}):
            small[key] = raw[key]
    properties = {}
    final = task.final_prompt
    if final:
        properties["finalPrompt"] = final
    for key in ("bannedWord", "messageHash", "finalZhPrompt"):
        if task.properties.get(key):
            properties[key] = task.properties[key]
    if properties:
        small["properties"] = properties
    return small
