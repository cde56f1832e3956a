"""MJTaskSensor in poke mode and deferrable mode against the emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk._shared.module_loading import import_string
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred

from airflow_provider_apicore.emulator.faults import FAIL_REASONS
from airflow_provider_apicore.exceptions import ApicoreConfigError, TaskFailedError, TaskNotFoundError
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.results import describe_result
from airflow_provider_apicore.sensors.task import MJTaskSensor
from airflow_provider_apicore.triggers.task import MJTaskTrigger
from tests.helpers.imagegen import make_png

POKE = 0.1
UNKNOWN_ID = "1725017482366000"
CONTEXT: dict[str, Any] = {}


def submit(color: tuple[int, int, int] = (200, 40, 40)) -> str:
    url = "data:image/png;base64," + base64.b64encode(make_png(4, 4, color)).decode()
    hook = ApicoreHook()
    try:
        return hook.submit_describe({"base64": url}, validate=False).task_id
    finally:
        hook.close()


def final_task(task_id: str):
    hook = ApicoreHook()
    try:
        return hook.fetch_task(task_id)
    finally:
        hook.close()


def sensor(mj_task_id: str, **kwargs: Any) -> MJTaskSensor:
    kwargs.setdefault("poke_interval", POKE)
    kwargs.setdefault("timeout", 30)
    return MJTaskSensor(task_id="wait", mj_task_id=mj_task_id, **kwargs)


def defer(waiting: MJTaskSensor) -> tuple[TaskDeferred, dict[str, Any]]:
    """Execute until the sensor defers, then run its trigger the way the triggerer would."""
    with pytest.raises(TaskDeferred) as info:
        waiting.execute(CONTEXT)
    deferred = info.value
    classpath, kwargs = deferred.trigger.serialize()
    trigger = import_string(classpath)(**kwargs)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger yielded nothing")

    return deferred, asyncio.run(first_event())


def resume(waiting: MJTaskSensor, deferred: TaskDeferred, event: dict[str, Any]) -> Any:
    """Resume as the task runner does (through ``resume_execution``, where Airflow applies soft_fail)."""
    return waiting.resume_execution(deferred.method_name, {"event": event}, CONTEXT)


# ------------------------------------------------------------------ poke mode
def test_poke_mode_returns_the_describe_result_of_the_finished_task(apicore_conn):
    task_id = submit()
    result = sensor(task_id).execute(CONTEXT)
    assert result == describe_result(final_task(task_id))
    assert result["status"] == "SUCCESS"
    assert len(result["prompts"]) == 4
    assert all(p.strip() for p in result["prompts"])


def test_each_poke_is_one_list_request_and_never_a_fetch(apicore_conn):
    apicore_conn.configure(job_seconds=0.6)
    task_id = submit()
    waiting = sensor(task_id)
    pokes = 0
    while True:
        pokes += 1
        answer = waiting.poke(CONTEXT)
        assert isinstance(answer, PokeReturnValue)
        if answer.is_done:
            break
        assert answer.xcom_value is None
        time.sleep(POKE)
    assert pokes >= 2
    requests_made = apicore_conn.stats()["requests"]
    assert requests_made["list"] == pokes
    assert requests_made["fetch"] == 0
    assert answer.xcom_value["task_id"] == task_id


def test_poke_mode_failure_raises_task_failed_error_with_fail_reason(apicore_conn):
    apicore_conn.configure(faults={"task_failure": 1.0})
    task_id = submit()
    with pytest.raises(TaskFailedError) as info:
        sensor(task_id).execute(CONTEXT)
    assert info.value.task_id == task_id
    assert info.value.status == "FAILURE"
    assert info.value.fail_reason in FAIL_REASONS
    assert info.value.fail_reason in str(info.value)


def test_poke_mode_failure_is_not_skipped_by_soft_fail(apicore_conn):
    # Airflow's poke loop applies soft_fail to timeouts only; a failed job is a real failure.
    apicore_conn.configure(faults={"task_failure": 1.0})
    with pytest.raises(TaskFailedError):
        sensor(submit(), soft_fail=True).execute(CONTEXT)


def test_poke_mode_timeout_names_the_last_status_and_progress(apicore_conn):
    apicore_conn.configure(faults={"stuck": 1.0})
    task_id = submit()
    with pytest.raises(AirflowSensorTimeout) as info:
        sensor(task_id, timeout=0.6).execute(CONTEXT)
    stuck = final_task(task_id)
    assert stuck.status.value == "IN_PROGRESS"
    message = str(info.value)
    assert "timed out" in message
    assert task_id in message
    assert f"status IN_PROGRESS, progress {stuck.progress}" in message


def test_poke_mode_soft_fail_timeout_skips(apicore_conn):
    apicore_conn.configure(faults={"stuck": 1.0})
    with pytest.raises(AirflowSkipException):
        sensor(submit(), timeout=0.5, soft_fail=True).execute(CONTEXT)


def test_poke_mode_unknown_id_raises_task_not_found_after_the_grace_polls(apicore_conn):
    with pytest.raises(TaskNotFoundError) as info:
        sensor(UNKNOWN_ID).execute(CONTEXT)
    assert info.value.task_id == UNKNOWN_ID
    assert apicore_conn.stats()["requests"]["list"] == 3


class DictStore:
    """A task_state_store stand-in with the accessor's get/set/delete: it outlives sensor instances."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def test_reschedule_mode_counts_misses_durably_across_fresh_sensors(apicore_conn):
    # Every reschedule poke runs in a fresh process on a fresh instance: only task_state_store remains.
    context = {"task_state_store": DictStore()}
    assert sensor(UNKNOWN_ID, mode="reschedule").poke(context).is_done is False
    assert sensor(UNKNOWN_ID, mode="reschedule").poke(context).is_done is False
    with pytest.raises(TaskNotFoundError):
        sensor(UNKNOWN_ID, mode="reschedule").poke(context)
    assert context["task_state_store"].values["apicore_sensor"] == {"task_id": UNKNOWN_ID, "misses": 3}


