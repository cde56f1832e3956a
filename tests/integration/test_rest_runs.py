"""
The example DAGs, triggered with params through the REST API v2 on the real services: every task
succeeds, deferrable tasks are handed to the triggerer service, XComs and manifests are right.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_stack import AirflowStack
from tests.integration.conftest import FANOUT_IMAGES, copy_images, run_dag
from tests.integration.rest import (
    RunWatch,
    assert_deferred_to_triggerer,
    assert_not_deferred,
    assert_succeeded,
    emulator_task,
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
    results = [xcom(stack, fanout_run, "describe", m) for _, m in fanout_run.keys("describe")]
    for result in results:
        assert_described(stack, result, expected_state=state_tag)
    assert len({r["task_id"] for r in results}) == len(FANOUT_IMAGES)

    summary = xcom(stack, fanout_run, "write_results")
    manifest = Path(conf["output_dir"]) / "manifest.jsonl"
    assert summary["images"] == len(FANOUT_IMAGES) and summary["manifest"] == str(manifest), summary
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    # The manifest pairs each listed image with its mapped result, in mapping order.
    assert [line["image"] for line in lines] == listed
    assert [line["task_id"] for line in lines] == [r["task_id"] for r in results]
    assert [line["prompts"] for line in lines] == [r["prompts"] for r in results]
    for image, result in zip(listed, results, strict=True):
        caption = Path(conf["output_dir"]) / f"{Path(image).stem}.txt"
        assert caption.read_text().strip() == result["prompts"][conf["caption_prompt"] - 1]


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
