"""MJTaskTrigger: follow many Midjourney tasks from the triggerer, one request per interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_apicore.exceptions import ApicoreError
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.tracking import EVENT_ERROR, EVENT_PARTIAL, TaskTracker


class MJTaskTrigger(BaseTrigger):
    """
    Wait in the triggerer until every given task is terminal (or vanished), or a deadline passes.

    Each interval it makes **one** ``list-by-condition`` request for all ids still pending, so a
    single trigger can follow a thousand jobs as cheaply as one. Transient HTTP failures are retried
    by :class:`ApicoreHook` with backoff; an error that survives them ends the wait with an ``error``
    event. It yields exactly one event: the tracker's summary (see :class:`TaskTracker`). The first
    poll comes one interval after the trigger starts, since the caller checked just before deferring.

    :param task_ids: Midjourney task ids to follow
    :param apicore_conn_id: the Airflow connection id
    :param poll_interval: seconds between two polls
    :param end_time: wall-clock deadline (epoch seconds); absolute so that a triggerer restart does
        not extend it. ``None``: wait for as long as the tasks take.
    :param min_finished: return as soon as this many ids are finished or gone, even if others are
        still pending (event status ``partial``). The batch operator uses it to get back to submitting
        once enough slots are free. ``None``: wait for all.
    :param carry_results: put what results need of each finished task in the event (the prompt text
        once); ``False``: only status, progress and failReason per id, for callers that fetch finished
        tasks themselves. Events are stored in the metadata database.
    """

    def __init__(
        self,
        task_ids: Sequence[str],
        apicore_conn_id: str = ApicoreHook.default_conn_name,
        poll_interval: float = 5.0,
        end_time: float | None = None,
        min_finished: int | None = None,
        carry_results: bool = True,
    ) -> None:
        super().__init__()
        self.task_ids = [str(i) for i in task_ids]
        self.apicore_conn_id = apicore_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = end_time
        self.min_finished = min_finished
        self.carry_results = carry_results
        self._tracker: TaskTracker | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "task_ids": list(self.task_ids),
            "apicore_conn_id": self.apicore_conn_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
        }
        if self.min_finished is not None:
            kwargs["min_finished"] = self.min_finished
        if not self.carry_results:
            kwargs["carry_results"] = False
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def on_kill(self) -> None:
        """
        A user killed the deferred task (mark failed, clear). APICore has no cancel endpoint: the jobs
        keep running upstream and are billed; say which, so that a person can find them.
        """
        pending = self._tracker.pending if self._tracker is not None else self.task_ids
        self.log.warning(
            "Task killed while following %d Midjourney task(s) %s; APICore cannot cancel them, they run to "
            "their end upstream",
            len(pending),
            ", ".join(pending[:20]) + (" ..." if len(pending) > 20 else ""),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ApicoreHook(apicore_conn_id=self.apicore_conn_id)
        # The deadline was computed on a worker: another host's clock. Whatever the skew, the first
        # poll happens (the tracker asks once before it can time out), so a skewed clock costs at most
        # one early "timeout" answer, never a defer/resume loop: the operators do not defer again.
        timeout = None if self.end_time is None else max(0.0, self.end_time - time.time())
        tracker = self._tracker = TaskTracker(self.task_ids, timeout=timeout)
        try:
            while True:
                # Wait first: whoever deferred has just submitted or checked these tasks. Polling at
                # once would gain nothing and could fire the event before the deferring worker has
                # reported its exit, which Airflow 3.3 can turn into a failed task (apache/airflow#72716).
                left = tracker.seconds_left()
                await asyncio.sleep(self.poll_interval if left is None else min(self.poll_interval, left))
                tracker.update(await hook.alist_tasks(tracker.pending))
                enough = self.min_finished is not None and tracker.finished_count >= self.min_finished
                if tracker.done or tracker.timed_out or enough:
                    self.log.info(
                        "Tasks followed: %d; finished or gone: %d; still pending: %d",
                        len(self.task_ids),
                        len(self.task_ids) - len(tracker.pending),
                        len(tracker.pending),
                    )
                    event = tracker.event(self.carry_results)
                    if enough and not tracker.done and not tracker.timed_out:
                        event["status"] = EVENT_PARTIAL
                    yield TriggerEvent(event)
                    return
        except ApicoreError as err:
            event = tracker.event(self.carry_results)
            event.update(status=EVENT_ERROR, message=str(err))
            yield TriggerEvent(event)
        finally:
            await hook.aclose()
