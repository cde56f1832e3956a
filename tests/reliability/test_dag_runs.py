"""
Whole DAG runs under a mix of faults (``airflow dags test`` against the emulator over loopback HTTP).

Two runs, each replayable from the emulator's seed: the fan-out (one mapped deferrable
MJDescribeOperator per image, request faults aimed at the trigger's polling) and the batched
operator (every fault class, submits included). Each run then revokes the API token and tries once
more. The tests check, per fault class, the outcome the README's Reliability section documents,
and that every image is accounted for. The same runs use a distinctive token and a
``notifyHook`` with credentials, and the last tests search everything the runs left for either secret.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_apicore.emulator.faults import FAIL_REASONS, REQUEST_FAULTS
from airflow_provider_apicore.manifest import (
    FINAL_STATUSES,
    NOT_FOUND,
    PENDING,
    SUCCESS,
    TIMEOUT,
    UNKNOWN_FATE,
    ManifestRecord,
    read_manifest,
)
from tests.conftest import TEST_TOKEN, Emulator
from tests.helpers.airflow_run import DagRunResult, airflow_db_dump, airflow_env, connection_env, run_dag_test
from tests.reliability.conftest import write_images

pytestmark = pytest.mark.e2e

DAGS = Path(__file__).resolve().parent / "dags"
SECRET_TOKEN = "rel-token-" + secrets.token_hex(12)
HOOK_PASSWORD = "hookpw-" + secrets.token_hex(8)
ACCOUNT = {
    "job_seconds": 0.3,
    "concurrency": 10,
    "queue_size": 100,
    "tokens": [SECRET_TOKEN],
    "dedupe": False,
}
TIMING = {"retry_after": 1, "slow_seconds": 1.5}  # the connection's timeout is 1 s: slow answers time out

#: Request faults only on the trigger's polling: every submit goes through, so each image's fate is
#: the task fate the seed gives it. Seed 3859: each request class below hits within the first 19 polls
#: (the fault streams are independent: replay them with the emulator's FaultDecider to pick a seed),
#: each task class within the first 6 jobs, and code 23 within the first 5 submits.
FANOUT_FAULTS = {
    "http_5xx": 0.06,
    "http_429": 0.04,
    "html_error": 0.04,
    "malformed_json": 0.04,
    "drop_before": 0.04,
    "drop_after": 0.04,
    "http_5xx_after": 0.04,
    "html_error_after": 0.04,
    "slow": 0.03,
    "endpoints": ["list"],
    "queue_full": 0.15,
    "task_failure": 0.15,
    "stuck": 0.12,
    "vanish": 0.12,
    **TIMING,
}
FANOUT_SEED, FANOUT_IMAGES = 3859, 8
#: Every class on every endpoint. Seed 545: each request class hits within the first 23 requests (a
#: submit answer is lost among the first ones), each task class within the first 3 jobs, code 23 within
#: the first 5 submits. A submit whose answer is lost is never sent again, so fewer jobs run than images.
BATCH_FAULTS = {
    "http_5xx": 0.05,
    "http_429": 0.03,
    "html_error": 0.03,
    "malformed_json": 0.04,
    "drop_before": 0.04,
    "drop_after": 0.04,
    "http_5xx_after": 0.04,
    "html_error_after": 0.04,
    "slow": 0.03,
    "queue_full": 0.1,
    "task_failure": 0.12,
    "stuck": 0.1,
    "vanish": 0.1,
    **TIMING,
}
BATCH_SEED, BATCH_IMAGES = 545, 16


@dataclass
class Run:
    result: DagRunResult
    stats: dict[str, Any]
    tasks: dict[str, dict[str, Any]]  # every task the emulator still knows, by id
    records: list[ManifestRecord]
    late_records: list[ManifestRecord]


@dataclass
class Runs:
    fanout: Run
    batch: Run
    home: Path
    images: dict[str, list[Path]]


def _run(
    emulator: Emulator, env: dict[str, str], dag_id: str, seed: int, faults: dict, conf: dict
) -> DagRunResult:
    emulator.reset()
    emulator.configure(**ACCOUNT, seed=seed, faults=faults)
    return run_dag_test(env, dag_id, conf, timeout=400)


@pytest.fixture(scope="module")
def runs(emulator_server, airflow_home, tmp_path_factory) -> Runs:
    emulator = Emulator(emulator_server, SECRET_TOKEN)
    original = requests.get(f"{emulator.url}/_emulator/config", timeout=10).json()
    work = tmp_path_factory.mktemp("dag-runs")
    images = {
        "fanout": write_images(work / "fanout", FANOUT_IMAGES),
        "batch": write_images(work / "batch", BATCH_IMAGES, start=100),
        "late": write_images(work / "late", 1, start=900),
    }
    env = airflow_env(
        airflow_home,
        {
            **connection_env(emulator.url, SECRET_TOKEN, timeout=1),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW_VAR_APICORE_NOTIFY_HOOK": f"http://bot:{HOOK_PASSWORD}@127.0.0.1:9/hook",
            "RELIABILITY_EMULATOR_URL": emulator.url,
        },
    )
    try:
        fanout_conf = {
            "image_dir": str(work / "fanout"),
            "output_dir": str(work / "fanout-out"),
            "late_image": str(images["late"][0]),
        }
        fanout = _run(emulator, env, "reliability_fanout", FANOUT_SEED, FANOUT_FAULTS, fanout_conf)
        fanout_run = Run(
            fanout,
            emulator.stats(),
            _tasks(emulator),
            read_manifest(work / "fanout-out" / "manifest.jsonl"),
            [],
        )
        batch_conf = {
            "image_dir": str(work / "batch"),
            "manifest_path": str(work / "batch.jsonl"),
            "late_dir": str(work / "late"),
            "late_manifest_path": str(work / "late.jsonl"),
        }
        batch = _run(emulator, env, "reliability_batch", BATCH_SEED, BATCH_FAULTS, batch_conf)
        batch_run = Run(
            batch,
            emulator.stats(),
            _tasks(emulator),
            read_manifest(work / "batch.jsonl"),
            read_manifest(work / "late.jsonl"),
        )
    finally:
        emulator.reset()
        requests.put(f"{emulator.url}/_emulator/config", json=original, timeout=10).raise_for_status()
    assert original["tokens"] == [TEST_TOKEN]
    return Runs(fanout_run, batch_run, airflow_home, images)


def _tasks(emulator: Emulator) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in requests.get(f"{emulator.url}/_emulator/tasks", timeout=10).json()}


def segments(result: DagRunResult, task_id: str) -> dict[int, str]:
    """Each (mapped) task's log in the ``dags test`` output, deferrals and resumes included."""
    found = {}
    start = rf"\[DAG TEST\] starting task_id={task_id} map_index=(-?\d+) "
    pattern = start + rf"(.*?)\[DAG TEST\] end task task_id={task_id} "
    for match in re.finditer(pattern, result.output, flags=re.DOTALL):
        found[int(match.group(1))] = found.get(int(match.group(1)), "") + match.group(2)
    return found


