"""
The submit/poll loop of a batch: what one process does between reading the manifest and leaving.

:class:`BatchLoop` holds only what is in flight (ids followed, images whose submission is being
reconciled, the queue of records to submit) and writes every change to the manifest as it happens, so a
new process rebuilds the same state: a retry from the manifest (:meth:`BatchLoop.prepare`), the resume
after a deferral from the checkpoint the deferral wrote (:meth:`BatchLoop.restore`,
:mod:`~airflow_provider_apicore.batch.checkpoint`).
Submitting a single image is :meth:`BatchLoop.send`; what a failed submission means is decided by
:func:`airflow_provider_apicore.batch.submit.classify`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.batch.actions import BatchAction, DescribeAction, Item
from airflow_provider_apicore.batch.checkpoint import decode_prefixes, encode_prefixes, sha_prefix
from airflow_provider_apicore.batch.submit import SubmitFailure, Verdict, classify
from airflow_provider_apicore.batch.work_queue import WorkQueue
from airflow_provider_apicore.exceptions import (
    ApicoreConfigError,
    ApicoreError,
    ApicoreInputError,
    ApicoreQuotaExceededError,
)
from airflow_provider_apicore.hooks.apicore import retry_delay
from airflow_provider_apicore.images import ImageReadError
from airflow_provider_apicore.manifest import (
    FAILED_STATUSES,
    FINAL_STATUSES,
    NOT_FOUND,
    PENDING,
    PENDING_SUBMIT,
    READ_ERROR,
    REJECTED,
    SUBMITTED,
    SUCCESS,
    TIMEOUT,
    UNKNOWN_FATE,
    Manifest,
    ManifestRecord,
    now_ms,
)
from airflow_provider_apicore.tracking import TaskTracker

if TYPE_CHECKING:
    import logging

    from airflow_provider_apicore.account import QuotaGuard
    from airflow_provider_apicore.hooks.apicore import ApicoreHook
    from airflow_provider_apicore.models import MJTask

#: Statuses a new run may submit again when ``resubmit_failed`` is set.
RETRYABLE_FAILURES = frozenset({"FAILURE", "CANCEL", NOT_FOUND, TIMEOUT})
#: Consecutive refused submissions (queue full, throttled, unreachable) after which, with nothing left
#: in flight, the batch gives up (the images stay ``pending`` for the next try) instead of backing off.
MAX_IDLE_BACKOFFS = 8
#: Longest pause after a refused submission, in seconds (also caps a server's ``Retry-After``).
MAX_SUBMIT_BACKOFF = 60.0
#: Window over which the progress line measures images per minute.
RATE_WINDOW_MS = 10 * 60 * 1000
#: Reads of one file before a transient read error is recorded as ``read_error``, and the pauses.
READ_ATTEMPTS = 3
READ_PAUSES = (0.2, 0.5)
#: ``on_unknown_fate`` values.
UNKNOWN_FATE_POLICIES = ("record", "fail", "resubmit")


class BatchLoop:
    """
    One stretch of a batch in one process.

    :param manifest: the batch's manifest, loaded
    :param hook: the APICore hook
    :param tag: the ``state`` tag prefix (``<dag_id>/<run_id>``); each submission adds
        ``/<sha256[:16]>/<attempt>``
    :param log: where to log
    :param max_in_flight: most jobs upstream at once
    :param poll_interval: seconds between two polls
    :param timeout: seconds a job may take after it was accepted (None: no limit)
    :param max_image_bytes: largest image read
    :param notify_hook: ``notifyHook`` sent with each image
    :param bot_type: ``botType`` sent with each image
    :param on_unknown_fate: ``record``, ``fail`` or ``resubmit`` (see the operator)
    :param max_submit_attempts: most submissions of one image whose answer may be lost
    :param resubmit_failed: a fresh run submits again images that ended failed
    :param backoff: ``backoff(refusals_in_a_row, base, cap)``: seconds to pause submitting
    :param action: what each input is sent as and how a task maps to its record
        (:mod:`~airflow_provider_apicore.batch.actions`); default: describe with ``notify_hook`` and
        ``bot_type``
    """

    def __init__(
        self,
        manifest: Manifest,
        hook: ApicoreHook,
        tag: str,
        log: logging.Logger | Any,
        *,
        max_in_flight: int,
        poll_interval: float,
        timeout: float | None,
        max_image_bytes: int,
        notify_hook: str | None = None,
        bot_type: str | None = None,
        on_unknown_fate: str = "record",
        max_submit_attempts: int = 3,
        resubmit_failed: bool = False,
        backoff: Callable[[int, float, float], float] = retry_delay,
        action: BatchAction | None = None,
    ) -> None:
        self.action = action or DescribeAction(notify_hook, bot_type)
        self.manifest = manifest
        self.hook = hook
        self.tag = tag
        self.log = log
        self.max_in_flight = max_in_flight
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_image_bytes = max_image_bytes
        self.notify_hook = notify_hook
        self.bot_type = bot_type
        self.on_unknown_fate = on_unknown_fate
        self.max_submit_attempts = max_submit_attempts
        self.resubmit_failed = resubmit_failed
        self.backoff = backoff
        #: images to submit, by key (their records stay in the manifest's store until taken)
        self.queue = WorkQueue()
        #: SHA-256 (its first 8 bytes, as an int) -> the image whose job stands for those bytes. A
        #: key, so finished records stay in storage; an int, so the index costs no hex string per
        #: image. A match is confirmed on the whole SHA-256 (:meth:`_primary_for`).
        self.by_sha: dict[int, str] = {}
        #: after a resume from a checkpoint: 8-byte prefixes of the SHA-256s sent in earlier rounds,
        #: whose images ``by_sha`` does not know yet (a hit reads the whole manifest once)
        self.sha_filter: set[int] = set()
        self.by_task: dict[str, list[ManifestRecord]] = {}
        #: SHA-256 -> images waiting for the job of an identical image to be accepted
        self.waiting: dict[str, list[str]] = {}
        self.in_doubt: dict[str, float] = {}  # image -> monotonic time its reconciliation is due
        self.tracker = TaskTracker([])
        self.not_found_seen: set[str] = set()
        self.paused_until = 0.0
        self.backoffs = 0
        self.last_progress: tuple | None = None
        self.last_progress_at = 0.0
        #: images finished within the rate window, per second: [second, count, earliest accepted at],
        #: oldest first (at most one entry per second, however many images finish)
        self.finishes: deque[list[int]] = deque()
        #: set by ``on_kill``: submit nothing more
        self.stopping = False
        #: the balance guard (``min_quota_usd``), set by the operator
        self.quota: QuotaGuard | None = None
        #: why submitting stopped for balance: jobs in flight are followed to the end, unsent images
        #: stay ``pending`` for a rerun after topping up
        self.quota_stop: str | None = None

    # ------------------------------------------------------------------ setup
    def prepare(self, fresh: bool) -> None:
        """Sort every record into: final, in flight (follow), in doubt (reconcile) or to submit."""
        for record in list(self.manifest):
            if fresh and record.status == READ_ERROR:
                record = self.manifest.touch(record, status=PENDING, error=None)
            if fresh and self.resubmit_failed and record.status in RETRYABLE_FAILURES:
                record = self.manifest.touch(
                    record, status=PENDING, task_id=None, error=None, prompts=[], prompt=None
                )
            if record.status == PENDING_SUBMIT:
                # The process stopped while this submission was in the air.
                self.manifest.touch(
                    record,
                    status=UNKNOWN_FATE,
                    error=(
                        "the previous try stopped while this image was being sent (state "
                        f"{record.state!r}); APICore may have started a job for it"
                    ),
                )
            if self.action.dedupe and record.sha256 and (record.attempts > 0 or record.task_id):
                self._index_sha(record)
        for record in self.manifest:
            if record.status == SUBMITTED and record.task_id:
                self._follow(record.task_id, self.manifest.hold(record.image))
            elif record.status == SUBMITTED or (record.status == UNKNOWN_FATE and self._may_resubmit(record)):
                self.in_doubt[record.image] = 0.0
                if record.sha256 and self.action.dedupe:
                    self._index_sha(record, replace=True)
            elif record.status == PENDING:
                self.queue.append(record.image)
        # Timeouts are checked only once the server has been asked (poll or trigger event): jobs that
        # finished while the worker was away or the trigger waited are recorded as finished.

    def referenced_keys(self) -> set[str]:
        """Images the loop refers to beyond those in flight: in doubt, waiting, queued in memory."""
        keys = set(self.in_doubt) | set(self.queue)
        for images in self.waiting.values():
            keys.update(images)
        return keys

    def checkpoint_state(self) -> dict[str, Any]:
        """The loop's own state for a resume in another process (times as seconds from now)."""
        now = time.monotonic()
        prefixes = set(self.sha_filter)
        prefixes.update(self.by_sha)
        return {
            "in_doubt": {image: max(0.0, due - now) for image, due in self.in_doubt.items()},
            "waiting": self.waiting,
            "not_found_seen": sorted(self.not_found_seen),
            "paused_for": max(0.0, self.paused_until - now),
            "backoffs": self.backoffs,
            "finishes": list(self.finishes),
            "sha_prefixes": encode_prefixes(prefixes),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """
        Continue from a checkpoint (:mod:`~airflow_provider_apicore.batch.checkpoint`) instead of
        :meth:`prepare`: only the records it carries are read, never the whole manifest.
        """
        loop_state = state["loop"]
        self.queue = WorkQueue.from_checkpoint(self.manifest, state["queue"])
        now = time.monotonic()
        self.in_doubt = {image: now + float(due) for image, due in loop_state["in_doubt"].items()}
        self.waiting = {sha: list(images) for sha, images in loop_state["waiting"].items()}
        self.not_found_seen = set(loop_state["not_found_seen"])
        paused_for = float(loop_state["paused_for"])
        self.paused_until = now + paused_for if paused_for else 0.0
        self.backoffs = int(loop_state["backoffs"])
        self.finishes = deque([list(entry) for entry in loop_state["finishes"]])
        self.sha_filter = decode_prefixes(loop_state["sha_prefixes"])
        for record in self.manifest.held():
            if self.action.dedupe and record.sha256 and (record.attempts > 0 or record.task_id):
                self._index_sha(record)
            if record.status == SUBMITTED and record.task_id and record.image not in self.in_doubt:
                self._follow(record.task_id, record)

    def _known_shas(self) -> None:
        """A SHA-256 sent in an earlier round: learn every image's from the whole manifest (once)."""
        for record in self.manifest:
            if self.action.dedupe and record.sha256 and (record.attempts > 0 or record.task_id):
                self._index_sha(record)
        self.sha_filter = set()

    def log_start(self, fresh: bool) -> None:
        counts = self.manifest.counts()
        final = sum(n for status, n in counts.items() if status in FINAL_STATUSES)
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
        if self.stopping or self.quota_stop:
            return not self.tracker.pending
        return not (self.queue or self.waiting or self.in_doubt or self.tracker.pending)

    def next_submit_time(self) -> float:
        """When the loop should wake up to submit without a poll: a pause's end or a reconciliation."""
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
        return self.on_unknown_fate == "resubmit" and record.attempts < self.max_submit_attempts

    # ------------------------------------------------------------------ submitting
    def fill_slots(self) -> None:
        """Reconcile lost answers that are due, then submit new images while slots are free."""
        if self.stopping or self.quota_stop:
            return
        now = time.monotonic()
        for image, due in sorted(self.in_doubt.items(), key=lambda item: item[1]):
            if due > now or now < self.paused_until or self.stopping:
                continue
            if not self._quota_allows():
                return
            record = self.manifest.hold(image)
            if record is not None and self.send(record, reconciling=True) == "pause":
                return
        while (
            self.queue
            and self.slots_used < self.max_in_flight
            and time.monotonic() >= self.paused_until
            and not self.stopping
        ):
            if not self._quota_allows():
                return
            image = self.queue.popleft()
            record = self.manifest.hold(image)
            if record is None or record.status != PENDING:
                continue
            if self._process(record) == "pause":
                return

    def _process(self, record: ManifestRecord) -> str | None:
        """Read one queued image, then share an identical image's job or submit it."""
        data = self._read(record)
        if data is None:
            return None
        if not self.action.dedupe:
            return self.send(record, data=data)
        if record.sha256 != data.sha256:
            old = record.sha256
            if old and self._primary_for(old) == record.image:
                # The file changed since it was hashed: its old bytes no longer stand for it, and images
                # that waited for it as their identical twin are planned again on their own.
                del self.by_sha[sha_prefix(old)]
                self.queue.extendleft(self.waiting.pop(old, []))
            self.manifest.touch(record, sha256=data.sha256)
        primary = self._primary_for(data.sha256)
        if primary is None and self.sha_filter and sha_prefix(data.sha256) in self.sha_filter:
            self._known_shas()
            primary = self._primary_for(data.sha256)
        if primary is not None:
            record_primary = self.manifest.get(primary)
            if record_primary is not None and primary != record.image:
                self._attach(record, record_primary)
                return None
        self.by_sha[sha_prefix(data.sha256)] = record.image
        return self.send(record, data=data)

    def _index_sha(self, record: ManifestRecord, replace: bool = False) -> None:
        """Remember ``record`` as the image whose job stands for its bytes (the first one, unless told)."""
        if not record.sha256:
            return
        key = sha_prefix(record.sha256)
        if key is not None and (replace or key not in self.by_sha):
            self.by_sha[key] = record.image

    def _primary_for(self, sha256: str) -> str | None:
        """The image whose job stands for these bytes, if it has the same whole SHA-256."""
        image = self.by_sha.get(sha_prefix(sha256))  # type: ignore[arg-type]
        if image is None:
            return None
        primary = self.manifest.get(image)
        # Two different images sharing the first 8 bytes of a SHA-256: not identical (the later one
        # is sent on its own; at worst a later copy of the earlier one is sent again, never mixed up).
        return image if primary is not None and primary.sha256 == sha256 else None

    def _read(self, record: ManifestRecord) -> Item | None:
        """
        Read an image, retrying a transient read error; record ``rejected`` (the file is not a usable
        image) or ``read_error`` (it could not be read now; the next run tries again) otherwise.
        """
        for attempt in range(READ_ATTEMPTS):
            try:
                data = self.action.read(record, self.max_image_bytes)
            except ImageReadError as err:
                if attempt + 1 < READ_ATTEMPTS:
                    time.sleep(READ_PAUSES[min(attempt, len(READ_PAUSES) - 1)])
                    continue
                self._final(
                    record, READ_ERROR, f"{err} (after {READ_ATTEMPTS} attempts; the next run reads it again)"
                )
                return None
            except ApicoreInputError as err:
                self._final(record, REJECTED, str(err))
                return None
            return data
        return None  # pragma: no cover - the loop always returns

    def _final(self, record: ManifestRecord, status: str, reason: str) -> None:
        self.in_doubt.pop(record.image, None)
        self.manifest.touch(record, status=status, error=reason)
        self.manifest.commit()
        self.note_finished(record)
        self.log.warning("%s %s: %s", record.image, status, reason)
        self._release_waiting(record)

    def _attach(self, record: ManifestRecord, primary: ManifestRecord) -> None:
        """Share the job of an image with the same bytes instead of submitting it again."""
        if (
            primary.task_id
            or primary.is_final
            or (primary.status == UNKNOWN_FATE and primary.image not in self.in_doubt)
        ):
            record.copy_outcome(primary)
            self.manifest.touch(record, sha256=primary.sha256)
            if record.is_final:
                self.note_finished(record)
            if record.status == SUBMITTED and record.task_id:
                self.by_task.setdefault(record.task_id, []).append(record)
            self.log.info("%s has the same bytes as %s: sharing its result", record.image, primary.image)
        else:
            self.waiting.setdefault(primary.sha256 or "", []).append(record.image)

    def _release_waiting(self, primary: ManifestRecord) -> None:
        for image in self.waiting.pop(primary.sha256 or "", []):
            record = self.manifest.hold(image)
            if record is not None:
                self._attach(record, primary)

    def payload(self, data: Item, state: str) -> dict[str, Any]:
        """The body of one submission (the action's); its settings were checked before the batch began."""
        return self.action.payload(data, state)

    def send(self, record: ManifestRecord, data: Item | None = None, reconciling: bool = False) -> str | None:
        """
        Submit one image. Its record is durable as ``pending_submit`` before the request leaves and
        right after the answer.

        :return: ``"pause"`` when submitting must pause (nothing was accepted), else None
        """
        if data is None:
            data = self._read(record)
            if data is None:
                return None
        previous = (record.status, record.state, record.attempts)
        attempt = record.attempts + 1
        state = f"{self.tag}/{data.sha256[:16]}/{attempt}"
        payload = self.payload(data, state)
        try:
            self.action.validate(payload)
        except ApicoreInputError as err:
            if getattr(err, "field", self.action.input_field) != self.action.input_field:
                # A setting, not this input: checked before the batch began, so this is a bug to report.
                raise ApicoreConfigError(f"The {self.action.name} settings are not valid: {err}") from None
            self._final(record, REJECTED, str(err))
            return None
        # A connection that cannot be used fails here, before the image is marked as being sent.
        _ = self.hook.settings
        self.manifest.touch(record, status=PENDING_SUBMIT, state=state, attempts=attempt, sha256=data.sha256)
        self.manifest.commit()
        try:
            result = self.action.submit(self.hook, payload)
        except ApicoreError as err:
            return self._failed(record, previous, reconciling, classify(err), err)
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
                "%s was submitted again after a lost answer (on_unknown_fate='resubmit') and APICore started "
                "task %s; if the lost submission had been accepted, the image runs (and is paid) twice",
                record.image,
                result.task_id,
            )
        self._follow(result.task_id, record)
        self._release_waiting(record)
        return None

    def _failed(
        self,
        record: ManifestRecord,
        previous: tuple,
        reconciling: bool,
        failure: SubmitFailure,
        err: ApicoreError,
    ) -> str | None:
        if failure.verdict is Verdict.UNKNOWN:
            self._lost_answer(record, failure.reason)
            return None
        if failure.verdict is Verdict.PAUSE:
            return self._pause(record, previous, reconciling, failure, err)
        if failure.verdict is Verdict.REJECT:
            self._final(record, REJECTED, failure.reason)
            return None
        if isinstance(err, ApicoreQuotaExceededError):
            # Nothing accepted: the image stays as it was (pending) for a rerun after topping up.
            self._restore(record, previous)
            self.manifest.commit()
            self.stop_for_quota(f"APICore refused a submission for balance ({err.reason})")
            return "pause"
        # Answered (or never sent) and nothing was accepted: the manifest must say so before failing.
        self._restore(record, previous)
        self.manifest.commit()
        raise err

    def _lost_answer(self, record: ManifestRecord, reason: str) -> None:
        self.manifest.touch(record, status=UNKNOWN_FATE, error=f"{reason} (state {record.state!r})")
        self.manifest.commit()
        if self._may_resubmit(record):
            # Keep the slot: the job may be running upstream.
            self.in_doubt[record.image] = time.monotonic() + self.poll_interval
            self.log.warning(
                "The answer to submitting %s (state %r) was lost; on_unknown_fate='resubmit': sending "
                "the same image again in %.1fs (attempt %d of %d); pays twice if the first was accepted",
                record.image,
                record.state,
                self.poll_interval,
                record.attempts + 1,
                self.max_submit_attempts,
            )
            return
        self.in_doubt.pop(record.image, None)
        self.note_finished(record)
        self.log.error(
            "The fate of %s is unknown (state %r): %s. Not sending it again (%s); it is recorded "
            "'unknown_fate' in the manifest.",
            record.image,
            record.state,
            reason,
            f"on_unknown_fate={self.on_unknown_fate!r}"
            if self.on_unknown_fate != "resubmit"
            else f"max_submit_attempts={self.max_submit_attempts} reached",
        )
        self._release_waiting(record)

    def _pause(
        self,
        record: ManifestRecord,
        previous: tuple,
        reconciling: bool,
        failure: SubmitFailure,
        err: ApicoreError,
    ) -> str:
        """Nothing was accepted: put the image back and pause submitting; jobs in flight stay followed."""
        self._restore(record, previous)
        self.manifest.commit()
        if failure.retry_after is not None:
            delay = min(max(failure.retry_after, 0.0), MAX_SUBMIT_BACKOFF)
        else:
            delay = self.backoff(self.backoffs, max(1.0, self.poll_interval), MAX_SUBMIT_BACKOFF)
        self.backoffs += 1
        if self.backoffs > MAX_IDLE_BACKOFFS and not self.tracker.pending:
            note = (
                f"The batch gave up after {self.backoffs} refused submissions in a row with nothing in "
                f"flight. The manifest {self.manifest.path} is intact (unsent images stay pending): fix the "
                "cause or wait, then clear the task; its retry resumes from the manifest."
            )
            self.log.error(note)
            if hasattr(err, "add_note"):  # shown under the error in the task log (Python 3.11+)
                err.add_note(note)
            raise err
        self.paused_until = time.monotonic() + delay
        if reconciling:
            self.in_doubt[record.image] = self.paused_until
        else:
            self.queue.appendleft(record.image)
        self.log.warning(
            "%s; nothing was accepted. Pausing submissions for %.1fs%s (%d in flight keep being followed)",
            failure.reason,
            delay,
            " as the server asked (Retry-After)" if failure.retry_after is not None else "",
            len(self.tracker.pending),
        )
        return "pause"

    def _quota_allows(self) -> bool:
        """Whether the next image may be sent: False (and submitting stops) below ``min_quota_usd``."""
        if self.quota_stop:
            return False
        if self.quota is None or self.quota.may_submit():
            return True
        self.stop_for_quota(self.quota.stop_reason or "the balance is below min_quota_usd")
        return False

    def stop_for_quota(self, reason: str) -> None:
        """Submit nothing more; the jobs in flight are followed to the end, unsent images stay pending."""
        if self.quota_stop:
            return
        self.quota_stop = reason
        self.log.warning(
            "Stopped submitting: %s. The %d jobs in flight are followed to the end; %d images stay pending "
            "for a rerun after the token is topped up.",
            reason,
            len(self.tracker.pending),
            self.manifest.counts().get(PENDING, 0),
        )

    def _restore(self, record: ManifestRecord, previous: tuple) -> None:
        """Undo the ``pending_submit`` mark of a submission that was refused (nothing was accepted)."""
        status, state, attempts = previous
        self.manifest.touch(record, status=status, state=state, attempts=attempts)

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
                self.action.apply(record, task, self.hook, self.log)
                if (record.status, record.start_time) != before:
                    self.manifest.touch(record)
                    if record.is_final:
                        self.note_finished(record)
            if task.is_terminal:
                # Finished: the manifest has it now, so only jobs in flight stay in memory here.
                self.by_task.pop(task.id, None)
        self.tracker.forget(task.id for task in tasks if task.is_terminal)
        gone = (set(self.tracker.not_found) | {str(i) for i in not_found}) & followed
        gone -= self.not_found_seen
        if gone:
            self.tracker.discard(gone)
            for task_id in gone:
                self.not_found_seen.add(task_id)
                for record in self.by_task.pop(task_id, []):
                    self.manifest.touch(
                        record,
                        status=NOT_FOUND,
                        error=f"APICore stopped knowing task {task_id} (expired or removed upstream)",
                    )
                    self.note_finished(record)
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
            latest = self.tracker.latest.pop(task_id, None)
            for record in self.by_task.pop(task_id, []):
                self.manifest.touch(
                    record,
                    status=TIMEOUT,
                    error=(
                        f"task {task_id} did not finish within {self.timeout:g}s; last seen status "
                        f"{latest.status.value if latest else 'unknown'}, progress "
                        f"{(latest.progress if latest else None) or 'unknown'}"
                    ),
                )
                self.note_finished(record)
        self.log.warning("%d tasks did not finish within %gs; given up", len(expired), self.timeout)
        self.manifest.commit()

    # ------------------------------------------------------------------ reporting
    def in_flight_ids(self) -> list[str]:
        return self.tracker.pending

    def progress(self) -> dict[str, Any]:
        """
        Done / total, failed, in flight, to submit, images per minute and ETA, without a pass over the
        manifest (its status counts are kept as it changes), so the cost per loop turn does not grow
        with the number of images.
        """
        counts = self.manifest.counts()
        total = len(self.manifest)
        in_doubt_unknown = sum(
            1
            for image in self.in_doubt
            if (r := self.manifest.get(image)) is not None and r.status == UNKNOWN_FATE
        )
        done = sum(n for status, n in counts.items() if status in FINAL_STATUSES or status == UNKNOWN_FATE)
        done -= in_doubt_unknown
        failed = sum(n for status, n in counts.items() if status in FAILED_STATUSES) - in_doubt_unknown
        # Images finished in the last RATE_WINDOW_MS, over the time since the first of them was sent.
        now = now_ms()
        window_start = now - RATE_WINDOW_MS
        while self.finishes and self.finishes[0][0] * 1000 < window_start:
            self.finishes.popleft()
        rate = None
        if self.finishes:
            began = max(window_start, min(accepted for _, _, accepted in self.finishes))
            if now - began >= 1000:
                rate = sum(count for _, count, _ in self.finishes) / ((now - began) / 60000)
        eta = None if not rate else (total - done) / rate * 60
        return {
            "total": total,
            "done": done,
            "failed": failed,
            "in_flight": self.slots_used,
            "to_submit": len(self.queue),
            "rate": rate,
            "eta": eta,
        }

    def note_finished(self, record: ManifestRecord) -> None:
        """Count one image finished now, for the rate (the window's oldest finishes drop out)."""
        now = now_ms()
        accepted = record.accepted_at or now
        last = self.finishes[-1] if self.finishes else None
        if last is not None and last[0] == now // 1000:
            last[1] += 1
            last[2] = min(last[2], accepted)
        else:
            self.finishes.append([now // 1000, 1, accepted])

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
            duration(state["eta"]),
        )

    def summary(self) -> dict[str, Any]:
        counts = self.manifest.counts()
        failed = sum(n for status, n in counts.items() if status in FAILED_STATUSES)
        return {
            "manifest": str(self.manifest.path),
            "total": len(self.manifest),
            "succeeded": counts.get(SUCCESS, 0),
            "failed": failed,
            "unknown_fate": counts.get(UNKNOWN_FATE, 0),
            "unique_images": len({r.sha256 for r in self.manifest if r.sha256}),
            "by_status": dict(sorted(counts.items())),
        }

    def unknown_fate_examples(self, limit: int = 5) -> list[str]:
        found = []
        for record in self.manifest:
            if record.status == UNKNOWN_FATE:
                found.append(f"{record.image} (state {record.state!r})")
                if len(found) >= limit:
                    break
        return found


def duration(seconds: float | None) -> str:
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
