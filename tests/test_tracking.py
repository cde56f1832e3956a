"""TaskTracker: the bookkeeping every waiting path shares (no I/O, fake clock)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.results import describe_result
from airflow_provider_apicore.tracking import EVENT_DONE, EVENT_TIMEOUT, TaskTracker


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def task(task_id: str, status: str, progress: str = "0%", **extra) -> MJTask:
    return MJTask.from_json({"id": task_id, "status": status, "progress": progress, **extra})


def test_ids_stay_pending_until_terminal_and_in_submission_order():
    tracker = TaskTracker(["3", "1", "2"])
    assert tracker.pending == ["3", "1", "2"]
    finished = tracker.update(
        [task("1", "IN_PROGRESS", "40%"), task("3", "SUBMITTED"), task("2", "NOT_START")]
    )
    assert finished == []
    assert tracker.pending == ["3", "1", "2"]
    assert not tracker.done
    assert tracker.latest["1"].progress == "40%"


def test_each_terminal_status_finishes_its_id_and_is_returned_once():
    tracker = TaskTracker(["a", "b", "c", "d"])
    finished = tracker.update(
        [task("a", "SUCCESS", "100%"), task("b", "FAILURE"), task("c", "CANCEL"), task("d", "IN_PROGRESS")]
    )
    assert sorted(t.id for t in finished) == ["a", "b", "c"]
    assert tracker.pending == ["d"]
    # A finished id listed again (the caller only asks for pending ones, but a server may repeat it)
    # is neither returned again nor re-opened.
    assert tracker.update([task("a", "SUCCESS", "100%"), task("d", "SUCCESS", "100%")])[0].id == "d"
    assert tracker.done


def test_integer_ids_are_tracked_as_strings():
    tracker = TaskTracker([1725017482366993])
    tracker.update([MJTask.from_json({"id": 1725017482366993, "status": "SUCCESS"})])
    assert tracker.done
    assert list(tracker.latest) == ["1725017482366993"]


def test_unknown_ids_in_an_answer_are_ignored():
    tracker = TaskTracker(["a"])
    tracker.update([task("zzz", "SUCCESS"), task("a", "IN_PROGRESS")])
    assert "zzz" not in tracker.latest
    assert tracker.pending == ["a"]


def test_an_absent_id_becomes_not_found_only_after_the_grace_polls_in_a_row():
    tracker = TaskTracker(["gone", "slow"], missing_grace=3)
    tracker.update([task("slow", "IN_PROGRESS")])
    tracker.update([task("slow", "IN_PROGRESS")])
    assert tracker.pending == ["gone", "slow"]
    assert tracker.not_found == set()
    tracker.update([task("slow", "IN_PROGRESS")])
    assert tracker.not_found == {"gone"}
    assert tracker.pending == ["slow"]


def test_reappearing_resets_the_miss_count():
    tracker = TaskTracker(["lagging"], missing_grace=2)
    tracker.update([])  # one miss: replica lag right after submission
    tracker.update([task("lagging", "SUBMITTED")])  # seen: the count starts over
    tracker.update([])
    assert tracker.not_found == set()
    tracker.update([])
    assert tracker.not_found == {"lagging"}


def test_an_id_seen_once_then_vanishing_keeps_its_last_state_in_the_event():
    tracker = TaskTracker(["v"], missing_grace=1)
    tracker.update([task("v", "IN_PROGRESS", "30%")])
    tracker.update([])
    event = tracker.event()
    assert event["status"] == EVENT_DONE
    assert event["not_found"] == ["v"]
    assert event["tasks"]["v"]["progress"] == "30%"


def test_missing_grace_of_one_means_absent_once_is_not_found():
    tracker = TaskTracker(["x"], missing_grace=1)
    tracker.update([])
    assert tracker.not_found == {"x"}
    assert tracker.done


def test_timeout_follows_the_clock_and_never_passes_without_a_deadline():
    clock = FakeClock()
    tracker = TaskTracker(["a"], timeout=10, clock=clock)
    assert not tracker.timed_out
    assert tracker.seconds_left() == 10
    clock.advance(9.5)
    assert not tracker.timed_out
    assert tracker.seconds_left() == pytest.approx(0.5)
    clock.advance(0.5)
    assert tracker.timed_out
    clock.advance(100)
    assert tracker.seconds_left() == 0.0

    endless = TaskTracker(["a"], timeout=None, clock=clock)
    clock.advance(10**9)
    assert not endless.timed_out
    assert endless.seconds_left() is None


def test_timeout_event_lists_pending_ids_with_their_last_status():
    clock = FakeClock()
    tracker = TaskTracker(["done", "stuck", "never"], timeout=5, clock=clock)
    tracker.update([task("done", "SUCCESS", "100%"), task("stuck", "IN_PROGRESS", "60%")])
    clock.advance(6)
    assert tracker.timed_out
    event = tracker.event()
    assert event["status"] == EVENT_TIMEOUT
    assert event["pending"] == ["stuck", "never"]
    assert event["tasks"]["stuck"]["status"] == "IN_PROGRESS"
    assert event["tasks"]["stuck"]["progress"] == "60%"
    assert "never" not in event["tasks"]
    assert event["task_ids"] == ["done", "stuck", "never"]


def test_event_is_json_and_carries_what_results_need_once():
    text = "1️⃣ a cat --ar 1:1"
    raw = {
        "id": "a",
        "status": "SUCCESS",
        "progress": "100%",
        "prompt": text,
        "promptEn": text,
        "properties": {"finalPrompt": text, "notifyHook": "https://h/x", "discordInstanceId": "9"},
        "imageUrl": "http://x/a.png",
        "buttons": [],
        "submitTime": 1,
        "finishTime": 2,
    }
    tracker = TaskTracker(["a", "b"])
    tracker.update(
        [MJTask.from_json(raw), MJTask.from_json({"id": "b", "status": "IN_PROGRESS", "prompt": text})]
    )
    event = tracker.event()
    assert json.loads(json.dumps(event)) == event
    assert event["tasks"]["a"] == {
        "id": "a",
        "status": "SUCCESS",
        "progress": "100%",
        "imageUrl": "http://x/a.png",
        "submitTime": 1,
        "finishTime": 2,
        "properties": {"finalPrompt": text},
    }
    assert json.dumps(event, ensure_ascii=False).count("a cat") == 1, "the prompt travels once"
    assert event["tasks"]["b"] == {"id": "b", "status": "IN_PROGRESS", "progress": None}
    # The compact task gives the same result as the full one.
    assert describe_result(MJTask.from_json(event["tasks"]["a"])) == describe_result(MJTask.from_json(raw))


def test_add_follows_new_ids_without_reopening_finished_ones():
    tracker = TaskTracker(["a"])
    tracker.update([task("a", "SUCCESS")])
    assert tracker.done
    tracker.add(["a", "b", 7])
    assert tracker.pending == ["b", "7"]
    assert tracker.event()["task_ids"] == ["a", "b", "7"]
    tracker.update([task("b", "FAILURE"), task("7", "SUCCESS")])
    assert tracker.done


def test_add_of_a_pending_id_does_not_duplicate_it():
    tracker = TaskTracker(["a"])
    tracker.add(["a", "a"])
    assert tracker.pending == ["a"]
    assert tracker.event()["task_ids"] == ["a"]


def test_an_empty_tracker_is_done_at_once():
    tracker = TaskTracker([])
    assert tracker.done
    assert tracker.event()["status"] == EVENT_DONE


def test_discard_stops_following_an_id_and_counts_it_finished():
    tracker = TaskTracker(["a", "b", "c"], missing_grace=1)
    tracker.update([task("a", "SUCCESS"), task("b", "IN_PROGRESS"), task("c", "IN_PROGRESS")])
    assert tracker.finished_count == 1
    tracker.discard(["b", 99])
    assert tracker.pending == ["c"]
    assert tracker.finished_count == 2
    # A discarded id is no longer asked for, so its absence never makes it "not found".
    tracker.update([task("c", "IN_PROGRESS")])
    assert tracker.not_found == set()
    assert tracker.event()["tasks"]["b"]["status"] == "IN_PROGRESS"


def test_forget_drops_finished_tasks_but_never_pending_ones():
    from airflow_provider_apicore.models import MJTask
    from airflow_provider_apicore.tracking import TaskTracker

    tracker = TaskTracker(["1", "2"])
    tracker.update(
        [
            MJTask.from_json({"id": "1", "status": "SUCCESS"}),
            MJTask.from_json({"id": "2", "status": "IN_PROGRESS"}),
        ]
    )
    tracker.forget(["1", "2"])
    assert "1" not in tracker.latest, "a finished task is dropped once recorded elsewhere"
    assert tracker.latest["2"].status.value == "IN_PROGRESS", "a pending task is kept"
    assert tracker.pending == ["2"] and tracker.finished_count == 1
