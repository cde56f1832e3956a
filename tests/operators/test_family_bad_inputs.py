"""
Bad input to the family operators is refused before anything is sent: the emulator counts no request
at all (or, where the parent task must be read, no submission), and the error names the rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_apicore.exceptions import (
    ApicoreActionNotOfferedError,
    ApicoreInputError,
    InvalidImageError,
    ParentTaskNotReadyError,
    PayloadValidationError,
    TaskNotFoundError,
)
from airflow_provider_apicore.operators.action import MJActionOperator
from airflow_provider_apicore.operators.blend import MJBlendOperator
from airflow_provider_apicore.operators.imagine import MJImagineOperator
from airflow_provider_apicore.operators.shorten import MJShortenOperator
from airflow_provider_apicore.operators.swap_face import MJSwapFaceOperator
from tests.helpers.imagegen import make_jpeg, make_png
from tests.operators.test_family_operators import FakeTI


def execute(op: Any) -> Any:
    op.poll_interval = 0.1
    return op.execute({"ti": FakeTI()})


def total_requests(emulator) -> int:
    return sum(emulator.stats()["requests"].values())


def submits(emulator) -> int:
    return emulator.stats()["requests"].get("submit", 0)


@pytest.fixture
def api(apicore_conn):
    apicore_conn.configure(job_seconds=0.2, concurrency=8, gateway=False)
    return apicore_conn


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    made = {
        "png": make_png(16, 16, (10, 200, 10)),
        "png2": make_png(16, 16, (200, 10, 10)),
        "jpeg": make_jpeg(),
        "text": b"just some notes, not an image\n",
        "html": b"<!DOCTYPE html><html><body>404</body></html>",
    }
    paths = {}
    for name, data in made.items():
        path = tmp_path / f"{name}.png"  # the names lie on purpose: types come from the bytes
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


def refused(api, op: Any, error: type[Exception], match: str) -> Exception:
    with pytest.raises(error, match=match) as info:
        execute(op)
    assert total_requests(api) == 0, api.stats()["requests"]
    return info.value


# ---------------------------------------------------------------- prompts


@pytest.mark.parametrize("prompt", ["", "   ", "\n"])
@pytest.mark.parametrize("cls", [MJImagineOperator, MJShortenOperator])
def test_an_empty_prompt_is_refused(api, cls, prompt: str) -> None:
    err = refused(api, cls(task_id="t", prompt=prompt), PayloadValidationError, "must not be empty")
    assert err.field == "prompt"


@pytest.mark.parametrize("cls", [MJImagineOperator, MJShortenOperator])
def test_an_over_long_prompt_is_refused(api, cls) -> None:
    refused(api, cls(task_id="t", prompt="fox " * 1501), PayloadValidationError, "at most 6000 characters")


def test_a_state_over_the_server_limit_is_refused(api) -> None:
    refused(
        api, MJImagineOperator(task_id="t", prompt="a fox", state="s" * 256), PayloadValidationError, "255"
    )


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("bad", ["text", "html"])
def test_imagine_reference_images_that_are_not_images_are_refused(api, files, bad: str) -> None:
    op = MJImagineOperator(task_id="t", prompt="a fox", images=[files["png"], files[bad]])
    err = refused(api, op, InvalidImageError, r"content is not an image")
    assert err.source.endswith(f"{bad}.png")


@pytest.mark.parametrize("count", [0, 1, 6])
def test_blend_with_too_few_or_too_many_images_is_refused(api, files, count: int) -> None:
    op = MJBlendOperator(task_id="b", images=[files["png"]] * count)
    refused(api, op, ApicoreInputError, f"blend takes 2 to 5 images; got {count}")


def test_blend_with_a_non_image_is_refused(api, files) -> None:
    refused(
        api, MJBlendOperator(task_id="b", images=[files["png"], files["text"]]), InvalidImageError, "text.png"
    )


def test_swap_face_needs_two_images(api, files) -> None:
    refused(
        api,
        MJSwapFaceOperator(task_id="s", source_image=files["png"], target_image=""),
        ApicoreInputError,
        "target_image is missing",
    )
    refused(
        api,
        MJSwapFaceOperator(task_id="s", source_image=None, target_image=files["png"]),
        ApicoreInputError,
        "source_image is missing",
    )
    refused(
        api,
        MJSwapFaceOperator(task_id="s", source_image=files["png"], target_image=files["png"]),
        ApicoreInputError,
        "the same",
    )
    refused(
        api,
        MJSwapFaceOperator(task_id="s", source_image=files["png"], target_image=files["html"]),
        InvalidImageError,
        r"content is not an image",
    )


# ---------------------------------------------------------------- actions: checks without the parent


@pytest.mark.parametrize("index", [0, 5, -1, "six"])
def test_an_index_outside_1_to_4_is_refused(api, index) -> None:
    op = MJActionOperator(task_id="a", mj_task_id="1796159909135913", action="upscale", index=index)
    refused(api, op, ApicoreInputError, "index must be")


def test_an_upscale_without_index_is_refused(api) -> None:
    op = MJActionOperator(task_id="a", mj_task_id="1796159909135913", action="upscale")
    refused(api, op, ApicoreInputError, "needs index=1..4")


def test_an_unknown_action_name_is_refused_listing_the_known_ones(api) -> None:
    op = MJActionOperator(task_id="a", mj_task_id="1796159909135913", action="enhance")
    refused(api, op, ApicoreInputError, "not a Midjourney action this provider knows; use one of upscale")


@pytest.mark.parametrize("bad", ["jpeg", "text"])
def test_a_mask_that_is_not_a_png_is_refused(api, files, bad: str) -> None:
    op = MJActionOperator(task_id="a", mj_task_id="1796159909135913", action="vary_region", mask=files[bad])
    refused(api, op, InvalidImageError, "must be a PNG image|content is not an image")


def test_vary_region_without_mask_is_refused(api) -> None:
    op = MJActionOperator(task_id="a", mj_task_id="1796159909135913", action="vary_region")
    refused(api, op, ApicoreInputError, "needs mask=")


def test_a_mask_on_another_action_is_refused(api, files) -> None:
    op = MJActionOperator(task_id="a", mj_task_id="1", action="upscale", index=1, mask=files["png"])
    refused(api, op, ApicoreInputError, "mask is only used by action 'vary_region'")


@pytest.mark.parametrize("mj_task_id", ["", None, {"no": "id"}])
def test_a_missing_parent_id_is_refused(api, mj_task_id) -> None:
    refused(
        api,
        MJActionOperator(task_id="a", mj_task_id=mj_task_id, action="reroll"),
        ApicoreInputError,
        "mj_task_id",
    )


# ---------------------------------------------------------------- actions: parent read, nothing submitted


def grid(api) -> str:
    op = MJImagineOperator(task_id="i", prompt="a red fox")
    return execute(op)["task_id"]


def test_an_action_the_parent_does_not_offer_lists_what_it_does(api) -> None:
    parent = grid(api)
    before = submits(api)
    with pytest.raises(ApicoreActionNotOfferedError) as info:
        execute(MJActionOperator(task_id="a", mj_task_id=parent, action="zoom_out_2x"))
    assert submits(api) == before
    assert info.value.offered == ["upscale 1-4", "reroll", "variation 1-4"]
    assert str(info.value).endswith(
        "does not offer 'zoom_out_2x'; it offers: upscale 1-4, reroll, variation 1-4"
    )


def test_a_parent_that_is_not_finished_is_refused(api) -> None:
    api.configure(job_seconds=30)
    parent = execute(MJImagineOperator(task_id="i", prompt="a fox", wait_for_completion=False))
    with pytest.raises(ParentTaskNotReadyError, match=r"not SUCCESS"):
        execute(MJActionOperator(task_id="a", mj_task_id=parent, action="upscale", index=1))
    assert submits(api) == 1  # the imagine only


def test_an_unknown_parent_is_refused(api) -> None:
    with pytest.raises(TaskNotFoundError):
        execute(MJActionOperator(task_id="a", mj_task_id="1234567890123456", action="reroll"))
    assert submits(api) == 0
