"""Run real Airflow (``airflow dags test``) in a subprocess and read what it left in the metadata DB."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an isolated Airflow home on SQLite with the example DAGs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def migrate(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_env(home)
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env


def connection_env(
    base_url: str, token: str, conn_id: str = "apicore_default", **extra: Any
) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` in Airflow's JSON form for an ``apicore`` connection."""
    conn: dict[str, Any] = {"conn_type": "apicore", "host": base_url, "password": token}
    if extra:
        conn["extra"] = extra
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}


@dataclass
class DagRunResult:
    dag_id: str
    returncode: int
    output: str
    run_id: str | None
    state: str | None
    task_states: dict[tuple[str, int], str] = field(default_factory=dict)
    xcoms: dict[tuple[str, int, str], Any] = field(default_factory=dict)

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        return self.xcoms[(task_id, map_index, key)]

    def mapped_xcoms(self, task_id: str, key: str = "return_value") -> list[Any]:
        found = sorted((m, v) for (t, m, k), v in self.xcoms.items() if t == task_id and k == key and m >= 0)
        return [v for _, v in found]

    def states(self, task_id: str) -> list[str]:
        return [s for (t, _), s in sorted(self.task_states.items()) if t == task_id]


def run_dag_test(
    env: dict[str, str], dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 600
) -> DagRunResult:
    """Run ``airflow dags test`` for real and collect the run's task states and XComs."""
    cmd = [AIRFLOW, "dags", "test", dag_id]
    if conf is not None:
        cmd += ["--conf", json.dumps(conf)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    home = Path(env["AIRFLOW_HOME"])
    run_id, state, task_states, xcoms = read_last_run(home / "airflow.db", dag_id)
    return DagRunResult(dag_id, proc.returncode, output, run_id, state, task_states, xcoms)


def read_last_run(db: Path, dag_id: str) -> tuple[str | None, str | None, dict, dict]:
    con = sqlite3.connect(db)
    try:
        row = con.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        if not row:
            return None, None, {}, {}
        run_id, state = row
        task_states = {
            (t, m): s
            for t, m, s in con.execute(
                "SELECT task_id, map_index, state FROM task_instance WHERE dag_id=? AND run_id=?",
                (dag_id, run_id),
            )
        }
        xcoms = {}
        for t, m, k, v in con.execute(
            "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id=? AND run_id=?", (dag_id, run_id)
        ):
            xcoms[(t, m, k)] = _decode(v)
        return run_id, state, task_states, xcoms
    finally:
        con.close()


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def airflow_db_dump(home: Path) -> str:
    """Every text value of the metadata DB (XCom, rendered fields, logs tables, ...), for leak checks."""
    con = sqlite3.connect(home / "airflow.db")
    try:
        con.text_factory = lambda b: b.decode("utf-8", errors="replace")
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        parts = []
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):
                parts.extend(str(v) for v in row if v is not None)
        return "\n".join(parts)
    finally:
        con.close()
