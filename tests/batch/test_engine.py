"""
The batch engine over loopback HTTP against the emulator (no deduplication): unknown fates recorded and
never resent, pauses without blocking, settings checked before anything is marked, read errors
retried, resume in a fresh process, on_kill, and a rerun that does not reopen finished files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_apicore import images as images_module
from airflow_provider_apicore.batch import actions as actions_module
from airflow_provider_apicore.batch import loop as loop_module
from airflow_provider_apicore.batch.errors import ManifestUnavailableError, UnknownFateError
from airflow_provider_apicore.exceptions import ApicoreConfigError, ApicoreError
from airflow_provider_apicore.images import ImageReadError
from airflow_provider_apicore.manifest import (
    READ_ERROR,
    SUBMITTED,
    SUCCESS,
    UNKNOWN_FATE,
    read_manifest,
)
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from tests.helpers.airflow_run import connection_env
from tests.helpers.scripted_server import LoopbackServer, Reply
from tests.reliability.conftest import write_images

REPO = Path(__file__).resolve().parents[2]
CONTEXT = {"ti": SimpleNamespace(dag_id="engine", run_id="manual__1", task_id="batch", try_number=1)}
FAST = {"job_seconds": 0.2, "concurrency": 10, "queue_size": 100, "dedupe": False}


def operator(tmp_path: Path, **kwargs) -> MJBatchDescribeOperator:
    kwargs.setdefault("source", str(tmp_path / "src"))
    kwargs.setdefault("manifest_path", str(tmp_path / "out" / "manifest.jsonl"))
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("max_in_flight", 4)
    return MJBatchDescribeOperator(task_id="batch", **kwargs)


def by_name(op: MJBatchDescribeOperator) -> dict:
    return {Path(r.image).name: r for r in read_manifest(op.manifest_path)}


def logged(capfd: pytest.CaptureFixture) -> str:
    out, err = capfd.readouterr()
    return out + err


# --------------------------------------------------------------------------------- unknown fate
@pytest.mark.parametrize("fault", ["http_5xx_after", "html_error_after", "drop_after"])
def test_accepted_then_lost_answers_are_recorded_unknown_fate_and_never_resent(
    tmp_path, apicore_conn, capfd, fault
):
    # The server creates the job, then the answer is a 5xx / a proxy's HTML 502 / a dropped connection.
    apicore_conn.configure(**FAST, seed=7, faults={fault: 0.3, "endpoints": ["submit"]})
    write_images(tmp_path / "src", 20)
    op = operator(tmp_path)
    summary = op.execute(CONTEXT)
    stats = apicore_conn.stats()
    lost = stats["faults_injected"][fault]
    assert lost >= 1, "the seed must lose at least one answer"
    # At most once: one job per image on a server that does not deduplicate.
    assert stats["duplicate_submissions"] == 0
    assert stats["requests"]["submit"] == 20
    assert stats["tasks_created"] == 20
    assert (summary["unknown_fate"], summary["succeeded"]) == (lost, 20 - lost)
    unknown = [r for r in by_name(op).values() if r.status == UNKNOWN_FATE]
    assert len(unknown) == lost
    for record in unknown:
        assert record.state and record.state.startswith("engine/manual__1/") and record.attempts == 1
        assert "may have been" in record.error or "answer" in record.error
        assert record.state in record.error
    assert f"{lost} unknown fate" in logged(capfd)


def test_on_unknown_fate_fail_finishes_the_others_then_fails_naming_the_images(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST, seed=7, faults={"http_5xx_after": 0.3, "endpoints": ["submit"]})
    write_images(tmp_path / "src", 10)
    op = operator(tmp_path, on_unknown_fate="fail")
    with pytest.raises(UnknownFateError, match=r"on_unknown_fate='fail'.*img_\d+\.png \(state 'engine/"):
        op.execute(CONTEXT)
    records = by_name(op)
    lost = apicore_conn.stats()["faults_injected"]["http_5xx_after"]
    assert sum(r.status == UNKNOWN_FATE for r in records.values()) == lost >= 1
    assert sum(r.status == SUCCESS for r in records.values()) == 10 - lost
    assert apicore_conn.stats()["duplicate_submissions"] == 0


def test_on_unknown_fate_must_be_one_of_the_three_policies(tmp_path):
    with pytest.raises(
        ApicoreConfigError, match="on_unknown_fate must be one of 'record', 'fail', 'resubmit'"
    ):
        operator(tmp_path, on_unknown_fate="retry")


# --------------------------------------------------------------------------------- back-pressure
def test_a_429_with_retry_after_pauses_the_batch_not_the_hook(tmp_path, apicore_conn, monkeypatch, capfd):
    # The connection would retry a 429 five times inside the hook (sleeping Retry-After each time); the
    # batch turns that off and pauses itself, so it keeps following the jobs in flight meanwhile.
    apicore_conn.use_connection(monkeypatch, max_retries=5)
    apicore_conn.configure(
        **FAST, seed=3, faults={"http_429": 0.4, "retry_after": 1, "endpoints": ["submit"]}
    )
    write_images(tmp_path / "src", 8)
    summary = operator(tmp_path).execute(CONTEXT)
    stats = apicore_conn.stats()
    throttled = stats["faults_injected"]["http_429"]
    assert throttled >= 1
    assert summary["succeeded"] == 8 and stats["duplicate_submissions"] == 0
    out = logged(capfd)
    # Every 429 reached the batch (none was retried inside the hook), and each paused for Retry-After.
    assert out.count("Pausing submissions for 1.0s as the server asked (Retry-After)") == throttled
    assert stats["requests"]["submit"] == 8 + throttled


@pytest.mark.parametrize(
    ("code", "description"),
    [(9, "提交失败，队列已满，请稍后重试"), (3, "无可用的账号实例"), (23, "队列已满")],
)
def test_try_later_codes_pause_and_the_image_is_described_not_rejected(
    tmp_path, monkeypatch, code, description
):
    task = {"id": "1725017482366993", "action": "DESCRIBE", "status": "SUCCESS", "progress": "100%"}
    task["prompt"] = "1\ufe0f\u20e3 one\n\n2\ufe0f\u20e3 two\n\n3\ufe0f\u20e3 three\n\n4\ufe0f\u20e3 four"
    answers = iter([{"code": code, "description": description}, {"code": 1, "result": task["id"]}])

    def route(seen):
        if seen.path.endswith("/submit/describe"):
            return Reply(body=next(answers))
        return Reply(body=[task])

    with LoopbackServer(route) as server:
        for key, value in connection_env(server.url, "tok").items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(loop_module, "MAX_SUBMIT_BACKOFF", 0.05)
        write_images(tmp_path / "src", 1)
        op = operator(tmp_path, poll_interval=0.05)
        summary = op.execute(CONTEXT)
    assert summary["by_status"] == {SUCCESS: 1}
    assert sum(s.path.endswith("/submit/describe") for s in server.seen) == 2


# --------------------------------------------------------------------------------- only what cannot be fixed
def test_a_bad_bot_type_fails_before_any_image_is_marked_and_a_fixed_rerun_describes_them(
    tmp_path, apicore_conn
):
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 3)
    # Refused when the DAG is parsed, once, naming the argument.
    with pytest.raises(ApicoreConfigError, match=r"bot_type must be 'MID_JOURNEY' or 'NIJI_JOURNEY'"):
        operator(tmp_path, bot_type="NIJI").execute(CONTEXT)
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    assert apicore_conn.stats()["requests"]["submit"] == 0
    assert operator(tmp_path, bot_type="NIJI_JOURNEY").execute(CONTEXT)["succeeded"] == 3


def test_transient_read_errors_are_retried_then_read_error_and_read_again_by_the_next_run(
    tmp_path, apicore_conn, monkeypatch
):
    apicore_conn.configure(**FAST)
    paths = write_images(tmp_path / "src", 3)
    flaky, broken = str(paths[0]), str(paths[1])
    failures = {flaky: 1, broken: 99}  # the flaky file fails once, the broken one every time
    real_load = actions_module.load_image

    def load(source, max_bytes):
        if failures.get(str(source), 0) > 0:
            failures[str(source)] -= 1
            raise ImageReadError(str(source), "cannot read the file: Input/output error")
        return real_load(source, max_bytes=max_bytes)

    monkeypatch.setattr(actions_module, "load_image", load)
    monkeypatch.setattr(loop_module, "READ_PAUSES", (0.01,))
    op = operator(tmp_path)
    summary = op.execute(CONTEXT)
    assert summary["by_status"] == {SUCCESS: 2, READ_ERROR: 1}
    record = by_name(op)[paths[1].name]
    assert record.status == READ_ERROR and "Input/output error" in record.error and "next run" in record.error
    failures[broken] = 0  # the storage recovered
    again = operator(tmp_path).execute(CONTEXT)
    assert again["by_status"] == {SUCCESS: 3}
    assert apicore_conn.stats()["submissions_accepted"] == 3


def test_an_io_error_is_transient_but_a_missing_or_forbidden_file_is_not():
    assert images_module.is_transient_read_error(OSError(5, "Input/output error"))
    assert images_module.is_transient_read_error(TimeoutError())
    assert images_module.is_transient_read_error(OSError("s3 request failed"))
    assert not images_module.is_transient_read_error(FileNotFoundError(2, "No such file"))
    assert not images_module.is_transient_read_error(PermissionError(13, "Permission denied"))
    assert not images_module.is_transient_read_error(OSError(40, "Too many levels of symbolic links"))


# --------------------------------------------------------------------------------- resume
RESUME = textwrap.dedent(
    """
    import json, sys
    from types import SimpleNamespace
    from airflow.sdk.exceptions import TaskDeferred
    from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
    op = MJBatchDescribeOperator(
        task_id="batch", source=sys.argv[1], manifest_path=sys.argv[2], poll_interval=0.1, max_in_flight=4,
        deferrable=True,
    )
    ti = SimpleNamespace(dag_id="engine", run_id="manual__1", task_id="batch", try_number=1)
    event = json.loads(open(sys.argv[3]).read())
    try:
        summary = op.execute_complete({"ti": ti}, event)
    except TaskDeferred as deferred:
        print("DEFERRED " + json.dumps(deferred.trigger.task_ids))
    else:
        print("SUMMARY " + json.dumps(summary))
    """
)


async def _event(trigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def _resume_in_a_new_process(emulator, tmp_path: Path, event: dict) -> subprocess.CompletedProcess:
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(emulator.conn_env(), PYTHONPATH=str(REPO))
    return subprocess.run(
        [
            sys.executable,
            "-c",
            RESUME,
            str(tmp_path / "src"),
            str(tmp_path / "out" / "manifest.jsonl"),
            str(event_file),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_resume_in_a_fresh_process_continues_from_the_manifest(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 6)
    op = operator(tmp_path, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)
    event = asyncio.run(_event(deferred.value.trigger))
    rounds = 0
    while True:
        rounds += 1
        proc = _resume_in_a_new_process(apicore_conn, tmp_path, event)
        assert proc.returncode == 0, proc.stderr[-3000:]
        last = proc.stdout.strip().splitlines()[-1]
        if last.startswith("SUMMARY "):
            break
        from airflow_provider_apicore.triggers.task import MJTaskTrigger

        ids = json.loads(last.removeprefix("DEFERRED "))
        event = asyncio.run(_event(MJTaskTrigger(task_ids=ids, poll_interval=0.1)))
        assert rounds < 10
    summary = json.loads(last.removeprefix("SUMMARY "))
    assert (summary["total"], summary["succeeded"]) == (6, 6)
    stats = apicore_conn.stats()
    assert stats["submissions_accepted"] == 6 and stats["duplicate_submissions"] == 0


def test_a_resume_without_the_manifest_fails_naming_the_path_and_the_likely_cause(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 3)
    op = operator(tmp_path, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)
    event = asyncio.run(_event(deferred.value.trigger))
    # Another worker, another host: the manifest the first try wrote is not there.
    manifest = tmp_path / "out" / "manifest.jsonl"
    for path in sorted((tmp_path / "out").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    fresh = operator(tmp_path, deferrable=True)
    with pytest.raises(ManifestUnavailableError) as info:
        fresh.execute_complete(CONTEXT, event)
    message = str(info.value)
    assert str(manifest) in message and "does not exist" in message
    assert "local manifest_path on a deployment with several workers" in message
    assert not manifest.exists(), "a failed resume writes no empty manifest"


def test_a_resume_against_another_manifest_fails_instead_of_an_empty_success(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 2)
    event = {"status": "done", "task_ids": ["1796000000000001"], "tasks": {}, "not_found": []}
    # A manifest exists at the path, but it is not the one this batch deferred with.
    operator(tmp_path).execute(CONTEXT)
    with pytest.raises(ManifestUnavailableError, match="does not record any of the 1 task ids"):
        operator(tmp_path, deferrable=True).execute_complete(CONTEXT, event)


# --------------------------------------------------------------------------------- kill
def test_on_kill_stops_submitting_writes_the_manifest_and_names_the_jobs_in_flight(
    tmp_path, apicore_conn, capfd
):
    apicore_conn.configure(job_seconds=30, concurrency=10, queue_size=100, dedupe=False)
    write_images(tmp_path / "src", 6)
    op = operator(tmp_path, max_in_flight=2)
    outcome: dict = {}

    def run() -> None:
        try:
            op.execute(CONTEXT)
        except BaseException as err:
            outcome["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while apicore_conn.stats()["submissions_accepted"] < 2:
        assert time.monotonic() < deadline, "the batch never filled its two slots"
        time.sleep(0.05)
    op.on_kill()
    worker.join(30)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), ApicoreError) and "stopped (on_kill)" in str(outcome["error"])
    assert apicore_conn.stats()["submissions_accepted"] == 2
    records = by_name(op)
    in_flight = sorted(r.task_id for r in records.values() if r.status == SUBMITTED)
    assert len(in_flight) == 2
    out = logged(capfd)
    assert "APICore has no cancel endpoint" in out and all(task_id in out for task_id in in_flight)


# --------------------------------------------------------------------------------- reruns and changed files
def test_a_rerun_does_not_reopen_finished_files_and_a_changed_file_is_described_again(
    tmp_path, apicore_conn, monkeypatch
):
    apicore_conn.configure(**FAST)
    paths = write_images(tmp_path / "src", 3)
    old_bytes = paths[0].read_bytes()
    first = operator(tmp_path).execute(CONTEXT)
    assert first["succeeded"] == 3
    before = by_name(operator(tmp_path))

    opened: list[str] = []
    real_classify = images_module._classify_header

    def counting(header, name):
        opened.append(name)
        return real_classify(header, name)

    monkeypatch.setattr(images_module, "_classify_header", counting)
    assert operator(tmp_path).execute(CONTEXT)["succeeded"] == 3
    assert opened == [], "finished, unchanged files are not opened again"

    # img_00000 changes; a new file holds its old bytes.
    paths[0].write_bytes(write_images(tmp_path / "other", 1, start=50)[0].read_bytes())
    os.utime(paths[0], (time.time() + 5, time.time() + 5))
    (tmp_path / "src" / "copy.png").write_bytes(old_bytes)
    summary = operator(tmp_path).execute(CONTEXT)
    assert (summary["total"], summary["succeeded"]) == (4, 4)
    after = by_name(operator(tmp_path))
    changed = after[paths[0].name]
    assert changed.sha256 == hashlib.sha256(paths[0].read_bytes()).hexdigest() != before[paths[0].name].sha256
    assert changed.task_id != before[paths[0].name].task_id
    # The copy of the old bytes gets its own job, not the changed file's new result.
    assert after["copy.png"].task_id not in (changed.task_id,)
    assert apicore_conn.stats()["submissions_accepted"] == 5
    assert apicore_conn.stats()["duplicate_submissions"] == 1  # the old bytes, described again by design


def test_a_symlink_loop_lists_each_image_once(tmp_path):
    src = tmp_path / "src"
    write_images(src, 2)
    (src / "again").symlink_to(src, target_is_directory=True)
    listed = images_module.list_images(str(src))
    assert [Path(str(p)).name for p in listed] == ["img_00000.png", "img_00001.png"]


def test_a_deferrable_batch_with_nothing_in_flight_waits_out_a_pause_in_the_triggerer(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST, faults={"http_429": 1.0, "retry_after": 30, "endpoints": ["submit"]})
    write_images(tmp_path / "src", 2)
    op = operator(tmp_path, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)
    trigger = deferred.value.trigger
    assert type(trigger).__name__ == "TimeDeltaTrigger", "the 30 s pause is not slept in the worker"
    assert apicore_conn.stats()["requests"]["submit"] == 1
    apicore_conn.configure(faults={})
    # The triggerer's event is the moment it fired; the resume carries on from the manifest: it submits
    # both images, then defers to follow them.
    resumed = operator(tmp_path, deferrable=True)
    with pytest.raises(TaskDeferred) as following:
        resumed.execute_complete(CONTEXT, None)
    assert len(following.value.trigger.task_ids) == 2
    event = asyncio.run(_event(following.value.trigger))
    assert resumed.execute_complete(CONTEXT, event)["succeeded"] == 2
    assert apicore_conn.stats()["submissions_accepted"] == 2
