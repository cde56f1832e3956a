"""MJBatchDescribeOperator against the emulator over loopback HTTP (a scripted server for code 21)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_apicore.exceptions import ApicoreConfigError, ApicoreError
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.images import load_image
from airflow_provider_apicore.manifest import (
    NOT_FOUND,
    PENDING_SUBMIT,
    REJECTED,
    SUBMITTED,
    TIMEOUT,
    UNKNOWN_FATE,
    ManifestRecord,
    read_manifest,
    write_manifest,
)
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from airflow_provider_apicore.triggers.task import MJTaskTrigger
from tests.helpers.airflow_run import connection_env
from tests.helpers.imagegen import make_gif, make_png
from tests.helpers.scripted_server import Reply, ScriptedServer

CONTEXT = {"ti": SimpleNamespace(dag_id="batch_dag", run_id="manual__1")}
FAST = {"job_seconds": 0.2, "concurrency": 10, "queue_size": 100}


def images(directory: Path, count: int, start: int = 0) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = directory / f"image {i:03d}.png"
        path.write_bytes(make_png(4 + i % 5, 3 + i % 7, ((i * 40) % 256, (i * 90) % 256, 120)))
        paths.append(path)
    return paths


def operator(tmp_path: Path, source, **kwargs) -> MJBatchDescribeOperator:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("max_in_flight", 4)
    return MJBatchDescribeOperator(
        task_id="describe_all",
        source=source,
        manifest_path=str(tmp_path / "out" / "manifest.jsonl"),
        **kwargs,
    )


def records(op: MJBatchDescribeOperator) -> dict[str, ManifestRecord]:
    return {Path(r.image).name: r for r in read_manifest(op.manifest_path)}


def logged(capfd: pytest.CaptureFixture) -> str:
    """What the operator logged: Airflow's structlog writes task logs to the console."""
    out, err = capfd.readouterr()
    return out + err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("max_in_flight", 0, "max_in_flight must be a whole number >= 1, got 0"),
        ("max_in_flight", 2.5, "max_in_flight must be a whole number >= 1, got 2.5"),
        ("max_in_flight", True, "max_in_flight must be a whole number >= 1, got True"),
        ("max_in_flight", "many", "max_in_flight must be a whole number >= 1, got 'many'"),
        ("poll_interval", 0, "poll_interval must be a number above 0, got 0"),
        ("poll_interval", -1.5, "poll_interval must be a number above 0, got -1.5"),
        ("timeout", 0, r"timeout must be a number above 0 \(or None\), got 0"),
        ("flush_interval", float("nan"), "flush_interval must be a number above 0"),
        ("max_submit_attempts", 0, "max_submit_attempts must be a whole number >= 1"),
        ("max_failures", -1, "max_failures must be a whole number >= 0"),
        ("max_image_bytes", 0, "max_image_bytes must be a positive whole number"),
        ("pattern", "", "pattern must be a non-empty glob pattern"),
        ("source", [], "source must be a directory"),
        ("manifest_path", " ", "manifest_path must be a path or URL"),
    ],
)
def test_unusable_arguments_fail_when_the_dag_is_parsed(tmp_path, argument, value, message):
    kwargs = {"source": str(tmp_path), "manifest_path": str(tmp_path / "m.jsonl"), argument: value}
    with pytest.raises(ApicoreConfigError, match=message):
        MJBatchDescribeOperator(task_id="t", **kwargs)


def test_templated_numbers_are_checked_once_rendered(tmp_path):
    op = operator(tmp_path, str(tmp_path), max_in_flight="{{ params.n }}", poll_interval="{{ params.p }}")
    assert op.max_in_flight == "{{ params.n }}"
    op.max_in_flight, op.poll_interval = "6", "0.5"  # what rendering without native objects gives
    op._check_arguments()
    assert (op.max_in_flight, op.poll_interval) == (6, 0.5)
    op.max_in_flight = "0"
    with pytest.raises(ApicoreConfigError, match="max_in_flight must be a whole number >= 1, got '0'"):
        op._check_arguments()


