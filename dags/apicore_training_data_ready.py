"""
"Training data ready": runs when a describe run updates the manifest asset, and packages the training set.

check_event -> build_training_set

Scheduled on the manifest's asset (its real URI, ``file:///tmp/apicore-batch/manifest.jsonl`` for the
example batch DAG's default ``manifest_path``; set ``APICORE_TRAINING_MANIFEST`` to another path or
``s3://`` URL before the DAG is parsed). The operators attach the run's numbers to the asset event
(``schema_version``, ``succeeded``, ``failed``, ``unknown_fate``, ``pending``, ``total``, ``manifest``,
``spend``); ``check_event`` reads them from ``triggering_asset_events`` and stops the run (skips) when
images are still pending or too many failed, so a training job never starts on half a data set.
``build_training_set`` reads the manifest and writes the Parquet file (with provenance columns, when
``pyarrow`` is installed) and ``_stats.json`` next to it.

Run by hand (``airflow dags test apicore_training_data_ready --conf '{"manifest": "..."}'``) it uses
the ``manifest`` param instead of an event.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_apicore.lineage import manifest_asset

MANIFEST = os.environ.get("APICORE_TRAINING_MANIFEST", "/tmp/apicore-batch/manifest.jsonl")
manifest = manifest_asset(MANIFEST)

with DAG(
    dag_id="apicore_training_data_ready",
    description="Package the training set when the captions manifest is updated (asset-scheduled)",
    schedule=[manifest],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["apicore", "midjourney", "example", "assets"],
    params={
        "manifest": Param(MANIFEST, type="string", description="Manifest to use when run by hand"),
        "max_failed_fraction": Param(
            0.1, type="number", minimum=0, maximum=1, description="Skip when more images than this failed"
        ),
    },
) as dag:

    @task.short_circuit
    def check_event(triggering_asset_events=None, params: dict | None = None, ti=None) -> bool:
        """Read the counts from the asset event; go on only when nothing is pending and few failed."""
        extra: dict = {}
        for events in (triggering_asset_events or {}).values():
            if events:
                extra = dict(events[-1].extra or {})
        if not extra:
            from airflow_provider_apicore.lineage import asset_event_extra
            from airflow_provider_apicore.manifest import read_manifest

            extra = asset_event_extra(read_manifest(params["manifest"]), manifest_path=params["manifest"])
        ti.xcom_push(key="event", value=extra)
        total, failed, pending = extra.get("total", 0), extra.get("failed", 0), extra.get("pending", 0)
        print(
            f"manifest {extra.get('manifest')}: {extra.get('succeeded', 0)}/{total} described, "
            f"{failed} failed ({extra.get('unknown_fate', 0)} unknown fate), {pending} pending, "
            f"spend {extra.get('spend')}"
        )
        if pending or not total:
            print("Not ready: images are still pending (or the manifest is empty)")
            return False
        if failed / total > params["max_failed_fraction"]:
            print(f"Not ready: {failed}/{total} failed, more than {params['max_failed_fraction']:.0%}")
            return False
        return True

    @task
    def build_training_set(params: dict | None = None, ti=None) -> dict:
        """Write the Parquet training set (if pyarrow is installed) and _stats.json next to the manifest."""
        from airflow_provider_apicore.exceptions import ApicoreConfigError
        from airflow_provider_apicore.manifest import read_manifest, to_storage_path
        from airflow_provider_apicore.outputs import write_parquet, write_stats

        extra = ti.xcom_pull(task_ids="check_event", key="event") or {}
        path = to_storage_path(extra.get("manifest") or params["manifest"])
        records = read_manifest(path)
        summary = {
            "manifest": str(path),
            "stats": write_stats(records, path.parent, manifest=str(path))["path"],
        }
        try:
            summary["parquet"] = write_parquet(records, path.parent / "captions.parquet")["path"]
        except ApicoreConfigError as err:  # pyarrow missing: the stats still say what is there
            print(f"No Parquet file: {err}")
        return summary

    check_event() >> build_training_set()
