"""Task store, the queue/concurrency scheduler and the counters behind ``/_emulator/stats``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from airflow_provider_apicore.emulator.buttons import describe_buttons
from airflow_provider_apicore.emulator.config import EmulatorConfig
from airflow_provider_apicore.emulator.describe import describe_text
from airflow_provider_apicore.emulator.faults import ENDPOINTS, FAULT_KINDS, FaultDecider, TaskFate
from airflow_provider_apicore.emulator.gateway import Gateway
from airflow_provider_apicore.emulator.imageinfo import ImageInfo
from airflow_provider_apicore.emulator.notify import Notifier

NOT_START = "NOT_START"
SUBMITTED = "SUBMITTED"
IN_PROGRESS = "IN_PROGRESS"
SUCCESS = "SUCCESS"
MODAL = "MODAL"
MODAL = "MODAL"
FAILURE = "FAILURE"
STATUSES = (NOT_START, SUBMITTED, IN_PROGRESS, MODAL, SUCCESS, FAILURE, "CANCEL")

DISCORD_CHANNEL_ID = "1278921806769815617"
DISCORD_INSTANCE_ID = "1550471212151513088"
UNREADABLE_IMAGE_REASON = "Invalid image: the file is not a readable PNG, JPEG, GIF, WEBP or BMP image"

SUBMIT_SUCCESS = "Submit success"
# The original server's wording, fullwidth comma included.
QUEUE_FULL = "队列已满，请稍后尝试"
TASK_EXISTS = "任务已存在"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Task:
    """One DESCRIBE job and everything needed to render its task object."""

    __slots__ = (
        "description",
        "duration",
        "fail_reason",
        "fate",
        "finish_time",
        "frozen",
        "id",
        "image",
        "image_path",
        "image_url",
        "info",
        "mime",
        "notify_hook",
        "progress",
        "prompt",
        "public_base",
        "start_time",
        "started_at",
        "state",
        "status",
        "submit_time",
    )

    def __init__(
        self,
        task_id: str,
        *,
        image: bytes,
        mime: str,
        suffix: str,
        info: ImageInfo,
        state: str | None,
        notify_hook: str | None,
        fate: TaskFate,
        public_base: str,
    ) -> None:
        self.id = task_id
        self.image = image
        self.mime = mime
        self.info = info
        self.state = state
        self.notify_hook = notify_hook
        self.fate = fate
        self.public_base = public_base
        self.description = f"/describe {task_id}.{suffix}"
        self.image_path = f"/_emulator/images/{task_id}.{suffix}"
        self.status = NOT_START
        self.progress = "0%"
        self.prompt: str | None = None
        self.image_url: str | None = None
        self.fail_reason: str | None = None
        self.submit_time = now_ms()
        self.start_time: int | None = None
        self.finish_time: int | None = None
        self.started_at = 0.0  # monotonic seconds
        self.duration = 0.0
        self.frozen = False

    def to_json(self) -> dict[str, Any]:
        """The protocol's task object."""
        return {
            "id": self.id,
            "action": "DESCRIBE",
            "status": self.status,
            "progress": self.progress,
            "prompt": self.prompt,
            "promptEn": self.prompt,
            "description": self.description,
            "state": self.state,
            "submitTime": self.submit_time,
            "startTime": self.start_time,
            "finishTime": self.finish_time,
            "imageUrl": self.image_url,
            "failReason": self.fail_reason,
            "properties": {
                "finalPrompt": self.prompt,
                "notifyHook": self.notify_hook,
                "discordInstanceId": DISCORD_INSTANCE_ID,
            },
            "buttons": describe_buttons() if self.status == SUCCESS else [],
        }

    def complete(self) -> str | None:
        """Fill in the result of a job that ran to its end; a returned text fails it with that reason."""
        if self.info.format is None:
            return UNREADABLE_IMAGE_REASON
        self.prompt = describe_text(self.info)
        return None


