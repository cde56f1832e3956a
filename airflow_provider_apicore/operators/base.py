"""
MJSubmitOperator: the one path from arguments to result that every single-job action shares.

validate → re-attach or submit (durably) → push the task id → wait (poll, or defer to
:class:`~airflow_provider_apicore.triggers.task.MJTaskTrigger`) → ``execute_complete`` → result.

An action (describe, imagine, action, blend, ...) adds only what is its own: ``endpoint`` and
``schema_name`` class attributes, :meth:`MJSubmitOperator.build_payload` and
:meth:`MJSubmitOperator.map_result`, and, where the protocol needs a second step (the MODAL
continuation), :meth:`MJSubmitOperator.continue_job`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, conf

from airflow_provider_apicore.durable import ACCEPTED, SUBMITTING, UNKNOWN_FATE, DurableJob
from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreBannedPromptError,
    ApicoreConfigError,
    ApicoreError,
    ApicoreHTTPError,
    ApicoreInputError,
    ApicoreQueueFullError,
    ApicoreQuotaExceededError,
    ApicoreResponseError,
    ApicoreValidationError,
    SubmissionFateUnknownError,
    SubmissionInDoubtError,
    TaskNotFoundError,
)
from airflow_provider_apicore.hooks.apicore import ApicoreHook, mask_url_credentials, retry_delay
from airflow_provider_apicore.links import ApicoreResultImageLink
from airflow_provider_apicore.models import MJTask, SubmitResult, TaskStatus
from airflow_provider_apicore.operators.masking import NotifyHookMaskingMixin
from airflow_provider_apicore.results import outcome
from airflow_provider_apicore.schemas import validate_payload
from airflow_provider_apicore.tracking import TaskTracker
from airflow_provider_apicore.triggers.task import MJTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

XCOM_TASK_ID = "task_id"
#: XCom key of a submission whose answer was lost: ``{"state", "cause"}``, so that a downstream
#: step (the fan-out's ``write_results``) can report the image as ``unknown_fate`` with its tag.
XCOM_UNKNOWN_FATE = "unknown_fate"
#: What a retry does about an earlier try whose submission may have created a job.
ON_UNKNOWN_FATE = ("fail", "resubmit")
#: Airflow's deferral timeout fires this much after the trigger's own deadline (the trigger reports
#: the timeout itself, with the last status seen; this only guards against a lost trigger).
DEFER_TIMEOUT_MARGIN = 60.0
#: How long before ``execution_timeout`` the provider's own timeout path ends the wait.
EXECUTION_TIMEOUT_MARGIN = 30.0


def default_retry_policy() -> Any:
    """
    Airflow 3.3 ``retry_policy`` for every APICore operator.

    Errors a retry cannot fix fail at once without spending retries: authentication, a spent balance,
    bad input or configuration, a banned prompt, a validation refusal, a submission in doubt. Busy or
    unreachable service (queue full, 429/5xx, connection failures, unreadable answers) retry after a
    longer delay than the default. Anything else follows the task's ``retries`` and ``retry_delay``.
    Pass ``retry_policy=`` to override.
    """
    from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

    return ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception=[
                    ApicoreAuthError,
                    ApicoreQuotaExceededError,
                    ApicoreConfigError,
                    ApicoreInputError,
                    ApicoreBannedPromptError,
                    ApicoreValidationError,
                    SubmissionInDoubtError,
                ],
                action=RetryAction.FAIL,
                reason="not fixable by retrying: fix the input, connection or balance, then clear the task",
            ),
            RetryRule(
                exception=[ApicoreQueueFullError, ApicoreHTTPError, ApicoreResponseError],
                action=RetryAction.RETRY,
                retry_delay=timedelta(minutes=2),
                reason="APICore is busy or unreachable; trying again later",
            ),
        ]
    )


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def check_wait_arguments(poll_interval: Any, timeout: Any) -> None:
    """Reject unusable waiting arguments at DAG parse time, with the argument named."""
    if _is_template(poll_interval) or _is_template(timeout):
        return
    if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
        raise ApicoreConfigError(f"poll_interval must be a number of seconds above 0, got {poll_interval!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ApicoreConfigError(f"timeout must be a number of seconds above 0 (or None), got {timeout!r}")


class MJSubmitOperator(NotifyHookMaskingMixin, BaseOperator):
    """
    Base of every operator that submits one Midjourney job through APICore and follows it.

    **Durable** (``durable=True``, the default): the task id is kept in Airflow's ``task_state_store``
    before the task waits or defers, and a mark is written there before the submission leaves. A
    retry (on any worker, in a fresh process) re-attaches to a live job, returns at once if it
    succeeded, and submits again only after a terminal failure (FAILURE, CANCEL, not found). When an
    earlier try's submission may have created a job whose id never arrived (lost answer, or the worker
    died with the request in the air), the retry does not send it again unless
    ``on_unknown_fate="resubmit"``: nothing deduplicates a resubmission, so it could be a second paid job.

    :param apicore_conn_id: the Airflow connection of type ``apicore`` (templated)
    :param notify_hook: URL APICore calls on each status change (templated); gateways may drop it
    :param state: free text echoed back on the task (templated); default: a tag naming the run
    :param bot_type: ``MID_JOURNEY`` (server default) or ``NIJI_JOURNEY``, where the action takes it
    :param wait_for_completion: wait for the job and return its result; otherwise return the task id
    :param deferrable: wait in the triggerer and free the worker slot
    :param poll_interval: seconds between two status polls
    :param timeout: seconds to wait for the job (``None``: no limit but ``execution_timeout``)
    :param queue_full_retries: resubmissions after "try later" answers (queue full, no account free),
        with backoff; nothing was accepted by those
    :param durable: keep the job in ``task_state_store`` so that a retry re-attaches
    :param on_unknown_fate: ``"fail"`` (default) or ``"resubmit"`` (may pay twice): what a retry does
        when an earlier try's submission may have created a job whose id is unknown
    """

    #: The endpoint's path, e.g. ``/mj/submit/describe``.
    endpoint: ClassVar[str] = ""
    #: The JSON Schema file under ``schemas/`` (without ``.json``).
    schema_name: ClassVar[str] = ""
    #: A short name for logs and the durable record.
    action_name: ClassVar[str] = ""
    #: Whether the endpoint takes ``botType``.
    supports_bot_type: ClassVar[bool] = False
    #: Whether the endpoint takes ``notifyHook`` and ``state``.
    supports_notify: ClassVar[bool] = True

    template_fields: Sequence[str] = ("notify_hook", "state", "apicore_conn_id")
    ui_color = "#e8dff5"
    #: "Midjourney image" in the task view: the finished task's image (the gateway's /mj/image/<id>).
    operator_extra_links = (ApicoreResultImageLink(),)

    def __init__(
        self,
        *,
        apicore_conn_id: str = ApicoreHook.default_conn_name,
        notify_hook: str | None = None,
        state: str | None = None,
        bot_type: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 5.0,
        timeout: float | None = 600.0,
        queue_full_retries: int = 5,
        durable: bool = True,
        on_unknown_fate: str = "fail",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retry_policy", default_retry_policy())
        super().__init__(**kwargs)
        check_wait_arguments(poll_interval, timeout)
        if (
            isinstance(queue_full_retries, bool)
            or not isinstance(queue_full_retries, int)
            or queue_full_retries < 0
        ):
            raise ApicoreConfigError(
                f"queue_full_retries must be a whole number >= 0, got {queue_full_retries!r}"
            )
        if on_unknown_fate not in ON_UNKNOWN_FATE:
            raise ApicoreConfigError(
                f"on_unknown_fate must be one of {', '.join(ON_UNKNOWN_FATE)}, got {on_unknown_fate!r}"
            )
        if bot_type is not None and bot_type not in ("MID_JOURNEY", "NIJI_JOURNEY"):
            raise ApicoreConfigError(f"bot_type must be 'MID_JOURNEY' or 'NIJI_JOURNEY', got {bot_type!r}")
        self.apicore_conn_id = apicore_conn_id
        self.notify_hook = notify_hook
        self.state = state
        self.bot_type = bot_type
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.queue_full_retries = queue_full_retries
        self.durable = durable
        self.on_unknown_fate = on_unknown_fate
        self._in_flight: str | None = None
        if not _is_template(notify_hook):
            mask_url_credentials(notify_hook)

    # ------------------------------------------------------------------ per action
    def build_payload(self, context: Context) -> dict[str, Any]:
        """The action's own payload fields (read inputs here). Nothing is sent yet."""
        raise NotImplementedError

    def map_result(self, task: MJTask, hook: ApicoreHook, context: Context) -> Any:
        """The typed result of a successful task."""
        raise NotImplementedError

    def continue_job(
        self, hook: ApicoreHook, task_id: str, submitted: SubmitResult | None, context: Context
    ) -> str:
        """
        A second step after submitting (or re-attaching), before waiting; returns the id to wait for.

        ``submitted`` is ``None`` on re-attach. Default: nothing to do.
        """
        return task_id

    def describe_input(self, payload: dict[str, Any]) -> str:
        """A loggable summary of the input (never image data or secrets)."""
        return self.action_name

    # ------------------------------------------------------------------ shared path
    @property
    def hook(self) -> ApicoreHook:
        return ApicoreHook(apicore_conn_id=self.apicore_conn_id)

    def payload(self, context: Context) -> dict[str, Any]:
        """The full payload, validated against the endpoint's JSON Schema: bad input fails here."""
        payload = dict(self.build_payload(context))
        if self.supports_notify:
            if self.notify_hook:
                payload["notifyHook"] = self.notify_hook
            payload["state"] = self.state if self.state is not None else self._default_state(context)
        if self.supports_bot_type and self.bot_type:
            payload["botType"] = self.bot_type
        validate_payload(self.schema_name, payload)
        return payload

    def _default_state(self, context: Context) -> str:
        # A tag that names the try: a job seen in the APICore console can be traced to its task.
        ti = context.get("ti")
        map_index = getattr(ti, "map_index", -1)
        tag = f"{getattr(ti, 'dag_id', '?')}/{self.task_id}"
        if map_index not in (None, -1):
            tag += f"[{map_index}]"
        return f"{tag}/{getattr(ti, 'try_number', 0)}/{uuid.uuid4().hex[:8]}"[-255:]

    def execute(self, context: Context) -> Any:
        payload = self.payload(context)
        self.log.info("%s: %s", self.action_name, self.describe_input(payload))
        if self.notify_hook:
            self.log.info("APICore will call notifyHook %s", mask_url_credentials(self.notify_hook))
        hook = self.hook
        try:
            return self._run(hook, payload, context)
        finally:
            hook.close()

    def _run(self, hook: ApicoreHook, payload: dict[str, Any], context: Context) -> Any:
        job = DurableJob(context, self.durable, self.log)
        try:
            task_id, task = self._reattach(hook, job, context)
        except SubmissionInDoubtError as err:
            context["ti"].xcom_push(key=XCOM_UNKNOWN_FATE, value={"state": err.state, "cause": err.cause})
            raise
        submitted = None
        if task is not None and task.status is TaskStatus.SUCCESS:
            return self._finish_task(hook, task, context)
        if task_id is None:
            try:
                submitted = self._submit(hook, job, payload)
            except SubmissionFateUnknownError as err:
                context["ti"].xcom_push(key=XCOM_UNKNOWN_FATE, value={"state": err.state, "cause": err.cause})
                raise
            task_id = submitted.task_id
        context["ti"].xcom_push(key=XCOM_TASK_ID, value=task_id)
        self._in_flight = task_id
        task_id = self.continue_job(hook, task_id, submitted, context)
        if task_id != self._in_flight:
            job.record_accepted(task_id, self.action_name, parent=self._in_flight)
            context["ti"].xcom_push(key=XCOM_TASK_ID, value=task_id)
            self._in_flight = task_id
        if not self.wait_for_completion:
            return task_id
        if (submitted is not None and submitted.existed) or task is not None:
            # An existing job may well be finished already: no wait needed then.
            event = self._check_once(hook, task_id)
            if event is not None:
                return self._complete(event, task_id, hook, context)
        if self.deferrable:
            self._defer(task_id)
        event = hook.wait_for_tasks([task_id], self.poll_interval, self._wait_seconds())
        return self._complete(event, task_id, hook, context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after :class:`MJTaskTrigger`: the same result or error as the polling path."""
        task_id = event["task_ids"][0]
        self._in_flight = task_id
        hook = self.hook
        try:
            return self._complete(event, task_id, hook, context)
        finally:
            hook.close()

    def on_kill(self) -> None:
        """
        APICore has no cancel endpoint: a job already accepted keeps running (and is billed). Say which,
        so that a person can find it; a retry of this task re-attaches to it.
        """
        if self._in_flight:
            self.log.warning(
                "Killed while Midjourney task %s was in flight. APICore cannot cancel it: it runs to its end "
                "upstream, and a retry of this task re-attaches to it.",
                self._in_flight,
            )

    # ------------------------------------------------------------------ steps
    def _reattach(
        self, hook: ApicoreHook, job: DurableJob, context: Context
    ) -> tuple[str | None, MJTask | None]:
        """What an earlier try left: a live or finished job to use, or permission to submit."""
        prior = job.load()
        if not prior:
            return None, None
        phase = prior.get("phase")
        if phase == ACCEPTED and prior.get("task_id"):
            task_id = str(prior["task_id"])
            task = self._look_up(hook, task_id)
            if task is None:
                self.log.warning("Earlier task %s is unknown to APICore now; submitting again", task_id)
            elif task.status in (TaskStatus.FAILURE, TaskStatus.CANCEL):
                self.log.warning(
                    "Earlier task %s ended %s (%s); submitting again",
                    task_id,
                    task.status.value,
                    task.fail_reason or "no reason given",
                )
            else:
                self.log.info(
                    "Re-attaching to Midjourney task %s of an earlier try (status %s); not submitting again",
                    task_id,
                    task.status.value,
                )
                return task_id, task
            return None, None
        if phase in (SUBMITTING, UNKNOWN_FATE):
            cause = prior.get("cause") or "the worker stopped while the submission was in the air"
            if self.on_unknown_fate == "resubmit":
                self.log.warning(
                    "An earlier try's submission (state %r) may have created a job (%s); submitting again "
                    "because on_unknown_fate='resubmit': this may pay twice",
                    prior.get("state"),
                    cause,
                )
                return None, None
            raise SubmissionInDoubtError(self.task_id, prior.get("state"), cause)
        return None, None

    @staticmethod
    def _look_up(hook: ApicoreHook, task_id: str) -> MJTask | None:
        for task in hook.list_tasks([task_id]):
            if task.id == task_id:
                return task
        try:
            return hook.fetch_task(task_id)
        except TaskNotFoundError:
            return None

    def _submit(self, hook: ApicoreHook, job: DurableJob, payload: dict[str, Any]) -> SubmitResult:
        """Submit, backing off on "try later" answers, which mean nothing was accepted."""
        attempt = 0
        while True:
            job.mark_submitting(str(payload.get("state") or ""), self.action_name)
            try:
                submitted = hook.submit(self.endpoint, payload)
            except SubmissionFateUnknownError as err:
                job.record_unknown_fate(err.state, self.action_name, err.cause)
                raise
            except ApicoreQueueFullError:
                job.forget()
                if attempt >= self.queue_full_retries:
                    raise
                delay = retry_delay(attempt, hook.retry_backoff * 2, hook.max_backoff)
                self.log.warning("APICore is busy (nothing accepted); submitting again in %.1fs", delay)
                hook._sleep(delay)
                attempt += 1
                continue
            except ApicoreError:
                job.forget()
                raise
            job.record_accepted(submitted.task_id, self.action_name)
            self.log.info("APICore accepted the job: task %s (%s)", submitted.task_id, submitted.outcome)
            return submitted

    def _check_once(self, hook: ApicoreHook, task_id: str) -> dict[str, Any] | None:
        tracker = TaskTracker([task_id])
        tracker.update(hook.list_tasks([task_id]))
        return tracker.event() if tracker.done else None

    def _wait_seconds(self) -> float | None:
        """The wait's own deadline: ``timeout``, and never past ``execution_timeout``."""
        limits = []
        if self.timeout is not None:
            limits.append(float(self.timeout))
        if self.execution_timeout is not None:
            limits.append(max(1.0, self.execution_timeout.total_seconds() - EXECUTION_TIMEOUT_MARGIN))
        return min(limits) if limits else None

    def _defer(self, task_id: str) -> None:
        wait = self._wait_seconds()
        self.defer(
            trigger=MJTaskTrigger(
                task_ids=[task_id],
                apicore_conn_id=self.apicore_conn_id,
                poll_interval=self.poll_interval,
                end_time=None if wait is None else time.time() + wait,
            ),
            method_name="execute_complete",
            timeout=None if wait is None else timedelta(seconds=wait + DEFER_TIMEOUT_MARGIN),
        )

    def _complete(self, event: dict[str, Any], task_id: str, hook: ApicoreHook, context: Context) -> Any:
        task = outcome(event, task_id, self._wait_seconds() or 0)
        return self._finish_task(hook, task, context)

    def _finish_task(self, hook: ApicoreHook, task: MJTask, context: Context) -> Any:
        self._in_flight = None
        if task.image_url:
            from urllib.parse import urljoin

            ApicoreResultImageLink.persist(context, urljoin(hook.base_url + "/", task.image_url))
        return self.map_result(task, hook, context)
