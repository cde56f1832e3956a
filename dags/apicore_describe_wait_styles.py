"""
Three ways to wait for a Midjourney describe job, side by side on one image.

(a) ``describe_polling``: ``MJDescribeOperator(wait_for_completion=True)`` submits and polls in the
    worker. Simplest; holds a worker slot for the whole job.
(b) ``describe_deferrable``: the same with ``deferrable=True``: submits in the worker, then waits in
    the triggerer and frees the worker slot. The choice for long jobs or many of them.
(c) ``submit`` + ``MJTaskSensor``: the operator only submits (returns the task id); sensors follow
    the id, once in poke mode (``wait_poke``) and once in deferrable mode (``wait_deferrable``). The
    choice when the job is started elsewhere: another DAG, another system, a notifyHook flow.

``compare_prompts`` fails unless all four return the same four prompts for the image.

Param ``image``: the image to describe (any ``ObjectStoragePath`` URL or local path; default: a
sample image shipped beside this file). The wait settings come from the environment, read when the
DAG is parsed, so a demo or a test can shorten them: ``APICORE_EXAMPLE_POLL_INTERVAL`` (seconds
between polls, default 5) and ``APICORE_EXAMPLE_TIMEOUT`` (seconds before giving up, default 600).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_apicore.operators.describe import MJDescribeOperator
from airflow_provider_apicore.sensors.task import MJTaskSensor

SAMPLE_IMAGE = Path(__file__).resolve().parent / "sample_images" / "red_balloon.png"
POLL_INTERVAL = float(os.environ.get("APICORE_EXAMPLE_POLL_INTERVAL", "5"))
TIMEOUT = float(os.environ.get("APICORE_EXAMPLE_TIMEOUT", "600"))

with DAG(
    dag_id="apicore_describe_wait_styles",
    description="Polling, deferrable and sensor-based waiting for a Midjourney describe job, compared",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["apicore", "midjourney", "example"],
    params={
        "image": Param(str(SAMPLE_IMAGE), type="string", description="Image to describe (path or URL)"),
    },
) as dag:
    image = "{{ params.image }}"

    # (a) Submit and poll in the worker.
    describe_polling = MJDescribeOperator(
        task_id="describe_polling",
        image=image,
        wait_for_completion=True,
        deferrable=False,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
    )

    # (b) Submit in the worker, wait in the triggerer.
    describe_deferrable = MJDescribeOperator(
        task_id="describe_deferrable",
        image=image,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
    )

    # (c) Submit only; sensors follow the task id from XCom.
    submit = MJDescribeOperator(task_id="submit", image=image, wait_for_completion=False)
    submitted_id = "{{ ti.xcom_pull(task_ids='submit', key='task_id') }}"
    wait_poke = MJTaskSensor(
        task_id="wait_poke",
        mj_task_id=submitted_id,
        mode="poke",
        deferrable=False,
        poke_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
    )
    wait_deferrable = MJTaskSensor(
        task_id="wait_deferrable",
        mj_task_id=submitted_id,
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
    )
    submit >> [wait_poke, wait_deferrable]

    @task
    def compare_prompts(results: dict[str, dict]) -> dict:
        """Fail unless every waiting style returned the same prompts; return them with the task ids."""
        prompts = {style: result["prompts"] for style, result in results.items()}
        reference = prompts["polling"]
        differing = sorted(style for style, found in prompts.items() if found != reference)
        if differing or len(reference) != 4:
            raise ValueError(
                f"Waiting styles disagree: expected the same four prompts from every style, got {prompts}"
            )
        return {"prompts": reference, "task_ids": {style: r["task_id"] for style, r in results.items()}}

    compare_prompts(
        {
            "polling": describe_polling.output,
            "deferrable": describe_deferrable.output,
            "sensor_poke": wait_poke.output,
            "sensor_deferrable": wait_deferrable.output,
        }
    )
