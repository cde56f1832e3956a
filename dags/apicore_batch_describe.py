"""
Caption a large, growing image directory every day, in one batched task.

describe_directory (MJBatchDescribeOperator) -> write_captions

``describe_directory`` keeps at most ``max_in_flight`` Midjourney jobs upstream and writes every
result to a JSONL manifest as it goes. The manifest path does not change from run to run, so each
daily run resumes from it: images described on earlier days are skipped, and only new images are
sent. A retry after a crash continues where the failed try stopped, without submitting an image
twice. ``write_captions`` then reads the manifest and writes one ``.txt`` caption per image (the
layout training tools expect) plus a small summary.

Run it against the bundled emulator like the other examples, with ``--conf`` overriding the params.

**The default ``manifest_path`` (``/tmp/...``) works on one host only.** The task defers, and the resume
may run on another worker: on a deployment with several workers set ``manifest_path`` (and
``output_dir``) to storage every worker sees, e.g. ``s3://bucket/captions/manifest.jsonl`` or a shared
volume. A resume that cannot find the manifest fails naming it; it never reports an empty success.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator

with DAG(
    dag_id="apicore_batch_describe",
    description="Describe a whole image directory daily in one batched, resumable task",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    # One writer per manifest: runs of this DAG share one.
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["apicore", "midjourney", "example"],
    params={
        "image_dir": Param(
            "dags/sample_images", type="string", description="Directory (ObjectStoragePath URL) to describe"
        ),
        "pattern": Param("*", type="string", description="Glob pattern of the files to consider"),
        "manifest_path": Param(
            "/tmp/apicore-batch/manifest.jsonl",
            type="string",
            description=(
                "The results manifest; kept across runs so each run only describes new images. /tmp works on "
                "one host only: use s3://... or a shared volume with several workers"
            ),
        ),
        "output_dir": Param("/tmp/apicore-batch/captions", type="string", description="Where captions go"),
        "max_in_flight": Param(10, type="integer", minimum=1, description="Most Midjourney jobs at once"),
        "poll_interval": Param(10, type="number", exclusiveMinimum=0, description="Seconds between polls"),
        "caption_prompt": Param(
            1, type="integer", minimum=1, maximum=4, description="Prompt used as caption"
        ),
        "strip_parameters": Param(
            True, type="boolean", description="Drop Midjourney parameters (--ar 4:3 ...) from captions"
        ),
    },
    render_template_as_native_obj=True,
) as dag:
    describe = MJBatchDescribeOperator(
        task_id="describe_directory",
        source="{{ params.image_dir }}",
        pattern="{{ params.pattern }}",
        manifest_path="{{ params.manifest_path }}",
        max_in_flight="{{ params.max_in_flight }}",
        poll_interval="{{ params.poll_interval }}",
        timeout=1800,
        deferrable=True,
    )

    @task
    def write_captions(summary: dict, params: dict | None = None) -> dict:
        """
        Read the manifest and write the training set: one caption per described image (no collisions
        between ``cat.png`` and ``cat.jpg``; captions of images no longer described are removed), a
        Hugging Face ImageFolder ``metadata.jsonl`` and ``_stats.json``; return counts.
        """
        from airflow_provider_apicore.manifest import read_manifest
        from airflow_provider_apicore.outputs import write_training_outputs

        records = read_manifest(summary["manifest"])
        written = write_training_outputs(
            records,
            params["image_dir"],
            output_dir=params["output_dir"],
            caption_prompt=params["caption_prompt"],
            strip_parameters=params["strip_parameters"],
            stats_path=params["output_dir"],
            manifest_path=summary["manifest"],
        )
        failed = sorted(r.image for r in records if r.status != "SUCCESS")
        return {**summary, "captions": written["captions"]["written"], "not_described": failed[:20]}

    write_captions(describe.output)
