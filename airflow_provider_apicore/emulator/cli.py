"""
``apicore-emulator``: serve the emulator until SIGINT/SIGTERM.

Every option can also be set with an environment variable ``APICORE_EMULATOR_<NAME>``
(e.g. ``--job-seconds`` / ``APICORE_EMULATOR_JOB_SECONDS``); a command-line flag wins.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from airflow_provider_apicore.emulator.app import create_app
from airflow_provider_apicore.emulator.config import EmulatorConfig
from airflow_provider_apicore.emulator.errors import EmulatorConfigError
from airflow_provider_apicore.emulator.faults import DROP_STYLES, FaultConfig
from airflow_provider_apicore.emulator.server import base_url_for, bind_socket

ENV_PREFIX = "APICORE_EMULATOR_"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"expected one of {sorted(TRUE | FALSE - {''})}")


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@dataclass(frozen=True)
class Option:
    """One command-line flag and its environment variable."""

    name: str  # field name; the flag is --name-with-dashes, the variable APICORE_EMULATOR_NAME
    parse: Callable[[str], Any]
    target: str  # "server", "config" or "faults"
    help: str
    field: str | None = None  # config field when it differs from ``name``

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "server", "interface to bind (default 127.0.0.1)"),
    Option("port", int, "server", "port to bind; 0 picks a free port (default 8080)"),
    Option("port_file", str, "server", "write the chosen port to this file once listening"),
    Option("http", str, "server", "uvicorn HTTP implementation: auto, h11 or httptools (default auto)"),
    Option("log_level", str, "server", "uvicorn log level (default info)"),
    Option("tokens", _csv, "config", "comma-separated accepted Bearer tokens (default emulator-token)"),
    Option("job_seconds", float, "config", "seconds a DESCRIBE job runs (default 2.0)"),
    Option("concurrency", int, "config", "jobs IN_PROGRESS at once (default 3)"),
    Option("queue_size", int, "config", "jobs that may wait for a slot before code 23 (default 10)"),
    Option("tick_seconds", float, "config", "scheduler period in seconds (default 0.05)"),
    Option("seed", int, "config", "seed of every random decision, for replayable runs (default 0)"),
    Option("progress_step", int, "config", "progress is reported in steps of this many percent (default 10)"),
    Option("notify_timeout", float, "config", "seconds allowed per notifyHook POST (default 2.0)"),
    Option("notify_workers", int, "config", "notifyHook POSTs in flight at once (default 8)"),
    Option("remix", _bool, "config", "variation, reroll and pan wait for /mj/submit/modal (MODAL)"),
    Option("image_urls", _bool, "config", "list the four pictures of each grid in imageUrls"),
    Option(
        "dedupe",
        _bool,
        "config",
        "answer code 21 with the earlier task for a resubmitted image (default off, as on the real servers)",
    ),
    Option(
        "gateway",
        _bool,
        "config",
        "answer like new-api in front of the proxy: codes 21/22 -> 1, fetch/list from a copy refreshed every "
        '--gateway-refresh s (status "" until then), unknown id -> 400 task_no_found, notifyHook dropped, '
        "imageUrl -> /mj/image/<id>, 401 in new-api's shape, any /<mode>/mj/ prefix (true/false)",
    ),
    Option(
        "gateway_refresh", float, "config", "seconds between refreshes of the gateway's copy (default 15)"
    ),
    Option(
        "gateway_task_timeout",
        float,
        "config",
        "seconds after which the gateway marks a task still unfinished FAILURE (default 3600)",
    ),
    Option("http_5xx", float, "faults", "rate of 500/502/503/504 answers, request not processed"),
    Option("http_429", float, "faults", "rate of 429 answers with Retry-After, request not processed"),
    Option("retry_after", int, "faults", "seconds in the 429 Retry-After header (default 1)"),
    Option("drop_before", float, "faults", "rate of connections closed without processing or answer"),
    Option("drop_after", float, "faults", "rate of connections closed after processing, with no answer"),
    Option(
        "http_5xx_after",
        float,
        "faults",
        "rate of requests processed (a submit creates its job) then answered 500/502/504, JSON or text",
    ),
    Option(
        "html_error_after",
        float,
        "faults",
        "rate of requests processed (a submit creates its job) then answered a proxy's HTML 502 page",
    ),
    Option("slow", float, "faults", "rate of answers held back by --slow-seconds after processing"),
    Option("slow_seconds", float, "faults", "delay of slow answers (default 5.0)"),
    Option("malformed_json", float, "faults", "rate of truncated JSON answers, request not processed"),
    Option("html_error", float, "faults", "rate of nginx HTML 502 pages, request not processed"),
    Option("queue_full", float, "faults", "rate of valid submits refused with code 23"),
    Option("task_failure", float, "faults", "rate of tasks ending FAILURE"),
    Option("stuck", float, "faults", "rate of tasks frozen IN_PROGRESS forever"),
    Option("vanish", float, "faults", "rate of tasks forgotten once running"),
    Option("token_expired", _bool, "faults", "answer 401 to every authenticated call (true/false)"),
    Option(
        "fault_endpoints",
        _csv,
        "faults",
        "comma-separated endpoints request-level faults apply to: submit,fetch,list,other (default all)",
        field="endpoints",
    ),
    Option("drop_style", str, "faults", f"how dropped connections end: {' or '.join(DROP_STYLES)}"),
    Option("stuck_holds_slot", _bool, "faults", "stuck tasks keep their concurrency slot (true/false)"),
)
SERVER_CHOICES = {
    "http": ("auto", "h11", "httptools"),
    "log_level": ("critical", "error", "warning", "info", "debug", "trace"),
}
SERVER_DEFAULTS = {"host": "127.0.0.1", "port": 8080, "port_file": None, "http": "auto", "log_level": "info"}


class ForegroundServer(uvicorn.Server):
    """uvicorn server that ends with a normal return on SIGINT/SIGTERM (exit status 0) instead of
    re-raising the signal once shut down, so scripts can tell a clean stop from a crash."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apicore-emulator",
        description="Local emulator of APICore's Midjourney (midjourney-proxy) API.",
        epilog=(
            f"Every option can also be set with {ENV_PREFIX}<NAME>, e.g. {ENV_PREFIX}JOB_SECONDS=0.5, and "
            "at run time with PUT /_emulator/config. Submit routes: /mj/submit/* and /mj/insight-face/swap, "
            "also under /mj-fast, /mj-relax and /mj-turbo. GET /_emulator/stats counts jobs created, submit "
            "answers delivered, jobs whose answer a fault replaced (jobs_unanswered) and duplicate jobs; "
            "GET /_emulator/submissions lists them per payload, image SHA-256 and prompt."
        ),
    )
    for option in OPTIONS:
        # Values stay strings here so flags and environment variables share one parser and one
        # error message. A switch given alone (``--token-expired``) means true.
        switch = {"nargs": "?", "const": "true"} if option.parse is _bool else {}
        parser.add_argument(
            option.flag, dest=option.name, metavar=option.name.upper(), help=option.help, **switch
        )
    return parser


