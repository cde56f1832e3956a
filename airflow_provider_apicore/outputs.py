"""
Training-set outputs written from manifest records: what a training job or a data loader reads.

Every writer takes an iterable of :class:`~airflow_provider_apicore.manifest.ManifestRecord` (or the
dicts of manifest lines) and goes through it once, so a manifest of any size can be streamed:

* :func:`write_imagefolder_metadata`: a Hugging Face ImageFolder ``metadata.jsonl`` at the source root
  (``file_name`` relative to it, ``text`` = the chosen prompt, ``prompts`` = all four, ``sha256``), so
  ``datasets.load_dataset("imagefolder", data_dir=<source root>)`` reads images and captions together.
* :func:`write_captions`: one caption sidecar per described image (``.txt`` or ``.caption``, the layout
  kohya-style trainers read), either next to the images or mirrored under an output directory.
* :func:`write_parquet`: one Parquet file with the captions and their provenance (sha256, task id, bot
  type, status, error, times); needs ``pyarrow`` (the ``parquet`` extra).
* :func:`write_stats`: ``_stats.json``, the run's counts, durations and most frequent errors.
* :func:`write_training_outputs`: all of the above that are asked for, in one call (what the fan-out
  DAG's write step and the batch operator call at the end).

Caption names
-------------
The caption of ``cat.png`` is ``cat.txt`` (the image's name with its suffix replaced), which is what
trainers look for. When another image in the same folder has the same stem (``cat.png`` and
``cat.jpg``), **both** keep their full name instead: ``cat.png.txt`` and ``cat.jpg.txt``. The rule
depends only on the folder's content, not on which image was described first, so a later run never
moves one image's caption onto another. Sibling images are found by listing the folder (files with an
image suffix: png, jpg, jpeg, gif, webp, any case).

Stale captions
--------------
The caption files written are recorded in ``.apicore-captions.json`` in the caption directory. The next
run deletes those it wrote before and does not write again: captions of images that were removed, that
failed this time, or that were renamed by the rule above. Files it did not write are never deleted.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.exceptions import ApicoreConfigError
from airflow_provider_apicore.manifest import (
    FAILED_STATUSES,
    PENDING,
    PENDING_SUBMIT,
    SUBMITTED,
    SUCCESS,
    UNKNOWN_FATE,
    ManifestRecord,
    to_storage_path,
)
from airflow_provider_apicore.prompts import split_prompt_parameters

log = logging.getLogger(__name__)

#: Version of the layout of ``_stats.json``, ``metadata.jsonl`` and the Parquet columns.
OUTPUTS_SCHEMA_VERSION = 1
IMAGEFOLDER_METADATA_NAME = "metadata.jsonl"
STATS_NAME = "_stats.json"
CAPTION_INDEX_NAME = ".apicore-captions.json"
CAPTION_EXTENSIONS = (".txt", ".caption")
#: Suffixes counted as images when looking for siblings with the same stem.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
#: Statuses still on their way (counted ``pending``).
IN_PROGRESS_STATUSES = frozenset({PENDING, PENDING_SUBMIT, SUBMITTED})
_PARQUET_BATCH_ROWS = 1024
_EXTENSION_RE = re.compile(r"^\.[A-Za-z0-9_-]{1,16}$")

Record = ManifestRecord | dict[str, Any]
PathLike = str | os.PathLike | ObjectStoragePath


# ------------------------------------------------------------------------------------ records
def _get(record: Record, name: str, default: Any = None) -> Any:
    """A field of a record, or of a manifest line's dict (fields the record class lacks: ``default``)."""
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def chosen_caption(record: Record, caption_prompt: int = 1, strip_parameters: bool = False) -> str | None:
    """
    The caption of a described image: its ``caption_prompt``-th prompt (1-based), or None.

    :param record: a manifest record (or line dict)
    :param caption_prompt: which of the four prompts (1-4)
    :param strip_parameters: drop trailing Midjourney parameters (``--ar 4:3`` ...)
    """
    prompts = _get(record, "prompts") or []
    if _get(record, "status") != SUCCESS or len(prompts) < caption_prompt:
        return None
    text = str(prompts[caption_prompt - 1])
    if strip_parameters:
        text = split_prompt_parameters(text)[0]
    return text.strip() or None


