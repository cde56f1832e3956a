"""
Sharded batches without the distributed stack: the shard plan is stable and complete, the account's
concurrency is shared, the parts merge into one manifest, and the example DAG runs end to end under
``airflow dags test`` (mapped MJBatchDescribeOperator over ``expand_kwargs``) against the emulator.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airflow_provider_apicore.exceptions import ApicoreConfigError
from airflow_provider_apicore.manifest import ManifestRecord, read_manifest, write_manifest
from airflow_provider_apicore.shards import (
    manifest_parts,
    merge_shards,
    part_path,
    plan_shards,
    read_sharded_manifest,
    shard_of,
    shard_share,
)
from tests.conftest import Emulator
from tests.helpers.airflow_run import airflow_env, run_dag_test
from tests.helpers.imagetree import make_image_tree


def _assignment(specs: list[dict]) -> dict[str, str]:
    return {path: spec["manifest_path"] for spec in specs for path in spec["source"]}


#: The one non-image of make_image_tree that the quick listing (by name) keeps: its content is text.
FAKE_PNG = "sub dir/fake.PNG"


def test_every_image_lands_in_exactly_one_shard_and_the_plan_is_reproducible(tmp_path: Path) -> None:
    tree = make_image_tree(tmp_path / "images", count=60, duplicates=0)
    specs = plan_shards(tree.root, shards=4, manifest_prefix=tmp_path / "m", account_limit=12)
    listed = [p for spec in specs for p in spec["source"]]
    expected = sorted(str(p) for p in tree.images)
    # By name and size: hidden, empty, .txt and .bin files skipped; a text file named .PNG kept.
    assert sorted(listed) == sorted([*expected, str(tree.root / FAKE_PNG)])
    assert len(listed) == len(set(listed))
    by_content = plan_shards(tree.root, shards=4, manifest_prefix=tmp_path / "m", check_content=True)
    assert sorted(p for spec in by_content for p in spec["source"]) == expected
    assert {spec["max_in_flight"] for spec in specs} == {3}
    assert [spec["manifest_path"] for spec in specs] == [part_path(tmp_path / "m", k) for k in range(4)]
    assert min(len(spec["source"]) for spec in specs) >= 5, "a hash spreads 60 images over 4 shards"
    again = plan_shards(str(tree.root), shards=4, manifest_prefix=str(tmp_path / "m"), account_limit=12)
    assert again == specs


def test_a_growing_folder_keeps_every_old_image_in_its_shard(tmp_path: Path) -> None:
    tree = make_image_tree(tmp_path / "images", count=40, duplicates=0)
    before = _assignment(plan_shards(tree.root, shards=3, manifest_prefix=tmp_path / "m"))
    # New images, also in new subdirectories, and some old ones moved away: nothing else moves.
    extra = make_image_tree(tmp_path / "more", count=30, duplicates=0)
    shutil.copytree(extra.root, tree.root / "added later", dirs_exist_ok=True)
    after = _assignment(plan_shards(tree.root, shards=3, manifest_prefix=tmp_path / "m"))
    assert len(after) == len(before) + 31  # 30 images and one more fake.PNG
    assert {path: after[path] for path in before} == before


def test_the_shard_depends_on_the_relative_path_only(tmp_path: Path) -> None:
    first = make_image_tree(tmp_path / "a" / "images", count=20, duplicates=0)
    shutil.copytree(first.root, tmp_path / "b" / "elsewhere")
    one = plan_shards(first.root, shards=5, manifest_prefix="m", keep_empty=True)
    two = plan_shards(tmp_path / "b" / "elsewhere", shards=5, manifest_prefix="m", keep_empty=True)
    rel = [sorted(Path(p).relative_to(first.root).as_posix() for p in spec["source"]) for spec in one]
    rel2 = [
        sorted(Path(p).relative_to(tmp_path / "b" / "elsewhere").as_posix() for p in spec["source"])
        for spec in two
    ]
    assert rel == rel2
    assert shard_of("sub dir/img_001.png", 7) == shard_of("sub dir/img_001.png", 7)


def test_the_account_is_shared_and_too_many_shards_are_refused() -> None:
    assert shard_share(40, 4) == 10
    assert shard_share(10, 3) == 3  # 9 jobs at most: never above the account
    with pytest.raises(ApicoreConfigError, match=r"account_limit \(3\) is smaller than shards \(4\)"):
        shard_share(3, 4)
    with pytest.raises(ApicoreConfigError, match="shards must be a whole number"):
        shard_of("x.png", 0)


def test_parts_merge_into_one_manifest_and_a_changed_shard_count_is_caught(tmp_path: Path) -> None:
    prefix = tmp_path / "manifest"
    write_manifest(part_path(prefix, 0), [ManifestRecord(image="a.png", status="SUCCESS")])
    write_manifest(part_path(prefix, 2), [ManifestRecord(image="b.png", status="SUCCESS")])
    (prefix / "combined.jsonl").write_text("")  # not a part
    assert [p.name for p in manifest_parts(prefix)] == ["part-0000.jsonl", "part-0002.jsonl"]
    assert sorted(r.image for r in read_sharded_manifest(prefix)) == ["a.png", "b.png"]
    assert merge_shards(prefix, prefix / "combined.jsonl") == {"parts": 2, "records": 2}
    assert sorted(r.image for r in read_manifest(prefix / "combined.jsonl")) == ["a.png", "b.png"]
    write_manifest(part_path(prefix, 1), [ManifestRecord(image="a.png", status="SUCCESS")])
    with pytest.raises(ApicoreConfigError, match=r"a\.png is in two manifest parts"):
        merge_shards(prefix, prefix / "combined.jsonl")
    assert manifest_parts(tmp_path / "missing") == []


@pytest.mark.e2e
def test_the_sharded_dag_describes_a_directory_with_mapped_batches(
    tmp_path: Path, airflow_home: Path, emulator: Emulator
) -> None:
    """``airflow dags test`` of dags/apicore_sharded_batch.py: 3 shards, one account of 6 jobs."""
    emulator.configure(job_seconds=0.3, concurrency=6, queue_size=100)
    tree = make_image_tree(tmp_path / "images", count=45, duplicates=0)
    conf = {
        "image_dir": str(tree.root),
        "manifest_prefix": str(tmp_path / "manifest"),
        "output_dir": str(tmp_path / "captions"),
        "shards": 3,
        "account_limit": 6,
        "poll_interval": 0.3,
        "deferrable": False,
    }
    run = run_dag_test(airflow_env(airflow_home, emulator.conn_env()), "apicore_sharded_batch", conf)
    assert run.returncode == 0, run.output[-4000:]
    assert run.state == "success"
    assert run.states("describe_shard") == ["success"] * 3
    records = {r.image: r for r in read_sharded_manifest(tmp_path / "manifest")}
    fake = str(tree.root / FAKE_PNG)
    assert sorted(records) == sorted([*(str(p) for p in tree.images), fake])
    assert records.pop(fake).status == "rejected", "the shard checked the content and refused it"
    assert {r.status for r in records.values()} == {"SUCCESS"}
    assert len(read_manifest(tmp_path / "manifest" / "combined.jsonl")) == 46
    assert run.xcom("merge_manifest")["captions"] == 45
    stats = emulator.stats()
    assert stats["submissions_accepted"] == 45 and stats["duplicate_jobs"] == 0
    assert stats["max_active"] <= 6, "three shards of max_in_flight 2 never exceed the account"
