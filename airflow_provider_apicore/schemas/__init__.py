"""
JSON Schemas of APICore request payloads, and the validation that applies them.

The schema files are the authority on what a payload may hold; this module only runs them (JSON Schema
draft 2020-12) and turns the first violation into a
:class:`~airflow_provider_apicore.exceptions.PayloadValidationError` that names the field and the rule in
plain words. Messages never quote more than a short excerpt of a value, so image data stays out of logs.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from airflow_provider_apicore.exceptions import PayloadValidationError, redact_url_credentials

DESCRIBE_PAYLOAD = "describe_payload"

#: Longest excerpt of a rejected value quoted in an error message.
EXCERPT_CHARS = 40

_ROOT = "<root>"
_DATA_URL_EXAMPLE = "a data URL like data:image/png;base64,..."
_DATA_URL_HEADER = re.compile(r"data:([^;,]*)((?:;[^;,]*)*)")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]")


def first_non_base64(data: str) -> tuple[str, int, str] | None:
    """The first character of ``data`` outside the standard base64 alphabet: (char, offset, hint)."""
    bad = _NOT_BASE64.search(data)
    if not bad:
        return None
    ch = bad.group()
    hint = ""
    if ch in "-_":
        hint = " (URL-safe base64 is not accepted; use + and /)"
    elif ch.isspace():
        hint = " (line breaks and spaces are not allowed)"
    return ch, bad.start(), hint


_JSON_TYPES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    list: "array",
    tuple: "array",
    dict: "object",
}


def load_schema(name: str) -> dict[str, Any]:
    """
    Return a schema shipped with the provider, as a fresh dict.

    :param name: schema name, with or without ``.json`` (e.g. ``"describe_payload"``)
    :raises ValueError: no schema has that name
    """
    filename = name if name.endswith(".json") else f"{name}.json"
    resource = resources.files(__name__).joinpath(filename)
    if not resource.is_file():
        available = sorted(
            entry.name[: -len(".json")]
            for entry in resources.files(__name__).iterdir()
            if entry.name.endswith(".json")
        )
        raise ValueError(f"No schema named {name!r}; available: {', '.join(available)}")
    return json.loads(resource.read_text(encoding="utf-8"))


def http_url_problem(value: str) -> str | None:
    """
    Say why ``value`` is not an http(s) URL with a host, or return None if it is one.

    :param value: the URL to check
    """
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as err:
        return f"is not a valid URL ({err})"
    if not parts.scheme:
        return "has no scheme (http:// or https://)"
    if parts.scheme.lower() not in ("http", "https"):
        return f"must use http or https, not {parts.scheme!r}"
    if not parts.hostname:
        return "has no host"
    return None


# Only the formats the schemas use, implemented here: jsonschema's own "uri" check needs rfc3987.
_FORMAT_CHECKER = FormatChecker(formats=())


@_FORMAT_CHECKER.checks("uri")
def _is_http_url(value: object) -> bool:
    return not isinstance(value, str) or http_url_problem(value) is None


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=_FORMAT_CHECKER)


def _excerpt(value: object) -> str:
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"
    return repr(value if len(value) <= EXCERPT_CHARS else value[:EXCERPT_CHARS] + "…")


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def data_url_problem(value: str, allowed_mimes: list[str] | tuple[str, ...]) -> str | None:
    """
    Explain why a string is not an acceptable image data URL, to word schema errors.

    :param value: the ``base64`` field
    :param allowed_mimes: the accepted image types
    :return: the rule broken, or None when no specific problem is found (the schema still decides)
    """
    if not value:
        return f"must not be empty; give {_DATA_URL_EXAMPLE}"
    if not value.startswith("data:"):
        return f"must be {_DATA_URL_EXAMPLE}; got {_excerpt(value)}"
    header, comma, data = value.partition(",")
    match = _DATA_URL_HEADER.fullmatch(header)
    if not comma or not match:
        return f"must be {_DATA_URL_EXAMPLE}; no ',' after the header in {_excerpt(value)}"
    mime = match.group(1)
    if mime not in allowed_mimes:
        return f"image type {mime!r} is not accepted; use one of {', '.join(allowed_mimes)} (lower case)"
    if header != f"data:{mime};base64":
        return f"the header must be exactly 'data:{mime};base64'; got {_excerpt(header)}"
    if not data.strip("="):
        return "holds no image data after 'base64,'"
    bad = first_non_base64(data)
    if bad:
        ch, offset, hint = bad
        return f"contains {ch!r} at offset {offset} of the data, which is not base64{hint}"
    body = data.rstrip("=")
    if "=" in body:
        return "has '=' padding before the end of the data"
    if len(data) - len(body) > 2:
        return "ends with more than two '=' padding characters"
    return None


def _rule_for(error: ValidationError, schema: dict[str, Any]) -> tuple[str, str]:
    """Turn one jsonschema error into (field, rule)."""
    path = list(error.absolute_path)
    field = ".".join(str(p) for p in path) or _ROOT
    kind = error.validator
    expected = error.validator_value
    value = error.instance
    properties: dict[str, Any] = schema.get("properties", {})

    if kind == "additionalProperties" and isinstance(value, dict):
        unknown = [key for key in value if key not in properties]
        allowed = ", ".join(properties)
        if len(unknown) == 1:
            return str(unknown[0]), f"unknown field {unknown[0]!r}; allowed: {allowed}"
        names = ", ".join(repr(k) for k in unknown)
        return str(unknown[0]), f"unknown fields {names}; allowed: {allowed}"
    if kind == "required" and isinstance(value, dict):
        missing = [key for key in expected if key not in value]
        name = missing[0] if missing else field
        what = f": {_DATA_URL_EXAMPLE}" if name == "base64" else ""
        return name, f"is required{what}"
    if kind == "type":
        if not path:
            return field, f"the payload must be a JSON object (a dict); got {_json_type(value)}"
        return field, f"must be a {expected}; got {_json_type(value)}"
    if field == "base64" and kind in ("pattern", "minLength") and isinstance(value, str):
        mimes = _base64_mimes(schema)
        problem = data_url_problem(value, mimes)
        if problem is None:
            minimum = schema["properties"]["base64"].get("minLength", 0)
            if len(value) < minimum:
                problem = f"is too short to hold an image ({len(value)} characters; at least {minimum})"
            else:
                problem = f"must be {_DATA_URL_EXAMPLE}; got {_excerpt(value)}"
        return field, problem
    sub_pattern = str(error.schema.get("pattern", "")) if isinstance(error.schema, dict) else ""
    if kind in ("pattern", "minLength") and isinstance(value, str) and "data:image/" in sub_pattern:
        problem = data_url_problem(value, _pattern_mimes(sub_pattern))
        return field, problem or f"must be {_DATA_URL_EXAMPLE}; got {_excerpt(value)}"
    if kind == "pattern" and expected == r"\S":
        return field, "must not be empty or only whitespace"
    if kind in ("minItems", "maxItems") and isinstance(value, list):
        most = "least" if kind == "minItems" else "most"
        return field, f"must hold at {most} {expected} items (got {len(value)})"
    if kind == "maxLength":
        return field, f"must be at most {expected} characters (got {len(value)})"
    if kind == "minLength":
        return field, f"must be at least {expected} characters (got {len(value)})"
    if kind in ("format", "pattern") and field == "notifyHook" and isinstance(value, str):
        detail = http_url_problem(value) or "does not look like a URL"
        # A hook URL may carry credentials (https://user:pass@host/...): never quote them.
        detail, shown = redact_url_credentials(detail), redact_url_credentials(value)
        return field, f"must be an http(s) URL with a host ({detail}); got {_excerpt(shown)}"
    if kind == "enum":
        return field, f"must be one of {', '.join(map(str, expected))}; got {_excerpt(value)}"
    if kind == "pattern":
        return field, f"must match the pattern {expected!r}; got {_excerpt(value)}"
    # Other keywords: jsonschema's own words, without the (possibly huge) value.
    return field, f"breaks the schema rule {kind!r}: {expected!r}"


def _field_of(error: ValidationError, schema: dict[str, Any]) -> str:
    """The field an error is about, without wording the rule (cheap, for listing further problems)."""
    value = error.instance
    if error.validator == "additionalProperties" and isinstance(value, dict):
        unknown = [key for key in value if key not in schema.get("properties", {})]
        return str(unknown[0]) if unknown else _ROOT
    if error.validator == "required" and isinstance(value, dict):
        missing = [key for key in error.validator_value if key not in value]
        return missing[0] if missing else _ROOT
    return ".".join(str(p) for p in error.absolute_path) or _ROOT


def _base64_mimes(schema: dict[str, Any]) -> tuple[str, ...]:
    """The image types the schema's base64 pattern allows, read from the pattern itself."""
    return _pattern_mimes(schema["properties"]["base64"].get("pattern", ""))


