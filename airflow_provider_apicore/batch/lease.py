"""
One writer per manifest: a lease object next to the manifest, created with a conditional write.

The lease lives at ``<manifest>.lease`` and holds the **fencing token** of the try that writes the
manifest: ``dag_id/run_id/task_id/map_index`` (the task instance) and its ``try_number``.

* **Acquire.** The lease is created only if it does not exist: ``O_CREAT | O_EXCL`` locally; on S3 a PUT
  with ``If-None-Match: *`` (fsspec's ``pipe_file(..., mode="create")``, which s3fs maps to that
  header). Exactly one of two concurrent writers wins; the other reads the holder and fails fast with
  :class:`~airflow_provider_apicore.batch.errors.ManifestLeaseError` naming it.
* **Take over.** The same task instance may take a lease held by itself: the same try resuming after a
  deferral, or a later try (an Airflow retry of a try that was killed or became a zombie). The newer
  token replaces the older one.
* **Fencing.** Before it writes, a writer reads the lease back (:meth:`ManifestLease.check`) and stops
  with :class:`~airflow_provider_apicore.batch.errors.LeaseLostError` if a newer try took it over, so a
  zombie never submits or overwrites what its successor records.
* **Release.** When the batch ends (success or failure, not a deferral) the lease is deleted, so the
  next run on the same manifest can start. A lease left by a process killed outright stays until a retry
  of the same task instance takes it over, or a person deletes it (the error says which file).

Stores without a conditional create (other fsspec filesystems) fall back to check-then-write with a
warning: the seam for them is :class:`LeaseStorage`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.batch.errors import LeaseLostError, ManifestLeaseError
from airflow_provider_apicore.manifest import _delete, _fs, _is_local, _read_bytes, write_atomic

log = logging.getLogger(__name__)

LEASE_SUFFIX = ".lease"


@dataclass(frozen=True)
class FencingToken:
    """
    Who writes: one try of one task instance.

    :param dag_id: the DAG
    :param run_id: the DAG run
    :param task_id: the task
    :param map_index: the mapped index (-1 when not mapped)
    :param try_number: the try; a later try of the same task instance may take the lease over
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1

    @property
    def owner(self) -> str:
        """The task instance, without the try."""
        return f"{self.dag_id}/{self.run_id}/{self.task_id}/{self.map_index}"

    def __str__(self) -> str:
        return f"{self.owner} try {self.try_number}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "try_number": self.try_number,
        }

    @classmethod
    def from_dict(cls, data: Any) -> FencingToken | None:
        try:
            return cls(
                str(data["dag_id"]),
                str(data["run_id"]),
                str(data["task_id"]),
                int(data.get("map_index", -1)),
                int(data.get("try_number", 1)),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    @classmethod
    def from_context(cls, context: Any) -> FencingToken:
        """The token of the running try, from an Airflow context (``ti``)."""
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        try_number = getattr(ti, "try_number", 1)
        return cls(
            str(getattr(ti, "dag_id", "")),
            str(getattr(ti, "run_id", "")),
            str(getattr(ti, "task_id", "")),
            -1 if map_index is None else int(map_index),
            1 if not isinstance(try_number, int) else try_number,
        )


class LeaseStorage:
    """
    The conditional write a lease needs, per kind of store.

    :meth:`create` must create the object only if it does not exist and return False otherwise.
    """

    def __init__(self, path: ObjectStoragePath) -> None:
        self.path = path

    def create(self, data: bytes) -> bool:
        if _is_local(self.path):
            os.makedirs(os.path.dirname(self.path.path) or ".", exist_ok=True)
            try:
                fd = os.open(self.path.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        fs = _fs(self.path)
        try:
            # s3fs: mode="create" sends If-None-Match: * (S3 and moto refuse the PUT when the key exists).
            fs.pipe_file(self.path.path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except TypeError:
            pass
        except OSError as err:
            if "PreconditionFailed" in type(err).__name__ or "412" in str(err):
                return False
            raise
        log.warning(
            "%s cannot create an object only if it is absent; the manifest lease falls back to check-then-"
            "write, which two writers starting in the same instant can both pass",
            self.path.protocol,
        )
        if _read_bytes(self.path) is not None:
            return False
        fs.pipe_file(self.path.path, data)
        return True

    def read(self) -> bytes | None:
        return _read_bytes(self.path)

    def replace(self, data: bytes) -> None:
        write_atomic(self.path, data)

    def delete(self) -> None:
        _delete(self.path)


class ManifestLease:
    """
    The lease of one manifest for one try.

    :param manifest_path: the manifest (the lease is ``<manifest>.lease`` next to it)
    :param token: this try's fencing token
    :param check_interval: at most one read-back of the lease per this many seconds in :meth:`check`
    """

    def __init__(
        self, manifest_path: ObjectStoragePath, token: FencingToken, check_interval: float = 1.0
    ) -> None:
        self.path = manifest_path.parent / (manifest_path.name + LEASE_SUFFIX)
        self.token = token
        self.check_interval = check_interval
        self.storage = LeaseStorage(self.path)
        self.held = False
        self._checked_at = 0.0
        self.reads = 0
        self.writes = 0

    def _body(self) -> bytes:
        data = {
            **self.token.to_dict(),
            "holder": str(self.token),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "acquired_at": time.time(),
        }
        return (json.dumps(data) + "\n").encode("utf-8")

    def holder(self) -> tuple[FencingToken | None, str]:
        """The token in the lease (None if absent or unreadable) and a description for messages."""
        raw = self.storage.read()
        self.reads += 1
        if raw is None:
            return None, "nobody"
        try:
            data = json.loads(raw)
        except ValueError:
            return None, f"an unreadable lease ({raw[:60]!r})"
        token = FencingToken.from_dict(data)
        if token is None:
            return None, f"an unreadable lease ({raw[:60]!r})"
        where = f" on {data.get('host')} pid {data.get('pid')}" if data.get("host") else ""
        return token, f"{token}{where}"

    def acquire(self) -> None:
        """
        Take the lease, or take it over from an earlier try of the same task instance.

        :raises ManifestLeaseError: another task instance (or a later try of this one) holds it
        """
        if self.storage.create(self._body()):
            self.writes += 1
            self.held = True
            self._checked_at = time.monotonic()
            log.info("Manifest lease %s taken by %s", self.path, self.token)
            return
        token, described = self.holder()
        if token is None:
            raise ManifestLeaseError(str(self.path), described, "it cannot be read as a lease")
        if token.owner != self.token.owner:
            raise ManifestLeaseError(str(self.path), described)
        if token.try_number > self.token.try_number:
            raise ManifestLeaseError(
                str(self.path), described, f"a later try of this task instance than this one ({self.token})"
            )
        if token.try_number < self.token.try_number:
            log.warning("Taking the manifest lease %s over from %s (an earlier try)", self.path, described)
        self.storage.replace(self._body())
        self.writes += 1
        self.held = True
        self._checked_at = time.monotonic()

    def check(self, force: bool = False) -> None:
        """
        Make sure this try still holds the lease before writing.

        :raises LeaseLostError: a later try took it over, or it is gone
        """
        if not self.held:
            return
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_interval:
            return
        token, described = self.holder()
        self._checked_at = now
        if token != self.token:
            self.held = False
            raise LeaseLostError(str(self.path), str(self.token), described)

    def release(self) -> None:
        """Delete the lease if this try still holds it (the batch ended)."""
        if not self.held:
            return
        token, _ = self.holder()
        if token == self.token:
            self.storage.delete()
            log.info("Manifest lease %s released by %s", self.path, self.token)
        self.held = False
