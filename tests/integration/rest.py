"""Drive DAG runs of a running :class:`AirflowStack` through the REST API v2 and collect the evidence."""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import requests

from scripts.airflow_stack import AirflowStack, StackError, log_tail

TRIGGER_CLASSPATH = "airflow_provider_apicore.triggers.task.MJTaskTrigger"
FINISHED = {"success", "failed"}

TaskKey = tuple[str, int]  # (task_id, map_index)


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@dataclass
class RunWatch:
    """What was seen of one DAG run while it ran: every state each task instance passed through."""

    dag_id: str
    run_id: str
    conf: dict[str, Any]
    state: str | None = None
    seconds: float = 0.0
    states_seen: dict[TaskKey, list[str]] = field(default_factory=dict)
    #: While deferred: the trigger's classpath and the id of the triggerer job that ran it.
    triggers_seen: dict[TaskKey, set[tuple[str, int | None]]] = field(default_factory=dict)
    task_instances: dict[TaskKey, dict[str, Any]] = field(default_factory=dict)
    #: Describe jobs the emulator accepted during the run (set by the caller).
    submissions: int | None = None

    def saw(self, key: TaskKey, state: str) -> bool:
        return state in self.states_seen.get(key, [])

    def keys(self, task_id: str) -> list[TaskKey]:
        return sorted(k for k in self.task_instances if k[0] == task_id)

    def describe(self) -> str:
        return "; ".join(f"{t}[{m}]: {' -> '.join(s)}" for (t, m), s in sorted(self.states_seen.items()))


def unpause(stack: AirflowStack, dag_id: str) -> None:
    body = stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}, expect=200).json()
    assert body["is_paused"] is False, body


def wait_for_dag(stack: AirflowStack, dag_id: str, timeout: float = 120) -> dict[str, Any]:
    """Wait until the dag-processor has parsed ``dag_id`` into the database."""
    deadline = time.monotonic() + timeout
    while True:
        response = stack.api("GET", f"/api/v2/dags/{dag_id}")
        if response.status_code == 200:
            return response.json()
        if time.monotonic() > deadline:
            errors = stack.api("GET", "/api/v2/importErrors").json()
            raise AssertionError(f"DAG {dag_id} not parsed within {timeout:.0f}s; import errors: {errors}")
        stack.check_alive()
        time.sleep(1)


def trigger_and_watch(
    stack: AirflowStack, dag_id: str, conf: dict[str, Any], timeout: float = 240, poll: float = 0.4
) -> RunWatch:
    """Unpause ``dag_id``, trigger a run with ``conf`` and poll its task instances until it finishes."""
    wait_for_dag(stack, dag_id)
    unpause(stack, dag_id)
    created = stack.api(
        "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}, expect=(200, 201)
    ).json()
    watch = RunWatch(dag_id, created["dag_run_id"], conf)
    run_path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(watch.run_id)}"
    tis_path = f"{run_path}/taskInstances?limit=200"
    started = time.monotonic()
    while True:
        for ti in stack.api("GET", tis_path, expect=200).json()["task_instances"]:
            key = (ti["task_id"], ti["map_index"])
            seen = watch.states_seen.setdefault(key, [])
            if ti["state"] and (not seen or seen[-1] != ti["state"]):
                seen.append(ti["state"])
            if ti["state"] == "deferred" and ti.get("trigger"):
                seen_on = (ti["trigger"]["classpath"], ti["trigger"]["triggerer_id"])
                watch.triggers_seen.setdefault(key, set()).add(seen_on)
            watch.task_instances[key] = ti
        watch.state = stack.api("GET", run_path, expect=200).json()["state"]
        if watch.state in FINISHED:
            break
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"{dag_id} run {watch.run_id} still {watch.state} after {timeout:.0f}s: {watch.describe()}"
            )
        stack.check_alive()
        time.sleep(poll)
    watch.seconds = time.monotonic() - started
    # One last read, so the final states are those of the finished run (and a mapped task's
    # placeholder, replaced by its expanded instances, is gone).
    final = stack.api("GET", tis_path, expect=200).json()["task_instances"]
    watch.task_instances = {(ti["task_id"], ti["map_index"]): ti for ti in final}
    return watch


def failure_report(stack: AirflowStack, watch: RunWatch) -> str:
    """The task states, the logs of the task instances that did not succeed, and the scheduler's log tail."""
    parts = [f"{watch.dag_id} run {watch.run_id}: {watch.state}", watch.describe()]
    for (task_id, map_index), ti in sorted(watch.task_instances.items()):
        if ti["state"] != "success" and ti["try_number"]:
            parts.append(f"--- log of {task_id}[{map_index}] ({ti['state']}):")
            try:
                events = task_log(stack, watch, task_id, map_index, ti["try_number"])
            except StackError as err:
                parts.append(str(err))
            else:
                parts += [str(e.get("event")) for e in events[-40:]]
    parts.append("--- scheduler log tail:\n" + log_tail(stack.services["scheduler"].log_path, 30))
    return "\n".join(parts)


