"""
The results manifest of a directory describe: one JSON line per image, resumable after a crash.

Both ways of describing a directory (the fan-out DAG's ``write_results`` and
:class:`~airflow_provider_apicore.operators.batch_describe.MJBatchDescribeOperator`) write the same
:class:`ManifestRecord` format, so their manifests can be compared line for line once the volatile
fields (:data:`VOLATILE_FIELDS`: task ids, tags, timings) are left out with :func:`normalised`.

How it is written, and why
--------------------------
The manifest lives at any :class:`~airflow.sdk.ObjectStoragePath`. Object stores (``s3://``, ``gs://``)
cannot append to an object, and a manifest that is half rewritten when a worker dies must never be
what a retry reads. So there are two layers:

* **Snapshot**: the manifest file itself, always complete. It is rewritten whole at the start and
  the end of a batch, and in between only to compact: once the journal written since the last snapshot
  is at least as large as the snapshot (and ``flush_interval`` passed), so the bytes written per image
  do not grow with the number of images. It is written locally into a temporary file in the same
  directory, fsync'ed, then renamed over the old one (``os.replace`` is atomic); on object stores as a single
  PUT, which readers see whole or not at all.
* **Journal**: between two snapshots, each change that must survive a crash (an image about to be
  sent, a task id just accepted) is written at once as one small new file under
  ``<manifest>.journal/``. Creating a small object works on every store, where appending does not,
  and costs O(1) per change instead of rewriting the whole manifest. A snapshot folds the journal in
  and deletes the journal files it folded.

Every record carries a revision number ``rev`` (increasing across the whole manifest). Loading keeps,
per image, the record with the highest ``rev`` from the snapshot and every journal file, so the order
in which files are read, or a crash between writing a snapshot and deleting the journal, can never
roll a record back. A line cut short by a crash (the last line of a file, not valid JSON) is skipped
with a warning; a broken line elsewhere means the file was damaged and is an error naming the line.

One manifest has one writer at a time. The batch operator enforces it with a lease next to the
manifest (:mod:`airflow_provider_apicore.batch.lease`); other writers must give concurrent DAG runs
different manifests, or set ``max_active_runs=1``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import struct
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.exceptions import ApicoreConfigError, ManifestChangedError, TaskFailedError
from airflow_provider_apicore.models import MJTask, TaskStatus
from airflow_provider_apicore.prompts import split_prompt_parameters
from airflow_provider_apicore.results import describe_result

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

#: Listed, not yet read or sent.
PENDING = "pending"
#: About to be sent (written before the request goes out). Found on resume, it means the process died
#: while the submission was in the air: its fate is unknown.
PENDING_SUBMIT = "pending_submit"
#: Accepted by APICore (task id known), not finished.
SUBMITTED = "submitted"
#: The submission may or may not have been accepted (answer lost); being reconciled, or given up.
UNKNOWN_FATE = "unknown_fate"
#: Accepted, then the server stopped knowing the task id.
NOT_FOUND = "not_found"
#: Accepted, but did not finish within the operator's ``timeout``.
TIMEOUT = "timeout"
#: Refused before or at submission: not a usable image, or a submit error (codes 4, 24, ...).
REJECTED = "rejected"
#: The file could not be read, for a reason that may pass (I/O error, storage timeout): retried in the
#: run, then left for the next run, which reads it again (unlike :data:`REJECTED`).
READ_ERROR = "read_error"
SUCCESS = TaskStatus.SUCCESS.value
FAILURE = TaskStatus.FAILURE.value
CANCEL = TaskStatus.CANCEL.value

#: Statuses that end an image's story (``unknown_fate`` ends it only once reconciliation gave up).
#: (:data:`READ_ERROR` ends it for this run; the next run reads the file again.)
FINAL_STATUSES = frozenset({SUCCESS, FAILURE, CANCEL, NOT_FOUND, TIMEOUT, REJECTED, READ_ERROR})
#: Final statuses that count as failed.
FAILED_STATUSES = frozenset({FAILURE, CANCEL, NOT_FOUND, TIMEOUT, REJECTED, UNKNOWN_FATE, READ_ERROR})

#: Fields that differ between two runs over the same images (ids, tags, attempts, clocks).
VOLATILE_FIELDS = (
    "task_id",
    "state",
    "attempts",
    "image_url",
    "submit_time",
    "start_time",
    "finish_time",
    "accepted_at",
    "updated_at",
    "rev",
    "size",
    "mtime",
    "files",
)

MANIFEST_NAME = "manifest.jsonl"
#: Journal bytes below which :meth:`Manifest.flush` does not compact (small manifests rewrite at the end).
COMPACT_MIN_BYTES = 256 * 1024
#: Superseded journal files deleted together (one request per batch on object stores).
DEAD_BATCH = 200
JOURNAL_SUFFIX = ".journal"
#: Names of a deferred batch's files next to the journal (their dot keeps them out of the journal).
PLAN_PREFIX = ".plan-"
CHECKPOINT_PREFIX = ".resume-"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class ManifestRecord:
    """
    What is known about one image.

    :param image: the image's path, as listed (the record's key)
    :param status: :data:`PENDING`, :data:`PENDING_SUBMIT`, :data:`SUBMITTED`, :data:`UNKNOWN_FATE`,
        a terminal task status (``SUCCESS``, ``FAILURE``, ``CANCEL``), :data:`NOT_FOUND`,
        :data:`TIMEOUT` or :data:`REJECTED`
    :param sha256: hex SHA-256 of the image bytes, once read
    :param task_id: the APICore task id, once accepted (images with the same bytes share one)
    :param prompts: the four prompts on success
    :param prompt: the raw prompt text on success
    :param error: why it failed: the task's ``failReason``, the refusal, or the lost answer
    :param image_url: the task's image URL
    :param state: the ``state`` tag of the last submission sent for this image
    :param attempts: submissions sent that may have created a task
    :param submit_time: server time the task was submitted (epoch ms)
    :param start_time: server time the task started (epoch ms)
    :param finish_time: server time the task finished (epoch ms)
    :param accepted_at: local time the task id was received (epoch ms); the ``timeout`` counts from it
    :param updated_at: local time of the last change (epoch ms)
    :param rev: revision number; the highest wins when records are merged
    :param size: the file's size in bytes when it was last read
    :param mtime: the file's modification time (epoch seconds) when it was last read; with ``size``, a
        rerun skips reading a finished file that did not change
    :param files: stored result files (imagine with ``output_path``)
    """

    image: str
    status: str = PENDING
    sha256: str | None = None
    task_id: str | None = None
    prompts: list[str] = field(default_factory=list)
    prompt: str | None = None
    error: str | None = None
    image_url: str | None = None
    state: str | None = None
    attempts: int = 0
    submit_time: int | None = None
    start_time: int | None = None
    finish_time: int | None = None
    accepted_at: int | None = None
    updated_at: int | None = None
    rev: int = 0
    size: int | None = None
    mtime: float | None = None
    files: list[str] = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS

    def to_dict(self) -> dict[str, Any]:
        # A shallow copy field by field: dataclasses.asdict deep-copies recursively, the manifest's
        # hottest path when records are written.
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["prompts"] = list(self.prompts)
        if self.files:
            data["files"] = list(self.files)
        else:
            del data["files"]  # describe manifests stay as they were
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ManifestRecord:
        """Build a record from one manifest line's object; unknown keys are ignored."""
        if not isinstance(data, dict) or not isinstance(data.get("image"), str) or not data["image"]:
            raise ValueError("a manifest record is a JSON object with a non-empty string 'image'")
        values = {k: v for k, v in data.items() if k in _FIELD_SET}
        if not isinstance(values.get("prompts", []), list):
            raise ValueError("'prompts' must be a list")
        if not isinstance(values.get("files", []), list):
            raise ValueError("'files' must be a list")
        if not isinstance(values.get("rev", 0), int) or not isinstance(values.get("attempts", 0), int):
            raise ValueError("'rev' and 'attempts' must be whole numbers")
        return cls(**values)

    def copy_outcome(self, other: ManifestRecord) -> None:
        """Take over another record's task and result (an image with the same bytes)."""
        if isinstance(other, StoredRecord):
            other = other.thaw()  # one read back, not one per field
        for name in (
            "status",
            "task_id",
            "prompts",
            "prompt",
            "error",
            "image_url",
            "state",
            "submit_time",
            "start_time",
            "finish_time",
            "accepted_at",
            "files",
        ):
            value = getattr(other, name)
            setattr(self, name, list(value) if isinstance(value, list) else value)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(ManifestRecord))
