"""Image directories for tests: many images with odd names, some identical, some not images at all."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.imagegen import gradient, make_gif, make_jpeg, make_png, make_webp

# Names that have broken tools before: spaces, unicode (composed and not), upper-case extensions.
_NAME_STYLES = (
    "img_{i:03d}.png",
    "Photo {i:03d}.PNG",
    "café_{i:03d}.jpg",
    "舞台 {i:03d}.JPEG",
    "snow-{i:03d}.gif",
    "ÜBER {i:03d}.webp",
    "e\u0301te\u0301 {i:03d}.png",
)
_DIRS = ("", "sub dir", "nested/deeper", "Ünïcode dir")


@dataclass
class ImageTree:
    """What was written, so tests can check a describe run against it."""

    root: Path
    images: list[Path] = field(default_factory=list)  # every file that is a describable image
    non_images: list[Path] = field(default_factory=list)  # files a listing must skip
    duplicates: list[Path] = field(default_factory=list)  # images whose bytes occur earlier too

    @property
    def unique(self) -> set[str]:
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in self.images}

    def under(self, sub: str) -> list[Path]:
        base = self.root / sub
        return [p for p in self.images if base in p.parents]


def _image_bytes(i: int) -> bytes:
    kind = i % 5
    if kind == 1:
        return make_jpeg(comment=f"image {i}")
    if kind == 2:
        return make_gif(4 + i % 7, 3 + i % 5, ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    if kind == 3:
        return make_webp(16 + i % 9, 12 + i % 11, extra=i.to_bytes(4, "big"))
    width, height = 8 + i % 13, 6 + (i * 7) % 17
    top = ((i * 29) % 256, (i * 71) % 256, (i * 113) % 256)
    bottom = ((i * 83) % 256, (i * 17) % 256, (i * 47) % 256)
    return make_png(width, height, gradient(width, height, top, bottom))


def make_image_tree(
    root: Path, count: int = 200, duplicates: int = 6, subset: str | None = None, subset_count: int = 0
) -> ImageTree:
    """
    Write ``count`` image files under ``root`` (``duplicates`` of them byte-copies of others), plus
    files a listing must skip: text, a text file named ``.png``, an empty ``.jpg``, a hidden image.

    :param subset: also put ``subset_count`` of the images (two of them duplicates, one of them a copy
        of an image outside it) into this subdirectory, for runs that describe only part of the tree
    """
    tree = ImageTree(root)
    written: list[bytes] = []
    plan: list[tuple[Path, bytes, bool]] = []
    distinct = count - duplicates
    for i in range(distinct):
        directory = root / _DIRS[i % len(_DIRS)]
        name = _NAME_STYLES[i % len(_NAME_STYLES)].format(i=i)
        data = _image_bytes(i)
        plan.append((directory / name, data, False))
        written.append(data)
    for k in range(duplicates):
        source = written[(k * 17) % len(written)]
        plan.append((root / _DIRS[(k + 1) % len(_DIRS)] / f"Copy of {k:02d}.IMG.png", source, True))
    if subset:
        # Move the last subset_count planned files into the subset directory, keeping their names.
        base = root / subset
        moved = []
        for index in range(len(plan) - subset_count, len(plan)):
            path, data, dup = plan[index]
            moved.append((base / path.name, data, dup))
        plan[len(plan) - subset_count :] = moved
        # One more identical pair inside the subset.
        path, data, _ = moved[0]
        plan[-1] = (base / f"twin of {path.stem}{path.suffix.upper()}", data, True)
    for path, data, dup in plan:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        tree.images.append(path)
        if dup:
            tree.duplicates.append(path)
    for path, data in (
        (root / "README notes.txt", b"not an image\n"),
        (root / "sub dir" / "fake.PNG", b"this text only pretends to be a PNG\n"),
        (root / "empty.jpg", b""),
        (root / "nested" / "data.bin", bytes(range(64))),
        (root / ".hidden.png", make_png(4, 4)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        tree.non_images.append(path)
    return tree
