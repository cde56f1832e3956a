"""
Whole directories described for real: ``airflow dags test`` against the emulator over loopback HTTP.

One generated tree of 200 images (6 byte-identical copies, odd names, non-images beside them) is
described by the daily batch DAG; an 8-image part of it by the fan-out DAG too (one mapped deferrable
task per image runs sequentially under ``airflow dags test``, about 2.5 s an image, so the fan-out gets
the smaller directory here; the whole 200 go through the fan-out on the real scheduler in
tests/integration/test_whole_directory.py); both manifests must agree. Then the batched task is made
to fail, and is killed outright, about half way through, once while a processed submission's answer
is held in the air: the retry finishes, never sends an image in doubt again (it is recorded
``unknown_fate`` with its state tag) and the emulator, which never deduplicates, counts no duplicate job.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_apicore.manifest import (
    PENDING_SUBMIT,
    SUBMITTED,
    SUCCESS,
    UNKNOWN_FATE,
    normalised,
    read_manifest,
)
from tests.conftest import TEST_TOKEN, Emulator
from tests.helpers.airflow_run import AIRFLOW, airflow_env, read_last_run, run_dag_test
from tests.helpers.imagetree import ImageTree, make_image_tree

pytestmark = pytest.mark.e2e

#: A fast account with room for far more jobs than the operator may run: max_in_flight is what limits.
FAST_ACCOUNT = {"job_seconds": 0.3, "concurrency": 50, "queue_size": 500, "faults": {}}
MAX_IN_FLIGHT = 12
SUBSET = "subset"
SUBSET_COUNT = 8


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> ImageTree:
    return make_image_tree(
        tmp_path_factory.mktemp("tree") / "images", count=200, subset=SUBSET, subset_count=SUBSET_COUNT
    )


@dataclass
class BatchRun:
    run: Any
    stats: dict[str, Any]
    manifest: Path
    captions: Path
    seconds: float


@pytest.fixture(scope="module")
def batch_run(emulator_server, airflow_home, tree, tmp_path_factory) -> BatchRun:
    """The daily batch DAG over the 200-image tree (run once; several tests read its results)."""
    emulator = Emulator(emulator_server, TEST_TOKEN)
    emulator.reset()
    emulator.configure(**FAST_ACCOUNT)
    out = tmp_path_factory.mktemp("batch")
    conf = {
        "image_dir": str(tree.root),
        "manifest_path": str(out / "manifest.jsonl"),
        "output_dir": str(out / "captions"),
        "max_in_flight": MAX_IN_FLIGHT,
        "poll_interval": 0.2,
    }
    started = time.monotonic()
    run = run_dag_test(airflow_env(airflow_home, emulator.conn_env()), "apicore_batch_describe", conf)
    seconds = time.monotonic() - started
    return BatchRun(run, emulator.stats(), out / "manifest.jsonl", out / "captions", seconds)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_batch_dag_describes_200_images_each_unique_one_submitted_once(batch_run, tree):
    run = batch_run.run
    assert run.returncode == 0, run.output[-4000:]
    assert run.state == "success"
    records = {r.image: r for r in read_manifest(batch_run.manifest)}
    assert set(records) == {str(p) for p in tree.images}
    assert all(r.status == "SUCCESS" and len(r.prompts) == 4 for r in records.values())
    assert all(r.sha256 == sha(Path(image)) for image, r in records.items())
    # Identical bytes, one job: copies share the task of their original.
    by_sha: dict[str, set[str]] = {}
    for r in records.values():
        by_sha.setdefault(r.sha256, set()).add(r.task_id)
    assert all(len(ids) == 1 for ids in by_sha.values())
    stats = batch_run.stats
    assert stats["submissions_accepted"] == len(tree.unique) == 200 - len(tree.duplicates)
    assert stats["duplicate_submissions"] == 0
    assert 2 <= stats["max_active"] <= MAX_IN_FLIGHT
    summary = run.xcom("write_captions")
    assert (summary["total"], summary["succeeded"], summary["captions"]) == (200, 200, 200)
    assert summary["not_described"] == []


def test_the_batch_dags_captions_mirror_the_tree(batch_run, tree):
    captions = sorted(p for p in batch_run.captions.rglob("*.txt"))
    assert len(captions) == 200
    records = {r.image: r for r in read_manifest(batch_run.manifest)}
    for image in tree.images[:40]:
        relative = image.relative_to(tree.root)
        caption = batch_run.captions / relative.parent / (image.stem + ".txt")
        # strip_parameters is on in the example DAG: the caption is the first prompt without "--ar ..".
        first = records[str(image)].prompts[0]
        assert caption.read_text(encoding="utf-8") == first.split(" --")[0].strip() + "\n"


def test_the_fanout_dag_writes_the_same_manifest_as_the_batch_operator(
    batch_run, tree, emulator, airflow_home, tmp_path
):
    emulator.configure(**FAST_ACCOUNT)
    subset = tree.root / SUBSET
    conf = {"image_dir": str(subset), "output_dir": str(tmp_path / "fanout")}
    started = time.monotonic()
    run = run_dag_test(airflow_env(airflow_home, emulator.conn_env()), "apicore_describe_images", conf)
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.output[-4000:]
    assert run.state == "success"
    assert seconds < 240, f"took {seconds:.0f}s"
    fanout = sorted((normalised(r) for r in read_manifest(tmp_path / "fanout" / "manifest.jsonl")), key=str)
    batch = sorted((normalised(r) for r in read_manifest(batch_run.manifest)), key=str)
    batch_subset = [r for r in batch if r["image"].startswith(str(subset) + "/")]
    assert len(fanout) == len(batch_subset) == SUBSET_COUNT
    assert fanout == batch_subset
    assert all(r["status"] == "SUCCESS" for r in fanout)
    # The fan-out sends every file, copies included; the batch operator sent each distinct image once.
    assert emulator.stats()["submissions_accepted"] == SUBSET_COUNT
    assert len(list((tmp_path / "fanout").rglob("*.txt"))) == SUBSET_COUNT


# ---------------------------------------------------------------------------------- crash and retry
CRASH_DAG = """
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator

with DAG(
    dag_id="DAG_ID",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"image_dir": "", "manifest_path": ""},
    render_template_as_native_obj=True,
):
    MJBatchDescribeOperator(
        task_id="describe_directory",
        source="{{ params.image_dir }}",
        manifest_path="{{ params.manifest_path }}",
        max_in_flight=MAX_IN_FLIGHT,
        poll_interval=0.2,
        deferrable=DEFERRABLE,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
"""


def crash_env(tmp_path: Path, airflow_home: Path, emulator: Emulator, dag_id: str, deferrable: bool) -> dict:
    dags = tmp_path / "dags"
    dags.mkdir()
    source = CRASH_DAG.replace("DAG_ID", dag_id).replace("MAX_IN_FLIGHT", str(MAX_IN_FLIGHT))
    (dags / f"{dag_id}.py").write_text(source.replace("DEFERRABLE", str(deferrable)))
    return airflow_env(airflow_home, {**emulator.conn_env(), "AIRFLOW__CORE__DAGS_FOLDER": str(dags)})


class Watcher(threading.Thread):
    """Polls the emulator's counters and acts once when ``when(stats)`` turns true."""

    def __init__(self, emulator: Emulator, when: Callable[[dict], bool], act: Callable[[dict], None]) -> None:
        super().__init__(daemon=True)
        self.emulator, self.when, self.act = emulator, when, act
        self.fired: dict | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            stats = self.emulator.stats()
            if self.when(stats):
                self.fired = stats
                self.act(stats)
                return
            time.sleep(0.02)


def try_numbers(home: Path, dag_id: str, run_id: str) -> list[int]:
    con = sqlite3.connect(home / "airflow.db")
    try:
        rows = con.execute(
            "SELECT try_number FROM task_instance WHERE dag_id=? AND run_id=? AND task_id=?",
            (dag_id, run_id, "describe_directory"),
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def test_a_failed_try_half_way_is_retried_by_airflow_without_a_duplicate(
    tree, emulator, airflow_home, tmp_path
):
    """The token is revoked after ~100 accepted jobs (the task fails), then restored for the retry."""
    emulator.configure(**FAST_ACCOUNT)
    dag_id = "apicore_batch_retry_e2e"
    env = crash_env(tmp_path, airflow_home, emulator, dag_id, deferrable=True)

    def revoke_then_restore(_stats: dict) -> None:
        emulator.configure(faults={"token_expired": True})
        deadline = time.monotonic() + 30
        while emulator.stats()["unauthorized"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        emulator.configure(faults={})

    watcher = Watcher(emulator, lambda s: s["submissions_accepted"] >= 100, revoke_then_restore)
    watcher.start()
    manifest = tmp_path / "manifest.jsonl"
    run = run_dag_test(env, dag_id, {"image_dir": str(tree.root), "manifest_path": str(manifest)})
    watcher.stop.set()
    assert watcher.fired is not None, "the batch never reached 100 accepted jobs"
    assert run.returncode == 0, run.output[-4000:]
    assert run.state == "success"
    assert try_numbers(airflow_home, dag_id, run.run_id) == [2], "the first try failed and Airflow retried it"
    assert "ApicoreAuthError" in run.output or "rejected the API token" in run.output
    stats = emulator.stats()
    assert stats["unauthorized"] >= 1
    assert 100 <= watcher.fired["submissions_accepted"] < len(tree.unique)
    assert stats["duplicate_submissions"] == 0
    assert stats["submissions_accepted"] == len(tree.unique)
    assert stats["max_active"] <= MAX_IN_FLIGHT
    records = read_manifest(manifest)
    assert len(records) == 200 and all(r.status == "SUCCESS" for r in records)


def remove_killed_lease(manifest: Path, dag_id: str) -> None:
    """
    The lease a killed try leaves stays until a retry of the same task instance takes it over; the next
    ``airflow dags test`` here is a new DAG run, so the test does what the lease error says: delete it.
    """
    lease = Path(f"{manifest}.lease")
    assert lease.exists(), "the killed try held the manifest lease"
    assert dag_id in lease.read_text()
    lease.unlink()


def test_a_killed_try_is_finished_by_the_next_without_resubmitting_accepted_images(
    tree, emulator, airflow_home, tmp_path
):
    """SIGKILL the whole `airflow dags test` process group after ~100 accepted jobs, then run again."""
    # A server that never deduplicates, like the real ones: any resend would be a second paid job.
    emulator.configure(**FAST_ACCOUNT, dedupe=False)
    dag_id = "apicore_batch_kill_e2e"
    env = crash_env(tmp_path, airflow_home, emulator, dag_id, deferrable=False)
    manifest = tmp_path / "manifest.jsonl"
    conf = json.dumps({"image_dir": str(tree.root), "manifest_path": str(manifest)})
    first = subprocess.Popen(
        [AIRFLOW, "dags", "test", dag_id, "--conf", conf],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    watcher = Watcher(
        emulator,
        lambda s: s["submissions_accepted"] >= 100,
        lambda _s: os.killpg(first.pid, signal.SIGKILL),
    )
    watcher.start()
    try:
        first.wait(timeout=180)
    finally:
        watcher.stop.set()
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL, "the first try must have been killed, not finished"
    time.sleep(1)  # let jobs that were running upstream finish; the second try must only follow them

    # What the killed try left: task ids it never got to record cannot be looked up by the client (the
    # protocol has no query by `state`); this test asks the emulator's admin API to know the truth.
    left = {r.image: r for r in read_manifest(manifest)}
    assert len(left) == 200
    accepted_before = {image: r.task_id for image, r in left.items() if r.task_id}
    assert len(accepted_before) >= 90
    in_the_air = {r.image: r for r in left.values() if r.status == PENDING_SUBMIT}
    assert len(in_the_air) <= 1, "submissions are sequential: at most one can be in the air"
    lost_but_accepted = sum(
        len(requests.get(f"{emulator.url}/_emulator/tasks", params={"state": r.state}, timeout=10).json())
        for r in in_the_air.values()
    )
    before = emulator.stats()
    assert before["jobs_created"] == len(set(accepted_before.values())) + lost_but_accepted

    remove_killed_lease(manifest, dag_id)
    second = run_dag_test(env, dag_id, json.loads(conf))
    assert second.returncode == 0, second.output[-4000:]
    assert second.state == "success"
    records = {r.image: r for r in read_manifest(manifest)}
    assert len(records) == 200
    # Every image that had an accepted task id was only followed, never submitted again.
    assert all(records[image].task_id == task_id for image, task_id in accepted_before.items())
    # A submission whose answer died with the process is not sent again: recorded unknown_fate, with
    # the tag that finds its job if APICore created one.
    for image, doubt in in_the_air.items():
        assert records[image].status == UNKNOWN_FATE and records[image].task_id is None
        assert records[image].state == doubt.state and records[image].attempts == doubt.attempts
        assert "previous try stopped" in records[image].error
    doubtful = {r.sha256 for r in in_the_air.values()}  # byte-identical copies share the fate
    assert all(r.status == SUCCESS for r in records.values() if r.sha256 not in doubtful), {
        image: (r.status, r.error) for image, r in records.items() if r.status != SUCCESS
    }
    stats = emulator.stats()
    assert stats["duplicate_image_jobs"] == 0 and stats["duplicate_jobs"] == 0
    assert stats["submissions_existed"] == 0
    assert stats["jobs_created"] == len(tree.unique) - len(in_the_air) + lost_but_accepted
    assert stats["max_active"] <= MAX_IN_FLIGHT
    assert not [r for r in records.values() if r.status in (SUBMITTED, PENDING_SUBMIT)]
    _, state, _, _ = read_last_run(airflow_home / "airflow.db", dag_id)
    assert state == "success"


def test_a_try_killed_while_its_submission_awaits_the_answer_is_recorded_unknown_fate_on_resume(
    tree, emulator, airflow_home, tmp_path
):
    """
    The worst moment to die: APICore has created the job for a submission but its answer has not arrived.

    From about half way the emulator holds the answers to submissions (``slow``); the try is killed as
    soon as the emulator reports a processed submission whose answer it holds (``jobs_held``). The next
    try finds that image ``pending_submit`` and, against a server that never deduplicates, must not send
    it again: it is recorded ``unknown_fate`` with the lost submission's state tag (which finds the job),
    and the emulator counts 0 duplicate jobs.
    """
    emulator.configure(**FAST_ACCOUNT, dedupe=False)
    dag_id = "apicore_batch_lost_answer_e2e"
    env = crash_env(tmp_path, airflow_home, emulator, dag_id, deferrable=False)
    manifest = tmp_path / "manifest.jsonl"
    conf = {"image_dir": str(tree.root), "manifest_path": str(manifest)}
    first = subprocess.Popen(
        [AIRFLOW, "dags", "test", dag_id, "--conf", json.dumps(conf)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    held: dict[str, Any] = {}

    def hold_answers_then_kill(_stats: dict) -> None:
        emulator.configure(faults={"slow": 1.0, "slow_seconds": 60, "endpoints": ["submit"]})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stats = emulator.stats()
            if stats["jobs_held"] >= 1:  # a submission was processed (its job exists), answer held
                held.update(stats)
                break
            time.sleep(0.02)
        os.killpg(first.pid, signal.SIGKILL)

    watcher = Watcher(emulator, lambda s: s["submissions_accepted"] >= 100, hold_answers_then_kill)
    watcher.start()
    try:
        first.wait(timeout=180)
    finally:
        watcher.stop.set()
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    assert held, "the emulator never held a processed submission's answer before the kill"
    assert held["jobs_held"] == 1 and held["answers_held"] >= 1
    emulator.configure(faults={})

    left = {r.image: r for r in read_manifest(manifest)}
    [in_the_air] = [r for r in left.values() if r.status == PENDING_SUBMIT]
    # The client cannot ask for a task by its tag; the test can, through the emulator's admin API.
    [lost] = requests.get(
        f"{emulator.url}/_emulator/tasks", params={"state": in_the_air.state}, timeout=10
    ).json()
    accepted_before = {image: r.task_id for image, r in left.items() if r.task_id}

    remove_killed_lease(manifest, dag_id)
    second = run_dag_test(env, dag_id, conf)
    assert second.returncode == 0, second.output[-4000:]
    assert second.state == "success"
    records = {r.image: r for r in read_manifest(manifest)}
    assert len(records) == 200
    assert all(records[image].task_id == task_id for image, task_id in accepted_before.items())
    doubt = records[in_the_air.image]
    assert doubt.status == UNKNOWN_FATE and doubt.task_id is None
    assert doubt.state == in_the_air.state == lost["state"], "the tag that finds the job it started"
    assert doubt.attempts == in_the_air.attempts, "never sent again"
    assert "previous try stopped" in doubt.error and in_the_air.state in doubt.error
    # (A byte-identical copy of the image in doubt, if the tree has one, shares its fate: no job of its own.)
    others = {image: r for image, r in records.items() if r.sha256 != in_the_air.sha256}
    assert all(r.status == SUCCESS for r in others.values()), {
        image: (r.status, r.error) for image, r in others.items() if r.status != SUCCESS
    }
    stats = emulator.stats()
    assert stats["duplicate_image_jobs"] == 0 and stats["duplicate_jobs"] == 0
    assert stats["submissions_existed"] == 0
    # One job per distinct image: the one in doubt has exactly the job its lost answer was about.
    assert stats["jobs_created"] == len(tree.unique)
    assert stats["max_active"] <= MAX_IN_FLIGHT