_FIELD_SET = frozenset(_FIELD_NAMES)


#: How a stored record's fixed fields are packed: status code, flags, attempts, size, mtime, revision,
#: file number, offset and length of its line, and the SHA-256 digest (76 bytes).
_PACKED = struct.Struct("<BBHqdqiqi32s")
#: Statuses a stored record can have (finished or pending), by code.
_STATUS_CODES = (PENDING, SUCCESS, FAILURE, CANCEL, NOT_FOUND, TIMEOUT, REJECTED, READ_ERROR)
_STATUS_CODE = {status: code for code, status in enumerate(_STATUS_CODES)}
_HAS_SHA, _HAS_SIZE, _HAS_MTIME = 1, 2, 4
_NO_DIGEST = bytes(32)


class StoredRecord:
    """
    A record whose newest line is in storage, not in memory.

    It keeps the few fields the batch looks at for every image (status, SHA-256, size, modification
    time, task id, attempts, revision) and where its line is (which manifest file, at what byte offset,
    how long). The fixed-size ones are packed into one 76-byte string (a SHA-256 as its 32-byte digest,
    not 64 hex characters), so a finished image costs a few hundred bytes of memory, path included,
    whatever its prompts weigh. Any other field is read back from the line when asked for
    (:meth:`thaw`). :meth:`Manifest.touch` replaces it with a full :class:`ManifestRecord` before
    changing it.
    """

    __slots__ = ("_manifest", "_odd", "_packed", "image", "task_id")

    def __init__(
        self, record: ManifestRecord, manifest: Manifest, file: int, offset: int, length: int
    ) -> None:
        self.image = record.image
        self.task_id = record.task_id
        self._manifest = manifest
        #: fields that do not fit the packed layout (a hand-edited line), kept as they are
        self._odd: dict[str, Any] | None = None
        flags = 0
        digest = _NO_DIGEST
        sha = record.sha256
        if sha is not None:
            try:
                digest = bytes.fromhex(sha)
            except (TypeError, ValueError):
                digest = b""
            if len(digest) == 32 and digest.hex() == sha:
                flags |= _HAS_SHA
            else:
                digest = _NO_DIGEST
                self._keep_odd("sha256", sha)
        code = _STATUS_CODE.get(record.status)
        if code is None:
            code = 0
            self._keep_odd("status", record.status)
        size = record.size
        if isinstance(size, int) and 0 <= size < 1 << 62:
            flags |= _HAS_SIZE
        elif size is not None:
            self._keep_odd("size", size)
        mtime = record.mtime
        if isinstance(mtime, (int, float)) and not isinstance(mtime, bool):
            flags |= _HAS_MTIME
        elif mtime is not None:
            self._keep_odd("mtime", mtime)
        attempts = record.attempts
        if not 0 <= attempts < 1 << 16:
            self._keep_odd("attempts", attempts)
            attempts = 0
        self._packed = _PACKED.pack(
            code,
            flags,
            attempts,
            size if flags & _HAS_SIZE else 0,
            float(mtime) if flags & _HAS_MTIME else 0.0,
            record.rev,
            file,
            offset,
            length,
            digest,
        )

    def _keep_odd(self, name: str, value: Any) -> None:
        if self._odd is None:
            self._odd = {}
        self._odd[name] = value

    def _field(self, name: str, value: Any) -> Any:
        odd = self._odd
        return odd[name] if odd is not None and name in odd else value

    @property
    def status(self) -> str:
        return self._field("status", _STATUS_CODES[self._packed[0]])

    @property
    def sha256(self) -> str | None:
        if self._packed[1] & _HAS_SHA:
            return self._packed[-32:].hex()
        return self._field("sha256", None)

    @property
    def size(self) -> int | None:
        return _PACKED.unpack(self._packed)[3] if self._packed[1] & _HAS_SIZE else self._field("size", None)

    @property
    def mtime(self) -> float | None:
        return _PACKED.unpack(self._packed)[4] if self._packed[1] & _HAS_MTIME else self._field("mtime", None)

    @property
    def attempts(self) -> int:
        return self._field("attempts", _PACKED.unpack(self._packed)[2])

    @property
    def rev(self) -> int:
        return _PACKED.unpack(self._packed)[5]

    @property
    def _file(self) -> int:
        return _PACKED.unpack(self._packed)[6]

    @property
    def _offset(self) -> int:
        return _PACKED.unpack(self._packed)[7]

    @property
    def _length(self) -> int:
        return _PACKED.unpack(self._packed)[8]

    def _move(self, file: int, offset: int) -> None:
        """Its line is now at ``offset`` of file ``file`` (a snapshot rewrite moved it)."""
        fields = list(_PACKED.unpack(self._packed))
        fields[6], fields[7] = file, offset
        self._packed = _PACKED.pack(*fields)

    def thaw(self) -> ManifestRecord:
        """The full record, read back from its line in storage."""
        return self._manifest._read_record(self)

    def __getattr__(self, name: str) -> Any:
        if name in _FIELD_SET:
            return getattr(self.thaw(), name)
        raise AttributeError(name)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS

    def to_dict(self) -> dict[str, Any]:
        return self.thaw().to_dict()


