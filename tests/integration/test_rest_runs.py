"""
The example DAGs, triggered with params through the REST API v2 on the real services: every task
succeeds, deferrable tasks are handed to the triggerer service, XComs and manifests are right.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_stack import HEALTH_COMPONENTS, AirflowStack
from tests.integration.conftest import FANOUT_IMAGES, copy_images, run_dag
from tests.integration.rest import (
    RunWatch,
    assert_deferred_to_triggerer,
    assert_not_deferred,
    assert_succeeded,
    emulator_task,
    wait_for_dag,
    xcom,
)

pytestmark = pytest.mark.integration

#: compare_prompts' keys -> the task whose result each one is.
WAIT_STYLES = {
    "polling": "describe_polling",
    "deferrable": "describe_deferrable",
    "sensor_poke": "wait_poke",
    "sensor_deferrable": "wait_deferrable",
}


def assert_described(stack: AirflowStack, result: dict[str, Any], expected_state: str | None = None) -> None:
    """A describe result matches the task the emulator finished: four prompts taken from its text."""
    task = emulator_task(stack, result["task_id"])
    assert task["status"] == "SUCCESS" and result["status"] == "SUCCESS", (task, result)
    final_prompt = task["properties"]["finalPrompt"]
    assert len(result["prompts"]) == 4 and all(p and p in final_prompt for p in result["prompts"]), (
        result["prompts"],
        final_prompt,
    )
    if expected_state is not None:
        assert task["state"] == expected_state


def test_services_are_healthy_load_the_provider_and_parse_every_example_dag(stack: AirflowStack) -> None:
    import airflow_provider_apicore

    health = stack.health()
    assert {c: health[c]["status"] for c in HEALTH_COMPONENTS} == dict.fromkeys(HEALTH_COMPONENTS, "healthy")
    providers = stack.api("GET", "/api/v2/providers?limit=200", expect=200).json()["providers"]
    ours = [p for p in providers if p["package_name"] == "airflow-provider-apicore"]
    assert [p["version"] for p in ours] == [airflow_provider_apicore.__version__], providers
    for dag_id in ("apicore_describe_images", "apicore_describe_wait_styles", "apicore_batch_describe"):
        wait_for_dag(stack, dag_id)
    errors = stack.api("GET", "/api/v2/importErrors", expect=200).json()
    assert errors["total_entries"] == 0, errors


def test_fanout_dag_succeeds_with_every_mapped_describe_deferred_to_the_triggerer(
    stack: AirflowStack, fanout_run: RunWatch
) -> None:
    assert_succeeded(stack, fanout_run)
    describes = fanout_run.keys("describe")
    assert [m for _, m in describes] == list(range(len(FANOUT_IMAGES))), fanout_run.describe()
    for key in describes:
        assert_deferred_to_triggerer(stack, fanout_run, key)
    assert fanout_run.submissions == len(FANOUT_IMAGES)


def test_fanout_xcoms_and_manifest_match_what_the_emulator_returned(
    stack: AirflowStack, fanout_run: RunWatch
) -> None:
    conf = fanout_run.conf
    state_tag = f"apicore_describe_images/{fanout_run.run_id}"
    listed = xcom(stack, fanout_run, "list_images")
    assert sorted(Path(p).name for p in listed) == sorted(FANOUT_IMAGES)
    results = {image: xcom(stack, fanout_run, "describe", m) for m, image in enumerate(listed)}
    for result in results.values():
        assert_described(stack, result, expected_state=state_tag)
    assert len({r["task_id"] for r in results.values()}) == len(FANOUT_IMAGES)

    output = Path(conf["output_dir"])
    manifest = output / "manifest.jsonl"
    summary = xcom(stack, fanout_run, "write_results")
    assert summary == {
        "manifest": str(manifest),
        "images": len(FANOUT_IMAGES),
        "succeeded": len(FANOUT_IMAGES),
        "failed": 0,
        "captions": len(FANOUT_IMAGES),
    }
    records = {r["image"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    assert set(records) == set(listed)
    for image, result in results.items():
        record = records[image]
        assert record["status"] == "SUCCESS"
        assert (record["task_id"], record["prompts"]) == (result["task_id"], result["prompts"])
        # caption_prompt=2 and strip_parameters=True came from the run's conf.
        caption = (output / f"{Path(image).stem}.txt").read_text().strip()
        chosen = result["prompts"][conf["caption_prompt"] - 1]
        assert caption and chosen.startswith(caption) and "--" not in caption, (caption, chosen)
        if " --" in chosen:
            assert chosen != caption, "strip_parameters=True kept the Midjourney parameters"


def test_wait_styles_dag_polls_in_the_worker_and_defers_to_the_triggerer(
    stack: AirflowStack, apicore_connection: str, workdir: Path
) -> None:
    (image,) = copy_images(workdir / "wait-styles", ["night_sky.webp"])
    watch = run_dag(stack, "apicore_describe_wait_styles", {"image": str(image)})
    assert_succeeded(stack, watch)
    for task_id in ("describe_deferrable", "wait_deferrable"):
        assert_deferred_to_triggerer(stack, watch, (task_id, -1))
    for task_id in ("describe_polling", "submit", "wait_poke"):
        assert_not_deferred(stack, watch, (task_id, -1))
    compared = xcom(stack, watch, "compare_prompts")
    assert set(compared["task_ids"]) == set(WAIT_STYLES)
    for style, task_id in WAIT_STYLES.items():
        result = xcom(stack, watch, task_id)
        assert result["task_id"] == compared["task_ids"][style]
        assert result["prompts"] == compared["prompts"]
        assert_described(stack, result)
    # Both sensors followed the job the ``submit`` task started.
    assert compared["task_ids"]["sensor_poke"] == xcom(stack, watch, "submit", key="task_id")
    assert compared["task_ids"]["sensor_deferrable"] == compared["task_ids"]["sensor_poke"]


def test_batch_dag_describes_a_directory_in_the_triggerer_and_resumes_from_its_manifest(
    stack: AirflowStack, apicore_connection: str, workdir: Path
) -> None:
    from airflow_provider_apicore.manifest import read_manifest

    images = copy_images(workdir / "batch-images", ["forest_path.jpg", "sunset beach.JPG"])
    conf = {
        "image_dir": str(images[0].parent),
        "manifest_path": str(workdir / "batch" / "manifest.jsonl"),
        "output_dir": str(workdir / "batch" / "captions"),
        "max_in_flight": 4,
        "poll_interval": 2,
        "strip_parameters": False,
    }

    first = run_batch(stack, conf)
    assert first.submissions == 2
    assert_deferred_to_triggerer(stack, first, ("describe_directory", -1))
    summary = xcom(stack, first, "write_captions")
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["captions"]) == (2, 2, 0, 2)
    records = {Path(r.image).name: r for r in read_manifest(conf["manifest_path"])}
    assert set(records) == {"forest_path.jpg", "sunset beach.JPG"}
    for name, record in records.items():
        assert record.status == "SUCCESS"
        result = {"task_id": record.task_id, "status": record.status, "prompts": record.prompts}
        assert_described(stack, result)
        caption = Path(conf["output_dir"]) / (Path(name).stem + ".txt")
        assert caption.read_text().strip() == record.prompts[0]

    # The next run over the same manifest sends only the image added since.
    copy_images(workdir / "batch-images", ["night_sky.webp"])
    second = run_batch(stack, conf)
    assert second.submissions == 1
    again = {Path(r.image).name: r for r in read_manifest(conf["manifest_path"])}
    assert set(again) == {"forest_path.jpg", "sunset beach.JPG", "night_sky.webp"}
    assert all(again[name].task_id == records[name].task_id for name in records)
    assert again["night_sky.webp"].status == "SUCCESS"
    summary = xcom(stack, second, "write_captions")
    assert (summary["total"], summary["succeeded"], summary["captions"]) == (3, 3, 3)


def run_batch(stack: AirflowStack, conf: dict) -> RunWatch:
    watch = run_dag(stack, "apicore_batch_describe", conf)
    assert_succeeded(stack, watch)
    return watch
