"""
What a deferring batch leaves for its resume, so that the resume does not read the whole manifest.

At each deferral the batch writes one small checkpoint next to the manifest's journal: the records of
what is in flight or queued in front, the status counts, the journal's size, the queue's cursor into
its plan file, and the loop's own state (images in doubt or waiting, the rate window, and an 8-byte
prefix of each SHA-256 already sent, for finding identical images). The resume names the checkpoint it
continues from (the deferral's ``kwargs``), reads it and the next lines of the plan, and nothing else
unless it must: see :meth:`~airflow_provider_apicore.manifest.Manifest.resume`.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.manifest import (
    CHECKPOINT_PREFIX,
    Manifest,
    _delete,
    _read_bytes,
    child,
    write_atomic,
)

if TYPE_CHECKING:
    from airflow_provider_apicore.batch.loop import BatchLoop

log = logging.getLogger(__name__)

VERSION = 1


def save_checkpoint(loop: BatchLoop) -> str:
    """Write the state a resume continues from (after the manifest's last commit); return its name."""
    manifest = loop.manifest
    manifest.commit()
    queue = loop.queue.checkpoint_state(manifest)
    state = {
        "version": VERSION,
        "queue": queue,
        "loop": loop.checkpoint_state(),
        "manifest": manifest.checkpoint_state(loop.referenced_keys()),
    }
    data = json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if manifest.before_write is not None:
        manifest.before_write()
    name = f"{CHECKPOINT_PREFIX}{uuid.uuid4().hex[:12]}.json"
    write_atomic(child(manifest.journal_dir, name), data)
    manifest.writes += 1
    manifest.bytes_written += len(data)
    return name


def load_checkpoint(path: Any, name: str, flush_interval: float) -> tuple[Manifest, dict[str, Any]] | None:
    """
    The manifest taken over from checkpoint ``name`` and the batch's state, or None when the checkpoint
    is missing or unreadable (the caller then reads the whole manifest).
    """
    manifest = Manifest(path, flush_interval, freeze_finished=True)
    data = _read_bytes(child(manifest.journal_dir, name))
    if data is None:
        log.warning("No checkpoint %s next to %s: reading the whole manifest instead", name, manifest.path)
        return None
    try:
        state = json.loads(data)
        if state.get("version") != VERSION:
            raise ValueError(f"version {state.get('version')!r}, expected {VERSION}")
        resumed = Manifest.resume(path, state["manifest"], flush_interval)
    except (ValueError, KeyError, TypeError) as err:
        log.warning(
            "Checkpoint %s of %s is unusable (%s): reading the whole manifest", name, manifest.path, err
        )
        return None
    return resumed, state


def remove_checkpoint(manifest: Manifest, name: str | None) -> None:
    """Delete a checkpoint once a newer one is written (or the batch is finished)."""
    if name:
        _delete(child(manifest.journal_dir, name))


def encode_prefixes(prefixes: set[int]) -> str:
    """8-byte SHA-256 prefixes, sorted, as base64 (8 bytes an image, where hex would take 16 or 64)."""
    return base64.b64encode(b"".join(p.to_bytes(8, "big") for p in sorted(prefixes))).decode("ascii")


def decode_prefixes(text: str) -> set[int]:
    raw = base64.b64decode(text or "")
    return {int.from_bytes(raw[i : i + 8], "big") for i in range(0, len(raw) - 7, 8)}


def sha_prefix(sha256: str) -> int | None:
    """The first 8 bytes of a hex SHA-256 as an int (None for a value that is not hex)."""
    try:
        return int(sha256[:16], 16)
    except (TypeError, ValueError):
        return None
