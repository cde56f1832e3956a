"""MJBatchDescribeOperator: describe a whole directory of images in one task, resumably."""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath, conf
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_apicore.account import QuotaGuard, usd_amount
from airflow_provider_apicore.batch.actions import BatchAction, DescribeAction
from airflow_provider_apicore.batch.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from airflow_provider_apicore.batch.errors import LeaseLostError, ManifestUnavailableError, UnknownFateError
from airflow_provider_apicore.batch.lease import FencingToken, ManifestLease
from airflow_provider_apicore.batch.loop import (
    MAX_IDLE_BACKOFFS,
    MAX_SUBMIT_BACKOFF,
    RATE_WINDOW_MS,
    RETRYABLE_FAILURES,
    UNKNOWN_FATE_POLICIES,
    BatchLoop,
    duration,
)
from airflow_provider_apicore.batch.planner import (
    add_listed,
    apply_settings,
    list_source,
    settings_fingerprint,
)
from airflow_provider_apicore.exceptions import ApicoreConfigError, ApicoreError, ApicoreInputError
from airflow_provider_apicore.hooks.apicore import ApicoreHook, mask_url_credentials, retry_delay
from airflow_provider_apicore.images import DEFAULT_MAX_IMAGE_BYTES
from airflow_provider_apicore.lineage import (
    ApicoreLineageMixin,
    asset_event_extra,
    emit_manifest_event,
    manifest_outlet,
)
from airflow_provider_apicore.links import ApicoreLinksMixin
from airflow_provider_apicore.manifest import PENDING, Manifest, to_storage_path
from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.operators.masking import NotifyHookMaskingMixin
from airflow_provider_apicore.schemas import DESCRIBE_PAYLOAD, validate_describe_payload
from airflow_provider_apicore.tracking import EVENT_ERROR
from airflow_provider_apicore.triggers.task import MJTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = [
    "MAX_IDLE_BACKOFFS",
    "MAX_SUBMIT_BACKOFF",
    "RATE_WINDOW_MS",
    "RETRYABLE_FAILURES",
    "MJBatchDescribeOperator",
]

#: Shortest pause of submissions (nothing in flight) that a deferrable batch waits in the triggerer.
MIN_DEFERRED_PAUSE = 5.0
#: Longest ``state`` tag sent (the C# midjourney-proxy stores at most 255 characters).
MAX_STATE_LENGTH = 255
#: A 1x1 PNG: checks the describe settings (``botType``, ``notifyHook``, ``state``) before any image.
_PROBE_IMAGE = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _number(name: str, value: Any, *, integer: bool = False, minimum: float = 0, allow_none: bool = False):
    """
    Check one numeric argument and return it as a number.

    Integers must be >= ``minimum``, other numbers above it. Template strings are returned unchanged
    (checked again once rendered); numeric strings, as rendered templates are, are converted.
    """
    if _is_template(value) or (value is None and allow_none):
        return value
    number = value
    if isinstance(value, str):
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            number = None
    kind = f"a whole number >= {minimum:g}" if integer else f"a number above {minimum:g}"
    valid = (
        not isinstance(number, bool)
        and isinstance(number, int if integer else (int, float))
        and math.isfinite(number)
        and (number >= minimum if integer else number > minimum)
    )
    if not valid:
        raise ApicoreConfigError(f"{name} must be {kind}{' (or None)' if allow_none else ''}, got {value!r}")
    return number


def state_tag(dag_id: str, run_id: str, attempts: int) -> str:
    """
    The ``state`` prefix of a run's submissions, ``<dag_id>/<run_id>``, shortened with a hash when the
    full tag (``<prefix>/<sha256[:16]>/<attempt>``) would pass :data:`MAX_STATE_LENGTH`.
    """
    tag = f"{dag_id}/{run_id}"
    room = MAX_STATE_LENGTH - 18 - len(str(attempts))
    if len(tag) > room:
        digest = hashlib.sha256(tag.encode("utf-8")).hexdigest()[:12]
        tag = f"{tag[: room - 13]}~{digest}"
    return tag


