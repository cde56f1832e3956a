"""
Describe one image with retries, durably: a retry never pays for a second job.

The operator keeps its APICore task id in Airflow's ``task_state_store`` the moment APICore accepts
the job. If the worker dies while it waits (or the wait fails), the retry, on any worker, re-attaches
to that job instead of submitting the image again. Trigger it with ``{"image": "/path/to/photo.png"}``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_apicore.operators.describe import MJDescribeOperator

with DAG(
    dag_id="apicore_describe_durable",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"image": ""},
    tags=["apicore", "example"],
):
    # [START howto_operator_describe_durable]
    MJDescribeOperator(
        task_id="describe",
        image="{{ params.image }}",
        wait_for_completion=True,
        deferrable=False,  # the worker waits: the case where a worker crash used to cost a second job
        durable=True,  # the default; durable=False opts out
        poll_interval=2.0,
        timeout=900,
        retries=2,
        retry_delay=timedelta(seconds=5),
    )
    # [END howto_operator_describe_durable]
