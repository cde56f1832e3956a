"""The describe payload JSON Schema and the errors validate_describe_payload raises for it."""

from __future__ import annotations

import base64
import os
import re

import pytest
from jsonschema import Draft202012Validator

from airflow_provider_apicore.exceptions import ApicoreInputError, PayloadValidationError
from airflow_provider_apicore.images import to_data_url
from airflow_provider_apicore.schemas import http_url_problem, load_schema, validate_describe_payload
from tests.helpers.imagegen import make_gif, make_jpeg, make_png, make_webp

PNG_URL = to_data_url(make_png(8, 8))


def rejection(payload) -> PayloadValidationError:
    with pytest.raises(PayloadValidationError) as info:
        validate_describe_payload(payload)
    return info.value


# ---------------------------------------------------------------- the schema file


def test_schema_is_valid_draft_2020_12_and_documents_every_property() -> None:
    schema = load_schema("describe_payload")
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["base64"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"base64", "notifyHook", "state", "botType"}
    assert all(prop.get("description") for prop in schema["properties"].values())


def test_load_schema_accepts_the_name_with_or_without_extension_and_returns_fresh_copies() -> None:
    first = load_schema("describe_payload")
    first["properties"].clear()
    assert load_schema("describe_payload.json")["properties"]
    validate_describe_payload({"base64": PNG_URL})  # the cached validator is unaffected


def test_load_schema_names_the_available_schemas_for_an_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"No schema named .nope.; available: .*describe_payload"):
        load_schema("nope")


# ---------------------------------------------------------------- accepted payloads


@pytest.mark.parametrize("image", [make_png(), make_jpeg(), make_gif(), make_webp()])
def test_data_urls_made_by_the_image_loader_are_accepted(image: bytes) -> None:
    validate_describe_payload({"base64": to_data_url(image)})


def test_a_payload_with_every_field_is_accepted() -> None:
    validate_describe_payload(
        {
            "base64": PNG_URL,
            "notifyHook": "https://hooks.example.com:8443/mj?run=1#x",
            "state": "run-42:image-7",
            "botType": "NIJI_JOURNEY",
        }
    )


@pytest.mark.parametrize("hook", ["http://localhost/hook", "https://10.0.0.1:9000", "HTTPS://Example.COM/a"])
def test_http_and_https_hooks_with_a_host_are_accepted(hook: str) -> None:
    validate_describe_payload({"base64": PNG_URL, "notifyHook": hook})


def test_state_of_exactly_255_characters_is_accepted() -> None:
    validate_describe_payload({"base64": PNG_URL, "state": "s" * 255})


# ---------------------------------------------------------------- rejected payloads


