"""
A retry of a family operator re-attaches to its job through ``task_state_store`` instead of paying
again, and a MODAL task left unconfirmed by a failed try is confirmed by the retry.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_apicore.exceptions import ApicoreUnreachableError, TaskTimeoutError
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.operators.action import MJActionOperator
from airflow_provider_apicore.operators.imagine import MJImagineOperator
from tests.operators.test_family_operators import FakeTI


class Store:
    """The task state store of one task instance: survives across tries (dict-backed)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def attempt(op: Any, store: Store | None) -> Any:
    op.poll_interval = 0.1
    context: dict[str, Any] = {"ti": FakeTI()}
    if store is not None:
        context["task_state_store"] = store
    return op.execute(context)


def submits(emulator) -> int:
    return emulator.stats()["requests"].get("submit", 0)


@pytest.mark.parametrize("durable", [True, False])
def test_a_retry_after_a_timeout_re_attaches_instead_of_imagining_again(apicore_conn, durable: bool) -> None:
    apicore_conn.configure(job_seconds=1.5, concurrency=4, gateway=False)
    store = Store()

    def op() -> MJImagineOperator:
        return MJImagineOperator(task_id="imagine", prompt="a red fox", timeout=0.3, durable=durable)

    with pytest.raises(TaskTimeoutError):
        attempt(op(), store)
    retry = op()
    retry.timeout = 30
    result = attempt(retry, store)
    assert result["status"] == "SUCCESS"
    # Durable: one paid job. Without the record the retry pays again (the fault is real).
    assert submits(apicore_conn) == (1 if durable else 2)


def test_a_modal_left_unconfirmed_is_confirmed_by_the_retry(apicore_conn, monkeypatch) -> None:
    apicore_conn.configure(job_seconds=0.2, concurrency=8, gateway=False)
    grid = attempt(MJImagineOperator(task_id="i", prompt="a red fox"), None)
    up = attempt(MJActionOperator(task_id="u", mj_task_id=grid["task_id"], action="upscale", index=1), None)
    store = Store()

    def op() -> MJActionOperator:
        return MJActionOperator(
            task_id="zoom", mj_task_id=up["task_id"], action="custom_zoom", prompt="a fox --zoom 1.5"
        )

    real = ApicoreHook.submit_modal
    calls = []

    def unreachable_once(self, payload, **kwargs):
        calls.append(payload["taskId"])
        if len(calls) == 1:  # the first try cannot reach APICore for the window (nothing sent)
            raise ApicoreUnreachableError("Could not reach APICore (test)")
        return real(self, payload, **kwargs)

    monkeypatch.setattr(ApicoreHook, "submit_modal", unreachable_once)
    with pytest.raises(ApicoreUnreachableError):
        attempt(op(), store)
    assert store.data["apicore_job"]["phase"] == "accepted"
    result = attempt(op(), store)
    assert result["status"] == "SUCCESS"
    assert calls[0] == calls[1]  # the retry confirmed the same MODAL task
    # imagine, upscale, one custom zoom (not a second), one window
    assert submits(apicore_conn) == 4
