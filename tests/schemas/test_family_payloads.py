"""The JSON Schemas of imagine, action, modal, blend, shorten and swap-face, and the errors they give."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from airflow_provider_apicore.exceptions import PayloadValidationError
from airflow_provider_apicore.images import to_data_url
from airflow_provider_apicore.schemas import load_schema, validate_payload
from tests.helpers.imagegen import make_jpeg, make_png

PNG = to_data_url(make_png(8, 8))
JPEG = to_data_url(make_jpeg())
HOOK = "https://hooks.example.com/mj"

FAMILY = {
    "imagine_payload": ({"prompt"}, {"prompt", "base64Array", "botType", "notifyHook", "state"}),
    "action_payload": (
        {"taskId", "customId"},
        {"taskId", "customId", "enableRemix", "chooseSameChannel", "notifyHook", "state"},
    ),
    "modal_payload": ({"taskId"}, {"taskId", "prompt", "maskBase64", "notifyHook", "state"}),
    "blend_payload": ({"base64Array"}, {"base64Array", "dimensions", "botType", "notifyHook", "state"}),
    "shorten_payload": ({"prompt"}, {"prompt", "botType", "notifyHook", "state"}),
    "swap_face_payload": (
        {"sourceBase64", "targetBase64"},
        {"sourceBase64", "targetBase64", "notifyHook", "state"},
    ),
}

VALID = {
    "imagine_payload": {
        "prompt": "a red fox --ar 3:2",
        "base64Array": [PNG, JPEG],
        "botType": "NIJI_JOURNEY",
    },
    "action_payload": {"taskId": "1748339029401828", "customId": "MJ::JOB::upsample::1::0ddb91a0-af46"},
    "modal_payload": {"taskId": "1748339029401828", "prompt": "a fox --zoom 1.5", "maskBase64": PNG},
    "blend_payload": {"base64Array": [PNG, JPEG, PNG], "dimensions": "LANDSCAPE"},
    "shorten_payload": {"prompt": "a very long prompt about a fox in the snow at dawn"},
    "swap_face_payload": {"sourceBase64": PNG, "targetBase64": JPEG},
}


def rejection(name: str, payload: dict) -> PayloadValidationError:
    with pytest.raises(PayloadValidationError) as info:
        validate_payload(name, payload)
    return info.value


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_each_schema_is_valid_draft_2020_12_closed_and_documented(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    required, properties = FAMILY[name]
    assert set(schema["required"]) == required
    assert set(schema["properties"]) == properties
    assert schema["additionalProperties"] is False
    assert all(prop.get("description") for prop in schema["properties"].values())


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_a_full_valid_payload_is_accepted_with_hook_and_state_at_the_server_limits(name: str) -> None:
    payload = {**VALID[name], "notifyHook": "https://h.example/" + "x" * (2000 - 18), "state": "s" * 255}
    assert len(payload["notifyHook"]) == 2000
    validate_payload(name, payload)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_state_over_255_and_notify_hook_over_2000_characters_are_refused(name: str) -> None:
    err = rejection(name, {**VALID[name], "state": "s" * 256})
    assert (err.field, err.rule) == ("state", "must be at most 255 characters (got 256)")
    err = rejection(name, {**VALID[name], "notifyHook": "https://h.example/" + "x" * 1983})
    assert err.field == "notifyHook" and "at most 2000" in err.rule


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_unknown_fields_and_missing_required_fields_are_named(name: str) -> None:
    err = rejection(name, {**VALID[name], "base64": PNG})
    assert err.field == "base64" and "unknown field" in err.rule
    first_required = load_schema(name)["required"][0]
    payload = dict(VALID[name])
    del payload[first_required]
    assert rejection(name, payload).field == first_required


@pytest.mark.parametrize("name", ["imagine_payload", "shorten_payload", "modal_payload"])
@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_an_empty_or_blank_prompt_is_refused_in_words(name: str, prompt: str) -> None:
    err = rejection(name, {**VALID[name], "prompt": prompt})
    assert (err.field, err.rule) == ("prompt", "must not be empty or only whitespace")


@pytest.mark.parametrize("name", ["imagine_payload", "shorten_payload", "modal_payload"])
def test_a_prompt_over_6000_characters_is_refused(name: str) -> None:
    validate_payload(name, {**VALID[name], "prompt": "p" * 6000})
    err = rejection(name, {**VALID[name], "prompt": "p" * 6001})
    assert (err.field, err.rule) == ("prompt", "must be at most 6000 characters (got 6001)")


@pytest.mark.parametrize("count", [0, 1, 6])
def test_blend_takes_two_to_five_images(count: int) -> None:
    err = rejection("blend_payload", {"base64Array": [PNG] * count})
    assert err.field == "base64Array"
    assert f"(got {count})" in err.rule


@pytest.mark.parametrize("count", [2, 5])
def test_blend_accepts_the_bounds(count: int) -> None:
    validate_payload("blend_payload", {"base64Array": [PNG] * count})


def test_blend_dimensions_are_the_three_names() -> None:
    err = rejection("blend_payload", {"base64Array": [PNG, PNG], "dimensions": "WIDE"})
    assert (err.field, err.rule) == ("dimensions", "must be one of PORTRAIT, SQUARE, LANDSCAPE; got 'WIDE'")


def test_an_image_item_that_is_not_a_data_url_names_its_position() -> None:
    err = rejection("imagine_payload", {"prompt": "a fox", "base64Array": [PNG, "/tmp/cat.png"]})
    assert err.field == "base64Array.1"
    assert "data URL like data:image/png;base64" in err.rule


def test_imagine_takes_at_most_five_reference_images() -> None:
    err = rejection("imagine_payload", {"prompt": "a fox", "base64Array": [PNG] * 6})
    assert (err.field, err.rule) == ("base64Array", "must hold at most 5 items (got 6)")


def test_the_modal_mask_must_be_a_png_data_url() -> None:
    err = rejection("modal_payload", {"taskId": "1", "maskBase64": JPEG})
    assert err.field == "maskBase64"
    assert "'image/jpeg' is not accepted; use one of image/png" in err.rule


def test_a_custom_id_must_look_like_a_button_id() -> None:
    err = rejection("action_payload", {"taskId": "1", "customId": "upscale 1"})
    assert err.field == "customId"


@pytest.mark.parametrize("task_id", ["", "12/34", "1 2"])
def test_task_ids_with_slashes_spaces_or_nothing_are_refused(task_id: str) -> None:
    assert (
        rejection("action_payload", {"taskId": task_id, "customId": "MJ::JOB::reroll::0::h"}).field
        == "taskId"
    )


def test_swap_face_needs_both_images() -> None:
    assert rejection("swap_face_payload", {"sourceBase64": PNG}).field == "targetBase64"
    assert rejection("swap_face_payload", {"targetBase64": PNG}).field == "sourceBase64"


def test_errors_never_quote_whole_image_data() -> None:
    big = "data:image/tiff;base64," + "A" * 10_000
    err = rejection("swap_face_payload", {"sourceBase64": big, "targetBase64": PNG})
    assert "A" * 100 not in str(err)
