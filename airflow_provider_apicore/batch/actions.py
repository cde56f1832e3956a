"""
What the batch engine needs to know about one single-image action: the "action adapters".

The loop (:mod:`.loop`) is the same for every action: bounded in flight, one ``list-by-condition``
per interval, a durable record per input, lost answers recorded ``unknown_fate``, resume from the
manifest. An adapter adds only what differs between actions:

* :meth:`BatchAction.read`: the record's input, ready to send (:class:`Item`: a payload body and the
  hex SHA-256 the ``state`` tag is derived from), or a problem that makes it final
* :meth:`BatchAction.payload` / :meth:`BatchAction.validate` / :meth:`BatchAction.submit`: the body,
  its schema and the endpoint
* :meth:`BatchAction.apply`: the result mapper (task object -> record)

:class:`DescribeAction` describes images (inputs with the same bytes share one job);
:class:`ImagineAction` imagines prompts (every list entry is its own job, keyed by index and prompt).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.exceptions import ApicoreError, ApicoreInputError, TaskFailedError
from airflow_provider_apicore.images import load_image
from airflow_provider_apicore.manifest import ManifestRecord, apply_task
from airflow_provider_apicore.schemas import validate_describe_payload, validate_payload

if TYPE_CHECKING:
    from airflow_provider_apicore.hooks.apicore import ApicoreHook
    from airflow_provider_apicore.models import MJTask, SubmitResult


@dataclass(frozen=True)
class Item:
    """
    One input ready to send.

    :param sha256: hex SHA-256 identifying the input (image bytes, or index and prompt)
    :param body: the action's own payload fields (``base64``, or ``prompt``)
    """

    sha256: str
    body: dict[str, Any]


class BatchAction:
    """
    Base of the action adapters; see the module docstring.

    :param notify_hook: ``notifyHook`` sent with each input
    :param bot_type: ``botType`` sent with each input
    """

    #: the action's name, for logs and errors
    name = "action"
    #: the payload field that carries the input; a schema error on another field is a setting's fault
    input_field = ""
    #: inputs with the same SHA-256 share one job
    dedupe = False

    def __init__(self, notify_hook: str | None = None, bot_type: str | None = None) -> None:
        self.notify_hook = notify_hook
        self.bot_type = bot_type

    def read(self, record: ManifestRecord, max_bytes: int) -> Item:
        """
        The record's input.

        :raises ImageReadError: a transient read problem (read again, then ``read_error``)
        :raises ApicoreInputError: the input can never be sent (``rejected``)
        """
        raise NotImplementedError

    def payload(self, item: Item, state: str) -> dict[str, Any]:
        """The body of one submission; the settings in it were checked before the batch began."""
        payload: dict[str, Any] = {**item.body, "state": state}
        if self.notify_hook:
            payload["notifyHook"] = self.notify_hook
        if self.bot_type:
            payload["botType"] = self.bot_type
        return payload

    def validate(self, payload: dict[str, Any]) -> None:
        """:raises ApicoreInputError: the payload breaks the action's schema"""
        raise NotImplementedError

    def submit(self, hook: ApicoreHook, payload: dict[str, Any]) -> SubmitResult:
        """Send one validated payload with the hook's retries off (the loop decides every pause)."""
        raise NotImplementedError

    def apply(self, record: ManifestRecord, task: MJTask, hook: ApicoreHook, log: Any) -> None:
        """Copy what a task object says into the record (the result mapper)."""
        apply_task(record, task)


class DescribeAction(BatchAction):
    """``/mj/submit/describe`` over images; identical bytes are described once."""

    name = "describe"
    input_field = "base64"
    dedupe = True

    def read(self, record: ManifestRecord, max_bytes: int) -> Item:
        data = load_image(record.image, max_bytes=max_bytes)
        return Item(data.sha256, {"base64": data.to_data_url()})

    def validate(self, payload: dict[str, Any]) -> None:
        validate_describe_payload(payload)

    def submit(self, hook: ApicoreHook, payload: dict[str, Any]) -> SubmitResult:
        return hook.submit_describe(payload, validate=False, retries=0)


def prompt_key(index: int, prompt: str) -> tuple[str, str]:
    """
    The manifest key and SHA-256 of the prompt at ``index``: ``#<index>:<sha256[:12]>``.

    The same prompt twice in the list is two jobs (two different grids); a rerun over the same list
    finds the same keys.
    """
    digest = hashlib.sha256(f"{index}\0{prompt}".encode()).hexdigest()
    return f"#{index}:{hashlib.sha256(prompt.encode()).hexdigest()[:12]}", digest


class ImagineAction(BatchAction):
    """
    ``/mj/submit/imagine`` over prompts. The record keeps the prompt (``prompt``); on success it gets
    the task id, ``image_url`` and, with ``output_path``, the stored ``files``.

    :param output_path: directory the grids are stored in (``None``: not downloaded)
    :param split_grid: store the four pictures of each grid instead of the grid
    """

    name = "imagine"
    input_field = "prompt"
    dedupe = False

    def __init__(
        self,
        notify_hook: str | None = None,
        bot_type: str | None = None,
        output_path: Any = None,
        split_grid: bool = False,
    ) -> None:
        super().__init__(notify_hook, bot_type)
        self.output_path = output_path
        self.split_grid = split_grid

    def read(self, record: ManifestRecord, max_bytes: int) -> Item:
        prompt = record.prompt
        if not isinstance(prompt, str):
            raise ApicoreInputError(f"the manifest record {record.image} has no prompt to imagine")
        index = record.image[1:].split(":", 1)[0]
        digest = hashlib.sha256(f"{index}\0{prompt}".encode()).hexdigest()
        return Item(digest, {"prompt": prompt})

    def validate(self, payload: dict[str, Any]) -> None:
        validate_payload("imagine_payload", payload)

    def submit(self, hook: ApicoreHook, payload: dict[str, Any]) -> SubmitResult:
        return hook.submit_imagine(payload, validate=False, retries=0)

    def apply(self, record: ManifestRecord, task: MJTask, hook: ApicoreHook, log: Any) -> None:
        from airflow_provider_apicore.family_results import check_success
        from airflow_provider_apicore.manifest import copy_task_progress

        if not copy_task_progress(record, task):
            return
        try:
            check_success(task)
        except TaskFailedError as err:
            record.status = err.status
            record.error = err.fail_reason or "no reason given"
            return
        record.status = task.status.value
        record.error = None
        if self.output_path and not record.files:
            self._store(record, task, hook, log)

    def _store(self, record: ManifestRecord, task: MJTask, hook: ApicoreHook, log: Any) -> None:
        """Download the grid through the hook; a failed download is kept in ``error`` (task succeeded)."""
        from airflow_provider_apicore.operators.family_common import full_task, store_task_image

        try:
            if self.split_grid:
                task = full_task(hook, task)
            record.files = store_task_image(hook, task, self.output_path, self.split_grid)
        except (ApicoreError, OSError) as err:
            record.error = f"the image of task {task.id} could not be stored: {err}"
            log.warning("%s: %s", record.image, record.error)
