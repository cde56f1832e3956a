"""
The distributed tier: a real CeleryExecutor deployment on loopback, started and stopped here.

``scripts/airflow_stack.py`` with ``executor="celery"``: PostgreSQL, Debian's ``redis-server`` as the
broker, two Celery workers and two triggerers that share no local directory (each its own HOME,
TMPDIR, working directory, Airflow home, DAG copy and hostname ``worker-N``/``triggerer-N``), the
dag-processor and the api-server, and moto's server mode serving S3. Images, manifests and captions
live under ``s3://aws_moto@apicore/...``; the task logs under ``s3://airflow-logs``.

The tier skips, saying why, only when a program or package it needs cannot be installed.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts.airflow_stack import (
    BIN,
    S3_CONN_ID,
    AirflowStack,
    Phase,
    group_exists,
    postgres_unavailable_reason,
)
from tests.integration.rest import emulator_get, quote

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results" / "distributed"
BUCKET = "apicore"
#: Images in the distributed tier's DAG runs; job durations are set per test through /_emulator/config.
EMULATOR_ARGS = [
    "--job-seconds",
    "2",
    "--concurrency",
    "40",
    "--queue-size",
    "1000",
    "--log-level",
    "warning",
]
STACK_ENV = {
    # Read by the example DAGs when they are parsed: quick retries after a lost worker.
    "APICORE_EXAMPLE_RETRY_DELAY": "3",
}

#: Celery settings of the stack's workers: Airflow's own, plus modules imported once by each worker's
#: main process before it forks its pool. A task process is forked from there, so it parses its DAG
#: file and opens S3 without importing the provider, s3fs and the Amazon provider again: about 0.9 s
#: of CPU saved per task start measured on two cores (every mapped deferrable task starts twice).
CELERY_CONFIG_MODULE = "apicore_stack_celery"
CELERY_CONFIG_SOURCE = '''"""Celery settings of the distributed test stack (see tests/distributed)."""

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {{**DEFAULT_CELERY_CONFIG, "imports": {imports!r}}}
'''
PRELOADED = (
    "s3fs",
    "airflow.providers.amazon.aws.fs.s3",
    "airflow.providers.amazon.aws.hooks.s3",
    "PIL.Image",
)

_phases: list[Phase] = []
_notes: list[str] = []


def record_phase(phase: Phase) -> None:
    _phases.append(phase)
    print(f"[distributed] {phase.name}: {phase.seconds:.1f}s", flush=True)


def note(message: str) -> None:
    _notes.append(message)
    print(f"[distributed] {message}", flush=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _phases and not _notes:
        return
    terminalreporter.section("distributed tier: phases and figures")
    for phase in _phases:
        terminalreporter.write_line(f"{phase.name:<56} {phase.seconds:7.1f}s")
    for line in _notes:
        terminalreporter.write_line(line)


def preloaded_modules() -> list[str]:
    """The modules the workers import before forking: the provider (not its emulator) and S3's stack."""
    import airflow_provider_apicore

    names = list(PRELOADED)
    for module in pkgutil.walk_packages(airflow_provider_apicore.__path__, "airflow_provider_apicore."):
        if module.name.split(".")[1] not in ("emulator", "schemas"):
            names.append(module.name)
    return names


def install_celery_config(stack: AirflowStack) -> None:
    """
    Write :data:`CELERY_CONFIG_MODULE` where every service imports it from, and point Airflow at it.

    The scheduler, api-server and dag-processor find it on the ``PYTHONPATH`` given here; a worker or
    triggerer's ``PYTHONPATH`` is its node directory (``AirflowStack.node_dirs``), so a copy goes there.
    """
    source = CELERY_CONFIG_SOURCE.format(imports=preloaded_modules())
    shared = stack.root / "pythonpath"
    nodes = [f"worker-{n}" for n in range(1, stack.workers + 1)]
    nodes += [f"triggerer-{n}" for n in range(1, stack.triggerers + 1)]
    for directory in [shared] + [stack.node_dirs(name)["base"] for name in nodes]:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{CELERY_CONFIG_MODULE}.py").write_text(source)
    stack.extra_env["PYTHONPATH"] = str(shared)
    stack.extra_env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] = f"{CELERY_CONFIG_MODULE}.CELERY_CONFIG"