#: The name this class had when finished records were kept compressed in memory.
FrozenRecord = StoredRecord


def normalised(record: ManifestRecord | dict[str, Any]) -> dict[str, Any]:
    """A record without its :data:`VOLATILE_FIELDS`: what two runs over the same images agree on."""
    data = record.to_dict() if isinstance(record, ManifestRecord) else dict(record)
    for name in VOLATILE_FIELDS:
        data.pop(name, None)
    return data


# ---------------------------------------------------------------------------------- task -> record
def copy_task_progress(record: ManifestRecord, task: MJTask) -> bool:
    """
    Copy what every action's task says about its progress (id, times, image, tag) into a record; a
    task still running leaves the record ``submitted``.

    :return: whether the task is terminal (the caller maps its result)
    """
    record.task_id = task.id
    record.submit_time = task.submit_time
    record.start_time = task.start_time
    record.finish_time = task.finish_time
    record.image_url = task.image_url
    if task.state is not None:
        record.state = task.state
    if not task.is_terminal:
        record.status = SUBMITTED
        return False
    return True


def apply_task(record: ManifestRecord, task: MJTask) -> None:
    """
    Copy what a task object says into a record (the one task -> record mapping).

    Success goes through :func:`~airflow_provider_apicore.results.describe_result`, the provider's one
    result mapping, so the prompts are exactly what :class:`MJDescribeOperator` returns.
    """
    if not copy_task_progress(record, task):
        return
    try:
        result = describe_result(task)
    except TaskFailedError as err:
        record.status = err.status
        record.error = err.fail_reason or "no reason given"
        record.prompts, record.prompt = [], None
        return
    apply_result(record, result)


def apply_result(record: ManifestRecord, result: dict[str, Any]) -> None:
    """Copy a successful describe result (see :func:`describe_result`) into a record."""
    record.status = str(result.get("status") or SUCCESS)
    record.task_id = None if result.get("task_id") is None else str(result["task_id"])
    record.prompts = list(result.get("prompts") or [])
    record.prompt = result.get("prompt")
    record.image_url = result.get("image_url")
    record.submit_time = result.get("submit_time")
    record.start_time = result.get("start_time")
    record.finish_time = result.get("finish_time")
    if result.get("state") is not None:
        record.state = result["state"]
    record.error = None


# ------------------------------------------------------------------------------------ storage
def to_storage_path(path: str | os.PathLike | ObjectStoragePath) -> ObjectStoragePath:
    """A path string, ``file://``/``s3://``... URL or ObjectStoragePath as an ObjectStoragePath."""
    if isinstance(path, ObjectStoragePath):
        return path
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ApicoreConfigError(f"manifest_path must be a non-empty path or URL, got {path!r}")
    if "://" not in text:
        return ObjectStoragePath(os.path.abspath(os.path.expanduser(text)))
    return ObjectStoragePath(text)


def _is_local(path: ObjectStoragePath) -> bool:
    return path.protocol in ("", "file", "local")


def _fs(path: ObjectStoragePath) -> AbstractFileSystem:
    # Airflow registers only "file" and installed providers' schemes; others (memory://) resolve
    # through fsspec directly.
    try:
        return path.fs
    except ValueError:
        return path.__wrapped__.fs


class _Child:
    """
    A file of a manifest's directory, by name: what the storage helpers below need, without a path
    object per file. pathlib interns every name it parses and that table never shrinks, so a path
    object per journal file (about two an image) would be memory the batch never gets back.
    """

    __slots__ = ("name", "parent")

    def __init__(self, parent: ObjectStoragePath, name: str) -> None:
        self.parent = parent
        self.name = name

    @property
    def protocol(self) -> str:
        return self.parent.protocol

    @property
    def path(self) -> str:
        return f"{self.parent.path.rstrip('/')}/{self.name}"

    @property
    def fs(self) -> AbstractFileSystem:
        return _fs(self.parent)

    def __str__(self) -> str:
        return f"{str(self.parent).rstrip('/')}/{self.name}"


def child(directory: ObjectStoragePath, name: str) -> Any:
    """The file ``name`` in ``directory``, for the storage helpers of this module."""
    return _Child(directory, name)


def _read_bytes(path: ObjectStoragePath) -> bytes | None:
    IO["reads"] += 1
    try:
        if _is_local(path):
            with open(path.path, "rb") as fh:
                data = fh.read()
        else:
            data = _fs(path).cat_file(path.path)
    except FileNotFoundError:
        return None
    IO["bytes_read"] += len(data)
    return data


def write_atomic(path: ObjectStoragePath, data: bytes) -> None:
    """
    Replace a file's content so that readers see the old or the new content, never a mix.

    Local: a temporary file in the same directory, fsync'ed, renamed over the target, directory
    fsync'ed. Object stores: one PUT, which is atomic per object.
    """
    if _is_local(path):
        _write_stream(path, (data,))  # the same temporary file, fsync and rename
        return
    IO["writes"] += 1
    IO["bytes_written"] += len(data)
    _pipe(path, data)


def _pipe(path: ObjectStoragePath, data: bytes) -> None:
    """Write a whole object; create parent directories only on stores that need them."""
    fs = _fs(path)
    try:
        fs.pipe_file(path.path, data)
    except FileNotFoundError:
        # Object stores have no directories (and makedirs there may try to create a bucket), so only
        # directory-based stores (sftp, hdfs ...) get here.
        fs.makedirs(path.parent.path, exist_ok=True)
        fs.pipe_file(path.path, data)


