"""
MJBatchDescribeOperator picking up after a pause longer than its ``timeout``: a deferral whose trigger
waited until the deadline, or a retry after a crash. Jobs that finished upstream meanwhile must be
recorded as finished (the timeout applies only once the server has been asked), and a templated
``notifyHook`` with credentials must be masked in the rendered fields like MJDescribeOperator's.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from types import SimpleNamespace

import jinja2
import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.images import load_image
from airflow_provider_apicore.manifest import (
    SUBMITTED,
    SUCCESS,
    ManifestRecord,
    now_ms,
    read_manifest,
    write_manifest,
)
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from tests.reliability.conftest import write_images

CONTEXT = {"ti": SimpleNamespace(dag_id="resume", run_id="manual__1")}


async def _event(trigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def test_jobs_that_finished_while_the_trigger_waited_are_recorded_as_finished(apicore_conn, tmp_path):
    apicore_conn.configure(job_seconds=0.2, concurrency=10)
    write_images(tmp_path / "src", 3)
    op = MJBatchDescribeOperator(
        task_id="b",
        source=str(tmp_path / "src"),
        manifest_path=str(tmp_path / "m.jsonl"),
        poll_interval=0.1,
        timeout=1,
        deferrable=True,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)
    time.sleep(1.2)  # the triggerer was busy: the event arrives after the deadline, with every job done
    event = asyncio.run(_event(deferred.value.trigger))
    assert all(t["status"] == SUCCESS for t in event["tasks"].values())
    summary = op.execute_complete(CONTEXT, event)
    assert summary["by_status"] == {SUCCESS: 3}


def test_a_retry_later_than_the_timeout_asks_the_server_before_giving_up_on_a_job(apicore_conn, tmp_path):
    apicore_conn.configure(job_seconds=0.1, concurrency=10)
    [path] = write_images(tmp_path / "src", 1)
    hook = ApicoreHook()
    task_id = hook.submit_describe({"base64": load_image(path).to_data_url()}).task_id
    time.sleep(0.5)  # the job finishes upstream while the worker is dead
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # What the killed try left: the job accepted 10 s ago, longer ago than the 5 s timeout.
    record = ManifestRecord(
        image=str(path),
        status=SUBMITTED,
        sha256=digest,
        task_id=task_id,
        attempts=1,
        accepted_at=now_ms() - 10_000,
    )
    write_manifest(tmp_path / "m.jsonl", [record])
    op = MJBatchDescribeOperator(
        task_id="b",
        source=str(tmp_path / "src"),
        manifest_path=str(tmp_path / "m.jsonl"),
        poll_interval=0.1,
        timeout=5,
    )
    op.execute(CONTEXT)
    [after] = read_manifest(tmp_path / "m.jsonl")
    assert after.status == SUCCESS, after.error


def test_a_templated_hook_url_is_masked_in_the_batch_operators_rendered_fields(tmp_path):
    from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

    password = f"hookpw-{uuid.uuid4().hex[:12]}"
    op = MJBatchDescribeOperator(
        task_id="b",
        source=str(tmp_path),
        manifest_path=str(tmp_path / "m.jsonl"),
        notify_hook="{{ params.hook }}",
    )
    op.render_template_fields(
        {"params": {"hook": f"https://bot:{password}@hooks.example.com/cb"}}, jinja2.Environment()
    )
    assert password not in repr(_serialize_rendered_fields(op))