def assert_succeeded(stack: AirflowStack, watch: RunWatch) -> None:
    bad = {k: ti["state"] for k, ti in watch.task_instances.items() if ti["state"] != "success"}
    if watch.state != "success" or bad or not watch.task_instances:
        raise AssertionError(failure_report(stack, watch))


def task_log(
    stack: AirflowStack, watch: RunWatch, task_id: str, map_index: int, try_number: int
) -> list[dict[str, Any]]:
    """The task instance's log as structured events (the worker's and the triggerer's, merged)."""
    path = (
        f"/api/v2/dags/{watch.dag_id}/dagRuns/{quote(watch.run_id)}/taskInstances/{task_id}"
        f"/logs/{try_number}?map_index={map_index}"
    )
    response = stack.api("GET", path, headers={"Accept": "application/json"}, expect=200)
    return response.json()["content"]


def xcom(stack: AirflowStack, watch: RunWatch, task_id: str, map_index: int = -1, key: str = "return_value"):
    path = (
        f"/api/v2/dags/{watch.dag_id}/dagRuns/{quote(watch.run_id)}/taskInstances/{task_id}"
        f"/xcomEntries/{key}?map_index={map_index}"
    )
    return stack.api("GET", path, expect=200).json()["value"]


def triggerer_job_id(stack: AirflowStack) -> int:
    """The id of the one running TriggererJob: the ``airflow triggerer`` process this stack started."""
    jobs = stack.api("GET", "/api/v2/jobs?job_type=TriggererJob&limit=50", expect=200).json()["jobs"]
    running = [j for j in jobs if j["state"] == "running"]
    assert len(running) == 1, f"expected exactly one running triggerer job, found {jobs}"
    assert stack.services["triggerer"].alive(), "the triggerer process is not running"
    return running[0]["id"]


@dataclass
class DeferralEvidence:
    paused_as_deferred: bool
    trigger_log_files: list[str]
    trigger_messages: list[str]
    trigger_fired: bool
    resumed_in_new_process: bool


def deferral_evidence(
    stack: AirflowStack, watch: RunWatch, key: TaskKey, try_number: int = 1
) -> DeferralEvidence:
    """
    Read the task instance's log for the signs of a deferral handled by the triggerer service.

    Airflow writes a trigger's log lines to ``<task log>.trigger.<triggerer job id>.log`` from the
    triggerer process; a trigger run inline by the worker (as ``airflow dags test`` does) leaves no such
    file. After the trigger fires, a new worker process resumes the task: a second "Pre Execute" group.
    """
    events = task_log(stack, watch, key[0], key[1], try_number)
    texts = [str(e.get("event", "")) for e in events]
    return DeferralEvidence(
        paused_as_deferred=any(t.startswith("Pausing task as DEFERRED") for t in texts),
        trigger_log_files=[t for t in texts if ".log.trigger." in t],
        trigger_messages=[str(e.get("event")) for e in events if e.get("logger") == TRIGGER_CLASSPATH],
        trigger_fired=any(t == "Trigger fired event" for t in texts),
        resumed_in_new_process=texts.count("::group::Pre Execute") >= 2,
    )


def assert_deferred_to_triggerer(stack: AirflowStack, watch: RunWatch, key: TaskKey) -> None:
    """The task instance went through ``deferred``, and the triggerer service ran its MJTaskTrigger."""
    job_id = triggerer_job_id(stack)
    assert watch.saw(key, "deferred"), f"{key} never seen deferred: {watch.describe()}"
    triggers = watch.triggers_seen.get(key, set())
    assert {c for c, _ in triggers} <= {TRIGGER_CLASSPATH} and triggers, f"{key} triggers: {triggers}"
    assigned = {t for _, t in triggers if t is not None}
    assert assigned <= {job_id}, f"{key} ran on triggerer job(s) {assigned}, expected {job_id}"
    evidence = deferral_evidence(stack, watch, key)
    assert evidence.paused_as_deferred, f"{key}: no 'Pausing task as DEFERRED' in the task log"
    assert any(f.endswith(f".log.trigger.{job_id}.log") for f in evidence.trigger_log_files), (
        f"{key}: no trigger log written by triggerer job {job_id}: {evidence.trigger_log_files}"
    )
    assert evidence.trigger_messages, f"{key}: the log has no line from {TRIGGER_CLASSPATH}"
    assert evidence.trigger_fired, f"{key}: the trigger never fired its event"
    assert evidence.resumed_in_new_process, f"{key}: the task was not resumed by a new worker process"


def assert_not_deferred(stack: AirflowStack, watch: RunWatch, key: TaskKey) -> None:
    assert not watch.saw(key, "deferred"), f"{key} was deferred: {watch.describe()}"
    evidence = deferral_evidence(stack, watch, key)
    assert not evidence.paused_as_deferred and not evidence.trigger_log_files, evidence


def emulator_get(stack: AirflowStack, path: str, **params: Any) -> Any:
    response = requests.get(
        f"{stack.emulator_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {stack.emulator_token}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def emulator_task(stack: AirflowStack, task_id: str) -> dict[str, Any]:
    """The task as the emulator knows it (the protocol's fetch endpoint)."""
    return emulator_get(stack, f"/mj/task/{task_id}/fetch")