def _write_new(path: ObjectStoragePath, data: bytes) -> None:
    """Create a small new file durably (journal entries are never rewritten)."""
    IO["writes"] += 1
    IO["bytes_written"] += len(data)
    if _is_local(path):
        os.makedirs(os.path.dirname(path.path), exist_ok=True)
        with open(path.path, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return
    _pipe(path, data)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _list_names(directory: ObjectStoragePath) -> list[str]:
    """The sorted names of the files in a directory (no path object per file); [] when it is missing."""
    IO["lists"] += 1
    try:
        if _is_local(directory):
            return sorted(os.listdir(directory.path))
        entries = _fs(directory).ls(directory.path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(os.path.basename(str(entry).rstrip("/")) for entry in entries)


def _delete_names(directory: ObjectStoragePath, names: list[str]) -> int:
    """Delete files of one directory: one by one locally, in batches of up to 1,000 on object stores."""
    if not names:
        return 0
    if _is_local(directory):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory.path, name))
        IO["deletes"] += len(names)
        return len(names)
    fs = _fs(directory)
    base = directory.path.rstrip("/")
    requests = 0
    for start in range(0, len(names), 1000):
        batch = [f"{base}/{name}" for name in names[start : start + 1000]]
        try:
            fs.rm(batch)
        except FileNotFoundError:
            for name in batch:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(name)
        requests += 1
    IO["deletes"] += requests
    return requests


def _delete(path: ObjectStoragePath) -> None:
    IO["deletes"] += 1
    try:
        if _is_local(path):
            os.unlink(path.path)
        else:
            _fs(path).rm_file(path.path)
    except FileNotFoundError:
        pass


#: Storage operations of this process's manifests and leases (opened for reading, bytes read, writes,
#: bytes written, delete requests, listings): what the benchmarks report per image.
IO: Counter[str] = Counter()
#: Block size of object-store reads and of the parts of a streamed snapshot upload (S3's smallest
#: multipart part is 5 MiB).
STREAM_BLOCK = 8 * 1024 * 1024
#: Block size of reading single stored records back from an object store (a small LRU of blocks).
RECORD_BLOCK = 256 * 1024


def _open_read(path: ObjectStoragePath, sequential: bool = True) -> Any:
    """An open binary file to read, or None when it does not exist."""
    IO["reads"] += 1
    try:
        if _is_local(path):
            return open(path.path, "rb", buffering=1 << 16)  # the caller closes it
        return _fs(path).open(
            path.path,
            "rb",
            block_size=STREAM_BLOCK if sequential else RECORD_BLOCK,
            cache_type="readahead" if sequential else "blockcache",
        )
    except FileNotFoundError:
        return None


def _read_lines(path: ObjectStoragePath) -> Iterator[tuple[int, bytes]] | None:
    """``(offset, line)`` of a file, streamed (a line keeps its newline); None when it does not exist."""
    fh = _open_read(path)
    if fh is None:
        return None

    def lines() -> Iterator[tuple[int, bytes]]:
        offset = 0
        try:
            for line in fh:
                IO["bytes_read"] += len(line)
                yield offset, line
                offset += len(line)
        finally:
            fh.close()

    return lines()


def _write_stream(path: ObjectStoragePath, chunks: Iterable[bytes]) -> int:
    """
    Replace a file with streamed content, atomically, without holding it in memory; return its size.

    Local: a temporary file in the same directory, fsync'ed and renamed over the target. Object
    stores: one upload (a multipart upload in :data:`STREAM_BLOCK` parts when larger), which readers see
    only once complete; on an error it is aborted, and the old object stays.
    """
    IO["writes"] += 1
    size = 0
    if _is_local(path):
        directory = os.path.dirname(path.path) or "."
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{os.path.basename(path.path)}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb", buffering=1 << 20) as fh:
                for chunk in chunks:
                    fh.write(chunk)
                    size += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _fsync_dir(directory)
        IO["bytes_written"] += size
        return size
    fs = _fs(path)
    try:
        fh = fs.open(path.path, "wb", block_size=STREAM_BLOCK)
    except FileNotFoundError:
        fs.makedirs(path.parent.path, exist_ok=True)
        fh = fs.open(path.path, "wb", block_size=STREAM_BLOCK)
    try:
        for chunk in chunks:
            fh.write(chunk)
            size += len(chunk)
    except BaseException:
        discard = getattr(fh, "discard", None)
        if discard is not None:
            with contextlib.suppress(Exception):
                discard()
                fh.closed = True  # aborted: closing would try to finish the upload
        raise
    fh.close()
    IO["bytes_written"] += size
    return size


