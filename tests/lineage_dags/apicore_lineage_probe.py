"""
Test DAG: MJBatchDescribeOperator with the lineage and links mixins, as the operators will use them.

The probe operator describes a directory (real batch against the emulator), writes the training-set
outputs, records its OpenLineage inputs/outputs, persists the manifest link before the work and the image
link after it, and attaches the asset event (via an alias: ``manifest_path`` is templated).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_apicore.lineage import (
    ApicoreLineageMixin,
    asset_event_extra,
    emit_manifest_event,
    manifest_outlet,
)
from airflow_provider_apicore.links import ApicoreLinksMixin
from airflow_provider_apicore.manifest import read_manifest
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from airflow_provider_apicore.outputs import write_training_outputs

ALIAS = "apicore-lineage-probe-manifest"


class LineageBatchDescribeOperator(ApicoreLinksMixin, ApicoreLineageMixin, MJBatchDescribeOperator):
    """The batch operator plus outputs, lineage, links and the asset event."""

    template_fields = (*MJBatchDescribeOperator.template_fields, "captions_dir")

    def __init__(self, *, captions_dir: str, **kwargs) -> None:
        kwargs.setdefault("outlets", [manifest_outlet(kwargs.get("manifest_path"), alias_name=ALIAS)])
        super().__init__(**kwargs)
        self.captions_dir = captions_dir

    def execute(self, context):
        self.persist_manifest_link(context, self.manifest_path)
        summary = super().execute(context)
        records = read_manifest(summary["manifest"])
        outputs = write_training_outputs(
            records, self.source, output_dir=self.captions_dir, stats_path=self.captions_dir
        )
        self.set_lineage(
            [self.source],
            {"manifest": summary["manifest"], "captions": self.captions_dir},
            records,
            file_counts={"captions": outputs["captions"]["written"]},
        )
        self.persist_result_image_link(context, next((r.image_url for r in records if r.image_url), None))
        extra = asset_event_extra(records, manifest_path=summary["manifest"], spend=None)
        emit_manifest_event(context, self.outlets[0], summary["manifest"], extra)
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
        captions_dir="{{ params.captions_dir }}",
        max_in_flight=5,
        poll_interval=0.3,
        deferrable=False,
    )
