"""
DAGs for the account tests (``airflow dags test`` against the emulator): a batch that runs out of
balance and is rerun after a top-up, and a batch refused by the pre-flight balance check.

conf: ``image_dir`` (the images), ``manifest`` (where the manifest goes).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator

SOURCE = "{{ dag_run.conf['image_dir'] }}"
MANIFEST = "{{ dag_run.conf['manifest'] }}"

with DAG(
    dag_id="apicore_batch_quota",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["apicore", "account"],
):
    MJBatchDescribeOperator(
        task_id="describe_all",
        source=SOURCE,
        manifest_path=MANIFEST,
        max_in_flight=5,
        poll_interval=0.2,
        report_balance=True,
        retries=0,
    )

with DAG(
    dag_id="apicore_batch_quota_preflight",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["apicore", "account"],
):
    MJBatchDescribeOperator(
        task_id="describe_all",
        source=SOURCE,
        manifest_path=MANIFEST,
        max_in_flight=5,
        poll_interval=0.2,
        estimated_cost_per_image_usd=0.05,
        retries=0,
    )
