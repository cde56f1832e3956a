"""MJBatchDescribeOperator: describe a whole directory of images in one task, resumably."""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath, conf

from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreConfigError,
    ApicoreError,
    ApicoreHTTPError,
    ApicoreInputError,
    ApicoreQueueFullError,
    ApicoreResponseError,
    ApicoreSubmitError,
    ApicoreUnreachableError,
    SubmissionFateUnknownError,
)
from airflow_provider_apicore.hooks.apicore import (
    RETRYABLE_STATUSES,
    ApicoreHook,
    mask_url_credentials,
    retry_delay,
)
from airflow_provider_apicore.images import DEFAULT_MAX_IMAGE_BYTES, ImageData, list_images, load_image
from airflow_provider_apicore.manifest import (
    FAILED_STATUSES,
    NOT_FOUND,
    PENDING,
    PENDING_SUBMIT,
    REJECTED,
    SUBMITTED,
    SUCCESS,
    TIMEOUT,
    UNKNOWN_FATE,
    Manifest,
    ManifestRecord,
    apply_task,
    now_ms,
)
from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.operators.masking import NotifyHookMaskingMixin
from airflow_provider_apicore.schemas import validate_describe_payload
from airflow_provider_apicore.tracking import EVENT_ERROR, TaskTracker
from airflow_provider_apicore.triggers.task import MJTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Statuses a retry may submit again when ``resubmit_failed`` is set.
RETRYABLE_FAILURES = frozenset({"FAILURE", "CANCEL", NOT_FOUND, TIMEOUT})
#: Consecutive refused submissions (queue full, 429/5xx after the hook's retries, unreachable) after
#: which, with nothing left in flight, the operator gives up instead of backing off again.
MAX_IDLE_BACKOFFS = 8
#: Longest pause after a refused submission, in seconds.
MAX_SUBMIT_BACKOFF = 60.0
#: Window over which the progress line measures images per minute.
RATE_WINDOW_MS = 10 * 60 * 1000


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


