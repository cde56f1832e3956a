"""
Deterministic PNG images for the emulator's jobs, drawn with Pillow.

A job's picture is described by :class:`Panel` values: a digest fixes the shapes and a hue fixes
the colours, so the same job always gives the same pixels. A grid job (imagine, variation,
reroll, blend, zoom, pan, vary region) has four panels drawn side by side in a 2x2 grid without a
gap; an upscale is one of those panels drawn at the same size, so it equals the grid's quadrant.
Zoom and pan draw the parent panel inside a new one (shrunk, or shifted).
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import re
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw, UnidentifiedImageError

#: Side of a square panel in pixels; a 2x2 grid of them is twice that.
PANEL_SIDE = 256
#: Long side of a non-square panel.
PANEL_LONG_SIDE = 320
MIN_SIDE = 64
#: Uploaded images larger than this are not decoded (their colour then comes from the digest).
MAX_DECODED_PIXELS = 40_000_000
ASPECT = re.compile(r"(?:^|\s)--(?:ar|aspect)\s+(\d+)\s*:\s*(\d+)")
#: blend ``dimensions`` -> width:height.
BLEND_RATIOS = {"PORTRAIT": (2, 3), "SQUARE": (1, 1), "LANDSCAPE": (3, 2)}
#: pan direction -> where the old picture moves, as a fraction of the panel (x, y).
PAN_OFFSETS = {"left": (1 / 3, 0.0), "right": (-1 / 3, 0.0), "up": (0.0, 1 / 3), "down": (0.0, -1 / 3)}
SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "ring")


def derive(seed: bytes, *labels: object) -> bytes:
    """A 32-byte digest of ``seed`` and the labels (how every sub-picture gets its own digest)."""
    h = hashlib.sha256(seed)
    for label in labels:
        h.update(b"\x00" + str(label).encode("utf-8"))
    return h.digest()


@dataclass(frozen=True)
class Panel:
    """
    One picture.

    :param digest: 32 bytes fixing the shapes (kind, place, size, colour shift).
    :param hue: base hue in degrees (background and shape colours follow it).
    :param jitter: 32 bytes moving every shape a little (variations), or empty.
    :param amount: how far ``jitter`` moves the shapes, as a fraction of the panel.
    :param inner: a picture drawn inside this one (zoom, pan), or None.
    :param inner_scale: the inner picture's size as a fraction of this one.
    :param inner_offset: the inner picture's shift from the centre, as a fraction of the size.
    """

    digest: bytes
    hue: float
    jitter: bytes = b""
    amount: float = 0.0
    inner: Panel | None = None
    inner_scale: float = 1.0
    inner_offset: tuple[float, float] = (0.0, 0.0)


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue % 360) / 360, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def draw_panel(panel: Panel, width: int, height: int) -> Image.Image:
    """
    Draw one panel.

    :param panel: what to draw.
    :param width: pixels.
    :param height: pixels.
    """
    d = panel.digest
    image = Image.new("RGB", (width, height), _rgb(panel.hue, 0.55, 0.9))
    draw = ImageDraw.Draw(image)
    # A darker band across the lower part: a horizon whose height the digest fixes.
    horizon = int(height * (0.55 + (d[0] % 30) / 100))
    draw.rectangle((0, horizon, width, height), fill=_rgb(panel.hue + 20, 0.65, 0.55))
    side = min(width, height)
    for k in range(3 + d[1] % 3):
        kind = SHAPES[(d[2 + k] + k) % len(SHAPES)]
        colour = _rgb(panel.hue + 150 + d[8 + k] % 90, 0.75, 0.45 + (d[13 + k] % 50) / 100)
        cx = (0.15 + (d[18 + k] % 70) / 100) * width
        cy = (0.15 + (d[23 + k] % 70) / 100) * height
        if panel.jitter:
            cx += (panel.jitter[k] - 127.5) / 127.5 * panel.amount * width
            cy += (panel.jitter[k + 8] - 127.5) / 127.5 * panel.amount * height
        r = side * (0.08 + (d[28 + k % 4] % 18) / 100)
        box = (cx - r, cy - r, cx + r, cy + r)
        if kind == "ellipse":
            draw.ellipse(box, fill=colour)
        elif kind == "rectangle":
            draw.rectangle(box, fill=colour)
        elif kind == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
        elif kind == "diamond":
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=max(2, int(r / 3)))
    if panel.inner is not None:
        inner_w = max(1, round(width * panel.inner_scale))
        inner_h = max(1, round(height * panel.inner_scale))
        inner = draw_panel(panel.inner, inner_w, inner_h)
        x = round((width - inner_w) / 2 + panel.inner_offset[0] * width)
        y = round((height - inner_h) / 2 + panel.inner_offset[1] * height)
        image.paste(inner, (x, y))
    return image


def to_png(image: Image.Image) -> bytes:
    """PNG bytes of an image."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def grid_png(
    panels: list[Panel], size: tuple[int, int], keep: Panel | None = None, mask: bytes | None = None
) -> bytes:
    """
    A 2x2 grid (panel 1 top left, 2 top right, 3 bottom left, 4 bottom right).

    :param panels: four panels.
    :param size: one panel's (width, height).
    :param keep: Vary (Region): the parent panel whose pixels stay where ``mask`` is black.
    :param mask: Vary (Region): an image (any size, stretched to the panel); white marks what is
        redrawn, black what is kept. Ignored when Pillow cannot read it.
    """
    width, height = size
    region = _open(mask) if mask is not None and keep is not None else None
    kept = draw_panel(keep, width, height) if region is not None and keep is not None else None
    select = None
    if region is not None:  # a crisp edge between kept and redrawn parts
        select = region.convert("L").resize((width, height), Image.Resampling.NEAREST)
    grid = Image.new("RGB", (2 * width, 2 * height))
    for i, panel in enumerate(panels[:4]):
        drawn = draw_panel(panel, width, height)
        if kept is not None and select is not None:
            drawn = Image.composite(drawn, kept, select)
        grid.paste(drawn, ((i % 2) * width, (i // 2) * height))
    return to_png(grid)


def panel_png(panel: Panel, size: tuple[int, int], scale: int = 1) -> bytes:
    """
    One panel alone (an upscale); at ``scale`` 1 it equals the panel's quadrant of its grid.

    :param panel: the panel.
    :param size: the panel's (width, height) in its grid.
    :param scale: 2 for the upscale-again buttons.
    """
    return to_png(draw_panel(panel, size[0] * scale, size[1] * scale))


def panel_size(prompt: str | None = None, ratio: tuple[int, int] | None = None) -> tuple[int, int]:
    """
    Panel (width, height) for a prompt's ``--ar W:H`` (or an explicit ratio); square by default.

    :param prompt: the prompt, read for ``--ar`` / ``--aspect``.
    :param ratio: width:height, used when given.
    """
    if ratio is None:
        match = ASPECT.search(prompt or "")
        ratio = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
    w, h = ratio
    if w <= 0 or h <= 0 or w == h:
        return PANEL_SIDE, PANEL_SIDE
    short = max(MIN_SIDE, round(PANEL_LONG_SIDE * min(w, h) / max(w, h) / 8) * 8)
    return (PANEL_LONG_SIDE, short) if w > h else (short, PANEL_LONG_SIDE)


def grid_panels(digest: bytes, base_hue: float | None = None) -> list[Panel]:
    """
    Four clearly different panels for a new picture (imagine, reroll): a quarter turn of hue
    apart, each with its own shapes.

    :param digest: the job's digest.
    :param base_hue: hue of panel 1 in degrees; taken from the digest when None.
    """
    hue = base_hue if base_hue is not None else (digest[0] * 256 + digest[1]) % 360
    return [Panel(derive(digest, "panel", i), hue + i * 90 + digest[2 + i] % 20) for i in range(4)]


def variation_panels(parent: Panel, digest: bytes, strong: bool = True) -> list[Panel]:
    """
    Four variations of one panel: its shapes moved and its hue shifted a little (more when strong).

    :param parent: the panel varied.
    :param digest: the job's digest.
    :param strong: Vary (Strong) / V1-V4 when true, Vary (Subtle) otherwise.
    """
    spread, amount = (24.0, 0.12) if strong else (10.0, 0.05)
    return [
        replace(
            parent, hue=parent.hue + (i - 1.5) * spread, jitter=derive(digest, "jitter", i), amount=amount
        )
        for i in range(4)
    ]


def zoom_panels(parent: Panel, digest: bytes, factor: float) -> list[Panel]:
    """
    Four zoomed-out pictures: the parent shrunk by ``factor`` inside new surroundings.

    :param parent: the panel zoomed out from.
    :param digest: the job's digest.
    :param factor: 2 for Zoom Out 2x, 1.5 for 1.5x, any 1-2 value for Custom Zoom.
    """
    return [
        Panel(derive(digest, "zoom", i), parent.hue + 30 + i * 70, inner=parent, inner_scale=1 / factor)
        for i in range(4)
    ]


def pan_panels(parent: Panel, digest: bytes, direction: str) -> list[Panel]:
    """
    Four panned pictures: the parent moved a third of the way away from ``direction``, the
    uncovered part newly drawn.

    :param parent: the panel panned from.
    :param digest: the job's digest.
    :param direction: ``left``, ``right``, ``up`` or ``down``.
    """
    offset = PAN_OFFSETS[direction]
    return [
        Panel(derive(digest, "pan", i), parent.hue + 30 + i * 70, inner=parent, inner_offset=offset)
        for i in range(4)
    ]


def image_hue(data: bytes) -> float | None:
    """Hue in degrees of an image's mean colour, or None when Pillow cannot read it."""
    image = _open(data)
    if image is None:
        return None
    r, g, b = image.resize((1, 1)).getpixel((0, 0))[:3]
    return colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[0] * 360


def blend_panels(images: list[bytes], digest: bytes) -> list[Panel]:
    """
    Four panels mixing the inputs: panel i takes the colour of input ``i mod n``.

    :param images: the 2-5 input images.
    :param digest: the job's digest.
    """
    hues = [image_hue(data) for data in images]
    panels = []
    for i in range(4):
        hue = hues[i % len(hues)]
        if hue is None:
            hue = digest[i] * 360 / 256
        panels.append(Panel(derive(digest, "blend", i), hue + i * 45))
    return panels


def swap_face_png(source: bytes, target: bytes, digest: bytes) -> tuple[bytes, tuple[int, int]]:
    """
    The face-swap result: the target image (or a panel when it cannot be read) with an oval in
    the source image's mean colour where a face would be.

    :param source: the face image.
    :param target: the image the face is put on.
    :param digest: the job's digest.
    :return: PNG bytes and (width, height).
    """
    base = _open(target)
    if base is None:
        base = draw_panel(Panel(derive(digest, "target"), digest[0] * 360 / 256), PANEL_SIDE, PANEL_SIDE)
    face = _open(source)
    colour = face.resize((1, 1)).getpixel((0, 0))[:3] if face is not None else _rgb(digest[1], 0.4, 0.8)
    width, height = base.size
    draw = ImageDraw.Draw(base)
    rx, ry = width * 0.16, height * 0.22
    cx, cy = width / 2, height * 0.4
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour, outline=(20, 20, 20), width=2)
    return to_png(base), (width, height)


def _open(data: bytes) -> Image.Image | None:
    """An uploaded image as RGB at most about twice a panel's size, or None when unreadable or huge."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_DECODED_PIXELS:
                return None
            image.draft("RGB", (2 * PANEL_LONG_SIDE, 2 * PANEL_LONG_SIDE))  # JPEG: decode scaled down
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    rgb.thumbnail((2 * PANEL_LONG_SIDE, 2 * PANEL_LONG_SIDE))
    return rgb
