"""
Sharded batches: one directory split into shards that run as mapped
:class:`~airflow_provider_apicore.operators.batch_describe.MJBatchDescribeOperator` tasks on any worker.

::

    specs = plan_shards(source, shards=8, manifest_prefix="s3://aws@bucket/manifests/run", account_limit=40)
    MJBatchDescribeOperator.partial(task_id="describe_shard", ...).expand_kwargs(specs)
    ...
    records = read_sharded_manifest("s3://aws@bucket/manifests/run")   # every part, merged

* **Listed once.** :func:`plan_shards` lists the source once (in one task) and hands each shard its
  own list of image paths, so the shards never list the directory again. By default the listing is
  one recursive listing of names and sizes (on S3 one request per 1,000 objects) that keeps files with
  an image extension (``.png .jpg .jpeg .gif .webp``, any case); the shard's batch operator checks
  each file's content when it loads it and records a non-image as ``rejected``. With
  ``check_content=True`` it uses :func:`~airflow_provider_apicore.images.list_images` instead, which
  reads the first bytes of every file (finds images by content whatever their name, at two more
  requests per file: on S3 minutes for thousands of files).
* **Stable.** An image's shard is a hash of its path *relative to the source*, modulo the number of
  shards: a folder that grows keeps every old image in the shard (and so in the manifest part) it
  was described in, and a rerun resumes each part where it stopped. Changing the number of shards
  moves images to other parts; keep it fixed for a directory that is described repeatedly.
* **One writer per part.** Shard ``k`` writes ``<manifest_prefix>/part-000k.jsonl`` and nothing else.
* **The account's concurrency, shared.** With ``account_limit`` each spec carries
  ``max_in_flight = account_limit // shards``, so all shards together never have more than
  ``account_limit`` jobs upstream, on however many workers they run.

Each spec is ``{"source": [paths...], "manifest_path": ".../part-0003.jsonl"[, "max_in_flight": n]}``:
about 60-100 bytes of XCom per image (2,000 images: ~150 KB), fine for the metadata database's XCom
table. Beyond ~100,000 images use a custom XCom backend on object storage, or one batch per subfolder.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterator
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.exceptions import ApicoreConfigError
from airflow_provider_apicore.images import DEFAULT_MAX_IMAGE_BYTES, list_images
from airflow_provider_apicore.manifest import (
    ManifestRecord,
    read_manifest,
    to_storage_path,
    write_manifest,
)

#: File name endings the quick listing keeps (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
#: Name of shard ``k``'s manifest part under the manifest prefix.
PART_NAME = "part-{index:04d}.jsonl"
_PART_RE = re.compile(r"^part-(\d{4,})\.jsonl$")


def shard_of(relative_path: str, shards: int) -> int:
    """
    The shard of an image: SHA-256 of its relative path (``/``-separated) modulo ``shards``.

    Independent of the other files in the folder, of listing order and of the machine.

    :param relative_path: the image's path relative to the source directory
    :param shards: number of shards (>= 1)
    """
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise ApicoreConfigError(f"shards must be a whole number >= 1, got {shards!r}")
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def shard_share(account_limit: int, shards: int) -> int:
    """
    Each shard's ``max_in_flight`` when ``shards`` shards share an account of ``account_limit`` jobs.

    :param account_limit: jobs the APICore account runs (or may have queued) at once
    :param shards: number of shards running at the same time
    :raises ApicoreConfigError: fewer account slots than shards (a shard needs at least one)
    """
    for name, value in (("account_limit", account_limit), ("shards", shards)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ApicoreConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    if account_limit < shards:
        raise ApicoreConfigError(
            f"account_limit ({account_limit}) is smaller than shards ({shards}): each shard needs at "
            "least one job slot; use fewer shards"
        )
    return account_limit // shards


def part_path(manifest_prefix: str | os.PathLike | ObjectStoragePath, index: int) -> str:
    """Where shard ``index`` writes its manifest part."""
    return str(to_storage_path(manifest_prefix) / PART_NAME.format(index=index))


def _relative(path: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path.rsplit("/", 1)[-1]


def _filesystem(path: ObjectStoragePath) -> Any:
    try:
        return path.fs
    except ValueError:  # schemes Airflow does not register (memory://) resolve through fsspec
        return path.__wrapped__.fs


def quick_list(
    source: str | os.PathLike | ObjectStoragePath,
    pattern: str = "*",
    recursive: bool = True,
    max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
) -> list[str]:
    """
    The image files under a directory from one recursive listing of names and sizes (no file read).

    Keeps files with an image extension that match ``pattern`` (case-insensitive, on the name, or on
    the relative path when it contains ``/``), skipping hidden files and directories, empty files and
    files over ``max_image_bytes``.

    :raises ApicoreConfigError: ``source`` is not a directory, or holds no such file
    :return: path strings (``str`` of the ObjectStoragePath, so they keep the connection id), sorted
    """
    root = to_storage_path(source)
    if not root.is_dir():
        raise ApicoreConfigError(f"source {root} is not a directory: shards split a directory")
    fs = _filesystem(root)
    base = root.path.rstrip("/")
    entries = fs.find(base, maxdepth=None if recursive else 1, detail=True)
    pat = pattern.lower().removeprefix("**/")
    found = []
    for full, info in entries.items():
        if info.get("type") not in (None, "file"):
            continue
        rel = full[len(base) :].lstrip("/") if full.startswith(base) else full.rsplit("/", 1)[-1]
        parts = rel.split("/")
        name = parts[-1]
        size = info.get("size")
        if any(part.startswith(".") for part in parts) or not name.lower().endswith(IMAGE_SUFFIXES):
            continue
        if size == 0 or (max_image_bytes is not None and size is not None and size > max_image_bytes):
            continue
        if not fnmatch.fnmatchcase((rel if "/" in pat else name).lower(), pat):
            continue
        found.append(str(root / rel))
    if not found:
        raise ApicoreConfigError(
            f"source {root} holds no image files (extensions {', '.join(IMAGE_SUFFIXES)}) matching "
            f"pattern {pattern!r}"
        )
    return sorted(found)


def plan_shards(
    source: str | os.PathLike | ObjectStoragePath,
    shards: int,
    manifest_prefix: str | os.PathLike | ObjectStoragePath,
    *,
    account_limit: int | None = None,
    pattern: str = "*",
    recursive: bool = True,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    keep_empty: bool = False,
    check_content: bool = False,
) -> list[dict[str, Any]]:
    """
    List ``source`` once and split its images into stable shards, one spec per shard.

    :param source: the image directory (local path, ``s3://conn@bucket/dir`` ... any ObjectStoragePath)
    :param shards: number of shards (mapped tasks)
    :param manifest_prefix: directory under which shard ``k`` writes ``part-000k.jsonl``
    :param account_limit: the APICore account's concurrency; when given, each spec also carries
        ``max_in_flight`` = :func:`shard_share`
    :param pattern: file-name pattern (as :func:`~airflow_provider_apicore.images.list_images`)
    :param recursive: descend into subdirectories
    :param max_image_bytes: larger files are skipped when listing
    :param keep_empty: also return specs of shards that got no image (default: left out, since the
        batch operator needs at least one image)
    :param check_content: list with ``list_images`` (reads every file's first bytes) instead of the
        quick listing by name and size (see the module docstring)
    :return: specs for ``MJBatchDescribeOperator.partial(...).expand_kwargs(specs)``, by shard index
    """
    share = shard_share(account_limit, shards) if account_limit is not None else None
    if account_limit is None:
        shard_of("", shards)  # validates shards
    root = str(to_storage_path(source))
    buckets: list[list[str]] = [[] for _ in range(shards)]
    if check_content:
        paths = [
            str(p)
            for p in list_images(source, pattern=pattern, recursive=recursive, max_bytes=max_image_bytes)
        ]
    else:
        paths = quick_list(source, pattern=pattern, recursive=recursive, max_image_bytes=max_image_bytes)
    for text in paths:
        buckets[shard_of(_relative(text, root), shards)].append(text)
    specs: list[dict[str, Any]] = []
    for index, paths in enumerate(buckets):
        if not paths and not keep_empty:
            continue
        spec: dict[str, Any] = {"source": paths, "manifest_path": part_path(manifest_prefix, index)}
        if share is not None:
            spec["max_in_flight"] = share
        specs.append(spec)
    return specs


def manifest_parts(manifest_prefix: str | os.PathLike | ObjectStoragePath) -> list[ObjectStoragePath]:
    """The manifest parts under ``manifest_prefix`` (``part-NNNN.jsonl``), by shard index."""
    prefix = to_storage_path(manifest_prefix)
    try:
        children = list(prefix.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    parts = [(int(m.group(1)), child) for child in children if (m := _PART_RE.match(child.name))]
    return [child for _, child in sorted(parts, key=lambda item: item[0])]


def iter_sharded_records(manifest_prefix: str | os.PathLike | ObjectStoragePath) -> Iterator[ManifestRecord]:
    """
    Every record of every part (snapshot plus any journal not yet folded in), one part at a time.

    Memory holds one part, not the whole directory's manifest.
    """
    for part in manifest_parts(manifest_prefix):
        yield from read_manifest(part)


def read_sharded_manifest(manifest_prefix: str | os.PathLike | ObjectStoragePath) -> list[ManifestRecord]:
    """The combined manifest of all shards, as a list (see :func:`iter_sharded_records`)."""
    return list(iter_sharded_records(manifest_prefix))


def merge_shards(
    manifest_prefix: str | os.PathLike | ObjectStoragePath,
    target: str | os.PathLike | ObjectStoragePath,
) -> dict[str, int]:
    """
    Write the combined manifest of all parts to ``target`` (one JSONL file, written atomically).

    :raises ApicoreConfigError: an image appears in two parts (the shards were planned differently:
        the number of shards changed between runs on the same prefix)
    :return: ``{"parts": ..., "records": ...}``
    """
    records: dict[str, ManifestRecord] = {}
    parts = manifest_parts(manifest_prefix)
    for part in parts:
        for record in read_manifest(part):
            if record.image in records:
                raise ApicoreConfigError(
                    f"image {record.image} is in two manifest parts under {manifest_prefix}: the number "
                    "of shards changed between runs on this prefix; keep it fixed or use a new prefix"
                )
            records[record.image] = record
    write_manifest(target, records.values())
    return {"parts": len(parts), "records": len(records)}
