"""
The client against the emulator's gateway mode (new-api in front of midjourney-proxy): fetch and list
answer from a copy refreshed every few seconds, so a new task reads ``status: ""`` with zero values;
unknown ids are HTTP 400 ``task_no_found``; codes 21/22 are rewritten to 1. Every waiting path must
still return the same result.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from airflow_provider_apicore.exceptions import TaskNotFoundError
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.models import TaskStatus
from airflow_provider_apicore.operators.describe import MJDescribeOperator
from airflow_provider_apicore.results import outcome
from airflow_provider_apicore.sensors.task import MJTaskSensor
from airflow_provider_apicore.triggers.task import MJTaskTrigger
from tests.helpers.imagegen import make_png
from tests.operators.test_durable import Store, context


@pytest.fixture
def gateway(apicore_conn):
    apicore_conn.configure(gateway=True, gateway_refresh=0.5, job_seconds=0.3)
    return apicore_conn


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "g.png"
    path.write_bytes(make_png(12, 12, (90, 20, 160)))
    return path


def test_a_new_task_reads_status_empty_then_finishes(gateway, png):
    op = MJDescribeOperator(task_id="describe", image=str(png))
    task_id = op.execute(context(Store()))
    hook = ApicoreHook()
    first = hook.fetch_task(task_id)
    assert first.raw["status"] == "" and first.status is TaskStatus.NOT_START
    assert first.submit_time is None or first.submit_time > 0  # zero values read as "not yet"
    deadline = time.monotonic() + 20
    while hook.fetch_task(task_id).status is not TaskStatus.SUCCESS:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_polling_and_durable_reattach_through_the_gateway(gateway, png):
    store = Store()
    result = MJDescribeOperator(
        task_id="describe", image=str(png), wait_for_completion=True, poll_interval=0.2
    ).execute(context(store))
    assert len(result["prompts"]) == 4
    # A retry re-attaches through the gateway's copy and sends nothing.
    again = MJDescribeOperator(
        task_id="describe", image=str(png), wait_for_completion=True, poll_interval=0.2
    ).execute(context(store))
    assert again["task_id"] == result["task_id"]
    assert gateway.stats()["jobs_created"] == 1


def test_trigger_and_sensor_through_the_gateway(gateway, png):
    task_id = MJDescribeOperator(task_id="describe", image=str(png)).execute(context(Store()))

    async def first_event():
        async for event in MJTaskTrigger([task_id], poll_interval=0.2, end_time=time.time() + 30).run():
            return event.payload

    event = asyncio.run(first_event())
    assert len(outcome(event, task_id, 30).final_prompt or "") > 0
    sensor = MJTaskSensor(task_id="wait", mj_task_id=task_id, poke_interval=0.2, timeout=30)
    assert len(sensor.execute({})["prompts"]) == 4


def test_unknown_id_is_not_found_through_the_gateway(gateway):
    with pytest.raises(TaskNotFoundError):
        ApicoreHook().fetch_task("1700000000000000")
