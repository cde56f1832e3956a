"""MJDescribeOperator: describe one image with Midjourney through APICore."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.exceptions import ApicoreConfigError
from airflow_provider_apicore.hooks.apicore import SUBMIT_DESCRIBE, ApicoreHook
from airflow_provider_apicore.images import DEFAULT_MAX_IMAGE_BYTES, load_image
from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.operators.base import (  # noqa: F401 - re-exported for existing imports
    XCOM_TASK_ID,
    MJSubmitOperator,
    check_wait_arguments,
)
from airflow_provider_apicore.results import describe_result
from airflow_provider_apicore.schemas import DESCRIBE_PAYLOAD, validate_describe_payload

if TYPE_CHECKING:
    from airflow.sdk import Context


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


class MJDescribeOperator(MJSubmitOperator):
    """
    Describe an image with Midjourney (``/mj/submit/describe``): image in, four text prompts out.

    The image is read, its type detected from its bytes, and the payload checked against the
    provider's JSON Schema before anything is sent. The task id is pushed to XCom under ``task_id``
    as soon as APICore accepts the job, and kept in ``task_state_store`` so that a retry re-attaches
    to it instead of paying for a second job (see
    :class:`~airflow_provider_apicore.operators.base.MJSubmitOperator`).

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
    :param max_image_bytes: largest image accepted, in bytes (default 10 MiB)

    The other arguments (``notify_hook``, ``state``, ``bot_type``, ``apicore_conn_id``, ``deferrable``,
    ``poll_interval``, ``timeout``, ``queue_full_retries``, ``durable``, ``on_unknown_fate``) are
    :class:`~airflow_provider_apicore.operators.base.MJSubmitOperator`'s.
    """

    endpoint = SUBMIT_DESCRIBE
    schema_name = DESCRIBE_PAYLOAD
    action_name = "describe"
    supports_bot_type = True

    template_fields: Sequence[str] = ("image", "notify_hook", "state", "apicore_conn_id")

    def __init__(
        self,
        *,
        image: str | os.PathLike | ObjectStoragePath,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        wait_for_completion: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(wait_for_completion=wait_for_completion, **kwargs)
        if not isinstance(max_image_bytes, int) or max_image_bytes <= 0:
            raise ApicoreConfigError(
                f"max_image_bytes must be a positive whole number, got {max_image_bytes!r}"
            )
        self.image = image
        self.max_image_bytes = max_image_bytes
        self._summary = ""

    def build_payload(self, context: Context) -> dict[str, Any]:
        data = load_image(self.image, max_bytes=self.max_image_bytes)
        self._summary = data.log_summary()
        return {"base64": data.to_data_url()}

    def describe_input(self, payload: dict[str, Any]) -> str:
        return f"describing {self._summary}"

    def map_result(self, task: MJTask, hook: ApicoreHook, context: Context) -> dict[str, Any]:
        result = describe_result(task)
        self.log.info(
            "Task %s described in %ss: %d prompts",
            task.id,
            result["duration_seconds"],
            len(result["prompts"]),
        )
        return result
