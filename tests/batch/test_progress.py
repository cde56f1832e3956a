"""The progress line and the status counts cost nothing per image: no pass over the manifest per turn."""

from __future__ import annotations

import logging

from airflow_provider_apicore.batch.loop import BatchLoop
from airflow_provider_apicore.manifest import PENDING, SUCCESS, UNKNOWN_FATE, Manifest


def test_progress_and_counts_do_not_walk_the_manifest(tmp_path, monkeypatch):
    manifest = Manifest(str(tmp_path / "manifest.jsonl"))
    for i in range(300):
        record = manifest.add(f"/img/{i:04d}.png")
        if i < 100:
            manifest.touch(record, status=SUCCESS, accepted_at=1)
        elif i < 110:
            manifest.touch(record, status=UNKNOWN_FATE)
    loop = BatchLoop(
        manifest,
        hook=None,
        tag="d/r",
        log=logging.getLogger("test"),
        max_in_flight=4,
        poll_interval=1.0,
        timeout=None,
        max_image_bytes=1024,
    )
    walks = []
    real_iter = Manifest.__iter__
    monkeypatch.setattr(Manifest, "__iter__", lambda self: walks.append(1) or real_iter(self))
    state = loop.progress()
    assert (state["total"], state["done"], state["failed"]) == (300, 110, 10)
    assert manifest.counts() == {PENDING: 190, SUCCESS: 100, UNKNOWN_FATE: 10}
    assert walks == []


def test_counts_follow_records_changed_before_they_are_touched(tmp_path):
    manifest = Manifest(str(tmp_path / "manifest.jsonl"))
    record = manifest.add("/a.png")
    record.status = SUCCESS  # as apply_task does, then touches
    manifest.touch(record)
    assert manifest.counts() == {SUCCESS: 1}
    manifest.commit()
    assert Manifest.load(str(tmp_path / "manifest.jsonl")).counts() == {SUCCESS: 1}
