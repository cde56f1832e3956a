"""
Test DAG: MJBatchDescribeOperator as users get it (outputs, lineage, manifest link and asset event built
in), plus a result-image link for the first described image.

The manifest path is templated, so the manifest is declared through an alias that the task resolves to
the rendered path's asset when it emits the event.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_apicore.lineage import manifest_outlet
from airflow_provider_apicore.manifest import read_manifest
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator

ALIAS = "apicore-lineage-probe-manifest"


class LineageBatchDescribeOperator(MJBatchDescribeOperator):
    """The batch operator, plus the "Midjourney image" link of its first described image."""

    def execute(self, context):
        summary = super().execute(context)
        records = read_manifest(summary["manifest"])
        self.persist_result_image_link(context, next((r.image_url for r in records if r.image_url), None))
        return summary


with DAG(
    dag_id="apicore_lineage_probe",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "image_dir": Param("", type="string"),
        "manifest_path": Param("", type="string"),
        "captions_dir": Param("", type="string"),
    },
) as dag:
    LineageBatchDescribeOperator(
        task_id="describe",
        source="{{ params.image_dir }}",
        manifest_path="{{ params.manifest_path }}",
        output_dir="{{ params.captions_dir }}",
        caption_extension=".txt",
        outlets=[manifest_outlet("{{ params.manifest_path }}", alias_name=ALIAS)],
        max_in_flight=5,
        poll_interval=0.3,
        deferrable=False,
    )
