"""
A DAG for ``airflow dags test``: prompts from an upstream task's XCom, imagined in one deferrable batch.

conf: ``manifest`` (where the manifest goes), ``output`` (where the grids are stored).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_apicore.operators.batch_imagine import MJBatchImagineOperator

with DAG(
    dag_id="apicore_batch_imagine_test",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["apicore", "test"],
):

    @task
    def prompts() -> list[str]:
        return [f"a paper boat on a pond, variant {i}" for i in range(6)] + ["a field of blood red poppies"]

    listed = prompts()
    imagine = MJBatchImagineOperator(
        task_id="imagine_all",
        prompts="{{ ti.xcom_pull(task_ids='prompts') }}",
        manifest_path="{{ dag_run.conf['manifest'] }}",
        output_path="{{ dag_run.conf['output'] }}",
        max_in_flight=3,
        poll_interval=0.2,
        deferrable=True,
        retries=0,
    )
    listed >> imagine