# --------------------------------------------------------------------------------- describing
def test_a_directory_is_described_with_at_most_max_in_flight_jobs_upstream(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    images(tmp_path / "src", 24)
    op = operator(tmp_path, str(tmp_path / "src"), max_in_flight=3, poll_interval=0.1)
    started = time.monotonic()
    summary = op.execute(CONTEXT)
    elapsed = time.monotonic() - started
    assert summary == {
        "manifest": str(tmp_path / "out" / "manifest.jsonl"),
        "total": 24,
        "succeeded": 24,
        "failed": 0,
        "unknown_fate": 0,
        "unique_images": 24,
        "by_status": {"SUCCESS": 24},
    }
    stats = apicore_conn.stats()
    assert stats["submissions_accepted"] == 24
    # The account could run 10 at once: the operator is what held it to 3, and it did use all 3.
    assert stats["max_active"] == 3
    # One list-by-condition request per poll interval follows every job in flight.
    assert stats["requests"]["list"] <= elapsed / 0.1 + 2
    assert stats["requests"]["fetch"] == 0
    done = records(op)
    assert all(len(r.prompts) == 4 and r.task_id and r.sha256 for r in done.values())


def test_identical_images_are_submitted_once_and_share_the_result(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    src = tmp_path / "src"
    originals = images(src, 4)
    (src / "copy A.PNG").write_bytes(originals[0].read_bytes())
    (src / "nested").mkdir()
    (src / "nested" / "copy B.png").write_bytes(originals[0].read_bytes())
    (src / "copy C.png").write_bytes(originals[2].read_bytes())
    summary = operator(tmp_path, str(src)).execute(CONTEXT)
    stats = apicore_conn.stats()
    assert (stats["submissions_accepted"], stats["duplicate_submissions"]) == (4, 0)
    assert (summary["total"], summary["unique_images"], summary["succeeded"]) == (7, 4, 7)
    done = records(operator(tmp_path, str(src)))
    assert done["copy A.PNG"].task_id == done["copy B.png"].task_id == done["image 000.png"].task_id
    assert done["copy A.PNG"].prompts == done["image 000.png"].prompts
    assert done["copy C.png"].task_id == done["image 002.png"].task_id


def test_a_list_of_paths_records_missing_and_unreadable_files_as_rejected(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    [good] = images(tmp_path / "src", 1)
    text = tmp_path / "src" / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "src" / "gone.png"
    op = operator(tmp_path, [str(good), str(text), str(missing)])
    summary = op.execute(CONTEXT)
    assert (summary["succeeded"], summary["failed"]) == (1, 2)
    done = records(op)
    assert done["notes.png"].status == REJECTED and "content is not an image" in done["notes.png"].error
    assert done["gone.png"].status == REJECTED and "does not exist" in done["gone.png"].error
    assert apicore_conn.stats()["submissions_accepted"] == 1


# --------------------------------------------------------------------------------- resuming
def test_a_retry_follows_accepted_tasks_and_submits_only_the_rest(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    paths = images(tmp_path / "src", 6)
    op = operator(tmp_path, str(tmp_path / "src"))
    # What a killed first try left: two images accepted (one still running upstream), one finished.
    hook = ApicoreHook()
    accepted = {}
    for path in paths[:2]:
        data = load_image(path)
        accepted[path] = hook.submit_describe({"base64": data.to_data_url()}).task_id
    earlier = [
        ManifestRecord(image=str(p), status=SUBMITTED, sha256=sha(p), task_id=accepted[p], attempts=1, rev=i)
        for i, p in enumerate(paths[:2], 1)
    ]
    earlier.append(
        ManifestRecord(
            image=str(paths[2]), status="SUCCESS", sha256=sha(paths[2]), task_id="17", prompts=["x"], rev=3
        )
    )
    write_manifest(op.manifest_path, earlier)
    summary = op.execute(CONTEXT)
    assert summary["succeeded"] == 6
    # 2 submitted before the "crash" + the 3 never sent; the finished one was not touched.
    assert apicore_conn.stats()["submissions_accepted"] == 5
    done = records(op)
    assert [done[p.name].task_id for p in paths[:2]] == [accepted[p] for p in paths[:2]]
    assert done[paths[2].name].prompts == ["x"]


def test_a_new_run_only_describes_images_added_since_the_last_one(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    src = tmp_path / "src"
    images(src, 3)
    operator(tmp_path, str(src)).execute(CONTEXT)
    images(src, 2, start=3)
    summary = operator(tmp_path, str(src)).execute(CONTEXT)
    assert (summary["total"], summary["succeeded"]) == (5, 5)
    assert apicore_conn.stats()["submissions_accepted"] == 5


def _in_the_air(op: MJBatchDescribeOperator, path: Path) -> None:
    """A manifest as left by a try killed while this image's submission was being sent."""
    digest = sha(path)
    write_manifest(
        op.manifest_path,
        [
            ManifestRecord(
                image=str(path), status=PENDING_SUBMIT, sha256=digest, attempts=1, state="x/y/z/1", rev=1
            )
        ],
    )


def test_a_submission_in_the_air_at_a_crash_is_recorded_unknown_fate_and_not_sent_again(
    tmp_path, apicore_conn
):
    apicore_conn.configure(**FAST)
    [path] = images(tmp_path / "src", 1)
    op = operator(tmp_path, str(tmp_path / "src"))
    _in_the_air(op, path)
    summary = op.execute(CONTEXT)
    assert (summary["unknown_fate"], summary["by_status"]) == (1, {UNKNOWN_FATE: 1})
    assert apicore_conn.stats()["requests"]["submit"] == 0
    record = records(op)[path.name]
    assert (record.attempts, record.state) == (1, "x/y/z/1")
    assert "stopped while this image was being sent (state 'x/y/z/1')" in record.error


def test_with_on_unknown_fate_resubmit_a_submission_in_the_air_is_sent_again_with_a_new_tag(
    tmp_path, apicore_conn
):
    apicore_conn.configure(**FAST)
    [path] = images(tmp_path / "src", 1)
    op = operator(tmp_path, str(tmp_path / "src"), on_unknown_fate="resubmit")
    _in_the_air(op, path)
    summary = op.execute(CONTEXT)
    assert summary["succeeded"] == 1
    assert apicore_conn.stats()["submissions_accepted"] == 1
    record = records(op)[path.name]
    assert record.attempts == 2
    assert record.state == f"batch_dag/manual__1/{sha(path)[:16]}/2"


def test_the_deprecated_resubmit_unknown_fate_false_still_leaves_it_for_a_person(tmp_path, apicore_conn):
    [path] = images(tmp_path / "src", 1)
    with pytest.warns(DeprecationWarning, match="on_unknown_fate"):
        op = operator(tmp_path, str(tmp_path / "src"), resubmit_unknown_fate=False)
    _in_the_air(op, path)
    summary = op.execute(CONTEXT)
    assert (summary["failed"], summary["by_status"]) == (1, {UNKNOWN_FATE: 1})
    assert apicore_conn.stats()["requests"]["submit"] == 0
    assert "stopped while this image was being sent" in records(op)[path.name].error


def test_lost_answers_are_resubmitted_at_most_max_submit_attempts_times(tmp_path, apicore_conn):
    # A server that processes each submission but never delivers the answer, and does not deduplicate:
    # the worst case. Each resubmission may be a duplicate, so their number is bounded.
    apicore_conn.configure(**FAST, faults={"drop_after": 1.0, "endpoints": ["submit"]})
    [path] = images(tmp_path / "src", 1)
    op = operator(tmp_path, str(tmp_path / "src"), max_submit_attempts=2, on_unknown_fate="resubmit")
    summary = op.execute(CONTEXT)
    assert summary["by_status"] == {UNKNOWN_FATE: 1}
    stats = apicore_conn.stats()
    assert stats["requests"]["submit"] == 2
    record = records(op)[path.name]
    assert record.attempts == 2 and "answer to the submission was lost" in record.error


def test_a_server_answering_code_21_reconciles_a_lost_answer_without_a_second_job(
    tmp_path, monkeypatch, capfd
):
    [path] = images(tmp_path / "src", 1)
    first_tag = f"batch_dag/manual__1/{sha(path)[:16]}/1"
    task = {
        "id": "1725017482366993",
        "action": "DESCRIBE",
        "status": "SUCCESS",
        "progress": "100%",
        "prompt": "1\ufe0f\u20e3 one\n\n2\ufe0f\u20e3 two\n\n3\ufe0f\u20e3 three\n\n4\ufe0f\u20e3 four",
        "state": first_tag,
        "submitTime": 1,
        "finishTime": 2,
    }
    replies = [
        Reply(drop=True),  # the first submission: processed upstream, answer lost
        Reply(body={"code": 21, "description": "任务已存在", "result": task["id"]}),
        Reply(body=[task]),
    ]
    with ScriptedServer(replies) as server:
        for key, value in connection_env(server.url, "tok").items():
            monkeypatch.setenv(key, value)
        op = operator(tmp_path, str(tmp_path / "src"), poll_interval=0.05, on_unknown_fate="resubmit")
        summary = op.execute(CONTEXT)
        submits = [json.loads(r.body) for r in server.requests if r.path == "/mj/submit/describe"]
    assert summary["succeeded"] == 1
    assert [s["state"] for s in submits] == [first_tag, first_tag[:-1] + "2"]
    assert submits[0]["base64"] == submits[1]["base64"]
    record = records(op)[path.name]
    assert (record.task_id, record.prompts) == (task["id"], ["one", "two", "three", "four"])
    out = logged(capfd)
    assert "code 21" in out
    assert f"created by the earlier submission tagged {first_tag!r}" in out


# --------------------------------------------------------------------------------- back-pressure
def test_queue_full_pauses_submissions_and_every_image_still_gets_described(tmp_path, apicore_conn):
    # The account runs 2 jobs and queues none: asking for 4 at once meets code 23.
    apicore_conn.configure(job_seconds=0.2, concurrency=2, queue_size=0)
    images(tmp_path / "src", 6)
    summary = operator(tmp_path, str(tmp_path / "src"), max_in_flight=4).execute(CONTEXT)
    stats = apicore_conn.stats()
    assert summary["succeeded"] == 6
    assert stats["submissions_rejected"].get("23", 0) >= 1
    assert (stats["submissions_accepted"], stats["duplicate_submissions"]) == (6, 0)


def test_429_that_outlasts_the_hooks_retries_pauses_submissions(tmp_path, apicore_conn, monkeypatch):
    apicore_conn.use_connection(monkeypatch, max_retries=0)
    apicore_conn.configure(**FAST, faults={"http_429": 0.5, "retry_after": 0, "endpoints": ["submit"]})
    images(tmp_path / "src", 5)
    summary = operator(tmp_path, str(tmp_path / "src")).execute(CONTEXT)
    stats = apicore_conn.stats()
    assert summary["succeeded"] == 5
    assert stats["faults_injected"]["http_429"] >= 1
    assert stats["submissions_accepted"] == 5


# --------------------------------------------------------------------------------- outcomes
def test_jobs_that_do_not_finish_in_time_are_recorded_as_timeout(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST, faults={"stuck": 1.0})
    images(tmp_path / "src", 2)
    op = operator(tmp_path, str(tmp_path / "src"), timeout=1, max_failures=0)
    with pytest.raises(ApicoreError, match=r"2 of 2 images failed, more than max_failures=0.*manifest.jsonl"):
        op.execute(CONTEXT)
    for record in records(op).values():
        assert record.status == TIMEOUT
        assert "did not finish within 1s; last seen status IN_PROGRESS" in record.error


@pytest.mark.parametrize(("fault", "status"), [("task_failure", "FAILURE"), ("vanish", NOT_FOUND)])
def test_failed_and_vanished_jobs_are_recorded_with_the_reason(tmp_path, apicore_conn, fault, status):
    apicore_conn.configure(**FAST, faults={fault: 1.0})
    images(tmp_path / "src", 2)
    op = operator(tmp_path, str(tmp_path / "src"))
    summary = op.execute(CONTEXT)
    assert summary["by_status"] == {status: 2}
    assert all(r.error for r in records(op).values())


def test_resubmit_failed_sends_failed_images_again_on_the_next_run(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST, faults={"task_failure": 1.0})
    images(tmp_path / "src", 2)
    operator(tmp_path, str(tmp_path / "src")).execute(CONTEXT)
    apicore_conn.configure(faults={"task_failure": 0.0})
    kept = operator(tmp_path, str(tmp_path / "src")).execute(CONTEXT)
    assert kept["by_status"] == {"FAILURE": 2}
    again = operator(tmp_path, str(tmp_path / "src"), resubmit_failed=True).execute(CONTEXT)
    assert again["by_status"] == {"SUCCESS": 2}
    assert apicore_conn.stats()["submissions_accepted"] == 4


# --------------------------------------------------------------------------------- deferrable
async def _first_event(trigger: MJTaskTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def test_deferrable_alternates_between_submitting_and_the_trigger(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    images(tmp_path / "src", 12)
    op = operator(tmp_path, str(tmp_path / "src"), max_in_flight=4, deferrable=True)
    deferrals = []
    try:
        op.execute(CONTEXT)
        raise AssertionError("a batch with work in flight must defer")
    except TaskDeferred as deferred:
        current = deferred
    while True:
        trigger = current.trigger
        assert isinstance(trigger, MJTaskTrigger)
        deferrals.append((len(trigger.task_ids), trigger.min_finished))
        event = asyncio.run(_first_event(trigger))
        try:
            # As Airflow resumes: with the kwargs the deferral named (its checkpoint).
            summary = op.execute_complete(CONTEXT, event, **(current.kwargs or {}))
            break
        except TaskDeferred as deferred:
            current = deferred
    assert summary["succeeded"] == 12
    assert len(deferrals) >= 3
    assert all(count <= 4 for count, _ in deferrals)
    # While images wait, the trigger hands back once half the slots are free; at the end it waits for all.
    assert deferrals[0] == (4, 2)
    assert deferrals[-1][1] is None
    assert apicore_conn.stats()["max_active"] <= 4


def test_a_trigger_error_fails_the_task_and_keeps_every_task_id(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    images(tmp_path / "src", 3)
    op = operator(tmp_path, str(tmp_path / "src"), deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)
    ids = deferred.value.trigger.task_ids
    event = {
        "status": "error",
        "message": "HTTP 503 five times",
        "task_ids": ids,
        "tasks": {},
        "not_found": [],
    }
    with pytest.raises(ApicoreError, match=r"HTTP 503 five times.*a retry of this task resumes"):
        op.execute_complete(CONTEXT, event)
    assert sorted(r.task_id for r in read_manifest(op.manifest_path)) == sorted(ids)


# --------------------------------------------------------------------------------- reporting
def test_progress_lines_report_done_failed_in_flight_rate_and_eta(tmp_path, apicore_conn, capfd):
    apicore_conn.configure(**FAST)
    images(tmp_path / "src", 8)
    operator(tmp_path, str(tmp_path / "src"), max_in_flight=2).execute(CONTEXT)
    lines = [line[line.index("Progress:") :] for line in logged(capfd).splitlines() if "Progress:" in line]
    assert lines[0].startswith("Progress: 0/8 done, 0 failed, 2 in flight, 6 to submit; rate unknown")
    assert lines[-1].startswith("Progress: 8/8 done, 0 failed, 0 in flight, 0 to submit;")
    assert re.search(
        r"Progress: \d/8 done, 0 failed, \d in flight, \d to submit; [\d.]+ images/min; ETA \d+s",
        "\n".join(lines),
    )


def _peak_memory(tmp_path: Path, emulator, count: int, size: int) -> int:
    """Describe ``count`` images of ``size`` bytes in a fresh process; return its traced peak memory."""
    src = tmp_path / f"src-{count}"
    src.mkdir()
    for i in range(count):
        # A valid image header followed by incompressible bytes: ``size`` bytes that must really be sent.
        (src / f"big {i:02d}.gif").write_bytes(make_gif(4, 4) + _noise(size, i))
    script = textwrap.dedent(
        f"""
        import json, tracemalloc
        from types import SimpleNamespace
        from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
        op = MJBatchDescribeOperator(
            task_id="t", source={str(src)!r}, manifest_path={str(src) + ".jsonl"!r},
            max_in_flight=4, poll_interval=0.1,
        )
        tracemalloc.start()
        summary = op.execute({{"ti": SimpleNamespace(dag_id="d", run_id="r")}})
        print(json.dumps({{"peak": tracemalloc.get_traced_memory()[1], "summary": summary}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_environ(), **emulator.conn_env()},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["summary"]["succeeded"] == count
    return result["peak"]


def test_memory_stays_flat_however_many_large_images_are_sent(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    size = 1024 * 1024
    few = _peak_memory(tmp_path, apicore_conn, 4, size)
    many = _peak_memory(tmp_path, apicore_conn, 24, size)
    # Images are read and encoded one at a time: six times the images, about the same peak. Holding the
    # 20 extra images (or their data URLs) would add at least 20 MiB; modules imported lazily during
    # the first submission weigh the same in both runs, so the difference is what counts.
    assert many < few * 1.3, (few, many)
    assert many - few < 4 * size, (few, many)


def _noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}


# --------------------------------------------------------------------------------- the server decides
def test_jobs_that_finished_while_the_trigger_waited_past_the_deadline_are_recorded_as_finished(
    tmp_path, apicore_conn
):
    apicore_conn.configure(**FAST)
    images(tmp_path / "src", 3)
    op = operator(tmp_path, str(tmp_path / "src"), timeout=1, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)
    time.sleep(1.2)  # a busy triggerer: the event comes after the deadline, every job long finished
    event = asyncio.run(_first_event(deferred.value.trigger))
    assert op.execute_complete(CONTEXT, event)["by_status"] == {"SUCCESS": 3}


def test_a_retry_later_than_the_timeout_asks_the_server_before_giving_up_on_a_job(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    [path] = images(tmp_path / "src", 1)
    task_id = ApicoreHook().submit_describe({"base64": load_image(path).to_data_url()}).task_id
    op = operator(tmp_path, str(tmp_path / "src"), timeout=5)
    # The try that submitted it died 10 s ago; the job finished upstream meanwhile.
    stale = ManifestRecord(
        image=str(path), status=SUBMITTED, sha256=sha(path), task_id=task_id, attempts=1, rev=1
    )
    stale.accepted_at = int(time.time() * 1000) - 10_000
    write_manifest(op.manifest_path, [stale])
    time.sleep(0.5)
    assert op.execute(CONTEXT)["by_status"] == {"SUCCESS": 1}
    assert apicore_conn.stats()["submissions_accepted"] == 1


def test_a_refused_token_leaves_the_image_waiting_not_in_the_air(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST, faults={"token_expired": True})
    images(tmp_path / "src", 2)
    op = operator(tmp_path, str(tmp_path / "src"))
    with pytest.raises(ApicoreError, match="apicore_default"):
        op.execute(CONTEXT)
    # Nothing was accepted: a retry must send these as new images, not reconcile a lost submission.
    assert [(r.status, r.attempts) for r in read_manifest(op.manifest_path)] == [("pending", 0)] * 2
