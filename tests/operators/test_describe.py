"""MJDescribeOperator: input checks before any request, submission, XCom, and a real DAG run."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from unittest import mock

import pytest
import requests

from airflow_provider_apicore.exceptions import (
    ApicoreConfigError,
    ApicoreQueueFullError,
    InvalidImageError,
    PayloadValidationError,
)
from airflow_provider_apicore.operators.describe import (
    XCOM_TASK_ID,
    MJDescribeOperator,
    build_describe_payload,
)
from tests.helpers.airflow_run import airflow_db_dump, airflow_env, run_dag_test
from tests.helpers.imagegen import make_png

SAMPLES = Path(__file__).resolve().parents[2] / "dags" / "sample_images"


class FakeTI:
    """Records XCom pushes; the narrow stand-in for a task instance in direct execute() calls."""

    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}
        self.map_index = -1

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "red square.png"
    path.write_bytes(make_png(32, 32, (220, 30, 30)))
    return path


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": "5"}, "poll_interval"),
        ({"timeout": -1}, "timeout"),
        ({"max_image_bytes": 0}, "max_image_bytes"),
    ],
)
def test_bad_arguments_fail_at_parse_time_naming_the_argument(kwargs, name):
    with pytest.raises(ApicoreConfigError, match=name):
        MJDescribeOperator(task_id="d", image="x.png", **kwargs)


def test_templated_fields_and_mapping_friendly_partial():
    assert set(MJDescribeOperator.template_fields) == {"image", "notify_hook", "state", "apicore_conn_id"}
    from airflow.sdk import DAG

    with DAG("mapping_probe", schedule=None):
        mapped = MJDescribeOperator.partial(task_id="d", wait_for_completion=True).expand(
            image=["a.png", "b.png"]
        )
    assert mapped.partial_kwargs["wait_for_completion"] is True


# ---------------------------------------------------------------- payload, before any request
def test_payload_is_a_schema_valid_data_url_of_the_image(png_file):
    payload, summary = build_describe_payload(png_file, notify_hook="https://example.com/hook", state="s")
    assert payload["base64"].startswith("data:image/png;base64,")
    assert base64.b64decode(payload["base64"].split(",", 1)[1]) == png_file.read_bytes()
    assert payload["notifyHook"] == "https://example.com/hook" and payload["state"] == "s"
    assert "red square.png" in summary and "image/png" in summary


@pytest.mark.parametrize(
    ("setup", "error", "needle"),
    [
        (lambda p: p.write_bytes(b"hello, not an image"), InvalidImageError, "not an image"),
        (lambda p: p.write_bytes(b""), InvalidImageError, "empty"),
        (lambda p: None, InvalidImageError, "does not exist"),
    ],
)
def test_bad_images_fail_before_any_request(tmp_path, apicore_conn, setup, error, needle):
    path = tmp_path / "photo.png"
    setup(path)
    op = MJDescribeOperator(task_id="d", image=str(path))
    with pytest.raises(error, match=needle) as info:
        op.execute({"ti": FakeTI()})
    assert "photo.png" in str(info.value)
    assert apicore_conn.stats()["requests"].get("submit", 0) == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"notify_hook": "ftp://example.com/hook"}, "notifyHook"),
        ({"notify_hook": "https://"}, "notifyHook"),
        ({"state": "x" * 5000}, "state"),
    ],
)
def test_payload_rule_violations_name_the_field_and_send_nothing(png_file, apicore_conn, kwargs, field):
    op = MJDescribeOperator(task_id="d", image=str(png_file), **kwargs)
    with pytest.raises(PayloadValidationError) as info:
        op.execute({"ti": FakeTI()})
    assert info.value.field == field and field in str(info.value)
    assert apicore_conn.stats()["requests"].get("submit", 0) == 0


def test_bot_type_typo_fails_when_the_dag_is_parsed():
    with pytest.raises(ApicoreConfigError, match="bot_type must be 'MID_JOURNEY' or 'NIJI_JOURNEY'"):
        MJDescribeOperator(task_id="d", image="x.png", bot_type="DALL_E")


def test_image_over_the_size_limit_is_refused_with_the_limit(png_file, apicore_conn):
    op = MJDescribeOperator(task_id="d", image=str(png_file), max_image_bytes=64)
    with pytest.raises(InvalidImageError, match="64") as info:
        op.execute({"ti": FakeTI()})
    assert "red square.png" in str(info.value)


# ---------------------------------------------------------------- submission
def test_execute_submits_and_pushes_the_task_id(png_file, apicore_conn):
    ti = FakeTI()
    task_id = MJDescribeOperator(task_id="d", image=str(png_file), state="unit").execute({"ti": ti})
    assert ti.pushed[XCOM_TASK_ID] == task_id
    tasks = requests.get(f"{apicore_conn.url}/_emulator/tasks", params={"state": "unit"}, timeout=10).json()
    assert [t["id"] for t in tasks] == [task_id]


def test_data_url_images_are_accepted_as_is(png_file, apicore_conn):
    data_url = "data:image/png;base64," + base64.b64encode(png_file.read_bytes()).decode()
    task_id = MJDescribeOperator(task_id="d", image=data_url).execute({"ti": FakeTI()})
    assert task_id.isdigit()


def test_queue_full_is_resubmitted_with_backoff_then_gives_up(png_file, apicore_conn):
    apicore_conn.configure(faults={"queue_full": 1.0})
    op = MJDescribeOperator(task_id="d", image=str(png_file), queue_full_retries=2)
    with (
        mock.patch("airflow_provider_apicore.hooks.apicore.time.sleep") as sleep,
        pytest.raises(ApicoreQueueFullError, match="code 23"),
    ):
        op.execute({"ti": FakeTI()})
    assert sleep.call_count == 2
    assert apicore_conn.stats()["requests"]["submit"] == 3


# ---------------------------------------------------------------- a real Airflow run
@pytest.mark.e2e
def test_fanout_dag_run_pushes_each_emulator_task_id_and_never_logs_the_token(
    airflow_home, emulator, tmp_path
):
    env = airflow_env(airflow_home, emulator.conn_env())
    conf = {"image_dir": str(SAMPLES), "output_dir": str(tmp_path / "out")}
    run = run_dag_test(env, "apicore_describe_images", conf)
    assert run.returncode == 0, run.output[-3000:]
    assert run.state == "success"

    pushed = {run.xcoms[k] for k in run.xcoms if k[0] == "describe" and k[2] == XCOM_TASK_ID}
    images = run.xcom("list_images")
    assert len(pushed) == len(images) >= 4
    known = requests.post(
        f"{emulator.url}/mj/task/list-by-condition",
        json={"ids": sorted(pushed)},
        headers={"Authorization": f"Bearer {emulator.token}"},
        timeout=10,
    ).json()
    assert {t["id"] for t in known} == pushed, "every mapped task's XCom holds a task id the emulator issued"
    assert all(t["status"] == "SUCCESS" for t in known)

    results = run.mapped_xcoms("describe")
    assert [len(r["prompts"]) for r in results] == [4] * len(images)

    # `airflow dags test` prints task logs to its output; any log files go under logs/.
    logs = [p.read_text(errors="replace") for p in (airflow_home / "logs").rglob("*") if p.is_file()]
    assert "describing" in run.output and "image/png" in run.output, "task logs are in the output"
    for text in [run.output, *logs]:
        assert emulator.token not in text
    assert emulator.token not in json.dumps(list(run.xcoms.values()), default=str)
    assert emulator.token not in airflow_db_dump(airflow_home)


def test_an_already_finished_existing_job_code_21_is_returned_without_waiting(png_file, apicore_conn):
    apicore_conn.configure(dedupe=True, job_seconds=0.05)
    first = MJDescribeOperator(task_id="d", image=str(png_file), wait_for_completion=True, poll_interval=0.1)
    result = first.execute({"ti": FakeTI()})
    # Deferrable, but the job already exists and is finished: no deferral (TaskDeferred) happens.
    again = MJDescribeOperator(task_id="d", image=str(png_file), wait_for_completion=True, deferrable=True)
    assert again.execute({"ti": FakeTI()}) == result
    assert apicore_conn.stats()["submissions_existed"] == 1
