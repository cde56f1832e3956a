"""MJActionOperator: press a button of a finished task (upscale, variation, reroll, zoom, pan, ...)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.buttons import check_index, find_custom_id, normalize_action
from airflow_provider_apicore.exceptions import ApicoreConfigError, ApicoreInputError, ParentTaskNotReadyError
from airflow_provider_apicore.hooks.apicore import SUBMIT_ACTION
from airflow_provider_apicore.images import DEFAULT_MAX_IMAGE_BYTES, load_image
from airflow_provider_apicore.imaging import require_png
from airflow_provider_apicore.models import MJTask, SubmitResult, TaskStatus
from airflow_provider_apicore.operators.base import MJSubmitOperator
from airflow_provider_apicore.operators.family_common import ImageInput, ImageOutputMixin
from airflow_provider_apicore.operators.imagine import clean_prompt
from airflow_provider_apicore.schemas import validate_payload

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_apicore.hooks.apicore import ApicoreHook

#: The description of a code-21 answer that opens a window (C server; the gateway keeps it only for
#: Vary Region and Custom Zoom and rewrites the code to 1 for the rest).
WAITING_FOR_WINDOW = "waiting for window confirm"
#: Statuses that say the server has not yet reported where the new task stands (new-api reads "" for
#: up to ~15 s after a submission).
_UNKNOWN = (TaskStatus.NOT_START,)


def task_id_of(value: Any, field: str = "mj_task_id") -> str:
    """
    A task id from what a DAG passed: an id, or the result dict of an upstream operator (its ``task_id``).

    :raises ApicoreInputError: nothing usable
    """
    if isinstance(value, dict):
        value = value.get("task_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ApicoreInputError(
            f"{field} must be a Midjourney task id (e.g. from the imagine task's XCom); got {value!r}"
        )
    return str(value).strip()


class MJActionOperator(ImageOutputMixin, MJSubmitOperator):
    """
    Run an action on a finished Midjourney task (``/mj/submit/action``): upscale, variation, reroll,
    zoom out, custom zoom, pan, vary (subtle/strong/region), upscale again (subtle/creative/2x/4x).

    The action is named in words (``action="upscale", index=2``); its ``customId`` is looked up in the
    parent task's ``buttons``, so an action the parent does not offer fails before anything is sent and
    the error lists the ones it does. A raw ``custom_id`` is accepted instead.

    Some actions open a window first (Vary Region, Custom Zoom, and anything when remix is on): the
    server answers code 21 "Waiting for window confirm" (or, through the new-api gateway, code 1 with the
    new task in status ``MODAL``). The operator then confirms it with ``/mj/submit/modal``, sending
    ``prompt`` and, for Vary Region, ``mask`` (a PNG: white = repaint, black = keep), and waits for the
    result.

    The result is the typed task result (see
    :class:`~airflow_provider_apicore.operators.imagine.MJImagineOperator`); with ``output_path`` the
    image is stored there (``split_grid=True`` cuts grids — variations, rerolls, zooms, pans — into four;
    an upscale is one image and stays whole).

    :param mj_task_id: the parent task: its id, or the result dict of an upstream operator (templated)
    :param action: readable action: ``upscale``, ``variation``, ``reroll``, ``upscale_subtle``,
        ``upscale_creative``, ``upscale_2x``, ``upscale_4x``, ``vary_subtle``, ``vary_strong``,
        ``vary_region``, ``zoom_out_2x`` (alias ``zoom``), ``zoom_out_1.5x``, ``custom_zoom``,
        ``pan_left``/``right``/``up``/``down``, ``describe_pick``, ``shorten_pick`` (templated)
    :param index: which picture, 1-4 (left to right, top to bottom), for upscale/variation/picks
    :param custom_id: a raw ``buttons[].customId`` instead of ``action`` (templated)
    :param prompt: the prompt put into the window, for Custom Zoom (e.g. ``"... --zoom 1.5"``), Vary
        Region or remix (templated); default: the server's pre-filled prompt
    :param mask: the Vary Region mask: PNG path, ObjectStoragePath or data URL (templated)
    :param enable_remix: ask the server to open the remix window (then ``prompt`` is sent through it)
    :param modal_wait: seconds to wait for a new task to report its status (the gateway shows ``""``
        for up to ~15 s), to see whether it waits for a window
    :param output_path: directory to store the result image in (templated); ``None``: do not download
    :param split_grid: cut a grid result into its four pictures
    """

    endpoint = SUBMIT_ACTION
    schema_name = "action_payload"
    action_name = "action"
    template_fields: Sequence[str] = (
        *MJSubmitOperator.template_fields,
        "mj_task_id",
        "action",
        "index",
        "custom_id",
        "prompt",
        "mask",
        "output_path",
    )

    def __init__(
        self,
        *,
        mj_task_id: Any,
        action: str | None = None,
        index: int | None = None,
        custom_id: str | None = None,
        prompt: str | None = None,
        mask: ImageInput | None = None,
        enable_remix: bool = False,
        modal_wait: float = 60.0,
        output_path: Any = None,
        split_grid: bool = False,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if action is None and custom_id is None:
            raise ApicoreConfigError("MJActionOperator needs action=... (e.g. 'upscale') or custom_id=...")
        if action is not None and custom_id is not None:
            raise ApicoreConfigError("give either action=... or custom_id=..., not both")
        self.mj_task_id = mj_task_id
        self.action = action
        self.index = index
        self.custom_id = custom_id
        self.prompt = prompt
        self.mask = mask
        self.enable_remix = enable_remix
        self.modal_wait = modal_wait
        self.output_path = output_path
        self.split_grid = split_grid
        self.max_image_bytes = max_image_bytes
        self._action: str | None = None
        self._modal: dict[str, Any] = {}

    # ------------------------------------------------------------------ payload
    def _modal_fields(self, parent_id: str) -> dict[str, Any]:
        """``prompt`` and ``maskBase64`` for a window, checked now: bad input fails before any request."""
        fields: dict[str, Any] = {}
        if self.prompt is not None:
            fields["prompt"] = clean_prompt(self.prompt)
        if self.mask is not None:
            image = load_image(self.mask, max_bytes=self.max_image_bytes)
            require_png(image.data, image.path)
            fields["maskBase64"] = image.to_data_url()
        validate_payload("modal_payload", {"taskId": parent_id, **fields})
        return fields

    def build_payload(self, context: Context) -> dict[str, Any]:
        parent_id = task_id_of(self.mj_task_id)
        number = None
        if self.custom_id is None:
            self._action = normalize_action(self.action)
            number = check_index(self._action, self.index)
            if self._action == "vary_region" and self.mask is None:
                raise ApicoreInputError(
                    "action 'vary_region' needs mask=... (a PNG: white = repaint, black = keep)"
                )
        if self.mask is not None and self._action not in (None, "vary_region"):
            raise ApicoreInputError(f"mask is only used by action 'vary_region', not {self._action!r}")
        self._modal = self._modal_fields(parent_id)
        # Every check on the input is done; now the parent is read (a query, never a job).
        parent = self.hook.fetch_task(parent_id)
        if parent.status is not TaskStatus.SUCCESS:
            raise ParentTaskNotReadyError(parent.id, parent.status.value, parent.fail_reason)
        if self.custom_id is not None:
            custom_id = str(self.custom_id).strip()
        else:
            assert self._action is not None
            custom_id = find_custom_id(
                (parent.raw or {}).get("buttons"), self._action, number, task_id=parent.id
            )
        payload: dict[str, Any] = {"taskId": parent_id, "customId": custom_id}
        if self.enable_remix:
            payload["enableRemix"] = True
        return payload

    def describe_input(self, payload: dict[str, Any]) -> str:
        what = self._action or "button"
        if self.index is not None and self._action:
            what += f" {self.index}"
        return f"{what} on task {payload['taskId']} ({payload['customId']})"

    # ------------------------------------------------------------------ MODAL continuation
    def continue_job(
        self, hook: ApicoreHook, task_id: str, submitted: SubmitResult | None, context: Context
    ) -> str:
        """Confirm the window with ``/mj/submit/modal`` when the new task waits for one."""
        if (
            submitted is not None
            and submitted.code == 21
            and WAITING_FOR_WINDOW in submitted.description.lower()
        ):
            self.log.info("Task %s waits for its window (code 21 %r)", task_id, submitted.description)
        else:
            task = self._settled(hook, task_id)
            if task is None or task.status is not TaskStatus.MODAL:
                return task_id
            self.log.info("Task %s is in status MODAL: confirming its window", task_id)
        payload: dict[str, Any] = {"taskId": task_id, **self._modal}
        if self.notify_hook:
            payload["notifyHook"] = self.notify_hook
        if self.state is not None:
            payload["state"] = self.state
        result = hook.submit_modal(payload)
        self.log.info("Window of task %s confirmed: task %s (%s)", task_id, result.task_id, result.outcome)
        return result.task_id

    def _settled(self, hook: ApicoreHook, task_id: str) -> MJTask | None:
        """The new task once it reports a status (bounded by ``modal_wait``), or its last state seen."""
        deadline = time.monotonic() + float(self.modal_wait)
        while True:
            task = self._look_up(hook, task_id)
            if task is None or task.status not in _UNKNOWN or time.monotonic() >= deadline:
                return task
            hook._sleep(min(float(self.poll_interval), max(0.1, deadline - time.monotonic())))