class EmulatorState:
    """
    All mutable emulator state. Every method runs on the server's event loop thread, so no locks.

    :param config: the live configuration (changed in place by ``PUT /_emulator/config``).
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.decider = FaultDecider(config.seed)
        self.notifier = Notifier(config.notify_workers, config.notify_timeout)
        self.gateway = Gateway(self)
        # Seams for an accounting module; replace them on the instance. ``charge(token, model)``
        # is asked before a submit reaches the proxy (False: HTTP 400 quota_not_enough);
        # ``refund(token, model)`` is called when that submit was not accepted, or when the gateway
        # sees its job fail; ``token_check(token)`` returns a message when the token is exhausted
        # (HTTP 401). ``model`` is the gateway's price name: mj_describe, mj_imagine, swap_face…
        self.charge: Callable[[str, str], bool] = _always_true
        self.refund: Callable[[str, str], None] = _no_op
        self.token_check: Callable[[str], str | None] = _no_problem
        self.reset()

    # ----------------------------------------------------------------------------------- lifecycle
    def reset(self) -> None:
        """Forget every task and counter and restart the fault streams from the seed."""
        self.tasks: dict[str, Task] = {}
        self.by_state_tag: dict[str | None, list[Task]] = {}
        self.running: dict[str, Task] = {}  # tasks holding a concurrency slot
        self.queue: deque[Task] = deque()  # tasks waiting for a slot, FIFO
        self.fresh: list[Task] = []  # NOT_START tasks to move to SUBMITTED on the next tick
        self.issued_ids: set[str] = set()
        self.image_hashes: dict[str, int] = {}
        self.task_by_hash: dict[str, Task] = {}
        self.decider.reseed(self.config.seed)
        self.notifier.reset_counters()
        self.requests = dict.fromkeys(ENDPOINTS, 0)
        self.unauthorized = 0
        self.submissions_accepted = 0
        self.submissions_rejected: dict[str, int] = {}
        self.duplicate_submissions = 0
        self.submissions_existed = 0
        self.tasks_created = 0
        self.status_counts = dict.fromkeys(STATUSES, 0)
        self.max_concurrent_in_progress = 0
        self.max_active = 0
        self.faults_injected = dict.fromkeys(FAULT_KINDS, 0)
        # Submissions as the proxy saw them, whatever the endpoint (see record_submission).
        self.jobs_created = 0
        self.job_ids: set[str] = set()
        self.submit_answers_delivered = 0
        self.jobs_unanswered = 0
        self.answers_held = 0  # processed requests whose answer the slow fault holds right now
        self.jobs_held = 0  # of which submits that created a job
        self.quota_refused = 0
        self.by_payload: dict[str, list[int]] = {}
        self.duplicates = {"payload": 0, "image": 0, "prompt": 0}  # jobs beyond the first per key
        self.images_with_duplicate_jobs = 0
        self.by_image: dict[str, list[int]] = {}
        self.by_prompt: dict[str, list[int]] = {}
        self.requests_by_mode: dict[str, int] = {}
        self.gateway.reset()

    def apply_config(self, changes: dict[str, Any]) -> None:
        """Apply a partial configuration update (raises EmulatorConfigError, changing nothing)."""
        old_seed = self.config.seed
        self.config.update(changes)
        # The timeout applies to the next callback; notify_workers only when the server restarts.
        self.notifier.timeout = self.config.notify_timeout
        if self.config.seed != old_seed:
            self.decider.reseed(self.config.seed)

    # -------------------------------------------------------------------------------------- submit
    def reject(self, code: int) -> None:
        key = str(code)
        self.submissions_rejected[key] = self.submissions_rejected.get(key, 0) + 1

    def submit(
        self,
        *,
        image: bytes,
        mime: str,
        suffix: str,
        info: ImageInfo,
        state: str | None,
        notify_hook: str | None,
        public_base: str,
    ) -> dict[str, Any]:
        """
        Accept, queue or refuse one DESCRIBE submission.

        :return: the submit answer (code 1, 21, 22 or 23).
        """

        def build(task_id: str, fate: TaskFate) -> Task:
            return Task(
                task_id,
                image=image,
                mime=mime,
                suffix=suffix,
                info=info,
                state=state,
                notify_hook=notify_hook,
                fate=fate,
                public_base=public_base,
            )

        return self.submit_task(build, dedupe_key=info.sha256)

    def submit_task(
        self,
        build: Callable[[str, TaskFate], Task],
        *,
        dedupe_key: str | None = None,
        hold: bool = False,
    ) -> dict[str, Any]:
        """
        Accept, queue or refuse one job of any kind (the one lifecycle every endpoint shares).

        :param build: makes the task from its new id and fate.
        :param dedupe_key: what makes two submissions the same job when ``dedupe`` is on (the
            image SHA-256 for DESCRIBE); None: never deduplicated.
        :param hold: keep the new task in status MODAL, outside the queue, until
            :meth:`release_modal` (no queue or capacity check: nothing runs yet).
        :return: the submit answer (code 1, 21, 22 or 23); for ``hold`` code 1 with the new id.
        """
        properties = {"discordChannelId": DISCORD_CHANNEL_ID, "discordInstanceId": DISCORD_INSTANCE_ID}
        config = self.config
        if not hold and self.decider.queue_full(config.faults):
            self.faults_injected["queue_full"] += 1
            self.reject(23)
            return {"code": 23, "description": QUEUE_FULL, "result": None, "properties": properties}
        if config.dedupe and dedupe_key is not None:
            earlier = self.task_by_hash.get(dedupe_key)
            if earlier is not None and earlier.id in self.tasks and earlier.status not in (FAILURE, "CANCEL"):
                self.submissions_existed += 1
                return {
                    "code": 21,
                    "description": TASK_EXISTS,
                    "result": earlier.id,
                    "properties": properties,
                }
        if not hold and self._full():
            self.reject(23)
            return {"code": 23, "description": QUEUE_FULL, "result": None, "properties": properties}

        task = build(self._new_id(), self.decider.task_fate(config.faults))
        self.tasks[task.id] = task
        self.by_state_tag.setdefault(task.state, []).append(task)
        self.status_counts[task.status] += 1
        self.tasks_created += 1
        self.submissions_accepted += 1
        if dedupe_key is not None:
            seen = self.image_hashes.get(dedupe_key, 0)
            if seen:
                self.duplicate_submissions += 1
            self.image_hashes[dedupe_key] = seen + 1
            self.task_by_hash[dedupe_key] = task
        if hold:
            self._set_status(task, MODAL)
            self._emit(task)
            return {"code": 1, "description": SUBMIT_SUCCESS, "result": task.id, "properties": properties}
        return self._enqueue(task, properties)

    def release_modal(self, task: Task) -> dict[str, Any]:
        """
        Queue a task held in MODAL (``/mj/submit/modal``), or refuse it when the queue is full.

        :return: the submit answer (code 1 or 22 with the same task id, or 23).
        """
        properties = {"discordChannelId": DISCORD_CHANNEL_ID, "discordInstanceId": DISCORD_INSTANCE_ID}
        if self.decider.queue_full(self.config.faults):
            self.faults_injected["queue_full"] += 1
            self.reject(23)
            return {"code": 23, "description": QUEUE_FULL, "result": None, "properties": properties}
        if self._full():
            self.reject(23)
            return {"code": 23, "description": QUEUE_FULL, "result": None, "properties": properties}
        self._set_status(task, NOT_START)
        return self._enqueue(task, properties)

    def _full(self) -> bool:
        return len(self.running) + len(self.queue) >= self.config.concurrency + self.config.queue_size

    def _enqueue(self, task: Task, properties: dict[str, Any]) -> dict[str, Any]:
        """Give a NOT_START task a slot or a place in the queue; the answer reports which."""
        self.fresh.append(task)
        if len(self.running) < self.config.concurrency and not self.queue:
            self.running[task.id] = task
            answer = {"code": 1, "description": SUBMIT_SUCCESS, "result": task.id, "properties": properties}
        else:
            ahead = len(self.queue)
            self.queue.append(task)
            answer = {
                "code": 22,
                "description": f"排队中，前面还有{ahead}个任务",
                "result": task.id,
                "properties": {**properties, "numberOfQueues": ahead},
            }
        self.max_active = max(self.max_active, len(self.running) + len(self.queue))
        self._emit(task)
        return answer

    def _new_id(self) -> str:
        # The original server: submit time in epoch ms followed by three random digits.
        while True:
            task_id = f"{now_ms()}{self.decider.id_digits():03d}"
            if task_id not in self.issued_ids:
                self.issued_ids.add(task_id)
                return task_id

    # ---------------------------------------------------------------------------- submission counts
    def record_submission(self, path: str, payload: Any, answer: Any) -> str | None:
        """
        Count one submit the proxy processed, per payload, per image and per prompt.

        A job counts as created when the answer carries a task id never answered before (code 1
        or 22; code 21 with an earlier task's id is not a new job, a MODAL's 21 with a new id is).

        :param path: request path without a mode prefix, e.g. ``/mj/submit/describe``.
        :param payload: the decoded JSON request body (anything; only objects are keyed).
        :param answer: the decoded JSON answer of the proxy.
        :return: the id of the job created, or None.
        """
        job_id = None
        if isinstance(answer, dict) and answer.get("code") in (1, 21, 22):
            result = answer.get("result")
            if isinstance(result, str) and result and result not in self.job_ids:
                job_id = result
                self.job_ids.add(result)
                self.jobs_created += 1
        payload_key, images, prompt = submission_keys(path, payload)
        created = 1 if job_id is not None else 0
        keyed = [("payload", self.by_payload, payload_key), ("prompt", self.by_prompt, prompt)]
        keyed += [("image", self.by_image, digest) for digest in set(images)]
        for kind, table, key in keyed:
            if key is None:
                continue
            counts = table.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] += created
            # Kept up to date here so the stats stay O(1) however many images were submitted.
            if created and counts[1] > 1:
                self.duplicates[kind] += 1
                if kind == "image" and counts[1] == 2:
                    self.images_with_duplicate_jobs += 1
        return job_id

    def submissions(self, minimum_jobs: int = 0) -> dict[str, Any]:
        """``GET /_emulator/submissions``: submits and jobs per payload, image SHA-256 and prompt."""

        def view(table: dict[str, list[int]]) -> dict[str, dict[str, int]]:
            return {k: {"submits": v[0], "jobs": v[1]} for k, v in table.items() if v[1] >= minimum_jobs}

        return {
            "by_payload": view(self.by_payload),
            "by_image": view(self.by_image),
            "by_prompt": view(self.by_prompt),
        }

    # --------------------------------------------------------------------------------------- query
    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def image_for(self, task_id: str) -> tuple[bytes, str] | None:
        """
        The image bytes and mime type of a task, for the gateway's ``/mj/image/<id>``.

        A task class may define ``result_image() -> (bytes, mime) | None``; otherwise its
        ``image`` and ``mime`` attributes are used (a DESCRIBE task serves the uploaded image).
        """
        task = self.tasks.get(task_id)
        if task is None:
            return None
        getter = getattr(task, "result_image", None)
        if callable(getter):
            return getter()
        image = getattr(task, "image", None)
        if isinstance(image, bytes) and image:
            return image, getattr(task, "mime", None) or "image/jpeg"
        return None

    def tasks_with_state(self, state: str | None) -> list[Task]:
        return list(self.by_state_tag.get(state, []))

    # ---------------------------------------------------------------------------------- scheduling
    def tick(self) -> None:
        """Advance every task that can move; O(running + newly created)."""
        mono = time.monotonic()
        for task in list(self.running.values()):
            if task.status == SUBMITTED:
                self._start(task, mono)
            elif task.status == IN_PROGRESS and not task.frozen:
                self._advance(task, mono)
        fresh, self.fresh = self.fresh, []
        for task in fresh:
            if task.status == NOT_START and task.id in self.tasks:
                self._set_status(task, SUBMITTED)
                self._emit(task)
        while self.queue and len(self.running) < self.config.concurrency:
            task = self.queue.popleft()
            self.running[task.id] = task
            if task.status == SUBMITTED:
                self._start(task, mono)
        in_progress = sum(1 for task in self.running.values() if task.status == IN_PROGRESS)
        self.max_concurrent_in_progress = max(self.max_concurrent_in_progress, in_progress)
        self.max_active = max(self.max_active, len(self.running) + len(self.queue))
        if self.config.gateway:
            self.gateway.maybe_refresh()

    def _start(self, task: Task, mono: float) -> None:
        task.started_at = mono
        task.duration = self.config.job_seconds
        task.start_time = max(now_ms(), task.submit_time + 1)
        task.progress = "0%"
        task.image_url = task.public_base + task.image_path
        self._set_status(task, IN_PROGRESS)
        self._emit(task)

    def _advance(self, task: Task, mono: float) -> None:
        fraction = (mono - task.started_at) / task.duration if task.duration > 0 else 1.0
        fate = task.fate
        if fate.fault is not None and fraction >= fate.at_fraction:
            self.faults_injected[fate.fault] += 1
            if fate.fault == "vanish":
                self._forget(task)
            elif fate.fault == "stuck":
                task.frozen = True
                if not self.config.faults.stuck_holds_slot:
                    self.running.pop(task.id, None)
            else:
                self._finish(task, FAILURE, fate.fail_reason)
            return
        if fraction >= 1.0:
            reason = task.complete()
            self._finish(task, FAILURE if reason else SUCCESS, reason)
            return
        step = self.config.progress_step
        progress = f"{min(99, int(fraction * 100) // step * step)}%"
        if progress != task.progress:
            task.progress = progress
            self._emit(task)

    def _finish(self, task: Task, status: str, fail_reason: str | None) -> None:
        self.running.pop(task.id, None)
        task.finish_time = max(now_ms(), task.start_time or 0)
        if status == SUCCESS:
            task.progress = "100%"
        task.fail_reason = fail_reason
        self._set_status(task, status)
        self._emit(task)

    def _forget(self, task: Task) -> None:
        self.running.pop(task.id, None)
        self.tasks.pop(task.id, None)
        tagged = self.by_state_tag.get(task.state)
        if tagged is not None:
            tagged.remove(task)
        self.status_counts[task.status] -= 1

    def _set_status(self, task: Task, status: str) -> None:
        self.status_counts[task.status] -= 1
        self.status_counts[status] += 1
        task.status = status

    def _emit(self, task: Task) -> None:
        if task.notify_hook:
            self.notifier.submit(task.notify_hook, task.to_json())

    # --------------------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /_emulator/stats``."""
        return {
            "requests": dict(self.requests),
            "unauthorized": self.unauthorized,
            "submissions_accepted": self.submissions_accepted,
            "submissions_rejected": dict(self.submissions_rejected),
            "duplicate_submissions": self.duplicate_submissions,
            "submissions_existed": self.submissions_existed,
            "tasks_created": self.tasks_created,
            "tasks_known": len(self.tasks),
            "tasks_by_status": dict(self.status_counts),
            "running": len(self.running),
            "queued": len(self.queue),
            "max_concurrent_in_progress": self.max_concurrent_in_progress,
            "max_active": self.max_active,
            "notify_sent": self.notifier.sent,
            "notify_failed": self.notifier.failed,
            "notify_dropped": self.notifier.dropped,
            "notify_pending": self.notifier.pending,
            "faults_injected": dict(self.faults_injected),
            "jobs_created": self.jobs_created,
            "submit_answers_delivered": self.submit_answers_delivered,
            "jobs_unanswered": self.jobs_unanswered,
            "answers_held": self.answers_held,
            "jobs_held": self.jobs_held,
            "duplicate_jobs": self.duplicates["payload"],
            "duplicate_image_jobs": self.duplicates["image"],
            "duplicate_prompt_jobs": self.duplicates["prompt"],
            "images_with_duplicate_jobs": self.images_with_duplicate_jobs,
            "quota_refused": self.quota_refused,
            "requests_by_mode": dict(self.requests_by_mode),
            "gateway": self.gateway.stats(),
            "config": self.config.to_dict(),
        }


