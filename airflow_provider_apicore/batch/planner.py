"""
Listing and planning a batch: which images the source names, and what the manifest already knows.

A rerun over the same folder lists it again but does not open files the manifest already finished when
their path, size and modification time are unchanged. A finished file whose size or modification time
changed is described again (its old result and SHA-256 no longer describe it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.exceptions import ApicoreInputError
from airflow_provider_apicore.images import scan_image_files, scan_images
from airflow_provider_apicore.manifest import PENDING, READ_ERROR, REJECTED, Manifest


class Listed(NamedTuple):
    """
    One image the source names (a plain tuple: a listing of 100,000 images holds no object per image
    beyond it).

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

    found = scan_image_files(
        source, pattern=pattern, recursive=recursive, max_bytes=max_image_bytes, unchanged=unchanged
    )
    return [Listed(path, None, size, mtime) for path, size, mtime in found]


#: Records :func:`add_listed` puts into the manifest between two journal commits: the new records of a
#: large listing leave memory in steps instead of all waiting for one commit.
ADD_COMMIT_EVERY = 5000


def add_listed(manifest: Manifest, listed: Iterable[Listed], log: Any) -> int:
    """
    Put the listed images into the manifest: new ones ``pending``, finished ones whose file changed back
    to ``pending``.

    :return: how many finished images are described again because their file changed
    """
    changed = 0
    for item in listed:
        if manifest.uncommitted() >= ADD_COMMIT_EVERY:
            manifest.commit()
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


# ------------------------------------------------------------------------------ settings fingerprint
#: Written next to the manifest: the settings its results were made with.
SETTINGS_SUFFIX = ".settings.json"
#: Outcomes a changed setting makes stale: they would be different now (refusals are not redone).
_RESULT_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCEL", "timeout", "not_found"})


def settings_fingerprint(action: str, schema_name: str, **settings: Any) -> dict[str, Any]:
    """
    The settings that change a result (the action, its payload schema, e.g. ``bot_type``), and their
    hash: a manifest made with other settings must not silently lend its results to this run.
    """
    import hashlib
    import json

    from airflow_provider_apicore.schemas import load_schema

    schema = hashlib.sha256(json.dumps(load_schema(schema_name), sort_keys=True).encode()).hexdigest()[:12]
    described = {"action": action, "schema": f"{schema_name}@{schema}", **settings}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"fingerprint": digest, **described}


def apply_settings(manifest: Manifest, settings: dict[str, Any], log: Any) -> int:
    """
    Compare the settings the manifest's results were made with (``<manifest>.settings.json``) with this
    run's: when they differ, every result they made goes back to ``pending`` and is described again.
    Then record this run's settings.

    :return: how many results were made stale
    """
    import json

    path = manifest.path.parent / (manifest.path.name + SETTINGS_SUFFIX)
    try:
        stored = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        stored = None
    stale = 0
    if stored is not None and stored.get("fingerprint") != settings["fingerprint"]:
        for record in list(manifest):
            if record.status in _RESULT_STATUSES:
                manifest.touch(record, status=PENDING, task_id=None, prompts=[], prompt=None, error=None)
                stale += 1
        changed = {
            k: (stored.get(k), v) for k, v in settings.items() if k != "fingerprint" and stored.get(k) != v
        }
        log.warning(
            "The manifest's results were made with other settings (%s): describing %d images again",
            ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()) or "unknown",
            stale,
        )
    if stored != settings:
        path.write_text(json.dumps(settings, sort_keys=True))
    return stale