@pytest.mark.parametrize(
    ("payload", "field", "rule"),
    [
        ([PNG_URL], "<root>", "the payload must be a JSON object (a dict); got array"),
        ({}, "base64", "is required: a data URL like data:image/png;base64,..."),
        ({"notifyHook": "https://example.com"}, "base64", "is required"),
        (
            {"base64": PNG_URL, "foo": 1},
            "foo",
            "unknown field 'foo'; allowed: base64, notifyHook, state, botType",
        ),
        ({"base64": PNG_URL, "foo": 1, "bar": 2}, "foo", "unknown fields 'foo', 'bar'; allowed: base64"),
        ({"base64": 12}, "base64", "must be a string; got integer"),
        ({"base64": b"data:image/png;base64,AAAA"}, "base64", "must be a string; got bytes"),
        ({"base64": ""}, "base64", "must not be empty; give a data URL like data:image/png;base64,..."),
        ({"base64": "abc"}, "base64", "must be a data URL like data:image/png;base64,...; got 'abc'"),
        ({"base64": "data:image/bmp;base64,Qk0AAAA="}, "base64", "image type 'image/bmp' is not accepted"),
        ({"base64": "data:image/PNG;base64,QUJD"}, "base64", "use one of image/png, image/jpeg"),
        (
            {"base64": "data:image/png,QUJDRA=="},
            "base64",
            "the header must be exactly 'data:image/png;base64'",
        ),
        ({"base64": "data:image/png;base64"}, "base64", "no ',' after the header"),
        ({"base64": "data:image/png;base64,"}, "base64", "holds no image data after 'base64,'"),
        (
            {"base64": "data:image/png;base64,QQ"},
            "base64",
            "is too short to hold an image (24 characters; at least 26)",
        ),
        ({"base64": "data:image/png;base64,QUJD-EFH"}, "base64", "'-' at offset 4 of the data"),
        ({"base64": "data:image/png;base64,QUJD\nREVG"}, "base64", "line breaks and spaces are not allowed"),
        ({"base64": "data:image/png;base64,QU=JDREVG"}, "base64", "has '=' padding before the end"),
        ({"base64": "data:image/png;base64,QUJDREVGR==="}, "base64", "more than two '=' padding characters"),
        ({"base64": PNG_URL, "notifyHook": 5}, "notifyHook", "must be a string; got integer"),
        ({"base64": PNG_URL, "notifyHook": ""}, "notifyHook", "must be an http(s) URL with a host"),
        (
            {"base64": PNG_URL, "notifyHook": "ftp://example.com/x"},
            "notifyHook",
            "must use http or https, not 'ftp'",
        ),
        ({"base64": PNG_URL, "notifyHook": "example.com/hook"}, "notifyHook", "has no scheme"),
        ({"base64": PNG_URL, "notifyHook": "https:///path"}, "notifyHook", "has no host"),
        ({"base64": PNG_URL, "notifyHook": "https://exa mple.com"}, "notifyHook", "must not contain spaces"),
        ({"base64": PNG_URL, "notifyHook": "http://h:99999/"}, "notifyHook", "Port out of range"),
        (
            {"base64": PNG_URL, "notifyHook": "https://example.com/" + "a" * 2100},
            "notifyHook",
            "must be at most 2000 characters (got 2120)",
        ),
        ({"base64": PNG_URL, "state": 7}, "state", "must be a string; got integer"),
        ({"base64": PNG_URL, "state": "x" * 5000}, "state", "must be at most 255 characters (got 5000)"),
        ({"base64": PNG_URL, "botType": "midjourney"}, "botType", "must be one of MID_JOURNEY, NIJI_JOURNEY"),
        ({"base64": PNG_URL, "botType": None}, "botType", "must be a string; got null"),
    ],
)
def test_each_schema_rule_is_reported_with_the_field_named(payload, field: str, rule: str) -> None:
    error = rejection(payload)
    assert error.field == field
    assert rule in error.rule
    assert repr(field) in str(error)


def test_payload_validation_error_is_an_input_error() -> None:
    error = rejection({})
    assert isinstance(error, ApicoreInputError)
    assert isinstance(error, ValueError)


def test_the_first_field_is_named_and_the_other_bad_fields_listed() -> None:
    error = rejection({"base64": "nope", "state": "x" * 2000, "botType": "X"})
    assert error.field == "base64"
    assert error.rule.endswith("(also invalid: state, botType)")


def test_unknown_fields_are_reported_before_field_rules() -> None:
    assert rejection({"base64": "nope", "accountFilter": {}}).field == "accountFilter"


@pytest.mark.parametrize(
    "value",
    [
        "A" * 200_000,
        "data:image/png;base64," + "B" * 200_000 + "-",
        "data:image/png;base64," + "B" * 200_000 + "=" * 3,
        "data:text/plain;base64," + "C" * 200_000,
    ],
)
def test_errors_never_echo_more_than_a_short_excerpt_of_base64(value: str) -> None:
    error = rejection({"base64": value})
    longest_run = max(len(m) for m in re.findall(r"[A-C]+", str(error)) or [""])
    assert longest_run <= 40
    assert len(str(error)) < 300


# ---------------------------------------------------------------- big payloads


def test_a_ten_mebibyte_image_payload_validates() -> None:
    url = "data:image/jpeg;base64," + base64.b64encode(os.urandom(10 * 1024 * 1024)).decode()
    assert len(url) > 13_900_000
    validate_describe_payload({"base64": url, "state": "big"})


def test_a_bad_character_at_the_end_of_a_big_payload_is_located() -> None:
    data = base64.b64encode(os.urandom(10 * 1024 * 1024)).decode()
    error = rejection({"base64": "data:image/png;base64," + data[:-4] + "_AAA"})
    assert error.rule.startswith(f"contains '_' at offset {len(data) - 4} of the data, which is not base64")


# ---------------------------------------------------------------- the uri format


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.com/hook", None),
        ("http://user@host:8080/p?q#f", None),
        ("mailto:someone@example.com", "must use http or https, not 'mailto'"),
        ("//example.com/x", "has no scheme"),
        ("http://", "has no host"),
        ("http://exa\tmple.com", "must not contain spaces or control characters"),
        ("http://[::1", "is not a valid URL"),
    ],
)
def test_http_url_problem(url: str, problem: str | None) -> None:
    result = http_url_problem(url)
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result