def failure(log: str) -> tuple[str, str] | None:
    """(exception class, message) of the provider error that failed a task, or None."""
    errors = re.findall(r"^airflow_provider_apicore\.exceptions\.(\w+): (.*)$", log, flags=re.MULTILINE)
    return errors[-1] if errors else None


def injected(run: Run, kind: str) -> int:
    return run.stats["faults_injected"][kind]


# ------------------------------------------------------------------------------------ fan-out
def test_fanout_every_request_fault_class_was_injected_and_retried(runs):
    run = runs.fanout
    missing = [kind for kind in (*REQUEST_FAULTS, "queue_full") if injected(run, kind) == 0]
    assert not missing, f"seed {FANOUT_SEED} no longer hits {missing}: pick another (see the comment above)"
    outcomes = {i: failure(log) for i, log in segments(run.result, "describe").items()}
    assert len(outcomes) == FANOUT_IMAGES
    retried_kinds = {
        "ApicoreHTTPError",
        "ApicoreUnreachableError",
        "ApicoreResponseError",
        "ApicoreQueueFullError",
    }
    assert not [o for o in outcomes.values() if o and o[0] in retried_kinds], outcomes
    # Code 23: nothing was accepted, the operator submitted again; every image has exactly one job.
    stats = run.stats
    assert stats["submissions_rejected"].get("23", 0) == injected(run, "queue_full")
    assert stats["submissions_accepted"] == stats["tasks_created"] == FANOUT_IMAGES
    assert stats["duplicate_submissions"] == 0


