"""MJBatchImagineOperator over loopback HTTP against the emulator: the batch engine, imagine action."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred
from PIL import Image

from airflow_provider_apicore.exceptions import ApicoreConfigError
from airflow_provider_apicore.manifest import REJECTED, SUBMITTED, SUCCESS, UNKNOWN_FATE, read_manifest
from airflow_provider_apicore.operators.batch_imagine import MJBatchImagineOperator, prompt_list
from airflow_provider_apicore.triggers.task import MJTaskTrigger

CONTEXT = {"ti": SimpleNamespace(dag_id="imagine_dag", run_id="manual__1")}
FAST = {"job_seconds": 0.2, "concurrency": 10, "queue_size": 100, "gateway": False}
PROMPTS = [f"a lighthouse on a cliff, study {i} --ar 3:2" for i in range(20)]


@pytest.fixture
def api(apicore_conn):
    apicore_conn.configure(**FAST)
    yield apicore_conn
    apicore_conn.configure(faults={})


def operator(tmp_path: Path, prompts, **kwargs) -> MJBatchImagineOperator:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("max_in_flight", 4)
    return MJBatchImagineOperator(
        task_id="imagine_all",
        prompts=prompts,
        manifest_path=str(tmp_path / "out" / "manifest.jsonl"),
        **kwargs,
    )


def by_prompt(op: MJBatchImagineOperator) -> dict[str, object]:
    return {r.prompt: r for r in read_manifest(op.manifest_path)}


async def _first_event(trigger: MJTaskTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def test_prompts_from_a_rendered_xcom_list_and_bad_arguments():
    assert prompt_list("['a fox', 'a cat']") == ["a fox", "a cat"]
    assert prompt_list('["a fox"]') == ["a fox"]
    assert prompt_list("a fox") == ["a fox"]
    with pytest.raises(ApicoreConfigError, match="prompts must be a non-empty list"):
        MJBatchImagineOperator(task_id="x", prompts=[], manifest_path="/tmp/m.jsonl")


def test_twenty_prompts_four_in_flight_all_stored_as_images(tmp_path, api):
    out = tmp_path / "grids"
    op = operator(tmp_path, PROMPTS, output_path=str(out), split_grid=True)
    summary = op.execute(CONTEXT)
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (20, 20, 0)
    stats = api.stats()
    assert stats["submissions_accepted"] == 20
    assert stats["max_active"] <= 4  # the account could run 10: the batch held it to 4
    assert stats["duplicate_prompt_jobs"] == 0
    records = by_prompt(op)
    assert set(records) == {p for p in PROMPTS}
    for record in records.values():
        assert record.status == SUCCESS and record.task_id and record.image_url
        assert [Path(f).name for f in record.files] == [f"{record.task_id}_{n}.png" for n in range(1, 5)]
        for name in record.files:
            with Image.open(name) as image:
                assert image.format == "PNG" and image.width > 0
    assert len(list(out.iterdir())) == 80


def test_a_banned_word_is_rejected_with_the_word_and_the_rest_succeed(tmp_path, api):
    op = operator(tmp_path, ["a red fox in snow", "a pool of blood at dawn", "a quiet harbour"])
    summary = op.execute(CONTEXT)
    assert (summary["succeeded"], summary["failed"]) == (2, 1)
    banned = by_prompt(op)["a pool of blood at dawn"]
    assert banned.status == REJECTED and "blood" in banned.error and "code 24" in banned.error
    assert api.stats()["submissions_accepted"] == 2


def test_accept_then_502_is_unknown_fate_never_resent(tmp_path, api):
    api.configure(faults={"http_5xx_after": 1.0, "endpoints": ["submit"]})
    prompts = PROMPTS[:6]
    summary = operator(tmp_path, prompts).execute(CONTEXT)
    assert summary["unknown_fate"] == 6 and summary["succeeded"] == 0
    api.configure(faults={})
    # A rerun over the same manifest sends none of them again (on_unknown_fate='record').
    again = operator(tmp_path, prompts).execute(CONTEXT)
    assert again["unknown_fate"] == 6
    stats = api.stats()
    assert stats["requests"]["submit"] == 6
    assert stats["jobs_created"] == 6  # the server did create one job per prompt
    assert stats["duplicate_prompt_jobs"] == 0
    assert {r.status for r in read_manifest(tmp_path / "out" / "manifest.jsonl")} == {UNKNOWN_FATE}


def test_a_retry_after_a_failed_try_sends_nothing_twice(tmp_path, api):
    api.configure(job_seconds=1.0)
    op = operator(tmp_path, PROMPTS[:10], deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(CONTEXT)
    # The try died while deferred: the manifest holds the four accepted task ids.
    assert [r.status for r in read_manifest(op.manifest_path)].count(SUBMITTED) == 4
    retry = operator(tmp_path, PROMPTS[:10])
    summary = retry.execute(CONTEXT)
    assert summary["succeeded"] == 10
    stats = api.stats()
    assert stats["submissions_accepted"] == 10
    assert stats["duplicate_prompt_jobs"] == 0


def test_deferrable_batch_resumes_from_the_manifest_until_done(tmp_path, api):
    op = operator(tmp_path, PROMPTS[:8], deferrable=True)
    try:
        op.execute(CONTEXT)
        raise AssertionError("a batch with work in flight must defer")
    except TaskDeferred as deferred:
        current = deferred
    rounds = 0
    while True:
        rounds += 1
        event = asyncio.run(_first_event(current.trigger))
        try:
            summary = op.execute_complete(CONTEXT, event)
            break
        except TaskDeferred as deferred:
            current = deferred
    assert summary["succeeded"] == 8 and rounds >= 2
    assert api.stats()["submissions_accepted"] == 8
    assert api.stats()["duplicate_prompt_jobs"] == 0
