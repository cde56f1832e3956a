"""
DAGs for the reliability tier: the fan-out and the batched pattern under injected faults.

Both describe ``params.image_dir`` with a ``notifyHook`` from the Variable ``apicore_notify_hook``
(templated, as a URL with credentials would be kept), then revoke the API token on the emulator and
try once more, so that an expired token is met by a real task. Timeouts are short so that stuck jobs
end within seconds. Only the reliability tests load this folder.
"""

from __future__ import annotations

import os

import pendulum
import requests
from airflow.sdk import DAG, task

from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from airflow_provider_apicore.operators.describe import MJDescribeOperator

NOTIFY_HOOK = "{{ var.value.apicore_notify_hook }}"
TIMEOUT = float(os.environ.get("RELIABILITY_TIMEOUT", "3"))
POLL = 0.2


@task
def revoke_token() -> None:
    """Make the emulator answer 401 from now on, keeping the rest of its fault scenario."""
    admin = os.environ["RELIABILITY_EMULATOR_URL"] + "/_emulator/config"
    faults = requests.get(admin, timeout=10).json()["faults"]
    requests.put(admin, json={"faults": {**faults, "token_expired": True}}, timeout=10).raise_for_status()


with DAG(
    dag_id="reliability_fanout",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"image_dir": "", "output_dir": "", "late_image": ""},
):

    @task
    def list_images(params: dict | None = None) -> list[str]:
        from airflow_provider_apicore.fanout import images_for_mapping

        return images_for_mapping(params["image_dir"])

    images = list_images()
    describe = MJDescribeOperator.partial(
        task_id="describe",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL,
        timeout=TIMEOUT,
        notify_hook=NOTIFY_HOOK,
        state="{{ dag.dag_id }}/{{ run_id }}",
    ).expand(image=images)

    @task(trigger_rule="all_done")
    def write_results(images: list[str], params: dict | None = None, ti=None) -> dict:
        from airflow_provider_apicore.fanout import write_fanout_results

        indexes = list(range(len(images)))
        return write_fanout_results(
            images,
            ti.xcom_pull(task_ids="describe", map_indexes=indexes),
            params["output_dir"],
            task_ids=ti.xcom_pull(task_ids="describe", key="task_id", map_indexes=indexes),
            unknown_fates=ti.xcom_pull(task_ids="describe", key="unknown_fate", map_indexes=indexes),
            root=params["image_dir"],
        )

    revoked = revoke_token.override(trigger_rule="all_done")()
    late = MJDescribeOperator(
        task_id="describe_after_revocation",
        image="{{ params.late_image }}",
        wait_for_completion=True,
        notify_hook=NOTIFY_HOOK,
    )
    describe >> write_results(images) >> revoked >> late


with DAG(
    dag_id="reliability_batch",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"image_dir": "", "manifest_path": "", "late_dir": "", "late_manifest_path": ""},
    render_template_as_native_obj=True,
):
    batch = MJBatchDescribeOperator(
        task_id="describe_directory",
        source="{{ params.image_dir }}",
        manifest_path="{{ params.manifest_path }}",
        max_in_flight=6,
        poll_interval=POLL,
        timeout=TIMEOUT,
        deferrable=True,
        notify_hook=NOTIFY_HOOK,
    )
    revoked = revoke_token.override(trigger_rule="all_done")()
    late = MJBatchDescribeOperator(
        task_id="describe_after_revocation",
        source="{{ params.late_dir }}",
        manifest_path="{{ params.late_manifest_path }}",
        poll_interval=POLL,
        notify_hook=NOTIFY_HOOK,
    )
    batch >> revoked >> late
