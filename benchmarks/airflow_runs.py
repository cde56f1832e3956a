"""
DAG runs under the real Airflow services (scripts/airflow_stack.py: api-server, scheduler with
LocalExecutor, dag-processor, triggerer), driven through the REST API v2.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import BENCH, REPO, Emulator
from scripts.airflow_stack import AirflowStack

#: The DAG files the stack parses: the two provider example DAGs and the by-hand baseline.
DAG_FILES = (
    REPO / "dags" / "apicore_describe_images.py",
    REPO / "dags" / "apicore_batch_describe.py",
    BENCH / "dags" / "apicore_by_hand_http.py",
)
#: Airflow's own defaults for how many task instances run at once (the stack lowers parallelism to
#: 8 for its tests; a user's installation has these).
STACK_ENV = {
    "AIRFLOW__CORE__PARALLELISM": "32",
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "16",
    "AIRFLOW__CORE__MAX_MAP_LENGTH": "1024",
    "APICORE_BENCH_POKE_INTERVAL": "2",
}


def start_stack(root: Path, emulator_config: dict[str, Any]) -> tuple[AirflowStack, Emulator]:
    """Start the stack on SQLite with the benchmark DAGs; return it and its emulator."""
    dags = root / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    for path in DAG_FILES:
        link = dags / path.name
        if not link.exists():
            link.symlink_to(path)
    args = ["--log-level", "warning"]
    for name, value in emulator_config.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    phases: list[str] = []
    stack = AirflowStack(
        database="sqlite",
        root=root / "stack",
        dags_folder=dags,
        emulator_args=args,
        extra_env=dict(STACK_ENV),
        on_phase=lambda p: phases.append(f"{p.name}: {p.seconds:.1f}s"),
    )
    stack.start()
    stack.startup_phases = phases  # type: ignore[attr-defined]
    emulator = Emulator(stack.emulator_url, stack.emulator_token)
    stack.api(
        "POST",
        "/api/v2/connections",
        expect=201,
        json={
            "connection_id": "apicore_default",
            "conn_type": "apicore",
            "host": stack.emulator_url,
            "password": stack.emulator_token,
        },
    )
    stack.api(
        "POST",
        "/api/v2/connections",
        expect=201,
        json={
            "connection_id": "apicore_http",
            "conn_type": "http",
            "host": stack.emulator_url,
            "extra": json.dumps({"Authorization": f"Bearer {stack.emulator_token}"}),
        },
    )
    return stack, emulator


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _wait_for_dag(stack: AirflowStack, dag_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while stack.api("GET", f"/api/v2/dags/{dag_id}").status_code != 200:
        if time.monotonic() > deadline:
            errors = stack.api("GET", "/api/v2/importErrors").json()
            raise RuntimeError(f"DAG {dag_id} was not parsed within {timeout:.0f}s: {errors}")
        stack.check_alive()
        time.sleep(1)
    stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}, expect=200)


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_dag(
    stack: AirflowStack, dag_id: str, conf: dict[str, Any], timeout: float, poll: float = 2.0
) -> dict[str, Any]:
    """
    Trigger ``dag_id`` with ``conf`` and wait for the run to finish.

    :return: the run's state, its duration as Airflow recorded it (from ``queued_at``, so scheduling
        latency counts, to ``end_date``), and the count of task instances in each final state
    """
    _wait_for_dag(stack, dag_id)
    created = stack.api(
        "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}, expect=(200, 201)
    ).json()
    run_path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(created['dag_run_id'])}"
    started = time.monotonic()
    while True:
        run = stack.api("GET", run_path, expect=200).json()
        if run["state"] in ("success", "failed"):
            break
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{dag_id} still {run['state']} after {timeout:.0f}s")
        stack.check_alive()
        time.sleep(poll)
    states: dict[str, dict[str, int]] = {}
    tries: dict[str, int] = {}
    offset = 0
    while True:
        page = stack.api("GET", f"{run_path}/taskInstances?limit=100&offset={offset}", expect=200).json()
        for ti in page["task_instances"]:
            per_task = states.setdefault(ti["task_id"], {})
            per_task[ti["state"]] = per_task.get(ti["state"], 0) + 1
            tries[ti["task_id"]] = max(tries.get(ti["task_id"], 0), ti.get("try_number") or 0)
        offset += len(page["task_instances"])
        if not page["task_instances"] or offset >= page["total_entries"]:
            break
    return {
        "state": run["state"],
        "seconds": _seconds(run.get("queued_at") or run.get("start_date"), run.get("end_date")),
        "observed_seconds": time.monotonic() - started,
        "task_states": states,
        "max_try": tries,
        "run_id": created["dag_run_id"],
    }
