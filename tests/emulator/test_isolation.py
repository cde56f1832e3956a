"""The emulator stands alone: no Airflow, nothing from the provider outside emulator/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import airflow_provider_apicore.emulator as emulator_package

ALLOWED_THIRD_PARTY = {"fastapi", "uvicorn", "starlette", "pydantic", "httpx", "PIL"}


def test_emulator_sources_import_only_stdlib_its_web_stack_and_itself():
    package_dir = Path(emulator_package.__file__).parent
    offenders = []
    for source in sorted(package_dir.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                inside = name == "airflow_provider_apicore.emulator" or name.startswith(
                    "airflow_provider_apicore.emulator."
                )
                if not (inside or top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY):
                    offenders.append(f"{source.name}: {name}")
    assert offenders == []


def test_importing_and_starting_the_emulator_loads_no_airflow_module():
    code = (
        "import sys\n"
        "from airflow_provider_apicore.emulator import EmulatorServer\n"
        "server = EmulatorServer(); server.start(); server.stop()\n"
        "loaded = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')\n"
        "          or (m.startswith('airflow_provider_apicore.')\n"
        "              and not m.startswith('airflow_provider_apicore.emulator'))]\n"
        "print(loaded)\n"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
