"""
A worker SIGKILLed while it waits for an accepted job, on the real services (scheduler, LocalExecutor,
a separate API server): Airflow retries the task in a new process, which re-attaches to the job through
``task_state_store``. The emulator never deduplicates, so a resubmission would show as a second job.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from scripts.airflow_stack import AirflowStack
from tests.integration.conftest import copy_images, record_phase
from tests.integration.rest import FINISHED, emulator_get, quote, unpause, wait_for_dag

pytestmark = pytest.mark.integration

DAG_ID = "apicore_describe_durable"


def configure_emulator(stack: AirflowStack, **changes) -> None:
    requests.put(f"{stack.emulator_url}/_emulator/config", json=changes, timeout=30).raise_for_status()


def worker_pids(ti_id: str) -> list[int]:
    """Processes whose title is the task runner's (``airflow worker -- <ti id>``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"airflow worker -- {ti_id}" in cmdline:
            found.append(int(entry.name))
    return found


def test_worker_killed_while_waiting_is_retried_and_reattaches(stack, apicore_connection, workdir):
    from scripts.airflow_stack import Phase

    image = copy_images(workdir / "durable-kill", ["red_balloon.png"])[0]
    before = emulator_get(stack, "/_emulator/stats")
    # Long enough that the job is still running when the worker is killed and the retry starts.
    configure_emulator(stack, job_seconds=25)
    started = time.monotonic()
    try:
        wait_for_dag(stack, DAG_ID)
        unpause(stack, DAG_ID)
        run = stack.api(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            json={"logical_date": None, "conf": {"image": str(image)}},
            expect=(200, 201),
        ).json()
        ti_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run['dag_run_id'])}/taskInstances/describe"
        killed = None
        deadline = time.monotonic() + 180
        while killed is None:
            assert time.monotonic() < deadline, "the task never reached its wait"
            ti = stack.api("GET", ti_path, expect=200).json()
            created = emulator_get(stack, "/_emulator/stats")["jobs_created"] - before["jobs_created"]
            if ti["state"] == "running" and created >= 1:
                time.sleep(2.0)  # the task is polling its accepted job now
                pids = worker_pids(ti["id"])
                assert pids, f"no process titled 'airflow worker -- {ti['id']}'"
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                killed = ti["id"]
            time.sleep(0.3)
        final = None
        deadline = time.monotonic() + 240
        while True:
            state = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run['dag_run_id'])}", expect=200)
            if state.json()["state"] in FINISHED:
                final = stack.api("GET", ti_path, expect=200).json()
                break
            assert time.monotonic() < deadline, "the retried run did not finish"
            stack.check_alive()
            time.sleep(0.5)
    finally:
        configure_emulator(stack, job_seconds=10)
    record_phase(
        Phase(
            f"{stack.database}: worker SIGKILL while waiting, retry re-attaches", time.monotonic() - started
        )
    )
    assert final["state"] == "success", final
    assert final["try_number"] >= 2, "the killed try was followed by a retry"
    after = emulator_get(stack, "/_emulator/stats")
    assert after["jobs_created"] - before["jobs_created"] == 1, "one paid job, though the task ran twice"
    assert after["duplicate_image_jobs"] == before["duplicate_image_jobs"]
    # The retry's log says it re-attached instead of submitting.
    logs = stack.api(
        "GET",
        f"{ti_path}/logs/{final['try_number']}",
        expect=200,
        headers={"Accept": "application/json"},
    ).json()["content"]
    assert "Re-attaching to Midjourney task" in json.dumps(logs, ensure_ascii=False)
