"""
The durable record of MJSubmitOperator, try by try, over loopback HTTP against a non-deduplicating
emulator. Each "retry" is a fresh operator instance sharing only the task state store, as a retry on
another worker would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_apicore.durable import STATE_KEY
from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    SubmissionFateUnknownError,
    SubmissionInDoubtError,
)
from airflow_provider_apicore.operators.describe import MJDescribeOperator
from tests.helpers.imagegen import make_png


class Store:
    """``task_state_store``'s get/set/delete; outlives operator instances like the real one."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes: list[dict[str, Any]] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value
        self.writes.append(value)

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


class TI:
    dag_id = "d"
    try_number = 1
    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def context(store: Store) -> dict[str, Any]:
    return {"ti": TI(), "task_state_store": store}


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "cat.png"
    path.write_bytes(make_png(16, 16, (10, 120, 200)))
    return path


def op(png: Path, **kwargs: Any) -> MJDescribeOperator:
    return MJDescribeOperator(
        task_id="describe", image=str(png), wait_for_completion=True, poll_interval=0.1, **kwargs
    )


def test_the_record_is_written_before_sending_and_on_acceptance(apicore_conn, png):
    store = Store()
    result = op(png).execute(context(store))
    assert len(result["prompts"]) == 4
    phases = [w["phase"] for w in store.writes]
    assert phases == ["submitting", "accepted"]
    assert store.values[STATE_KEY]["task_id"] == result["task_id"]
    assert store.writes[0]["state"].startswith("d/describe/1/")


def test_a_retry_of_a_finished_job_returns_its_result_without_a_request_to_submit(apicore_conn, png):
    store = Store()
    first = op(png).execute(context(store))
    submits = apicore_conn.stats()["requests"]["submit"]
    again = op(png).execute(context(store))
    assert again == first
    assert apicore_conn.stats()["requests"]["submit"] == submits


def test_a_retry_after_a_failed_job_submits_again(apicore_conn, png):
    store = Store()
    apicore_conn.configure(faults={"task_failure": 1.0})
    with pytest.raises(Exception, match="ended FAILURE"):
        op(png).execute(context(store))
    apicore_conn.configure(faults={})
    assert len(op(png).execute(context(store))["prompts"]) == 4
    assert apicore_conn.stats()["jobs_created"] == 2


@pytest.mark.parametrize("fault", ["http_5xx_after", "html_error_after", "drop_after"])
def test_a_lost_answer_is_never_sent_again_by_default(apicore_conn, png, fault):
    store = Store()
    apicore_conn.configure(faults={fault: 1.0, "endpoints": ["submit"]})
    first = context(store)
    with pytest.raises(SubmissionFateUnknownError):
        op(png).execute(first)
    assert store.values[STATE_KEY]["phase"] == "unknown_fate"
    assert first["ti"].pushed["unknown_fate"]["state"] == store.values[STATE_KEY]["state"]
    apicore_conn.configure(faults={})
    retry = context(store)
    with pytest.raises(SubmissionInDoubtError, match="may exist and be billed") as info:
        op(png).execute(retry)
    assert info.value.state == store.values[STATE_KEY]["state"]
    stats = apicore_conn.stats()
    assert stats["jobs_created"] == 1 and stats["requests"]["submit"] == 1, "the retry sent nothing"
    assert retry["ti"].pushed["unknown_fate"]["state"] == info.value.state


def test_on_unknown_fate_resubmit_sends_again_and_may_pay_twice(apicore_conn, png):
    store = Store()
    apicore_conn.configure(faults={"http_5xx_after": 1.0, "endpoints": ["submit"]})
    with pytest.raises(SubmissionFateUnknownError):
        op(png).execute(context(store))
    apicore_conn.configure(faults={})
    result = op(png, on_unknown_fate="resubmit").execute(context(store))
    assert len(result["prompts"]) == 4
    assert apicore_conn.stats()["jobs_created"] == 2, "the documented price of 'resubmit'"


def test_a_refusal_clears_the_mark_so_a_retry_may_submit(apicore_conn, png):
    store = Store()
    apicore_conn.configure(faults={"token_expired": True})
    with pytest.raises(ApicoreAuthError):
        op(png).execute(context(store))
    assert STATE_KEY not in store.values, "nothing was accepted: no job can exist"
    apicore_conn.configure(faults={})
    assert len(op(png).execute(context(store))["prompts"]) == 4
    assert apicore_conn.stats()["jobs_created"] == 1


def test_durable_false_keeps_nothing(apicore_conn, png):
    store = Store()
    op(png, durable=False).execute(context(store))
    assert store.values == {}


def test_the_default_retry_policy_fails_at_once_on_what_a_retry_cannot_fix():
    from airflow.sdk.definitions.retry_policy import RetryAction

    from airflow_provider_apicore.exceptions import ApicoreQueueFullError, PayloadValidationError

    policy = MJDescribeOperator(task_id="d", image="x.png").retry_policy
    decide = lambda err: policy.evaluate(err, 1, 3).action  # noqa: E731
    assert decide(ApicoreAuthError("c", 401)) is RetryAction.FAIL
    assert decide(PayloadValidationError("state", "too long")) is RetryAction.FAIL
    assert decide(SubmissionInDoubtError("t", "s", "c")) is RetryAction.FAIL
    assert decide(ApicoreQueueFullError(23, "full")) is RetryAction.RETRY
    assert decide(SubmissionFateUnknownError("/x", "HTTP 502")) is RetryAction.DEFAULT


def test_the_result_image_link_is_stored_for_the_task_view(apicore_conn, png):
    from airflow_provider_apicore.links import ApicoreResultImageLink

    ctx = context(Store())
    op(png).execute(ctx)
    url = ctx["ti"].pushed[ApicoreResultImageLink().xcom_key]
    assert url.startswith(apicore_conn.url) and url.endswith(".png")
    assert ApicoreResultImageLink() in MJDescribeOperator.operator_extra_links
