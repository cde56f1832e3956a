"""The emulator's fault injection on the family's endpoints: what the operators make of each fault."""

from __future__ import annotations

import pytest

from airflow_provider_apicore.exceptions import (
    ApicoreQueueFullError,
    ImageDownloadError,
    SubmissionFateUnknownError,
    TaskFailedError,
)
from airflow_provider_apicore.operators.action import MJActionOperator
from airflow_provider_apicore.operators.imagine import MJImagineOperator
from tests.operators.test_family_operators import FakeTI


def execute(op):
    op.poll_interval = 0.1
    return op.execute({"ti": FakeTI()})


@pytest.fixture
def api(apicore_conn, monkeypatch):
    apicore_conn.use_connection(monkeypatch, max_retries=1)
    apicore_conn.configure(job_seconds=0.2, concurrency=8, gateway=False)
    yield apicore_conn
    apicore_conn.configure(gateway=False, faults={})


def test_an_imagine_answered_502_after_processing_is_never_resent(api) -> None:
    api.configure(faults={"http_5xx_after": 1.0, "endpoints": ["submit"]})
    with pytest.raises(SubmissionFateUnknownError):
        execute(MJImagineOperator(task_id="i", prompt="a fox"))
    stats = api.stats()
    assert stats["requests"]["submit"] == 1 and stats["jobs_created"] == 1  # one job, not two


def test_queue_full_is_retried_then_reported_with_nothing_created(api) -> None:
    api.configure(faults={"queue_full": 1.0})
    with pytest.raises(ApicoreQueueFullError):
        execute(MJImagineOperator(task_id="i", prompt="a fox", queue_full_retries=1))
    stats = api.stats()
    assert stats["requests"]["submit"] == 2 and stats["tasks_created"] == 0


def test_a_failed_action_reports_the_fail_reason(api) -> None:
    grid = execute(MJImagineOperator(task_id="i", prompt="a fox"))
    api.configure(faults={"task_failure": 1.0})
    with pytest.raises(TaskFailedError, match=r"FAILURE: .+"):
        execute(MJActionOperator(task_id="u", mj_task_id=grid["task_id"], action="upscale", index=2))


def test_an_image_that_cannot_be_downloaded_fails_after_retries(api, tmp_path) -> None:
    # Through the gateway, images are served at /mj/image/<id>, where request faults apply.
    api.configure(gateway=True, gateway_refresh=0.2)
    grid = execute(MJImagineOperator(task_id="i", prompt="a fox"))
    api.configure(faults={"html_error": 1.0, "endpoints": ["other"]})
    op = MJActionOperator(
        task_id="u", mj_task_id=grid["task_id"], action="upscale", index=1, output_path=str(tmp_path)
    )
    with pytest.raises(ImageDownloadError, match=r"HTTP 502; gave up after 2 attempts"):
        execute(op)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
