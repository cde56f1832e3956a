"""
Assets, OpenLineage and extra links: helpers, and one real `airflow dags test` run of the batch operator
with the mixins against the emulator, capturing OpenLineage events with the file transport.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from airflow.sdk import Asset, AssetAlias

from airflow_provider_apicore.example_data import sample_images_dir
from airflow_provider_apicore.lineage import (
    ApicoreLineageMixin,
    asset_event_extra,
    build_operator_lineage,
    manifest_asset,
    manifest_outlet,
    openlineage_dataset_name,
    storage_uri,
)
from airflow_provider_apicore.links import ApicoreLinksMixin, ApicoreManifestLink, browsable_url
from airflow_provider_apicore.manifest import ManifestRecord, write_manifest
from tests.helpers.airflow_run import airflow_env, run_dag_test

PROBE_DAGS = Path(__file__).resolve().parent / "lineage_dags"


# ---------------------------------------------------------------------------------- helpers
def test_asset_uris_are_the_real_locations(tmp_path):
    assert storage_uri(tmp_path / "m.jsonl") == f"file://{tmp_path}/m.jsonl"
    assert storage_uri("s3://bucket/run/manifest.jsonl") == "s3://bucket/run/manifest.jsonl"
    asset = manifest_asset("s3://bucket/run/manifest.jsonl")
    assert isinstance(asset, Asset) and asset.uri == "s3://bucket/run/manifest.jsonl"
    assert manifest_outlet(str(tmp_path / "m.jsonl"), "alias").uri == f"file://{tmp_path}/m.jsonl"
    alias = manifest_outlet("{{ params.manifest_path }}", "apicore-manifest")
    assert isinstance(alias, AssetAlias) and alias.name == "apicore-manifest"


def test_asset_event_extra_counts_every_outcome():
    records = [
        ManifestRecord(image="a", status="SUCCESS"),
        ManifestRecord(image="b", status="FAILURE"),
        ManifestRecord(image="c", status="unknown_fate"),
        ManifestRecord(image="d", status="submitted"),
    ]
    extra = asset_event_extra(
        records, manifest_path="s3://b/m.jsonl", spend={"quota": 3}, bot_type="MID_JOURNEY"
    )
    assert extra == {
        "schema_version": 1,
        "succeeded": 1,
        "failed": 2,
        "unknown_fate": 1,
        "pending": 1,
        "total": 4,
        "manifest": "s3://b/m.jsonl",
        "spend": {"quota": 3},
        "bot_type": "MID_JOURNEY",
    }
    json.dumps(extra)  # must be JSON-safe to be stored with the event


def test_openlineage_names_follow_the_provider_conventions(tmp_path):
    assert openlineage_dataset_name(tmp_path) == ("file", str(tmp_path))
    assert openlineage_dataset_name("s3://bucket/images/") == ("s3://bucket", "images")
    assert openlineage_dataset_name("gs://b/x/m.jsonl") == ("gs://b", "x/m.jsonl")


def test_facets_have_one_input_for_the_directory_and_the_counts(tmp_path):
    pytest.importorskip("airflow.providers.openlineage")
    lineage = build_operator_lineage(
        [tmp_path / "images"],
        {"manifest": tmp_path / "m.jsonl", "captions": tmp_path / "captions", "images": None},
        {"total": 3, "succeeded": 2, "failed": 1, "unknown_fate": 0, "pending": 0},
        task_ids=["1", "2", "2"],
        output_file_counts={"captions": 2},
    )
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(tmp_path / "images"))]
    assert [d.name for d in lineage.outputs] == [str(tmp_path / "m.jsonl"), str(tmp_path / "captions")]
    assert lineage.outputs[1].outputFacets["outputStatistics"].fileCount == 2
    facet = lineage.run_facets["apicore"]
    assert (facet.total, facet.succeeded, facet.failed, facet.taskIds) == (3, 2, 1, ["1", "2"])


def test_many_task_ids_are_left_out_of_the_run_facet(tmp_path):
    pytest.importorskip("airflow.providers.openlineage")
    lineage = build_operator_lineage([tmp_path], {}, {"total": 60}, task_ids=[str(i) for i in range(60)])
    assert lineage.run_facets["apicore"].taskIds is None


def test_without_the_openlineage_provider_the_mixin_returns_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    mixin = ApicoreLineageMixin()
    mixin.set_lineage([tmp_path], {"manifest": tmp_path / "m.jsonl"}, [ManifestRecord(image="a")])
    assert mixin.get_openlineage_facets_on_complete(None) is None


def test_browsable_urls():
    assert browsable_url("s3://bucket/a b/m.jsonl") == (
        "https://s3.console.aws.amazon.com/s3/object/bucket?prefix=a+b%2Fm.jsonl"
    )
    assert (
        browsable_url("gs://b/k/m.jsonl")
        == "https://console.cloud.google.com/storage/browser/_details/b/k/m.jsonl"
    )
    assert browsable_url("/tmp/x y/m.jsonl") == "file:///tmp/x%20y/m.jsonl"
    assert browsable_url("https://cdn.example/img.png") == "https://cdn.example/img.png"
    assert ApicoreLinksMixin.operator_extra_links[1].name == "Results manifest"
    assert ApicoreManifestLink().xcom_key == "_link_ApicoreManifestLink"


# ---------------------------------------------------------------------------------- a real run
@pytest.mark.e2e
def test_a_batch_run_emits_the_asset_event_the_lineage_and_the_links(apicore_conn, airflow_home, tmp_path):
    pytest.importorskip("airflow.providers.openlineage")
    apicore_conn.configure(job_seconds=0.2, concurrency=10, faults={})
    images = tmp_path / "images"
    shutil.copytree(sample_images_dir(), images)
    manifest, captions, events = (
        tmp_path / "out" / "manifest.jsonl",
        tmp_path / "captions",
        tmp_path / "ol.jsonl",
    )
    env = airflow_env(
        airflow_home,
        {
            **apicore_conn.conn_env(),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROBE_DAGS),
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(events), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "apicore-test",
        },
    )
    conf = {"image_dir": str(images), "manifest_path": str(manifest), "captions_dir": str(captions)}
    run = run_dag_test(env, "apicore_lineage_probe", conf, timeout=300)
    assert run.state == "success", run.output[-3000:]

    # Extra links, stored under the keys the UI reads.
    assert run.xcom("describe", "_link_ApicoreManifestLink") == f"file://{manifest}"
    assert run.xcom("describe", "_link_ApicoreResultImageLink").startswith("http")

    # The asset event for the manifest's real URI, through the alias, with the counts in its extra.
    con = sqlite3.connect(airflow_home / "airflow.db")
    try:
        rows = con.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE e.source_dag_id = 'apicore_lineage_probe' AND e.source_run_id = ?",
            (run.run_id,),
        ).fetchall()
    finally:
        con.close()
    assert [uri for uri, _ in rows] == [f"file://{manifest}"]
    extra = json.loads(rows[0][1])
    assert (extra["succeeded"], extra["failed"], extra["pending"], extra["total"]) == (5, 0, 0, 5)
    assert extra["schema_version"] == 1 and extra["manifest"] == f"file://{manifest}"

    # OpenLineage: the COMPLETE event has the directory as one input and the manifest + captions as outputs.
    lines = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    complete = [e for e in lines if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(".describe")]
    assert complete, [(e["eventType"], e["job"]["name"]) for e in lines]
    event = complete[-1]
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [("file", str(images))]
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [
        ("file", str(manifest)),
        ("file", str(captions)),
    ]
    assert event["outputs"][1]["outputFacets"]["outputStatistics"]["fileCount"] == 5
    facet = event["run"]["facets"]["apicore"]
    assert (facet["succeeded"], facet["failed"], facet["total"]) == (5, 0, 5)
    assert len(facet["taskIds"]) == 5


@pytest.mark.e2e
def test_the_training_data_ready_dag_is_scheduled_on_the_manifest_asset_and_packages_the_set(
    airflow_home, tmp_path
):
    pytest.importorskip("pyarrow")
    manifest = tmp_path / "batch" / "manifest.jsonl"
    records = [
        ManifestRecord(image=f"/data/{i}.png", status="SUCCESS", prompts=["a", "b", "c", "d"], task_id=str(i))
        for i in range(3)
    ]
    write_manifest(manifest, records)
    env = airflow_env(airflow_home, {"APICORE_TRAINING_MANIFEST": str(manifest)})
    run = run_dag_test(env, "apicore_training_data_ready", {"manifest": str(manifest)}, timeout=300)
    assert run.state == "success", run.output[-3000:]
    summary = run.xcom("build_training_set")
    parquet = manifest.parent / "captions.parquet"
    assert summary["parquet"] in (str(parquet), f"file://{parquet}") and parquet.exists()
    assert json.loads((manifest.parent / "_stats.json").read_text())["succeeded"] == 3
    con = sqlite3.connect(airflow_home / "airflow.db")
    try:
        uris = con.execute(
            "SELECT a.uri FROM dag_schedule_asset_reference r JOIN asset a ON a.id = r.asset_id "
            "WHERE r.dag_id = 'apicore_training_data_ready'"
        ).fetchall()
    finally:
        con.close()
    assert uris == [(f"file://{manifest}",)]
