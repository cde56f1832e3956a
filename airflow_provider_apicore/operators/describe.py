"""MJDescribeOperator: describe one image with Midjourney through APICore."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath, conf

from airflow_provider_apicore.exceptions import ApicoreConfigError, ApicoreQueueFullError
from airflow_provider_apicore.hooks.apicore import ApicoreHook, mask_url_credentials, retry_delay
from airflow_provider_apicore.images import DEFAULT_MAX_IMAGE_BYTES, load_image
from airflow_provider_apicore.models import SubmitResult
from airflow_provider_apicore.operators.masking import NotifyHookMaskingMixin
from airflow_provider_apicore.results import describe_result, outcome
from airflow_provider_apicore.schemas import validate_describe_payload
from airflow_provider_apicore.tracking import TaskTracker
from airflow_provider_apicore.triggers.task import MJTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

XCOM_TASK_ID = "task_id"


def build_describe_payload(
    image: str | os.PathLike | ObjectStoragePath,
    notify_hook: str | None = None,
    state: str | None = None,
    bot_type: str | None = None,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> tuple[dict[str, Any], str]:
    """
    Read an image and build a schema-valid describe payload. Nothing is sent.

    :return: the payload and a loggable summary of the image (name, type, size; never its data)
    :raises InvalidImageError: the image is missing, unreadable, empty, too large or not a supported type
    :raises PayloadValidationError: a field breaks the provider's JSON Schema
    """
    data = load_image(image, max_bytes=max_image_bytes)
    payload: dict[str, Any] = {"base64": data.to_data_url()}
    if notify_hook:
        payload["notifyHook"] = notify_hook
    if state is not None:
        payload["state"] = state
    if bot_type:
        payload["botType"] = bot_type
    validate_describe_payload(payload)
    return payload, data.log_summary()


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def check_wait_arguments(poll_interval: Any, timeout: Any) -> None:
    """Reject unusable waiting arguments at DAG parse time, with the argument named."""
    if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
        raise ApicoreConfigError(f"poll_interval must be a number of seconds above 0, got {poll_interval!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ApicoreConfigError(f"timeout must be a number of seconds above 0 (or None), got {timeout!r}")


class MJDescribeOperator(NotifyHookMaskingMixin, BaseOperator):
    """
    Describe an image with Midjourney (``/mj/submit/describe``): image in, four text prompts out.

    The image is read, its type detected from its bytes, and the payload checked against the
    provider's JSON Schema before anything is sent. The task id is pushed to XCom under ``task_id``
    as soon as APICore accepts the job.

    Three ways to run it:

    * ``wait_for_completion=False`` (default): return the task id; follow it with
      :class:`~airflow_provider_apicore.sensors.task.MJTaskSensor` or a notifyHook.
    * ``wait_for_completion=True``: poll in the worker and return the result (see
      :func:`~airflow_provider_apicore.results.describe_result`): ``task_id``, ``status``,
      ``prompts`` (list of four), ``prompt`` (raw text), ``image_url`` and timings.
    * ``wait_for_completion=True, deferrable=True``: submit in the worker, then hand the wait to the
      triggerer (:class:`~airflow_provider_apicore.triggers.task.MJTaskTrigger`) and free the worker
      slot. ``execute_complete`` returns the same result, or raises the same error, as polling.

    :param image: path (local, ``file://``, ``s3://``, ``memory://`` ...), an ``ObjectStoragePath``,
        or a ``data:image/...;base64,`` URL (templated)
    :param notify_hook: URL APICore calls on each status change (templated)
    :param state: free text echoed back on the task, e.g. to tag a run (templated)
    :param bot_type: ``MID_JOURNEY`` (server default) or ``NIJI_JOURNEY``
    :param apicore_conn_id: the Airflow connection of type ``apicore``
    :param max_image_bytes: largest image accepted, in bytes (default 10 MiB)
    :param wait_for_completion: wait for the task to finish and return its prompts
    :param deferrable: wait in the triggerer instead of the worker
    :param poll_interval: seconds between two status polls while waiting
    :param timeout: seconds to wait for the task to finish (``None``: no limit)
    :param queue_full_retries: how often to resubmit after "queue full" (code 23), with backoff
    """

    template_fields: Sequence[str] = ("image", "notify_hook", "state", "apicore_conn_id")
    ui_color = "#e8dff5"

    def __init__(
        self,
        *,
        image: str | os.PathLike | ObjectStoragePath,
        notify_hook: str | None = None,
        state: str | None = None,
        bot_type: str | None = None,
        apicore_conn_id: str = ApicoreHook.default_conn_name,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 5.0,
        timeout: float | None = 600.0,
        queue_full_retries: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_wait_arguments(poll_interval, timeout)
        if not isinstance(max_image_bytes, int) or max_image_bytes <= 0:
            raise ApicoreConfigError(
                f"max_image_bytes must be a positive whole number, got {max_image_bytes!r}"
            )
        self.image = image
        self.notify_hook = notify_hook
        self.state = state
        self.bot_type = bot_type
        self.apicore_conn_id = apicore_conn_id
        self.max_image_bytes = max_image_bytes
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.queue_full_retries = queue_full_retries
        if not _is_template(notify_hook):
            mask_url_credentials(notify_hook)

    @property
    def hook(self) -> ApicoreHook:
        return ApicoreHook(apicore_conn_id=self.apicore_conn_id)

    def execute(self, context: Context) -> Any:
        # Everything that can be wrong with the input fails here, before a connection is even read.
        payload, summary = build_describe_payload(
            self.image, self.notify_hook, self.state, self.bot_type, self.max_image_bytes
        )
        self.log.info("Describing %s", summary)
        if self.notify_hook:
            self.log.info(
                "APICore will call notifyHook %s on each status change",
                mask_url_credentials(self.notify_hook),
            )
        hook = self.hook
        submitted = self._submit(hook, payload)
        context["ti"].xcom_push(key=XCOM_TASK_ID, value=submitted.task_id)
        if not self.wait_for_completion:
            return submitted.task_id
        if submitted.existed:
            # Code 21: APICore already had this job, which may well be finished: no wait needed.
            tracker = TaskTracker([submitted.task_id])
            tracker.update(hook.list_tasks([submitted.task_id]))
            if tracker.done:
                return self._result(tracker.event(), submitted.task_id)
        if self.deferrable:
            end_time = None if self.timeout is None else time.time() + self.timeout
            self.defer(
                trigger=MJTaskTrigger(
                    task_ids=[submitted.task_id],
                    apicore_conn_id=self.apicore_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=end_time,
                ),
                method_name="execute_complete",
                # The trigger keeps its own deadline; this is a safety net a little later.
                timeout=None if self.timeout is None else timedelta(seconds=self.timeout + 60),
            )
        event = hook.wait_for_tasks([submitted.task_id], self.poll_interval, self.timeout)
        return self._result(event, submitted.task_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after :class:`MJTaskTrigger`: the same result or error as the polling path."""
        return self._result(event, event["task_ids"][0])

    def _result(self, event: dict[str, Any], task_id: str) -> dict[str, Any]:
        result = describe_result(outcome(event, task_id, self.timeout or 0))
        self.log.info(
            "Task %s described in %ss: %d prompts",
            task_id,
            result["duration_seconds"],
            len(result["prompts"]),
        )
        return result

    def _submit(self, hook: ApicoreHook, payload: dict[str, Any]) -> SubmitResult:
        """Submit, backing off on "queue full" (code 23), which means nothing was accepted."""
        for attempt in range(self.queue_full_retries + 1):
            try:
                return hook.submit_describe(payload, validate=False)
            except ApicoreQueueFullError:
                if attempt >= self.queue_full_retries:
                    raise
                delay = retry_delay(attempt, hook.retry_backoff * 2, hook.max_backoff)
                self.log.warning("APICore queue is full; resubmitting in %.1fs", delay)
                time.sleep(delay)
        raise AssertionError("unreachable")
