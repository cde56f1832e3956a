"""
The family example DAGs for real: ``airflow dags test`` against the emulator over loopback HTTP.

``apicore_describe_imagine_upscale``: two sample images are described, each first prompt imagined
(mapped, deferrable; the grid cut into four PNGs), and all four pictures of each grid upscaled
(``expand_kwargs``), every file stored under ``output_path`` and checked as an image.
``apicore_variations_zoom``: imagine -> variation -> upscale -> zoom out, custom zoom (the MODAL window
confirmed through /mj/submit/modal) and pan, each step naming its parent through an XCom template;
shorten, blend and face swap of the variation's pictures, and the upscale's image seed.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.airflow_run import airflow_db_dump, airflow_env, run_dag_test

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parents[2] / "dags" / "sample_images"


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.load()  # decodes every pixel: a truncated file fails here
        assert image.format == "PNG"
        return image.size


def deferred_tasks(output: str) -> set[str]:
    return set(re.findall(r"Pausing task as DEFERRED\..*?task_id=(\w+)", output))


@pytest.fixture
def family_env(airflow_home: Path, emulator) -> dict[str, str]:
    emulator.configure(job_seconds=0.3, concurrency=16, gateway=False)
    return airflow_env(
        airflow_home,
        {**emulator.conn_env(), "APICORE_EXAMPLE_POLL_INTERVAL": "0.3", "APICORE_EXAMPLE_TIMEOUT": "120"},
    )


def test_describe_imagine_upscale_stores_four_pngs_per_grid_and_one_per_upscale(
    family_env, emulator, tmp_path: Path
) -> None:
    images = tmp_path / "in"
    images.mkdir()
    for name in ("red_balloon.png", "forest_path.jpg"):
        shutil.copy(SAMPLES / name, images / name)
    out = tmp_path / "out"

    result = run_dag_test(
        family_env,
        "apicore_describe_imagine_upscale",
        {"image_dir": str(images), "max_images": 2, "output_path": str(out)},
        timeout=600,
    )

    assert result.returncode == 0, result.output[-4000:]
    assert result.state == "success"
    assert set(result.task_states.values()) == {"success"}
    assert len(result.states("describe")) == 2 and len(result.states("imagine")) == 2
    assert len(result.states("upscale")) == 8
    assert {"describe", "imagine", "upscale"} <= deferred_tasks(result.output)

    grids = result.mapped_xcoms("imagine")
    prompts = result.xcom("first_prompts")
    assert [g["prompt"] for g in grids] == prompts  # each grid imagined from its image's first prompt
    grid_files = sorted((out / "grids").iterdir())
    assert len(grid_files) == 8  # four pictures per grid
    for grid in grids:
        assert [Path(p).name for p in grid["files"]] == [f"{grid['task_id']}_{i}.png" for i in (1, 2, 3, 4)]
        # The four quarters of one grid have one size (the aspect follows the prompt's --ar).
        assert len({image_size(Path(p)) for p in grid["files"]}) == 1

    upscales = result.mapped_xcoms("upscale")
    assert {u["action"] for u in upscales} == {"UPSCALE"}
    upscale_files = sorted((out / "upscaled").iterdir())
    assert len(upscale_files) == 8  # all four pictures of both grids
    assert all(image_size(p)[0] > 0 for p in upscale_files)
    # Eight different pictures, and each comes from the right parent grid.
    assert len({p.read_bytes() for p in upscale_files}) == 8
    summary = result.xcom("summarize")
    assert sorted(summary["upscale_files"]) == sorted(str(p) for p in upscale_files)

    # Paths, not bytes, went to XCom; the token went nowhere.
    dump = airflow_db_dump(Path(family_env["AIRFLOW_HOME"]))
    assert "iVBORw0KGgo" not in dump  # base64 of a PNG signature
    assert emulator.token not in dump


def test_variations_zoom_runs_every_action_including_the_modal_window(
    family_env, emulator, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_dag_test(
        family_env,
        "apicore_variations_zoom",
        {"prompt": "a lighthouse on a cliff, watercolor", "variation": 3, "output_path": str(out)},
        timeout=600,
    )

    assert result.returncode == 0, result.output[-4000:]
    assert result.state == "success"
    assert set(result.task_states.values()) == {"success"}
    assert {"vary", "zoom_out", "pan_right"} <= deferred_tasks(result.output)

    imagine = result.xcom("imagine")
    vary = result.xcom("vary")
    upscale = result.xcom("upscale")
    assert vary["action"] == "VARIATION" and len(vary["files"]) == 4
    assert upscale["action"] == "UPSCALE" and len(upscale["files"]) == 1
    assert imagine["task_id"] != vary["task_id"] != upscale["task_id"]
    custom = result.xcom("custom_zoom")
    assert custom["status"] == "SUCCESS" and "--zoom 1.5" in (custom["prompt"] or "") + (
        custom["final_prompt"] or ""
    )
    assert "Waiting for window confirm" in result.output or "status MODAL" in result.output
    summary = result.xcom("summarize")
    for step in ("imagine", "vary", "upscale", "zoom_out", "custom_zoom", "pan_right", "blend", "swap_face"):
        assert summary[step], step
        for path in summary[step]:
            assert image_size(Path(path))[0] > 0
    assert len(list((out / "zoomed").iterdir())) == 2
    assert result.xcom("blend")["action"] == "BLEND" and result.xcom("swap_face")["action"] == "SWAP_FACE"
    # Shorten: shorter prompts parsed from the analysis; the seed of the upscaled picture: digits.
    assert summary["shortened"] and all(len(p) < 40 for p in summary["shortened"])
    assert str(summary["seed"]).isdigit()
