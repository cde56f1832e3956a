"""
The fan-out pattern: one mapped ``MJDescribeOperator`` per image, then one task writing the results.

:func:`images_for_mapping` lists the images (refusing, with advice, more than Airflow can map) and
:func:`write_fanout_results` turns the mapped tasks' results into the same manifest records
:class:`~airflow_provider_apicore.operators.batch_describe.MJBatchDescribeOperator` writes, plus the
training-set outputs of :mod:`airflow_provider_apicore.outputs` (caption sidecars, ImageFolder
``metadata.jsonl``, Parquet, ``_stats.json``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from airflow.sdk import ObjectStoragePath, conf

from airflow_provider_apicore.exceptions import ApicoreConfigError, ApicoreError
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.images import list_images
from airflow_provider_apicore.manifest import (
    FAILED_STATUSES,
    MANIFEST_NAME,
    NOT_FOUND,
    REJECTED,
    SUCCESS,
    TIMEOUT,
    UNKNOWN_FATE,
    ManifestRecord,
    apply_result,
    apply_task,
    now_ms,
    to_storage_path,
    write_manifest,
)
from airflow_provider_apicore.outputs import STATS_NAME, write_training_outputs

_HASH_CHUNK = 1024 * 1024


def max_map_length() -> int:
    """Airflow's ``[core] max_map_length``: the most mapped task instances one task may expand to."""
    return conf.getint("core", "max_map_length", fallback=1024)


def images_for_mapping(source: Any, pattern: str = "*", recursive: bool = True) -> list[str]:
    """
    List the images under ``source`` as strings ready for ``.expand(image=...)``.

    :raises ApicoreConfigError: more images than ``[core] max_map_length`` allows; the message says
        what to do instead of letting the mapping fail later with a cryptic error
    """
    paths = [str(p) for p in list_images(source, pattern=pattern, recursive=recursive)]
    limit = max_map_length()
    if len(paths) > limit:
        raise ApicoreConfigError(
            f"{len(paths)} images under {source!s} exceed Airflow's [core] max_map_length ({limit}) "
            "for one mapped task. Use MJBatchDescribeOperator (one task, many images, bounded "
            "concurrency, resumable manifest), narrow the pattern, or raise AIRFLOW__CORE__MAX_MAP_LENGTH."
        )
    return paths


