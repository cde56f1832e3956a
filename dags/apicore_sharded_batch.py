"""
Describe one large directory as several batched shards that run on any worker at the same time.

plan_shards -> MJBatchDescribeOperator.partial(...).expand_kwargs(shards) -> merge_manifest

``plan_shards`` lists the directory once and gives every image a stable shard (a hash of its path
relative to ``image_dir``, so a growing folder does not reshuffle). Each mapped ``describe_shard``
task is one :class:`~airflow_provider_apicore.operators.batch_describe.MJBatchDescribeOperator` over
its shard, writing ``<manifest_prefix>/part-000k.jsonl``, with ``max_in_flight = account_limit //
shards`` so all shards together stay within the APICore account's concurrency on however many
workers they run. A retry of a shard (a worker lost, say) resumes from its part. ``merge_manifest``
writes the combined manifest and one caption per image.

Everything may live on object storage: ``image_dir`` and ``manifest_prefix`` take
``s3://<conn_id>@bucket/path`` (any ObjectStoragePath URL). ``APICORE_ACCOUNT_POOL`` (read when the
file is parsed) puts the shards into an Airflow pool, e.g. one shared with other APICore DAGs.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator

with DAG(
    dag_id="apicore_sharded_batch",
    description="Describe a large directory as stable shards, one batched task per shard",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    # One writer per manifest part: runs of this DAG on one prefix must not overlap.
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=float(os.environ.get("APICORE_EXAMPLE_RETRY_DELAY", "60"))),
    },
    tags=["apicore", "midjourney", "example"],
    params={
        "image_dir": Param(
            "dags/sample_images", type="string", description="Directory (ObjectStoragePath URL) to describe"
        ),
        "pattern": Param("*", type="string", description="Glob pattern of the files to consider"),
        "manifest_prefix": Param(
            "/tmp/apicore-sharded/manifest",
            type="string",
            description="Directory of the manifest parts (part-0000.jsonl ...); kept across runs",
        ),
        "output_dir": Param("/tmp/apicore-sharded/captions", type="string", description="Captions go here"),
        "shards": Param(4, type="integer", minimum=1, description="Number of shards (keep it fixed)"),
        "account_limit": Param(
            12, type="integer", minimum=1, description="APICore jobs at once, shared by all shards"
        ),
        "poll_interval": Param(10, type="number", exclusiveMinimum=0, description="Seconds between polls"),
        "deferrable": Param(True, type="boolean", description="Wait in the triggerer between rounds"),
        "caption_prompt": Param(
            1, type="integer", minimum=1, maximum=4, description="Prompt used as caption"
        ),
    },
    render_template_as_native_obj=True,
) as dag:

    @task
    def plan(params: dict | None = None) -> list[dict]:
        """List the directory once; one spec (paths, manifest part, max_in_flight, deferrable) per shard."""
        from airflow_provider_apicore.shards import plan_shards

        specs = plan_shards(
            params["image_dir"],
            shards=params["shards"],
            manifest_prefix=params["manifest_prefix"],
            account_limit=params["account_limit"],
            pattern=params["pattern"],
        )
        return [{**spec, "deferrable": params["deferrable"]} for spec in specs]

    describe = MJBatchDescribeOperator.partial(
        task_id="describe_shard",
        poll_interval="{{ params.poll_interval }}",
        timeout=1800,
        pool=os.environ.get("APICORE_ACCOUNT_POOL", "default_pool"),
    ).expand_kwargs(plan())

    @task(trigger_rule="all_done")
    def merge_manifest(params: dict | None = None) -> dict:
        """Combine the parts into ``<manifest_prefix>/combined.jsonl`` and write one caption per image."""
        from airflow_provider_apicore.manifest import write_captions
        from airflow_provider_apicore.shards import merge_shards, read_sharded_manifest

        prefix = params["manifest_prefix"].rstrip("/")
        counts = merge_shards(prefix, f"{prefix}/combined.jsonl")
        records = read_sharded_manifest(prefix)
        written = write_captions(
            records,
            params["output_dir"],
            root=params["image_dir"],
            caption_prompt=params["caption_prompt"],
            strip_parameters=True,
        )
        failed = sorted(r.image for r in records if r.status != "SUCCESS")
        return {**counts, "captions": written["written"], "failed": len(failed), "not_described": failed[:20]}

    describe >> merge_manifest()
