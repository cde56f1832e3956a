"""
Soak: 1,000 images through MJBatchDescribeOperator under realistic faults, with a real crash.

The account runs 50 jobs at once (0.1 s each), does not deduplicate (as the real servers), and
misbehaves at realistic rates: 2 % 5xx, 2 % 429 (Retry-After: 1), 1 % connections dropped before
processing, 1 % slow answers, 0.5 % HTML error pages, 0.5 % truncated JSON, 1 % "queue full", and
**after** processing (the job exists): 2 % 5xx, 0.5 % a proxy's HTML 502 and 0.5 % a dropped
connection; 1 % of jobs FAILURE, a few stuck and one vanishing. The batch runs in a subprocess that
SIGKILLs itself while submission 450 is in the air (the server has processed it, the answer never
arrives), and a second subprocess, the retry, finishes from the manifest. Every image must end
described or failed with a reason (unknown fates with their state tag): 0 lost, and **0 duplicate
jobs** by the emulator's own counter; every job upstream is one the manifest names, by task id or, for
an unknown fate, by the state tag of its only submission.
Counts go to stdout (``pytest -s``) and results/soak.json.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from airflow_provider_apicore.emulator.faults import FAIL_REASONS
from airflow_provider_apicore.manifest import (
    FINAL_STATUSES,
    NOT_FOUND,
    SUCCESS,
    TIMEOUT,
    UNKNOWN_FATE,
    read_manifest,
)
from tests.reliability.conftest import write_images

pytestmark = pytest.mark.soak

REPO = Path(__file__).resolve().parents[2]
IMAGES = 1000
CRASH_AFTER = 450
TIMEOUT_SECONDS = 20
#: Seed 2 gives the first 1,000 jobs 12 failures, 3 stuck and 1 vanishing.
SEED = 2
ACCOUNT = {"job_seconds": 0.1, "concurrency": 50, "queue_size": 200, "seed": SEED, "dedupe": False}
FAULTS = {
    "http_5xx": 0.02,
    "http_429": 0.02,
    "retry_after": 1,
    "drop_before": 0.01,
    "slow": 0.01,
    "slow_seconds": 0.3,  # slower than usual, within the client's 30 s timeout
    "html_error": 0.005,
    "malformed_json": 0.005,
    "queue_full": 0.01,
    "http_5xx_after": 0.02,
    "html_error_after": 0.005,
    "drop_after": 0.005,
    "task_failure": 0.01,
    "stuck": 0.004,
    "vanish": 0.002,
}

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    from types import SimpleNamespace
    from airflow_provider_apicore.hooks.apicore import ApicoreHook
    from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator

    crash_after = int(os.environ["SOAK_CRASH_AFTER"])
    sent = 0
    submit = ApicoreHook.submit_describe

    def crashing_submit(self, payload, validate=True, retries=None):
        global sent
        sent += 1
        if crash_after and sent >= crash_after:
            # The submission reaches the server and is processed; the worker dies before the answer
            # is read: the manifest says pending_submit, with its state tag.
            try:
                submit(self, payload, validate, retries)
            finally:
                os.kill(os.getpid(), signal.SIGKILL)
        return submit(self, payload, validate, retries)

    ApicoreHook.submit_describe = crashing_submit
    op = MJBatchDescribeOperator(
        task_id="soak", source=sys.argv[1], manifest_path=sys.argv[2], max_in_flight=50,
        poll_interval=0.1, timeout=float(sys.argv[3]), flush_interval=5,
    )
    summary = op.execute({"ti": SimpleNamespace(dag_id="soak", run_id="manual__1")})
    print("SUMMARY " + json.dumps(summary))
    """
)


