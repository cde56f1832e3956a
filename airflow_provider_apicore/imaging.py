"""
Decode and check result images, and cut a Midjourney 2x2 grid into its four pictures (Pillow).

The type of an image is decided from its bytes (magic numbers, as in :mod:`airflow_provider_apicore.images`);
Pillow then decodes it fully, so a truncated or corrupt download is caught before it is stored, and gives
the dimensions. Pillow is an optional dependency (``pip install airflow-provider-apicore[images]``).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from airflow_provider_apicore.exceptions import ApicoreConfigError, InvalidImageError
from airflow_provider_apicore.images import HEADER_BYTES, validate_image_header

#: File extension per MIME type, for stored images.
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}

#: Largest number of pixels decoded (a guard against decompression bombs): 16384 x 16384.
MAX_PIXELS = 16384 * 16384

#: Grid cell order: Midjourney numbers the pictures left to right, top to bottom (U1 U2 / U3 U4).
GRID_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the installation
        raise ApicoreConfigError(
            "Pillow is needed to check and cut result images: pip install 'airflow-provider-apicore[images]'"
        ) from None
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    return Image


@dataclass(frozen=True)
class ImageInfo:
    """
    What a decoded image is.

    :param mime: MIME type, detected from the bytes
    :param width: pixels
    :param height: pixels
    :param size: bytes
    """

    mime: str
    width: int
    height: int
    size: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.mime]


def inspect_image(data: bytes, source: str = "image") -> ImageInfo:
    """
    Check that ``data`` is a whole, decodable PNG/JPEG/GIF/WEBP image and return its type and size.

    :param data: the image bytes
    :param source: what the bytes are (a URL or file name), named in errors
    :raises InvalidImageError: empty, not a supported image, truncated or corrupt, or too many pixels
    """
    mime = validate_image_header(data[:HEADER_BYTES], source)
    image_module = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", image_module.DecompressionBombWarning)
            with image_module.open(io.BytesIO(data)) as image:
                width, height = image.size
                image.load()  # decodes every pixel: a cut-off download fails here
    except (image_module.DecompressionBombError, image_module.DecompressionBombWarning):
        raise InvalidImageError(source, f"the image has too many pixels (over {MAX_PIXELS:,})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InvalidImageError(source, f"the {mime} data cannot be decoded ({err})") from None
    if width <= 0 or height <= 0:
        raise InvalidImageError(source, f"the image has no pixels ({width}x{height})")
    return ImageInfo(mime, width, height, len(data))


def require_png(data: bytes, source: str = "mask") -> ImageInfo:
    """
    Check that ``data`` is a decodable PNG (what a Vary (Region) mask must be).

    :raises InvalidImageError: not an image, or an image of another type (named)
    """
    info = inspect_image(data, source)
    if info.mime != "image/png":
        raise InvalidImageError(source, f"must be a PNG image; this is {info.mime}")
    return info


def split_grid(data: bytes, source: str = "grid") -> list[bytes]:
    """
    Cut a 2x2 grid into its four pictures, as PNG bytes, in Midjourney's order (1 2 / 3 4).

    An odd width or height gives the extra row or column to the right/bottom pictures.

    :param data: the grid image bytes (any supported type)
    :param source: named in errors
    :raises InvalidImageError: not a decodable image, or too small to cut (under 2x2 pixels)
    """
    info = inspect_image(data, source)
    if info.width < 2 or info.height < 2:
        raise InvalidImageError(source, f"a {info.width}x{info.height} image is too small to cut into 2x2")
    image_module = _pil()
    half_w, half_h = info.width // 2, info.height // 2
    pieces = []
    with image_module.open(io.BytesIO(data)) as grid:
        grid.load()
        if grid.mode not in ("RGB", "RGBA", "L", "LA"):
            grid = grid.convert("RGBA" if "transparency" in grid.info or "A" in grid.mode else "RGB")
        for col, row in GRID_ORDER:
            box = (
                col * half_w,
                row * half_h,
                info.width if col else half_w,
                info.height if row else half_h,
            )
            out = io.BytesIO()
            grid.crop(box).save(out, format="PNG")
            pieces.append(out.getvalue())
    return pieces
