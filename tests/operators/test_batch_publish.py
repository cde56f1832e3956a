"""
What a finished batch publishes beyond its manifest, over loopback against the emulator: the
training-set outputs asked for, the manifest asset's event with its counts, lineage facets and links.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from airflow.sdk import Asset, AssetAlias

from airflow_provider_apicore.links import ApicoreManifestLink
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from tests.helpers.imagegen import make_png


class Events(dict):
    """``outlet_events``: one accessor per outlet, with ``extra`` and ``add`` like Airflow's."""

    def __missing__(self, key: Any) -> SimpleNamespace:
        added: list[tuple[Any, dict]] = []
        value = SimpleNamespace(
            extra=None, added=added, add=lambda asset, extra=None: added.append((asset, extra))
        )
        self[key] = value
        return value


class TI:
    dag_id = "publish"
    run_id = "manual__1"
    task_id = "describe"
    map_index = -1
    try_number = 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def images(folder: Path) -> Path:
    folder.mkdir()
    for i, color in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        (folder / f"cat{i}.png").write_bytes(make_png(10 + i, 10, color))
    (folder / "cat0.jpg").write_bytes((folder / "cat1.png").read_bytes())  # a name collision
    return folder


def test_outputs_asset_event_lineage_and_link(apicore_conn, tmp_path):
    source = images(tmp_path / "images")
    manifest = tmp_path / "out" / "manifest.jsonl"
    op = MJBatchDescribeOperator(
        task_id="describe",
        source=str(source),
        manifest_path=str(manifest),
        max_in_flight=3,
        poll_interval=0.1,
        caption_extension=".txt",
        imagefolder_metadata=True,
        parquet_path=str(tmp_path / "out" / "train.parquet"),
    )
    assert isinstance(op.outlets[0], Asset) and op.outlets[0].uri.endswith("manifest.jsonl")
    ti, events = TI(), Events()
    summary = op.execute({"ti": ti, "outlet_events": events})

    assert summary["succeeded"] == 4
    assert summary["captions"] == 4
    assert (source / "cat0.png.txt").exists() and (source / "cat0.jpg.txt").exists(), "no collision"
    lines = [json.loads(x) for x in (source / "metadata.jsonl").read_text().splitlines()]
    assert {x["file_name"] for x in lines} == {"cat0.png", "cat1.png", "cat2.png", "cat0.jpg"}
    assert all(len(x["prompts"]) == 4 and x["text"] for x in lines)
    assert (tmp_path / "out" / "train.parquet").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "_stats.json").read_text())

    extra = events[op.outlets[0]].extra
    assert extra["succeeded"] == 4 and extra["unknown_fate"] == 0 and extra["total"] == 4
    assert extra["manifest"].endswith("manifest.jsonl") and extra["schema_version"]
    assert ti.pushed[ApicoreManifestLink().xcom_key].endswith("manifest.jsonl")
    assert op._lineage_inputs == [str(source)]
    assert op._lineage_outputs["manifest"] == str(manifest)


def test_a_templated_manifest_path_is_declared_as_an_alias():
    op = MJBatchDescribeOperator(task_id="t", source="/x", manifest_path="{{ params.m }}")
    assert isinstance(op.outlets[0], AssetAlias)


def test_no_outputs_unless_asked(apicore_conn, tmp_path):
    source = images(tmp_path / "images")
    op = MJBatchDescribeOperator(
        task_id="describe", source=str(source), manifest_path=str(tmp_path / "m.jsonl"), poll_interval=0.1
    )
    summary = op.execute({"ti": TI(), "outlet_events": Events()})
    assert "captions" not in summary
    assert not list(source.glob("*.txt")) and not (source / "metadata.jsonl").exists()


def test_a_changed_setting_describes_again_instead_of_reusing_old_results(apicore_conn, tmp_path):
    source = images(tmp_path / "images")
    manifest = tmp_path / "m.jsonl"

    def run(**kwargs: Any) -> dict[str, Any]:
        op = MJBatchDescribeOperator(
            task_id="describe", source=str(source), manifest_path=str(manifest), poll_interval=0.1, **kwargs
        )
        return op.execute({"ti": TI(), "outlet_events": Events()})

    assert run()["succeeded"] == 4
    assert apicore_conn.stats()["jobs_created"] == 3  # cat0.jpg has cat1.png's bytes: one job
    run()  # same settings: nothing sent again
    assert apicore_conn.stats()["jobs_created"] == 3
    settings = json.loads((tmp_path / "m.jsonl.settings.json").read_text())
    assert settings["bot_type"] is None and settings["action"] == "describe"
    assert run(bot_type="NIJI_JOURNEY")["succeeded"] == 4
    assert apicore_conn.stats()["jobs_created"] == 6, "new settings, new descriptions"
    assert json.loads((tmp_path / "m.jsonl.settings.json").read_text())["bot_type"] == "NIJI_JOURNEY"
