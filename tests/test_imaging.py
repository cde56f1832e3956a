"""Checking downloaded images with Pillow and cutting a 2x2 grid into four pictures."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from airflow_provider_apicore.exceptions import InvalidImageError
from airflow_provider_apicore.imaging import MAX_PIXELS, inspect_image, require_png, split_grid
from tests.helpers.imagegen import make_gif, make_jpeg, make_png

QUADRANT_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def grid_png(width: int, height: int) -> bytes:
    """A grid whose four quadrants have the four colours above (1 2 / 3 4)."""

    def colour(x: int, y: int) -> tuple[int, int, int]:
        return QUADRANT_COLOURS[(1 if x >= width // 2 else 0) + (2 if y >= height // 2 else 0)]

    return make_png(width, height, colour)


def pil_bytes(fmt: str, size=(10, 6), mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (10, 20, 30) if mode == "RGB" else 3).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "mime", "size"),
    [
        (make_png(7, 5), "image/png", (7, 5)),
        (make_jpeg(), "image/jpeg", (8, 8)),
        (make_gif(3, 9), "image/gif", (3, 9)),
        (pil_bytes("WEBP"), "image/webp", (10, 6)),
    ],
)
def test_inspect_image_gives_type_from_bytes_and_dimensions(data: bytes, mime: str, size) -> None:
    info = inspect_image(data, "x.bin")
    assert (info.mime, (info.width, info.height), info.size) == (mime, size, len(data))


def test_a_truncated_png_is_refused_even_though_its_header_is_fine() -> None:
    data = make_png(64, 64, lambda x, y: (x * 4, y * 4, (x * y) % 256))
    with pytest.raises(InvalidImageError, match="cannot be decoded"):
        inspect_image(data[: len(data) // 2], "https://cdn.example/cut.png")
    inspect_image(data, "whole")  # the whole file decodes


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html>403 Forbidden</html>", "not a supported image"),
        (b'{"error":"midjourney_task_not_found"}', "not a supported image"),
        (pil_bytes("BMP"), "BMP files are not supported"),
    ],
)
def test_things_that_are_not_images_are_refused_by_their_bytes(data: bytes, rule: str) -> None:
    with pytest.raises(InvalidImageError, match=rule) as info:
        inspect_image(data, "https://cdn.example/a.png")
    assert info.value.source == "https://cdn.example/a.png"


def test_a_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airflow_provider_apicore.imaging.MAX_PIXELS", 10 * 10)
    with pytest.raises(InvalidImageError, match="too many pixels"):
        inspect_image(make_png(40, 40), "bomb.png")
    assert MAX_PIXELS >= 8192 * 8192


def test_require_png_names_the_type_it_got() -> None:
    require_png(make_png(4, 4))
    with pytest.raises(InvalidImageError, match="must be a PNG image; this is image/jpeg"):
        require_png(make_jpeg(), "mask.jpg")


@pytest.mark.parametrize(("width", "height"), [(64, 48), (65, 49)])
def test_split_grid_cuts_four_pngs_in_midjourney_order(width: int, height: int) -> None:
    pieces = split_grid(grid_png(width, height))
    assert len(pieces) == 4
    sizes = []
    for piece, colour in zip(pieces, QUADRANT_COLOURS, strict=True):
        assert piece.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(piece)) as image:
            sizes.append(image.size)
            colours = image.convert("RGB").getcolors()
        assert colours == [(image.size[0] * image.size[1], colour)]  # one quadrant, nothing of the others
    # Together they cover the grid exactly.
    assert sizes[0][0] + sizes[1][0] == width and sizes[0][1] + sizes[2][1] == height


def test_split_grid_handles_palette_and_jpeg_grids() -> None:
    assert len(split_grid(pil_bytes("GIF", (20, 20), mode="P"))) == 4
    jpeg = pil_bytes("JPEG", (32, 32))
    assert all(p.startswith(b"\x89PNG") for p in split_grid(jpeg))


def test_split_grid_refuses_images_too_small_or_broken() -> None:
    with pytest.raises(InvalidImageError, match="too small"):
        split_grid(make_png(1, 5))
    with pytest.raises(InvalidImageError):
        split_grid(b"not an image at all")
