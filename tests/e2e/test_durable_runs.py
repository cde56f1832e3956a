"""
Durable execution in real ``airflow dags test`` runs against a server that never deduplicates.

The fault that used to make a retry pay again: the status polls fail after APICore accepted the job,
so every image's first try fails while waiting. Each run must end with exactly one job per image,
counted by the emulator, polling and deferrable. The same run with ``durable=False`` shows the fault is
real: it pays twice. (A SIGKILL of the worker while it waits is proven on the real services, where
the API server is its own process: tests/integration/test_durable_kill.py.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Emulator
from tests.helpers.airflow_run import AIRFLOW, airflow_env, read_last_run
from tests.helpers.imagegen import make_png

pytestmark = pytest.mark.e2e

DAGS = Path(__file__).resolve().parent / "dags"
LOGICAL_DATE = "2026-01-02T03:04:05+00:00"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, color in enumerate([(200, 30, 30), (30, 200, 30)]):
        (folder / f"img{i}.png").write_bytes(make_png(8 + i, 8, color))
    return folder


def env_for(airflow_home: Path, emulator: Emulator, counter: Path | None = None) -> dict[str, str]:
    env = airflow_env(airflow_home, emulator.conn_env(max_retries=0, timeout=5))
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
    env["DURABLE_EMULATOR_URL"] = emulator.url
    if counter is not None:
        env["DURABLE_COUNTER"] = str(counter)
        env["DURABLE_FAILED_TRIES"] = "2"
    return env


def dags_test(
    env: dict[str, str], dag_id: str, images: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    import json

    cmd = [AIRFLOW, "dags", "test", dag_id, LOGICAL_DATE, "--conf", json.dumps({"image_dir": str(images)})]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def describe_states(home: Path, dag_id: str) -> list[str]:
    _, _, states, _ = read_last_run(home / "airflow.db", dag_id)
    return [s for (t, _), s in sorted(states.items()) if t == "describe"]


@pytest.mark.parametrize("dag_id", ["durable_poll", "durable_defer"])
def test_poll_failures_after_an_accepted_submit_end_with_one_job_per_image(
    emulator, airflow_home, images, dag_id, tmp_path
):
    emulator.configure(job_seconds=0.5, faults={"http_5xx": 1.0, "endpoints": ["list", "fetch"]})
    proc = dags_test(env_for(airflow_home, emulator, tmp_path / "failed"), dag_id, images)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert describe_states(airflow_home, dag_id) == ["success", "success"]
    stats = emulator.stats()
    assert stats["faults_injected"].get("http_5xx", 0) >= 2
    assert (tmp_path / "failed").read_text() == "xx", "each image's first try failed while waiting"
    assert stats["jobs_created"] == 2, "exactly one paid job per image"
    assert stats["duplicate_image_jobs"] == 0
    assert "Re-attaching to Midjourney task" in output


def test_without_durable_the_same_faults_pay_twice(emulator, airflow_home, images, tmp_path):
    # The control: proves the fault above would cost a second job without task_state_store.
    emulator.configure(job_seconds=0.5, faults={"http_5xx": 1.0, "endpoints": ["list", "fetch"]})
    proc = dags_test(env_for(airflow_home, emulator, tmp_path / "failed"), "durable_poll_off", images)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    stats = emulator.stats()
    assert stats["jobs_created"] == 4 and stats["duplicate_image_jobs"] == 2
