"""
The three waiting styles end to end: ``airflow dags test`` of dags/apicore_describe_wait_styles.py
against the emulator over loopback HTTP (the deferrable tasks' trigger runs for real, inline).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_provider_apicore.emulator.faults import FAIL_REASONS
from tests.helpers.airflow_run import DagRunResult, airflow_env, run_dag_test

DAG_ID = "apicore_describe_wait_styles"
SAMPLES = Path(__file__).resolve().parents[2] / "dags" / "sample_images"
WAITING_TASKS = ("describe_polling", "describe_deferrable", "wait_poke", "wait_deferrable")

pytestmark = pytest.mark.e2e


def run_styles(airflow_home: Path, emulator, image: Path, timeout: float = 60) -> DagRunResult:
    env = airflow_env(
        airflow_home,
        {
            **emulator.conn_env(),
            "APICORE_EXAMPLE_POLL_INTERVAL": "0.3",
            "APICORE_EXAMPLE_TIMEOUT": str(timeout),
        },
    )
    return run_dag_test(env, DAG_ID, {"image": str(image)}, timeout=300)


def deferred_tasks(output: str) -> set[str]:
    """Task ids the task runner reported as going into the DEFERRED state."""
    return set(re.findall(r"Pausing task as DEFERRED\..*?task_id=(\w+)", output))


def failure_of(result: DagRunResult, task_id: str) -> str:
    """The log of one task's run (from its start to its end marker) in the ``dags test`` output."""
    start = result.output.index(f"[DAG TEST] starting task_id={task_id} ")
    end = result.output.index(f"[DAG TEST] end task task_id={task_id} ", start)
    return result.output[start:end]


@pytest.fixture
def e2e_emulator(emulator):
    # Jobs long enough that the deferrable operator's trigger has to wait for them.
    emulator.configure(job_seconds=1.0, concurrency=8)
    return emulator


def test_all_waiting_styles_return_the_same_four_prompts(airflow_home, e2e_emulator):
    result = run_styles(airflow_home, e2e_emulator, SAMPLES / "red_balloon.png")

    assert result.returncode == 0, result.output[-3000:]
    assert result.state == "success"
    assert set(result.task_states.values()) == {"success"}

    polling = result.xcom("describe_polling")
    deferrable = result.xcom("describe_deferrable")
    sensor_poke = result.xcom("wait_poke")
    sensor_deferrable = result.xcom("wait_deferrable")
    assert len(polling["prompts"]) == 4
    assert all(p.strip() for p in polling["prompts"])
    assert deferrable["prompts"] == polling["prompts"]
    assert sensor_poke["prompts"] == sensor_deferrable["prompts"] == polling["prompts"]
    # Polling and deferrable return the identical result shape for the same image.
    assert set(deferrable) == set(polling)
    assert {polling["status"], deferrable["status"], sensor_poke["status"]} == {"SUCCESS"}
    assert deferrable["prompt"] == polling["prompt"]

    # Three submissions: one per operator style, one shared by the two sensors (templated id).
    submitted = result.xcom("submit")
    assert result.xcom("submit", key="task_id") == submitted
    assert sensor_poke["task_id"] == sensor_deferrable["task_id"] == submitted
    assert len({polling["task_id"], deferrable["task_id"], submitted}) == 3
    assert result.xcom("describe_deferrable", key="task_id") == deferrable["task_id"]

    summary = result.xcom("compare_prompts")
    assert summary["prompts"] == polling["prompts"]

    # The deferrable operator really went through the triggerer; the polling one did not.
    assert "describe_deferrable" in deferred_tasks(result.output)
    assert "describe_polling" not in deferred_tasks(result.output)
    assert "[DAG TEST] running trigger in line" in result.output

    stats = e2e_emulator.stats()
    assert stats["submissions_accepted"] == 3
    assert stats["requests"]["fetch"] == 0


def test_a_failed_job_fails_every_waiting_style_with_its_fail_reason(airflow_home, e2e_emulator):
    e2e_emulator.configure(faults={"task_failure": 1.0})
    result = run_styles(airflow_home, e2e_emulator, SAMPLES / "ocean-waves.png")

    assert result.state == "failed"
    assert result.states("submit") == ["success"]
    assert result.states("compare_prompts") == ["upstream_failed"]
    for task_id in WAITING_TASKS:
        assert result.states(task_id) == ["failed"], task_id
        log = failure_of(result, task_id)
        assert "TaskFailedError" in log, task_id
        assert "ended FAILURE" in log, task_id
        assert any(reason in log for reason in FAIL_REASONS), task_id
    assert "describe_deferrable" in deferred_tasks(result.output)


def test_a_stuck_job_times_out_naming_the_last_status_and_progress(airflow_home, e2e_emulator):
    e2e_emulator.configure(faults={"stuck": 1.0})
    result = run_styles(airflow_home, e2e_emulator, SAMPLES / "forest_path.jpg", timeout=2)

    assert result.state == "failed"
    assert result.states("compare_prompts") == ["upstream_failed"]
    for task_id in ("describe_polling", "describe_deferrable"):
        assert result.states(task_id) == ["failed"], task_id
        log = failure_of(result, task_id)
        assert "TaskTimeoutError" in log, task_id
        assert re.search(r"did not finish within 2s; last seen status IN_PROGRESS, progress \d+%", log), (
            task_id
        )
    for task_id in ("wait_poke", "wait_deferrable"):
        assert result.states(task_id) == ["failed"], task_id
        log = failure_of(result, task_id)
        assert "AirflowSensorTimeout" in log, task_id
        assert re.search(r"last seen status IN_PROGRESS, progress \d+%", log), task_id
    # The job never finishes, so both deferrable tasks must have waited in the triggerer.
    assert {"describe_deferrable", "wait_deferrable"} <= deferred_tasks(result.output)
    assert "wait_poke" not in deferred_tasks(result.output)
