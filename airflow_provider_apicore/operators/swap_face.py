"""MJSwapFaceOperator: put the face of one image onto another (InsightFace)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.exceptions import ApicoreInputError
from airflow_provider_apicore.hooks.apicore import SUBMIT_SWAP_FACE
from airflow_provider_apicore.images import DEFAULT_MAX_IMAGE_BYTES, load_image
from airflow_provider_apicore.operators.base import MJSubmitOperator
from airflow_provider_apicore.operators.family_common import ImageInput, ImageOutputMixin

if TYPE_CHECKING:
    from airflow.sdk import Context


class MJSwapFaceOperator(ImageOutputMixin, MJSubmitOperator):
    """
    Swap a face (``/mj/insight-face/swap``): the face of ``source_image`` onto ``target_image``.

    Both images are required and checked (type from the bytes, size) before anything is sent; the
    result is one image (``output_path`` stores it).

    :param source_image: the image holding the face: path, ObjectStoragePath or data URL (templated)
    :param target_image: the image to put the face on (templated)
    :param output_path: directory to store the result in (templated); ``None``: do not download
    :param max_image_bytes: largest image accepted, in bytes
    """

    endpoint = SUBMIT_SWAP_FACE
    schema_name = "swap_face_payload"
    action_name = "swap-face"
    template_fields: Sequence[str] = (
        *MJSubmitOperator.template_fields,
        "source_image",
        "target_image",
        "output_path",
    )

    def __init__(
        self,
        *,
        source_image: ImageInput,
        target_image: ImageInput,
        output_path: Any = None,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_image = source_image
        self.target_image = target_image
        self.output_path = output_path
        self.split_grid = False
        self.max_image_bytes = max_image_bytes
        self._summary = ""

    def build_payload(self, context: Context) -> dict[str, Any]:
        for name in ("source_image", "target_image"):
            value = getattr(self, name)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise ApicoreInputError(f"face swap needs two images: {name} is missing")
        source = load_image(self.source_image, max_bytes=self.max_image_bytes)
        target = load_image(self.target_image, max_bytes=self.max_image_bytes)
        if source.sha256 == target.sha256:
            raise ApicoreInputError(
                "face swap needs two different images: source_image and target_image are the same"
            )
        self._summary = f"face from {source.log_summary()} onto {target.log_summary()}"
        return {"sourceBase64": source.to_data_url(), "targetBase64": target.to_data_url()}

    def describe_input(self, payload: dict[str, Any]) -> str:
        return self._summary
