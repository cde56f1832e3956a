"""MJImagineOperator: create a 2x2 grid of images from a prompt (and optional reference images)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.exceptions import ApicoreInputError
from airflow_provider_apicore.hooks.apicore import SUBMIT_IMAGINE
from airflow_provider_apicore.images import DEFAULT_MAX_IMAGE_BYTES
from airflow_provider_apicore.operators.base import MJSubmitOperator
from airflow_provider_apicore.operators.family_common import (
    ImageInput,
    ImageOutputMixin,
    image_list,
    load_images,
    summary,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


def clean_prompt(prompt: Any, field: str = "prompt") -> str:
    """
    A prompt as it will be sent: a string with surrounding whitespace removed (limits are the schema's).

    :raises ApicoreInputError: not a string
    """
    if not isinstance(prompt, str):
        raise ApicoreInputError(f"{field} must be text, got {type(prompt).__name__}")
    return prompt.strip()


class MJImagineOperator(ImageOutputMixin, MJSubmitOperator):
    """
    Imagine with Midjourney (``/mj/submit/imagine``): a prompt in, a 2x2 grid of four images out.

    The result (``wait_for_completion=True``, the default) is the typed task result: ``task_id``,
    ``status``, ``action``, ``image_url``, ``image_urls``, ``buttons`` (``label``, ``custom_id``,
    ``emoji`` and the readable ``action``/``index``), ``actions`` (e.g. ``["upscale 1-4", "reroll",
    "variation 1-4"]``), ``prompt``, ``final_prompt`` and timings; with ``output_path``, also ``files``:
    the grid stored there, or its four pictures with ``split_grid=True``. Follow it with
    :class:`~airflow_provider_apicore.operators.action.MJActionOperator` (``mj_task_id`` from this task's
    XCom) to upscale or vary a picture.

    Everything common (durable re-attach, polling or deferring, ``notify_hook``, ``state``, timeouts) is
    :class:`~airflow_provider_apicore.operators.base.MJSubmitOperator`'s.

    :param prompt: the prompt, Midjourney parameters included, e.g. ``"a red fox --ar 3:2"`` (templated;
        not blank, at most 6000 characters)
    :param images: reference images: paths, ObjectStoragePaths or data URLs (templated; at most 5)
    :param output_path: directory (local, ``s3://`` ... or ObjectStoragePath) to store the image in
        (templated); ``None``: do not download
    :param split_grid: store the grid's four pictures as ``<task id>_1.png`` … ``_4.png`` instead of the grid
    :param max_image_bytes: largest reference image accepted, in bytes
    """

    endpoint = SUBMIT_IMAGINE
    schema_name = "imagine_payload"
    action_name = "imagine"
    supports_bot_type = True
    template_fields: Sequence[str] = (
        *MJSubmitOperator.template_fields,
        "prompt",
        "images",
        "output_path",
    )

    def __init__(
        self,
        *,
        prompt: str,
        images: Sequence[ImageInput] | ImageInput | None = None,
        output_path: Any = None,
        split_grid: bool = False,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.images = images
        self.output_path = output_path
        self.split_grid = split_grid
        self.max_image_bytes = max_image_bytes
        self._summary = ""

    def build_payload(self, context: Context) -> dict[str, Any]:
        payload: dict[str, Any] = {"prompt": clean_prompt(self.prompt)}
        images = load_images(image_list(self.images, "images"), "images", self.max_image_bytes)
        if images:
            payload["base64Array"] = [image.to_data_url() for image in images]
        self._summary = summary(images)
        return payload

    def describe_input(self, payload: dict[str, Any]) -> str:
        prompt = payload["prompt"]
        shown = prompt if len(prompt) <= 120 else prompt[:119] + "…"
        return f"prompt {shown!r}" + (f" with {self._summary}" if self._summary else "")
