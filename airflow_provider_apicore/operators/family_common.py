"""
What the image-producing operators share on top of
:class:`~airflow_provider_apicore.operators.base.MJSubmitOperator`: reading input images into data
URLs, and storing a finished task's image under ``output_path`` (optionally cut into four).
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.buttons import available_actions, parse_buttons
from airflow_provider_apicore.exceptions import ApicoreConfigError, ApicoreInputError, ApicoreResponseError
from airflow_provider_apicore.family_results import task_result
from airflow_provider_apicore.images import DEFAULT_MAX_IMAGE_BYTES, ImageData, load_image

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_apicore.hooks.apicore import ApicoreHook
    from airflow_provider_apicore.models import MJTask

ImageInput = str | os.PathLike | ObjectStoragePath

#: Task actions whose image is a 2x2 grid (servers' and the gateway's names).
GRID_ACTIONS = frozenset(
    {
        "IMAGINE",
        "VARIATION",
        "REROLL",
        "BLEND",
        "ZOOM",
        "PAN",
        "OUTPAINT",
        "HIGH_VARIATION",
        "LOW_VARIATION",
        "INPAINT",
        "CUSTOM_ZOOM",
    }
)


def image_list(value: Any, field: str) -> list[Any]:
    """
    A list of image inputs from what a DAG passed: a list/tuple, one path, or a rendered template that
    printed a list (``"['a.png', 'b.png']"``).

    :param value: the argument as given or rendered
    :param field: the argument's name, for errors
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and value.strip().startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, list):
                return parsed
    if isinstance(value, (str, os.PathLike, ObjectStoragePath)):
        return [value]
    raise ApicoreInputError(
        f"{field} must be a path, a data URL or a list of them; got {type(value).__name__}"
    )


def load_images(
    values: Sequence[Any], field: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> list[ImageData]:
    """
    Read and check images (paths, ObjectStoragePaths or data URLs); types come from the bytes.

    :raises InvalidImageError: one of them is missing, unreadable, empty, too large or not an image
    """
    return [load_image(value, max_bytes=max_bytes) for value in values]


def summary(images: Sequence[ImageData]) -> str:
    return ", ".join(image.log_summary() for image in images)


def is_grid(task: MJTask) -> bool:
    """Whether a finished task's image is a 2x2 grid: it offers U1-U4, or its action makes grids."""
    buttons = parse_buttons((task.raw or {}).get("buttons"))
    if any(b["action"] == "upscale" and b["index"] for b in buttons):
        return True
    if buttons and not any(a.startswith("upscale ") for a in available_actions(buttons)):
        return False
    return (task.action or "").upper() in GRID_ACTIONS


def storage_dir(output_path: Any) -> ObjectStoragePath:
    """``output_path`` (str, URL or ObjectStoragePath) as an ObjectStoragePath directory."""
    from airflow_provider_apicore.images import _to_storage_path

    if isinstance(output_path, str) and not output_path.strip():
        raise ApicoreConfigError(
            "output_path is empty; give a directory such as /data/out or s3://bucket/out"
        )
    try:
        return _to_storage_path(output_path)
    except ApicoreInputError as err:
        raise ApicoreConfigError(f"output_path is not usable: {err}") from None


def store_task_image(
    hook: ApicoreHook, task: MJTask, output_path: Any, split: bool, log: Any = None
) -> list[str]:
    """
    Download a finished task's image through the hook and store it under ``output_path``.

    Files are named after the task: ``<task id>.<ext>``, or ``<task id>_1.png`` … ``_4.png`` when a
    grid is cut (``split``). A single image (an upscale) is stored whole even with ``split``.

    :return: the stored paths, as strings (what goes to XCom)
    :raises ApicoreResponseError: the task has no image URL
    :raises ImageDownloadError: the download failed or is not an image
    """
    from airflow_provider_apicore.hooks.download import write_atomically
    from airflow_provider_apicore.imaging import split_grid

    url = task.image_url
    if not url:
        raise ApicoreResponseError(f"task {task.id} finished without an imageUrl; nothing to download")
    url = urljoin(hook.base_url + "/", url)
    data, info = hook.fetch_image(url)
    directory = storage_dir(output_path)
    if split and is_grid(task):
        paths = []
        for number, piece in enumerate(split_grid(data, url), start=1):
            paths.append(str(write_atomically(directory / f"{task.id}_{number}.png", piece)))
    else:
        if split and log:
            log.info("Task %s (%s) is a single image, not a grid: stored whole", task.id, task.action)
        paths = [str(write_atomically(directory / f"{task.id}.{info.extension}", data))]
    if log:
        log.info(
            "Stored %d file(s) of task %s (%dx%d %s) under %s",
            len(paths),
            task.id,
            info.width,
            info.height,
            info.mime,
            directory,
        )
    return paths


def full_task(hook: ApicoreHook, task: MJTask) -> MJTask:
    """
    The whole task object of a finished task that came from a trigger event.

    Events carry a compact copy (no ``prompt``, dimensions or seed, to keep the metadata database
    small); one fetch gets the rest. When that read fails, the compact copy is used as it is.
    """
    from airflow_provider_apicore.exceptions import ApicoreError

    if "prompt" in (task.raw or {}):
        return task
    try:
        full = hook.fetch_task(task.id)
    except ApicoreError:
        return task
    return full if full.status is task.status else task


class ImageOutputMixin:
    """
    ``output_path`` and ``split_grid`` for operators whose task produces an image.

    Mixed into an :class:`~airflow_provider_apicore.operators.base.MJSubmitOperator` subclass; its
    :meth:`map_result` is the result of :func:`~airflow_provider_apicore.family_results.task_result`
    plus ``files`` (the stored paths) when ``output_path`` is set.
    """

    output_path: Any
    split_grid: bool

    def map_result(self, task: MJTask, hook: ApicoreHook, context: Context) -> dict[str, Any]:
        from airflow_provider_apicore.family_results import check_success

        check_success(task)
        task = full_task(hook, task)
        files = None
        if self.output_path:
            files = store_task_image(
                hook, task, self.output_path, self.split_grid, getattr(self, "log", None)
            )
        return task_result(task, files)
