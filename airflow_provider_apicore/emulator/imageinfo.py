"""Facts about an image read from its bytes alone: format, dimensions, colours."""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from dataclasses import dataclass
from itertools import accumulate

# Undoing the Average and Paeth PNG filters in pure Python costs about 0.3 us a byte: past this
# many bytes of raw scanlines only the top rows are read, which bounds one submit to ~0.3 s of CPU.
MAX_DECODED_BYTES = 1_000_000
# Pixels sampled per image for the colour statistics (plenty for a dominant colour).
MAX_SAMPLES = 4096

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ImageInfo:
    """
    What the emulator knows about a submitted image.

    :param format: ``png``, ``jpeg``, ``gif``, ``webp``, ``bmp`` or None when unrecognised.
    :param width: pixels, or None when the header could not be read.
    :param height: pixels, or None when the header could not be read.
    :param size: byte size.
    :param sha256: hex digest of the bytes.
    :param dominant: most frequent colour (PNG pixels) or one derived from the digest.
    :param average: mean colour (PNG pixels) or one derived from the digest.
    :param secondary: second most frequent colour, or one derived from the digest.
    :param colour_source: ``pixels`` when decoded from the image, ``digest`` otherwise.
    """

    format: str | None
    width: int | None
    height: int | None
    size: int
    sha256: str
    dominant: RGB
    average: RGB
    secondary: RGB
    colour_source: str


def analyze_image(data: bytes) -> ImageInfo:
    """
    Read format, dimensions and colours; never raises on malformed input.

    :param data: the image bytes.
    """
    digest = hashlib.sha256(data).digest()
    fmt, width, height = read_dimensions(data)
    colours = None
    if fmt == "png" and width is not None:
        try:
            colours = png_colours(data)
        except (ValueError, zlib.error, struct.error, IndexError):
            colours = None
    source = "pixels"
    if colours is None:
        source = "digest"
        colours = (tuple(digest[0:3]), tuple(digest[3:6]), tuple(digest[6:9]))
    dominant, average, secondary = colours
    return ImageInfo(fmt, width, height, len(data), digest.hex(), dominant, average, secondary, source)


def read_dimensions(data: bytes) -> tuple[str | None, int | None, int | None]:
    """
    Format and pixel size from the header.

    :param data: the image bytes.
    :return: ``(format, width, height)``; width and height are None when unreadable.
    """
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            if data[12:16] != b"IHDR":
                return "png", None, None
            width, height = struct.unpack(">II", data[16:24])
            return "png", width, height
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", data[6:10])
            return "gif", width, height
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            width, height = _webp_dimensions(data)
            return "webp", width, height
        if data[:3] == b"\xff\xd8\xff":
            width, height = _jpeg_dimensions(data)
            return "jpeg", width, height
        if data[:2] == b"BM":
            width, height = struct.unpack("<ii", data[18:26])
            return "bmp", width, abs(height)
    except (struct.error, IndexError):
        pass
    return None, None, None


def _webp_dimensions(data: bytes) -> tuple[int | None, int | None]:
    chunk, body = data[12:16], data[20:]
    if chunk == b"VP8 ":
        # Lossy: 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height.
        if body[3:6] != b"\x9d\x01\x2a":
            return None, None
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        if body[0] != 0x2F:
            return None, None
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1
    return None, None


# SOF markers carry the frame size; C4 (DHT), C8 (JPG extension) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_dimensions(data: bytes) -> tuple[int | None, int | None]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None, None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None, None
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None, None


def png_colours(data: bytes) -> tuple[RGB, RGB, RGB] | None:
    """
    Dominant, average and secondary colour of an 8-bit RGB/RGBA non-interlaced PNG.

    :param data: PNG bytes.
    :return: the three colours, or None for other PNG kinds (palette, grey, 16-bit, interlaced)
        and for images whose every pixel is fully transparent.
    """
    width, height = struct.unpack(">II", data[16:24])
    bit_depth, colour_type, _compression, _filter, interlace = data[24:29]
    if bit_depth != 8 or colour_type not in (2, 6) or interlace != 0 or width == 0 or height == 0:
        return None
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    rows = min(height, max(1, MAX_DECODED_BYTES // stride))
    step = max(1, math.ceil(((width * rows) / MAX_SAMPLES) ** 0.5))

    decompressor = zlib.decompressobj()
    raw = bytearray()
    needed = rows * (stride + 1)
    for chunk_data in _idat_chunks(data):
        raw += decompressor.decompress(chunk_data, needed - len(raw))
        if len(raw) >= needed:
            break
    if len(raw) < needed:
        raise ValueError("truncated PNG image data")

    bins: dict[int, list[int]] = {}
    total = [0, 0, 0, 0]
    previous = bytearray(stride)
    for y in range(rows):
        start = y * (stride + 1)
        line = _unfilter(raw[start], raw[start + 1 : start + 1 + stride], previous, bpp)
        previous = line
        if y % step:
            continue
        for x in range(0, stride, bpp * step):
            if bpp == 4 and line[x + 3] == 0:
                continue
            r, g, b = line[x], line[x + 1], line[x + 2]
            total[0] += r
            total[1] += g
            total[2] += b
            total[3] += 1
            key = (r >> 5) << 6 | (g >> 5) << 3 | (b >> 5)
            acc = bins.get(key)
            if acc is None:
                bins[key] = [r, g, b, 1]
            else:
                acc[0] += r
                acc[1] += g
                acc[2] += b
                acc[3] += 1
    count = total[3]
    if count == 0:
        return None
    average = (total[0] // count, total[1] // count, total[2] // count)
    ranked = sorted(bins.items(), key=lambda item: (-item[1][3], item[0]))
    dominant = _bin_mean(ranked[0][1])
    secondary = _bin_mean(ranked[1][1]) if len(ranked) > 1 else dominant
    return dominant, average, secondary


def _bin_mean(acc: list[int]) -> RGB:
    return acc[0] // acc[3], acc[1] // acc[3], acc[2] // acc[3]


def _idat_chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            yield data[pos + 8 : pos + 8 + length]
        elif kind == b"IEND":
            return
        pos += 12 + length


def _unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> bytearray:
    if kind == 0:
        return line
    n = len(line)
    if kind == 2:
        # Bytewise addition mod 256 on the whole row at once (SWAR on Python integers): add the
        # low 7 bits of every byte, then put back the top bits with XOR so no carry crosses bytes.
        a, b = int.from_bytes(line, "big"), int.from_bytes(previous, "big")
        low, high = int.from_bytes(b"\x7f" * n, "big"), int.from_bytes(b"\x80" * n, "big")
        total = ((a & low) + (b & low)) ^ ((a ^ b) & high)
        return bytearray(total.to_bytes(n, "big"))
    out = bytearray(line)
    if kind == 1:
        # Each channel is a running sum of its own bytes.
        for channel in range(bpp):
            out[channel::bpp] = bytes(v & 0xFF for v in accumulate(line[channel::bpp]))
    elif kind == 3:
        for i in range(n):
            left = out[i - bpp] if i >= bpp else 0
            out[i] = (out[i] + ((left + previous[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(n):
            a = out[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            if pa <= pb and pa <= pc:
                predictor = a
            elif pb <= pc:
                predictor = b
            else:
                predictor = c
            out[i] = (out[i] + predictor) & 0xFF
    else:
        raise ValueError(f"unknown PNG filter type {kind}")
    return out
