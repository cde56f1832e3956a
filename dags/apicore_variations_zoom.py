"""
Variations, upscales, zooms and pans of one imagined picture, each step reading its parent from XCom;
plus the rest of the family on the way: shorten, blend, face swap and the image seed.

shorten (the prompt's shorter versions)
imagine -> vary (V<n> of the grid, cut into four) -> upscale (U1 of the variation) ->
[zoom_out (Zoom Out 2x), custom_zoom (a window confirmed with "--zoom 1.5"), pan_right, image_seed]
vary -> [blend (two of its pictures), swap_face (the face of one onto another)]
all -> summarize

Each action names its parent with a template, ``mj_task_id="{{ ti.xcom_pull(task_ids='vary',
key='task_id') }}"``, and a readable action; the operator finds the button's ``customId`` in the
parent's buttons. ``custom_zoom`` opens a window (the task waits in status MODAL): the operator confirms
it through ``/mj/submit/modal`` with ``prompt``. Every image is stored under ``output_path``.

Params: ``prompt``, ``variation`` (which picture to vary, 1-4), ``output_path``. The wait settings come
from the environment: ``APICORE_EXAMPLE_POLL_INTERVAL`` (default 5 s), ``APICORE_EXAMPLE_TIMEOUT``
(default 900 s).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_apicore.operators.action import MJActionOperator
from airflow_provider_apicore.operators.blend import MJBlendOperator
from airflow_provider_apicore.operators.imagine import MJImagineOperator
from airflow_provider_apicore.operators.shorten import MJShortenOperator
from airflow_provider_apicore.operators.swap_face import MJSwapFaceOperator

POLL_INTERVAL = float(os.environ.get("APICORE_EXAMPLE_POLL_INTERVAL", "5"))
TIMEOUT = float(os.environ.get("APICORE_EXAMPLE_TIMEOUT", "900"))
WAIT = {"poll_interval": POLL_INTERVAL, "timeout": TIMEOUT}


def parent(task_id: str) -> str:
    """The Midjourney task id an upstream task pushed to XCom, as a template."""
    return "{{ ti.xcom_pull(task_ids='" + task_id + "', key='task_id') }}"


with DAG(
    dag_id="apicore_variations_zoom",
    description="Imagine, vary, upscale, then zoom out, custom zoom (MODAL window) and pan one picture",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["apicore", "midjourney", "example"],
    params={
        "prompt": Param(
            "a lighthouse on a cliff at dusk, watercolor --ar 1:1", type="string", description="Prompt"
        ),
        "variation": Param(2, type="integer", minimum=1, maximum=4, description="Picture to vary (1-4)"),
        "output_path": Param(
            "/tmp/apicore-variations-output", type="string", description="Where the images go"
        ),
    },
) as dag:
    out = "{{ params.output_path }}"

    imagine = MJImagineOperator(task_id="imagine", prompt="{{ params.prompt }}", output_path=out, **WAIT)

    vary = MJActionOperator(
        task_id="vary",
        mj_task_id=parent("imagine"),
        action="variation",
        index="{{ params.variation }}",
        output_path=f"{out}/variations",
        split_grid=True,
        deferrable=True,
        **WAIT,
    )

    upscale = MJActionOperator(
        task_id="upscale",
        mj_task_id=parent("vary"),
        action="upscale",
        index=1,
        output_path=f"{out}/upscaled",
        **WAIT,
    )

    zoom_out = MJActionOperator(
        task_id="zoom_out",
        mj_task_id=parent("upscale"),
        action="zoom_out_2x",
        output_path=f"{out}/zoomed",
        deferrable=True,
        **WAIT,
    )

    custom_zoom = MJActionOperator(
        task_id="custom_zoom",
        mj_task_id=parent("upscale"),
        action="custom_zoom",
        prompt="{{ params.prompt }} --zoom 1.5",
        output_path=f"{out}/zoomed",
        **WAIT,
    )

    pan_right = MJActionOperator(
        task_id="pan_right",
        mj_task_id=parent("upscale"),
        action="pan_right",
        output_path=f"{out}/panned",
        deferrable=True,
        **WAIT,
    )

    @task
    def image_seed(ti=None) -> str:
        """The seed of the upscaled picture (``GET /mj/task/{id}/image-seed``)."""
        from airflow_provider_apicore.hooks.apicore import ApicoreHook

        return ApicoreHook().get_image_seed(ti.xcom_pull(task_ids="upscale", key="task_id"))

    shorten = MJShortenOperator(task_id="shorten", prompt="{{ params.prompt }}", **WAIT)

    # Images from an upstream XCom: the rendered list of stored paths.
    blend = MJBlendOperator(
        task_id="blend",
        images="{{ ti.xcom_pull(task_ids='vary')['files'][:2] }}",
        dimensions="PORTRAIT",
        output_path=f"{out}/blended",
        deferrable=True,
        **WAIT,
    )
    swap_face = MJSwapFaceOperator(
        task_id="swap_face",
        source_image="{{ ti.xcom_pull(task_ids='vary')['files'][0] }}",
        target_image="{{ ti.xcom_pull(task_ids='vary')['files'][3] }}",
        output_path=f"{out}/swapped",
        **WAIT,
    )

    @task
    def summarize(ti=None) -> dict:
        """The files each step stored (paths from XCom), the shortened prompts and the seed."""
        steps = ["imagine", "vary", "upscale", "zoom_out", "custom_zoom", "pan_right", "blend", "swap_face"]
        summary = {step: (ti.xcom_pull(task_ids=step) or {}).get("files", []) for step in steps}
        summary["shortened"] = (ti.xcom_pull(task_ids="shorten") or {}).get("prompts", [])
        summary["seed"] = ti.xcom_pull(task_ids="image_seed")
        return summary

    seed = image_seed()
    done = summarize()
    imagine >> vary >> upscale >> [zoom_out, custom_zoom, pan_right, seed] >> done
    vary >> [blend, swap_face] >> done
    shorten >> done
