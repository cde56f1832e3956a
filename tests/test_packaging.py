"""
Packaging: one version, the extras, the constraints file, and a built wheel with everything it needs.

The full proof that the wheel installs clean and runs the demo DAG is ``scripts/check_wheel.py`` (the
last step of ``make test``); these tests check the pieces quickly.
"""

from __future__ import annotations

import email
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import airflow_provider_apicore

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
CONSTRAINTS = REPO / "constraints" / "airflow-3.3.2-py3.11.txt"


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert version, f"{path.name}: {line!r} is not pinned with =="
        key = canonicalize_name(name)
        assert key not in pins, f"{path.name} pins {name} twice"
        pins[key] = version
    return pins


def test_the_version_is_written_once_and_read_by_the_build():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "airflow_provider_apicore.__version__"
    }
    assert importlib.metadata.version("airflow-provider-apicore") == airflow_provider_apicore.__version__
    written = [
        p
        for p in [
            *REPO.glob("*.toml"),
            *REPO.glob("*.cfg"),
            *(REPO / "airflow_provider_apicore").rglob("*.py"),
        ]
        if re.search(r"""(__version__|^version)\s*=\s*["']\d""", p.read_text(), re.M)
    ]
    assert written == [REPO / "airflow_provider_apicore" / "__init__.py"]


def test_requires_airflow_3_3_and_names_the_extras():
    assert "apache-airflow>=3.3" in PROJECT["dependencies"]
    extras = PROJECT["optional-dependencies"]
    assert {"emulator", "s3", "openlineage", "parquet", "images", "test", "integration"} <= set(extras)
    heavy = {"playwright", "psycopg2-binary", "asyncpg"}
    assert heavy <= {Requirement(r).name for r in extras["integration"]}
    assert not heavy & {Requirement(r).name for r in extras["test"]}, "the test extra pulls integration tools"
    assert {"Homepage", "Source", "Changelog"} <= set(PROJECT["urls"])
    assert PROJECT["license"] == "Apache-2.0" and (REPO / "LICENSE").exists()


def test_the_constraints_file_pins_the_airflow_and_satisfies_every_requirement():
    pins = _pins(CONSTRAINTS)
    assert pins["apache-airflow"] == "3.3.2"
    requirements = [*PROJECT["dependencies"]]
    for items in PROJECT["optional-dependencies"].values():
        requirements += items
    for text in requirements:
        req = Requirement(text)
        key = canonicalize_name(req.name)
        assert key in pins, f"{req.name} (from pyproject.toml) is not pinned in {CONSTRAINTS.name}"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"{CONSTRAINTS.name} pins {req.name}=={pins[key]}, outside {req.specifier}"
        )


def test_make_test_runs_the_lint_with_the_format_check_and_the_wheel_check():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: venv lint$", makefile, re.M)
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check" in lint and "ruff format --check" in lint
    test = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/check_wheel.py" in test and "scripts/run_tests.py" in test
    assert "-c $(CONSTRAINTS)" in makefile


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [built] = out.glob("*.whl")
    return built


def test_the_wheel_carries_schemas_sample_images_license_and_entry_points(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(f"{dist_info}/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "airflow_provider_apicore/schemas/describe_payload.json" in names
    images = [n for n in names if n.startswith("airflow_provider_apicore/example_data/sample_images/")]
    assert len([n for n in images if not n.endswith(".txt")]) >= 5
    assert "airflow_provider_apicore/py.typed" in names
    assert f"{dist_info}/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "dags/", "benchmarks/"))]
    assert metadata["Version"] == airflow_provider_apicore.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert {"emulator", "s3", "openlineage", "parquet", "images", "integration"} <= set(
        metadata.get_all("Provides-Extra")
    )
    assert "provider_info = airflow_provider_apicore.get_provider_info:get_provider_info" in entry_points
    assert "apicore-emulator = airflow_provider_apicore.emulator.cli:main" in entry_points


def test_twine_accepts_the_wheel(wheel):
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
