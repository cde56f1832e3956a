"""
Image bytes for tests, written with the standard library only (zlib + struct).

PNG, GIF and BMP are complete, decodable images of any size. JPEG is a real 8x8 baseline image made
once with Pillow and stored below; a comment segment varies its bytes (and so its SHA-256). WEBP is
header-valid (RIFF/WEBP/VP8L with the requested size) but its pixel data is not decodable, which is
all the provider looks at.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable

RGB = tuple[int, int, int]
Pattern = Callable[[int, int], RGB]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# An 8x8 grey baseline JPEG (JFIF, quality 50), 331 bytes.
_TINY_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1R"
    "V19iZ2hnPk1xeXBkeFxlZ2P/wAALCAAIAAgBAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgED"
    "AwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RF"
    "RkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJ"
    "ytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/ACv/2Q=="
)


def _pixel_source(color: RGB | Pattern) -> Pattern:
    return color if callable(color) else (lambda x, y: color)


def gradient(width: int, height: int, top: RGB = (255, 140, 40), bottom: RGB = (40, 60, 160)) -> Pattern:
    """A vertical gradient pattern for :func:`make_png`."""

    def pixel(x: int, y: int) -> RGB:
        t = y / max(height - 1, 1)
        return tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))  # type: ignore[return-value]

    return pixel


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def make_png(width: int = 4, height: int = 4, color: RGB | Pattern = (200, 40, 40)) -> bytes:
    """
    An RGB PNG of one colour, or of ``color(x, y)`` when a function is given.

    :param width: pixels
    :param height: pixels
    :param color: an (r, g, b) tuple or a function of (x, y) returning one
    """
    pixel = _pixel_source(color)
    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def make_gif(width: int = 4, height: int = 4, color: RGB = (40, 160, 60)) -> bytes:
    """
    A GIF89a of one colour.

    The LZW stream sends a clear code every two pixels so every code stays 3 bits wide: larger than a
    real encoder's output, but valid and simple.
    """
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # 2-entry global colour table
    palette = bytes(color) + b"\x00\x00\x00"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    clear, end = 4, 5
    codes: list[int] = []
    for i in range(width * height):
        if i % 2 == 0:
            codes.append(clear)
        codes.append(0)
    codes.append(end)
    bits = 0
    nbits = 0
    packed = bytearray()
    for code in codes:
        bits |= code << nbits
        nbits += 3
        while nbits >= 8:
            packed.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        packed.append(bits & 0xFF)
    blocks = b"".join(
        bytes([len(packed[i : i + 255])]) + bytes(packed[i : i + 255]) for i in range(0, len(packed), 255)
    )
    return header + palette + descriptor + b"\x02" + blocks + b"\x00" + b"\x3b"


def make_jpeg(comment: str | None = None) -> bytes:
    """
    A real 8x8 baseline JPEG; ``comment`` adds a COM segment so tests can get different bytes.

    :param comment: text of the comment segment (changes the bytes and the SHA-256, not the picture)
    """
    if comment is None:
        return _TINY_JPEG
    text = comment.encode("utf-8")
    segment = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
    return _TINY_JPEG[:2] + segment + _TINY_JPEG[2:]


def make_webp(width: int = 4, height: int = 4, extra: bytes = b"") -> bytes:
    """
    Header-valid WEBP bytes: RIFF/WEBP container with a VP8L chunk announcing ``width`` x ``height``.

    The pixel data is not decodable; ``extra`` is appended inside the chunk to vary the bytes.
    """
    bitstream_header = (width - 1) | ((height - 1) << 14)  # no alpha, version 0
    chunk_data = b"\x2f" + struct.pack("<I", bitstream_header) + b"\x00" * 8 + extra
    if len(chunk_data) % 2:
        chunk_data += b"\x00"
    chunk = b"VP8L" + struct.pack("<I", len(chunk_data)) + chunk_data
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def make_bmp(width: int = 4, height: int = 4, color: RGB = (20, 20, 220)) -> bytes:
    """A 24-bit BMP of one colour (an image type DESCRIBE does not accept)."""
    row = bytes((color[2], color[1], color[0])) * width
    row += b"\x00" * (-len(row) % 4)
    pixels = row * height
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + pixels
