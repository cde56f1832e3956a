"""
A 60-image directory (byte-identical copies, odd names, non-images beside them) described on the real
services by both example DAGs: the fan-out (one mapped deferrable task per image, run in parallel by
the scheduler and completed by the triggerer) and the batched operator. Both manifests must be
complete and identical in content.

SQLite stack only: the PostgreSQL stack runs the same DAGs on the small sample set. The 200-image
fan-out runs on the distributed tier (two Celery workers, two triggerers, S3): one LocalExecutor on
2 cores starts each mapped task twice, about 2.5 s an image.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from airflow_provider_apicore.manifest import normalised, read_manifest
from scripts.airflow_stack import AirflowStack
from tests.helpers.imagetree import make_image_tree
from tests.integration.conftest import run_dag
from tests.integration.rest import assert_succeeded, emulator_get

pytestmark = pytest.mark.integration

#: Images in the tree (plus non-images a listing must skip).
COUNT = 60
#: Room for every job at once: what is measured is Airflow running the mapped tasks, not the queue.
#: Jobs stay well above the triggerer's reaction time (apache/airflow#72716).
WIDE_ACCOUNT = {"job_seconds": 8, "concurrency": 250, "queue_size": 500}


def put_emulator_config(stack: AirflowStack, changes: dict) -> dict:
    response = requests.put(f"{stack.emulator_url}/_emulator/config", json=changes, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def wide_account(stack: AirflowStack):
    if stack.database != "sqlite":
        pytest.skip("the whole-directory runs use the SQLite stack; PostgreSQL runs the sample-set DAGs")
    before = emulator_get(stack, "/_emulator/config")
    put_emulator_config(stack, WIDE_ACCOUNT)
    # What is measured is Airflow, not money: the stack's token pays for everything here.
    requests.put(
        f"{stack.emulator_url}/_emulator/billing",
        json={"accounts": {stack.emulator_token: {"unlimited": True}}},
        timeout=10,
    ).raise_for_status()
    yield
    put_emulator_config(stack, {k: before[k] for k in WIDE_ACCOUNT})
    requests.put(
        f"{stack.emulator_url}/_emulator/billing", json={"accounts": {stack.emulator_token: None}}, timeout=10
    ).raise_for_status()


def test_a_directory_gives_identical_manifests_by_fanout_and_by_batch(
    stack: AirflowStack, apicore_connection: str, workdir: Path, wide_account: None
) -> None:
    tree = make_image_tree(workdir / "tree-60" / "images", count=COUNT)
    assert len(tree.images) == COUNT and tree.duplicates and tree.non_images

    stats_before = emulator_get(stack, "/_emulator/stats")
    # Mapped deferrable tasks, each started twice (submit, resume) by one LocalExecutor on 2 cores.
    fanout = run_dag(
        stack,
        "apicore_describe_images",
        {"image_dir": str(tree.root), "output_dir": str(workdir / "fanout-200")},
        timeout=900,
    )
    assert_succeeded(stack, fanout)
    stats_mid = emulator_get(stack, "/_emulator/stats")
    batch = run_dag(
        stack,
        "apicore_batch_describe",
        {
            "image_dir": str(tree.root),
            "manifest_path": str(workdir / "batch-200" / "manifest.jsonl"),
            "output_dir": str(workdir / "batch-200" / "captions"),
            "max_in_flight": 100,
            "poll_interval": 1,
        },
    )
    assert_succeeded(stack, batch)
    stats_after = emulator_get(stack, "/_emulator/stats")

    by_fanout = sorted(
        (normalised(r) for r in read_manifest(workdir / "fanout-200" / "manifest.jsonl")), key=str
    )
    by_batch = sorted(
        (normalised(r) for r in read_manifest(workdir / "batch-200" / "manifest.jsonl")), key=str
    )
    assert len(by_fanout) == len(by_batch) == COUNT
    assert by_fanout == by_batch
    assert {r["status"] for r in by_batch} == {"SUCCESS"}
    assert {r["image"] for r in by_batch} == {str(p) for p in tree.images}, (
        "non-images and hidden files skipped"
    )

    # The fan-out sends every file, byte-identical copies included; the batch sends each distinct image once.
    assert stats_mid["submissions_accepted"] - stats_before["submissions_accepted"] == COUNT
    assert stats_after["submissions_accepted"] - stats_mid["submissions_accepted"] == len(tree.unique)
    assert stats_after["max_active"] <= 250