class MJBatchDescribeOperator(ApicoreLinksMixin, ApicoreLineageMixin, NotifyHookMaskingMixin, BaseOperator):
    """
    Describe every image of a directory (or a list of images) with Midjourney, in one task.

    Thousands of images, one Airflow task: at most ``max_in_flight`` jobs are upstream at once, new
    ones are submitted as slots free up, and every job in flight is followed with **one**
    ``list-by-condition`` request per ``poll_interval``. Images are read and encoded one at a time, just
    before they are sent. Results go to a JSONL manifest (see :mod:`airflow_provider_apicore.manifest`)
    written as the batch goes; XCom gets only a small summary. The engine's parts live in
    :mod:`airflow_provider_apicore.batch`: listing and planning (``planner``), the submit/poll loop
    (``loop``), what a failed submission means (``submit``) and the manifest's lease (``lease``).

    **Resuming.** A retry of the task (or the next scheduled run, with the same ``manifest_path``)
    reads the manifest first: finished images are skipped (their files are not even opened when path,
    size and modification time are unchanged), images with an accepted task id are only followed,
    never submitted again, and images with the same bytes (SHA-256) are submitted once and share the
    result. ``execute_complete`` after a deferral continues from the manifest in whatever process runs
    it; if the manifest is missing or unreadable there it fails with
    :class:`~airflow_provider_apicore.batch.errors.ManifestUnavailableError` (never an empty success).
    With ``deferrable=True`` on more than one host, ``manifest_path`` must be on storage every worker
    sees (``s3://``, ``gs://``, a shared volume).

    **At most once by default: unknown fates.** Before an image is sent its record is written durably
    as ``pending_submit`` with a unique ``state`` tag (``<dag_id>/<run_id>/<sha256[:16]>/<attempt>``), and
    the task id is written the moment it is accepted. When the answer to a submission is lost (a
    500/502/504, a 2xx that is not JSON, a read timeout, a connection dropped after sending:
    ``SubmissionFateUnknownError``), or a try died while a submission was in the air, APICore may or
    may not have started a paid job, and the protocol cannot look a task up by ``state``. What happens
    then is ``on_unknown_fate``:

    * ``"record"`` (default): the image is recorded ``unknown_fate`` with the reason and its ``state``
      tag, counted in the summary (``unknown_fate``) and the final log line, and never sent again.
    * ``"fail"``: the same, and the task fails at the end (after every job in flight was followed) with
      :class:`~airflow_provider_apicore.batch.errors.UnknownFateError` naming the images.
    * ``"resubmit"``: the same image is sent again with the next attempt's tag, at most
      ``max_submit_attempts`` submissions in all. **This may pay twice**: the real servers do not
      deduplicate (new-api rewrites midjourney-proxy's code 21 "already exists" to 1). A server that does
      answer code 21 gets the existing task followed (no second job).

    **Back-pressure without blocking.** Submissions go out with the hook's retries off. A 429/503
    (honouring ``Retry-After``), an unreachable server and "try later" codes (23 queue full, 9, 3 no
    account free) mean nothing was accepted: the image goes back to the front of the line and
    submitting pauses (exponential backoff capped at :data:`MAX_SUBMIT_BACKOFF` seconds), while the jobs
    in flight keep being followed.

    **Only what cannot be fixed is final.** Settings (``bot_type``, ``notify_hook``, the ``state`` tag)
    and the connection are checked before any image is listed or marked; a bad one fails the task.
    A file that is not a usable image is ``rejected``; one that could not be read for a reason that may
    pass (an I/O error, a storage timeout) is read again twice, then recorded ``read_error``, which the
    next run reads again.

    **One writer per manifest.** The try holds a lease ``<manifest>.lease`` (see
    :mod:`airflow_provider_apicore.batch.lease`): a second run on the same manifest fails fast naming the
    holder; a later try of the same task instance takes it over, and the earlier try, if still alive,
    stops before writing again.

    **Kill.** ``on_kill`` stops submitting, writes the manifest and logs the jobs in flight. APICore has
    no cancel endpoint: those jobs keep running upstream (and are paid); their ids are in the manifest
    and a retry follows them.

    **Deferrable.** With ``deferrable=True`` the worker submits while slots are free, then defers to
    :class:`~airflow_provider_apicore.triggers.task.MJTaskTrigger` with the ids in flight; the trigger
    returns once half of them finished (``min_finished``; all of them when nothing is left to submit)
    or the earliest per-image deadline passes, and ``execute_complete`` records the results, submits
    into the freed slots and defers again.

    :param source: a directory (local path, ``file://``, ``s3://``, ``gs://``, ``memory://`` ... or an
        ``ObjectStoragePath``), or a list of image paths (templated)
    :param manifest_path: where the JSONL manifest is written and resumed from (templated); with
        ``deferrable=True`` on several hosts, a location every worker sees
    :param max_in_flight: most jobs upstream at once (whole number >= 1; templated)
    :param pattern: file-name pattern for directories (case-insensitive fnmatch; templated)
    :param recursive: descend into subdirectories
    :param apicore_conn_id: the Airflow connection of type ``apicore``
    :param poll_interval: seconds between two status polls (templated)
    :param timeout: seconds one image may take after it was accepted before it is recorded as
        ``timeout`` (``None``: no limit; templated)
    :param deferrable: wait in the triggerer between submission rounds
    :param max_image_bytes: largest image accepted, in bytes (larger files are skipped when listing)
    :param notify_hook: URL APICore calls on each status change of every job (templated)
    :param bot_type: ``MID_JOURNEY`` (server default) or ``NIJI_JOURNEY``
    :param flush_interval: seconds between two rewrites of the whole manifest (urgent changes are
        journaled at once, see :mod:`airflow_provider_apicore.manifest`)
    :param on_unknown_fate: ``"record"`` (default), ``"fail"`` or ``"resubmit"`` (see above)
    :param max_submit_attempts: with ``on_unknown_fate="resubmit"``, most submissions of one image
    :param resubmit_unknown_fate: deprecated: ``True`` is ``on_unknown_fate="resubmit"``, ``False`` is
        ``"record"``
    :param resubmit_failed: on a new run, submit again the images that ended ``FAILURE``, ``CANCEL``,
        ``not_found`` or ``timeout`` in the manifest (default: keep those results)
    :param min_quota_usd: stop submitting once the token's remaining balance is below this many US
        dollars (read before the first submit, then at most once per ``poll_interval``); the jobs in
        flight are followed to the end, the unsent images stay ``pending`` and the task fails with
        :class:`~airflow_provider_apicore.exceptions.ApicoreQuotaExceededError` naming the balance. A
        refusal for balance by APICore itself (``quota_not_enough``) ends the batch the same way.
    :param estimated_cost_per_image_usd: the expected price of one image; before the first submit the
        batch refuses to start when the pending images would cost more than the balance (both
        numbers in the error). See :mod:`airflow_provider_apicore.account` for the balance endpoints.
    :param report_balance: put the balance before and after (and the spend) in the summary and the
        final log line; default: when ``min_quota_usd`` or ``estimated_cost_per_image_usd`` is set
    :param max_failures: fail the task at the end if more images than this failed (``None``: never;
        failures are in the manifest and the summary either way)
    :param lease: hold the manifest's lease (one writer per manifest); turn off only for stores where
        no second writer can exist
    :param output_dir: where mirrored captions and ``_stats.json`` go at the end (templated); default:
        captions (when asked for) next to the images, ``_stats.json`` next to the manifest
    :param caption_extension: ``.txt`` or ``.caption``: write one caption per described image (kohya-style
        sidecars; ``cat.png`` and ``cat.jpg`` never share one; stale ones are removed); None: none
    :param imagefolder_metadata: write a Hugging Face ImageFolder ``metadata.jsonl`` at the source root
    :param parquet_path: also write the records as Parquet there, with provenance columns (templated;
        needs the ``parquet`` extra)
    :param caption_prompt: which of the four prompts is the caption and ImageFolder ``text`` (1-4)
    :param strip_parameters: drop trailing Midjourney parameters (``--ar 4:3``) from captions

    The manifest is declared as the task's outlet (an ``Asset`` of its URI, or an ``AssetAlias`` while
    ``manifest_path`` is templated); the finished batch emits its event with ``extra`` = counts
    (succeeded, failed, unknown fate, pending, total), the manifest and the spend where known, so a
    DAG scheduled on it starts when the training data is ready. ``get_openlineage_facets_on_complete``
    reports the source as one input dataset and the manifest and captions as outputs.
    """

    template_fields: Sequence[str] = (
        "source",
        "manifest_path",
        "pattern",
        "notify_hook",
        "max_in_flight",
        "poll_interval",
        "timeout",
        "output_dir",
        "parquet_path",
    )
    ui_color = "#d7c9f0"

    def __init__(
        self,
        *,
        source: str | os.PathLike | ObjectStoragePath | Sequence[str | os.PathLike | ObjectStoragePath],
        manifest_path: str | os.PathLike | ObjectStoragePath,
        max_in_flight: int = 10,
        pattern: str = "*",
        recursive: bool = True,
        apicore_conn_id: str = ApicoreHook.default_conn_name,
        poll_interval: float = 10.0,
        timeout: float | None = 1800.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        notify_hook: str | None = None,
        bot_type: str | None = None,
        flush_interval: float = 30.0,
        on_unknown_fate: str | None = None,
        max_submit_attempts: int = 3,
        resubmit_unknown_fate: bool | None = None,
        resubmit_failed: bool = False,
        max_failures: int | None = None,
        lease: bool = True,
        min_quota_usd: float | None = None,
        estimated_cost_per_image_usd: float | None = None,
        report_balance: bool | None = None,
        output_dir: str | os.PathLike | ObjectStoragePath | None = None,
        caption_extension: str | None = None,
        imagefolder_metadata: bool = False,
        parquet_path: str | os.PathLike | ObjectStoragePath | None = None,
        caption_prompt: int = 1,
        strip_parameters: bool = False,
        **kwargs: Any,
    ) -> None:
        # The manifest is what the task produces: an asset (an alias while the path is templated),
        # so that a "training data ready" DAG can be scheduled on it.
        if "outlets" not in kwargs:
            try:
                alias = f"apicore-manifest-{kwargs.get('task_id')}"
                kwargs["outlets"] = [manifest_outlet(manifest_path, alias_name=alias)]
            except ApicoreConfigError:
                pass  # an unusable manifest_path: _check_arguments names it below
        super().__init__(**kwargs)
        if resubmit_unknown_fate is not None:
            warnings.warn(
                "resubmit_unknown_fate is deprecated: use on_unknown_fate='resubmit' (may pay twice) or "
                "on_unknown_fate='record'",
                DeprecationWarning,
                stacklevel=2,
            )
            if on_unknown_fate is None:
                on_unknown_fate = "resubmit" if resubmit_unknown_fate else "record"
        self.source = source
        self.manifest_path = manifest_path
        self.max_in_flight = max_in_flight
        self.pattern = pattern
        self.recursive = recursive
        self.apicore_conn_id = apicore_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = deferrable
        self.max_image_bytes = max_image_bytes
        self.notify_hook = notify_hook
        self.bot_type = bot_type
        self.flush_interval = flush_interval
        self.on_unknown_fate = on_unknown_fate or "record"
        self.max_submit_attempts = max_submit_attempts
        self.resubmit_failed = resubmit_failed
        self.max_failures = max_failures
        self.lease = lease
        self.min_quota_usd = min_quota_usd
        self.estimated_cost_per_image_usd = estimated_cost_per_image_usd
        self.report_balance = report_balance
        self.output_dir = output_dir
        self.caption_extension = caption_extension
        self.imagefolder_metadata = imagefolder_metadata
        self.parquet_path = parquet_path
        self.caption_prompt = caption_prompt
        self.strip_parameters = strip_parameters
        self._check_arguments()
        if not _is_template(notify_hook):
            mask_url_credentials(notify_hook)

    def _check_arguments(self) -> None:
        """Reject unusable arguments with the argument named; templated ones again after rendering."""
        self.min_quota_usd = usd_amount("min_quota_usd", self.min_quota_usd)
        self.estimated_cost_per_image_usd = usd_amount(
            "estimated_cost_per_image_usd", self.estimated_cost_per_image_usd
        )
        self._check_inputs()
        bot_type = self.bot_type
        if (
            bot_type is not None
            and not _is_template(bot_type)
            and bot_type not in ("MID_JOURNEY", "NIJI_JOURNEY")
        ):
            # Once, when the DAG is parsed: not one refusal per image at run time.
            raise ApicoreConfigError(f"bot_type must be 'MID_JOURNEY' or 'NIJI_JOURNEY', got {bot_type!r}")
        if self.manifest_path is None or (
            isinstance(self.manifest_path, str) and not self.manifest_path.strip()
        ):
            raise ApicoreConfigError("manifest_path must be a path or URL where the manifest is written")
        self.max_in_flight = _number("max_in_flight", self.max_in_flight, integer=True, minimum=1)
        self.poll_interval = _number("poll_interval", self.poll_interval)
        self.timeout = _number("timeout", self.timeout, allow_none=True)
        self.flush_interval = _number("flush_interval", self.flush_interval)
        self.max_submit_attempts = _number(
            "max_submit_attempts", self.max_submit_attempts, integer=True, minimum=1
        )
        self.max_failures = (
            None
            if self.max_failures is None
            else _number("max_failures", self.max_failures, integer=True, minimum=0)
        )
        if (
            not isinstance(self.max_image_bytes, int)
            or isinstance(self.max_image_bytes, bool)
            or self.max_image_bytes <= 0
        ):
            raise ApicoreConfigError(
                f"max_image_bytes must be a positive whole number of bytes, got {self.max_image_bytes!r}"
            )
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ApicoreConfigError(
                f"pattern must be a non-empty glob pattern such as '*.png', got {self.pattern!r}"
            )
        if self.on_unknown_fate not in UNKNOWN_FATE_POLICIES:
            raise ApicoreConfigError(
                f"on_unknown_fate must be one of {', '.join(map(repr, UNKNOWN_FATE_POLICIES))}, "
                f"got {self.on_unknown_fate!r}"
            )

    def _check_inputs(self) -> None:
        """Reject a missing ``source`` (another action's operator checks its own inputs)."""
        if self.source is None or (isinstance(self.source, (str, list, tuple)) and not self.source):
            raise ApicoreConfigError("source must be a directory, a path or a non-empty list of paths")

    def _make_action(self) -> BatchAction:
        """The action adapter every input is sent through (:mod:`airflow_provider_apicore.batch.actions`)."""
        return DescribeAction(self.notify_hook, self.bot_type)

    def _plan(self, manifest: Manifest) -> None:
        """A fresh try: put the source's images into the manifest (new ones ``pending``)."""
        listed = list_source(
            self.source,
            pattern=self.pattern,
            recursive=self.recursive,
            max_image_bytes=self.max_image_bytes,
            manifest=manifest,
        )
        add_listed(manifest, listed, self.log)
        apply_settings(
            manifest, settings_fingerprint("describe", DESCRIBE_PAYLOAD, bot_type=self.bot_type), self.log
        )

    # ------------------------------------------------------------------ Airflow entry points
    def execute(self, context: Context) -> dict[str, Any]:
        self._check_arguments()
        if hasattr(context.get("ti"), "xcom_push"):
            # Shown in the task view at once, deferred or not.
            self.persist_manifest_link(context, self.manifest_path)
        loop = self._open(context, fresh=True)
        return self._publish(context, self._guarded(loop, lambda: self._drive(loop)))

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, resume_from: str | None = None
    ) -> dict[str, Any]:
        """
        Resume after the trigger, in whatever process runs it: continue from the checkpoint the deferral
        wrote (``resume_from``) and the manifest, or from the whole manifest when there is none.

        :raises ManifestUnavailableError: the manifest is missing or unreadable here, or does not know
            the jobs the trigger followed (never an empty success)
        """
        self._check_arguments()
        if not isinstance(event, dict):
            event = {}  # the end of a deferred pause (a TimeDeltaTrigger's moment)
        loop = self._open(context, fresh=False, event=event, resume_from=resume_from)

        def resume() -> dict[str, Any]:
            if event.get("status") == EVENT_ERROR:
                loop.manifest.commit()
                loop.manifest.flush(force=True)
                reason = str(event.get("message")).rstrip(".")
                raise ApicoreError(
                    f"Following {len(loop.tracker.pending)} Midjourney tasks failed: {reason}. "
                    f"Every task id is kept in {loop.manifest.path}; a retry of this task resumes following "
                    "them."
                )
            tasks = [MJTask.from_json(raw) for raw in (event.get("tasks") or {}).values() if raw]
            loop.absorb(tasks, event.get("not_found") or [])
            return self._drive(loop)

        return self._publish(context, self._guarded(loop, resume))

    def _publish(self, context: Context, summary: dict[str, Any]) -> dict[str, Any]:
        """
        What a finished batch leaves beyond its manifest: the training-set outputs asked for, the
        manifest's asset event (its ``extra`` carries the counts), and the OpenLineage facets.
        """
        manifest = summary["manifest"]
        by_status = summary.get("by_status", {})
        counts = {
            "succeeded": summary["succeeded"],
            "failed": summary["failed"],
            "unknown_fate": summary["unknown_fate"],
            "pending": by_status.get(PENDING, 0),
            "total": summary["total"],
        }
        outputs: dict[str, Any] = {"manifest": manifest}
        file_counts: dict[str, int] = {}
        wanted = self.caption_extension or self.imagefolder_metadata or self.parquet_path or self.output_dir
        records = None
        if wanted or summary["total"] <= LINEAGE_TASK_IDS_UP_TO:
            from airflow_provider_apicore.manifest import read_manifest

            records = read_manifest(manifest)
        if wanted:
            from airflow_provider_apicore.outputs import write_training_outputs

            root = self.source if isinstance(self.source, (str, os.PathLike, ObjectStoragePath)) else None
            written = write_training_outputs(
                records,
                root,
                output_dir=self.output_dir,
                caption_extension=self.caption_extension,
                captions_next_to_images=self.output_dir is None,
                imagefolder_metadata=self.imagefolder_metadata,
                parquet_path=self.parquet_path,
                stats_path=self.output_dir or to_storage_path(manifest).parent,
                caption_prompt=self.caption_prompt,
                strip_parameters=self.strip_parameters,
                bot_type=self.bot_type,
                manifest_path=manifest,
                spend=summary.get("spent_usd"),
            )
            summary["outputs"] = {k: v for k, v in written.items() if k != "captions"}
            if "captions" in written:
                summary["captions"] = written["captions"].get("written", 0)
                file_counts["captions"] = summary["captions"]
                outputs["captions"] = str(self.output_dir or root)
        # The run facet lists APICore task ids only while they are few (records read above).
        self.set_lineage(
            [self.source],
            outputs,
            records,
            counts=None if records is not None else counts,
            spend=summary.get("spent_usd"),
            file_counts=file_counts,
        )
        if self.outlets and "outlet_events" in context:
            extra = asset_event_extra(counts=counts, manifest_path=manifest, spend=summary.get("spent_usd"))
            emit_manifest_event(context, self.outlets[0], manifest, extra)
        return summary

    def on_kill(self) -> None:
        """
        Stop submitting, write the manifest and log the jobs in flight.

        APICore has no cancel endpoint: jobs already accepted keep running upstream (and are paid).
        Their ids are in the manifest, so a retry of this task follows them instead of sending again.
        """
        loop: BatchLoop | None = getattr(self, "_loop", None)
        if loop is None:
            return
        loop.stopping = True
        try:
            loop.manifest.commit()
            loop.manifest.flush(force=True)
        except Exception as err:  # the process is being killed: report, do not mask the kill
            self.log.warning(
                "Could not write the manifest %s while being killed: %s", loop.manifest.path, err
            )
        ids = loop.in_flight_ids()
        self.log.warning(
            "Killed: no more images are submitted. APICore has no cancel endpoint, so %d jobs in flight keep "
            "running upstream%s; their task ids are in %s and a retry of this task follows them.",
            len(ids),
            f" ({', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''})" if ids else "",
            loop.manifest.path,
        )

    # ------------------------------------------------------------------ opening
    def _check_settings(self, tag: str) -> None:
        """Fail on a bad describe setting before any image is listed or marked."""
        probe: dict[str, Any] = {
            "base64": _PROBE_IMAGE,
            "state": f"{tag}/{'0' * 16}/{int(self.max_submit_attempts)}",
        }
        if self.notify_hook:
            probe["notifyHook"] = self.notify_hook
        if self.bot_type:
            probe["botType"] = self.bot_type
        try:
            validate_describe_payload(probe)
        except ApicoreInputError as err:
            raise ApicoreConfigError(
                f"The describe settings are not valid, so no image was sent or marked: {err}"
            ) from None

    def _load(self, fresh: bool, resume_from: str | None = None) -> tuple[Manifest, dict[str, Any] | None]:
        path = to_storage_path(self.manifest_path)
        if resume_from and not fresh:
            try:
                resumed = load_checkpoint(path, resume_from, float(self.flush_interval))
            except OSError as err:
                raise ManifestUnavailableError(str(path), f"its checkpoint cannot be read ({err})") from err
            if resumed is not None:
                self.log.info(
                    "Resuming from checkpoint %s: %d records in memory, the manifest is not read back",
                    resume_from,
                    len(resumed[0].held()),
                )
                return resumed
        try:
            manifest = Manifest.load(path, flush_interval=float(self.flush_interval), freeze_finished=True)
        except (OSError, ApicoreConfigError) as err:
            if fresh:
                raise
            raise ManifestUnavailableError(str(path), f"cannot be read ({err})") from err
        if not fresh and not manifest.found:
            raise ManifestUnavailableError(str(path), "does not exist (neither the manifest nor its journal)")
        return manifest, None

    def _open(
        self,
        context: Context,
        fresh: bool,
        event: dict[str, Any] | None = None,
        resume_from: str | None = None,
    ) -> BatchLoop:
        ti = context["ti"]
        tag = state_tag(str(ti.dag_id), str(ti.run_id), int(self.max_submit_attempts))
        self._check_settings(tag)
        hook = ApicoreHook(apicore_conn_id=self.apicore_conn_id)
        manifest, checkpoint = self._load(fresh, resume_from)
        #: the checkpoint this process continues from, deleted once a newer one is written
        self._resumed_from = resume_from if checkpoint is not None else None
        lease = None
        if self.lease:
            token = FencingToken.from_context(context)
            if not token.task_id:
                token = FencingToken(
                    token.dag_id, token.run_id, self.task_id, token.map_index, token.try_number
                )
            lease = ManifestLease(manifest.path, token)
            lease.acquire()
            manifest.before_write = lease.check
        self._lease = lease
        loop = BatchLoop(
            manifest,
            hook,
            tag,
            self.log,
            max_in_flight=int(self.max_in_flight),
            poll_interval=float(self.poll_interval),
            timeout=None if self.timeout is None else float(self.timeout),
            max_image_bytes=self.max_image_bytes,
            notify_hook=self.notify_hook,
            bot_type=self.bot_type,
            on_unknown_fate=self.on_unknown_fate,
            max_submit_attempts=int(self.max_submit_attempts),
            resubmit_failed=self.resubmit_failed,
            backoff=_submit_backoff,
            action=self._make_action(),
        )
        self._loop = loop
        loop.quota = QuotaGuard(
            hook.get_quota,
            min_quota_usd=self.min_quota_usd,
            estimated_cost_per_image_usd=self.estimated_cost_per_image_usd,
            interval=float(self.poll_interval),
            conn_id=self.apicore_conn_id,
            logger=self.log,
        )
        try:
            if fresh:
                self._plan(manifest)
            if checkpoint is not None:
                loop.restore(checkpoint)
            else:
                loop.prepare(fresh=fresh)
            if not fresh:
                self._check_event_known(loop, event or {})
            manifest.commit()
            if fresh:
                manifest.flush(force=True)
            if fresh and self._reports_balance:
                # Before the first submit: the balance, and whether it pays for the pending images.
                loop.quota.preflight(len(loop.queue) + len(loop.in_doubt))
            elif self._reports_balance:
                # Resuming after a deferral: the spend reported is the one since this resume.
                loop.quota.refresh(force=True)
        except BaseException:
            self._release(loop, flush=False)
            raise
        loop.log_start(fresh)
        if fresh and self.notify_hook:
            self.log.info(
                "APICore will call notifyHook %s on each status change",
                mask_url_credentials(self.notify_hook),
            )
        return loop

    @staticmethod
    def _check_event_known(loop: BatchLoop, event: dict[str, Any]) -> None:
        followed = [str(i) for i in (event.get("task_ids") or list((event.get("tasks") or {}).keys()))]
        wanted = set(followed)
        if wanted and not wanted & set(loop.by_task) and not any(r.task_id in wanted for r in loop.manifest):
            raise ManifestUnavailableError(
                str(loop.manifest.path),
                f"does not record any of the {len(followed)} task ids the trigger followed "
                f"(for example {followed[0]}): it is not the manifest this batch deferred with",
            )

    # ------------------------------------------------------------------ the loop
    def _guarded(self, loop: BatchLoop, body) -> dict[str, Any]:
        """Run ``body``; on any end but a deferral, give the lease back (keep the manifest written)."""
        try:
            return body()
        except TaskDeferred:
            raise
        except LeaseLostError:
            # Another try owns the manifest now: write nothing more.
            raise
        except BaseException:
            self._release(loop, flush=True)
            raise

    def _release(self, loop: BatchLoop, flush: bool) -> None:
        try:
            if flush:
                loop.manifest.commit()
                loop.manifest.flush(force=True)
        except LeaseLostError:
            return
        except Exception as err:
            self.log.warning("Could not write the manifest %s: %s", loop.manifest.path, err)
        lease = getattr(self, "_lease", None)
        if lease is not None:
            try:
                lease.release()
            except Exception as err:
                self.log.warning("Could not release the manifest lease %s: %s", lease.path, err)

    def _drive(self, loop: BatchLoop) -> dict[str, Any]:
        # Jobs taken over from an earlier try are asked about at once; new ones after an interval.
        next_poll = time.monotonic() + (0.0 if loop.tracker.pending else float(self.poll_interval))
        while True:
            loop.fill_slots()
            loop.manifest.commit()
            loop.manifest.flush()
            loop.log_progress()
            if loop.stopping:
                raise ApicoreError(
                    f"The batch was stopped (on_kill); the manifest {loop.manifest.path} records every image "
                    "and the jobs still running upstream"
                )
            if loop.finished:
                return self._finish(loop)
            if self.deferrable and loop.tracker.pending and not loop.in_doubt:
                self._defer(loop)
            if self.deferrable and not loop.tracker.pending:
                pause = loop.next_submit_time() - time.monotonic()
                if pause >= MIN_DEFERRED_PAUSE:
                    self._defer_pause(loop, pause)
            wake = min(next_poll, loop.next_submit_time())
            delay = wake - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() >= next_poll:
                loop.poll()
                next_poll = time.monotonic() + float(self.poll_interval)

    def _defer(self, loop: BatchLoop) -> None:
        pending = loop.tracker.pending
        more_to_submit = bool(loop.queue or loop.waiting)
        min_finished = max(1, len(pending) // 2) if more_to_submit else None
        end_time = loop.earliest_deadline()
        # The journal holds every change, the checkpoint what the resume needs: no whole-manifest
        # rewrite, nor read, per deferral round.
        checkpoint = self._checkpoint(loop)
        self.log.info(
            "Deferring: %d tasks in flight; resuming when %s finished%s",
            len(pending),
            min_finished or "all have",
            "" if end_time is None else f" or in {max(0.0, end_time - time.time()):.0f}s at most",
        )
        self.defer(
            trigger=MJTaskTrigger(
                task_ids=pending,
                apicore_conn_id=self.apicore_conn_id,
                poll_interval=float(self.poll_interval),
                end_time=end_time,
                min_finished=min_finished,
            ),
            method_name="execute_complete",
            kwargs={"resume_from": checkpoint},
            # The trigger keeps its own deadline; this is a safety net a little later.
            timeout=None if end_time is None else timedelta(seconds=max(0.0, end_time - time.time()) + 120),
        )

    @property
    def _reports_balance(self) -> bool:
        if self.report_balance is not None:
            return bool(self.report_balance)
        return self.min_quota_usd is not None or self.estimated_cost_per_image_usd is not None

    def _defer_pause(self, loop: BatchLoop, seconds: float) -> None:
        """Nothing in flight and submitting paused: wait in the triggerer, not in a worker slot."""
        try:
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        except ImportError:  # the standard provider is missing: pause in the worker
            return
        checkpoint = self._checkpoint(loop)
        self.log.info("Submitting paused for %.0fs with nothing in flight: deferring meanwhile", seconds)
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=seconds)),
            method_name="execute_complete",
            kwargs={"resume_from": checkpoint},
        )

    def _checkpoint(self, loop: BatchLoop) -> str:
        """Write what the resume continues from; the one this process resumed from is no longer needed."""
        name = save_checkpoint(loop)
        remove_checkpoint(loop.manifest, getattr(self, "_resumed_from", None))
        self._resumed_from = None
        return name

    def _finish(self, loop: BatchLoop) -> dict[str, Any]:
        loop.manifest.commit()
        loop.manifest.flush(force=True)
        loop.manifest.remove_resume_files()
        summary = loop.summary()
        spend = ""
        if loop.quota is not None and (self._reports_balance or loop.quota_stop):
            loop.quota.finish()
            summary.update(loop.quota.summary())
            spend = f"; {loop.quota.describe()}"
        self.log.info(
            "Batch finished: %d images, %d succeeded, %d failed, %d unknown fate (sent, answer lost, not "
            "sent again: see their state tags in the manifest); manifest %s%s",
            summary["total"],
            summary["succeeded"],
            summary["failed"],
            summary["unknown_fate"],
            summary["manifest"],
            spend,
        )
        self._release(loop, flush=False)
        if loop.quota_stop and loop.quota is not None:
            raise loop.quota.exceeded(loop.quota_stop, summary["by_status"].get(PENDING, 0))
        if self.on_unknown_fate == "fail" and summary["unknown_fate"]:
            raise UnknownFateError(summary["unknown_fate"], summary["manifest"], loop.unknown_fate_examples())
        if self.max_failures is not None and summary["failed"] > int(self.max_failures):
            raise ApicoreError(
                f"{summary['failed']} of {summary['total']} images failed, more than max_failures="
                f"{self.max_failures}; each failure and its reason is in {summary['manifest']}"
            )
        return summary


def _submit_backoff(attempt: int, base: float, cap: float) -> float:
    """The pause after ``attempt`` refused submissions in a row (looked up at call time)."""
    return retry_delay(attempt, base, cap)


#: Up to this many images the OpenLineage run facet lists their APICore task ids.
LINEAGE_TASK_IDS_UP_TO = 1000

#: Kept for callers of the old private helper.
_duration = duration