def file_sha256(path: str | os.PathLike | ObjectStoragePath) -> str | None:
    """Hex SHA-256 of a file, read in chunks; None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with to_storage_path(path).open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def fanout_records(
    images: Sequence[str],
    results: Sequence[dict[str, Any] | None],
    task_ids: Sequence[str | None] | None = None,
    apicore_conn_id: str = ApicoreHook.default_conn_name,
    unknown_fates: Sequence[dict[str, Any] | None] | None = None,
) -> list[ManifestRecord]:
    """
    Manifest records for a fan-out: image ``i`` got ``results[i]`` from mapped task ``i``.

    A mapped task that failed has no result. If it had been accepted (its ``task_id`` XCom), the task
    is looked up (one ``list-by-condition`` request for all of them) so that the record says why it
    failed, exactly as the batch operator would. A task whose submission's answer was lost (its
    ``unknown_fate`` XCom: ``{"state", "cause"}``) is ``unknown_fate`` with the submission's ``state``
    tag, so that the job, if APICore created one, can be found by that tag; it was not resent. Otherwise
    the image never reached APICore and is ``rejected``.

    :param images: the mapped images, in map-index order
    :param results: each mapped task's return value (None where it failed)
    :param task_ids: each mapped task's ``task_id`` XCom (None where it never got one)
    :param apicore_conn_id: connection used to look up the failed tasks
    :param unknown_fates: each mapped task's ``unknown_fate`` XCom (None where the answer was not lost)
    """
    if len(results) != len(images):
        raise ApicoreError(f"{len(images)} images but {len(results)} results: the lists must align")
    task_ids = list(task_ids) if task_ids is not None else [None] * len(images)
    unknown_fates = list(unknown_fates) if unknown_fates is not None else [None] * len(images)
    if len(task_ids) != len(images) or len(unknown_fates) != len(images):
        raise ApicoreError(
            f"{len(images)} images but {len(task_ids)} task_ids and {len(unknown_fates)} unknown_fates: "
            "the lists must align"
        )
    records: list[ManifestRecord] = []
    lookups: dict[str, list[ManifestRecord]] = {}
    for index, (image, result) in enumerate(zip(images, results, strict=True)):
        record = ManifestRecord(image=str(image), sha256=file_sha256(image))
        if result:
            apply_result(record, result)
            record.attempts = 1
        elif task_ids[index]:
            record.task_id = str(task_ids[index])
            record.attempts = 1
            lookups.setdefault(record.task_id, []).append(record)
        elif unknown_fates[index]:
            fate = unknown_fates[index] or {}
            record.status = UNKNOWN_FATE
            record.state = fate.get("state")
            record.attempts = 1
            record.error = str(
                fate.get("cause")
                or f"the describe task (map index {index}) lost the answer to its submission"
            )
        else:
            record.status = REJECTED
            record.error = (
                f"the describe task (map index {index}) failed before APICore accepted the image; "
                "see that task's log"
            )
        records.append(record)
    if lookups:
        found = {
            task.id: task for task in ApicoreHook(apicore_conn_id=apicore_conn_id).list_tasks(list(lookups))
        }
        for task_id, waiting in lookups.items():
            task = found.get(task_id)
            for record in waiting:
                if task is None:
                    record.status, record.error = NOT_FOUND, f"APICore does not know task {task_id}"
                    continue
                apply_task(record, task)
                if not task.is_terminal:
                    record.status = TIMEOUT
                    record.error = f"task {task_id} was still {task.status.value} when the wait ended"
    stamp = now_ms()
    for rev, record in enumerate(records, 1):
        record.rev, record.updated_at = rev, stamp
    return records


def write_fanout_results(
    images: Sequence[str],
    results: Sequence[dict[str, Any] | None],
    output_dir: str | os.PathLike | ObjectStoragePath,
    caption_prompt: int = 1,
    *,
    task_ids: Sequence[str | None] | None = None,
    unknown_fates: Sequence[dict[str, Any] | None] | None = None,
    root: str | os.PathLike | ObjectStoragePath | None = None,
    strip_parameters: bool = False,
    apicore_conn_id: str = ApicoreHook.default_conn_name,
    caption_extension: str | None = ".txt",
    captions_next_to_images: bool = False,
    imagefolder_metadata: bool = False,
    parquet_path: str | os.PathLike | ObjectStoragePath | None = None,
    stats: bool = True,
) -> dict[str, Any]:
    """
    Write ``manifest.jsonl`` (one record per image), one caption per described image and the other
    training-set outputs asked for (see :func:`~airflow_provider_apicore.outputs.write_training_outputs`).

    :param images: the mapped images, in map-index order
    :param results: each mapped task's result (None where it failed)
    :param output_dir: where the manifest and captions go (any ObjectStoragePath, path or URL)
    :param caption_prompt: which of the four prompts is the caption (1-4)
    :param task_ids: each mapped task's ``task_id`` XCom, to explain failures
    :param unknown_fates: each mapped task's ``unknown_fate`` XCom (``{"state", "cause"}``): images whose
        submission's answer was lost are recorded ``unknown_fate`` with that state tag, never resent
    :param root: the listed directory; captions mirror the images' paths under it
    :param strip_parameters: drop trailing Midjourney parameters (``--ar 4:3``) from captions
    :param apicore_conn_id: connection used to look up failed tasks
    :param caption_extension: ``.txt`` or ``.caption`` (kohya-style sidecars); None: no captions
    :param captions_next_to_images: write the captions next to the images (under ``root``) instead of
        mirrored under ``output_dir``
    :param imagefolder_metadata: write a Hugging Face ImageFolder ``metadata.jsonl`` at ``root``
    :param parquet_path: also write the records as Parquet there (needs the ``parquet`` extra)
    :param stats: write ``_stats.json`` into ``output_dir``
    :return: a small summary for XCom: ``manifest``, ``images``, ``succeeded``, ``failed``, ``captions``,
        and the paths of ``imagefolder_metadata`` and ``parquet`` when asked for
    """
    records = fanout_records(images, results, task_ids, apicore_conn_id, unknown_fates=unknown_fates)
    out = to_storage_path(output_dir)
    manifest = out / MANIFEST_NAME
    write_manifest(manifest, records)
    outputs = write_training_outputs(
        records,
        root,
        output_dir=out,
        caption_extension=caption_extension,
        captions_next_to_images=captions_next_to_images,
        imagefolder_metadata=imagefolder_metadata,
        parquet_path=parquet_path,
        stats_path=out / STATS_NAME if stats else None,
        caption_prompt=caption_prompt,
        strip_parameters=strip_parameters,
        manifest_path=manifest,
    )
    summary: dict[str, Any] = {
        "manifest": str(manifest),
        "images": len(records),
        "succeeded": sum(1 for r in records if r.status == SUCCESS),
        "failed": sum(1 for r in records if r.status in FAILED_STATUSES),
        "captions": outputs.get("captions", {}).get("written", 0),
    }
    # Paths of the outputs asked for beyond the defaults (``_stats.json`` is always <output_dir>/_stats.json).
    for key in ("imagefolder_metadata", "parquet"):
        if key in outputs:
            summary[key] = outputs[key]["path"]
    return summary