def _pattern_mimes(pattern: str) -> tuple[str, ...]:
    """The image types a data-URL pattern allows: ``image/(png|jpeg)`` or a single ``image/png``."""
    match = re.search(r"image/\(([^)]*)\)", pattern)
    if match:
        return tuple(f"image/{t}" for t in match.group(1).split("|"))
    single = re.search(r"image/([a-z]+)", pattern)
    return (f"image/{single.group(1)}",) if single else ()


def _error_order(schema: dict[str, Any]):
    order = {name: i for i, name in enumerate(schema.get("properties", {}))}
    at_root = {"type": 0, "additionalProperties": 1, "required": 2}
    in_field = {"type": 0, "maxLength": 1, "pattern": 2, "minLength": 3, "format": 4, "enum": 5}

    def key(error: ValidationError) -> tuple[int, int, int]:
        if not error.absolute_path:
            return (at_root.get(str(error.validator), 3), 0, 0)
        field = order.get(str(error.absolute_path[0]), len(order))
        return (4, field, in_field.get(str(error.validator), len(in_field)))

    return key


def validate_payload(name: str, payload: Any) -> None:
    """
    Validate a payload against a shipped schema.

    :param name: schema name (e.g. ``"describe_payload"``)
    :param payload: the payload to check
    :raises PayloadValidationError: naming the first field at fault and the rule it broke
    """
    validator = _validator(name)
    errors = list(validator.iter_errors(payload))
    if not errors:
        return
    errors.sort(key=_error_order(validator.schema))
    field, rule = _rule_for(errors[0], validator.schema)
    others = []
    for error in errors[1:]:
        name = _field_of(error, validator.schema)
        if name != field and name not in others:
            others.append(name)
    if others:
        rule += f" (also invalid: {', '.join(others)})"
    raise PayloadValidationError(field, rule)


def validate_describe_payload(payload: dict[str, Any]) -> None:
    """
    Check a ``POST /mj/submit/describe`` body against ``describe_payload.json`` before it is sent.

    :param payload: the body: ``base64`` (required data URL), ``notifyHook``, ``state``, ``botType``
    :raises PayloadValidationError: naming the field (``base64``, ``notifyHook``, ``state``, ``botType``,
        an unknown key, or ``<root>``) and the rule in plain words
    """
    validate_payload(DESCRIBE_PAYLOAD, payload)
