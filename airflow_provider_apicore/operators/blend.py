"""MJBlendOperator: blend 2 to 5 images into one 2x2 grid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.exceptions import ApicoreInputError
from airflow_provider_apicore.hooks.apicore import SUBMIT_BLEND
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

DIMENSIONS = ("PORTRAIT", "SQUARE", "LANDSCAPE")


class MJBlendOperator(ImageOutputMixin, MJSubmitOperator):
    """
    Blend 2 to 5 images with Midjourney (``/mj/submit/blend``); the result is a 2x2 grid.

    The images are read and checked (type from the bytes, size) and their count checked before anything
    is sent. Result, ``output_path`` and ``split_grid`` as for
    :class:`~airflow_provider_apicore.operators.imagine.MJImagineOperator`.

    :param images: 2 to 5 images: paths, ObjectStoragePaths or data URLs (templated)
    :param dimensions: ``PORTRAIT`` (2:3), ``SQUARE`` (1:1) or ``LANDSCAPE`` (3:2)
    :param output_path: directory to store the result in (templated); ``None``: do not download
    :param split_grid: store the grid's four pictures instead of the grid
    :param max_image_bytes: largest image accepted, in bytes
    """

    endpoint = SUBMIT_BLEND
    schema_name = "blend_payload"
    action_name = "blend"
    supports_bot_type = True
    template_fields: Sequence[str] = (*MJSubmitOperator.template_fields, "images", "output_path")

    def __init__(
        self,
        *,
        images: Sequence[ImageInput],
        dimensions: str = "SQUARE",
        output_path: Any = None,
        split_grid: bool = False,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dimensions not in DIMENSIONS:
            raise ApicoreInputError(f"dimensions must be one of {', '.join(DIMENSIONS)}; got {dimensions!r}")
        self.images = images
        self.dimensions = dimensions
        self.output_path = output_path
        self.split_grid = split_grid
        self.max_image_bytes = max_image_bytes
        self._summary = ""

    def build_payload(self, context: Context) -> dict[str, Any]:
        values = image_list(self.images, "images")
        if not 2 <= len(values) <= 5:
            raise ApicoreInputError(f"blend takes 2 to 5 images; got {len(values)}")
        images = load_images(values, "images", self.max_image_bytes)
        self._summary = summary(images)
        return {"base64Array": [image.to_data_url() for image in images], "dimensions": self.dimensions}

    def describe_input(self, payload: dict[str, Any]) -> str:
        return f"{len(payload['base64Array'])} images ({self._summary}), {payload['dimensions']}"
