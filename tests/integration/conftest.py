"""
The integration tier: the real Airflow services (api-server, scheduler, dag-processor, triggerer) with
LocalExecutor, started by ``scripts/airflow_stack.py`` on SQLite and on a throwaway PostgreSQL cluster.

Each stack is a session fixture parametrised by database; pytest runs every test of one stack before
starting the next, so only one stack runs at a time. Phase durations are printed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_stack import (
    AirflowStack,
    Phase,
    group_exists,
    postgres_unavailable_reason,
)
from tests.integration.rest import RunWatch, emulator_get, trigger_and_watch

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results" / "integration"
SAMPLE_IMAGES = REPO / "dags" / "sample_images"

#: Jobs of 10 s: short runs, yet no trigger fires within the first seconds after its task deferred.
#: Airflow 3.3.2 fails a resumed task when the executor's late "success" of the deferring process
#: arrives after the resume (apache/airflow#72716); the LocalExecutor's supervisor reports that exit
#: up to [workers] min_heartbeat_interval (5 s) late.
EMULATOR_ARGS = ["--job-seconds", "10", "--concurrency", "6", "--queue-size", "50", "--log-level", "warning"]
FANOUT_IMAGES = ["forest_path.jpg", "ocean-waves.png", "red_balloon.png"]
STACK_ENV = {
    # Read by dags/apicore_describe_wait_styles.py when it is parsed.
    "APICORE_EXAMPLE_POLL_INTERVAL": "1",
    "APICORE_EXAMPLE_TIMEOUT": "300",
}

_phases: list[Phase] = []
_notes: list[str] = []


def record_phase(phase: Phase) -> None:
    _phases.append(phase)
    print(f"[integration] {phase.name}: {phase.seconds:.1f}s", flush=True)


def note(message: str) -> None:
    """A line for the tier's summary at the end of the pytest output (skips, workarounds)."""
    _notes.append(message)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _phases and not _notes:
        return
    terminalreporter.section("integration tier: phases")
    for phase in _phases:
        terminalreporter.write_line(f"{phase.name:<48} {phase.seconds:7.1f}s")
    for line in _notes:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def system_deps() -> str:
    """Install Chromium, ChromeDriver and PostgreSQL (Debian) once; skips cleanly without root or apt."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_system_deps.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = (proc.stdout + proc.stderr).strip()
    record_phase(Phase("system packages (apt)", time.monotonic() - started))
    summary = [line for line in output.splitlines() if line.startswith("install_system_deps:")]
    for line in summary:
        note(line)
    return output


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, system_deps: str) -> Iterator[AirflowStack]:
    """A running stack on the given metadata database; torn down by process group afterwards."""
    if request.param == "postgres":
        reason = postgres_unavailable_reason()
        if reason:
            note(f"SKIPPED PostgreSQL metadata-database runs: {reason}")
            pytest.skip(f"PostgreSQL metadata database unavailable: {reason}")
    airflow_stack = AirflowStack(
        database=request.param,
        emulator_args=list(EMULATOR_ARGS),
        extra_env=dict(STACK_ENV),
        on_phase=record_phase,
    )
    try:
        airflow_stack.start()
    except Exception:
        _keep_logs(airflow_stack)
        raise
    pids = {name: service.pid for name, service in airflow_stack.services.items()}
    try:
        yield airflow_stack
    finally:
        airflow_stack.stop()
        failed = request.session.testsfailed > 0
        if failed:
            _keep_logs(airflow_stack)
        left = {name: pid for name, pid in pids.items() if pid and group_exists(pid)}
        assert not left, f"process groups still alive after teardown: {left}"
        if airflow_stack.owns_root and not failed:
            shutil.rmtree(airflow_stack.root, ignore_errors=True)


def _keep_logs(airflow_stack: AirflowStack) -> None:
    """Copy the services' logs under results/ so a failed CI run can be diagnosed."""
    target = RESULTS / f"logs-{airflow_stack.database}"
    shutil.rmtree(target, ignore_errors=True)
    if airflow_stack.logs.exists():
        shutil.copytree(airflow_stack.logs, target, dirs_exist_ok=True)
    note(f"service logs of the {airflow_stack.database} stack kept in {target}")


@pytest.fixture(scope="session")
def apicore_connection(stack: AirflowStack) -> str:
    """``apicore_default`` stored in the metadata DB through the REST API, pointing at the emulator."""
    body = {
        "connection_id": "apicore_default",
        "conn_type": "apicore",
        "host": stack.emulator_url,
        "password": stack.emulator_token,
        "extra": '{"timeout": 30, "max_retries": 3}',
    }
    stack.api("POST", "/api/v2/connections", json=body, expect=201)
    return "apicore_default"


@pytest.fixture(scope="session")
def workdir(stack: AirflowStack) -> Path:
    """Inputs and outputs of this stack's DAG runs (inside the stack's root, removed with it)."""
    path = stack.root / "work"
    path.mkdir(exist_ok=True)
    os.chmod(path, 0o755)
    return path


def run_dag(stack: AirflowStack, dag_id: str, conf: dict[str, Any], timeout: float = 240) -> RunWatch:
    """
    Trigger ``dag_id`` through the REST API and wait for the run (at most ``timeout`` seconds); record
    how long it took and how many describe jobs the emulator accepted meanwhile (runs are sequential,
    so they are this run's).
    """
    before = emulator_get(stack, "/_emulator/stats")["submissions_accepted"]
    watch = trigger_and_watch(stack, dag_id, conf, timeout=timeout)
    watch.submissions = emulator_get(stack, "/_emulator/stats")["submissions_accepted"] - before
    record_phase(Phase(f"{stack.database}: run {dag_id}", watch.seconds))
    return watch


def copy_images(target: Path, names: list[str]) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(SAMPLE_IMAGES / name, target / name)) for name in names]


@pytest.fixture(scope="session")
def fanout_run(stack: AirflowStack, apicore_connection: str, workdir: Path) -> RunWatch:
    images = copy_images(workdir / "fanout-images", FANOUT_IMAGES)
    conf = {
        "image_dir": str(images[0].parent),
        "output_dir": str(workdir / "fanout-output"),
        "caption_prompt": 2,
        "strip_parameters": True,
    }
    return run_dag(stack, "apicore_describe_images", conf)
