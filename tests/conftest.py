"""Shared fixtures: the APICore emulator on a free loopback port, and an isolated Airflow home."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

# Airflow reads its home when first imported: give the test process its own before anything does.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="apicore-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME / "inprocess")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_apicore.emulator import EmulatorConfig, EmulatorServer  # noqa: E402
from tests.helpers.airflow_run import connection_env, migrate  # noqa: E402

#: A distinctive token, so a leak is unmistakable when logs are searched for it.
TEST_TOKEN = "apicore-test-" + secrets.token_hex(12)


class Emulator:
    """A running emulator plus conveniences for tests (admin API over HTTP)."""

    def __init__(self, server: EmulatorServer, token: str) -> None:
        self.server = server
        self.url = server.url
        self.token = token

    def stats(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/_emulator/stats", timeout=10).json()

    def configure(self, **changes: Any) -> dict[str, Any]:
        response = requests.put(f"{self.url}/_emulator/config", json=changes, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_emulator/reset", timeout=10).raise_for_status()

    def conn_env(self, conn_id: str = "apicore_default", **extra: Any) -> dict[str, str]:
        return connection_env(self.url, self.token, conn_id, **extra)

    def use_connection(self, monkeypatch: pytest.MonkeyPatch, conn_id: str = "apicore_default", **extra: Any):
        for key, value in self.conn_env(conn_id, **extra).items():
            monkeypatch.setenv(key, value)


DEFAULTS: dict[str, Any] = {
    "job_seconds": 0.3,
    "concurrency": 4,
    "queue_size": 100,
    "dedupe": False,
    "gateway": False,
}
SEED = 1234


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    server = EmulatorServer(EmulatorConfig(tokens=[TEST_TOKEN], seed=SEED, **DEFAULTS))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Emulator:
    """The session's emulator, reset to defaults: no tasks, zero counters, no faults, no dedupe."""
    emu = Emulator(emulator_server, TEST_TOKEN)
    # Configure first: reset re-seeds the fault streams from the configured seed.
    emu.configure(**DEFAULTS, tokens=[TEST_TOKEN], faults={}, seed=SEED)
    emu.reset()
    return emu


@pytest.fixture
def apicore_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """``apicore_default`` points at the emulator (in this process)."""
    emulator.use_connection(monkeypatch)
    return emulator


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """An Airflow home on SQLite, migrated once per session, for ``airflow dags test`` subprocesses."""
    home = _SESSION_HOME / "dags-test"
    migrate(home)
    return home