def _render_line(record: ManifestRecord) -> bytes:
    return (json.dumps(record.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")


def _parse_stream(
    lines: Iterable[tuple[int, bytes]], where: str
) -> Iterator[tuple[int, bytes, ManifestRecord]]:
    """
    ``(offset, line, record)`` of streamed JSONL lines. A last line cut short (no newline) by an
    interrupted write is skipped with a warning.

    :raises ApicoreConfigError: a complete line is not a record; names the file and line
    """
    for number, (offset, line) in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = ManifestRecord.from_dict(json.loads(line))
        except ValueError as err:
            if not line.endswith(b"\n"):
                log.warning(
                    "Manifest %s: skipping line %d, cut short by an interrupted write (%s)",
                    where,
                    number,
                    err,
                )
                continue
            raise ApicoreConfigError(
                f"Manifest {where} line {number} is not a manifest record ({err}). The file was damaged "
                "or is not a manifest: repair or delete that line, or point manifest_path elsewhere."
            ) from None
        yield offset, line, record


def _check_line(line: bytes, stored: StoredRecord, path: ObjectStoragePath) -> ManifestRecord:
    """The record a stored line holds; raises when it is not the one the index expects there."""
    try:
        record = ManifestRecord.from_dict(json.loads(line))
    except ValueError:
        record = None
    if record is None or record.image != stored.image or record.rev != stored.rev:
        raise ManifestChangedError(str(path), stored.image, "its line is no longer where it was written")
    record.image = stored.image  # the index's string, not a second copy of the path
    return record


class _LineReader:
    """Reads stored lines back by offset: a few files kept open (object stores: a small block cache)."""

    MAX_OPEN = 8

    def __init__(self) -> None:
        self._open: OrderedDict[str, Any] = OrderedDict()

    def read(self, path: ObjectStoragePath, offset: int, length: int) -> bytes:
        key = str(path)
        fh = self._open.get(key)
        if fh is None:
            fh = _open_read(path, sequential=False)
            if fh is None:
                raise ManifestChangedError(key, None, "the file is gone")
            self._open[key] = fh
            if len(self._open) > self.MAX_OPEN:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(key)
        fh.seek(offset)
        data = fh.read(length)
        IO["bytes_read"] += len(data)
        return data

    def read_many(
        self, path: ObjectStoragePath, records: list[StoredRecord]
    ) -> Iterator[tuple[StoredRecord, bytes]]:
        """The lines of ``records`` (all in ``path``), read in file order in one pass."""
        records.sort(key=lambda r: r._offset)
        fh = _open_read(path)
        if fh is None:
            raise ManifestChangedError(str(path), records[0].image if records else None, "the file is gone")
        try:
            position = 0
            for record in records:
                if record._offset != position:
                    fh.seek(record._offset)
                line = fh.read(record._length)
                position = record._offset + len(line)
                IO["bytes_read"] += len(line)
                prefix = b'{"image": ' + json.dumps(record.image, ensure_ascii=False).encode("utf-8")
                if not (line.startswith(prefix) and line.endswith(b"\n")):
                    _check_line(line, record, path)
                yield record, line
        finally:
            fh.close()

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()


def render_lines(records: Iterable[ManifestRecord]) -> bytes:
    return b"".join(_render_line(r) for r in records)


def read_manifest(path: str | os.PathLike | ObjectStoragePath) -> list[ManifestRecord]:
    """
    Read a manifest (snapshot and any journal not yet folded in), one record per image.

    Downstream tasks use this to consume a batch's results. A missing manifest reads as empty.
    """
    return list(Manifest.load(path).records.values())


def write_manifest(path: str | os.PathLike | ObjectStoragePath, records: Iterable[ManifestRecord]) -> None:
    """Write a complete manifest atomically (no journal): used when all results are known at once."""
    write_atomic(to_storage_path(path), render_lines(records))


# ------------------------------------------------------------------------------------ manifest
class Manifest:
    """
    A manifest being written: a journal for urgent changes, periodic snapshots, and an index in memory.

    With ``freeze_finished`` (what the batch uses), only the records of images in flight stay whole in
    memory. A finished or pending image is a :class:`StoredRecord`: a few fields and the place of its
    newest line in storage. Snapshots are streamed from those places, never built in memory, so the
    memory a manifest needs grows by a few hundred bytes per image however large its records are.

    :param path: where the manifest lives (any ObjectStoragePath, local path or URL)
    :param flush_interval: seconds between two snapshot rewrites (:meth:`flush`)
    :param freeze_finished: keep finished and pending records in storage only (:class:`StoredRecord`)
    """

    def __init__(
        self,
        path: str | os.PathLike | ObjectStoragePath,
        flush_interval: float = 30.0,
        freeze_finished: bool = False,
    ) -> None:
        self.path = to_storage_path(path)
        self.freeze_finished = freeze_finished
        self.journal_dir = self.path.parent / (self.path.name + JOURNAL_SUFFIX)
        self.flush_interval = flush_interval
        self.records: dict[str, ManifestRecord | StoredRecord] = {}
        self._rev = 0
        self._unjournaled: dict[str, ManifestRecord] = {}
        #: the files that hold stored lines, by number: 0 is the snapshot, then journal files in order
        # b"" is the snapshot, a journal file is its name; kept as bytes, because pathlib interns the
        # strings it is given, and the interpreter's table of interned strings never shrinks
        self._files: dict[int, bytes] = {}
        self._next_file = 1
        #: journal file number -> how many images have their newest line there; a journal file whose
        #: count falls to 0 holds only superseded lines and is deleted (in batches) without waiting for
        #: the next snapshot, so neither a resume nor a compaction has to read it
        self._live: Counter[int] = Counter()
        #: image -> the file of its newest line, for records held whole (stored ones know theirs)
        self._line_file: dict[str, int] = {}
        #: names of journal files found superseded, not deleted yet
        self._dead: list[bytes] = []
        #: journal file number -> its size
        self._sizes: dict[int, int] = {}
        self._reader = _LineReader()
        self._dirty = False
        self._last_flush = time.monotonic()
        #: images per status, and the status each record held whole in memory is counted under
        self._counts: Counter[str] = Counter()
        self._counted: dict[str, str] = {}
        #: bytes journaled since the last snapshot, and the last snapshot's size (see :meth:`flush`)
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        #: whether :meth:`load` found a snapshot or journal files
        self.found = False
        #: taken over by :meth:`resume`: only some records are in memory (see :meth:`_complete`)
        self.partial = False
        self._total = 0
        #: called before anything is written (the batch checks its lease there)
        self.before_write: Callable[[], None] | None = None
        #: storage writes and deletes so far, and bytes written (for benchmarks)
        self.writes = 0
        self.bytes_written = 0

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | ObjectStoragePath,
        flush_interval: float = 30.0,
        freeze_finished: bool = False,
    ) -> Manifest:
        """
        Read the snapshot and every journal file, line by line, keeping the newest record of each image.

        :param freeze_finished: keep finished and pending records in storage only (:class:`StoredRecord`)
        """
        manifest = cls(path, flush_interval, freeze_finished)
        found = manifest._scan()
        manifest.records = found
        manifest._count_all()
        manifest._rev = max((r.rev for r in found.values()), default=0)
        journal = [number for number in manifest._files if number > 0]
        if journal:
            log.info("Manifest %s: folded in %d journal files", manifest.path, len(journal))
            manifest._dirty = True
        # A process that takes over (a retry, a resume) may compact at its first flush: waiting a whole
        # interval per process would let journal files pile up across short deferral rounds.
        manifest._last_flush = time.monotonic() - manifest.flush_interval
        return manifest

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike | ObjectStoragePath,
        state: dict[str, Any],
        flush_interval: float = 30.0,
    ) -> Manifest:
        """
        Take a manifest over from the state :meth:`checkpoint_state` saved, without reading it.

        Only the records the state carries (in flight, queued in front, waiting, in doubt) are in
        memory; counts, the image total and the journal's size come from the state. Anything that needs
        every record (iterating, a lookup of an image not held, compacting) reads the whole manifest
        once first (:meth:`_complete`), which finishing a batch does anyway. So a deferral round costs
        storage reads for what is in flight, not for every image.

        :param state: what :meth:`checkpoint_state` returned in the process that deferred
        """
        manifest = cls(path, flush_interval, freeze_finished=True)
        manifest.partial = True
        manifest.found = True
        for data in state["records"]:
            record = ManifestRecord.from_dict(data)
            manifest.records[record.image] = record
            manifest._counted[record.image] = record.status
        numbers: dict[str, int] = {}
        for name, (live, size) in (state.get("journal") or {}).items():
            number = numbers[name] = manifest._next_file
            manifest._next_file += 1
            manifest._files[number] = name.encode()
            manifest._live[number] = int(live)
            manifest._sizes[number] = int(size)
        for image, name in (state.get("lines") or {}).items():
            if image in manifest.records and name in numbers:
                manifest._line_file[image] = numbers[name]
        manifest._counts = Counter({k: int(v) for k, v in state["counts"].items()})
        manifest._total = int(state["total"])
        manifest._rev = int(state["rev"])
        manifest._snapshot_bytes = int(state["snapshot_bytes"])
        manifest._journal_bytes = int(state["journal_bytes"])
        manifest._dirty = manifest._journal_bytes > 0
        manifest._last_flush = time.monotonic() - max(0.0, float(state["since_flush"]))
        return manifest

    def checkpoint_state(self, keys: Iterable[str]) -> dict[str, Any]:
        """
        What :meth:`resume` needs to take this manifest over in another process: counts, sizes, and the
        whole records of ``keys`` and of every record held in memory. Call it after :meth:`commit`.

        :param keys: images the batch still refers to (queued in front, waiting, in doubt)
        """
        wanted = {
            image: record for image, record in self.records.items() if isinstance(record, ManifestRecord)
        }
        for image in keys:
            if image not in wanted and (record := self.hold(image)) is not None:
                wanted[image] = record
        self.drop_dead()
        # Where the records carried have their newest line, so that the resume can delete those journal
        # files once they hold only superseded lines (files of finished records stay until a snapshot).
        lines: dict[str, str] = {}
        journal: dict[str, list[int]] = {}
        for image in wanted:
            number = self._line_file.get(image)
            name = self._files.get(number) if number is not None and number > 0 else None
            if name is not None:
                lines[image] = name.decode()
                journal[name.decode()] = [self._live[number], self._sizes.get(number, 0)]
        return {
            "lines": lines,
            "journal": journal,
            "rev": self._rev,
            "total": len(self),
            "counts": dict(+self._counts),
            "snapshot_bytes": self._snapshot_bytes,
            "journal_bytes": self._journal_bytes,
            "since_flush": time.monotonic() - self._last_flush,
            "records": [record.to_dict() for record in wanted.values()],
        }

    def _scan(self) -> dict[str, ManifestRecord | StoredRecord]:
        """Read the snapshot and every journal file: the newest record of each image (and file sizes)."""
        found: dict[str, ManifestRecord | StoredRecord] = {}
        whole_at: dict[str, int] = {}
        journal = [
            name for name in _list_names(self.journal_dir) if name.endswith(".jsonl") and name[0] != "."
        ]
        self.drop_dead()
        self._files = {number: name for number, name in self._files.items() if number < 0}
        self._sizes = {}
        self._snapshot_bytes = self._journal_bytes = 0
        for number, name in enumerate(["", *journal]):
            source = self._path_of(name)
            lines = _read_lines(source)
            if lines is None:
                continue
            self.found = True
            self._files[number] = name.encode()
            size = 0
            for offset, line, record in _parse_stream(lines, str(source)):
                size = offset + len(line)
                seen = found.get(record.image)
                if seen is not None and record.rev < seen.rev:
                    continue
                if self.freeze_finished and (record.is_final or record.status == PENDING):
                    found[record.image] = StoredRecord(record, self, number, offset, len(line))
                    whole_at.pop(record.image, None)
                else:
                    found[record.image] = record
                    whole_at[record.image] = number
            if number == 0:
                self._snapshot_bytes = size
            else:
                self._sizes[number] = size
        self._next_file = len(journal) + 1
        self._live = Counter(r._file for r in found.values() if isinstance(r, StoredRecord))
        self._live.update(whole_at.values())
        self._line_file = whole_at
        # Journal files with no newest line left: superseded, delete them at the next chance.
        for number in [n for n in self._files if n > 0 and n not in self._live]:
            self._dead.append(self._files.pop(number))
            self._sizes.pop(number, None)
        self._journal_bytes = sum(self._sizes.values())
        return found

    def _count_all(self) -> None:
        self._counts = Counter(record.status for record in self.records.values())
        self._counted = {
            image: record.status
            for image, record in self.records.items()
            if not isinstance(record, StoredRecord)
        }

    def _complete(self) -> None:
        """A manifest taken over by :meth:`resume`: read every record now (the records held win)."""
        if not self.partial:
            return
        started = time.monotonic()
        found = self._scan()
        for image, record in self.records.items():
            if isinstance(record, StoredRecord):
                continue  # its line is in a file just read (or a copy of one in the plan)
            seen = found.get(image)
            if seen is None or record.rev >= seen.rev:
                found[image] = record
                if isinstance(seen, StoredRecord):
                    self._line_file[image] = seen._file
        self.records = found
        self._count_all()
        self._rev = max(self._rev, max((r.rev for r in found.values()), default=0))
        self.partial = False
        log.info(
            "Manifest %s: read all %d records (%.1fs) to %s",
            self.path,
            len(found),
            time.monotonic() - started,
            "compact or finish",
        )

    # -- records
    def __len__(self) -> int:
        return self._total if self.partial else len(self.records)

    def __iter__(self) -> Iterator[ManifestRecord]:
        self._complete()
        return iter(self.records.values())  # type: ignore[arg-type]

    def __contains__(self, image: object) -> bool:
        return self._lookup(image) is not None  # type: ignore[arg-type]

    def get(self, image: str) -> ManifestRecord | None:
        return self._lookup(image)  # type: ignore[return-value]

    def held(self) -> list[ManifestRecord]:
        """The records whole in memory (in flight, being changed), without reading any from storage."""
        return [record for record in self.records.values() if isinstance(record, ManifestRecord)]

    def _lookup(self, image: str) -> ManifestRecord | StoredRecord | None:
        record = self.records.get(image)
        if record is None and self.partial:
            self._complete()
            record = self.records.get(image)
        return record

    def hold(self, image: str) -> ManifestRecord | None:
        """The whole record of ``image``, read back from storage if needed, to change or follow it."""
        record = self._lookup(image)
        if isinstance(record, StoredRecord):
            stored = record
            record = stored.thaw()
            self.records[image] = record
            self._counted[image] = stored.status
            self._line_file[image] = stored._file
        return record

    def add(self, image: str) -> ManifestRecord:
        """The record of ``image``, created :data:`PENDING` if the manifest does not have it yet."""
        record = self._lookup(image)
        if record is None:
            record = ManifestRecord(image=image)
            self.records[image] = record
            self._total += 1
            self.touch(record)
        return record  # type: ignore[return-value]

    def touch(self, record: ManifestRecord | StoredRecord, **changes: Any) -> ManifestRecord:
        """Apply ``changes`` to a record and give it a new revision; journaled at the next commit."""
        current = self.records.get(record.image)
        if isinstance(current, StoredRecord):
            counted: str | None = current.status
            self._line_file[current.image] = current._file
            if isinstance(record, StoredRecord):
                record = record.thaw()
        else:
            if isinstance(record, StoredRecord):
                record = record.thaw()
            counted = self._counted.get(record.image)
        for name, value in changes.items():
            setattr(record, name, value)
        if counted != record.status:
            if counted is not None:
                self._counts[counted] -= 1
            self._counts[record.status] += 1
        self._counted[record.image] = record.status
        self._rev += 1
        record.rev = self._rev
        record.updated_at = now_ms()
        self.records[record.image] = record
        self._unjournaled[record.image] = record
        self._dirty = True
        return record

    def counts(self) -> Counter[str]:
        """Images per status, kept up to date by :meth:`touch` (no pass over the records)."""
        return +self._counts

    # -- persistence
    def commit(self) -> None:
        """
        Make every change since the last commit durable now, as one small journal file.

        Called before a submission is sent (so a crash leaves ``pending_submit``, not silence) and right
        after it is accepted (so the task id is never lost). With ``freeze_finished``, the records that
        no longer change soon (finished or pending) then leave memory: only their place stays.
        """
        if not self._unjournaled:
            return
        if self.before_write is not None:
            self.before_write()
        changed = list(self._unjournaled.values())
        lines = [_render_line(record) for record in changed]
        data = b"".join(lines)
        name = f"{self._rev:012d}-{uuid.uuid4().hex[:8]}.jsonl"
        _write_new(_Child(self.journal_dir, name), data)
        number = self._next_file
        self._next_file += 1
        self._files[number] = name.encode()
        self._sizes[number] = len(data)
        self.writes += 1
        self.bytes_written += len(data)
        self._journal_bytes += len(data)
        self._unjournaled.clear()
        for record in changed:
            self._supersede(self._line_file.get(record.image))
            self._line_file[record.image] = number
        self._live[number] += len(changed)
        if len(self._dead) >= DEAD_BATCH:
            self.drop_dead()
        if not self.freeze_finished:
            return
        offset = 0
        for record, line in zip(changed, lines, strict=True):
            if (record.is_final or record.status == PENDING) and self.records.get(record.image) is record:
                self.records[record.image] = StoredRecord(record, self, number, offset, len(line))
                self._counted.pop(record.image, None)
                self._line_file.pop(record.image, None)
            offset += len(line)

    def _supersede(self, number: int | None) -> None:
        """One newest line less in journal file ``number``; with none left, it is dead."""
        if number is None or number <= 0 or number not in self._live:
            return
        self._live[number] -= 1
        if self._live[number] <= 0:
            del self._live[number]
            self._journal_bytes -= self._sizes.pop(number, 0)
            name = self._files.pop(number, None)
            if name is not None:
                self._dead.append(name)

    def drop_dead(self) -> None:
        """Delete the journal files that hold only superseded lines (one request per 1,000 on S3)."""
        if not self._dead:
            return
        names = [name.decode() for name in self._dead]
        self._dead = []
        self.writes += _delete_names(self.journal_dir, names)

    def uncommitted(self) -> int:
        """Records changed since the last :meth:`commit`."""
        return len(self._unjournaled)

    def flush(self, force: bool = False) -> bool:
        """
        Rewrite the snapshot (``force``), or compact: when ``flush_interval`` passed **and** the journal
        written since the last snapshot is at least as large as that snapshot (and
        :data:`COMPACT_MIN_BYTES`). Each snapshot byte is then paid for by a journal byte, so the bytes
        written per image stay bounded however many images the manifest holds (a rewrite every
        interval would grow with N).

        The new snapshot is streamed: the lines of stored records are copied from the old snapshot and
        the journal files in file order, then the records held in memory are rendered. So a snapshot
        of 100,000 images needs no more memory than one of 1,000. The journal files it folded are
        deleted afterwards (in batched requests on object stores).

        :return: whether a snapshot was written
        """
        if not self._dirty and not any(number > 0 for number in self._files):
            return False
        if not force and (
            time.monotonic() - self._last_flush < self.flush_interval
            or self._journal_bytes < max(COMPACT_MIN_BYTES, self._snapshot_bytes)
        ):
            return False
        self._complete()
        journal = [number for number in self._files if number > 0]
        if self.before_write is not None:
            self.before_write()
        stored: dict[int, list[StoredRecord]] = {}
        held: list[ManifestRecord] = []
        for record in self.records.values():
            if isinstance(record, StoredRecord):
                stored.setdefault(record._file, []).append(record)
            else:
                held.append(record)
        moved: list[tuple[StoredRecord, int]] = []

        def snapshot_lines() -> Iterator[bytes]:
            position = 0
            for number in sorted(stored):
                source = self._path_of(self._files[number])
                for record, line in self._reader.read_many(source, stored[number]):
                    moved.append((record, position))
                    position += len(line)
                    yield line
            for record in held:
                line = _render_line(record)
                position += len(line)
                yield line

        size = _write_stream(self.path, snapshot_lines())
        for record, position in moved:
            record._move(0, position)
        self._reader.close()
        self.writes += 1
        self.bytes_written += size
        self._snapshot_bytes = size
        self._journal_bytes = 0
        self._unjournaled.clear()
        self._dirty = False
        self._last_flush = time.monotonic()
        folded = [self._files.pop(number) for number in journal] + self._dead
        self._files[0] = b""
        self._dead = []
        self._sizes = {}
        self._live = Counter()
        self._line_file = {record.image: 0 for record in held}
        self.writes += _delete_names(self.journal_dir, [name.decode() for name in folded])
        if folded and _is_local(self.journal_dir):
            # Fails when not empty (another file appeared) or already gone: both fine.
            with contextlib.suppress(OSError):
                os.rmdir(self.journal_dir.path)
        return True

    # -- the queue of a deferred batch, in storage (see airflow_provider_apicore.batch.work_queue)
    def write_plan(self, images: Iterable[str]) -> tuple[str, int]:
        """
        Write the records of ``images``, in order, to a new plan file next to the journal; return its
        name and the number of lines written. A batch that defers keeps the images still to submit
        there instead of in memory: each resume reads only the next few from it (:meth:`read_plan`).
        """
        if self.before_write is not None:
            self.before_write()
        name = f"{PLAN_PREFIX}{uuid.uuid4().hex[:12]}.jsonl"
        written = 0

        def lines() -> Iterator[bytes]:
            nonlocal written
            for image in images:
                record = self._lookup(image)
                written += record is not None
                if isinstance(record, StoredRecord):
                    source = self._path_of(self._files[record._file])
                    yield self._reader.read(source, record._offset, record._length)
                elif record is not None:
                    yield _render_line(record)

        size = _write_stream(_Child(self.journal_dir, name), lines())
        self.writes += 1
        self.bytes_written += size
        return name, written

    def read_plan(self, name: str, offset: int, max_bytes: int) -> list[tuple[str, int]]:
        """
        The next whole lines of plan ``name`` from byte ``offset``: ``(image, offset after its line)``.
        Images not held are registered as stored records read back from the plan when taken.
        """
        encoded = name.encode()
        number = next((n for n, known in self._files.items() if known == encoded), None)
        if number is None:
            number = min([0, *self._files]) - 1
            self._files[number] = encoded
        path = self._path_of(name)
        while True:
            data = self._reader.read(path, offset, max_bytes)
            taken: list[tuple[str, int]] = []
            position = offset
            for line in data.splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    break
                record = ManifestRecord.from_dict(json.loads(line))
                if record.image not in self.records:
                    self.records[record.image] = StoredRecord(record, self, number, position, len(line))
                position += len(line)
                taken.append((record.image, position))
            if taken or len(data) < max_bytes:
                return taken
            max_bytes *= 4  # one line longer than a block

    def remove_resume_files(self) -> int:
        """Delete the plans and checkpoints deferred rounds left next to the journal; return how many."""
        names = [n for n in _list_names(self.journal_dir) if n.startswith((PLAN_PREFIX, CHECKPOINT_PREFIX))]
        self._reader.close()
        self.writes += _delete_names(self.journal_dir, names)
        if names and _is_local(self.journal_dir):
            with contextlib.suppress(OSError):
                os.rmdir(self.journal_dir.path)
        return len(names)

    def _path_of(self, name: bytes | str) -> ObjectStoragePath:
        """The snapshot (empty) or a journal file by name, made when needed (not kept per file)."""
        if isinstance(name, bytes):
            name = name.decode()
        return _Child(self.journal_dir, name) if name else self.path  # type: ignore[return-value]

    def close(self) -> None:
        """Close the files opened to read stored records back."""
        self._reader.close()

    def _read_record(self, stored: StoredRecord) -> ManifestRecord:
        name = self._files.get(stored._file)
        if name is None:
            raise ManifestChangedError(str(self.path), stored.image, "its file was already folded away")
        path = self._path_of(name)
        line = self._reader.read(path, stored._offset, stored._length)
        return _check_line(line, stored, path)