def _always_true(token: str, model: str) -> bool:
    return True


def _no_op(token: str, model: str) -> None:
    return None


def _no_problem(token: str) -> str | None:
    return None


#: Request fields that do not change what job a submit asks for.
UNKEYED_FIELDS = frozenset({"state", "notifyHook", "accountFilter"})
#: Request fields whose data URLs are masks, not images.
NOT_IMAGES = frozenset({"maskBase64"})


def _data_url_digest(value: str) -> str | None:
    """SHA-256 (hex) of the bytes of a ``data:<mime>;base64,<data>`` string, or None."""
    head, sep, data = value.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        return None
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return hashlib.sha256(raw).hexdigest() if raw else None


def submission_keys(path: str, payload: Any) -> tuple[str | None, list[str], str | None]:
    """
    What makes two submissions the same job request.

    :param path: request path without a mode prefix.
    :param payload: the decoded JSON request body.
    :return: ``(payload key, image digests, prompt)``: the payload key is the SHA-256 of the path
        and the body without ``state``/``notifyHook``/``accountFilter``, data URLs replaced by the
        SHA-256 of their bytes; image digests are those of the images the request carries (the
        decoded bytes, not the base64 text); the prompt is the ``prompt`` field when non-empty.
    """
    if not isinstance(payload, dict):
        return None, [], None
    images: list[str] = []

    def canon(value: Any, field: str | None) -> Any:
        if isinstance(value, str):
            digest = _data_url_digest(value) if value.startswith("data:") else None
            if digest is None:
                return value
            if field not in NOT_IMAGES:
                images.append(digest)
            return "sha256:" + digest
        if isinstance(value, list):
            return [canon(item, field) for item in value]
        if isinstance(value, dict):
            return {k: canon(v, k) for k, v in value.items()}
        return value

    body = {k: canon(v, k) for k, v in payload.items() if k not in UNKEYED_FIELDS}
    text = json.dumps({"path": path, "body": body}, sort_keys=True, ensure_ascii=False, default=str)
    prompt = payload.get("prompt")
    return (
        hashlib.sha256(text.encode("utf-8")).hexdigest(),
        images,
        prompt if isinstance(prompt, str) and prompt else None,
    )
