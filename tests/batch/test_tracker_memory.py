"""A long batch's tracker keeps only the ids in flight (``TaskTracker._all`` does not grow per id)."""

from __future__ import annotations

from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.tracking import TaskTracker


def _task(task_id: str, status: str) -> MJTask:
    return MJTask.from_json({"id": task_id, "status": status, "progress": "100%"})


def test_ids_added_and_finished_are_not_kept():
    tracker = TaskTracker([])
    for batch in range(50):
        ids = [f"{batch}-{i}" for i in range(100)]
        tracker.add(ids)
        tracker.update([_task(i, "SUCCESS") for i in ids])
        tracker.forget(ids)
    assert tracker.finished_count == 5000
    assert tracker.pending == [] and tracker.latest == {}
    assert len(tracker._all) == 0  # what the event needs (the ids given at construction): none here


def test_a_triggers_event_still_reports_every_id_it_was_given():
    tracker = TaskTracker(["a", "b", "c"])
    tracker.update([_task("a", "SUCCESS"), _task("b", "IN_PROGRESS"), _task("c", "IN_PROGRESS")])
    tracker.discard(["c"])
    assert tracker.finished_count == 2
    event = tracker.event()
    assert event["task_ids"] == ["a", "b", "c"] and event["pending"] == ["b"]
    tracker.add(["d"])
    assert tracker.event()["task_ids"] == ["a", "b", "c", "d"]