# ------------------------------------------------------------------------------------ captions
def caption_text(
    record: ManifestRecord, caption_prompt: int = 1, strip_parameters: bool = False
) -> str | None:
    """
    The caption of a described image: its ``caption_prompt``-th prompt (1-based), or None.

    :param strip_parameters: drop trailing Midjourney parameters (``--ar 4:3`` ...), as training
        captions usually want
    """
    if record.status != SUCCESS or len(record.prompts) < caption_prompt:
        return None
    text = record.prompts[caption_prompt - 1]
    if strip_parameters:
        text = split_prompt_parameters(text)[0]
    return text


def _is_prompt_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4


def _relative_name(image: str, root: str | None) -> str:
    if root:
        prefix = root.rstrip("/") + "/"
        if image.startswith(prefix):
            return image[len(prefix) :]
    return image.rstrip("/").rsplit("/", 1)[-1]


def write_captions(
    records: Iterable[ManifestRecord],
    output_dir: str | os.PathLike | ObjectStoragePath,
    root: str | os.PathLike | ObjectStoragePath | None = None,
    caption_prompt: int = 1,
    strip_parameters: bool = False,
) -> dict[str, int]:
    """
    Write one ``.txt`` caption per successfully described image under ``output_dir``.

    The caption of ``<root>/sub/cat.png`` goes to ``<output_dir>/sub/cat.txt`` (the image's path under
    ``root`` with its suffix replaced), the layout training tools expect. When two images would share
    a caption file (``cat.png`` and ``cat.jpg``), the later one keeps its full name: ``cat.jpg.txt``.

    :param records: manifest records (images that did not succeed get no caption)
    :param output_dir: directory for the captions (any ObjectStoragePath, local path or URL)
    :param root: the directory the images were listed from; without it captions go flat by file name
    :param caption_prompt: which of the four prompts is the caption (1-4)
    :param strip_parameters: drop trailing Midjourney parameters such as ``--ar 4:3``
    :return: counts: ``written`` and ``skipped`` (no successful result)
    """
    if not _is_prompt_number(caption_prompt):
        raise ApicoreConfigError(f"caption_prompt must be a whole number from 1 to 4, got {caption_prompt!r}")
    out = to_storage_path(output_dir)
    root_text = str(to_storage_path(root)) if root is not None else None
    taken: set[str] = set()
    written = skipped = 0
    for record in sorted(records, key=lambda r: r.image):
        text = caption_text(record, caption_prompt, strip_parameters)
        if text is None:
            skipped += 1
            continue
        relative = _relative_name(record.image, root_text)
        stem, dot, _suffix = relative.rpartition(".")
        name = (stem if dot and stem and not stem.endswith("/") else relative) + ".txt"
        if name in taken:
            name = relative + ".txt"
        taken.add(name)
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n", encoding="utf-8")
        written += 1
    return {"written": written, "skipped": skipped}