def resolve(args: argparse.Namespace, environ: dict[str, str]) -> tuple[dict[str, Any], EmulatorConfig]:
    """
    Merge flags, environment and defaults.

    :return: server settings and the emulator configuration.
    :raises EmulatorConfigError: naming the flag or variable with a bad value.
    """
    server = dict(SERVER_DEFAULTS)
    config_values: dict[str, Any] = {}
    fault_values: dict[str, Any] = {}
    for option in OPTIONS:
        raw, source = getattr(args, option.name), option.flag
        if raw is None:
            raw, source = environ.get(option.env), option.env
        if raw is None:
            continue
        try:
            value = option.parse(raw)
        except ValueError as exc:
            raise EmulatorConfigError(f"{source}: invalid value {raw!r} ({exc})") from exc
        allowed = SERVER_CHOICES.get(option.name)
        if allowed is not None and value not in allowed:
            raise EmulatorConfigError(f"{source}: {value!r} is not one of {', '.join(allowed)}")
        target = {"server": server, "config": config_values, "faults": fault_values}[option.target]
        target[option.field or option.name] = value
    if fault_values.get("endpoints") == []:
        fault_values["endpoints"] = None
    config = EmulatorConfig(**config_values, faults=FaultConfig.from_dict(fault_values))
    return server, config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``apicore-emulator`` and ``python -m airflow_provider_apicore.emulator``."""
    args = build_parser().parse_args(argv)
    try:
        server, config = resolve(args, dict(os.environ))
    except (EmulatorConfigError, TypeError) as exc:
        print(f"apicore-emulator: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(server["host"], int(server["port"]))
    except OSError as exc:
        print(f"apicore-emulator: cannot bind {server['host']}:{server['port']}: {exc}", file=sys.stderr)
        return 1
    # Listening before announcing the URL: connections made right after the line is printed wait
    # in the backlog instead of being refused.
    sock.listen(2048)
    url = base_url_for(sock)
    if server["port_file"]:
        path = Path(server["port_file"])
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{sock.getsockname()[1]}\n")
        tmp.replace(path)
    print(f"APICore emulator listening on {url}", flush=True)
    uvicorn_config = uvicorn.Config(
        create_app(config),
        http=server["http"],
        lifespan="on",
        log_level=server["log_level"],
        timeout_graceful_shutdown=2,
    )
    ForegroundServer(uvicorn_config).run(sockets=[sock])
    print("APICore emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
