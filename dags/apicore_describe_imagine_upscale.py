"""
From a folder of images to new upscaled images: describe -> imagine -> upscale, all mapped and deferrable.

list_images -> MJDescribeOperator (one per image) -> first_prompts -> MJImagineOperator (one per
prompt, grid cut into four under ``output_path/grids``) -> upscale_requests -> MJActionOperator
``action="upscale"`` (four per grid, index 1-4, under ``output_path/upscaled``) -> summarize

Every Midjourney task waits in the triggerer (``deferrable=True``), so a worker slot is held only while
submitting and storing. Files are named after the Midjourney task ids; the XComs carry their paths
(never image bytes). ``summarize`` returns how many files were stored and where.

Params: ``image_dir`` (any ObjectStoragePath URL or local path; default: the sample images shipped
beside this file), ``pattern``, ``max_images`` (cap on how many images are taken, in name order),
``output_path`` (local path or ``s3://`` ... URL). The wait settings come from the environment, read
when the DAG is parsed: ``APICORE_EXAMPLE_POLL_INTERVAL`` (default 5 s) and
``APICORE_EXAMPLE_TIMEOUT`` (default 900 s). Try it against the bundled emulator with ``make demo``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_apicore.operators.action import MJActionOperator
from airflow_provider_apicore.operators.describe import MJDescribeOperator
from airflow_provider_apicore.operators.imagine import MJImagineOperator

SAMPLES = Path(__file__).resolve().parent / "sample_images"
POLL_INTERVAL = float(os.environ.get("APICORE_EXAMPLE_POLL_INTERVAL", "5"))
TIMEOUT = float(os.environ.get("APICORE_EXAMPLE_TIMEOUT", "900"))

with DAG(
    dag_id="apicore_describe_imagine_upscale",
    description="Describe a folder, imagine from each first prompt, upscale all four pictures, keep files",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["apicore", "midjourney", "example"],
    params={
        "image_dir": Param(str(SAMPLES), type="string", description="Folder of images to start from"),
        "pattern": Param("*", type="string", description="Glob pattern of the files to take"),
        "max_images": Param(3, type="integer", minimum=1, maximum=100, description="Take at most this many"),
        "output_path": Param(
            "/tmp/apicore-imagine-output", type="string", description="Where the grids and upscales go"
        ),
    },
) as dag:

    @task
    def list_images(params: dict | None = None) -> list[str]:
        """The images to start from, as path strings (mapped over below)."""
        from airflow_provider_apicore.fanout import images_for_mapping

        return images_for_mapping(params["image_dir"], pattern=params["pattern"])[: params["max_images"]]

    describe = MJDescribeOperator.partial(
        task_id="describe",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
    ).expand(image=list_images())

    @task
    def first_prompts(described: list[dict]) -> list[str]:
        """The first prompt of each description (an image without prompts is skipped)."""
        return [result["prompts"][0] for result in described if result and result.get("prompts")]

    imagine = MJImagineOperator.partial(
        task_id="imagine",
        output_path="{{ params.output_path }}/grids",
        split_grid=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
    ).expand(prompt=first_prompts(describe.output))

    @task
    def upscale_requests(grids: list[dict]) -> list[dict]:
        """One upscale per picture of each grid: ``{"mj_task_id", "index"}`` for expand_kwargs."""
        return [{"mj_task_id": grid["task_id"], "index": index} for grid in grids for index in (1, 2, 3, 4)]

    upscale = MJActionOperator.partial(
        task_id="upscale",
        action="upscale",
        output_path="{{ params.output_path }}/upscaled",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=TIMEOUT,
    ).expand_kwargs(upscale_requests(imagine.output))

    @task
    def summarize(grids: list[dict], upscaled: list[dict], params: dict | None = None) -> dict:
        """How many files were stored where (the paths come from XCom; no image is read here)."""
        grid_files = [path for grid in grids for path in grid.get("files", [])]
        upscale_files = [path for result in upscaled for path in result.get("files", [])]
        return {
            "output_path": params["output_path"],
            "grids": len(grids),
            "grid_files": grid_files,
            "upscale_files": upscale_files,
        }

    summarize(imagine.output, upscale.output)
