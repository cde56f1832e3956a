"""
The by-hand baseline of the benchmarks: describe a directory with Airflow's ``http`` provider only.

build_payloads -> HttpOperator (submit, one mapped task per image) -> HttpSensor (poll, one mapped
task per image)

This is what a user writes without this provider: read and base64-encode every image, POST each one
to ``/mj/submit/describe`` and poke ``GET /mj/task/{id}/fetch`` until the job ends. The sensor pokes
in a worker slot (``mode="poke"``, the default). The connection ``apicore_http`` (type ``http``)
holds the base URL in its host and ``{"Authorization": "Bearer <token>"}`` in its extra, which the
http provider sends as headers.

Benchmark only: it needs ``apache-airflow-providers-http``, which ``benchmarks/run.py`` installs into
the virtualenv when missing. The poke interval comes from ``APICORE_BENCH_POKE_INTERVAL`` (seconds,
default 2, the fan-out example DAG's poll interval).
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.http.operators.http import HttpOperator
from airflow.providers.http.sensors.http import HttpSensor
from airflow.sdk import DAG, Param, task

POKE_INTERVAL = float(os.environ.get("APICORE_BENCH_POKE_INTERVAL", "2"))
MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


def task_id_from_answer(response) -> str:
    """The Midjourney task id of an accepted submission; anything else fails the task."""
    body = response.json()
    if body.get("code") not in (1, 21, 22):
        raise ValueError(f"submission refused: code {body.get('code')}, {body.get('description')}")
    return str(body["result"])


def fetch_endpoint(task_id: str) -> str:
    return f"mj/task/{task_id}/fetch"


def job_finished(response) -> bool:
    """True once the job succeeded; a failed job fails the sensor."""
    job = response.json() if response.content.strip() else None
    status = (job or {}).get("status")
    if status in ("FAILURE", "CANCEL"):
        raise ValueError(f"job {job.get('id')} ended {status}: {job.get('failReason')}")
    return status == "SUCCESS"


with DAG(
    dag_id="apicore_by_hand_http",
    description="Benchmark baseline: HttpOperator submit + HttpSensor poll per image",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["apicore", "benchmark"],
    params={"image_dir": Param("dags/sample_images", type="string")},
) as dag:

    @task
    def build_payloads(params: dict | None = None) -> list[str]:
        """One JSON submit body per image, in file-name order."""
        import base64
        import json
        from pathlib import Path

        bodies = []
        for path in sorted(Path(params["image_dir"]).iterdir()):
            data = path.read_bytes()
            mime = next((m for magic, m in MIME.items() if data.startswith(magic)), None)
            if path.is_file() and mime:
                encoded = base64.b64encode(data).decode("ascii")
                bodies.append(json.dumps({"base64": f"data:{mime};base64,{encoded}"}))
        return bodies

    submit = HttpOperator.partial(
        task_id="submit",
        http_conn_id="apicore_http",
        endpoint="mj/submit/describe",
        method="POST",
        headers={"Content-Type": "application/json"},
        response_filter=task_id_from_answer,
    ).expand(data=build_payloads())

    HttpSensor.partial(
        task_id="wait",
        http_conn_id="apicore_http",
        method="GET",
        response_check=job_finished,
        poke_interval=POKE_INTERVAL,
        timeout=1800,
    ).expand(endpoint=submit.output.map(fetch_endpoint))