def _run(emulator, source: Path, manifest: Path, crash_after: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(emulator.conn_env(), SOAK_CRASH_AFTER=str(crash_after), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(source), str(manifest), str(TIMEOUT_SECONDS)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def soak_emulator(emulator):
    """The session's emulator with the soak's account; its configuration is restored afterwards."""
    original = requests.get(f"{emulator.url}/_emulator/config", timeout=10).json()
    emulator.configure(**ACCOUNT, faults=FAULTS)
    yield emulator
    emulator.reset()
    requests.put(f"{emulator.url}/_emulator/config", json=original, timeout=10).raise_for_status()


def test_a_thousand_images_with_faults_and_a_crash_end_with_every_image_accounted_for(
    soak_emulator, tmp_path
):
    emulator = soak_emulator
    started = time.monotonic()
    source, manifest = tmp_path / "images", tmp_path / "out" / "manifest.jsonl"
    images = write_images(source, IMAGES)

    first = _run(emulator, source, manifest, CRASH_AFTER)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    after_crash = {r.image: r for r in read_manifest(manifest)}
    accepted_before = {image: r.task_id for image, r in after_crash.items() if r.task_id}
    assert len(accepted_before) >= CRASH_AFTER * 0.9
    in_the_air = [r for r in after_crash.values() if r.status == "pending_submit"]
    assert len(in_the_air) == 1, "exactly the submission being sent was in the air"

    second = _run(emulator, source, manifest, 0)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    resumed = re.search(
        r"Starting batch from .*: (\d+) images; (\d+) already finished, (\d+) in flight to follow", log
    )
    assert resumed, log[-3000:]
    total, finished_before, in_flight = map(int, resumed.groups())
    assert total == IMAGES and finished_before > 0 and in_flight > 0, "the retry resumed from the manifest"
    seconds = time.monotonic() - started

    records = {r.image: r for r in read_manifest(manifest)}
    stats = emulator.stats()
    tasks = {t["id"]: t for t in requests.get(f"{emulator.url}/_emulator/tasks", timeout=30).json()}
    statuses = Counter(r.status for r in records.values())
    described = statuses[SUCCESS]
    failed = [r for r in records.values() if r.status != SUCCESS]
    lost = {str(p) for p in images} - set(records)
    counts = {
        "images": IMAGES,
        "described": described,
        "failed_with_reason": sum(1 for r in failed if r.error),
        "failed_without_reason": sum(1 for r in failed if not r.error),
        "lost": len(lost),
        "duplicate_submissions": stats["duplicate_submissions"],
        "by_status": dict(sorted(statuses.items())),
        "submissions_accepted": stats["submissions_accepted"],
        "requests": stats["requests"],
        "faults_injected": stats["faults_injected"],
        "unknown_fate": statuses[UNKNOWN_FATE],
        "unknown_fate_with_a_job_upstream": 0,
        "resubmitted_after_lost_answer": sum(1 for r in records.values() if r.attempts > 1),
        "crash": {"accepted_before_kill": len(accepted_before), "in_flight_at_restart": in_flight},
        "wall_seconds": round(seconds, 1),
    }
    print("\nSOAK " + json.dumps(counts, indent=2))
    results = REPO / "results"
    results.mkdir(exist_ok=True)
    (results / "soak.json").write_text(json.dumps(counts, indent=2) + "\n")

    # 0 lost, each image final and explained.
    assert not lost and len(records) == IMAGES
    assert all(r.status in FINAL_STATUSES or r.status == UNKNOWN_FATE for r in records.values())
    assert counts["failed_without_reason"] == 0
    # 0 duplicates: every job the server started belongs to exactly one image, no image accepted before
    # the crash was sent again, and nothing whose fate was unknown was sent again (on_unknown_fate
    # defaults to "record").
    task_ids = [r.task_id for r in records.values() if r.task_id]
    assert stats["duplicate_submissions"] == 0
    assert len(set(task_ids)) == len(task_ids)
    assert counts["resubmitted_after_lost_answer"] == 0
    assert all(records[image].task_id == task_id for image, task_id in accepted_before.items())
    unknown = {r.state: r for r in records.values() if r.status == UNKNOWN_FATE}
    assert all(state and r.error and state in r.error for state, r in unknown.items())
    assert records[in_the_air[0].image].status == UNKNOWN_FATE
    assert in_the_air[0].state in unknown
    # Every job upstream is named by the manifest: by its task id, or by the state tag of an image whose
    # answer was lost (at most one job each, as each was sent once).
    named = set(task_ids)
    orphans = [t for t in tasks.values() if t["id"] not in named]
    assert all(t["state"] in unknown for t in orphans)
    assert len({t["state"] for t in orphans}) == len(orphans)
    counts["unknown_fate_with_a_job_upstream"] = len(orphans)
    (results / "soak.json").write_text(json.dumps(counts, indent=2) + "\n")
    print("orphaned jobs of unknown-fate images:", len(orphans))
    assert stats["tasks_created"] == len(named) + len(orphans)
    # Each failure is the server's: its reason, the stuck job's timeout, the vanished job (a job whose
    # answer was lost may also have drawn one of those fates, unseen by the batch).
    injected = stats["faults_injected"]
    assert 1 <= statuses["FAILURE"] <= injected["task_failure"]
    assert 1 <= statuses[TIMEOUT] <= injected["stuck"]
    assert statuses[NOT_FOUND] <= injected["vanish"]
    for record in failed:
        task = tasks.get(record.task_id)
        if record.status == "FAILURE":
            assert record.error in FAIL_REASONS and task["failReason"] == record.error
        elif record.status == TIMEOUT:
            assert task["status"] == "IN_PROGRESS" and "last seen status IN_PROGRESS" in record.error
    assert described == IMAGES - len(failed) >= IMAGES * 0.9
    # The faults really happened, at about the rates asked.
    for kind in ("http_5xx", "http_429", "drop_before", "slow", "queue_full", "http_5xx_after", "drop_after"):
        assert injected[kind] >= 1, kind
    assert len(orphans) >= 2, "answers were lost after the server created the job"
    assert seconds < 240, f"the soak took {seconds:.0f}s"
