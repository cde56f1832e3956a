"""
On the real scheduler: a describe run's asset event starts ``apicore_training_data_ready``.

A stack of its own (the shared stack runs scheduled DAGs only when triggered, so it does not create
asset-triggered runs): its DAGs folder holds the training-data-ready example DAG, scheduled on the
manifest asset, and the lineage probe (``MJBatchDescribeOperator`` with the lineage and links mixins,
its manifest path templated, so its outlet is an alias). The probe is triggered through the REST API,
describes the sample images against the emulator and emits the event; the scheduler then starts the
ready DAG, which reads the counts from the event and writes the Parquet set and ``_stats.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.airflow_stack import AirflowStack
from tests.integration.conftest import SAMPLE_IMAGES, record_phase
from tests.integration.rest import assert_succeeded, trigger_and_watch, wait_for_dag

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
READY = "apicore_training_data_ready"
PROBE = "apicore_lineage_probe"


@pytest.fixture(scope="module")
def asset_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowStack, Path]]:
    root = tmp_path_factory.mktemp("asset-stack")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy2(REPO / "dags" / f"{READY}.py", dags)
    shutil.copy2(REPO / "tests" / "lineage_dags" / f"{PROBE}.py", dags)
    manifest = root / "work" / "manifest.jsonl"
    stack = AirflowStack(
        database="sqlite",
        dags_folder=dags,
        emulator_args=["--job-seconds", "1", "--concurrency", "6", "--log-level", "warning"],
        extra_env={
            # Asset-triggered runs are created by the scheduler's job scheduling.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
            "APICORE_TRAINING_MANIFEST": str(manifest),
        },
        on_phase=record_phase,
    )
    stack.start()
    try:
        body = {
            "connection_id": "apicore_default",
            "conn_type": "apicore",
            "host": stack.emulator_url,
            "password": stack.emulator_token,
        }
        stack.api("POST", "/api/v2/connections", json=body, expect=201)
        yield stack, manifest
    finally:
        stack.stop()


def test_the_operators_asset_event_starts_the_training_data_ready_dag(asset_stack) -> None:
    stack, manifest = asset_stack
    images = manifest.parent.parent / "images"
    shutil.copytree(SAMPLE_IMAGES, images)
    wait_for_dag(stack, READY)
    stack.api("PATCH", f"/api/v2/dags/{READY}", json={"is_paused": False}, expect=200)

    conf = {"image_dir": str(images), "manifest_path": str(manifest), "captions_dir": str(manifest.parent)}
    probe = trigger_and_watch(stack, PROBE, conf, timeout=300)
    assert_succeeded(stack, probe)

    deadline = time.monotonic() + 240
    while True:
        runs = stack.api("GET", f"/api/v2/dags/{READY}/dagRuns", expect=200).json()["dag_runs"]
        if runs and runs[0]["state"] in ("success", "failed"):
            break
        assert time.monotonic() < deadline, f"the asset event did not start {READY}: {runs}"
        stack.check_alive()
        time.sleep(1)
    [run] = runs
    assert run["run_type"] == "asset_triggered" and run["state"] == "success", run
    events = stack.api("GET", "/api/v2/assets/events?limit=10", expect=200).json()["asset_events"]
    [event] = [e for e in events if e["uri"] == f"file://{manifest}"]
    assert (event["extra"]["succeeded"], event["extra"]["total"]) == (5, 5)
    assert event["source_dag_id"] == PROBE
    stats = json.loads((manifest.parent / "_stats.json").read_text())
    assert (stats["succeeded"], stats["total"]) == (5, 5)
    assert (manifest.parent / "captions.parquet").exists()
