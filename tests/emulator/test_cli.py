"""The ``apicore-emulator`` command: flags and environment variables, announced URL, clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from airflow_provider_apicore.emulator.cli import OPTIONS, build_parser, main, resolve
from airflow_provider_apicore.emulator.config import EmulatorConfig
from airflow_provider_apicore.emulator.faults import FaultConfig

LISTENING = re.compile(r"APICore emulator listening on (http://127\.0\.0\.1:(\d+))")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APICORE_EMULATOR_")}
    return {**env, **extra}


def test_cli_announces_its_url_writes_the_port_file_and_serves(tmp_path: Path):
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "airflow_provider_apicore.emulator", "--port", "0"]
    command += ["--port-file", str(port_file), "--job-seconds", "0.1", "--log-level", "warning"]
    env = _env(APICORE_EMULATOR_TOKENS="cli-token,other", APICORE_EMULATOR_JOB_SECONDS="9")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = LISTENING.search(line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        url, port = match[1], match[2]
        assert port_file.read_text().strip() == port

        session = requests.Session()
        session.trust_env = False
        config = session.get(f"{url}/_emulator/config", timeout=5).json()
        assert config["job_seconds"] == 0.1  # the flag wins over the environment
        assert config["tokens"] == ["cli-token", "other"]
        body = {"base64": "data:image/gif;base64,R0lGODlhAQABAAAAACw="}
        refused = session.post(f"{url}/mj/submit/describe", json=body, timeout=5)
        assert refused.status_code == 401
        answer = session.post(
            f"{url}/mj/submit/describe", json=body, headers={"Authorization": "Bearer cli-token"}, timeout=5
        )
        assert answer.json()["code"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_every_config_field_and_fault_knob_has_a_flag_and_an_environment_variable():
    names = {option.field or option.name for option in OPTIONS}
    config_fields = set(EmulatorConfig.__dataclass_fields__) - {"faults"}
    assert config_fields <= names
    assert set(FaultConfig.__dataclass_fields__) <= names
    assert all(option.env == "APICORE_EMULATOR_" + option.name.upper() for option in OPTIONS)


def test_environment_sets_fault_knobs_and_flags_override_it():
    parser = build_parser()
    environ = {
        "APICORE_EMULATOR_HTTP_5XX": "0.25",
        "APICORE_EMULATOR_TOKEN_EXPIRED": "true",
        "APICORE_EMULATOR_FAULT_ENDPOINTS": "submit,list",
        "APICORE_EMULATOR_CONCURRENCY": "7",
        "APICORE_EMULATOR_PORT": "0",
    }
    server, config = resolve(parser.parse_args(["--http-5xx", "0.5", "--drop-style", "reset"]), environ)
    assert config.faults.http_5xx == 0.5
    assert config.faults.token_expired is True
    assert config.faults.endpoints == ["submit", "list"]
    assert config.faults.drop_style == "reset"
    assert config.concurrency == 7
    assert server["port"] == 0


def test_gateway_and_after_faults_from_flags_and_environment():
    environ = {"APICORE_EMULATOR_GATEWAY": "1", "APICORE_EMULATOR_HTML_ERROR_AFTER": "0.1"}
    args = build_parser().parse_args(["--gateway-refresh", "0.5", "--http-5xx-after", "0.2"])
    _, config = resolve(args, environ)
    assert config.gateway is True and config.gateway_refresh == 0.5
    assert config.faults.http_5xx_after == 0.2 and config.faults.html_error_after == 0.1
    _, default = resolve(build_parser().parse_args([]), {})
    assert default.gateway is False and default.dedupe is False and default.gateway_refresh == 15.0


def test_help_documents_the_gateway_and_the_after_faults():
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_apicore.emulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 0
    for flag in (
        "--gateway ",
        "--gateway-refresh",
        "--http-5xx-after",
        "--html-error-after",
        "task_no_found",
    ):
        assert flag in result.stdout, flag


def test_switches_given_alone_mean_true():
    _, config = resolve(build_parser().parse_args(["--token-expired", "--stuck-holds-slot"]), {})
    assert config.faults.token_expired is True and config.faults.stuck_holds_slot is True
    _, config = resolve(build_parser().parse_args(["--token-expired", "false"]), {})
    assert config.faults.token_expired is False


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--concurrency", "zero"], {}, "--concurrency"),
        ([], {"APICORE_EMULATOR_HTTP_5XX": "often"}, "APICORE_EMULATOR_HTTP_5XX"),
        (["--vanish", "1.5"], {}, "faults.vanish"),
        (["--token-expired", "maybe"], {}, "--token-expired"),
        (["--http", "h3"], {}, "--http"),
    ],
)
def test_bad_values_exit_2_naming_the_flag_or_variable(args, env, named, monkeypatch, capsys):
    for name in [name for name in os.environ if name.startswith("APICORE_EMULATOR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["--port", "0", *args]) == 2
    captured = capsys.readouterr()
    assert named in captured.err
    assert "listening" not in captured.out