def outcome_counts(records: Iterable[Record]) -> dict[str, int]:
    """
    The four counts an asset event and the stats report: ``succeeded``, ``failed`` (including
    ``unknown_fate``), ``unknown_fate`` alone, and ``pending`` (listed, being sent or in flight); ``total``.
    """
    counts = {"total": 0, "succeeded": 0, "failed": 0, "unknown_fate": 0, "pending": 0}
    for record in records:
        status = _get(record, "status")
        counts["total"] += 1
        if status == SUCCESS:
            counts["succeeded"] += 1
        elif status in IN_PROGRESS_STATUSES:
            counts["pending"] += 1
        elif status in FAILED_STATUSES:
            counts["failed"] += 1
            if status == UNKNOWN_FATE:
                counts["unknown_fate"] += 1
    return counts


def _check_caption_prompt(caption_prompt: Any) -> int:
    if (
        not isinstance(caption_prompt, int)
        or isinstance(caption_prompt, bool)
        or not 1 <= caption_prompt <= 4
    ):
        raise ApicoreConfigError(f"caption_prompt must be a whole number from 1 to 4, got {caption_prompt!r}")
    return caption_prompt


def check_caption_extension(extension: Any) -> str:
    """
    Validate a caption suffix: ``.txt`` or ``.caption`` (kohya-style), or another short ``.name``.

    :raises ApicoreConfigError: not a string like ``.txt``, or an image/JSON suffix that would clash
    """
    if not isinstance(extension, str) or not _EXTENSION_RE.match(extension):
        raise ApicoreConfigError(
            f"caption_extension must be a suffix such as '.txt' or '.caption' (a dot, then up to 16 "
            f"letters, digits, '_' or '-'), got {extension!r}"
        )
    if extension.lower() in IMAGE_SUFFIXES or extension.lower() in (".json", ".jsonl", ".parquet"):
        raise ApicoreConfigError(
            f"caption_extension {extension!r} would clash with images or metadata files; "
            "use '.txt' or '.caption'"
        )
    return extension


# ------------------------------------------------------------------------------------ storage
def _is_local(path: ObjectStoragePath) -> bool:
    return path.protocol in ("", "file", "local")


def _fs(path: ObjectStoragePath) -> Any:
    try:
        return path.fs
    except ValueError:  # schemes Airflow does not register (memory://) resolve through fsspec
        return path.__wrapped__.fs


def _key(path: ObjectStoragePath) -> tuple[str, str]:
    """A comparable identity: local paths from strings and ``file://`` URLs compare equal."""
    return ("file" if _is_local(path) else path.protocol, path.path.rstrip("/"))


def relative_name(image: str, root: PathLike | None) -> str | None:
    """
    ``image``'s path relative to ``root`` (``sub/cat.png``), or None when it is not under ``root``.

    :param image: the image path or URL as the manifest records it
    :param root: the listed directory
    """
    if root is None:
        return None
    protocol, base = _key(to_storage_path(root))
    image_protocol, path = _key(to_storage_path(image))
    if image_protocol != protocol or not path.startswith(base + "/"):
        return None
    return path[len(base) + 1 :]


@contextlib.contextmanager
def _atomic_writer(path: ObjectStoragePath, mode: str = "w") -> Iterator[IO[Any]]:
    """
    Write a file so readers see the old or the new content: locally a temporary file in the same directory,
    fsync'ed and renamed over the target; on object stores one object, written when closed.

    :param mode: ``"w"`` (text, UTF-8) or ``"wb"``
    """
    if _is_local(path):
        directory = os.path.dirname(path.path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path.path)}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as raw:
                yield from _text_or_binary(raw, mode)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, path.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    with _fs(path).open(path.path, "wb") as raw:
        yield from _text_or_binary(raw, mode)


def _text_or_binary(raw: IO[bytes], mode: str) -> Iterator[IO[Any]]:
    if "b" in mode:
        yield raw
        return
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
    yield text
    text.flush()
    text.detach()


