"""
The fan-out DAG when APICore creates a job and its answer is lost (``http_5xx_after`` on submits).

``airflow dags test`` runs ``apicore_describe_images`` over ten images against a server that never
deduplicates. The seeded fault answers two of the ten submits 500/502/504 after creating their jobs:
those mapped tasks must not send the image again (0 duplicate jobs), and ``write_results`` must record
them ``unknown_fate`` with the state tag of the lost submission (the DAG tags a run's submissions
``<dag_id>/<run_id>``; the jobs it finds that no record names are the lost answers' jobs) and the
cause; every other image is ``SUCCESS``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from airflow_provider_apicore.manifest import SUCCESS, UNKNOWN_FATE, read_manifest
from tests.helpers.airflow_run import airflow_env, run_dag_test
from tests.helpers.imagegen import make_png

pytestmark = pytest.mark.e2e

IMAGES = 10
#: With this seed the ``http_5xx_after`` stream hits the 3rd and 9th of ten submits (rate 0.2).
FAULT_SEED = 5


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(IMAGES):
        (folder / f"img{i:02d}.png").write_bytes(make_png(8 + i, 8, (20 * i, 200 - 15 * i, 90)))
    return folder


def test_lost_submit_answers_are_recorded_unknown_fate_and_never_resent(
    emulator, airflow_home, images, tmp_path
):
    emulator.configure(seed=FAULT_SEED, faults={"http_5xx_after": 0.2, "endpoints": ["submit"]})
    emulator.reset()  # re-seeds the fault streams from FAULT_SEED
    out = tmp_path / "out"
    conf = {"image_dir": str(images), "output_dir": str(out)}
    env = airflow_env(airflow_home, emulator.conn_env(max_retries=0, timeout=10))
    run = run_dag_test(env, "apicore_describe_images", conf)
    assert run.returncode == 0, run.output[-4000:]
    assert run.states("write_results") == ["success"], run.output[-4000:]

    stats = emulator.stats()
    lost = stats["faults_injected"].get("http_5xx_after", 0)
    assert 1 <= lost <= 3, stats["faults_injected"]
    # Every image was sent once: the lost answers' jobs exist, and nothing was sent a second time.
    assert stats["jobs_created"] == IMAGES
    assert stats["duplicate_image_jobs"] == 0
    assert stats["duplicate_jobs"] == 0

    records = {Path(r.image).name: r for r in read_manifest(out / "manifest.jsonl")}
    assert len(records) == IMAGES
    unknown = {name: r for name, r in records.items() if r.status == UNKNOWN_FATE}
    assert len(unknown) == lost, {n: (r.status, r.error) for n, r in records.items()}
    assert all(r.status == SUCCESS for n, r in records.items() if n not in unknown)
    assert run.states("describe").count("failed") == lost
    assert run.states("describe").count("success") == IMAGES - lost

    run_tag = f"apicore_describe_images/{run.run_id}"  # the DAG tags every submission of the run
    for record in unknown.values():
        assert record.task_id is None and record.attempts == 1
        assert record.state == run_tag, record.state
        assert record.error and "HTTP 50" in record.error, record.error  # the cause names the 5xx answer
    # The tag finds every job of the run on APICore: one per image, and the ones no record names by
    # task id are exactly the lost answers' jobs (created upstream, never sent again).
    jobs = requests.get(f"{emulator.url}/_emulator/tasks", params={"state": run_tag}, timeout=10).json()
    assert len(jobs) == IMAGES
    named = {r.task_id for r in records.values() if r.status == SUCCESS}
    assert len(named) == IMAGES - lost and named <= {j["id"] for j in jobs}
    assert len({j["id"] for j in jobs} - named) == lost
    # The unknown_fate XComs the mapped tasks pushed are the ones the manifest reports.
    fates = [v for (t, _, k), v in run.xcoms.items() if t == "describe" and k == "unknown_fate"]
    assert sorted(f["state"] for f in fates) == sorted(r.state for r in unknown.values())