def distributed_unavailable_reason() -> str | None:
    """Why the distributed stack cannot run here (after the system packages were installed), or None."""
    reason = postgres_unavailable_reason()
    if reason:
        return reason
    if not (shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server")):
        return "Debian's redis-server is not installed (scripts/install_system_deps.sh needs root and apt)"
    if not (BIN / "moto_server").exists():
        return 'moto_server missing: .venv/bin/pip install "moto[server]"'
    for module, pip in (
        ("airflow.providers.celery", "apache-airflow-providers-celery"),
        ("airflow.providers.amazon", "apache-airflow-providers-amazon"),
        ("s3fs", "apache-airflow-providers-amazon[s3fs]"),
        ("redis", "redis"),
        ("boto3", "boto3"),
    ):
        if importlib.util.find_spec(module.split(".")[0]) is None or (
            "." in module and importlib.util.find_spec(module) is None
        ):
            return f"{module} not installed: .venv/bin/pip install {pip}"
    return None


@pytest.fixture(scope="session")
def dstack() -> Iterator[AirflowStack]:
    """The running distributed stack (one per session), torn down by process group afterwards."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_system_deps.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    record_phase(Phase("system packages (apt)", time.monotonic() - started))
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("install_system_deps:"):
            note(line)
    reason = distributed_unavailable_reason()
    if reason:
        note(f"SKIPPED the distributed tier: {reason}")
        pytest.skip(f"distributed stack unavailable: {reason}")
    stack = AirflowStack(
        database="postgres",
        executor="celery",
        emulator_args=list(EMULATOR_ARGS),
        extra_env=dict(STACK_ENV),
        on_phase=record_phase,
        buckets=(BUCKET,),
    )
    install_celery_config(stack)
    try:
        stack.start()
    except Exception:
        _keep_logs(stack)
        raise
    body = {
        "connection_id": "apicore_default",
        "conn_type": "apicore",
        "host": stack.emulator_url,
        "password": stack.emulator_token,
        "extra": '{"timeout": 30, "max_retries": 3}',
    }
    stack.api("POST", "/api/v2/connections", json=body, expect=201)
    pids = {name: service.pid for name, service in stack.services.items()}
    failed_before = 0
    try:
        yield stack
    finally:
        stack.stop()
        pids.update({name: service.pid for name, service in stack.services.items()})
        failed = _session_failed(failed_before)
        if failed:
            _keep_logs(stack)
        left = {name: pid for name, pid in pids.items() if pid and group_exists(pid)}
        assert not left, f"process groups still alive after teardown: {left}"
        if stack.owns_root and not failed:
            shutil.rmtree(stack.root, ignore_errors=True)


_failures: list[str] = []


def _session_failed(_: int) -> bool:
    return bool(_failures)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and "distributed" in item.keywords:
        _failures.append(item.nodeid)


def _keep_logs(stack: AirflowStack) -> None:
    """Copy every service's log under results/distributed so a failed run can be diagnosed."""
    target = RESULTS / "logs"
    shutil.rmtree(target, ignore_errors=True)
    if stack.logs.exists():
        shutil.copytree(stack.logs, target, dirs_exist_ok=True)
    note(f"service logs of the distributed stack kept in {target}")


# ------------------------------------------------------------------------------------------ helpers
def s3_url(key: str) -> str:
    """The ObjectStoragePath URL of ``key`` in the tier's bucket, with the moto connection id."""
    return f"s3://{S3_CONN_ID}@{BUCKET}/{key.lstrip('/')}"


def upload_tree(stack: AirflowStack, root: Path, prefix: str) -> dict[str, str]:
    """Copy a local directory to ``s3://apicore/<prefix>/``; local path -> s3 URL of each file."""
    client = stack.s3_client()
    mapping = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = f"{prefix.strip('/')}/{path.relative_to(root).as_posix()}"
            client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
            mapping[str(path)] = s3_url(key)
    return mapping


def configure_emulator(stack: AirflowStack, **changes: Any) -> dict[str, Any]:
    response = requests.put(f"{stack.emulator_url}/_emulator/config", json=changes, timeout=10)
    response.raise_for_status()
    return response.json()


def reset_emulator(stack: AirflowStack) -> None:
    requests.post(f"{stack.emulator_url}/_emulator/reset", timeout=10).raise_for_status()


def emulator_stats(stack: AirflowStack) -> dict[str, Any]:
    return emulator_get(stack, "/_emulator/stats")


def set_pool(stack: AirflowStack, name: str, slots: int, include_deferred: bool = True) -> None:
    """Create or update an Airflow pool (``include_deferred``: deferred tasks keep their slot)."""
    body = {"slots": slots, "include_deferred": include_deferred}
    if stack.api("GET", f"/api/v2/pools/{name}").status_code == 200:
        mask = "update_mask=slots&update_mask=include_deferred"
        stack.api("PATCH", f"/api/v2/pools/{name}?{mask}", json=body, expect=200)
    else:
        stack.api("POST", "/api/v2/pools", json={"name": name, **body}, expect=201)


def running_triggerer_jobs(stack: AirflowStack) -> dict[str, int]:
    """Hostname -> id of each running TriggererJob (the hostname is the triggerer's node name)."""
    jobs = stack.api("GET", "/api/v2/jobs?job_type=TriggererJob&limit=100", expect=200).json()["jobs"]
    return {j["hostname"]: j["id"] for j in jobs if j["state"] == "running"}


def end_run(stack: AirflowStack, dag_id: str, run_id: str) -> None:
    """Mark a run that is still going failed, so a failed test does not leave it running."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}"
    if stack.api("GET", path, expect=200).json()["state"] not in ("success", "failed"):
        stack.api("PATCH", path, json={"state": "failed"}, expect=200)
