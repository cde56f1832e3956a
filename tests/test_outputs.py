"""Training-set outputs: ImageFolder metadata read by `datasets`, caption sidecars, Parquet, _stats.json."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from airflow_provider_apicore.exceptions import ApicoreConfigError
from airflow_provider_apicore.manifest import ManifestRecord
from airflow_provider_apicore.outputs import (
    CAPTION_INDEX_NAME,
    caption_file_name,
    compute_stats,
    outcome_counts,
    write_captions,
    write_imagefolder_metadata,
    write_parquet,
    write_stats,
    write_training_outputs,
)
from tests.helpers.imagegen import make_jpeg, make_png


def _record(image: Path | str, status: str = "SUCCESS", tag: str | None = None, **fields) -> ManifestRecord:
    image = str(image)
    tag = tag or Path(image).name
    prompts = [f"{tag} prompt {n} --ar 1:1" for n in range(1, 5)] if status == "SUCCESS" else []
    sha = hashlib.sha256(Path(image).read_bytes()).hexdigest() if Path(image).exists() else None
    values = {
        "sha256": sha,
        "task_id": f"17000000000{abs(hash(image)) % 100000:05d}",
        "prompts": prompts,
        "submit_time": 1_700_000_000_000,
        "start_time": 1_700_000_001_000,
        "finish_time": 1_700_000_011_000 if status in ("SUCCESS", "FAILURE") else None,
        "attempts": 1,
    }
    values.update(fields)
    return ManifestRecord(image=image, status=status, **values)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A source folder with a sub folder, a cat.png + cat.jpg pair, and an image that failed."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    files = {
        "red": root / "red.png",
        "cat_png": root / "cat.png",
        "cat_jpg": root / "cat.jpg",
        "deep": root / "sub" / "deep photo.png",
        "failed": root / "failed.png",
    }
    files["red"].write_bytes(make_png(6, 6, (220, 20, 20)))
    files["cat_png"].write_bytes(make_png(5, 5, (20, 220, 20)))
    files["cat_jpg"].write_bytes(make_jpeg("cat"))
    files["deep"].write_bytes(make_png(4, 7, (20, 20, 220)))
    files["failed"].write_bytes(make_png(3, 3))
    return {"root": root, **files}


def _records(tree: dict[str, Path]) -> list[ManifestRecord]:
    return [
        _record(tree["red"]),
        _record(tree["cat_png"]),
        _record(tree["cat_jpg"]),
        _record(tree["deep"]),
        _record(tree["failed"], status="FAILURE", error="Banned image detected"),
    ]


# ---------------------------------------------------------------------------------- imagefolder
def test_imagefolder_metadata_is_loaded_by_datasets_with_the_captions(tree, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    root = tree["root"]
    # Captions sidecars in the same folder, as a user asking for both would have: ImageFolder ignores them.
    write_captions(_records(tree), root)
    result = write_imagefolder_metadata(_records(tree), root, caption_prompt=2, strip_parameters=True)
    assert result == {"path": str(root / "metadata.jsonl"), "rows": 4, "skipped": 1, "outside_root": 0}

    dataset = datasets.load_dataset(
        "imagefolder", data_dir=str(root), split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    assert dataset.num_rows == 4
    rows = {row["sha256"]: row for row in dataset}
    for key in ("red", "cat_png", "cat_jpg", "deep"):
        path = tree[key]
        row = rows[hashlib.sha256(path.read_bytes()).hexdigest()]
        assert row["text"] == f"{path.name} prompt 2"  # the chosen prompt, parameters stripped
        assert row["prompts"] == [f"{path.name} prompt {n} --ar 1:1" for n in range(1, 5)]
        with path.open("rb") as fh:
            from PIL import Image

            expected = Image.open(fh).size
        assert row["image"].size == expected  # the image itself was read, not only the metadata


def test_imagefolder_file_names_are_relative_to_the_root_and_failed_or_outside_images_are_left_out(
    tree, tmp_path
):
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(make_png())
    records = [*_records(tree), _record(outside)]
    result = write_imagefolder_metadata(records, f"file://{tree['root']}")
    lines = [json.loads(line) for line in (tree["root"] / "metadata.jsonl").read_text().splitlines()]
    assert sorted(line["file_name"] for line in lines) == [
        "cat.jpg",
        "cat.png",
        "red.png",
        "sub/deep photo.png",
    ]
    assert (result["rows"], result["skipped"], result["outside_root"]) == (4, 1, 1)
    assert all(line["text"].endswith("--ar 1:1") for line in lines)  # parameters kept unless asked


# ---------------------------------------------------------------------------------- captions
def test_images_sharing_a_stem_get_full_name_captions_that_never_overwrite_each_other(tree):
    counts = write_captions(_records(tree), tree["root"])
    root = tree["root"]
    assert (root / "cat.png.txt").read_text() == "cat.png prompt 1 --ar 1:1\n"
    assert (root / "cat.jpg.txt").read_text() == "cat.jpg prompt 1 --ar 1:1\n"
    assert not (root / "cat.txt").exists()
    assert (root / "red.txt").read_text() == "red.png prompt 1 --ar 1:1\n"
    assert (root / "sub" / "deep photo.txt").exists()
    assert not (root / "failed.txt").exists()
    assert counts == {"written": 4, "skipped": 1, "full_names": 2, "removed": 0}


def test_a_later_sibling_with_the_same_stem_renames_both_captions_and_removes_the_stale_one(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    png = root / "cat.png"
    png.write_bytes(make_png())
    write_captions([_record(png)], root)
    assert (root / "cat.txt").read_text() == "cat.png prompt 1 --ar 1:1\n"

    jpg = root / "cat.jpg"
    jpg.write_bytes(make_jpeg("later"))
    counts = write_captions([_record(png), _record(jpg)], root)
    assert (root / "cat.png.txt").read_text() == "cat.png prompt 1 --ar 1:1\n"
    assert (root / "cat.jpg.txt").read_text() == "cat.jpg prompt 1 --ar 1:1\n"
    assert not (root / "cat.txt").exists(), "the caption written under the old name is stale"
    assert counts["removed"] == 1


def test_captions_of_images_that_failed_or_disappeared_are_removed_but_not_files_the_user_wrote(tree):
    root = tree["root"]
    write_captions(_records(tree), root, ".caption")
    assert (root / "red.caption").exists()
    (root / "notes.caption").write_text("mine")
    records = [r for r in _records(tree) if not r.image.endswith("red.png")]
    records[0] = _record(tree["cat_png"], status="FAILURE", error="x")
    counts = write_captions(records, root, ".caption")
    assert not (root / "red.caption").exists()  # image no longer in the records
    assert not (root / "cat.png.caption").exists()  # image failed this time
    assert (root / "notes.caption").read_text() == "mine"
    assert counts["removed"] == 2
    index = json.loads((root / CAPTION_INDEX_NAME).read_text())
    assert index["extension"] == ".caption"
    assert sorted(Path(f).name for f in index["files"]) == ["cat.jpg.caption", "deep photo.caption"]


def test_captions_mirrored_under_an_output_directory_keep_the_tree(tree, tmp_path):
    out = tmp_path / "captions"
    write_captions(_records(tree), tree["root"], output_dir=out, strip_parameters=True)
    assert (out / "sub" / "deep photo.txt").read_text() == "deep photo.png prompt 1\n"
    assert (out / "cat.png.txt").exists() and (out / "cat.jpg.txt").exists()
    assert not list(tree["root"].glob("*.txt"))


def test_a_stem_repeated_in_the_manifest_but_not_on_disk_does_not_overwrite(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    png = root / "dog.png"
    png.write_bytes(make_png())
    gone = _record(root / "dog.jpg")  # the image was deleted since it was described
    write_captions([_record(png), gone], root)
    assert (root / "dog.txt").read_text() == "dog.png prompt 1 --ar 1:1\n"
    assert (root / "dog.jpg.txt").read_text() == "dog.jpg prompt 1 --ar 1:1\n"


@pytest.mark.parametrize("bad", ["txt", ".png", ".json", "../x", ".a/b", "", None])
def test_a_bad_caption_extension_is_refused_naming_the_rule(tree, bad):
    with pytest.raises(ApicoreConfigError, match="caption_extension"):
        write_captions(_records(tree), tree["root"], bad)


def test_caption_file_names():
    assert caption_file_name("cat.png", ".txt", False) == "cat.txt"
    assert caption_file_name("cat.png", ".txt", True) == "cat.png.txt"
    assert caption_file_name("README", ".caption", False) == "README.caption"
    assert caption_file_name(".hidden", ".txt", False) == ".hidden.txt"


def test_captions_on_an_object_store(tree):
    records = _records(tree)
    target = "memory://captions-bucket/run"
    counts = write_captions(records, tree["root"], output_dir=target)
    import fsspec

    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/captions-bucket/run/red.txt") == b"red.png prompt 1 --ar 1:1\n"
    assert fs.exists("/captions-bucket/run/cat.png.txt") and counts["written"] == 4
    counts = write_captions(records[1:], tree["root"], output_dir=target)
    assert not fs.exists("/captions-bucket/run/red.txt") and counts["removed"] == 1


# ---------------------------------------------------------------------------------- parquet
def test_parquet_has_one_row_per_record_with_provenance_in_row_groups(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    records = [
        ManifestRecord(
            image=f"/data/img/{i:05d}.png",
            status="SUCCESS" if i % 10 else "FAILURE",
            sha256=f"{i:064x}",
            task_id=str(1_700_000_000_000 + i),
            prompts=[f"p{i} {n}" for n in range(1, 5)] if i % 10 else [],
            error=None if i % 10 else "Banned image detected",
            attempts=1,
            submit_time=1_700_000_000_000,
            start_time=1_700_000_000_500,
            finish_time=1_700_000_002_500,
        )
        for i in range(1500)
    ]
    result = write_parquet(
        iter(records), tmp_path / "set.parquet", source_root="/data", bot_type="MID_JOURNEY"
    )
    assert result["rows"] == 1500
    parquet = pq.ParquetFile(tmp_path / "set.parquet")
    assert parquet.metadata.num_row_groups >= 2  # written in batches, not all at once
    table = parquet.read()
    assert table.num_rows == 1500
    row = table.slice(1, 1).to_pylist()[0]
    assert row["file_name"] == "img/00001.png" and row["caption"] == "p1 1"
    assert row["sha256"] == f"{1:064x}" and row["task_id"] == "1700000000001"
    assert row["bot_type"] == "MID_JOURNEY" and row["status"] == "SUCCESS"
    assert row["duration_seconds"] == 2.0 and row["finish_time"].year == 2023
    failed = table.slice(0, 1).to_pylist()[0]
    assert failed["status"] == "FAILURE" and failed["error"] == "Banned image detected"
    assert failed["caption"] is None and failed["prompts"] == []


def test_parquet_without_pyarrow_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ApicoreConfigError, match=r"airflow-provider-apicore\[parquet\]"):
        write_parquet([], tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


# ---------------------------------------------------------------------------------- stats
def test_stats_count_every_outcome_and_the_job_durations(tree, tmp_path):
    records = [
        *_records(tree),
        ManifestRecord(image="/x/a.png", status="unknown_fate", error="answer lost"),
        ManifestRecord(image="/x/b.png", status="submitted", task_id="1"),
        ManifestRecord(image="/x/c.png", status="pending"),
        ManifestRecord(image="/x/d.png", status="pending_submit"),
        ManifestRecord(image="/x/e.png", status="timeout", error="still IN_PROGRESS"),
    ]
    assert outcome_counts(records) == {
        "total": 10,
        "succeeded": 4,
        "failed": 3,
        "unknown_fate": 1,
        "pending": 3,
    }
    stats = write_stats(iter(records), tmp_path / "out", manifest="/x/manifest.jsonl", spend=None)
    on_disk = json.loads((tmp_path / "out" / "_stats.json").read_text())
    assert stats["path"] == str(tmp_path / "out" / "_stats.json")
    assert on_disk["succeeded"] == 4 and on_disk["failed"] == 3 and on_disk["pending"] == 3
    assert on_disk["by_status"]["FAILURE"] == 1 and on_disk["by_status"]["timeout"] == 1
    assert on_disk["duration_seconds"]["median"] == 10.0
    assert {"error": "Banned image detected", "count": 1} in on_disk["top_errors"]
    assert on_disk["manifest"] == "/x/manifest.jsonl" and on_disk["schema_version"] == 1
    assert compute_stats([])["duration_seconds"] is None


# ---------------------------------------------------------------------------------- all at once
def test_write_training_outputs_writes_everything_asked_for(tree, tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "out"
    summary = write_training_outputs(
        _records(tree),
        tree["root"],
        output_dir=out,
        caption_extension=".caption",
        captions_next_to_images=True,
        imagefolder_metadata=True,
        parquet_path=out / "set.parquet",
        stats_path=out,
        bot_type="NIJI_JOURNEY",
        manifest_path=out / "manifest.jsonl",
    )
    assert summary["counts"] == {"total": 5, "succeeded": 4, "failed": 1, "unknown_fate": 0, "pending": 0}
    assert summary["captions"]["written"] == 4 and (tree["root"] / "red.caption").exists()
    assert summary["imagefolder_metadata"]["rows"] == 4
    assert summary["parquet"]["rows"] == 5 and (out / "set.parquet").exists()
    assert json.loads((out / "_stats.json").read_text())["bot_type"] == "NIJI_JOURNEY"


def test_write_training_outputs_refuses_imagefolder_without_a_root():
    with pytest.raises(ApicoreConfigError, match="source_root"):
        write_training_outputs([], None, imagefolder_metadata=True)
