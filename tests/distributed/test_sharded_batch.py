"""
A sharded batch (dags/apicore_sharded_batch.py) over a large directory on S3 (moto): four shards run as
mapped MJBatchDescribeOperator tasks on both Celery workers, each with a quarter of the account's
concurrency. One worker is SIGKILLed while its shard is half way: the scheduler notices the lost task
(heartbeat timeout), Airflow retries the shard, the retry runs on the other worker and resumes from the
shard's manifest part on S3. Every image ends SUCCESS in the merged manifest, every image was submitted
once (the emulator does not deduplicate), and the emulator never had more than the account's limit of
jobs upstream.

A kill can land while a submission is in the air (request sent, task id not yet recorded). With the
operator's default ``on_unknown_fate="record"`` the retry does not send that image again (no risk of
paying twice): it records it ``unknown_fate`` with the reason, for a person to decide. So: every image
is in the merged manifest, SUCCESS except at most one ``unknown_fate`` per killed shard, and no image
was submitted twice.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_apicore.shards import PART_NAME
from scripts.airflow_stack import AirflowStack, Phase
from tests.distributed.conftest import (
    BUCKET,
    configure_emulator,
    emulator_stats,
    end_run,
    note,
    record_phase,
    reset_emulator,
    s3_url,
)
from tests.helpers.imagetree import make_image_tree
from tests.integration.rest import quote, unpause, wait_for_dag

pytestmark = pytest.mark.distributed

DAG_ID = "apicore_sharded_batch"
#: The issue's 2,000 (1,000 took 157 s with the kill on two cores); fewer for a quick look.
IMAGES = int(os.environ.get("APICORE_DISTRIBUTED_SHARDED_IMAGES", "2000"))
WAIT = float(os.environ.get("APICORE_DISTRIBUTED_WAIT", "900"))
SHARDS = 4
ACCOUNT_LIMIT = 40
#: Fraction of the images accepted upstream before a worker is killed.
KILL_AT = 0.3
CORE_SERVICES = ("api-server", "scheduler", "dag-processor", "redis", "moto", "triggerer-1", "triggerer-2")


def upload(stack: AirflowStack, root: Path, prefix: str) -> dict[str, str]:
    client = stack.s3_client()
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]

    def put(path: Path) -> tuple[str, str]:
        key = f"{prefix}/{path.relative_to(root).as_posix()}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
        return str(path), s3_url(key)

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(put, files))


def shard_tis(stack: AirflowStack, run_id: str) -> list[dict[str, Any]]:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances?task_id=describe_shard&limit=100"
    return [t for t in stack.api("GET", path, expect=200).json()["task_instances"] if t["map_index"] >= 0]


def tries(stack: AirflowStack, run_id: str, map_index: int) -> list[dict[str, Any]]:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/describe_shard/{map_index}/tries"
    return stack.api("GET", path, expect=200).json()["task_instances"]


def sha(record: dict[str, Any]) -> str:
    return record.get("sha256") or record["image"]


def read_jsonl(stack: AirflowStack, key: str) -> list[dict[str, Any]]:
    body = stack.s3_client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def test_sharded_batch_on_s3_survives_a_worker_kill(dstack: AirflowStack, tmp_path: Path) -> None:
    stack = dstack
    started = time.monotonic()
    tree = make_image_tree(tmp_path / "images", count=IMAGES, duplicates=0)
    urls = upload(stack, tree.root, "sharded/images")
    record_phase(Phase(f"sharded: {len(urls)} files generated and put on S3", time.monotonic() - started))
    reset_emulator(stack)
    configure_emulator(
        stack, job_seconds=1, concurrency=ACCOUNT_LIMIT, queue_size=1000, dedupe=False, faults={}
    )
    conf = {
        "image_dir": s3_url("sharded/images"),
        "manifest_prefix": s3_url("sharded/manifest"),
        "output_dir": s3_url("sharded/captions"),
        "shards": SHARDS,
        "account_limit": ACCOUNT_LIMIT,
        "poll_interval": 1,
        # Each shard holds its worker from start to end: the kill lands in the middle of a shard.
        "deferrable": False,
    }
    wait_for_dag(stack, DAG_ID)
    unpause(stack, DAG_ID)
    started = time.monotonic()
    run_id = stack.api(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}, expect=(200, 201)
    ).json()["dag_run_id"]
    run_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}"
    first_hosts: dict[int, str] = {}
    victim = None
    accepted_at_kill = 0
    killed_at = 0.0
    try:
        deadline = time.monotonic() + WAIT
        while True:
            for name in CORE_SERVICES:
                stack.services[name].check_alive()
            for ti in shard_tis(stack, run_id):
                if ti["state"] == "running" and ti["try_number"] == 1 and ti["hostname"]:
                    first_hosts.setdefault(ti["map_index"], ti["hostname"])
            stats = emulator_stats(stack)
            if victim is None and stats["submissions_accepted"] >= IMAGES * KILL_AT and first_hosts:
                # The worker running the most shards right now.
                counts: dict[str, int] = {}
                for ti in shard_tis(stack, run_id):
                    if ti["state"] == "running" and ti["hostname"]:
                        counts[ti["hostname"]] = counts.get(ti["hostname"], 0) + 1
                if counts:
                    victim = max(counts, key=lambda h: counts[h])
                    accepted_at_kill = stats["submissions_accepted"]
                    stack.kill(victim)
                    killed_at = time.monotonic()
                    note(
                        f"sharded: SIGKILL {victim} running {counts[victim]} shard(s) after "
                        f"{accepted_at_kill} of {IMAGES} images were accepted "
                        f"({killed_at - started:.0f}s into the run)"
                    )
            state = stack.api("GET", run_path, expect=200).json()["state"]
            if state in ("success", "failed"):
                break
            assert time.monotonic() < deadline, f"sharded run still {state} after {WAIT:.0f}s"
            time.sleep(1)
        seconds = time.monotonic() - started
        record_phase(Phase(f"sharded: {IMAGES} images in {SHARDS} shards, whole run", seconds))
    finally:
        end_run(stack, DAG_ID, run_id)
        if victim is not None and not stack.services[victim].alive():
            stack.restart(victim)

    assert victim is not None, "no worker was killed: the run ended before 30% of the images were accepted"
    survivor = ({"worker-1", "worker-2"} - {victim}).pop()
    final = shard_tis(stack, run_id)
    assert state == "success" and [t["state"] for t in final] == ["success"] * SHARDS, final
    assert set(first_hosts.values()) == {"worker-1", "worker-2"}, f"first tries ran on {first_hosts}"

    # The shards that were on the killed worker failed there and were retried on the other one.
    retried = {}
    for ti in final:
        history = tries(stack, run_id, ti["map_index"])
        if ti["try_number"] > 1:
            retried[ti["map_index"]] = [(t["try_number"], t["hostname"], t["state"]) for t in history]
    assert retried, "no shard was retried after the kill"
    for map_index, history in retried.items():
        assert history[0][1] == victim and history[-1][1] == survivor, (map_index, history)
    note(f"sharded: retried shards (try, host, state): {retried}")

    # Resumed from the S3 manifest parts: each image was submitted once (lost answers aside), all done.
    parts = [read_jsonl(stack, f"sharded/manifest/{PART_NAME.format(index=k)}") for k in range(SHARDS)]
    by_image = {r["image"]: r for part in parts for r in part}
    # The quick listing keeps a text file named fake.PNG; its shard refused it after reading it.
    fake = urls[str(tree.root / "sub dir" / "fake.PNG")]
    assert by_image.pop(fake)["status"] == "rejected"
    records = list(by_image.values())
    assert sorted(by_image) == sorted(urls[str(p)] for p in tree.images)
    in_doubt = [r for r in records if r["status"] == "unknown_fate"]
    assert {r["status"] for r in records} <= {"SUCCESS", "unknown_fate"}
    assert len(in_doubt) <= len(retried), f"{len(in_doubt)} images in doubt after {len(retried)} lost shards"
    assert all("stopped while this image was being sent" in (r.get("error") or "") for r in in_doubt)
    combined = read_jsonl(stack, "sharded/manifest/combined.jsonl")
    assert len(combined) == IMAGES + 1
    stats = emulator_stats(stack)
    # Byte-identical images (a few of the generated ones coincide) are submitted once per shard; an
    # image in doubt reached the emulator or not.
    distinct = sum(len({sha(r) for r in part if r["image"] != fake}) for part in parts)
    accepted = stats["submissions_accepted"]
    assert distinct - len(in_doubt) <= accepted <= distinct, (accepted, distinct, len(in_doubt))
    overall = len({sha(r) for r in records})
    assert stats["duplicate_image_jobs"] <= distinct - overall, "an image was sent twice"
    lost_answers = len(in_doubt)
    assert stats["max_active"] <= ACCOUNT_LIMIT, stats["max_active"]
    note(
        f"sharded: {IMAGES} images, {accepted} jobs, {lost_answers} image(s) left unknown_fate by the "
        f"kill, 0 sent twice; emulator max_active {stats['max_active']} <= {ACCOUNT_LIMIT}; "
        f"{seconds:.0f}s ({IMAGES / seconds:.1f} images/s), recovery after the kill "
        f"{time.monotonic() - killed_at:.0f}s"
    )
