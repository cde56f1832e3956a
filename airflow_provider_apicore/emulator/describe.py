"""The DESCRIBE answer: four prompts derived deterministically from the image bytes."""

from __future__ import annotations

from fractions import Fraction
from math import gcd

from airflow_provider_apicore.emulator.imageinfo import RGB, ImageInfo

KEYCAP = "\ufe0f\u20e3"
# Midjourney accepts extreme ratios, but describe answers stay within a sensible range.
MAX_ASPECT = 8
# Reduced terms larger than this read badly (1023:767): approximate with small terms instead.
MAX_ASPECT_TERM = 32

COLOUR_NAMES: tuple[tuple[str, RGB], ...] = (
    ("black", (10, 10, 10)),
    ("charcoal", (54, 69, 79)),
    ("slate grey", (112, 128, 144)),
    ("silver grey", (192, 192, 192)),
    ("white", (250, 250, 250)),
    ("ivory", (255, 250, 225)),
    ("beige", (222, 205, 170)),
    ("sand", (194, 178, 128)),
    ("brown", (120, 72, 36)),
    ("rust", (183, 65, 14)),
    ("crimson", (160, 20, 40)),
    ("red", (220, 30, 30)),
    ("coral", (255, 127, 80)),
    ("orange", (255, 140, 0)),
    ("amber", (255, 191, 0)),
    ("golden yellow", (255, 215, 0)),
    ("lemon yellow", (250, 245, 100)),
    ("olive", (128, 128, 0)),
    ("lime green", (120, 200, 60)),
    ("forest green", (34, 100, 34)),
    ("emerald", (0, 155, 119)),
    ("teal", (0, 128, 128)),
    ("turquoise", (64, 224, 208)),
    ("sky blue", (135, 206, 235)),
    ("cobalt blue", (0, 71, 171)),
    ("navy", (20, 30, 90)),
    ("indigo", (75, 0, 130)),
    ("violet", (143, 0, 255)),
    ("lavender", (181, 160, 230)),
    ("magenta", (200, 0, 160)),
    ("pink", (255, 170, 200)),
    ("rose", (230, 90, 120)),
)

ADJECTIVES = {
    "dark": ("moody", "shadowy", "nocturnal", "mysterious", "brooding", "dim"),
    "light": ("airy", "luminous", "pale", "sunlit", "ethereal", "delicate"),
    "vivid": ("vibrant", "bold", "radiant", "striking", "energetic", "lush"),
    "muted": ("muted", "quiet", "soft", "understated", "dusty", "calm"),
}
SUBJECTS = {
    "landscape": ("landscape", "cityscape", "seascape", "mountain valley", "coastline", "city skyline"),
    "portrait": ("portrait", "standing figure", "tall tower", "doorway", "waterfall", "lighthouse"),
    "square": ("still life", "geometric pattern", "abstract composition", "garden", "mosaic", "emblem"),
}
STYLES = (
    "watercolor painting",
    "digital illustration",
    "oil on canvas",
    "35mm film photograph",
    "flat vector art",
    "ink and wash drawing",
    "isometric 3d render",
    "pastel sketch",
    "studio photography",
    "art nouveau poster",
    "minimalist graphic design",
    "impressionist painting",
)


def keycap(number: int) -> str:
    """``1`` -> ``1️⃣`` (digit, U+FE0F, U+20E3)."""
    return f"{number}{KEYCAP}"


def aspect_ratio(width: int | None, height: int | None) -> str:
    """
    The ``--ar`` value for an image: ``W:H`` reduced by their gcd, approximated with small terms
    when the reduced ones are large, and clamped to 1:8 .. 8:1.

    :param width: pixels (None or 0 when unknown gives ``1:1``).
    :param height: pixels (None or 0 when unknown gives ``1:1``).
    """
    if not width or not height:
        return "1:1"
    ratio = Fraction(width, height)
    ratio = min(max(ratio, Fraction(1, MAX_ASPECT)), Fraction(MAX_ASPECT))
    if max(ratio.numerator, ratio.denominator) > MAX_ASPECT_TERM:
        # Approximate the long-over-short ratio so the short side gets the small term.
        wide = ratio >= 1
        long_over_short = (ratio if wide else 1 / ratio).limit_denominator(16)
        ratio = long_over_short if wide else 1 / long_over_short
    g = gcd(ratio.numerator, ratio.denominator)
    return f"{ratio.numerator // g}:{ratio.denominator // g}"


def colour_name(rgb: RGB) -> str:
    """The nearest named colour (perceptually weighted RGB distance)."""
    r, g, b = rgb

    def distance(item: tuple[str, RGB]) -> float:
        nr, ng, nb = item[1]
        mean_red = (r + nr) / 2
        dr, dg, db = r - nr, g - ng, b - nb
        return (2 + mean_red / 256) * dr * dr + 4 * dg * dg + (2 + (255 - mean_red) / 256) * db * db

    return min(COLOUR_NAMES, key=distance)[0]


def _tone(rgb: RGB) -> str:
    high, low = max(rgb), min(rgb)
    lightness = (high + low) / 2
    saturation = 0 if high == low else (high - low) / (255 - abs(high + low - 255))
    if lightness < 70:
        return "dark"
    if lightness > 190:
        return "light"
    return "vivid" if saturation > 0.45 else "muted"


def _orientation(info: ImageInfo) -> str:
    if not info.width or not info.height:
        return "square"
    if info.width * 5 > info.height * 6:
        return "landscape"
    if info.height * 5 > info.width * 6:
        return "portrait"
    return "square"


def describe_prompts(info: ImageInfo) -> list[str]:
    """
    Four distinct prompts in Midjourney's describe style, fixed by the image bytes.

    :param info: the analysed image.
    """
    digest = bytes.fromhex(info.sha256)
    ar = aspect_ratio(info.width, info.height)
    subjects = SUBJECTS[_orientation(info)]
    dominant, average, secondary = (colour_name(c) for c in (info.dominant, info.average, info.secondary))
    pair = f"{dominant} and {secondary}" if secondary != dominant else f"monochrome {dominant}"
    colours = (dominant, average, pair, secondary)
    tones = (_tone(info.dominant), _tone(info.average), _tone(info.dominant), _tone(info.secondary))
    # Four distinct styles: a permutation of the style list picked by the digest.
    styles = list(STYLES)
    chosen = []
    for i in range(4):
        chosen.append(styles.pop(digest[10 + i] % len(styles)))
    prompts = []
    for i in range(4):
        adjectives = ADJECTIVES[tones[i]]
        adjective = adjectives[digest[14 + i] % len(adjectives)]
        subject = subjects[digest[18 + i] % len(subjects)]
        article = "an" if adjective[0] in "aeiou" else "a"
        prompts.append(f"{article} {adjective} {subject} in {colours[i]} tones, {chosen[i]} --ar {ar}")
    return prompts


def describe_text(info: ImageInfo) -> str:
    """The ``prompt`` field: the four prompts numbered with keycap digits, blank-line separated."""
    return "\n\n".join(f"{keycap(i)} {prompt}" for i, prompt in enumerate(describe_prompts(info), 1))
