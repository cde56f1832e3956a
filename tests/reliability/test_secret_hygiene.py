"""
Secrets stay secret: the API token and the credentials of a ``notifyHook`` URL.

The token is masked by the hook (tests/hooks/test_apicore_hook.py); these tests cover hook URLs with
credentials (``https://user:pass@host/hook``): never quoted in an error, registered with Airflow's
secret masker, logged redacted, and removed from the task objects that flow on into trigger events,
XCom and the metadata DB. The whole-run search of an Airflow home is in test_dag_runs.py.
"""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import jinja2
import pytest

from airflow_provider_apicore.exceptions import redact_url_credentials, url_credentials
from airflow_provider_apicore.hooks.apicore import ApicoreHook, mask_url_credentials
from airflow_provider_apicore.images import to_data_url
from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.operators.describe import MJDescribeOperator
from airflow_provider_apicore.tracking import TaskTracker
from airflow_provider_apicore.triggers.task import MJTaskTrigger
from tests.reliability.conftest import unique_png, write_images


def distinct(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        ("https://user:pass1234@hooks.example.com/cb", "https://user:***@hooks.example.com/cb", ["pass1234"]),
        ("https://tok_abc123@hooks.example.com/cb", "https://***@hooks.example.com/cb", ["tok_abc123"]),
        (
            "http://u:p%40ss%2Fw0rd@h:8080/x?a=b@c",
            "http://u:***@h:8080/x?a=b@c",
            ["p%40ss%2Fw0rd", "p@ss/w0rd"],
        ),
        ("https://u:p@ss@h/x", "https://u:***@h/x", ["p@ss"]),
        ("https://hooks.example.com/cb?user=a@b", "https://hooks.example.com/cb?user=a@b", []),
        ("https://user:pw12345@/no-host", "https://user:***@/no-host", ["pw12345"]),
    ],
)
def test_credentials_in_a_url_are_found_and_redacted(url, shown, secrets):
    assert redact_url_credentials(url) == shown
    assert url_credentials(url) == secrets


def test_masking_a_hook_url_registers_its_password_with_airflow(monkeypatch):
    from airflow.sdk._shared.secrets_masker import redact

    password = distinct("hookpw")
    assert mask_url_credentials(f"https://bot:{password}@hooks.example.com/x") == (
        "https://bot:***@hooks.example.com/x"
    )
    assert password not in redact(f"calling https://bot:{password}@hooks.example.com/x now")


def test_task_objects_carry_the_hook_url_without_its_credentials():
    password = distinct("hookpw")
    url = f"https://bot:{password}@hooks.example.com/cb"
    raw = {"id": "1", "status": "SUCCESS", "notifyHook": url, "properties": {"notifyHook": url, "x": 1}}
    task = MJTask.from_json(raw)
    assert task.properties == {"notifyHook": "https://bot:***@hooks.example.com/cb", "x": 1}
    assert password not in repr(task.raw)
    tracker = TaskTracker(["1"])
    tracker.update([task])
    assert password not in repr(tracker.event()), "trigger events are stored in the metadata DB"
    assert raw["properties"]["notifyHook"] == url, "the caller's object is left alone"


def test_the_hook_logs_the_hook_url_redacted(apicore_conn, capfd, caplog):
    password = distinct("hookpw")
    url = f"https://bot:{password}@127.0.0.1:9/cb"
    ApicoreHook().submit_describe({"base64": to_data_url(unique_png(1)), "notifyHook": url})
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    assert "notifyHook https://bot:***@127.0.0.1:9/cb" in text
    assert password not in text


def test_the_trigger_event_never_holds_the_hook_password(apicore_conn):
    password = distinct("hookpw")
    url = f"https://bot:{password}@127.0.0.1:9/cb"
    task_id = ApicoreHook().submit_describe({"base64": to_data_url(unique_png(2)), "notifyHook": url}).task_id

    async def first_event():
        async for event in MJTaskTrigger([task_id], poll_interval=0.05, end_time=None).run():
            return event.payload

    event = asyncio.run(first_event())
    assert event["status"] == "done"
    # Events carry only what results need: the echoed notifyHook is not among it, redacted or not.
    assert "notifyHook" not in event["tasks"][task_id].get("properties", {})
    assert password not in repr(event)
    # The task object the event is built from holds the echo redacted, in the typed and the raw fields.
    task = ApicoreHook().fetch_task(task_id)
    assert task.properties["notifyHook"] == "https://bot:***@127.0.0.1:9/cb"
    assert password not in repr(task.raw) and password not in repr(task.properties)


def test_a_templated_hook_url_is_masked_in_the_rendered_fields(tmp_path):
    from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

    password = distinct("hookpw")
    [image] = write_images(tmp_path, 1)
    op = MJDescribeOperator(task_id="d", image=str(image), notify_hook="{{ params.hook }}")
    context = {"params": {"hook": f"https://bot:{password}@hooks.example.com/cb"}}
    op.render_template_fields(context, jinja2.Environment())
    assert op.notify_hook.endswith("@hooks.example.com/cb"), "the operator still sends the real URL"
    rendered = _serialize_rendered_fields(op)
    assert password not in repr(rendered)
    assert "***" in rendered["notify_hook"]


def test_the_describe_operator_logs_the_hook_url_redacted(apicore_conn, tmp_path, capfd, caplog):
    password = distinct("hookpw")
    [image] = write_images(tmp_path, 1)
    op = MJDescribeOperator(
        task_id="d", image=str(image), notify_hook=f"https://bot:{password}@127.0.0.1:9/cb"
    )
    op.execute({"ti": SimpleNamespace(xcom_push=lambda key, value: None)})
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    assert "notifyHook https://bot:***@127.0.0.1:9/cb" in text
    assert password not in text