def test_a_task_listed_late_resets_the_durable_miss_count(apicore_conn):
    context = {"task_state_store": DictStore()}
    task_id = submit()
    context["task_state_store"].set("apicore_sensor", {"task_id": task_id, "misses": 2})
    sensor(task_id, mode="reschedule").poke(context)
    assert context["task_state_store"].values["apicore_sensor"]["misses"] == 0


def test_deferrable_mode_keeps_the_grace_polls_whatever_the_mode(apicore_conn):
    # Deferred, the trigger keeps counting misses across polls; one absence is no verdict yet.
    waiting = sensor(UNKNOWN_ID, mode="reschedule", deferrable=True)
    assert waiting.poke(CONTEXT).is_done is False


def test_an_empty_task_id_is_a_config_error_naming_the_sensor(apicore_conn):
    with pytest.raises(ApicoreConfigError, match="mj_task_id of 'wait' is empty"):
        sensor("None").poke(CONTEXT)
    assert apicore_conn.stats()["requests"]["list"] == 0


def test_a_zero_poke_interval_is_rejected_when_the_dag_is_parsed():
    with pytest.raises(ApicoreConfigError, match="poke_interval"):
        sensor("1", poke_interval=0)


# ------------------------------------------------------------------ deferrable mode
def test_deferrable_mode_defers_to_the_trigger_and_returns_the_same_result_as_poke_mode(apicore_conn):
    apicore_conn.configure(job_seconds=0.5)
    task_id = submit()
    waiting = sensor(task_id, deferrable=True, timeout=40)
    before = time.time()
    deferred, event = defer(waiting)

    assert isinstance(deferred.trigger, MJTaskTrigger)
    assert deferred.trigger.task_ids == [task_id]
    assert deferred.trigger.poll_interval == POKE
    assert deferred.trigger.apicore_conn_id == "apicore_default"
    assert before + 40 <= deferred.trigger.end_time <= time.time() + 40
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout.total_seconds() > 40

    result = resume(waiting, deferred, event)
    assert result == describe_result(final_task(task_id))
    assert result == sensor(task_id).execute(CONTEXT)


def test_deferrable_mode_returns_at_once_when_the_task_is_already_done(apicore_conn):
    task_id = submit()
    first = sensor(task_id).execute(CONTEXT)
    assert sensor(task_id, deferrable=True).execute(CONTEXT) == first


def test_deferrable_mode_failure_raises_task_failed_error_with_fail_reason(apicore_conn):
    apicore_conn.configure(job_seconds=0.5, faults={"task_failure": 1.0})
    waiting = sensor(submit(), deferrable=True)
    deferred, event = defer(waiting)
    with pytest.raises(TaskFailedError) as info:
        resume(waiting, deferred, event)
    assert info.value.fail_reason in FAIL_REASONS


def test_deferrable_mode_timeout_is_a_sensor_timeout_naming_status_and_progress(apicore_conn):
    apicore_conn.configure(faults={"stuck": 1.0})
    task_id = submit()
    waiting = sensor(task_id, deferrable=True, timeout=1)
    deferred, event = defer(waiting)
    assert event["status"] == "timeout"
    with pytest.raises(AirflowSensorTimeout) as info:
        resume(waiting, deferred, event)
    progress = event["tasks"][task_id]["progress"]
    assert f"last seen status IN_PROGRESS, progress {progress}" in str(info.value)


def test_deferrable_mode_soft_fail_timeout_skips(apicore_conn):
    apicore_conn.configure(faults={"stuck": 1.0})
    waiting = sensor(submit(), deferrable=True, timeout=1, soft_fail=True)
    deferred, event = defer(waiting)
    with pytest.raises(AirflowSkipException):
        resume(waiting, deferred, event)
    # Also when execute_complete is called directly, without Airflow's resume wrapper.
    with pytest.raises(AirflowSkipException, match="IN_PROGRESS"):
        waiting.execute_complete(CONTEXT, event)


def test_deferrable_mode_unknown_id_raises_task_not_found(apicore_conn):
    waiting = sensor(UNKNOWN_ID, deferrable=True)
    deferred, event = defer(waiting)
    assert event["not_found"] == [UNKNOWN_ID]
    with pytest.raises(TaskNotFoundError):
        resume(waiting, deferred, event)
