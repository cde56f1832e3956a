"""DESCRIBE results: four keycap-numbered prompts, fixed by the image bytes, matching the image."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys

import pytest

from airflow_provider_apicore.emulator.describe import aspect_ratio, describe_text
from airflow_provider_apicore.emulator.imageinfo import analyze_image, read_dimensions

PROMPT_BLOCK = re.compile(
    r"^([1-4])\ufe0f\u20e3 (an? [a-z ]+ in [a-z ]+ tones, [a-z0-9 ]+) --ar (\d+):(\d+)$"
)


def parse_prompts(text: str) -> list[tuple[int, str, str]]:
    """``[(number, prompt, ar)]`` from a describe answer; fails on any deviation from the format."""
    blocks = text.split("\n\n")
    parsed = []
    for block in blocks:
        match = PROMPT_BLOCK.fullmatch(block)
        assert match, f"block does not follow the describe format: {block!r}"
        parsed.append((int(match[1]), match[2], f"{match[3]}:{match[4]}"))
    return parsed


def _described(api, image: bytes) -> str:
    return api.wait_status(api.submit_ok(image), {"SUCCESS"})["prompt"]


@pytest.mark.parametrize(
    ("size", "ar"),
    [((64, 48), "4:3"), ((45, 80), "9:16"), ((30, 30), "1:1"), ((96, 32), "3:1")],
)
def test_prompts_are_four_numbered_blocks_with_the_image_aspect_ratio(api, png, size, ar):
    prompts = parse_prompts(_described(api, png(*size)))
    assert [number for number, _, _ in prompts] == [1, 2, 3, 4]
    assert {prompt_ar for _, _, prompt_ar in prompts} == {ar}
    assert len({prompt for _, prompt, _ in prompts}) == 4


def test_same_bytes_give_the_same_prompts_and_different_images_differ(api, png):
    image = png(40, 30, (30, 90, 200))
    first, second = _described(api, image), _described(api, image)
    assert first == second
    colours = ((200, 30, 30), (30, 200, 30), (250, 250, 250))
    others = {_described(api, png(40, 30, colour)) for colour in colours}
    assert len(others | {first}) == 4


def test_prompts_do_not_depend_on_the_process(api, png, tmp_path):
    image = png(33, 21, lambda x, y: (x * 7 % 256, y * 11 % 256, 90))
    served = _described(api, image)
    path = tmp_path / "image.png"
    path.write_bytes(image)
    code = (
        "import sys, json; from pathlib import Path;"
        "from airflow_provider_apicore.emulator.describe import describe_text;"
        "from airflow_provider_apicore.emulator.imageinfo import analyze_image;"
        "print(json.dumps(describe_text(analyze_image(Path(sys.argv[1]).read_bytes()))))"
    )
    # Another interpreter with a fixed, different string-hash seed must still agree.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    command = [sys.executable, "-c", code, str(path)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == served


def test_colours_come_from_the_pixels_of_rgb_and_rgba_pngs(png):
    # Three quarters forest green, one quarter white: dominant green, secondary white.
    def pixel(x: int, y: int) -> tuple[int, int, int, int]:
        return (250, 250, 250, 255) if x < 5 else (34, 100, 34, 255)

    for colour_type in (2, 6):
        info = analyze_image(png(20, 10, pixel, colour_type=colour_type))
        assert info.colour_source == "pixels"
        assert info.dominant == (34, 100, 34)
        assert info.secondary == (250, 250, 250)
        red_blue, green = (250 * 5 + 34 * 15) // 20, (250 * 5 + 100 * 15) // 20
        assert info.average == (red_blue, green, red_blue)
        text = describe_text(info)
        assert "forest green tones" in text and "forest green and white tones" in text


@pytest.mark.parametrize("filter_type", [1, 2, 3, 4])
@pytest.mark.parametrize("colour_type", [2, 6])
def test_every_png_scanline_filter_decodes_to_the_same_colours(png, filter_type, colour_type):
    def pixel(x: int, y: int) -> tuple[int, int, int, int]:
        return (x * 37 % 256, y * 53 % 256, (x * y) % 256, 255 - x)

    reference = analyze_image(png(23, 17, pixel, colour_type=colour_type))
    filtered = analyze_image(png(23, 17, pixel, colour_type=colour_type, filter_type=filter_type))
    assert reference.colour_source == filtered.colour_source == "pixels"
    assert (filtered.dominant, filtered.average, filtered.secondary) == (
        reference.dominant,
        reference.average,
        reference.secondary,
    )


def test_fully_transparent_pixels_are_ignored(png):
    def pixel(x: int, y: int) -> tuple[int, int, int, int]:
        return (0, 0, 0, 0) if y < 8 else (220, 30, 30, 255)

    info = analyze_image(png(10, 10, pixel, colour_type=6))
    assert info.dominant == (220, 30, 30)


def test_other_png_kinds_fall_back_to_digest_colours(png):
    for kwargs in ({"colour_type": 3}, {"colour_type": 0}, {"interlace": 1}):
        info = analyze_image(png(8, 8, (9, 9, 9), **kwargs))
        assert info.colour_source == "digest", kwargs
        assert (info.width, info.height) == (8, 8)


def test_image_headers_give_format_and_dimensions():
    gif = b"GIF89a" + struct.pack("<HH", 321, 123) + b"\x00" * 10
    vp8 = (
        b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00"
        + b"\x00\x00\x00\x9d\x01\x2a"
        + struct.pack("<HH", 640, 480)
    )
    vp8l_bits = (300 - 1) | ((200 - 1) << 14)
    vp8l = b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00\x00\x00\x2f" + vp8l_bits.to_bytes(4, "little")
    vp8x = b"RIFF\x00\x00\x00\x00WEBPVP8X\x00\x00\x00\x00" + b"\x00" * 4 + (1919).to_bytes(3, "little")
    vp8x += (1079).to_bytes(3, "little")
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
    sof2 = b"\xff\xc2" + struct.pack(">HBHH", 17, 8, 600, 800) + b"\x00" * 10
    jpeg = b"\xff\xd8" + app0 + sof2 + b"\xff\xd9"
    bmp = b"BM" + b"\x00" * 16 + struct.pack("<ii", 50, -20) + b"\x00" * 30
    assert read_dimensions(gif) == ("gif", 321, 123)
    assert read_dimensions(vp8) == ("webp", 640, 480)
    assert read_dimensions(vp8l) == ("webp", 300, 200)
    assert read_dimensions(vp8x) == ("webp", 1920, 1080)
    assert read_dimensions(jpeg) == ("jpeg", 800, 600)
    assert read_dimensions(bmp) == ("bmp", 50, 20)
    assert read_dimensions(b"hello world") == (None, None, None)
    assert read_dimensions(b"\xff\xd8\xff") == ("jpeg", None, None)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1920, 1080, "16:9"),
        (1080, 1920, "9:16"),
        (1023, 767, "4:3"),
        (5000, 10, "8:1"),
        (10, 5000, "1:8"),
        (None, 100, "1:1"),
        (7, 5, "7:5"),
    ],
)
def test_aspect_ratio_is_reduced_and_clamped(width, height, expected):
    assert aspect_ratio(width, height) == expected
