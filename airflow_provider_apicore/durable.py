"""
What a task remembers of its APICore job across tries: Airflow 3.3's ``task_state_store``.

A retry may run on another host, in a fresh process, on a fresh operator instance: nothing in memory
or on a local disk survives, but the task state store (kept by the API server, per task instance)
does. :class:`DurableJob` writes there, in this order:

1. ``{"phase": "submitting", "state": <tag>}`` **before** the submission leaves;
2. ``{"phase": "accepted", "task_id": <id>}`` the moment APICore answers with a task id;
3. ``{"phase": "unknown_fate", ...}`` when the answer was lost (the job may exist).

A retry reads it back (:meth:`DurableJob.load`) and re-attaches to the job, or refuses to send again
what may already be a paid job. This follows the contract of Airflow's ``ResumableJobMixin``
(``external_id_key`` in ``task_state_store``), with the extra "submitting" mark that a service
without deduplication needs.

Not covered: a worker killed between APICore creating the job and step 2 reaching the API server
(one round trip). The mark of step 1 then says "a submission was in the air", and the retry treats it
like a lost answer.
"""

from __future__ import annotations

import time
from typing import Any

#: Key in ``task_state_store`` (renaming it breaks in-flight retries: it is already stored).
STATE_KEY = "apicore_job"

SUBMITTING = "submitting"
ACCEPTED = "accepted"
UNKNOWN_FATE = "unknown_fate"


class DurableJob:
    """
    The task instance's record of its APICore job, in ``task_state_store``.

    Every method is a no-op when ``durable=False`` or the store is not available (then the log says
    once that crash recovery is off).

    :param context: the task's Airflow context
    :param enabled: the operator's ``durable`` flag
    :param log: the operator's logger
    """

    def __init__(self, context: Any, enabled: bool, log: Any) -> None:
        self.log = log
        self.store = context.get("task_state_store") if enabled else None
        if enabled and self.store is None:
            log.warning("task_state_store is not available: a retry of this task cannot re-attach to its job")

    @property
    def active(self) -> bool:
        return self.store is not None

    def load(self) -> dict[str, Any] | None:
        """What an earlier try recorded, or ``None``."""
        if self.store is None:
            return None
        value = self.store.get(STATE_KEY)
        return value if isinstance(value, dict) else None

    def _set(self, **value: Any) -> None:
        if self.store is not None:
            self.store.set(STATE_KEY, {**value, "at": int(time.time() * 1000)})

    def mark_submitting(self, state: str, action: str) -> None:
        """Before the submission leaves: if the try dies now, the next one knows a job may exist."""
        self._set(phase=SUBMITTING, state=state, action=action)

    def record_accepted(self, task_id: str, action: str, **extra: Any) -> None:
        """APICore answered with a task id: the next try re-attaches to it."""
        self._set(phase=ACCEPTED, task_id=task_id, action=action, **extra)

    def record_unknown_fate(self, state: str | None, action: str, cause: str) -> None:
        """The answer was lost: the job may exist, and nobody can look it up by its tag."""
        self._set(phase=UNKNOWN_FATE, state=state, action=action, cause=cause)

    def forget(self) -> None:
        """Nothing was accepted (refused before or at submission): the next try may submit."""
        if self.store is not None:
            self.store.delete(STATE_KEY)
