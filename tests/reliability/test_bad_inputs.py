"""
The bad-input catalogue: every input a user can get wrong, through the operators a DAG uses.

Each case asserts that the error names the cause (the file, field, argument or connection, and the
rule) and that **nothing was sent**: the emulator counted no request at all. Cases already proven
the same way elsewhere are listed in :data:`ELSEWHERE` (and checked to still exist) rather than
repeated; the rules themselves are unit-tested in tests/test_images.py and tests/schemas.

=====================================  ==========================================================
case                                   where
=====================================  ==========================================================
not an image, named .png               IMAGE_CASES (describe, batch directory, batch list)
empty file                             IMAGE_CASES
oversized file                         IMAGE_CASES
BMP / TIFF / SVG                       IMAGE_CASES
truncated image header                 IMAGE_CASES
missing file / missing directory       IMAGE_CASES; test_a_missing_directory_...
unreadable file                        IMAGE_CASES: a symlink loop (fails for root too, unlike
                                       chmod 000), a named pipe, a directory named like an image
directory with no images               test_a_directory_without_images_...
notifyHook not http(s) / no host       NOTIFY_HOOKS (batch); ELSEWHERE (describe)
notifyHook with credentials, no host   NOTIFY_HOOKS: the error does not quote the password
oversized state                        ELSEWHERE (describe); the batch operator makes its own state
unknown payload keys                   test_unknown_payload_keys_...
missing connection / no token /        CONNECTION_CASES (describe and batch)
host without scheme / bad extras
bad max_in_flight / timeouts           ELSEWHERE (parse time); test_arguments_rendered_...
=====================================  ==========================================================
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_apicore.exceptions import (
    ApicoreConfigError,
    InvalidImageError,
    PayloadValidationError,
)
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from airflow_provider_apicore.images import to_data_url
from airflow_provider_apicore.manifest import PENDING, REJECTED, read_manifest
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from airflow_provider_apicore.operators.describe import MJDescribeOperator
from tests.helpers.imagegen import PNG_SIGNATURE, make_bmp, make_png
from tests.reliability.conftest import write_images

CONTEXT = {"ti": SimpleNamespace(dag_id="bad_inputs", run_id="manual__1", xcom_push=lambda key, value: None)}
PASSWORD = "hook-pass-5b1e0c"


def requests_sent(emulator) -> int:
    return sum(emulator.stats()["requests"].values())


# ------------------------------------------------------------------------------------ images
def _file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    return make


def _symlink_loop(directory: Path) -> Path:
    path = directory / "loop.png"
    path.symlink_to(path.name)
    return path


def _fifo(directory: Path) -> Path:
    path = directory / "pipe.png"
    os.mkfifo(path)
    return path


def _directory(directory: Path) -> Path:
    path = directory / "album.png"
    path.mkdir()
    return path


def _missing(directory: Path) -> Path:
    return directory / "gone.png"


#: id -> (make the file in a directory, what the single-image error says, the batch listing's reason)
IMAGE_CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "text named .png": (
        _file("photo.png", b"hello, this is a text file"),
        "content is not an image (starts with b'hello, this '",
        "1 not an image (photo.png)",
    ),
    "empty file": (_file("empty.png", b""), "the file is empty (0 bytes)", "1 empty (empty.png)"),
    "oversized file": (
        _file("big.png", make_png(64, 64, lambda x, y: (x * 4, y * 4, (x * y) % 256))),
        "over the limit of 200 B (200 bytes)",
        "1 over the size limit (big.png)",
    ),
    "BMP": (_file("scan.bmp", make_bmp()), "BMP files are not supported", "1 unsupported format (scan.bmp)"),
    "TIFF": (
        _file("scan.tif", b"II*\x00\x08\x00\x00\x00" + b"\x00" * 24),
        "TIFF files are not supported",
        "1 unsupported format (scan.tif)",
    ),
    "SVG": (
        _file("icon.svg", b"<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>"),
        "SVG files are not supported",
        "1 unsupported format (icon.svg)",
    ),
    "truncated header": (
        _file("cut.png", PNG_SIGNATURE + b"\x00\x00\x00\x0dIH"),
        "truncated PNG",
        "1 truncated or corrupt (cut.png)",
    ),
    "unreadable (symlink loop)": (
        _symlink_loop,
        "cannot read the file: Too many levels of symbolic links",
        "1 unreadable (loop.png)",
    ),
    "named pipe": (_fifo, "not a regular file", "1 not a regular file (pipe.png)"),
    "directory named like an image": (_directory, "this is a directory", "no images found: 0 files"),
    "missing file": (_missing, "file does not exist", "directory does not exist"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES), ids=list(IMAGE_CASES))
def test_a_bad_image_fails_the_describe_operator_naming_file_and_rule(emulator, tmp_path, case):
    make, rule, _ = IMAGE_CASES[case]
    path = make(tmp_path)
    op = MJDescribeOperator(task_id="describe", image=str(path), max_image_bytes=200)
    with pytest.raises(InvalidImageError) as info:
        op.execute(CONTEXT)
    assert path.name in str(info.value) and rule in str(info.value)
    assert requests_sent(emulator) == 0


@pytest.mark.parametrize("case", list(IMAGE_CASES), ids=list(IMAGE_CASES))
def test_a_directory_holding_only_a_bad_image_fails_the_batch_naming_it(emulator, tmp_path, case):
    make, _, reason = IMAGE_CASES[case]
    source = tmp_path / "images"
    source.mkdir()
    make(source)
    if case == "missing file":
        source = tmp_path / "no such dir"
    op = MJBatchDescribeOperator(
        task_id="batch", source=str(source), manifest_path=str(tmp_path / "m.jsonl"), max_image_bytes=200
    )
    with pytest.raises(InvalidImageError) as info:
        op.execute(CONTEXT)
    assert str(source) in str(info.value) and reason in str(info.value)
    assert requests_sent(emulator) == 0


@pytest.mark.parametrize("case", list(IMAGE_CASES), ids=list(IMAGE_CASES))
def test_a_bad_image_in_a_list_is_recorded_as_rejected_with_the_rule(emulator, tmp_path, case):
    make, rule, _ = IMAGE_CASES[case]
    path = make(tmp_path)
    op = MJBatchDescribeOperator(
        task_id="batch", source=[str(path)], manifest_path=str(tmp_path / "m.jsonl"), max_image_bytes=200
    )
    summary = op.execute(CONTEXT)
    assert summary["by_status"] == {REJECTED: 1}
    [record] = read_manifest(tmp_path / "m.jsonl")
    assert record.image == str(path)
    if case == "directory named like an image":
        rule = "this is a directory; pass it alone as the source"
    assert rule in record.error
    assert requests_sent(emulator) == 0


def test_a_directory_without_images_names_what_it_skipped(emulator, tmp_path):
    source = tmp_path / "docs"
    source.mkdir()
    (source / "README.txt").write_text("captions go here")
    (source / ".hidden.png").write_bytes(make_png())
    op = MJBatchDescribeOperator(task_id="batch", source=str(source), manifest_path=str(tmp_path / "m.jsonl"))
    with pytest.raises(InvalidImageError, match=r"no images found: 2 files looked at, 2 skipped") as info:
        op.execute(CONTEXT)
    assert "README.txt" in str(info.value) and "1 hidden" in str(info.value)
    assert requests_sent(emulator) == 0


def test_a_missing_directory_is_named(emulator, tmp_path):
    missing = tmp_path / "photos" / "2025"
    op = MJBatchDescribeOperator(
        task_id="batch", source=str(missing), manifest_path=str(tmp_path / "m.jsonl")
    )
    with pytest.raises(InvalidImageError, match="directory does not exist") as info:
        op.execute(CONTEXT)
    assert str(missing) in str(info.value)
    assert requests_sent(emulator) == 0


# ------------------------------------------------------------------------------------ payload
NOTIFY_HOOKS = {
    "ftp scheme": ("ftp://example.com/hook", "must use http or https, not 'ftp'"),
    "no scheme": ("example.com/hook", "has no scheme"),
    "no host": ("https:///hook", "has no host"),
    "scheme only": ("https://", "has no host"),
    "credentials but no host": (f"https://user:{PASSWORD}@/hook", "has no host"),
    "space inside": ("https://example.com/my hook", "must not contain spaces"),
}


@pytest.mark.parametrize(("url", "rule"), list(NOTIFY_HOOKS.values()), ids=list(NOTIFY_HOOKS))
def test_a_bad_notify_hook_is_refused_naming_the_field_and_nothing_is_sent(emulator, tmp_path, url, rule):
    write_images(tmp_path / "src", 2)
    op = MJBatchDescribeOperator(
        task_id="batch",
        source=str(tmp_path / "src"),
        manifest_path=str(tmp_path / "m.jsonl"),
        notify_hook=url,
    )
    # A bad setting fails the whole task before any image is listed or marked: the same hook would
    # refuse every image, so nothing is recorded as rejected and a fixed rerun starts clean.
    with pytest.raises(ApicoreConfigError, match=re.escape(rule)) as refused:
        op.execute(CONTEXT)
    assert "'notifyHook'" in str(refused.value) and PASSWORD not in str(refused.value)
    assert "no image was sent or marked" in str(refused.value)
    assert not (tmp_path / "m.jsonl").exists() or read_manifest(tmp_path / "m.jsonl") == []
    assert requests_sent(emulator) == 0
    # The describe operator: the same rule, raised before anything is read from the connection.
    [image, _] = write_images(tmp_path / "one", 2)
    with pytest.raises(PayloadValidationError, match=rule) as info:
        MJDescribeOperator(task_id="d", image=str(image), notify_hook=url).execute(CONTEXT)
    assert info.value.field == "notifyHook" and PASSWORD not in str(info.value)
    assert requests_sent(emulator) == 0


def test_unknown_payload_keys_are_named_and_nothing_is_sent(apicore_conn):
    payload = {"base64": to_data_url(make_png()), "prompt": "a cat", "base64Array": []}
    with pytest.raises(PayloadValidationError, match=r"unknown fields 'prompt', 'base64Array'"):
        ApicoreHook().submit_describe(payload)
    assert requests_sent(apicore_conn) == 0


# ------------------------------------------------------------------------------------ connection
def _connection(emulator, monkeypatch, conn_id: str, **fields) -> None:
    conn = {"conn_type": "apicore", **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


CONNECTION_CASES = {
    "missing connection": ({}, "Airflow connection 'apicore_case' does not exist"),
    "no token": ({"host": "URL"}, "Connection 'apicore_case' has no API token"),
    "blank token": ({"host": "URL", "password": "   "}, "Connection 'apicore_case' has no API token"),
    "host without scheme": (
        {"host": "HOSTPORT", "password": "TOKEN"},
        "has no scheme; write it as a full URL",
    ),
    "ftp host": ({"host": "ftp://HOSTPORT", "password": "TOKEN"}, "host must be an http(s) URL"),
    "zero timeout": (
        {"host": "URL", "password": "TOKEN", "extra": {"timeout": 0}},
        "timeout must be a number of seconds above 0",
    ),
    "too many retries": (
        {"host": "URL", "password": "TOKEN", "extra": {"max_retries": 99}},
        "max_retries must be a whole number from 0 to 20",
    ),
}


def _set_case(emulator, monkeypatch, case: str) -> None:
    fields, _ = CONNECTION_CASES[case]
    if case == "missing connection":
        monkeypatch.delenv("AIRFLOW_CONN_APICORE_CASE", raising=False)
        return
    hostport = emulator.url.split("://", 1)[1]
    replaced = {
        key: (
            value.replace("URL", emulator.url).replace("HOSTPORT", hostport).replace("TOKEN", emulator.token)
            if isinstance(value, str)
            else value
        )
        for key, value in fields.items()
    }
    _connection(emulator, monkeypatch, "apicore_case", **replaced)


@pytest.mark.parametrize("case", list(CONNECTION_CASES), ids=list(CONNECTION_CASES))
def test_an_unusable_connection_fails_the_describe_operator_naming_it(emulator, monkeypatch, tmp_path, case):
    _set_case(emulator, monkeypatch, case)
    [image] = write_images(tmp_path, 1)
    op = MJDescribeOperator(task_id="d", image=str(image), apicore_conn_id="apicore_case")
    with pytest.raises(ApicoreConfigError, match=re.escape(CONNECTION_CASES[case][1])) as info:
        op.execute(CONTEXT)
    assert emulator.token not in str(info.value)
    assert requests_sent(emulator) == 0


@pytest.mark.parametrize("case", list(CONNECTION_CASES), ids=list(CONNECTION_CASES))
def test_an_unusable_connection_fails_the_batch_naming_it(emulator, monkeypatch, tmp_path, case):
    _set_case(emulator, monkeypatch, case)
    write_images(tmp_path / "src", 2)
    manifest = tmp_path / "m.jsonl"
    op = MJBatchDescribeOperator(
        task_id="batch",
        source=str(tmp_path / "src"),
        manifest_path=str(manifest),
        apicore_conn_id="apicore_case",
    )
    with pytest.raises(ApicoreConfigError, match=re.escape(CONNECTION_CASES[case][1])) as info:
        op.execute(CONTEXT)
    assert emulator.token not in str(info.value)
    assert requests_sent(emulator) == 0


def test_an_unusable_connection_leaves_no_image_marked_as_sent(emulator, monkeypatch, tmp_path):
    _set_case(emulator, monkeypatch, "no token")
    write_images(tmp_path / "src", 2)
    manifest = tmp_path / "m.jsonl"
    op = MJBatchDescribeOperator(
        task_id="batch",
        source=str(tmp_path / "src"),
        manifest_path=str(manifest),
        apicore_conn_id="apicore_case",
    )
    for _ in range(2):  # the first try and Airflow's retry
        with pytest.raises(ApicoreConfigError):
            op.execute(CONTEXT)
    records = read_manifest(manifest)
    assert [(r.status, r.attempts) for r in records] == [(PENDING, 0), (PENDING, 0)]


# ------------------------------------------------------------------------------------ arguments
def test_arguments_rendered_from_templates_are_checked_before_anything_is_sent(emulator, tmp_path):
    write_images(tmp_path / "src", 1)
    op = MJBatchDescribeOperator(
        task_id="batch",
        source=str(tmp_path / "src"),
        manifest_path=str(tmp_path / "m.jsonl"),
        max_in_flight="{{ params.max_in_flight }}",
        timeout="{{ params.timeout }}",
    )
    for name, rendered, message in [
        ("max_in_flight", "0", "max_in_flight must be a whole number >= 1, got '0'"),
        ("max_in_flight", "ten", "max_in_flight must be a whole number >= 1, got 'ten'"),
        ("timeout", "-5", r"timeout must be a number above 0 \(or None\), got '-5'"),
    ]:
        op.max_in_flight, op.timeout = "4", "60"
        setattr(op, name, rendered)
        with pytest.raises(ApicoreConfigError, match=message):
            op.execute(CONTEXT)
    assert requests_sent(emulator) == 0
    assert not (tmp_path / "m.jsonl").exists()


#: (case, operator) proven elsewhere in the same way (error named, nothing sent) -> that test.
ELSEWHERE = {
    (
        "text named .png",
        "describe, submit counter",
    ): "tests/operators/test_describe.py::test_bad_images_fail_before_any_request",
    (
        "notifyHook ftp / no host",
        "describe",
    ): "tests/operators/test_describe.py::test_payload_rule_violations_name_the_field_and_send_nothing",
    (
        "oversized state",
        "describe",
    ): "tests/operators/test_describe.py::test_payload_rule_violations_name_the_field_and_send_nothing",
    (
        "oversized image",
        "describe",
    ): "tests/operators/test_describe.py::test_image_over_the_size_limit_is_refused_with_the_limit",
    (
        "bad poll_interval / timeout",
        "describe, parse time",
    ): "tests/operators/test_describe.py::test_bad_arguments_fail_at_parse_time_naming_the_argument",
    (
        "bad max_in_flight / timeouts",
        "batch, parse time",
    ): "tests/operators/test_batch_describe.py::test_unusable_arguments_fail_when_the_dag_is_parsed",
    (
        "bad timeout / max_retries extras",
        "hook",
    ): "tests/hooks/test_apicore_hook.py::TestConnectionSettings::test_bad_extras_name_the_field",
    (
        "invalid payload",
        "hook",
    ): "tests/hooks/test_apicore_hook.py::test_invalid_payload_is_rejected_before_any_request",
    (
        "unreadable file (open fails)",
        "load_image",
    ): "tests/test_images.py::test_load_image_reports_unreadable_files_with_the_os_error",
    (
        "every image rule",
        "load_image",
    ): "tests/test_images.py::test_load_image_rejects_with_the_file_and_rule_named",
    (
        "every payload rule",
        "schema",
    ): "tests/schemas/test_describe_payload.py::test_each_schema_rule_is_reported_with_the_field_named",
}


@pytest.mark.parametrize("reference", sorted(set(ELSEWHERE.values())))
def test_cases_proven_elsewhere_still_exist(reference):
    path, *names = reference.split("::")
    target = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    for name in names:
        target = getattr(target, name)
    assert callable(target), reference
