"""
Deferral rounds continue from a checkpoint, not from the whole manifest.

Each round here is run as Airflow runs it: a new operator instance (a new process's), called with the
``kwargs`` the deferral named, after the trigger's real event from the emulator over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_apicore import manifest as store
from airflow_provider_apicore.manifest import SUCCESS, read_manifest
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from tests.batch.test_lease import s3_manifest  # noqa: F401 - the fixture
from tests.helpers.imagegen import make_png

CONTEXT = {"ti": SimpleNamespace(dag_id="checkpoint_dag", run_id="manual__1")}
FAST = {"job_seconds": 0.05, "concurrency": 50, "queue_size": 1000}


def write_images(directory: Path, count: int, duplicates_of: dict[int, int] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        source = (duplicates_of or {}).get(i, i)
        data = make_png(3 + source % 11, 3 + source // 11 % 13, (source % 256, source * 7 % 256, 99))
        (directory / f"img {i:04d}.png").write_bytes(data)


def new_operator(tmp_path: Path, **kwargs) -> MJBatchDescribeOperator:
    kwargs.setdefault("max_in_flight", 8)
    kwargs.setdefault("manifest_path", str(tmp_path / "out" / "manifest.jsonl"))
    return MJBatchDescribeOperator(
        task_id="describe_all",
        source=str(tmp_path / "src"),
        poll_interval=0.05,
        deferrable=True,
        **kwargs,
    )


async def _first_event(trigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def run_rounds(tmp_path: Path, drop_checkpoints: bool = False, **kwargs) -> tuple[dict, list[dict]]:
    """Run a deferrable batch to the end, each round on a fresh operator; I/O counted per resume."""
    rounds = []
    try:
        new_operator(tmp_path, **kwargs).execute(CONTEXT)
        raise AssertionError("the batch must defer")
    except TaskDeferred as deferred:
        current = deferred
    while True:
        event = asyncio.run(_first_event(current.trigger))
        resume_kwargs = dict(current.kwargs or {})
        if drop_checkpoints:
            os.unlink(tmp_path / "out" / "manifest.jsonl.journal" / resume_kwargs["resume_from"])
        store.IO.clear()
        try:
            summary = new_operator(tmp_path, **kwargs).execute_complete(CONTEXT, event, **resume_kwargs)
        except TaskDeferred as deferred:
            rounds.append(dict(store.IO))
            current = deferred
            continue
        rounds.append(dict(store.IO))
        return summary, rounds


def test_a_resume_reads_the_checkpoint_and_the_next_plan_lines_not_the_manifest(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 300)
    summary, rounds = run_rounds(tmp_path)
    assert summary["succeeded"] == 300
    assert apicore_conn.stats()["jobs_created"] == 300
    assert len(rounds) >= 20
    snapshot = (tmp_path / "out" / "manifest.jsonl").stat().st_size
    middle = rounds[:-1]  # the last round reads everything once to finish (snapshot, outputs)
    # One round: the checkpoint, a block of the plan, and the journal it writes; never the manifest.
    assert max(r["bytes_read"] for r in middle) < snapshot / 4, (snapshot, middle)
    assert max(r.get("lists", 0) for r in middle) == 0
    records = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert len(records) == 300 and all(r.status == SUCCESS and len(r.prompts) == 4 for r in records)
    # Finishing removed the plan and checkpoints with the journal.
    assert not (tmp_path / "out" / "manifest.jsonl.journal").exists()


def test_round_reads_do_not_grow_with_the_number_of_images(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    per_round = {}
    for count in (60, 600):
        base = tmp_path / str(count)
        write_images(base / "src", count)
        summary, rounds = run_rounds(base)
        assert summary["succeeded"] == count
        per_round[count] = statistics.median(r["bytes_read"] for r in rounds[:-1])
    # Ten times the images: about the same bytes read in a round (the SHA prefixes grow by 8 bytes an
    # image sent; reading the manifest back in each round would make it ten times more).
    assert per_round[600] < 2 * per_round[60], per_round


def test_an_image_identical_to_one_sent_in_an_earlier_round_shares_its_job(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    # Images 150..159 have the bytes of images 0..9, sent many rounds earlier.
    write_images(tmp_path / "src", 160, duplicates_of={150 + i: i for i in range(10)})
    summary, _ = run_rounds(tmp_path)
    assert summary["succeeded"] == 160
    assert apicore_conn.stats()["jobs_created"] == 150
    records = {Path(r.image).name: r for r in read_manifest(tmp_path / "out" / "manifest.jsonl")}
    for i in range(10):
        assert records[f"img {150 + i:04d}.png"].task_id == records[f"img {i:04d}.png"].task_id


def test_without_its_checkpoint_a_resume_reads_the_whole_manifest(tmp_path, apicore_conn, caplog):
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 40)
    summary, rounds = run_rounds(tmp_path, drop_checkpoints=True)
    assert summary["succeeded"] == 40
    assert apicore_conn.stats()["jobs_created"] == 40
    assert "reading the whole manifest instead" in caplog.text
    assert all(r.get("lists", 0) >= 1 for r in rounds)


def test_journal_files_do_not_pile_up_across_rounds(tmp_path, apicore_conn, monkeypatch):
    # Compaction as soon as the journal outweighs the snapshot (and at any interval).
    monkeypatch.setattr(store, "COMPACT_MIN_BYTES", 0)
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 200)
    journal = tmp_path / "out" / "manifest.jsonl.journal"
    most = 0
    try:
        new_operator(tmp_path, flush_interval=0.001).execute(CONTEXT)
    except TaskDeferred as deferred:
        current = deferred
    while True:
        event = asyncio.run(_first_event(current.trigger))
        try:
            summary = new_operator(tmp_path, flush_interval=0.001).execute_complete(
                CONTEXT, event, **current.kwargs
            )
            break
        except TaskDeferred as deferred:
            current = deferred
        most = max(most, len([n for n in os.listdir(journal) if not n.startswith(".")]))
    assert summary["succeeded"] == 200
    # About two journal files an image: without compaction in resumed processes all of them (over
    # 400) would stay until the end; with it, at most those written since the journal last outgrew the
    # snapshot.
    assert most < 250, most


def test_a_checkpoint_carries_no_more_than_the_state_in_flight(tmp_path, apicore_conn):
    apicore_conn.configure(job_seconds=5, concurrency=50, queue_size=1000)
    write_images(tmp_path / "src", 500)
    with pytest.raises(TaskDeferred) as deferred:
        new_operator(tmp_path, max_in_flight=10).execute(CONTEXT)
    name = deferred.value.kwargs["resume_from"]
    state = json.loads((tmp_path / "out" / "manifest.jsonl.journal" / name).read_text())
    assert len(state["manifest"]["records"]) == 10  # the ten in flight, not the 490 queued
    assert state["queue"]["remaining"] == 490 and state["queue"]["front"] == []
    assert state["manifest"]["total"] == 500


def test_on_s3_a_resume_reads_its_checkpoint_and_finishing_removes_it(tmp_path, apicore_conn, s3_manifest):  # noqa: F811
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 60)
    url = "s3://aws_lease@leases/run/manifest.jsonl"
    summary, rounds = run_rounds(tmp_path, manifest_path=url)
    assert summary["succeeded"] == 60
    assert apicore_conn.stats()["jobs_created"] == 60
    assert len(rounds) >= 5
    assert max(r.get("lists", 0) for r in rounds[:-1]) == 0  # no resume read the manifest back
    assert len(read_manifest(s3_manifest)) == 60
    left = s3_manifest.fs.find(s3_manifest.parent.path)
    assert not [name for name in left if ".plan-" in name or ".resume-" in name], left


def test_images_sharing_only_the_first_8_bytes_of_their_sha256_are_not_taken_for_identical(tmp_path):
    import logging

    from airflow_provider_apicore.batch.loop import BatchLoop
    from airflow_provider_apicore.manifest import Manifest

    m = Manifest(tmp_path / "m.jsonl", freeze_finished=True)
    sent = "00" * 8 + "11" * 24
    m.touch(m.add("/img/a.png"), status=SUCCESS, sha256=sent, attempts=1, task_id="1")
    m.commit()
    loop = BatchLoop(
        m,
        None,
        "t",
        logging.getLogger("test"),
        max_in_flight=1,
        poll_interval=1,
        timeout=None,
        max_image_bytes=1,
    )
    loop.prepare(fresh=False)
    assert loop._primary_for(sent) == "/img/a.png"
    assert loop._primary_for("00" * 8 + "22" * 24) is None  # same prefix, other bytes
    assert loop._primary_for("01" * 32) is None
