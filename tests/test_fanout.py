"""Fan-out helpers: the max_map_length guard and results written in the batch operator's format."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from airflow_provider_apicore.exceptions import ApicoreConfigError
from airflow_provider_apicore.fanout import fanout_records, images_for_mapping, write_fanout_results
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.images import load_image, to_data_url
from airflow_provider_apicore.manifest import REJECTED, UNKNOWN_FATE, ManifestRecord, apply_task
from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.results import describe_result
from tests.helpers.imagegen import make_gif, make_jpeg, make_png

PROMPT = (
    "1\ufe0f\u20e3 a red square --ar 1:1\n\n2\ufe0f\u20e3 b --ar 1:1\n\n3\ufe0f\u20e3 c\n\n4\ufe0f\u20e3 d"
)


def _images(tmp_path, count: int) -> list[str]:
    paths = []
    for i in range(count):
        path = tmp_path / f"Image {i:02d}.PNG"
        path.write_bytes(make_png(4 + i, 4, (10 * i, 20, 30)))
        paths.append(str(path))
    return paths


def test_listing_more_images_than_max_map_length_points_to_the_batch_operator(tmp_path, monkeypatch):
    _images(tmp_path, 4)
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    with pytest.raises(ApicoreConfigError) as caught:
        images_for_mapping(str(tmp_path))
    message = str(caught.value)
    assert "4 images" in message and "max_map_length (3)" in message
    assert "MJBatchDescribeOperator" in message and "AIRFLOW__CORE__MAX_MAP_LENGTH" in message


def test_listing_within_max_map_length_returns_sorted_path_strings(tmp_path, monkeypatch):
    images = _images(tmp_path, 3)
    (tmp_path / "notes.txt").write_text("not an image")
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    assert images_for_mapping(str(tmp_path)) == sorted(images)


def _task(task_id: str = "1700000000000001", state: str = "dag/run") -> MJTask:
    return MJTask.from_json(
        {
            "id": task_id,
            "status": "SUCCESS",
            "prompt": PROMPT,
            "state": state,
            "submitTime": 1,
            "finishTime": 2,
        }
    )


def _success(task_id: str = "1700000000000001") -> dict:
    return describe_result(_task(task_id))


def test_a_mapped_result_becomes_the_record_the_batch_operator_writes(tmp_path):
    [image] = _images(tmp_path, 1)
    finished = _task()
    [record] = fanout_records([image], [describe_result(finished)])
    batch = ManifestRecord(
        image=image, sha256=hashlib.sha256(Path(image).read_bytes()).hexdigest(), attempts=1
    )
    apply_task(batch, finished)
    assert record.status == "SUCCESS" and record.prompts[0] == "a red square --ar 1:1"
    volatile = {"rev", "updated_at"}
    assert {k: v for k, v in record.to_dict().items() if k not in volatile} == {
        k: v for k, v in batch.to_dict().items() if k not in volatile
    }


def test_a_mapped_task_that_never_got_a_task_id_is_rejected_naming_its_map_index(tmp_path):
    images = _images(tmp_path, 2)
    records = fanout_records(images, [_success(), None], [None, None])
    assert records[1].status == REJECTED
    assert "map index 1" in records[1].error


def test_a_failed_mapped_task_is_looked_up_so_its_record_says_why(tmp_path, apicore_conn):
    apicore_conn.configure(job_seconds=0.1, faults={"task_failure": 1.0})
    images = _images(tmp_path, 2)
    hook = ApicoreHook()
    data = load_image(images[1])
    task_id = hook.submit_describe({"base64": to_data_url(data.data, data.mime)}).task_id
    deadline = time.monotonic() + 10
    while hook.fetch_task(task_id).status.value != "FAILURE":
        assert time.monotonic() < deadline, "the emulator never failed the task"
        time.sleep(0.1)
    records = fanout_records(images, [_success(), None], [None, task_id])
    assert records[1].status == "FAILURE"
    assert records[1].task_id == task_id
    assert records[1].error  # the emulator's failReason
    assert records[1].error == hook.fetch_task(task_id).fail_reason


def test_a_mapped_task_whose_submit_answer_was_lost_is_unknown_fate_with_its_state_tag(tmp_path):
    images = _images(tmp_path, 3)
    fate = {"state": "dag/run/describe[1]", "cause": "HTTP 502: Bad Gateway"}
    records = fanout_records(
        images, [_success(), None, None], [None, None, None], unknown_fates=[None, fate, None]
    )
    assert (records[1].status, records[1].state, records[1].error) == (
        UNKNOWN_FATE,
        fate["state"],
        fate["cause"],
    )
    assert records[1].task_id is None and records[1].attempts == 1
    assert records[2].status == REJECTED, "no unknown_fate XCom: it never reached APICore"
    assert records[0].status == "SUCCESS"


def test_unknown_fates_that_do_not_align_with_the_images_are_refused(tmp_path):
    with pytest.raises(Exception, match="unknown_fates"):
        fanout_records(_images(tmp_path, 2), [_success(), None], unknown_fates=[None])


def test_results_that_do_not_align_with_the_images_are_refused(tmp_path):
    with pytest.raises(Exception, match="2 images but 1 results"):
        fanout_records(_images(tmp_path, 2), [_success()])


def test_write_fanout_results_writes_the_manifest_and_one_caption_per_described_image(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    ok = src / "sub" / "Cat photo.PNG"
    ok.write_bytes(make_png(5, 5))
    failed = src / "dog.gif"
    failed.write_bytes(make_gif())
    out = tmp_path / "out"
    summary = write_fanout_results(
        [str(ok), str(failed)],
        [_success(), None],
        str(out),
        caption_prompt=1,
        task_ids=[None, None],
        root=str(src),
    )
    assert summary == {
        "manifest": str(out / "manifest.jsonl"),
        "images": 2,
        "succeeded": 1,
        "failed": 1,
        "captions": 1,
    }
    assert json.loads((out / "_stats.json").read_text())["failed"] == 1
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    # The keys `make demo` prints from.
    assert {"image", "task_id", "status", "prompts"} <= set(entries[0])
    assert [e["status"] for e in entries] == ["SUCCESS", REJECTED]
    assert (out / "sub" / "Cat photo.txt").read_text() == "a red square --ar 1:1\n"
    assert not (out / "dog.txt").exists()


def test_write_fanout_results_writes_the_training_set_outputs_asked_for(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    src = tmp_path / "src"
    src.mkdir()
    png, jpg, failed = src / "cat.png", src / "cat.jpg", src / "dog.gif"
    png.write_bytes(make_png(5, 5))
    jpg.write_bytes(make_jpeg("fan-out"))
    failed.write_bytes(make_gif())
    out = tmp_path / "out"
    summary = write_fanout_results(
        [str(png), str(jpg), str(failed)],
        [_success("1700000000000001"), _success("1700000000000002"), None],
        str(out),
        task_ids=[None, None, None],
        root=str(src),
        caption_extension=".caption",
        captions_next_to_images=True,
        imagefolder_metadata=True,
        parquet_path=str(out / "captions.parquet"),
        strip_parameters=True,
    )
    assert summary["captions"] == 2
    # cat.png and cat.jpg share a stem: both captions keep the full name, neither overwrites the other.
    assert (src / "cat.png.caption").read_text() == "a red square\n"
    assert (src / "cat.jpg.caption").read_text() == "a red square\n"
    assert not (src / "cat.caption").exists() and not list(out.glob("*.caption"))
    lines = [json.loads(line) for line in (src / "metadata.jsonl").read_text().splitlines()]
    assert sorted(line["file_name"] for line in lines) == ["cat.jpg", "cat.png"]
    assert summary["imagefolder_metadata"] == str(src / "metadata.jsonl")
    table = pq.read_table(out / "captions.parquet").to_pylist()
    assert [row["status"] for row in table] == ["SUCCESS", "SUCCESS", REJECTED]
    assert table[0]["task_id"] == "1700000000000001" and table[0]["sha256"]
    stats = json.loads((out / "_stats.json").read_text())
    assert (stats["succeeded"], stats["failed"], stats["manifest"]) == (2, 1, str(out / "manifest.jsonl"))
