"""
The family operators end to end over loopback HTTP against the emulator, polling and deferrable:
imagine, action (upscale, variation, reroll, zoom, pan), the MODAL continuation (code 21 and the
gateway's rewritten 1), blend, shorten, swap-face, image-seed, banned words, and stored files.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from PIL import Image

from airflow_provider_apicore.exceptions import (
    ApicoreBannedPromptError,
    ApicoreNotFoundError,
    ApicoreValidationError,
    TaskNotFoundError,
)
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.operators.action import MJActionOperator
from airflow_provider_apicore.operators.blend import MJBlendOperator
from airflow_provider_apicore.operators.imagine import MJImagineOperator
from airflow_provider_apicore.operators.shorten import MJShortenOperator
from airflow_provider_apicore.operators.swap_face import MJSwapFaceOperator
from airflow_provider_apicore.triggers.task import MJTaskTrigger
from tests.helpers.imagegen import make_jpeg, make_png

FAST = {"job_seconds": 0.2, "concurrency": 8}
STYLES = ["polling", "deferrable"]


class FakeTI:
    """Records XCom pushes; the narrow stand-in for a task instance in direct execute() calls."""

    map_index = -1
    dag_id = "family"
    try_number = 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def first_event(trigger: MJTaskTrigger) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1, events
        return events[0]

    return asyncio.run(run())


def run(op: Any, style: str = "polling") -> tuple[Any, FakeTI]:
    """Execute an operator as a worker would; a deferral runs its trigger and resumes."""
    ti = FakeTI()
    context = {"ti": ti}
    op.poll_interval = 0.1
    op.deferrable = style == "deferrable"
    try:
        result = op.execute(context)
    except TaskDeferred as deferred:
        assert style == "deferrable"
        assert isinstance(deferred.trigger, MJTaskTrigger)
        result = op.execute_complete(context, first_event(deferred.trigger))
    else:
        assert style == "polling", "a deferrable operator must hand the wait to the trigger"
    return result, ti


def size_of(path: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(Path(path).read_bytes())) as image:
        image.load()
        return image.size


def submits(emulator) -> int:
    """Submissions the emulator received (every /mj/submit/* and the face swap count as "submit")."""
    return emulator.stats()["requests"].get("submit", 0)


@pytest.fixture
def api(apicore_conn):
    # The session emulator's fixture does not reset the gateway mode: set it, and restore it after.
    apicore_conn.configure(**FAST, gateway=False)
    yield apicore_conn
    apicore_conn.configure(gateway=False)


def imagine(prompt: str = "a red fox in the snow", **kwargs: Any) -> dict[str, Any]:
    result, _ = run(MJImagineOperator(task_id="imagine", prompt=prompt, **kwargs))
    return result


# ---------------------------------------------------------------- imagine


@pytest.mark.parametrize("style", STYLES)
def test_imagine_returns_the_typed_result_and_stores_four_pngs(api, tmp_path: Path, style: str) -> None:
    op = MJImagineOperator(
        task_id="imagine", prompt="a red fox --ar 1:1", output_path=str(tmp_path), split_grid=True
    )
    result, ti = run(op, style)
    assert ti.pushed["task_id"] == result["task_id"]
    assert result["status"] == "SUCCESS" and result["action"] == "IMAGINE"
    assert result["actions"] == ["upscale 1-4", "reroll", "variation 1-4"]
    assert [b["label"] for b in result["buttons"]][:4] == ["U1", "U2", "U3", "U4"]
    assert result["prompt"].endswith("a red fox --ar 1:1")
    assert result["image_url"]
    files = result["files"]
    assert [Path(f).name for f in files] == [f"{result['task_id']}_{i}.png" for i in (1, 2, 3, 4)]
    grid_w, grid_h = result["width"] or 0, result["height"] or 0
    sizes = {size_of(f) for f in files}
    assert len(sizes) == 1
    (w, h) = sizes.pop()
    if grid_w:
        assert (w * 2, h * 2) == (grid_w, grid_h)
    # Four distinct pictures, not four copies.
    assert len({Path(f).read_bytes() for f in files}) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(f).name for f in files)


def test_imagine_without_split_stores_the_grid_whole(api, tmp_path: Path) -> None:
    result = imagine(output_path=str(tmp_path / "grids"))
    (path,) = result["files"]
    assert path.endswith(f"{result['task_id']}.png")
    assert size_of(path)[0] > 0


def test_imagine_without_output_path_downloads_nothing(api) -> None:
    result = imagine()
    assert "files" not in result
    assert api.stats()["requests"].get("other", 0) == 0  # no image was fetched


def test_imagine_sends_reference_images_as_data_urls(api, tmp_path: Path) -> None:
    ref = tmp_path / "ref.jpg"
    ref.write_bytes(make_jpeg())
    result = imagine(
        images=[str(ref), f"data:image/png;base64,{__import__('base64').b64encode(make_png()).decode()}"]
    )
    assert result["status"] == "SUCCESS"
    # The server uploads them and puts their URLs in front of the prompt.
    assert result["prompt"].count("http") >= 2


def test_a_banned_word_raises_naming_the_word(api) -> None:
    with pytest.raises(ApicoreBannedPromptError, match="banned word: 'Blood'") as info:
        imagine(prompt="a river of Blood at dusk")
    assert info.value.banned_word == "Blood"


def test_without_waiting_the_task_id_is_returned(api) -> None:
    result, ti = run(MJImagineOperator(task_id="imagine", prompt="a fox", wait_for_completion=False))
    assert result == ti.pushed["task_id"]


# ---------------------------------------------------------------- actions


@pytest.mark.parametrize("style", STYLES)
def test_upscale_one_picture_of_a_grid(api, tmp_path: Path, style: str) -> None:
    grid = imagine()
    op = MJActionOperator(
        task_id="upscale",
        mj_task_id=grid["task_id"],
        action="upscale",
        index=3,
        output_path=str(tmp_path),
        split_grid=True,
    )
    result, ti = run(op, style)
    assert result["action"] == "UPSCALE" and result["status"] == "SUCCESS"
    assert "vary_region" in result["actions"] and "upscale 1-4" not in result["actions"]
    (path,) = result["files"]  # a single image is never cut
    assert size_of(path)[0] > 0
    assert ti.pushed["task_id"] == result["task_id"] != grid["task_id"]


def test_all_four_upscales_are_different_pictures(api, tmp_path: Path) -> None:
    grid = imagine()
    files = []
    for index in (1, 2, 3, 4):
        op = MJActionOperator(
            task_id=f"u{index}", mj_task_id=grid, action="upscale", index=index, output_path=str(tmp_path)
        )
        files += run(op)[0]["files"]
    assert len({Path(f).read_bytes() for f in files}) == 4


@pytest.mark.parametrize("action", ["variation", "reroll", "zoom_out_1.5x", "pan_left", "vary_subtle"])
def test_grid_producing_actions_are_cut_into_four(api, tmp_path: Path, action: str) -> None:
    grid = imagine()
    parent = grid
    if action in ("zoom_out_1.5x", "pan_left", "vary_subtle"):  # offered after an upscale
        parent = run(MJActionOperator(task_id="u", mj_task_id=grid["task_id"], action="upscale", index=1))[0]
    op = MJActionOperator(
        task_id="a",
        mj_task_id=parent["task_id"],
        action=action,
        index=2 if action == "variation" else None,
        output_path=str(tmp_path / action),
        split_grid=True,
    )
    result = run(op)[0]
    assert result["status"] == "SUCCESS"
    assert len(result["files"]) == 4, result["actions"]


def test_a_raw_custom_id_is_accepted(api) -> None:
    grid = imagine()
    custom_id = next(b["custom_id"] for b in grid["buttons"] if b["label"] == "V4")
    result = run(MJActionOperator(task_id="v", mj_task_id=grid["task_id"], custom_id=custom_id))[0]
    assert result["action"] == "VARIATION"


# ---------------------------------------------------------------- MODAL continuation


@pytest.mark.parametrize("style", STYLES)
def test_custom_zoom_confirms_its_window_with_the_prompt(api, tmp_path: Path, style: str) -> None:
    grid = imagine()
    up = run(MJActionOperator(task_id="u", mj_task_id=grid["task_id"], action="upscale", index=1))[0]
    op = MJActionOperator(
        task_id="zoom",
        mj_task_id=up["task_id"],
        action="custom_zoom",
        prompt="a red fox --zoom 1.5",
        output_path=str(tmp_path),
    )
    result, _ = run(op, style)
    assert result["status"] == "SUCCESS"
    assert result["action"] in ("ZOOM", "CUSTOM_ZOOM")
    assert submits(api) == 4  # imagine, upscale, custom zoom, and its window (modal)
    assert "--zoom 1.5" in (result["prompt"] or "") + (result["final_prompt"] or "")
    assert size_of(result["files"][0])[0] > 0


def test_vary_region_sends_the_png_mask_through_the_window(api, tmp_path: Path) -> None:
    grid = imagine()
    up = run(MJActionOperator(task_id="u", mj_task_id=grid["task_id"], action="upscale", index=2))[0]
    mask = tmp_path / "mask.png"
    mask.write_bytes(make_png(16, 16, lambda x, y: (255, 255, 255) if x > 8 else (0, 0, 0)))
    op = MJActionOperator(
        task_id="region",
        mj_task_id=up["task_id"],
        action="vary_region",
        mask=str(mask),
        prompt="a red fox wearing a hat",
    )
    result = run(op)[0]
    assert result["status"] == "SUCCESS"
    assert submits(api) == 4  # imagine, upscale, vary region, and its window (modal)


@pytest.mark.parametrize("style", STYLES)
def test_through_the_gateway_a_rewritten_code_1_in_status_modal_is_continued(api, style: str) -> None:
    api.configure(gateway=True, gateway_refresh=0.3)
    grid = imagine()
    op = MJActionOperator(
        task_id="remix",
        mj_task_id=grid["task_id"],
        action="variation",
        index=1,
        enable_remix=True,
        prompt="a red fox, oil painting",
    )
    result, _ = run(op, style)
    assert result["status"] == "SUCCESS"
    assert submits(api) == 3  # imagine, the remixed variation (answered 1, status MODAL), its window


def test_an_action_without_a_window_sends_no_modal(api) -> None:
    grid = imagine()
    run(MJActionOperator(task_id="v", mj_task_id=grid["task_id"], action="variation", index=1))
    assert submits(api) == 2


# ---------------------------------------------------------------- blend, shorten, swap face, seed


@pytest.mark.parametrize("style", STYLES)
def test_blend_two_images_into_a_grid(api, tmp_path: Path, style: str) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    a.write_bytes(make_png(32, 32, (200, 30, 30)))
    b.write_bytes(make_jpeg())
    op = MJBlendOperator(
        task_id="blend",
        images=[str(a), str(b)],
        dimensions="LANDSCAPE",
        output_path=str(tmp_path / "out"),
        split_grid=True,
    )
    result, _ = run(op, style)
    assert result["action"] == "BLEND" and len(result["files"]) == 4


@pytest.mark.parametrize("style", STYLES)
def test_shorten_returns_the_shortened_prompts(api, style: str) -> None:
    prompt = "a very detailed majestic red fox standing in deep fresh snow in a quiet pine forest at dawn"
    result, _ = run(MJShortenOperator(task_id="shorten", prompt=prompt), style)
    assert result["action"] == "SHORTEN" and result["status"] == "SUCCESS"
    assert len(result["prompts"]) >= 2
    assert all(p and len(p) < len(prompt) for p in result["prompts"])
    assert "fox" in " ".join(result["prompts"])


@pytest.mark.parametrize("style", STYLES)
def test_swap_face_stores_one_image(api, tmp_path: Path, style: str) -> None:
    face, target = tmp_path / "face.png", tmp_path / "target.png"
    face.write_bytes(make_png(24, 24, (230, 180, 150)))
    target.write_bytes(make_png(48, 32, (20, 90, 200)))
    op = MJSwapFaceOperator(
        task_id="swap", source_image=str(face), target_image=str(target), output_path=str(tmp_path / "o")
    )
    result, _ = run(op, style)
    assert result["action"] == "SWAP_FACE" and len(result["files"]) == 1
    assert size_of(result["files"][0])[0] > 0


def test_image_seed_of_a_finished_task(api) -> None:
    grid = imagine()
    hook = ApicoreHook()
    seed = hook.get_image_seed(grid["task_id"])
    assert seed.isdigit()
    assert hook.get_image_seed(grid["task_id"]) == seed  # stable
    with pytest.raises((ApicoreNotFoundError, TaskNotFoundError)):
        hook.get_image_seed("1234567890123456")


def test_image_seed_of_an_unfinished_task_is_refused(api) -> None:
    api.configure(job_seconds=5)
    task_id = run(MJImagineOperator(task_id="i", prompt="a fox", wait_for_completion=False))[0]
    with pytest.raises(ApicoreValidationError):
        ApicoreHook().get_image_seed(task_id)


# ---------------------------------------------------------------- mapping


def test_operators_are_mappable_with_expand_and_expand_kwargs() -> None:
    from airflow.sdk import DAG

    with DAG("family_mapping_probe", schedule=None):
        imagines = MJImagineOperator.partial(task_id="imagine", deferrable=True).expand(prompt=["a", "b"])
        ups = MJActionOperator.partial(task_id="up", action="upscale").expand_kwargs(
            [{"mj_task_id": "1", "index": 1}, {"mj_task_id": "1", "index": 2}]
        )
        MJBlendOperator.partial(task_id="blend").expand(images=[["a.png", "b.png"]])
        MJShortenOperator.partial(task_id="shorten").expand(prompt=["a b c"])
    assert imagines.partial_kwargs["deferrable"] is True
    assert ups.partial_kwargs["action"] == "upscale"
    for cls in (MJImagineOperator, MJActionOperator):
        fields = set(cls.template_fields)
        assert {"output_path"} <= fields
    assert {"prompt", "images"} <= set(MJImagineOperator.template_fields)
    assert {"mj_task_id", "custom_id", "mask", "prompt"} <= set(MJActionOperator.template_fields)


def test_imagine_from_a_described_prompt_through_its_picreader_window(api, tmp_path: Path) -> None:
    from airflow_provider_apicore.operators.describe import MJDescribeOperator

    image = tmp_path / "cat.png"
    image.write_bytes(make_png(32, 24, (120, 80, 200)))
    described = run(MJDescribeOperator(task_id="d", image=str(image), wait_for_completion=True))[0]
    op = MJActionOperator(
        task_id="pick", mj_task_id=described, action="describe_pick", index=2, output_path=str(tmp_path / "o")
    )
    result = run(op)[0]
    assert result["status"] == "SUCCESS" and result["action"] == "IMAGINE"
    assert "upscale 1-4" in result["actions"]
    assert result["prompt"] == described["prompts"][1]  # the second described prompt, pre-filled
    assert submits(api) == 3  # describe, the pick (a window), its confirmation
