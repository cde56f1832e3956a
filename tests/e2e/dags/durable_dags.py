"""
DAGs for the durable-execution tests: one describe per image with retries, waiting by polling or in
the triggerer, durable or not. ``on_retry_callback`` switches the emulator's faults off, so a try that
failed while waiting is followed by a retry that can reach APICore (and must not pay again).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
import requests
from airflow.sdk import DAG, task

from airflow_provider_apicore.operators.describe import MJDescribeOperator


def faults_off(context) -> None:
    """
    Once every image's first try has failed (``DURABLE_FAILED_TRIES``, counted in a file), the emulator
    answers normally again; its jobs kept running all along.
    """
    url = os.environ.get("DURABLE_EMULATOR_URL")
    counter = os.environ.get("DURABLE_COUNTER")
    if not url or not counter:
        return
    with open(counter, "a") as f:
        f.write("x")
    with open(counter) as f:
        failed = len(f.read())
    if failed >= int(os.environ.get("DURABLE_FAILED_TRIES", "1")):
        requests.put(f"{url}/_emulator/config", json={"faults": {}}, timeout=10).raise_for_status()


for dag_id, deferrable, durable in (
    ("durable_poll", False, True),
    ("durable_defer", True, True),
    ("durable_poll_off", False, False),
):
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        params={"image_dir": ""},
    ):

        @task
        def list_images(params: dict | None = None) -> list[str]:
            from airflow_provider_apicore.fanout import images_for_mapping

            return images_for_mapping(params["image_dir"])

        MJDescribeOperator.partial(
            task_id="describe",
            wait_for_completion=True,
            deferrable=deferrable,
            durable=durable,
            poll_interval=0.2,
            timeout=60,
            retries=3,
            retry_delay=timedelta(seconds=1),
            # The provider's default policy waits 2 minutes after a 5xx; keep the test quick.
            retry_policy=None,
            on_retry_callback=faults_off,
        ).expand(image=list_images())
