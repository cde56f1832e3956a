"""
MJBatchDescribeOperator and the token's balance, against the emulator's billing over loopback HTTP:
the pre-flight refusal, the clean stop when the balance runs out (in flight followed to the end, the
rest left ``pending``), the rerun after a top-up, ``min_quota_usd``, and the spend in the summary.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_apicore.exceptions import ApicoreQuotaExceededError
from airflow_provider_apicore.manifest import PENDING, SUCCESS, read_manifest
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from airflow_provider_apicore.operators.describe import MJDescribeOperator
from airflow_provider_apicore.triggers.task import MJTaskTrigger
from tests.helpers.airflow_run import airflow_env, run_dag_test
from tests.helpers.imagegen import make_png

CONTEXT = {"ti": SimpleNamespace(dag_id="quota_dag", run_id="manual__1")}
FAST = {"job_seconds": 0.2, "concurrency": 10, "queue_size": 100}
PRICE = 0.05
DAGS = Path(__file__).resolve().parent / "quota_dags"


async def first_event(trigger: MJTaskTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def billing(emulator, **changes: Any) -> dict[str, Any]:
    response = requests.put(f"{emulator.url}/_emulator/billing", json=changes, timeout=10)
    response.raise_for_status()
    return response.json()


def balance(emulator, usd: float, used: float = 0.0) -> None:
    """The test token's balance, describe priced at PRICE."""
    billing(
        emulator,
        prices_usd={"mj_describe": PRICE},
        accounts={emulator.token: {"balance_usd": usd, "used_usd": used}},
    )


