"""
No unbounded loop: every wait has a timeout and every retry a cap.

:data:`LOOPS` lists every ``while True`` in the package with the tests below that prove it ends; the
audit fails when a loop is added or removed without updating it. For-loops are bounded by their
sequence (e.g. MJDescribeOperator's ``queue_full_retries``), Airflow's own sensor loop by the
sensor's ``timeout``. A ``timeout=None`` on an operator is an explicit "wait as long as it takes"
(the defaults are finite, see the last test); Airflow's ``execution_timeout`` still applies then.
"""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_apicore.emulator import EmulatorConfig, EmulatorServer
from airflow_provider_apicore.exceptions import ApicoreHTTPError, ApicoreQueueFullError
from airflow_provider_apicore.hooks.apicore import MAX_RETRY_AFTER, ApicoreHook, retry_delay
from airflow_provider_apicore.images import to_data_url
from airflow_provider_apicore.manifest import TIMEOUT, read_manifest
from airflow_provider_apicore.operators import batch_describe
from airflow_provider_apicore.operators.batch_describe import MAX_IDLE_BACKOFFS, MJBatchDescribeOperator
from airflow_provider_apicore.operators.describe import MJDescribeOperator
from airflow_provider_apicore.sensors.task import MJTaskSensor
from airflow_provider_apicore.triggers.task import MJTaskTrigger
from tests.reliability.conftest import fast_hook, unique_png, write_images

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_provider_apicore"
CONTEXT = {"ti": SimpleNamespace(dag_id="loops", run_id="manual__1")}

#: (module, function) of every ``while True`` -> the tests proving it ends.
LOOPS = {
    ("hooks/transport.py", "Transport.request"): [
        "test_a_server_that_always_answers_503_is_given_up_on_after_the_retry_cap",
        "test_retry_after_is_capped",
    ],
    ("hooks/transport.py", "Transport.arequest"): ["test_the_async_retry_loop_is_capped_too"],
    ("hooks/download.py", "ImageFetcher.fetch"): ["test_an_image_download_that_always_fails_gives_up"],
    ("operators/base.py", "MJSubmitOperator._submit"): [
        "test_a_single_job_meeting_a_queue_that_never_frees_gives_up"
    ],
    ("operators/action.py", "MJActionOperator._settled"): [
        "test_waiting_for_a_new_task_to_report_a_status_is_bounded"
    ],
    ("hooks/apicore.py", "ApicoreHook.wait_for_tasks"): [
        "test_waiting_for_a_stuck_task_ends_at_the_timeout",
        "test_waiting_while_the_server_answers_503_ends_with_an_error",
    ],
    ("triggers/task.py", "MJTaskTrigger.run"): [
        "test_the_trigger_ends_at_its_end_time_for_a_stuck_task",
        "test_the_trigger_ends_with_an_error_event_when_the_server_always_answers_503",
    ],
    ("operators/batch_describe.py", "MJBatchDescribeOperator._drive"): [
        "test_a_batch_with_a_stuck_job_ends_at_the_timeout",
        "test_a_batch_meeting_a_queue_that_never_frees_gives_up",
        "test_a_batch_whose_polls_always_fail_ends_with_the_error",
    ],
    # Reads more at a time until a whole line is in: ends at the first line, or at the plan's end.
    ("manifest.py", "Manifest.read_plan"): ["test_a_plan_line_longer_than_a_read_block_is_read_whole"],
    ("emulator/state.py", "EmulatorState._new_id"): ["test_emulator_task_ids_are_unique_without_waiting"],
    ("emulator/connection.py", "drain_request"): ["test_emulator_service_loops_end_when_the_server_stops"],
    # Reads one request body: ends with its last chunk or the client's disconnect.
    ("emulator/gate.py", "read_body"): ["test_emulator_service_loops_end_when_the_server_stops"],
    ("emulator/notify.py", "Notifier._worker"): ["test_emulator_service_loops_end_when_the_server_stops"],
    ("emulator/app.py", "create_app.run_ticker"): ["test_emulator_service_loops_end_when_the_server_stops"],
}