def test_fanout_task_faults_fail_their_mapped_task_with_the_specific_error(runs):
    run = runs.fanout
    outcomes = {i: failure(log) for i, log in segments(run.result, "describe").items()}
    by_error: dict[str, list[str]] = {}
    for outcome in outcomes.values():
        if outcome:
            by_error.setdefault(outcome[0], []).append(outcome[1])
    assert set(by_error) <= {"TaskFailedError", "TaskTimeoutError", "TaskNotFoundError"}, by_error
    assert len(by_error.get("TaskFailedError", [])) == injected(run, "task_failure") >= 1
    assert len(by_error.get("TaskTimeoutError", [])) == injected(run, "stuck") >= 1
    assert len(by_error.get("TaskNotFoundError", [])) == injected(run, "vanish") >= 1
    assert all(any(reason in m for reason in FAIL_REASONS) for m in by_error["TaskFailedError"])
    assert all("last seen status IN_PROGRESS" in m for m in by_error["TaskTimeoutError"])
    succeeded = sorted(i for i, o in outcomes.items() if o is None)
    assert (
        sorted(
            i for (t, i), state in run.result.task_states.items() if t == "describe" and state == "success"
        )
        == succeeded
    )


def test_fanout_manifest_accounts_for_every_image_with_the_reason(runs):
    run = runs.fanout
    records = {Path(r.image).name: r for r in run.records}
    assert sorted(records) == sorted(p.name for p in runs.images["fanout"])
    counts = {status: sum(r.status == status for r in records.values()) for status in FINAL_STATUSES}
    assert sum(counts.values()) == FANOUT_IMAGES, "every record is final"
    assert counts["FAILURE"] == injected(run, "task_failure")
    assert counts[TIMEOUT] == injected(run, "stuck")
    assert counts[NOT_FOUND] == injected(run, "vanish")
    assert counts[SUCCESS] == FANOUT_IMAGES - counts["FAILURE"] - counts[TIMEOUT] - counts[NOT_FOUND]
    for record in records.values():
        if record.status == SUCCESS:
            assert len(record.prompts) == 4 and record.error is None
        else:
            assert record.error, record
    assert all(records[n].error in FAIL_REASONS for n in records if records[n].status == "FAILURE")


def test_fanout_a_revoked_token_fails_the_next_task_naming_the_connection(runs):
    [log] = segments(runs.fanout.result, "describe_after_revocation").values()
    assert failure(log)[0] == "ApicoreAuthError"
    assert "connection 'apicore_default'" in failure(log)[1]
    assert injected(runs.fanout, "token_expired") == 1, "an auth error is never retried"


# ------------------------------------------------------------------------------------ batch
def test_batch_every_fault_class_was_injected(runs):
    missing = [
        kind
        for kind in (*REQUEST_FAULTS, "queue_full", "task_failure", "stuck", "vanish", "token_expired")
        if injected(runs.batch, kind) == 0
    ]
    assert not missing, f"seed {BATCH_SEED} no longer hits {missing}: pick another (see the comment above)"


def test_batch_accounts_for_every_image_with_a_final_status_and_a_reason(runs):
    run = runs.batch
    assert run.result.task_states[("describe_directory", -1)] == "success", run.result.output[-3000:]
    records = {Path(r.image).name: r for r in run.records}
    assert sorted(records) == sorted(p.name for p in runs.images["batch"]), "0 lost"
    summary = run.result.xcom("describe_directory")
    assert summary["total"] == BATCH_IMAGES
    assert summary["succeeded"] + summary["failed"] == BATCH_IMAGES
    for record in records.values():
        assert record.status in FINAL_STATUSES or record.status == UNKNOWN_FATE, record
        assert record.status == SUCCESS or record.error, record
        assert record.status != SUCCESS or len(record.prompts) == 4


