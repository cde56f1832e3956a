"""MJTaskSensor: wait for a Midjourney task that was submitted elsewhere."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from airflow_provider_apicore.exceptions import ApicoreConfigError, TaskNotFoundError, TaskTimeoutError
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.results import describe_result, outcome
from airflow_provider_apicore.tracking import DEFAULT_MISSING_GRACE, TaskTracker
from airflow_provider_apicore.triggers.task import MJTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Key in ``task_state_store``: the followed id and how many polls in a row missed it.
SENSOR_STATE_KEY = "apicore_sensor"
#: How much later than the sensor's own deadline Airflow's deferral timeout fires. The trigger
#: reports the timeout itself (with the last status seen); this only guards against a lost trigger.
DEFER_TIMEOUT_MARGIN = timedelta(seconds=60)


class MJTaskSensor(BaseSensorOperator):
    """
    Wait until a Midjourney task ends, and return its result.

    For tasks submitted elsewhere: by ``MJDescribeOperator(wait_for_completion=False)`` upstream,
    another DAG, or a notifyHook flow. Each poke makes one ``list-by-condition`` request. On SUCCESS
    the sensor returns the same result dict as ``MJDescribeOperator(wait_for_completion=True)`` (see
    :func:`~airflow_provider_apicore.results.describe_result`): ``task_id``, ``status``, ``prompts``
    (list of four), ``prompt`` (raw text), ``image_url`` and timings.

    * FAILURE or CANCEL raises :class:`~airflow_provider_apicore.exceptions.TaskFailedError` with the
      server's ``failReason``.
    * An id the server does not know (absent from a few answers in a row) raises
      :class:`~airflow_provider_apicore.exceptions.TaskNotFoundError`.
    * ``timeout`` raises ``AirflowSensorTimeout`` naming the last status and progress seen, or skips
      the task when ``soft_fail=True``, in poke, reschedule and deferrable mode alike.

    With ``deferrable=True`` the sensor pokes once and, if the task is still running, hands the wait
    to :class:`~airflow_provider_apicore.triggers.task.MJTaskTrigger` and frees the worker slot.
    In deferrable mode Airflow's ``soft_fail`` also turns a failed task into a skip (Airflow applies
    it to every error raised on resume); in poke mode it only covers the timeout.

    :param mj_task_id: the Midjourney task id to wait for (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='submit', key='task_id') }}"``
    :param apicore_conn_id: the Airflow connection of type ``apicore`` (templated)
    :param deferrable: wait in the triggerer instead of the worker
    """

    template_fields: Sequence[str] = ("mj_task_id", "apicore_conn_id")
    ui_color = "#d6cbea"

    def __init__(
        self,
        *,
        mj_task_id: str,
        apicore_conn_id: str = ApicoreHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.poke_interval <= 0:
            raise ApicoreConfigError(
                f"poke_interval must be above 0 seconds for {type(self).__name__}, got {self.poke_interval!r}"
            )
        self.mj_task_id = mj_task_id
        self.apicore_conn_id = apicore_conn_id
        self.deferrable = deferrable
        self._hook: ApicoreHook | None = None
        self._tracker: TaskTracker | None = None
        self._misses = 0

    @property
    def hook(self) -> ApicoreHook:
        if self._hook is None:
            self._hook = ApicoreHook(apicore_conn_id=self.apicore_conn_id)
        return self._hook

    @property
    def tracked_task_id(self) -> str:
        """The rendered task id, checked."""
        task_id = str(self.mj_task_id if self.mj_task_id is not None else "").strip()
        if not task_id or task_id == "None":
            raise ApicoreConfigError(
                f"mj_task_id of {self.task_id!r} is empty (rendered {self.mj_task_id!r}); pass the "
                "Midjourney task id, e.g. \"{{ ti.xcom_pull(task_ids='submit', key='task_id') }}\"."
            )
        return task_id

    def poke(self, context: Context) -> PokeReturnValue:
        task_id = self.tracked_task_id
        tracker = self._tracker_for(task_id)
        tracker.update(self.hook.list_tasks(tracker.pending))
        task = tracker.latest.get(task_id)
        if task is None:
            misses = self._count_miss(context, task_id)
            if misses >= DEFAULT_MISSING_GRACE:
                raise TaskNotFoundError(task_id)
            self.log.info(
                "Task %s not listed by APICore yet (%d of %d polls allowed)",
                task_id,
                misses,
                DEFAULT_MISSING_GRACE,
            )
            return PokeReturnValue(is_done=False)
        self._remember(context, task_id, misses=0)
        self.log.info("Task %s: %s, progress %s", task_id, task.status.value, task.progress or "?")
        if not task.is_terminal:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=describe_result(task))

    def _count_miss(self, context: Context, task_id: str) -> int:
        """
        One more poll without the task. Counted in ``task_state_store`` when there is one, so that the
        grace is the same in every mode: in reschedule mode each poke is a fresh process.
        """
        store = (
            context.get("task_state_store") if isinstance(context, dict) or hasattr(context, "get") else None
        )
        if store is None:
            self._misses += 1
            return self._misses
        record = store.get(SENSOR_STATE_KEY) or {}
        misses = (record.get("misses", 0) if record.get("task_id") == task_id else 0) + 1
        self._remember(context, task_id, misses=misses)
        return misses

    def _remember(self, context: Context, task_id: str, misses: int) -> None:
        self._misses = misses
        store = context.get("task_state_store") if hasattr(context, "get") else None
        if store is not None:
            store.set(SENSOR_STATE_KEY, {"task_id": task_id, "misses": misses})

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as err:
                raise AirflowSensorTimeout(f"{err} {self._last_seen()}") from err
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        self.defer(
            trigger=MJTaskTrigger(
                task_ids=[self.tracked_task_id],
                apicore_conn_id=self.apicore_conn_id,
                poll_interval=self.poke_interval,
                end_time=time.time() + self.timeout,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) + DEFER_TIMEOUT_MARGIN,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after :class:`MJTaskTrigger`: the same result or error as a poke."""
        # The event names the id it followed; templates need not render the same on resume.
        task_id = (event.get("task_ids") or [self.mj_task_id])[0]
        try:
            task = outcome(event, task_id, self.timeout)
        except TaskTimeoutError as err:
            if self.soft_fail:
                raise AirflowSkipException(f"Skipping (soft_fail): {err}") from err
            raise AirflowSensorTimeout(str(err)) from err
        result = describe_result(task)
        self.log.info("Task %s finished: %d prompts", task_id, len(result["prompts"]))
        return result

    def _tracker_for(self, task_id: str) -> TaskTracker:
        if self._tracker is None or task_id not in self._tracker.pending:
            # Absences are counted by the sensor itself (durably), not by the tracker.
            self._tracker = TaskTracker([task_id], missing_grace=10**9)
        return self._tracker

    def _last_seen(self) -> str:
        task = self._tracker.latest.get(self.tracked_task_id) if self._tracker else None
        status = task.status.value if task else None
        progress = task.progress if task else None
        return (
            f"Midjourney task {self.tracked_task_id}: last seen status {status or 'unknown'}, "
            f"progress {progress or 'unknown'}"
        )