def _while_true_loops() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))

        def visit(node: ast.AST, scope: list[str], rel: str = str(path.relative_to(PACKAGE))) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    visit(child, [*scope, child.name])
                    continue
                if (
                    isinstance(child, ast.While)
                    and isinstance(child.test, ast.Constant)
                    and child.test.value is True
                ):
                    found.add((rel, ".".join(scope)))
                visit(child, scope)

        visit(tree, [])
    return found


def test_every_while_true_loop_is_listed_with_the_tests_that_prove_it_ends():
    assert _while_true_loops() == set(LOOPS)
    names = set(globals())
    for tests in LOOPS.values():
        assert set(tests) <= names, tests


def test_a_plan_line_longer_than_a_read_block_is_read_whole(tmp_path):
    from airflow_provider_apicore.manifest import Manifest

    manifest = Manifest(tmp_path / "m.jsonl", freeze_finished=True)
    long_error = "x" * 5000
    manifest.add("a.png").error = long_error
    manifest.add("b.png")
    manifest.commit()
    name, written = manifest.write_plan(["a.png", "b.png", "gone.png"])
    assert written == 2  # an image the manifest does not know is left out, and not counted
    reader = Manifest(tmp_path / "m.jsonl", freeze_finished=True)
    taken = reader.read_plan(name, 0, max_bytes=16)
    assert taken[0][0] == "a.png" and reader.get("a.png").error == long_error
    assert [image for image, _ in reader.read_plan(name, taken[0][1], max_bytes=16)] == ["b.png"]
    # At the plan's end: nothing, at once.
    size = (tmp_path / "m.jsonl.journal" / name).stat().st_size
    assert reader.read_plan(name, size, max_bytes=16) == []


# ------------------------------------------------------------------------------------ the hook
@pytest.fixture
def hook(emulator, monkeypatch):
    emulator.use_connection(monkeypatch, timeout=1, max_retries=20)
    return fast_hook()


def test_a_server_that_always_answers_503_is_given_up_on_after_the_retry_cap(emulator, hook):
    the_hook, slept = hook
    emulator.configure(faults={"http_5xx": 1.0})
    with pytest.raises(ApicoreHTTPError, match=r"21 times; gave up \(max_retries=20\)"):
        the_hook.list_tasks(["1"])
    assert emulator.stats()["requests"]["list"] == 21 and len(slept) == 20


def test_retry_after_is_capped():
    assert retry_delay(0, 1.0, 30.0, "31536000") == MAX_RETRY_AFTER == 300.0
    assert retry_delay(19, 1.0, 30.0) <= 30.0, "exponential backoff stops growing at max_backoff"


def test_the_async_retry_loop_is_capped_too(emulator, hook):
    the_hook, _ = hook
    the_hook.retry_backoff = 0.001
    emulator.configure(faults={"http_5xx": 1.0})
    with pytest.raises(ApicoreHTTPError, match="21 times"):
        asyncio.run(the_hook.alist_tasks(["1"]))
    assert emulator.stats()["requests"]["list"] == 21


def _stuck_task(emulator, the_hook: ApicoreHook) -> str:
    emulator.configure(faults={"stuck": 1.0})
    return the_hook.submit_describe({"base64": to_data_url(unique_png(7))}).task_id


def test_waiting_for_a_stuck_task_ends_at_the_timeout(emulator, hook):
    the_hook, _ = hook
    task_id = _stuck_task(emulator, the_hook)
    started = time.monotonic()
    event = the_hook.wait_for_tasks([task_id], poll_interval=0.05, timeout=0.5)
    assert event["status"] == "timeout" and event["pending"] == [task_id]
    assert time.monotonic() - started < 2


