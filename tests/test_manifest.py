"""The results manifest: snapshots, journal, crash tolerance, the shared record format, captions."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import Counter

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore import manifest as manifest_module
from airflow_provider_apicore.exceptions import ApicoreConfigError, ManifestChangedError
from airflow_provider_apicore.manifest import (
    PENDING,
    PENDING_SUBMIT,
    SUBMITTED,
    SUCCESS,
    VOLATILE_FIELDS,
    Manifest,
    ManifestRecord,
    apply_result,
    apply_task,
    normalised,
    read_manifest,
    write_captions,
    write_manifest,
)
from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.results import describe_result
from tests.batch.test_lease import s3_manifest  # noqa: F401 - the fixture

KEYCAP = "\ufe0f\u20e3"
PROMPT = "\n\n".join(
    f"{n}{KEYCAP} {text}"
    for n, text in enumerate(["a red fox in snow --ar 4:3", "a fox, watercolor --ar 4:3", "c", "d"], 1)
)


def task(status: str, **extra) -> MJTask:
    obj = {"id": "1700000000000123", "status": status, "submitTime": 1, "startTime": 2, "finishTime": 3}
    obj.update(extra)
    return MJTask.from_json(obj)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8").read().splitlines()]


def test_a_change_committed_to_the_journal_is_read_back_before_any_snapshot(tmp_path):
    path = tmp_path / "out" / "manifest.jsonl"
    m = Manifest(str(path))
    m.touch(m.add("/img/a.png"), status=PENDING_SUBMIT, state="d/r/abc/1", attempts=1)
    m.commit()
    assert not path.exists()
    again = Manifest.load(str(path))
    record = again.get("/img/a.png")
    assert (record.status, record.state, record.attempts) == (PENDING_SUBMIT, "d/r/abc/1", 1)


def test_a_snapshot_folds_the_journal_in_and_removes_it(tmp_path):
    path = tmp_path / "manifest.jsonl"
    m = Manifest(str(path))
    for name in ("a", "b", "c"):
        m.touch(m.add(f"/img/{name}.png"), status=SUBMITTED, task_id=name)
        m.commit()
    journal = tmp_path / "manifest.jsonl.journal"
    assert len(os.listdir(journal)) == 3
    assert m.flush(force=True)
    assert not journal.exists()
    assert [r["task_id"] for r in lines(path)] == ["a", "b", "c"]
    assert [r.task_id for r in read_manifest(str(path))] == ["a", "b", "c"]


def test_the_newest_revision_wins_even_over_a_newer_file(tmp_path):
    # A crash between writing a snapshot and deleting the journal leaves older journal entries behind:
    # they must not roll the snapshot's records back.
    path = tmp_path / "manifest.jsonl"
    write_manifest(str(path), [ManifestRecord(image="/a.png", status="SUCCESS", task_id="1", rev=7)])
    journal = tmp_path / "manifest.jsonl.journal"
    journal.mkdir()
    stale = ManifestRecord(image="/a.png", status=PENDING_SUBMIT, rev=3)
    (journal / "000000000003-x.jsonl").write_text(json.dumps(stale.to_dict()) + "\n")
    newer = ManifestRecord(image="/b.png", status=SUBMITTED, task_id="2", rev=8)
    (journal / "000000000008-y.jsonl").write_text(json.dumps(newer.to_dict()) + "\n")
    m = Manifest.load(str(path))
    assert m.get("/a.png").status == "SUCCESS"
    assert m.get("/b.png").task_id == "2"
    # New revisions continue above every revision seen.
    m.touch(m.get("/a.png"))
    assert m.get("/a.png").rev == 9


def test_a_last_line_cut_short_by_a_crash_is_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "manifest.jsonl"
    good = ManifestRecord(image="/a.png", status="SUCCESS", task_id="1", rev=1)
    cut = json.dumps(ManifestRecord(image="/b.png", status=SUBMITTED, rev=2).to_dict())[:40]
    path.write_text(json.dumps(good.to_dict()) + "\n" + cut)
    with caplog.at_level(logging.WARNING):
        records = read_manifest(str(path))
    assert [r.image for r in records] == ["/a.png"]
    assert "line 2" in caplog.text and "cut short" in caplog.text


def test_a_damaged_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    good = json.dumps(ManifestRecord(image="/a.png", rev=1).to_dict())
    path.write_text(good + "\n{not json\n" + good + "\n")
    with pytest.raises(ApicoreConfigError, match=r"manifest.jsonl line 2 .*repair or delete"):
        read_manifest(str(path))


def test_a_line_that_is_not_a_record_is_an_error(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"no_image": 1}\n')
    with pytest.raises(ApicoreConfigError, match="line 1"):
        read_manifest(str(path))


def test_a_failed_snapshot_write_leaves_the_previous_manifest_whole(tmp_path, monkeypatch):
    path = tmp_path / "manifest.jsonl"
    m = Manifest(str(path))
    m.touch(m.add("/a.png"), status="SUCCESS")
    m.flush(force=True)
    before = path.read_bytes()
    m.touch(m.add("/b.png"), status="SUCCESS")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manifest_module.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        m.flush(force=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]  # no temporary file left behind


def test_snapshots_wait_for_the_flush_interval_unless_forced(tmp_path):
    path = tmp_path / "manifest.jsonl"
    m = Manifest(str(path), flush_interval=3600)
    m.add("/a.png")
    assert not m.flush()
    assert not path.exists()
    assert m.flush(force=True)
    assert not m.flush(force=True)  # nothing changed since


def test_object_storage_without_append_gets_journal_objects_and_whole_snapshots():
    base = f"memory://manifests-{uuid.uuid4().hex}/run"
    path = ObjectStoragePath(f"{base}/manifest.jsonl")
    m = Manifest(path)
    m.touch(m.add("s3-like/a.png"), status=SUBMITTED, task_id="1")
    m.commit()
    m.touch(m.add("s3-like/b.png"), status=PENDING_SUBMIT)
    m.commit()
    loaded = Manifest.load(f"{base}/manifest.jsonl")
    assert {r.image: r.status for r in loaded} == {
        "s3-like/a.png": SUBMITTED,
        "s3-like/b.png": PENDING_SUBMIT,
    }
    loaded.flush(force=True)
    fs = path.__wrapped__.fs
    assert not fs.exists(f"{path.path}.journal") or not fs.ls(f"{path.path}.journal")
    assert [r.image for r in read_manifest(path)] == ["s3-like/a.png", "s3-like/b.png"]


def test_a_missing_manifest_reads_as_empty(tmp_path):
    assert read_manifest(str(tmp_path / "nothing" / "manifest.jsonl")) == []


def test_normalised_keeps_what_two_runs_agree_on():
    record = ManifestRecord(
        image="/a.png", status="SUCCESS", sha256="ab", task_id="9", prompts=["p"], prompt="1 p", state="s"
    )
    data = normalised(record)
    assert not set(VOLATILE_FIELDS) & set(data)
    assert data == {
        "image": "/a.png",
        "status": "SUCCESS",
        "sha256": "ab",
        "prompts": ["p"],
        "prompt": "1 p",
        "error": None,
    }


def test_a_task_and_its_describe_result_give_the_same_record():
    finished = task("SUCCESS", prompt=PROMPT, state="dag/run/abc/1", imageUrl="http://x/1.png")
    from_task = ManifestRecord(image="/a.png")
    apply_task(from_task, finished)
    from_result = ManifestRecord(image="/a.png")
    apply_result(from_result, describe_result(finished))
    assert from_task.to_dict() == from_result.to_dict()
    assert from_task.prompts[:2] == ["a red fox in snow --ar 4:3", "a fox, watercolor --ar 4:3"]


def test_a_failed_task_records_its_fail_reason_and_a_running_one_stays_submitted():
    record = ManifestRecord(image="/a.png")
    apply_task(record, task("FAILURE", failReason="Banned image detected"))
    assert (record.status, record.error, record.prompts) == ("FAILURE", "Banned image detected", [])
    running = ManifestRecord(image="/b.png")
    apply_task(running, task("IN_PROGRESS", progress="40%"))
    assert (running.status, running.task_id) == (SUBMITTED, "1700000000000123")


def _described(image: str, *prompts: str) -> ManifestRecord:
    return ManifestRecord(image=image, status="SUCCESS", prompts=list(prompts))


def test_captions_mirror_the_image_tree_and_never_overwrite_each_other(tmp_path):
    root = tmp_path / "images"
    out = tmp_path / "captions"
    records = [
        _described(f"{root}/sub dir/cat.png", "a cat --ar 1:1", "second"),
        _described(f"{root}/sub dir/cat.jpg", "another cat --ar 3:2"),
        _described(f"{root}/été.PNG", "summer"),
        ManifestRecord(image=f"{root}/failed.png", status="FAILURE", error="x"),
    ]
    counts = write_captions(records, str(out), root=str(root))
    assert counts == {"written": 3, "skipped": 1}
    assert (out / "sub dir" / "cat.txt").read_text() == "another cat --ar 3:2\n"
    assert (out / "sub dir" / "cat.png.txt").read_text() == "a cat --ar 1:1\n"
    assert (out / "été.txt").read_text(encoding="utf-8") == "summer\n"
    assert not (out / "failed.txt").exists()


def test_captions_can_use_another_prompt_and_drop_midjourney_parameters(tmp_path):
    records = [_described("/x/cat.png", "first --ar 1:1", "second prompt --ar 4:3 --v 6")]
    write_captions(records, str(tmp_path), caption_prompt=2, strip_parameters=True)
    assert (tmp_path / "cat.txt").read_text() == "second prompt\n"


@pytest.mark.parametrize("bad", [0, 5, "1", True])
def test_caption_prompt_must_be_one_to_four(tmp_path, bad):
    with pytest.raises(ApicoreConfigError, match="caption_prompt must be a whole number from 1 to 4"):
        write_captions([], str(tmp_path), caption_prompt=bad)


def _bytes_written_per_image(path, count: int) -> float:
    m = Manifest(str(path), flush_interval=1e-9)
    for i in range(count):
        m.add(f"/images/{i:06d}.png")
    m.flush(force=True)
    for step in ("pending_submit", "submitted", "SUCCESS"):
        for i in range(count):
            m.touch(m.get(f"/images/{i:06d}.png"), status=step, prompts=["a prompt of some length"] * 4)
            m.commit()
            m.flush()  # the batch asks at every turn of its loop
    m.flush(force=True)
    return m.bytes_written / count


def test_manifest_bytes_written_per_image_do_not_grow_with_the_number_of_images(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_module, "COMPACT_MIN_BYTES", 4096)
    monkeypatch.setattr(manifest_module.os, "fsync", lambda fd: None)  # bytes counted, not durability
    small = _bytes_written_per_image(tmp_path / "small" / "manifest.jsonl", 50)
    large = _bytes_written_per_image(tmp_path / "large" / "manifest.jsonl", 500)
    # A rewrite of the whole manifest at every turn would make the large one 10x worse per image.
    assert large < small * 1.5, (small, large)


def _memory_per_finished_record(path, freeze: bool, count: int = 2000, repeat: int = 1) -> float:
    import tracemalloc

    prompt = "a detailed watercolor painting of a quiet harbour at dawn, soft light, boats, gulls --ar 4:3"
    prompt = " ".join([prompt] * repeat)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        m = Manifest(str(path), freeze_finished=freeze)
        for i in range(count):
            record = m.add(f"/data/images/image_{i:06d}.png")
            m.touch(
                record,
                status=SUCCESS,
                sha256=f"{i:064x}",
                task_id=str(1796159427100371 + i),
                prompts=[f"{k} {prompt} {i}" for k in range(4)],
                prompt="\n\n".join(f"{k} {prompt} {i}" for k in range(4)),
                state=f"dag/manual__1/{i:016x}/1",
            )
            if i % 100 == 99:
                m.commit()
        m.commit()
        m.close()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    loaded = {r.image: r for r in read_manifest(str(path))}
    assert all(m.get(image).to_dict() == r.to_dict() for image, r in loaded.items())
    assert len(loaded) == count
    return used / count


def test_finished_records_live_in_storage_and_cost_a_few_hundred_bytes_each(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_module.os, "fsync", lambda fd: None)
    full = _memory_per_finished_record(tmp_path / "full" / "manifest.jsonl", freeze=False)
    stored = _memory_per_finished_record(tmp_path / "stored" / "manifest.jsonl", freeze=True)
    heavy = _memory_per_finished_record(tmp_path / "heavy" / "manifest.jsonl", freeze=True, repeat=10)
    # Path, task id, and the packed SHA-256 digest, size, mtime, revision and place in storage: a few
    # hundred bytes (about 355 here; 505 with the SHA-256 and each number as its own object)...
    assert stored < 420, stored
    # ... whatever the record holds: ten times longer prompts cost no more memory.
    assert heavy < stored * 1.15, (stored, heavy)
    assert full > stored * 3, (full, stored)
    m = Manifest.load(str(tmp_path / "stored" / "manifest.jsonl"), freeze_finished=True)
    record = m.get("/data/images/image_000007.png")
    assert isinstance(record, manifest_module.StoredRecord) and record.status == SUCCESS
    assert (record.sha256, record.task_id) == (f"{7:064x}", str(1796159427100371 + 7))
    assert record.prompts[0].startswith("0 a detailed watercolor") and record.is_final
    thawed = m.touch(record, error="note")  # changing it gives a full record again
    assert isinstance(thawed, ManifestRecord) and m.get(record.image) is thawed


def _finished(m: Manifest, image: str, n: int) -> None:
    m.touch(m.add(image), status=SUCCESS, task_id=str(n), prompts=[f"{image} prompt {k}" for k in range(4)])


def test_a_snapshot_is_streamed_from_the_stored_lines_and_reads_back_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_module.os, "fsync", lambda fd: None)
    path = tmp_path / "m" / "manifest.jsonl"
    m = Manifest(str(path), freeze_finished=True)
    for i in range(300):
        m.add(f"/img/{i:04d}.png")
        if i % 50 == 49:
            m.commit()
    m.commit()
    assert m.flush(force=True)  # every record was a line in a journal file
    for i in range(0, 300, 2):
        _finished(m, f"/img/{i:04d}.png", i)
        m.commit()
    m.touch(m.add("/img/in-flight.png"), status=SUBMITTED, task_id="77")  # held whole in memory
    m.commit()
    assert isinstance(m.get("/img/0000.png"), manifest_module.StoredRecord)
    assert isinstance(m.get("/img/in-flight.png"), ManifestRecord)
    assert m.flush(force=True)  # from the old snapshot, the journal files and memory
    assert not (tmp_path / "m" / "manifest.jsonl.journal").exists()
    expected = {r.image: r.to_dict() for r in m}
    reread = {r.image: r.to_dict() for r in read_manifest(str(path))}
    assert reread == expected and len(reread) == 301
    assert reread["/img/0002.png"]["prompts"][3] == "/img/0002.png prompt 3"
    assert reread["/img/0003.png"]["status"] == PENDING
    # The index points into the new snapshot: records read back after the rewrite are right too.
    assert m.get("/img/0298.png").prompts[0] == "/img/0298.png prompt 0"
    assert m.counts() == Counter({SUCCESS: 150, PENDING: 150, SUBMITTED: 1})


def test_a_manifest_changed_under_its_writer_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_module.os, "fsync", lambda fd: None)
    path = tmp_path / "manifest.jsonl"
    m = Manifest(str(path), freeze_finished=True)
    for i in range(5):
        _finished(m, f"/img/{i}.png", i)
    m.commit()
    m.flush(force=True)
    m.close()
    # Another writer replaces the snapshot (its lines move).
    path.write_text("".join(sorted(path.read_text().splitlines(keepends=True), reverse=True)))
    with pytest.raises(ManifestChangedError) as err:
        m.get("/img/0.png").prompts  # noqa: B018 - reading it back is the point
    assert str(path) in str(err.value) and "/img/0.png" in str(err.value)
    assert "One writer per manifest" in str(err.value)


def test_on_s3_the_snapshot_is_a_multipart_upload_readers_see_whole_or_not_at_all(s3_manifest, monkeypatch):  # noqa: F811
    # Parts of 5 MiB (S3's smallest): a snapshot of ~6 MB is uploaded in two parts, never held whole.
    monkeypatch.setattr(manifest_module, "STREAM_BLOCK", 5 * 1024 * 1024)
    m = Manifest(s3_manifest, freeze_finished=True)
    padding = "x" * 4000
    for i in range(1_600):
        m.touch(m.add(f"s3://leases/img/{i:05d}.png"), status=SUCCESS, prompts=[padding], task_id=str(i))
        if i % 100 == 99:
            m.commit()  # journal files of ~400 KB
    m.commit()
    assert m.flush(force=True)
    first = s3_manifest.read_bytes()
    assert len(first) > 6_000_000
    assert {r.image: r.to_dict() for r in read_manifest(s3_manifest)} == {r.image: r.to_dict() for r in m}
    # A rewrite that fails half-way (a stored line moved under the writer) is aborted: the old
    # snapshot stays, whole.
    m.touch(m.add("s3://leases/img/new.png"), status=SUCCESS, task_id="new")
    m.commit()
    victim = m.get("s3://leases/img/01599.png")
    victim._move(victim._file, victim._offset + 1)
    with pytest.raises(ManifestChangedError):
        m.flush(force=True)
    assert s3_manifest.read_bytes() == first
    assert m.get("s3://leases/img/00007.png").prompts == [padding]  # read back by a ranged GET


def test_a_stored_record_keeps_fields_the_packed_form_cannot_hold(tmp_path):
    m = Manifest(str(tmp_path / "m.jsonl"), freeze_finished=True)
    odd = m.add("/img/odd.png")
    m.touch(odd, status=SUCCESS, sha256="not-a-digest", size=None, mtime=None, attempts=70_000)
    plain = m.add("/img/plain.png")
    m.touch(plain, status=PENDING, sha256="ab" * 32, size=12, mtime=1.5, attempts=2)
    m.commit()
    odd, plain = m.get("/img/odd.png"), m.get("/img/plain.png")
    assert isinstance(odd, manifest_module.StoredRecord) and isinstance(plain, manifest_module.StoredRecord)
    assert (odd.status, odd.sha256, odd.size, odd.mtime, odd.attempts) == (
        SUCCESS,
        "not-a-digest",
        None,
        None,
        70_000,
    )
    assert (plain.status, plain.sha256, plain.size, plain.mtime, plain.attempts) == (
        PENDING,
        "ab" * 32,
        12,
        1.5,
        2,
    )
    assert plain.rev == plain.thaw().rev and odd.thaw().attempts == 70_000


def _journal_files(path) -> list[str]:
    journal = path.parent / (path.name + ".journal")
    return sorted(n for n in os.listdir(journal) if not n.startswith(".")) if journal.exists() else []


def test_journal_files_holding_only_superseded_lines_are_deleted_before_any_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_module, "DEAD_BATCH", 1)
    path = tmp_path / "m.jsonl"
    m = Manifest(str(path), freeze_finished=True)
    for i in range(20):
        image = f"/img/{i:02d}.png"
        m.add(image)
        m.commit()
        m.touch(m.hold(image), status=PENDING_SUBMIT, attempts=1)
        m.commit()
        m.touch(m.hold(image), status=SUBMITTED, task_id=str(i))
        m.commit()
    # Each image's last line is in its own "submitted" file: 40 files hold only superseded lines.
    assert len(_journal_files(path)) == 20
    for i in range(20):
        m.touch(m.hold(f"/img/{i:02d}.png"), status=SUCCESS, prompts=[f"p{i}"])
    m.commit()
    assert len(_journal_files(path)) == 1  # the one holding every newest line
    records = {r.image: r for r in read_manifest(str(path))}
    assert len(records) == 20 and all(r.status == SUCCESS and r.task_id for r in records.values())

    # A manifest taken over from a checkpoint deletes the files of the records it carried, too.
    m2 = Manifest(str(tmp_path / "n.jsonl"), freeze_finished=True)
    for i in range(5):
        m2.touch(m2.add(f"/img/{i}.png"), status=SUBMITTED, task_id=str(i))
        m2.commit()
    state = m2.checkpoint_state([])
    resumed = Manifest.resume(str(tmp_path / "n.jsonl"), state)
    for image in list(state["lines"]):
        resumed.touch(resumed.hold(image), status=SUCCESS)
    resumed.commit()
    assert len(_journal_files(tmp_path / "n.jsonl")) == 1
    assert {r.status for r in read_manifest(str(tmp_path / "n.jsonl"))} == {SUCCESS}


def test_journal_files_are_written_and_read_back_without_a_path_object_each(tmp_path, monkeypatch):
    # pathlib interns every name it parses, for good: a path object per journal file (two an image)
    # would be memory a 100,000-image batch never gets back.
    from airflow.sdk import ObjectStoragePath

    m = Manifest(str(tmp_path / "m.jsonl"), freeze_finished=True)

    def no_path_per_file(self, other):
        raise AssertionError(f"a path object was made for {other!r}")

    monkeypatch.setattr(ObjectStoragePath, "__truediv__", no_path_per_file)
    for i in range(5):
        m.touch(m.add(f"/img/{i}.png"), status=SUCCESS, prompts=[f"p{i}"])
        m.commit()
    assert m.get("/img/3.png").prompts == ["p3"]  # read back from its journal file
    assert m.flush(force=True)
    assert m.get("/img/4.png").prompts == ["p4"]  # and from the snapshot
    monkeypatch.undo()
    assert len(read_manifest(str(tmp_path / "m.jsonl"))) == 5
