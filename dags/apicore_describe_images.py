"""
Describe every image in a directory with Midjourney, one mapped task per image.

list_images -> MJDescribeOperator.partial(...).expand(image=...) -> write_results

The images are listed at run time (a DAG param: any ``ObjectStoragePath``, local or ``s3://`` ...),
each mapped task submits one image and waits for its four prompts in the triggerer (deferrable), and
``write_results`` writes a JSONL manifest (the same records as ``MJBatchDescribeOperator``'s) and one
``.txt`` caption per image into ``output_dir``, mirroring the images' paths under ``image_dir``.
``write_results`` runs even if some images failed, and records why they failed.

Airflow maps at most ``[core] max_map_length`` (1024) tasks: beyond that ``list_images`` fails with a
message pointing to the batched operator (see ``apicore_batch_describe``), which suits large
directories better anyway. Try this DAG against the bundled emulator with ``make demo``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_apicore.operators.describe import MJDescribeOperator

with DAG(
    dag_id="apicore_describe_images",
    description="Describe a directory of images with Midjourney (one mapped task per image)",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["apicore", "midjourney", "example"],
    params={
        "image_dir": Param(
            "dags/sample_images", type="string", description="Directory (ObjectStoragePath URL) to describe"
        ),
        "pattern": Param("*", type="string", description="Glob pattern of the files to consider"),
        "output_dir": Param(
            "/tmp/apicore-describe-output", type="string", description="Where the manifest and captions go"
        ),
        "caption_prompt": Param(
            1, type="integer", minimum=1, maximum=4, description="Prompt used as caption"
        ),
        "strip_parameters": Param(
            False, type="boolean", description="Drop Midjourney parameters (--ar 4:3 ...) from captions"
        ),
    },
    render_template_as_native_obj=False,
) as dag:

    @task
    def list_images(params: dict | None = None) -> list[str]:
        """The images to describe, as path strings (mapped over below)."""
        from airflow_provider_apicore.fanout import images_for_mapping

        return images_for_mapping(params["image_dir"], pattern=params["pattern"])

    images = list_images()
    describe = MJDescribeOperator.partial(
        task_id="describe",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=2,
        timeout=900,
        state="{{ dag.dag_id }}/{{ run_id }}",
        # A retry re-attaches to the image's job (task_state_store): it never pays twice.
        retries=2,
        retry_delay=timedelta(seconds=10),
    ).expand(image=images)

    @task(trigger_rule="all_done")
    def write_results(images: list[str], params: dict | None = None, ti=None) -> dict:
        """Write the JSONL manifest and one caption file per image; return a small summary."""
        from airflow_provider_apicore.fanout import write_fanout_results

        # Pulled by map index so that a failed image leaves a gap instead of shifting the others.
        indexes = list(range(len(images)))
        results = ti.xcom_pull(task_ids="describe", map_indexes=indexes)
        task_ids = ti.xcom_pull(task_ids="describe", key="task_id", map_indexes=indexes)
        # A submission whose answer was lost: {"state", "cause"}; recorded unknown_fate, never resent.
        unknown_fates = ti.xcom_pull(task_ids="describe", key="unknown_fate", map_indexes=indexes)
        return write_fanout_results(
            images,
            results,
            params["output_dir"],
            caption_prompt=params["caption_prompt"],
            task_ids=task_ids,
            unknown_fates=unknown_fates,
            root=params["image_dir"],
            strip_parameters=params["strip_parameters"],
        )

    describe >> write_results(images)