def _write_text(path: ObjectStoragePath, text: str) -> None:
    if _is_local(path):
        os.makedirs(os.path.dirname(path.path), exist_ok=True)
        with open(path.path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        return
    _fs(path).pipe_file(path.path, text.encode("utf-8"))


def _read_text(path: ObjectStoragePath) -> str | None:
    try:
        if _is_local(path):
            with open(path.path, encoding="utf-8") as fh:
                return fh.read()
        return _fs(path).cat_file(path.path).decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None


def _delete(path: ObjectStoragePath) -> bool:
    try:
        if _is_local(path):
            os.unlink(path.path)
        else:
            _fs(path).rm_file(path.path)
    except FileNotFoundError:
        return False
    return True


def _list_names(directory: ObjectStoragePath) -> list[str]:
    try:
        if _is_local(directory):
            return os.listdir(directory.path)
        return [os.path.basename(str(p).rstrip("/")) for p in _fs(directory).ls(directory.path, detail=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _split_suffix(name: str) -> tuple[str, str]:
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + suffix


# ------------------------------------------------------------------------------------ captions
class _Siblings:
    """Per image folder: how many images share each stem (one listing per folder, cached)."""

    def __init__(self) -> None:
        self._stems: dict[tuple[str, str], Counter[str]] = {}

    def shared_stem(self, image: ObjectStoragePath) -> bool:
        folder = image.parent
        key = _key(folder)
        stems = self._stems.get(key)
        if stems is None:
            stems = Counter()
            for name in _list_names(folder):
                stem, suffix = _split_suffix(name)
                if suffix.lower() in IMAGE_SUFFIXES:
                    stems[stem] += 1
            self._stems[key] = stems
        stem, suffix = _split_suffix(image.name)
        own = 1 if suffix.lower() in IMAGE_SUFFIXES else 0
        return stems[stem] - own > 0


def caption_file_name(image_name: str, extension: str, shared_stem: bool) -> str:
    """
    The caption file name of an image: ``cat.png`` -> ``cat.txt``; with another image of the same stem
    in the folder (``shared_stem``) -> ``cat.png.txt``. A name without suffix keeps it whole.
    """
    stem, suffix = _split_suffix(image_name)
    if shared_stem or not suffix:
        return image_name + extension
    return stem + extension


def write_captions(
    records: Iterable[Record],
    source_root: PathLike | None,
    extension: str = ".txt",
    *,
    output_dir: PathLike | None = None,
    caption_prompt: int = 1,
    strip_parameters: bool = False,
    remove_stale: bool = True,
) -> dict[str, int]:
    """
    Write one caption sidecar per described image; delete the captions an earlier call wrote that are stale.

    :param records: manifest records (images that did not succeed get no caption)
    :param source_root: the directory the images were listed from; captions keep the images' relative
        paths under it. None: by file name only
    :param extension: ``.txt`` or ``.caption`` (kohya-style); see :func:`check_caption_extension`
    :param output_dir: write the captions mirrored under this directory; None: next to the images
        (in ``source_root``)
    :param caption_prompt: which of the four prompts is the caption (1-4)
    :param strip_parameters: drop trailing Midjourney parameters such as ``--ar 4:3``
    :param remove_stale: delete caption files listed in the previous ``.apicore-captions.json`` that
        were not written this time
    :return: counts ``written``, ``skipped`` (no successful result), ``full_names`` (written as
        ``cat.png.txt`` because of a sibling with the same stem) and ``removed`` (stale captions deleted)
    :raises ApicoreConfigError: a bad ``extension`` or ``caption_prompt``, or no place to write to
    """
    extension = check_caption_extension(extension)
    _check_caption_prompt(caption_prompt)
    if output_dir is None and source_root is None:
        raise ApicoreConfigError("write_captions needs source_root or output_dir to know where captions go")
    base = to_storage_path(output_dir if output_dir is not None else source_root)  # type: ignore[arg-type]
    index_path = base / CAPTION_INDEX_NAME
    previous: set[str] = set()
    if remove_stale:
        previous_text = _read_text(index_path)
        if previous_text:
            try:
                previous = set(json.loads(previous_text).get("files", []))
            except (ValueError, AttributeError):
                log.warning("Caption index %s is not valid JSON; no stale caption is removed", index_path)
    siblings = _Siblings()
    written_names: set[str] = set()
    counts = {"written": 0, "skipped": 0, "full_names": 0, "removed": 0}
    for record in records:
        text = chosen_caption(record, caption_prompt, strip_parameters)
        if text is None:
            counts["skipped"] += 1
            continue
        image = to_storage_path(str(_get(record, "image")))
        relative = relative_name(str(_get(record, "image")), source_root)
        folder = relative.rpartition("/")[0] if relative else ""
        shared = siblings.shared_stem(image)
        name = caption_file_name(image.name, extension, shared)
        target_rel = f"{folder}/{name}" if folder else name
        # An image not under the root gets its caption next to itself.
        target = image.parent / name if relative is None and output_dir is None else base / target_rel
        target_key = str(target)
        if target_key in written_names:
            # The same stem twice without both images in one listed folder (an image gone from disk but
            # still in the manifest): keep the full name rather than overwrite the other caption.
            name = image.name + extension
            target = target.parent / name
            target_key = str(target)
            shared = True
        counts["full_names"] += int(shared)
        _write_text(target, text + "\n")
        written_names.add(target_key)
        counts["written"] += 1
    if remove_stale:
        for stale in sorted(previous - written_names):
            if _delete(to_storage_path(stale)):
                counts["removed"] += 1
                log.info("Removed stale caption %s", stale)
    index = {
        "schema_version": OUTPUTS_SCHEMA_VERSION,
        "extension": extension,
        "files": sorted(written_names),
    }
    with _atomic_writer(index_path) as fh:
        json.dump(index, fh, ensure_ascii=False, indent=0)
    return counts


# ------------------------------------------------------------------------------------ imagefolder
def write_imagefolder_metadata(
    records: Iterable[Record],
    source_root: PathLike,
    *,
    caption_prompt: int = 1,
    strip_parameters: bool = False,
    name: str = IMAGEFOLDER_METADATA_NAME,
) -> dict[str, Any]:
    """
    Write a Hugging Face ImageFolder ``metadata.jsonl`` at the images' root directory.

    One line per described image: ``file_name`` (relative to ``source_root``), ``text`` (the chosen
    prompt), ``prompts`` (all four) and ``sha256``. Images that did not succeed, and images not under
    ``source_root``, are left out (ImageFolder then leaves them out of the dataset too).
    ``datasets.load_dataset("imagefolder", data_dir=source_root)`` loads images and captions together.

    :param records: manifest records
    :param source_root: the directory the images were listed from; the file goes there
    :param caption_prompt: which prompt is ``text`` (1-4)
    :param strip_parameters: drop Midjourney parameters from ``text`` (``prompts`` keeps them)
    :param name: the file name (``metadata.jsonl``)
    :return: ``path``, ``rows``, ``skipped`` (no successful result), ``outside_root``
    """
    _check_caption_prompt(caption_prompt)
    root = to_storage_path(source_root)
    target = root / name
    rows = skipped = outside = 0
    with _atomic_writer(target) as fh:
        for record in records:
            text = chosen_caption(record, caption_prompt, strip_parameters)
            if text is None:
                skipped += 1
                continue
            relative = relative_name(str(_get(record, "image")), root)
            if relative is None:
                outside += 1
                continue
            line = {
                "file_name": relative,
                "text": text,
                "prompts": [str(p) for p in _get(record, "prompts")],
                "sha256": _get(record, "sha256"),
            }
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            rows += 1
    if outside:
        log.warning("%s: %d described images are not under %s and were left out", target, outside, root)
    return {"path": str(target), "rows": rows, "skipped": skipped, "outside_root": outside}


# ------------------------------------------------------------------------------------ parquet
def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as err:
        raise ApicoreConfigError(
            "parquet_path needs pyarrow, which is not installed: "
            "pip install 'airflow-provider-apicore[parquet]'"
        ) from err
    return pyarrow


def parquet_schema() -> Any:
    """The Parquet columns: the caption, all four prompts, and where each came from."""
    pa = _pyarrow()
    ts = pa.timestamp("ms", tz="UTC")
    return pa.schema(
        [
            ("image", pa.string()),
            ("file_name", pa.string()),
            ("sha256", pa.string()),
            ("caption", pa.string()),
            ("prompts", pa.list_(pa.string())),
            ("status", pa.string()),
            ("error", pa.string()),
            ("task_id", pa.string()),
            ("bot_type", pa.string()),
            ("image_url", pa.string()),
            ("attempts", pa.int32()),
            ("submit_time", ts),
            ("start_time", ts),
            ("finish_time", ts),
            ("duration_seconds", pa.float64()),
        ]
    )


def _duration(record: Record) -> float | None:
    start = _get(record, "start_time") or _get(record, "submit_time")
    finish = _get(record, "finish_time")
    if isinstance(start, int) and isinstance(finish, int) and finish >= start:
        return (finish - start) / 1000
    return None


def write_parquet(
    records: Iterable[Record],
    path: PathLike,
    *,
    source_root: PathLike | None = None,
    caption_prompt: int = 1,
    strip_parameters: bool = False,
    bot_type: str | None = None,
) -> dict[str, Any]:
    """
    Write every record (described or not) as one Parquet row with provenance columns (see
    :func:`parquet_schema`), in row groups of 1,024 so a large manifest streams.

    :param records: manifest records
    :param path: the Parquet file (any ObjectStoragePath, local path or URL); replaced atomically locally
    :param source_root: the listed directory, for the ``file_name`` column (None: left empty)
    :param caption_prompt: which prompt is ``caption`` (1-4)
    :param strip_parameters: drop Midjourney parameters from ``caption``
    :param bot_type: the bot type the run used, for records that do not carry one
    :return: ``path`` and ``rows``
    :raises ApicoreConfigError: pyarrow is not installed (the ``parquet`` extra)
    """
    _check_caption_prompt(caption_prompt)
    pa = _pyarrow()
    import pyarrow.parquet as pq

    schema = parquet_schema()
    target = to_storage_path(path)
    rows = 0

    def batch_of(chunk: list[Record]) -> Any:
        columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        for record in chunk:
            image = str(_get(record, "image"))
            columns["image"].append(image)
            columns["file_name"].append(relative_name(image, source_root))
            columns["sha256"].append(_get(record, "sha256"))
            columns["caption"].append(chosen_caption(record, caption_prompt, strip_parameters))
            columns["prompts"].append([str(p) for p in _get(record, "prompts") or []])
            columns["status"].append(_get(record, "status"))
            columns["error"].append(_get(record, "error"))
            columns["task_id"].append(_get(record, "task_id"))
            columns["bot_type"].append(_get(record, "bot_type") or bot_type)
            columns["image_url"].append(_get(record, "image_url"))
            columns["attempts"].append(_get(record, "attempts", 0) or 0)
            for name in ("submit_time", "start_time", "finish_time"):
                columns[name].append(_get(record, name))
            columns["duration_seconds"].append(_duration(record))
        return pa.table(columns, schema=schema)

    with _atomic_writer(target, "wb") as fh, pq.ParquetWriter(fh, schema) as writer:
        chunk: list[Record] = []
        for record in records:
            chunk.append(record)
            if len(chunk) >= _PARQUET_BATCH_ROWS:
                writer.write_table(batch_of(chunk))
                rows += len(chunk)
                chunk = []
        if chunk or rows == 0:
            writer.write_table(batch_of(chunk))
            rows += len(chunk)
    return {"path": str(target), "rows": rows}


# ------------------------------------------------------------------------------------ stats
def _iso(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).isoformat()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def compute_stats(records: Iterable[Record], **extra: Any) -> dict[str, Any]:
    """
    The run's numbers in one pass: counts (as :func:`outcome_counts`), by status, unique images,
    submissions, job durations (min/median/p95/max), the time window and the ten most frequent errors.

    :param extra: added as is (``manifest``, ``spend``, ``bot_type`` ...)
    """
    by_status: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    hashes: set[str] = set()
    durations: list[float] = []
    attempts = 0
    first_submit: int | None = None
    last_finish: int | None = None
    counts = {"total": 0, "succeeded": 0, "failed": 0, "unknown_fate": 0, "pending": 0}
    for record in records:
        status = str(_get(record, "status"))
        for key, value in outcome_counts([record]).items():
            counts[key] += value
        by_status[status] += 1
        if _get(record, "sha256"):
            hashes.add(_get(record, "sha256"))
        if status != SUCCESS and _get(record, "error"):
            errors[str(_get(record, "error"))[:200]] += 1
        attempts += int(_get(record, "attempts", 0) or 0)
        duration = _duration(record)
        if duration is not None:
            durations.append(duration)
        submit, finish = _get(record, "submit_time"), _get(record, "finish_time")
        if isinstance(submit, int):
            first_submit = submit if first_submit is None else min(first_submit, submit)
        if isinstance(finish, int):
            last_finish = finish if last_finish is None else max(last_finish, finish)
    durations.sort()
    stats: dict[str, Any] = {
        "schema_version": OUTPUTS_SCHEMA_VERSION,
        "generated_at": datetime.now(tz=timezone.utc).isoformat(),
        **counts,
        "by_status": dict(sorted(by_status.items())),
        "unique_images": len(hashes),
        "submissions": attempts,
        "duration_seconds": (
            {
                "min": durations[0],
                "median": statistics.median(durations),
                "p95": _percentile(durations, 0.95),
                "max": durations[-1],
            }
            if durations
            else None
        ),
        "first_submit": _iso(first_submit),
        "last_finish": _iso(last_finish),
        "top_errors": [{"error": e, "count": c} for e, c in errors.most_common(10)],
    }
    stats.update(extra)
    return stats


def write_stats(records: Iterable[Record], path: PathLike, **extra: Any) -> dict[str, Any]:
    """
    Write :func:`compute_stats` as ``_stats.json`` (atomically) and return it.

    :param records: manifest records
    :param path: the file, or a directory (then ``<path>/_stats.json``)
    :param extra: added to the stats as is (``manifest``, ``spend`` ...)
    """
    target = to_storage_path(path)
    if not target.name.endswith(".json"):
        target = target / STATS_NAME
    stats = compute_stats(records, **extra)
    with _atomic_writer(target) as fh:
        json.dump(stats, fh, ensure_ascii=False, indent=2)
        fh.write("\n")
    return {**stats, "path": str(target)}


# ------------------------------------------------------------------------------------ all at once
def write_training_outputs(
    records: Iterable[Record],
    source_root: PathLike | None,
    *,
    output_dir: PathLike | None = None,
    caption_extension: str | None = ".txt",
    captions_next_to_images: bool = False,
    imagefolder_metadata: bool = False,
    parquet_path: PathLike | None = None,
    stats_path: PathLike | None = None,
    caption_prompt: int = 1,
    strip_parameters: bool = False,
    bot_type: str | None = None,
    manifest_path: PathLike | None = None,
    spend: Any = None,
) -> dict[str, Any]:
    """
    Write the training-set outputs asked for from one set of records (the end of a batch or fan-out).

    :param records: manifest records (read once into memory here, since several writers go over them)
    :param source_root: the directory the images were listed from
    :param output_dir: where mirrored captions go (unless ``captions_next_to_images``)
    :param caption_extension: ``.txt`` or ``.caption``; None writes no captions
    :param captions_next_to_images: sidecars next to the images (in ``source_root``) instead of under
        ``output_dir``
    :param imagefolder_metadata: write ``metadata.jsonl`` at ``source_root`` (Hugging Face ImageFolder)
    :param parquet_path: write the Parquet file there (needs pyarrow)
    :param stats_path: write ``_stats.json`` there (a file or a directory); None: none
    :param caption_prompt: which prompt is the caption (1-4)
    :param strip_parameters: drop Midjourney parameters from captions and ``text``
    :param bot_type: the run's bot type, recorded in the Parquet file and the stats
    :param manifest_path: recorded in the stats
    :param spend: the run's spend where known, recorded in the stats
    :return: counts and paths of everything written (small, for XCom)
    :raises ApicoreConfigError: a bad option, or ``imagefolder_metadata`` without ``source_root``
    """
    _check_caption_prompt(caption_prompt)
    if caption_extension is not None:
        check_caption_extension(caption_extension)
    if imagefolder_metadata and source_root is None:
        raise ApicoreConfigError("imagefolder_metadata=True needs the images' root directory (source_root)")
    if parquet_path is not None:
        _pyarrow()  # fail before writing anything
    materialised = list(records)
    summary: dict[str, Any] = {"counts": outcome_counts(materialised)}
    if caption_extension is not None and (output_dir is not None or source_root is not None):
        summary["captions"] = write_captions(
            materialised,
            source_root,
            caption_extension,
            output_dir=None if captions_next_to_images else output_dir,
            caption_prompt=caption_prompt,
            strip_parameters=strip_parameters,
        )
    if imagefolder_metadata:
        summary["imagefolder_metadata"] = write_imagefolder_metadata(
            materialised, source_root, caption_prompt=caption_prompt, strip_parameters=strip_parameters
        )
    if parquet_path is not None:
        summary["parquet"] = write_parquet(
            materialised,
            parquet_path,
            source_root=source_root,
            caption_prompt=caption_prompt,
            strip_parameters=strip_parameters,
            bot_type=bot_type,
        )
    if stats_path is not None:
        extra: dict[str, Any] = {"bot_type": bot_type, "spend": spend}
        if manifest_path is not None:
            extra["manifest"] = str(manifest_path)
        stats = write_stats(materialised, stats_path, **extra)
        summary["stats"] = stats["path"]
    return summary
