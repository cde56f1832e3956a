"""
Listing and planning a batch: which images the source names, and what the manifest already knows.

A rerun over the same folder lists it again but does not open files the manifest already finished when
their path, size and modification time are unchanged. A finished file whose size or modification time
changed is described again (its old result and SHA-256 no longer describe it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.exceptions import ApicoreInputError
from airflow_provider_apicore.images import scan_images
from airflow_provider_apicore.manifest import PENDING, READ_ERROR, REJECTED, Manifest


@dataclass(frozen=True)
class Listed:
    """
    One image the source names.

    :param image: its path as a string (the manifest key)
    :param problem: why it cannot be described (a list entry that is missing or not an image), or None
    :param size: size in bytes from the listing, if known
    :param mtime: modification time from the listing, if known
    """

    image: str
    problem: str | None = None
    size: int | None = None
    mtime: float | None = None


def list_source(
    source: str | os.PathLike | ObjectStoragePath | Sequence[Any],
    *,
    pattern: str,
    recursive: bool,
    max_image_bytes: int,
    manifest: Manifest | None = None,
) -> list[Listed]:
    """
    Every image the source names, skipping the header read of files ``manifest`` finished unchanged.

    :param source: a directory, or a list of image paths (each checked to exist)
    :param manifest: the manifest being resumed, if any
    """
    if isinstance(source, (list, tuple)):
        listed: list[Listed] = []
        for item in source:
            try:
                listed += [Listed(str(found.path)) for found in scan_images([item])]
            except ApicoreInputError as err:
                listed.append(Listed(str(item), str(err)))
        return listed

    def unchanged(path: str, size: int | None, mtime: float | None) -> bool:
        record = manifest.get(path) if manifest is not None else None
        return (
            record is not None
            and record.is_final
            and record.status != READ_ERROR
            and record.size == size
            and record.mtime == mtime
        )

    found = scan_images(
        source, pattern=pattern, recursive=recursive, max_bytes=max_image_bytes, unchanged=unchanged
    )
    return [Listed(str(item.path), None, item.size, item.mtime) for item in found]


def add_listed(manifest: Manifest, listed: Sequence[Listed], log: Any) -> int:
    """
    Put the listed images into the manifest: new ones ``pending``, finished ones whose file changed back
    to ``pending``.

    :return: how many finished images are described again because their file changed
    """
    changed = 0
    for item in listed:
        record = manifest.get(item.image)
        if record is None:
            record = manifest.add(item.image)
            if item.problem:
                manifest.touch(record, status=REJECTED, error=item.problem)
            elif item.size is not None:
                manifest.touch(record, size=item.size, mtime=item.mtime)
            continue
        if item.problem or item.size is None:
            continue
        if (
            record.is_final
            and record.size is not None
            and (record.size, record.mtime) != (item.size, item.mtime)
        ):
            changed += 1
            manifest.touch(
                record,
                status=PENDING,
                sha256=None,
                task_id=None,
                prompts=[],
                prompt=None,
                error=None,
                size=item.size,
                mtime=item.mtime,
            )
        elif record.status == PENDING and (record.size, record.mtime) != (item.size, item.mtime):
            manifest.touch(record, size=item.size, mtime=item.mtime)
    if changed:
        log.info(
            "%d finished images changed on disk since they were described: describing them again", changed
        )
    return changed