def images(directory: Path, count: int, start: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        (directory / f"image {i:03d}.png").write_bytes(make_png(4 + i % 5, 3 + i % 7, (i * 5 % 256, 90, 120)))
    return directory


def operator(tmp_path: Path, **kwargs: Any) -> MJBatchDescribeOperator:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("max_in_flight", 5)
    kwargs.setdefault("source", str(tmp_path / "src"))
    kwargs.setdefault("manifest_path", str(tmp_path / "out" / "manifest.jsonl"))
    return MJBatchDescribeOperator(task_id="describe_all", **kwargs)


def statuses(tmp_path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in read_manifest(str(tmp_path / "out" / "manifest.jsonl")):
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts


def test_forty_images_on_a_balance_for_twenty_five_stop_cleanly_and_a_rerun_describes_the_fifteen(
    tmp_path, apicore_conn, capfd
):
    apicore_conn.configure(**FAST)
    balance(apicore_conn, 25 * PRICE + 0.02)  # 1.27 USD: 25 images, then 0.02 left
    images(tmp_path / "src", 40)
    with pytest.raises(ApicoreQuotaExceededError) as info:
        operator(tmp_path, report_balance=True).execute(CONTEXT)
    err = info.value
    assert err.remaining_usd == pytest.approx(0.02)
    assert "0.0200 USD" in str(err) and "15 images were not sent and stay pending" in str(err)
    assert "quota_not_enough" in str(err) and "Top up" in str(err)
    # 25 described (the jobs in flight at the refusal were followed to the end), 15 never sent.
    assert statuses(tmp_path) == {SUCCESS: 25, PENDING: 15}
    stats = apicore_conn.stats()
    assert (stats["tasks_created"], stats["quota_refused"]) == (25, 1)
    out = capfd.readouterr()
    assert "Stopped submitting: APICore refused a submission for balance" in out.out + out.err

    balance(apicore_conn, 1.0, used=1.25)  # topped up
    summary = operator(tmp_path, report_balance=True).execute(CONTEXT)
    assert statuses(tmp_path) == {SUCCESS: 40}
    stats = apicore_conn.stats()
    assert stats["tasks_created"] == 40 and stats["duplicate_submissions"] == 0  # exactly the 15
    assert summary["succeeded"] == 40
    assert summary["balance_before_usd"] == pytest.approx(1.0)
    assert summary["balance_after_usd"] == pytest.approx(0.25)
    assert summary["spent_usd"] == pytest.approx(15 * PRICE)
    assert summary["unlimited"] is False


def test_a_balance_spent_to_exactly_zero_loses_nothing_and_the_rerun_finishes(tmp_path, apicore_conn):
    # At zero the gateway refuses the token everywhere (401 额度已用尽), polls included: the task fails
    # with the jobs in flight recorded by id, and the rerun after a top-up follows them.
    apicore_conn.configure(**{**FAST, "job_seconds": 1.0})
    balance(apicore_conn, 10 * PRICE)
    images(tmp_path / "src", 14)
    with pytest.raises(ApicoreQuotaExceededError) as info:
        operator(tmp_path).execute(CONTEXT)
    assert info.value.status == 401 and "Top up" in str(info.value)
    assert apicore_conn.token not in str(info.value)
    counts = statuses(tmp_path)
    assert counts.get(PENDING) == 4 and sum(counts.values()) == 14 and "rejected" not in counts
    assert apicore_conn.stats()["tasks_created"] == 10
    balance(apicore_conn, 1.0, used=0.5)
    assert operator(tmp_path).execute(CONTEXT)["succeeded"] == 14
    assert apicore_conn.stats()["tasks_created"] == 14 and statuses(tmp_path) == {SUCCESS: 14}


def test_deferrable_batch_stops_on_the_balance_the_same_way(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    balance(apicore_conn, 10 * PRICE + 0.02)
    images(tmp_path / "src", 16)
    op = operator(tmp_path, deferrable=True, max_in_flight=4, report_balance=True)
    step = lambda: op.execute(CONTEXT)  # noqa: E731
    with pytest.raises(ApicoreQuotaExceededError) as info:
        for _ in range(50):
            try:
                step()
                break
            except TaskDeferred as deferred:
                event = asyncio.run(first_event(deferred.trigger))
                step = lambda event=event: op.execute_complete(CONTEXT, event)  # noqa: E731
    assert info.value.remaining_usd == pytest.approx(0.02) and "6 images were not sent" in str(info.value)
    assert statuses(tmp_path) == {SUCCESS: 10, PENDING: 6}
    assert apicore_conn.stats()["tasks_created"] == 10


def test_preflight_refuses_a_batch_the_balance_cannot_pay_and_sends_nothing(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    balance(apicore_conn, 1.27)
    images(tmp_path / "src", 40)
    with pytest.raises(ApicoreQuotaExceededError) as info:
        operator(tmp_path, estimated_cost_per_image_usd=PRICE).execute(CONTEXT)
    assert (info.value.remaining_usd, info.value.required_usd) == (pytest.approx(1.27), pytest.approx(2.0))
    assert "40 pending images" in str(info.value) and "2.0000 USD" in str(info.value)
    assert apicore_conn.stats()["requests"]["submit"] == 0
    assert statuses(tmp_path) == {PENDING: 40}
    # The same estimate on a balance that covers it starts, and says what it spent.
    balance(apicore_conn, 2.5)
    summary = operator(tmp_path, estimated_cost_per_image_usd=PRICE).execute(CONTEXT)
    assert summary["succeeded"] == 40 and summary["spent_usd"] == pytest.approx(2.0)


def test_min_quota_usd_stops_submitting_before_the_gateway_refuses_reading_once_per_interval(
    tmp_path, apicore_conn
):
    apicore_conn.configure(**FAST)
    balance(apicore_conn, 1.0)
    images(tmp_path / "src", 40)
    op = operator(tmp_path, min_quota_usd=0.5, max_in_flight=2, poll_interval=0.2)
    started = time.monotonic()
    with pytest.raises(ApicoreQuotaExceededError, match=r"below min_quota_usd=0\.5") as info:
        op.execute(CONTEXT)
    elapsed = time.monotonic() - started
    stats = apicore_conn.stats()
    assert stats["quota_refused"] == 0  # stopped by the floor, not by APICore
    created = stats["tasks_created"]
    # The floor is crossed after the 11th image; reads once per interval let a few more through.
    assert 11 <= created <= 16
    assert statuses(tmp_path) == {SUCCESS: created, PENDING: 40 - created}
    assert info.value.remaining_usd == pytest.approx(1.0 - created * PRICE)
    # Balance reads: before the first submit, at most one per poll interval, one at the end.
    reads = stats["requests"]["other"]
    assert reads <= elapsed / 0.2 + 3 and reads < created


def test_without_quota_options_the_summary_is_unchanged_and_an_unlimited_token_reports_its_spend(
    tmp_path, apicore_conn, capfd
):
    apicore_conn.configure(**FAST)
    images(tmp_path / "src", 6)
    summary = operator(tmp_path).execute(CONTEXT)
    assert "balance_before_usd" not in summary and apicore_conn.stats()["requests"]["other"] == 0
    images(tmp_path / "src2", 4, start=100)
    manifest = str(tmp_path / "out2" / "manifest.jsonl")
    summary = operator(
        tmp_path, source=str(tmp_path / "src2"), manifest_path=manifest, report_balance=True
    ).execute(CONTEXT)
    assert summary["unlimited"] is True and summary["spent_usd"] == pytest.approx(4 * PRICE)
    assert summary["balance_before_usd"] is None and summary["balance_after_usd"] is None
    out = capfd.readouterr()
    assert "balance before unlimited, after unlimited, spent 0.2000 USD" in out.out + out.err


def test_single_image_operator_fails_with_the_same_error_saying_what_to_do(tmp_path, apicore_conn):
    balance(apicore_conn, 0.01)
    path = tmp_path / "one.png"
    path.write_bytes(make_png(8, 8))
    op = MJDescribeOperator(task_id="d", image=str(path), wait_for_completion=False)
    ti = SimpleNamespace(xcom_push=lambda key, value: None, map_index=-1)
    with pytest.raises(ApicoreQuotaExceededError) as info:
        op.execute({"ti": ti})
    message = str(info.value)
    assert "quota_not_enough" in message and "Top up the API token of connection 'apicore_default'" in message
    assert "clear this task" in message and apicore_conn.token not in message
    assert apicore_conn.stats()["tasks_created"] == 0


# ----------------------------------------------------------------------------- airflow dags test


@pytest.mark.e2e
def test_dags_test_stops_on_the_balance_and_the_rerun_after_a_top_up_describes_the_rest(
    tmp_path, emulator, airflow_home
):
    emulator.configure(**FAST)
    balance(emulator, 25 * PRICE + 0.02)
    conf = {
        "image_dir": str(images(tmp_path / "src", 40)),
        "manifest": str(tmp_path / "out" / "manifest.jsonl"),
    }
    env = airflow_env(airflow_home, {**emulator.conn_env(), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS)})

    first = run_dag_test(env, "apicore_batch_quota", conf, timeout=300)
    assert first.states("describe_all") == ["failed"], first.output[-3000:]
    assert "ApicoreQuotaExceededError" in first.output and "Balance left: 0.0200 USD" in first.output
    assert "15 images were not sent and stay pending" in first.output
    assert statuses(tmp_path) == {SUCCESS: 25, PENDING: 15}
    assert emulator.stats()["tasks_created"] == 25
    assert emulator.token not in first.output

    balance(emulator, 1.0, used=1.25)
    second = run_dag_test(env, "apicore_batch_quota", conf, timeout=300)
    assert second.states("describe_all") == ["success"], second.output[-3000:]
    summary = second.xcom("describe_all")
    assert summary["succeeded"] == 40 and summary["by_status"] == {SUCCESS: 40}
    assert (summary["balance_before_usd"], summary["balance_after_usd"]) == (1.0, 0.25)
    assert summary["spent_usd"] == pytest.approx(0.75)
    assert statuses(tmp_path) == {SUCCESS: 40}
    assert emulator.stats()["tasks_created"] == 40  # exactly the 15 more
    assert "balance before 1.0000 USD left" in second.output


@pytest.mark.e2e
def test_dags_test_preflight_refuses_the_batch_with_both_numbers(tmp_path, emulator, airflow_home):
    balance(emulator, 1.27)
    conf = {
        "image_dir": str(images(tmp_path / "src", 40)),
        "manifest": str(tmp_path / "out" / "manifest.jsonl"),
    }
    env = airflow_env(airflow_home, {**emulator.conn_env(), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS)})
    run = run_dag_test(env, "apicore_batch_quota_preflight", conf, timeout=300)
    assert run.states("describe_all") == ["failed"], run.output[-3000:]
    assert "would cost 2.0000 USD, more than the 1.2700 USD left" in run.output
    assert emulator.stats()["requests"]["submit"] == 0