class MJBatchDescribeOperator(NotifyHookMaskingMixin, BaseOperator):
    """
    Describe every image of a directory (or a list of images) with Midjourney, in one task.

    Thousands of images, one Airflow task: at most ``max_in_flight`` jobs are upstream at once, new
    ones are submitted as slots free up, and every job in flight is followed with **one**
    ``list-by-condition`` request per ``poll_interval`` (through the provider's shared
    :class:`~airflow_provider_apicore.tracking.TaskTracker`, the same bookkeeping as the trigger and
    the sensor). Images are read and encoded one at a time, just before they are sent, so memory does
    not grow with the directory. Results go to a JSONL manifest (see :mod:`airflow_provider_apicore.manifest`)
    written as the batch goes; XCom gets only a small summary.

    **Resuming.** A retry of the task (or the next scheduled run, with the same ``manifest_path``)
    reads the manifest first: finished images are skipped, images with an accepted task id are only
    followed, never submitted again, and images with the same bytes (SHA-256) are submitted once and
    share the result. A daily run over a growing folder therefore only describes the new images.

    **Lost answers (SubmissionFateUnknownError).** A submission whose answer is lost (read timeout,
    connection reset after sending) may or may not have created a job. Before any image is sent its
    record is written durably as ``pending_submit`` with a unique ``state`` tag
    (``<dag_id>/<run_id>/<sha256[:16]>/<attempt>``), and the task id is written the moment it is
    accepted, so after a crash at most the submissions that were in the air are in doubt (one, since
    submissions are sequential). The protocol has no way to look a task up by ``state`` (only by id),
    so such an image is reconciled by submitting the *same image* again, with the next attempt's tag:

    * a server that deduplicates identical images (midjourney-proxy's code 21, "task already exists")
      answers with the existing task id: no duplicate. When the task arrives, its ``state`` shows which
      submission created it, and the log says the earlier submission was found;
    * a server that does not deduplicate starts a second job if the first had in fact been accepted.
      That is the residual risk: at most one duplicate per lost answer, and it is bounded by
      ``max_submit_attempts``. Set ``resubmit_unknown_fate=False`` to never risk it: such images are
      then left as ``unknown_fate`` in the manifest (counted as failed) for a person to decide.

    While in doubt an image keeps its slot, so ``max_in_flight`` also holds if the lost submission is
    running upstream. A job given up after ``timeout`` no longer counts against ``max_in_flight``.

    **Back-pressure.** "Queue full" (code 23), and 429 or 5xx answers the hook's own retries could not
    get past, mean nothing was accepted: the image goes back to the front of the line and submitting
    pauses with exponential backoff and jitter, while the jobs in flight are still followed.

    **Deferrable.** With ``deferrable=True`` the worker submits while slots are free, then defers to
    :class:`~airflow_provider_apicore.triggers.task.MJTaskTrigger` with the ids in flight and frees the
    worker slot; the trigger returns once half of them have finished (``min_finished``; all of them
    when nothing is left to submit) or the earliest per-image deadline passes, and ``execute_complete``
    records the results, submits into the freed slots and defers again. Submitting has to happen in a
    worker (it reads the images and must record each answer before the next step), waiting does not;
    alternating keeps the worker busy only for the seconds it takes to submit a round, at the price of
    one trigger round trip per round. All state lives in the manifest, so each resume starts from it.

    Progress is logged every interval in which something changed (at least once a minute): done /
    total, failed, in flight, to submit, images per minute (over the last ten minutes, from the
    manifest, so it survives retries and deferrals) and ETA.

    :param source: a directory (local path, ``file://``, ``s3://``, ``gs://``, ``memory://`` ... or an
        ``ObjectStoragePath``), or a list of image paths (templated)
    :param manifest_path: where the JSONL manifest is written and resumed from (templated)
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
    :param resubmit_unknown_fate: reconcile lost answers by resubmitting the same image (see above)
    :param max_submit_attempts: most submissions of one image whose answer may be lost
    :param resubmit_failed: on a new run, submit again the images that ended ``FAILURE``, ``CANCEL``,
        ``not_found`` or ``timeout`` in the manifest (default: keep those results)
    :param max_failures: fail the task at the end if more images than this failed (``None``: never;
        failures are in the manifest and the summary either way)
    """

    template_fields: Sequence[str] = (
        "source",
        "manifest_path",
        "pattern",
        "notify_hook",
        "max_in_flight",
        "poll_interval",
        "timeout",
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
        resubmit_unknown_fate: bool = True,
        max_submit_attempts: int = 3,
        resubmit_failed: bool = False,
        max_failures: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        self.resubmit_unknown_fate = resubmit_unknown_fate
        self.max_submit_attempts = max_submit_attempts
        self.resubmit_failed = resubmit_failed
        self.max_failures = max_failures
        self._check_arguments()
        if not _is_template(notify_hook):
            mask_url_credentials(notify_hook)

    def _check_arguments(self) -> None:
        """Reject unusable arguments with the argument named; templated ones again after rendering."""
        if self.source is None or (isinstance(self.source, (str, list, tuple)) and not self.source):
            raise ApicoreConfigError("source must be a directory, a path or a non-empty list of paths")
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

    # ------------------------------------------------------------------ Airflow entry points
    def execute(self, context: Context) -> dict[str, Any]:
        self._check_arguments()
        run = self._open(context, fresh=True)
        return self._drive(run)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: record what finished, then submit into the freed slots."""
        self._check_arguments()
        run = self._open(context, fresh=False)
        if event.get("status") == EVENT_ERROR:
            run.manifest.flush(force=True)
            raise ApicoreError(
                f"Following {len(run.tracker.pending)} Midjourney tasks failed: {event.get('message')}. "
                f"Every task id is kept in {run.manifest.path}; a retry of this task resumes following them."
            )
        tasks = [MJTask.from_json(raw) for raw in (event.get("tasks") or {}).values() if raw]
        run.absorb(tasks, event.get("not_found") or [])
        return self._drive(run)

    # ------------------------------------------------------------------ the loop
    def _open(self, context: Context, fresh: bool) -> _BatchRun:
        ti = context["ti"]
        manifest = Manifest.load(self.manifest_path, flush_interval=float(self.flush_interval))
        run = _BatchRun(
            self, manifest, ApicoreHook(apicore_conn_id=self.apicore_conn_id), f"{ti.dag_id}/{ti.run_id}"
        )
        if fresh:
            run.add_images(self._list_source())
        run.prepare(fresh=fresh)
        manifest.commit()
        manifest.flush(force=True)
        run.log_start(fresh)
        if fresh and self.notify_hook:
            self.log.info(
                "APICore will call notifyHook %s on each status change",
                mask_url_credentials(self.notify_hook),
            )
        return run

    def _list_source(self) -> list[tuple[str, str | None]]:
        """(image path, rejection reason or None) for every image the source names."""
        source = self.source
        if isinstance(source, (list, tuple)):
            listed: list[tuple[str, str | None]] = []
            for item in source:
                try:
                    listed += [(str(p), None) for p in list_images([item])]
                except ApicoreInputError as err:
                    listed.append((str(item), str(err)))
            return listed
        paths = list_images(
            source, pattern=self.pattern, recursive=self.recursive, max_bytes=self.max_image_bytes
        )
        return [(str(p), None) for p in paths]

    def _drive(self, run: _BatchRun) -> dict[str, Any]:
        # Jobs taken over from an earlier try are asked about at once; new ones after an interval.
        next_poll = time.monotonic() + (0.0 if run.tracker.pending else float(self.poll_interval))
        while True:
            run.fill_slots()
            run.manifest.commit()
            run.manifest.flush()
            run.log_progress()
            if run.finished:
                return self._finish(run)
            if self.deferrable and run.tracker.pending and not run.in_doubt:
                self._defer(run)
            wake = min(next_poll, run.next_submit_time())
            delay = wake - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() >= next_poll:
                run.poll()
                next_poll = time.monotonic() + float(self.poll_interval)

    def _defer(self, run: _BatchRun) -> None:
        pending = run.tracker.pending
        more_to_submit = bool(run.queue or run.waiting)
        min_finished = max(1, len(pending) // 2) if more_to_submit else None
        end_time = run.earliest_deadline()
        run.manifest.commit()
        run.manifest.flush(force=True)
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
            # The trigger keeps its own deadline; this is a safety net a little later.
            timeout=None if end_time is None else timedelta(seconds=max(0.0, end_time - time.time()) + 120),
        )

    def _finish(self, run: _BatchRun) -> dict[str, Any]:
        run.manifest.commit()
        run.manifest.flush(force=True)
        summary = run.summary()
        self.log.info(
            "Batch finished: %d images, %d succeeded, %d failed; manifest %s",
            summary["total"],
            summary["succeeded"],
            summary["failed"],
            summary["manifest"],
        )
        if self.max_failures is not None and summary["failed"] > int(self.max_failures):
            raise ApicoreError(
                f"{summary['failed']} of {summary['total']} images failed, more than max_failures="
                f"{self.max_failures}; each failure and its reason is in {summary['manifest']}"
            )
        return summary


class _BatchRun:
    """
    One stretch of a batch in one process: the manifest in memory plus what is in flight.

    Everything it needs to continue is in the manifest, so a new process (a retry, or the resume after
    a deferral) rebuilds the same state with :meth:`prepare`.
    """

    def __init__(self, op: MJBatchDescribeOperator, manifest: Manifest, hook: ApicoreHook, tag: str) -> None:
        self.op = op
        self.log = op.log
        self.manifest = manifest
        self.hook = hook
        self.tag = tag
        self.max_in_flight = int(op.max_in_flight)
        self.timeout = None if op.timeout is None else float(op.timeout)
        self.queue: deque[ManifestRecord] = deque()
        self.by_sha: dict[str, ManifestRecord] = {}
        self.by_task: dict[str, list[ManifestRecord]] = {}
        self.waiting: dict[str, list[ManifestRecord]] = {}
        self.in_doubt: dict[str, float] = {}  # image -> monotonic time its reconciliation is due
        self.tracker = TaskTracker([])
        self.not_found_seen: set[str] = set()
        self.paused_until = 0.0
        self.backoffs = 0
        self.last_progress: tuple | None = None
        self.last_progress_at = 0.0

    # ------------------------------------------------------------------ setup
    def add_images(self, listed: list[tuple[str, str | None]]) -> None:
        for image, problem in listed:
            record = self.manifest.add(image)
            if problem and record.status == PENDING:
                self.manifest.touch(record, status=REJECTED, error=problem)

    def prepare(self, fresh: bool) -> None:
        """Sort every record into: final, in flight (follow), in doubt (reconcile) or to submit."""
        for record in self.manifest:
            if fresh and self.op.resubmit_failed and record.status in RETRYABLE_FAILURES:
                self.manifest.touch(record, status=PENDING, task_id=None, error=None, prompts=[], prompt=None)
            if record.status == PENDING_SUBMIT:
                # The process stopped while this submission was in the air.
                self.manifest.touch(
                    record,
                    status=UNKNOWN_FATE,
                    error="the previous try stopped while this image was being sent",
                )
            if record.sha256 and (record.attempts > 0 or record.task_id) and record.sha256 not in self.by_sha:
                self.by_sha[record.sha256] = record
        for record in self.manifest:
            if record.status == SUBMITTED and record.task_id:
                self._follow(record.task_id, record)
            elif record.status == SUBMITTED or (record.status == UNKNOWN_FATE and self._may_resubmit(record)):
                self.in_doubt[record.image] = 0.0
                if record.sha256:
                    self.by_sha[record.sha256] = record
            elif record.status == PENDING:
                self.queue.append(record)
        # Timeouts are checked only once the server has been asked (poll or trigger event): jobs that
        # finished while the worker was away or the trigger waited are recorded as finished.

    def log_start(self, fresh: bool) -> None:
        counts = self.manifest.counts()
        final = sum(1 for r in self.manifest if r.is_final)
        self.log.info(
            "%s %s: %d images; %d already finished, %d in flight to follow, %d to reconcile, %d to submit "
            "(max_in_flight=%d)",
            "Starting batch from" if fresh else "Resuming batch from",
            self.manifest.path,
            len(self.manifest),
            final,
            len(self.tracker.pending),
            len(self.in_doubt),
            counts.get(PENDING, 0),
            self.max_in_flight,
        )

    # ------------------------------------------------------------------ state
    @property
    def slots_used(self) -> int:
        return len(self.tracker.pending) + len(self.in_doubt)

    @property
    def finished(self) -> bool:
        return not (self.queue or self.waiting or self.in_doubt or self.tracker.pending)

    def next_submit_time(self) -> float:
        """When the loop should wake up to submit without a poll: a backoff's end or a reconciliation."""
        times = [max(due, self.paused_until) for due in self.in_doubt.values()]
        if self.paused_until and self.queue and self.slots_used < self.max_in_flight:
            times.append(self.paused_until)
        return min(times, default=math.inf)

    def earliest_deadline(self) -> float | None:
        """Wall-clock time at which the first followed task reaches its ``timeout``."""
        if self.timeout is None:
            return None
        accepted = [
            records[0].accepted_at
            for task_id in self.tracker.pending
            if (records := self.by_task.get(task_id))
        ]
        known = [a for a in accepted if a is not None]
        if not known:
            return time.time() + self.timeout
        return min(known) / 1000 + self.timeout

    def _may_resubmit(self, record: ManifestRecord) -> bool:
        return bool(self.op.resubmit_unknown_fate) and record.attempts < int(self.op.max_submit_attempts)

    # ------------------------------------------------------------------ submitting
    def fill_slots(self) -> None:
        """Reconcile lost answers that are due, then submit new images while slots are free."""
        now = time.monotonic()
        for image, due in sorted(self.in_doubt.items(), key=lambda item: item[1]):
            if due > now or now < self.paused_until:
                continue
            record = self.manifest.get(image)
            if record is not None and self._send(record, reconciling=True) == "backoff":
                return
        while self.queue and self.slots_used < self.max_in_flight and time.monotonic() >= self.paused_until:
            record = self.queue.popleft()
            if self._process(record) == "backoff":
                return

    def _process(self, record: ManifestRecord) -> str | None:
        primary = self.by_sha.get(record.sha256) if record.sha256 else None
        if primary is not None and primary is not record:
            self._attach(record, primary)
            return None
        try:
            data = load_image(record.image, max_bytes=self.op.max_image_bytes)
        except ApicoreInputError as err:
            self.manifest.touch(record, status=REJECTED, error=str(err))
            return None
        if record.sha256 != data.sha256:
            self.manifest.touch(record, sha256=data.sha256)
        primary = self.by_sha.get(data.sha256)
        if primary is not None and primary is not record:
            self._attach(record, primary)
            return None
        self.by_sha[data.sha256] = record
        return self._send(record, data=data)

    def _attach(self, record: ManifestRecord, primary: ManifestRecord) -> None:
        """Share the job of an image with the same bytes instead of submitting it again."""
        if (
            primary.task_id
            or primary.is_final
            or (primary.status == UNKNOWN_FATE and primary.image not in self.in_doubt)
        ):
            record.copy_outcome(primary)
            self.manifest.touch(record, sha256=primary.sha256)
            if record.status == SUBMITTED and record.task_id:
                self.by_task.setdefault(record.task_id, []).append(record)
            self.log.info("%s has the same bytes as %s: sharing its result", record.image, primary.image)
        else:
            self.waiting.setdefault(primary.sha256 or "", []).append(record)

    def _release_waiting(self, primary: ManifestRecord) -> None:
        for record in self.waiting.pop(primary.sha256 or "", []):
            self._attach(record, primary)

    def _send(
        self, record: ManifestRecord, data: ImageData | None = None, reconciling: bool = False
    ) -> str | None:
        """Submit one image; its record is durable before the request leaves and right after the answer."""
        if data is None:
            try:
                data = load_image(record.image, max_bytes=self.op.max_image_bytes)
            except ApicoreInputError as err:
                self.in_doubt.pop(record.image, None)
                self.manifest.touch(record, status=REJECTED, error=str(err))
                self._release_waiting(record)
                return None
        previous = (record.status, record.state, record.attempts)
        attempt = record.attempts + 1
        state = f"{self.tag}/{data.sha256[:16]}/{attempt}"
        payload: dict[str, Any] = {"base64": data.to_data_url(), "state": state}
        if self.op.notify_hook:
            payload["notifyHook"] = self.op.notify_hook
        if self.op.bot_type:
            payload["botType"] = self.op.bot_type
        try:
            validate_describe_payload(payload)
        except ApicoreInputError as err:
            self.in_doubt.pop(record.image, None)
            self.manifest.touch(record, status=REJECTED, error=str(err))
            self._release_waiting(record)
            return None
        # A connection that cannot be used fails here, before the image is marked as being sent.
        _ = self.hook.settings
        self.manifest.touch(record, status=PENDING_SUBMIT, state=state, attempts=attempt, sha256=data.sha256)
        self.manifest.commit()
        try:
            result = self.hook.submit_describe(payload, validate=False)
        except (SubmissionFateUnknownError, ApicoreResponseError) as err:
            return self._lost_answer(record, err)
        except ApicoreQueueFullError as err:
            return self._refused(record, previous, reconciling, err, "APICore's queue is full (code 23)")
        except ApicoreUnreachableError as err:
            return self._refused(record, previous, reconciling, err, "APICore is unreachable")
        except ApicoreHTTPError as err:
            if err.status in RETRYABLE_STATUSES:
                return self._refused(
                    record, previous, reconciling, err, f"APICore answered HTTP {err.status}"
                )
            if err.status in (400, 413, 415, 422):
                return self._rejected(record, f"APICore answered HTTP {err.status}: {err.excerpt or err}")
            self._restore(record, previous, durably=True)
            raise
        except (ApicoreAuthError, ApicoreConfigError):
            # Answered (or never sent): nothing was accepted, and the manifest must say so.
            self._restore(record, previous, durably=True)
            raise
        except ApicoreSubmitError as err:
            return self._rejected(record, f"APICore refused the image: code {err.code}, {err.description}")
        self.backoffs = 0
        self.paused_until = 0.0
        self.in_doubt.pop(record.image, None)
        self.manifest.touch(
            record, status=SUBMITTED, task_id=result.task_id, accepted_at=now_ms(), error=None
        )
        self.manifest.commit()
        if result.existed:
            self.log.info(
                "APICore already had %s as task %s (code 21): no new job started",
                record.image,
                result.task_id,
            )
        elif reconciling:
            self.log.warning(
                "%s was submitted again after a lost answer and APICore started task %s; if the lost "
                "submission had been accepted, this server runs the image twice (it did not report the "
                "earlier task with code 21)",
                record.image,
                result.task_id,
            )
        self._follow(result.task_id, record)
        self._release_waiting(record)
        return None

    def _lost_answer(self, record: ManifestRecord, err: ApicoreError) -> str | None:
        self.manifest.touch(
            record, status=UNKNOWN_FATE, error=f"the answer to the submission was lost: {err}"
        )
        self.manifest.commit()
        if self._may_resubmit(record):
            # Keep the slot: the job may be running upstream.
            self.in_doubt[record.image] = time.monotonic() + float(self.op.poll_interval)
            self.log.warning(
                "The answer to submitting %s (state %r) was lost; reconciling by submitting the same image "
                "again in %.1fs (attempt %d of %d)",
                record.image,
                record.state,
                float(self.op.poll_interval),
                record.attempts + 1,
                self.op.max_submit_attempts,
            )
        else:
            self.in_doubt.pop(record.image, None)
            self.log.error(
                "The answer to submitting %s (state %r) was lost; not submitting it again (%s). It stays "
                "'unknown_fate' in the manifest.",
                record.image,
                record.state,
                "resubmit_unknown_fate=False"
                if not self.op.resubmit_unknown_fate
                else f"max_submit_attempts={self.op.max_submit_attempts} reached",
            )
            self._release_waiting(record)
        return None

    def _refused(
        self, record: ManifestRecord, previous: tuple, reconciling: bool, err: Exception, why: str
    ) -> str:
        """Nothing was accepted: put the image back and pause submitting."""
        self._restore(record, previous)
        self.manifest.commit()
        delay = retry_delay(self.backoffs, max(1.0, float(self.op.poll_interval)), MAX_SUBMIT_BACKOFF)
        self.backoffs += 1
        if self.backoffs > MAX_IDLE_BACKOFFS and not self.tracker.pending:
            raise err
        self.paused_until = time.monotonic() + delay
        if reconciling:
            self.in_doubt[record.image] = self.paused_until
        else:
            self.queue.appendleft(record)
        self.log.warning(
            "%s; nothing was accepted. Pausing submissions for %.1fs (%d in flight keep being followed)",
            why,
            delay,
            len(self.tracker.pending),
        )
        return "backoff"

    def _rejected(self, record: ManifestRecord, reason: str) -> None:
        self.in_doubt.pop(record.image, None)
        self.manifest.touch(record, status=REJECTED, error=reason)
        self.manifest.commit()
        self.log.warning("%s rejected: %s", record.image, reason)
        self._release_waiting(record)

    def _restore(self, record: ManifestRecord, previous: tuple, durably: bool = False) -> None:
        """Undo the ``pending_submit`` mark of a submission that was refused (nothing was accepted)."""
        status, state, attempts = previous
        self.manifest.touch(record, status=status, state=state, attempts=attempts)
        if durably:
            self.manifest.commit()

    # ------------------------------------------------------------------ following
    def _follow(self, task_id: str, record: ManifestRecord) -> None:
        records = self.by_task.setdefault(task_id, [])
        if record not in records:
            records.append(record)
        self.tracker.add([task_id])

    def poll(self) -> None:
        """One ``list-by-condition`` request for every task in flight."""
        pending = self.tracker.pending
        if pending:
            self.absorb(self.hook.list_tasks(pending), ())

    def absorb(self, tasks: list[MJTask], not_found: Sequence[str]) -> None:
        """
        Record one answer about the tasks in flight (from a poll or a trigger event), then give up on
        the jobs still unfinished past their ``timeout``.
        """
        followed = set(self.tracker.pending)
        self.tracker.update(tasks)
        for task in tasks:
            if task.id not in followed:
                continue
            records = self.by_task.get(task.id, [])
            if records and task.is_terminal and task.state and records[0].state not in (None, task.state):
                # The server answered a resubmission with an existing task (code 21): its tag says which
                # earlier submission created it.
                self.log.info(
                    "Reconciled %s: task %s was created by the earlier submission tagged %r, not by the "
                    "resubmission tagged %r",
                    records[0].image,
                    task.id,
                    task.state,
                    records[0].state,
                )
            for record in records:
                before = (record.status, record.start_time)
                apply_task(record, task)
                if (record.status, record.start_time) != before:
                    self.manifest.touch(record)
        # Finished tasks now live in the manifest: keep only those in flight, so memory stays flat.
        self.tracker.forget(task.id for task in tasks if task.is_terminal)
        gone = (set(self.tracker.not_found) | {str(i) for i in not_found}) & followed
        gone -= self.not_found_seen
        if gone:
            self.tracker.discard(gone)
            for task_id in gone:
                self.not_found_seen.add(task_id)
                for record in self.by_task.get(task_id, []):
                    self.manifest.touch(
                        record,
                        status=NOT_FOUND,
                        error=f"APICore stopped knowing task {task_id} (expired or removed upstream)",
                    )
        self.manifest.commit()
        self.check_timeouts()

    def check_timeouts(self) -> None:
        if self.timeout is None:
            return
        limit = now_ms() - self.timeout * 1000
        expired = []
        for task_id in self.tracker.pending:
            records = self.by_task.get(task_id) or []
            if records and records[0].accepted_at is not None and records[0].accepted_at < limit:
                expired.append(task_id)
        if not expired:
            return
        self.tracker.discard(expired)
        for task_id in expired:
            latest = self.tracker.latest.get(task_id)
            for record in self.by_task.get(task_id, []):
                self.manifest.touch(
                    record,
                    status=TIMEOUT,
                    error=(
                        f"task {task_id} did not finish within {self.timeout:g}s; last seen status "
                        f"{latest.status.value if latest else 'unknown'}, progress "
                        f"{(latest.progress if latest else None) or 'unknown'}"
                    ),
                )
        self.log.warning("%d tasks did not finish within %gs; given up", len(expired), self.timeout)
        self.manifest.commit()

    # ------------------------------------------------------------------ reporting
    def progress(self) -> dict[str, Any]:
        records = list(self.manifest)
        done = [
            r for r in records if r.is_final or (r.status == UNKNOWN_FATE and r.image not in self.in_doubt)
        ]
        failed = sum(1 for r in done if r.status in FAILED_STATUSES)
        # Images finished in the last RATE_WINDOW_MS, over the time since the first of them was sent: a
        # rate that survives restarts and deferrals because it comes from the manifest, not this process.
        now = now_ms()
        window_start = now - RATE_WINDOW_MS
        recent = [r for r in done if r.updated_at and r.updated_at >= window_start]
        rate = None
        if recent:
            began = max(window_start, min(r.accepted_at or r.updated_at or now for r in recent))
            if now - began >= 1000:
                rate = len(recent) / ((now - began) / 60000)
        remaining = len(records) - len(done)
        eta = None if not rate else remaining / rate * 60
        return {
            "total": len(records),
            "done": len(done),
            "failed": failed,
            "in_flight": self.slots_used,
            "to_submit": len(self.queue),
            "rate": rate,
            "eta": eta,
        }

    def log_progress(self, every: float = 60.0) -> None:
        state = self.progress()
        key = (state["done"], state["failed"], state["in_flight"], state["to_submit"])
        now = time.monotonic()
        if key == self.last_progress and now - self.last_progress_at < every:
            return
        self.last_progress, self.last_progress_at = key, now
        self.log.info(
            "Progress: %d/%d done, %d failed, %d in flight, %d to submit; %s; ETA %s",
            state["done"],
            state["total"],
            state["failed"],
            state["in_flight"],
            state["to_submit"],
            "rate unknown" if state["rate"] is None else f"{state['rate']:.1f} images/min",
            _duration(state["eta"]),
        )

    def summary(self) -> dict[str, Any]:
        counts = self.manifest.counts()
        failed = sum(n for status, n in counts.items() if status in FAILED_STATUSES)
        return {
            "manifest": str(self.manifest.path),
            "total": len(self.manifest),
            "succeeded": counts.get(SUCCESS, 0),
            "failed": failed,
            "unique_images": len({r.sha256 for r in self.manifest if r.sha256}),
            "by_status": dict(sorted(counts.items())),
        }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