def test_waiting_while_the_server_answers_503_ends_with_an_error(emulator, hook):
    the_hook, _ = hook
    task_id = _stuck_task(emulator, the_hook)
    emulator.configure(faults={"http_5xx": 1.0})
    with pytest.raises(ApicoreHTTPError):
        the_hook.wait_for_tasks([task_id], poll_interval=0.05, timeout=None)


# ------------------------------------------------------------------------------------ the trigger
async def _event(trigger: MJTaskTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def test_the_trigger_ends_at_its_end_time_for_a_stuck_task(emulator, hook):
    the_hook, _ = hook
    task_id = _stuck_task(emulator, the_hook)
    trigger = MJTaskTrigger([task_id], poll_interval=0.05, end_time=time.time() + 0.5)
    event = asyncio.run(_event(trigger))
    assert event["status"] == "timeout" and event["tasks"][task_id]["status"] == "IN_PROGRESS"


def test_the_trigger_ends_with_an_error_event_when_the_server_always_answers_503(emulator, monkeypatch):
    emulator.use_connection(monkeypatch, timeout=1, max_retries=2)
    emulator.configure(faults={"http_5xx": 1.0})
    monkeypatch.setattr(ApicoreHook, "__init__", _fast_init(ApicoreHook.__init__))
    event = asyncio.run(_event(MJTaskTrigger(["1"], poll_interval=0.05, end_time=None)))
    assert event["status"] == "error" and "3 times; gave up" in event["message"]


def _fast_init(init):
    def fast(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.retry_backoff, self.max_backoff = 0.001, 0.002

    return fast


# ------------------------------------------------------------------------------------ the batch
def test_a_batch_with_a_stuck_job_ends_at_the_timeout(apicore_conn, tmp_path):
    apicore_conn.configure(faults={"stuck": 1.0})
    write_images(tmp_path / "src", 2)
    op = MJBatchDescribeOperator(
        task_id="b",
        source=str(tmp_path / "src"),
        manifest_path=str(tmp_path / "m.jsonl"),
        poll_interval=0.05,
        timeout=0.5,
    )
    started = time.monotonic()
    assert op.execute(CONTEXT)["by_status"] == {TIMEOUT: 2}
    assert time.monotonic() - started < 5


def test_a_batch_meeting_a_queue_that_never_frees_gives_up(apicore_conn, tmp_path, monkeypatch):
    pauses: list[int] = []

    def no_wait(attempt, backoff, max_backoff, retry_after=None):
        pauses.append(attempt)
        return 0.001

    monkeypatch.setattr(batch_describe, "retry_delay", no_wait)
    apicore_conn.configure(faults={"queue_full": 1.0})
    write_images(tmp_path / "src", 3)
    op = MJBatchDescribeOperator(
        task_id="b", source=str(tmp_path / "src"), manifest_path=str(tmp_path / "m.jsonl"), poll_interval=0.05
    )
    with pytest.raises(ApicoreQueueFullError, match="code 23") as info:
        op.execute(CONTEXT)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "manifest" in notes and "intact" in notes and "resumes" in notes
    # Nothing in flight and the queue still full after MAX_IDLE_BACKOFFS pauses: the task fails, and
    # every image is still waiting in the manifest for the retry.
    assert len(pauses) == MAX_IDLE_BACKOFFS + 1
    assert apicore_conn.stats()["requests"]["submit"] == MAX_IDLE_BACKOFFS + 1
    assert {r.status for r in read_manifest(tmp_path / "m.jsonl")} == {"pending"}


def test_a_batch_whose_polls_always_fail_ends_with_the_error(apicore_conn, tmp_path, monkeypatch):
    apicore_conn.use_connection(monkeypatch, max_retries=1)
    monkeypatch.setattr(ApicoreHook, "__init__", _fast_init(ApicoreHook.__init__))
    apicore_conn.configure(faults={"http_5xx": 1.0, "endpoints": ["list"]})
    write_images(tmp_path / "src", 2)
    op = MJBatchDescribeOperator(
        task_id="b", source=str(tmp_path / "src"), manifest_path=str(tmp_path / "m.jsonl"), poll_interval=0.05
    )
    with pytest.raises(ApicoreHTTPError, match="list-by-condition 2 times"):
        op.execute(CONTEXT)
    assert all(r.task_id for r in read_manifest(tmp_path / "m.jsonl")), "a retry resumes following them"


# ------------------------------------------------------------------------------------ emulator
def test_emulator_task_ids_are_unique_without_waiting(apicore_conn):
    hook = ApicoreHook()
    started = time.monotonic()
    ids = {hook.submit_describe({"base64": to_data_url(unique_png(i))}).task_id for i in range(30)}
    assert len(ids) == 30 and time.monotonic() - started < 10


def test_emulator_service_loops_end_when_the_server_stops():
    import requests

    # A dropped request drains its body; the notifier and the ticker run until the server stops.
    server = EmulatorServer(EmulatorConfig(job_seconds=0.05, faults={"drop_before": 1.0}))
    url = server.start()
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{url}/mj/submit/describe", json={"base64": "x" * 100_000}, timeout=5)
    thread = server._thread
    server.stop(timeout=10)
    assert thread is not None and not thread.is_alive()


# ------------------------------------------------------------------------------------ defaults
def test_every_waiting_operator_has_a_finite_timeout_by_default(tmp_path):
    assert MJDescribeOperator(task_id="d", image="x.png").timeout == 600
    assert MJBatchDescribeOperator(task_id="b", source=str(tmp_path), manifest_path="m.jsonl").timeout == 1800
    assert MJTaskSensor(task_id="s", mj_task_id="1").timeout == 7 * 24 * 3600


# ------------------------------------------------------------------------- single jobs, downloads
def test_an_image_download_that_always_fails_gives_up():
    from airflow_provider_apicore.exceptions import ImageDownloadError
    from airflow_provider_apicore.hooks.download import ImageFetcher
    from tests.helpers.scripted_server import Reply, ScriptedServer

    naps: list[float] = []
    with ScriptedServer([Reply(status=503, body="busy")]) as server:
        fetcher = ImageFetcher(retries=3, backoff=0.01, max_backoff=0.02, sleep=naps.append)
        with pytest.raises(ImageDownloadError, match="gave up after 4 attempts"):
            fetcher.fetch(server.url + "/mj/image/1")
    assert len(server.requests) == 4 and len(naps) == 3


def test_a_single_job_meeting_a_queue_that_never_frees_gives_up(apicore_conn, tmp_path, monkeypatch):
    from airflow_provider_apicore.operators import base

    apicore_conn.configure(faults={"queue_full": 1.0})
    monkeypatch.setattr(base, "retry_delay", lambda *args, **kwargs: 0.01)
    op = MJDescribeOperator(task_id="d", image=str(write_images(tmp_path, 1)[0]), queue_full_retries=2)
    with pytest.raises(ApicoreQueueFullError):
        op.execute({"ti": SimpleNamespace(dag_id="loops", try_number=1, xcom_push=lambda **_: None)})
    assert apicore_conn.stats()["requests"]["submit"] == 3


def test_waiting_for_a_new_task_to_report_a_status_is_bounded(apicore_conn):
    from airflow_provider_apicore.operators.action import MJActionOperator

    # Behind the gateway a new task reads status "" until the next refresh, here never.
    apicore_conn.configure(gateway=True, gateway_refresh=3600)
    hook, _ = fast_hook()
    task_id = hook.submit_imagine({"prompt": "a lighthouse at dusk"}).task_id
    op = MJActionOperator(task_id="a", mj_task_id=task_id, action="upscale", index=1, modal_wait=0.5)
    started = time.monotonic()
    task = op._settled(hook, task_id)
    assert task is not None and task.raw["status"] == ""
    assert time.monotonic() - started < 5