def test_batch_never_resends_a_lost_answer_and_every_unnamed_job_is_an_unknown_fate_image(runs):
    run = runs.batch
    records = list(run.records)
    unknown = [r for r in records if r.status == UNKNOWN_FATE]
    assert unknown, f"seed {BATCH_SEED}: a submit answer was lost and recorded unknown_fate"
    for record in unknown:
        assert record.task_id is None and record.state and record.error, record
    by_sha = {r.sha256[:16]: r for r in records}
    referenced = {r.task_id for r in records if r.task_id}
    stats = run.stats
    # The emulator never deduplicates: a resend would be a second job for the same image.
    assert stats["duplicate_image_jobs"] == 0 and stats["duplicate_jobs"] == 0
    assert stats["jobs_created"] <= BATCH_IMAGES
    # Every job the server started that no record names by task id is the job of a lost answer: its
    # image is recorded unknown_fate with exactly that submission's state tag.
    for task in run.tasks.values():
        if task["id"] in referenced or task["state"] is None:
            continue
        *_, sha16, _attempt = task["state"].split("/")
        record = by_sha[sha16]
        assert record.status == UNKNOWN_FATE and record.state == task["state"], (record, task["state"])
    # Queue full: nothing accepted, the image went back in line.
    assert stats["submissions_rejected"].get("23", 0) == injected(run, "queue_full") >= 1


def test_batch_records_what_the_server_says_about_each_job(runs):
    run = runs.batch
    for record in run.records:
        task = run.tasks.get(record.task_id)
        if record.status == SUCCESS:
            assert task and task["status"] == SUCCESS
        elif record.status == "FAILURE":
            assert task and task["status"] == "FAILURE" and task["failReason"] == record.error
        elif record.status == TIMEOUT and task is None:
            # Vanished upstream before the batch ever saw it: still within the not-found grace (three
            # absent polls in a row, which faulty polls can stretch past the 3 s timeout).
            assert "last seen status unknown" in record.error, record
        elif record.status == TIMEOUT:
            assert task["status"] == "IN_PROGRESS", (record.image, record.error, task["status"])
            assert "last seen status IN_PROGRESS" in record.error
        elif record.status == NOT_FOUND:
            assert task is None, "vanished upstream"
    gone = [r for r in run.records if r.task_id and r.task_id not in run.tasks]
    assert len(gone) <= injected(run, "vanish"), "only vanished jobs are missing upstream"


def test_batch_a_revoked_token_fails_the_next_batch_naming_the_connection(runs):
    [log] = segments(runs.batch.result, "describe_after_revocation").values()
    assert failure(log)[0] == "ApicoreAuthError"
    assert "connection 'apicore_default'" in failure(log)[1]
    [record] = runs.batch.late_records
    assert record.task_id is None, "nothing was accepted"


def test_batch_after_an_auth_error_the_image_is_waiting_not_in_the_air(runs):
    [record] = runs.batch.late_records
    assert (record.status, record.attempts) == (PENDING, 0)


# ------------------------------------------------------------------------------------ secrets
def _everything(runs: Runs) -> list[tuple[str, bytes]]:
    """Every byte the runs left: both outputs (task logs, exceptions), every file of the Airflow home."""
    found = [
        ("fan-out output", runs.fanout.result.output.encode()),
        ("batch output", runs.batch.result.output.encode()),
    ]
    found += [(str(p), p.read_bytes()) for p in runs.home.rglob("*") if p.is_file()]
    found.append(("metadata DB text", airflow_db_dump(runs.home).encode()))
    return found


def test_the_token_appears_nowhere(runs):
    assert SECRET_TOKEN not in runs.fanout.result.output + runs.batch.result.output
    leaks = [where for where, data in _everything(runs) if SECRET_TOKEN.encode() in data]
    assert not leaks


def test_the_notify_hook_password_appears_nowhere(runs):
    leaks = [where for where, data in _everything(runs) if HOOK_PASSWORD.encode() in data]
    assert not leaks
    assert "notifyHook http://bot:***@127.0.0.1:9/hook" in runs.fanout.result.output


def test_rendered_fields_and_xcom_hold_the_hook_url_masked(runs):
    import sqlite3

    con = sqlite3.connect(runs.home / "airflow.db")
    try:
        rows = con.execute(
            "SELECT dag_id, task_id, rendered_fields FROM rendered_task_instance_fields "
            "WHERE dag_id IN ('reliability_fanout', 'reliability_batch')"
        ).fetchall()
        xcoms = con.execute(
            "SELECT value FROM xcom WHERE dag_id IN ('reliability_fanout', 'reliability_batch')"
        ).fetchall()
    finally:
        con.close()
    hooks = [json.loads(fields).get("notify_hook") for _, _, fields in rows]
    assert hooks and all(h is None or "***" in h for h in hooks), hooks
    assert any(h and "***" in h for h in hooks)
    assert xcoms and not any(HOOK_PASSWORD in str(v) or SECRET_TOKEN in str(v) for (v,) in xcoms)
