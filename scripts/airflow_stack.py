"""
Start and stop a real Airflow 3 stack on loopback: the APICore emulator, ``airflow api-server``,
``scheduler``, ``dag-processor`` and ``triggerer`` (LocalExecutor), on SQLite or on a throwaway
PostgreSQL cluster, in a temporary Airflow home with this repository's ``dags/``.

``executor="celery"`` starts a distributed stack instead (the tier in ``tests/distributed``): PostgreSQL,
Debian's ``redis-server`` as the Celery broker, ``workers`` Celery workers and ``triggerers``
triggerers that share no local directory (each has its own HOME, TMPDIR, working directory, Airflow
home, log folder and copy of the DAG files, and reports its own hostname to Airflow), and moto's
server mode on loopback serving S3: every service gets the ``aws_moto`` connection (``endpoint_url``
pointing at moto), task logs go to ``s3://airflow-logs`` (remote logging), and data lives under
``s3://aws_moto@<bucket>/...`` (:class:`~airflow.sdk.ObjectStoragePath` with the connection id).

Every service runs in its own process group, is logged to ``<root>/logs/<service>.log`` and is stopped
by process id (SIGTERM to the group, SIGKILL after a grace period), also at interpreter exit. Each
phase's duration is printed.

By hand::

    .venv/bin/python scripts/airflow_stack.py up                 # SQLite; Ctrl-C stops everything
    .venv/bin/python scripts/airflow_stack.py up --postgres      # PostgreSQL metadata database
    .venv/bin/python scripts/airflow_stack.py up --celery        # Celery, Redis, 2 workers, 2 triggerers, S3
    .venv/bin/python scripts/airflow_stack.py down <root>        # stop a stack whose `up` was killed

From Python (the integration tier)::

    with AirflowStack(database="sqlite") as stack:
        stack.api("GET", "/api/v2/dags").json()
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import ctypes.util
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
EMULATOR = str(BIN / "apicore-emulator")
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Services that the Airflow services depend on: stopped after them.
INFRASTRUCTURE = ("emulator", "moto", "redis")
#: Bucket of the remote task logs in the distributed stack.
LOG_BUCKET = "airflow-logs"
#: Connection id of moto's S3 in the distributed stack.
S3_CONN_ID = "aws_moto"
#: Components reported by /api/v2/monitor/health that must all be "healthy".
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")

_live_stacks: list[AirflowStack] = []


class StackError(RuntimeError):
    """A service did not start, died, or did not become healthy; the message names it and its log."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def say(message: str) -> None:
    print(f"[airflow-stack] {message}", flush=True)


# --------------------------------------------------------------------------------------- processes
@dataclass
class Service:
    """One long-running process in its own process group, logged to a file."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = REPO
    #: Runs in the child before exec; by default it asks for SIGTERM when the parent dies.
    preexec: Callable[[], None] | None = None
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stopping it reaches forked workers too
                preexec_fn=self.preexec or _terminate_with_parent,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(
                f"{self.name} (pid {self.proc.pid}) exited with {self.proc.returncode}; "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is None:
            return
        stop_group(self.proc.pid, grace, self.proc)


def _terminate_with_parent() -> None:
    """In the child: get SIGTERM when the process that started us dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks, fixture finalizers and atexit run."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, interrupt)


def stop_group(pgid: int, grace: float, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM the process group ``pgid``; SIGKILL it after ``grace`` seconds if anything is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()
        if not group_exists(pgid):
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A group whose leader is a zombie of ours still "exists"; the leader's own state settles it.
    try:
        with open(f"/proc/{pgid}/stat") as stat:
            leader_zombie = stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        leader_zombie = True
    if not leader_zombie:
        return True
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(pgid):
            with contextlib.suppress(OSError, ValueError):
                if os.getpgid(int(entry)) == pgid:
                    return True
    return False


# --------------------------------------------------------------------------------------- PostgreSQL
def postgres_bin_dir() -> Path | None:
    """Directory of Debian's ``initdb``/``pg_ctl`` (newest major version), or of the ones on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]), reverse=True
    )
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def postgres_unavailable_reason() -> str | None:
    """Why a throwaway PostgreSQL cluster cannot be run here, or None when it can."""
    if postgres_bin_dir() is None:
        return "PostgreSQL's initdb/pg_ctl not found: run scripts/install_system_deps.sh as root"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' user to own the cluster (initdb refuses root)"
    # Airflow talks to its metadata database through psycopg2 and, in the API server, asyncpg.
    missing = [
        pip for module, pip in (("psycopg2", "psycopg2-binary"), ("asyncpg", "asyncpg")) if not _has(module)
    ]
    if missing:
        return f"PostgreSQL drivers not installed: pip install {' '.join(missing)}"
    return None


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class PostgresCluster:
    """
    A throwaway PostgreSQL cluster in ``root`` on a free loopback port (trust auth, loopback only).

    As root, the cluster belongs to Debian's ``postgres`` user (initdb refuses to run as root). The
    postmaster runs in the foreground as a :class:`Service`: its own process group, stopped by process
    id, and terminated with its parent like the Airflow services.
    """

    def __init__(self, root: Path, database: str = "airflow", user: str = "airflow") -> None:
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log_path = root / "postgres.log"
        self.database = database
        self.user = user
        self.port = 0
        self.bin = postgres_bin_dir()
        self.service: Service | None = None
        self.owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd="/", preexec_fn=self._as_owner
        )
        if proc.returncode != 0:
            raise StackError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def _as_owner(self) -> None:
        """In the child: become the cluster's owner (as root), then die with the parent."""
        if self.owner is not None:
            os.setgroups([])
            os.setgid(self.owner.pw_gid)
            os.setuid(self.owner.pw_uid)
        # Set after the user change, which clears it.
        _terminate_with_parent()

    def start(self) -> str:
        reason = postgres_unavailable_reason()
        if reason:
            raise StackError(f"PostgreSQL unavailable: {reason}")
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if self.owner is not None:
            # The postgres user must be able to reach its directories inside our (root-owned) temp tree.
            for parent in [self.root, *self.root.parents]:
                if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o711)
            for path in (self.root, self.sockets):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        self.port = free_port()
        self.service = Service(
            "postgres",
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.sockets),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ],
            dict(os.environ),
            self.log_path,
            cwd=Path("/"),
            preexec=self._as_owner,
        )
        self.service.start()
        deadline = time.monotonic() + 60
        while subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
        ).returncode:
            self.service.check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"PostgreSQL did not accept connections within 60 s; log {self.log_path}")
            time.sleep(0.2)
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database)
        return self.url

    def stop(self) -> None:
        if self.service is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: no waiting for clients.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.service.pid, signal.SIGINT)
            self.service.stop()


# --------------------------------------------------------------------------------------- the stack
@dataclass
class Phase:
    name: str
    seconds: float


@dataclass
class AirflowStack:
    """
    The emulator and the four Airflow services on loopback, in a temporary Airflow home.

    :param database: ``"sqlite"`` or ``"postgres"`` (a throwaway cluster started by the stack)
    :param root: where the Airflow home, logs and database go; a new temporary directory by default
    :param dags_folder: the DAG files the dag-processor parses
    :param username: the SimpleAuthManager admin user (UI and REST API)
    :param emulator_args: extra ``apicore-emulator`` flags (e.g. ``["--job-seconds", "3"]``)
    :param extra_env: more environment for the Airflow services (``AIRFLOW__...`` overrides)
    :param on_phase: called with each finished :class:`Phase` (default: print it)
    """

    database: str = "sqlite"
    root: Path | None = None
    dags_folder: Path = REPO / "dags"
    username: str = "admin"
    emulator_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    on_phase: Callable[[Phase], None] | None = None
    health_timeout: float = 180.0
    #: ``"local"`` (LocalExecutor) or ``"celery"`` (CeleryExecutor, Redis, S3 on moto; needs PostgreSQL)
    executor: str = "local"
    #: Celery workers and triggerers of the distributed stack (one triggerer with LocalExecutor)
    workers: int = 2
    triggerers: int = 2
    #: Task slots of each Celery worker
    worker_concurrency: int = 8
    #: Buckets created on moto before the services start (the log bucket is always created)
    buckets: tuple[str, ...] = ("apicore",)

    def __post_init__(self) -> None:
        if self.database not in ("sqlite", "postgres"):
            raise ValueError(f"database must be 'sqlite' or 'postgres', not {self.database!r}")
        if self.executor not in ("local", "celery"):
            raise ValueError(f"executor must be 'local' or 'celery', not {self.executor!r}")
        if self.executor == "celery" and self.database != "postgres":
            raise ValueError("executor='celery' needs database='postgres' (workers share the metadata DB)")
        if self.executor == "local":
            self.workers, self.triggerers = 0, 1
        self.owns_root = self.root is None
        self.root = Path(self.root or tempfile.mkdtemp(prefix=f"airflow-stack-{self.database}-"))
        self.home = self.root / "airflow-home"
        self.logs = self.root / "logs"
        self.password = "pw-" + secrets.token_hex(8)
        self.emulator_token = "emu-" + secrets.token_hex(12)
        self.api_port = 0
        self.api_url = ""
        self.emulator_url = ""
        self.sql_alchemy_conn = ""
        self.s3_endpoint = ""
        self.broker_url = ""
        self.services: dict[str, Service] = {}
        self.postgres: PostgresCluster | None = None
        self.phases: list[Phase] = []
        self._token: str | None = None
        self._stopped = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            done = Phase(f"{self.database}: {name}", time.monotonic() - started)
            self.phases.append(done)
            (self.on_phase or (lambda p: say(f"{p.name}: {p.seconds:.1f}s")))(done)

    def start(self) -> AirflowStack:
        _stop_on_sigterm()
        _live_stacks.append(self)
        try:
            if self.database == "postgres":
                with self.phase("postgres cluster"):
                    self.postgres = PostgresCluster(self.root / "postgres")
                    self.sql_alchemy_conn = self.postgres.start()
            else:
                self.sql_alchemy_conn = f"sqlite:///{self.home / 'airflow.db'}"
            with self.phase("emulator"):
                self._start_emulator()
            if self.executor == "celery":
                with self.phase("redis + moto (S3)"):
                    self._start_redis()
                    self._start_moto()
            with self.phase("db migrate"):
                self._configure()
                self._migrate()
            with self.phase("services healthy"):
                self._start_services()
                self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        with self.phase("teardown"):
            # Airflow first (its tasks talk to the emulator, S3 and the database), then the emulator,
            # moto and Redis, then the database.
            threads = [
                threading.Thread(target=service.stop)
                for name, service in self.services.items()
                if name not in INFRASTRUCTURE
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for name in INFRASTRUCTURE:
                if name in self.services:
                    self.services[name].stop()
            if self.postgres is not None:
                self.postgres.stop()
        if self in _live_stacks:
            _live_stacks.remove(self)

    # ------------------------------------------------------------------ configuration
    def _configure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        passwords = self.home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({self.username: self.password}))
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                # The scheduler signs task identities, the api-server checks them: one shared secret.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                # Fast turnarounds for a small test stack.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # Scheduled DAGs (e.g. the @daily batch example) run only when triggered, with the
                # caller's params, never on their own with the defaults.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            }
        )
        if self.executor == "celery":
            self.env.update(self._celery_env())
        self.env.update(self.extra_env)

    def _migrate(self) -> None:
        log = self.logs / "db-migrate.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            proc = subprocess.run(
                [AIRFLOW, "db", "migrate"],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
            )
        if proc.returncode != 0:
            raise StackError(f"airflow db migrate failed ({proc.returncode}); log {log}:\n{log_tail(log)}")

    def _start_emulator(self) -> None:
        port_file = self.root / "emulator.port"
        env = {k: v for k, v in os.environ.items() if not k.startswith("APICORE_EMULATOR_")}
        service = Service(
            "emulator",
            [
                EMULATOR,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--tokens",
                self.emulator_token,
                *self.emulator_args,
            ],
            env,
            self.logs / "emulator.log",
        )
        self.services["emulator"] = service
        service.start()
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            service.check_alive()
            if time.monotonic() > deadline:
                tail = log_tail(service.log_path)
                raise StackError(f"the emulator did not listen within 60 s; log:\n{tail}")
            time.sleep(0.1)
        self.emulator_url = f"http://127.0.0.1:{port_file.read_text().strip()}"

    def _start_services(self) -> None:
        if self.executor == "celery":
            self._start_distributed_services()
        else:
            for name in AIRFLOW_SERVICES:
                service = Service(name, [AIRFLOW, name], self.env, self.logs / f"{name}.log")
                self.services[name] = service
                service.start()
        self._write_state()

    # ------------------------------------------------------------------ the distributed stack
    def _celery_env(self) -> dict[str, str]:
        """Configuration shared by every service of the distributed stack."""
        assert self.postgres is not None
        result_backend = (
            f"db+postgresql+psycopg2://{self.postgres.user}@127.0.0.1:{self.postgres.port}/airflow"
        )
        moto_conn = {
            "conn_type": "aws",
            "login": "moto-access-key",
            "password": "moto-secret-key",
            "extra": {"endpoint_url": self.s3_endpoint, "region_name": "us-east-1"},
        }
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "64",
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            # One message per free slot, so queued tasks spread over the workers instead of piling up
            # in the first worker's prefetch buffer.
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL": "False",
            # Task processes talk to the api-server's Execution API; on a busy small machine its answers
            # can take longer than the default 5 s, and a task whose start call times out fails.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            # A killed worker's tasks stop heartbeating: the scheduler fails that try within ~30 s
            # and schedules the retry (default 300 s).
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # A killed triggerer's triggers go to a live one once its heartbeat is this old (default 30 s).
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
            "AIRFLOW__SCHEDULER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
            # Every service reaches S3 (moto) through this connection; task logs are stored there.
            f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": json.dumps(moto_conn),
            "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{LOG_BUCKET}/logs",
            "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": S3_CONN_ID,
        }

    def node_dirs(self, name: str) -> dict[str, Path]:
        """The private directories of one worker or triggerer ("node"): nothing is shared between nodes."""
        base = self.root / "nodes" / name
        return {
            "base": base,
            "home": base / "home",
            "tmp": base / "tmp",
            "work": base / "work",
            "airflow_home": base / "airflow-home",
            "dags": base / "dags",
            "logs": base / "task-logs",
        }

    def _node_env(self, name: str) -> dict[str, str]:
        """A node's environment: its own HOME, TMPDIR, Airflow home, DAG copy, logs and hostname."""
        dirs = self.node_dirs(name)
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        if not any(dirs["dags"].iterdir()):
            shutil.copytree(
                self.dags_folder,
                dirs["dags"],
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        # Airflow asks [core] hostname_callable for the name it records on task instances and jobs.
        (dirs["base"] / "stack_node.py").write_text(
            '"""This node\'s hostname for Airflow."""\n\nimport os\n\n\n'
            "def hostname() -> str:\n"
            '    return os.environ["AIRFLOW_STACK_HOSTNAME"]\n'
        )
        env = dict(self.env)
        env.update(
            {
                "HOME": str(dirs["home"]),
                "TMPDIR": str(dirs["tmp"]),
                "AIRFLOW_HOME": str(dirs["airflow_home"]),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dirs["dags"]),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(dirs["logs"]),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "stack_node.hostname",
                "AIRFLOW_STACK_HOSTNAME": name,
                "PYTHONPATH": str(dirs["base"]),
            }
        )
        return env

    def _start_distributed_services(self) -> None:
        for name in ("api-server", "scheduler", "dag-processor"):
            service = Service(name, [AIRFLOW, name], self.env, self.logs / f"{name}.log")
            self.services[name] = service
            service.start()
        for number in range(1, self.triggerers + 1):
            name = f"triggerer-{number}"
            self.start_node(name, [AIRFLOW, "triggerer"])
        for number in range(1, self.workers + 1):
            name = f"worker-{number}"
            self.start_node(
                name,
                [
                    AIRFLOW,
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"{name}@%h",
                    "--concurrency",
                    str(self.worker_concurrency),
                    "--without-gossip",
                    "--without-mingle",
                ],
            )

    def start_node(self, name: str, cmd: list[str]) -> Service:
        """Start (or start again) a worker or triggerer in its own directories."""
        dirs = self.node_dirs(name)
        env = self._node_env(name)
        service = Service(name, cmd, env, self.logs / f"{name}.log", cwd=dirs["work"])
        self.services[name] = service
        service.start()
        return service

    def restart(self, name: str) -> Service:
        """Start a stopped or killed worker/triggerer again with the same command and directories."""
        return self.start_node(name, self.services[name].cmd)

    def kill(self, name: str) -> None:
        """SIGKILL a service's whole process group at once (a lost host: no cleanup, no goodbye)."""
        service = self.services[name]
        assert service.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.proc.wait(timeout=10)

    def _start_redis(self) -> None:
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(redis):
            raise StackError("redis-server not found: run scripts/install_system_deps.sh as root")
        port = free_port()
        directory = self.root / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        cmd = [redis, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(directory), "--daemonize", "no", "--protected-mode", "yes"]
        service = Service("redis", cmd, dict(os.environ), self.logs / "redis.log", cwd=directory)
        self.services["redis"] = service
        service.start()
        self._wait_port(service, port)
        self.broker_url = f"redis://127.0.0.1:{port}/0"

    def _start_moto(self) -> None:
        port = free_port()
        moto = str(BIN / "moto_server")
        if not os.path.exists(moto):
            raise StackError('moto_server not found: pip install "moto[server]"')
        service = Service(
            "moto", [moto, "-H", "127.0.0.1", "-p", str(port)], dict(os.environ), self.logs / "moto.log"
        )
        self.services["moto"] = service
        service.start()
        self._wait_port(service, port)
        self.s3_endpoint = f"http://127.0.0.1:{port}"
        client = self.s3_client()
        for bucket in (LOG_BUCKET, *self.buckets):
            client.create_bucket(Bucket=bucket)

    def s3_client(self) -> Any:
        """A boto3 S3 client on moto (for setting up and checking objects from the test process)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="moto-access-key",
            aws_secret_access_key="moto-secret-key",
            region_name="us-east-1",
        )

    @staticmethod
    def _wait_port(service: Service, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            service.check_alive()
            with socket.socket() as sock:
                sock.settimeout(1)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise StackError(f"{service.name} did not listen on {port} within {timeout:.0f} s")
            time.sleep(0.1)

    def _write_state(self) -> None:
        state = {
            "root": str(self.root),
            "database": self.database,
            "api_url": self.api_url,
            "emulator_url": self.emulator_url,
            "username": self.username,
            # In stopping order: Airflow, the emulator, then the database.
            "pids": {name: self.services[name].pid for name in reversed(self.services)},
        }
        if self.postgres is not None and self.postgres.service is not None:
            state["pids"]["postgres"] = self.postgres.service.pid
        (self.root / "stack.json").write_text(json.dumps(state, indent=2))

    # ------------------------------------------------------------------ health
    def check_alive(self) -> None:
        for service in self.services.values():
            service.check_alive()

    def health(self) -> dict[str, Any]:
        return requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=10).json()

    def wait_healthy(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the API answers and every component's heartbeat is healthy."""
        deadline = time.monotonic() + (timeout or self.health_timeout)
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                last = self.health()
            except (requests.RequestException, ValueError) as err:
                last = repr(err)
            else:
                if (
                    all((last.get(c) or {}).get("status") == "healthy" for c in HEALTH_COMPONENTS)
                    and self._nodes_ready()
                ):
                    return last
            time.sleep(1)
        raise StackError(f"the stack was not healthy within {timeout or self.health_timeout:.0f} s: {last}")

    def _nodes_ready(self) -> bool:
        """Every Celery worker said "ready" in its log (LocalExecutor stacks have none)."""
        for name, service in self.services.items():
            if name.startswith("worker-"):
                try:
                    text = service.log_path.read_text(errors="replace")
                except OSError:
                    return False
                if f"{name}@" not in text or " ready." not in text:
                    return False
        return True

    def worker_ready(self, name: str, since: int = 0) -> bool:
        """Whether worker ``name`` logged "ready" after byte offset ``since`` of its log."""
        try:
            with open(self.services[name].log_path, "rb") as log:
                log.seek(since)
                return b" ready." in log.read()
        except OSError:
            return False

    # ------------------------------------------------------------------ REST API v2
    def token(self, refresh: bool = False) -> str:
        """A JWT from SimpleAuthManager's ``POST /auth/token`` for the admin user."""
        if self._token is None or refresh:
            response = requests.post(
                f"{self.api_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            if response.status_code != 201:
                raise StackError(f"POST /auth/token answered {response.status_code}: {response.text[:300]}")
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, expect: int | tuple[int, ...] | None = None, **kwargs: Any):
        """Call the REST API with the admin's token; ``expect`` asserts the status code(s)."""
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        response = requests.request(method, f"{self.api_url}{path}", headers=headers, timeout=60, **kwargs)
        if expect is not None:
            wanted = (expect,) if isinstance(expect, int) else expect
            if response.status_code not in wanted:
                raise StackError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response

    def pid(self, name: str) -> int | None:
        return self.services[name].pid if name in self.services else None

    def describe(self) -> str:
        lines = [
            f"root:         {self.root}",
            f"database:     {self.sql_alchemy_conn}",
            f"Airflow UI:   {self.api_url}  (user {self.username!r}, password {self.password!r})",
            f"emulator:     {self.emulator_url}  (API token {self.emulator_token!r})",
        ]
        lines += [f"{name + ':':<13} pid {s.pid}, log {s.log_path}" for name, s in self.services.items()]
        return "\n".join(lines)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@atexit.register
def _stop_live_stacks() -> None:
    for stack in list(_live_stacks):
        stack.stop()


# --------------------------------------------------------------------------------------- CLI
def _cmd_up(args: argparse.Namespace) -> int:
    stack = AirflowStack(
        database="postgres" if args.postgres or args.celery else "sqlite",
        executor="celery" if args.celery else "local",
        root=Path(args.root) if args.root else None,
        emulator_args=["--job-seconds", str(args.job_seconds)],
    )
    # SIGTERM ends the foreground wait like Ctrl-C, so the finally below tears everything down.
    _stop_on_sigterm()
    try:
        stack.start()
        say("ready:\n" + stack.describe())
        conn = {"conn_type": "apicore", "host": stack.emulator_url, "password": stack.emulator_token}
        conn["connection_id"] = "apicore_default"
        stack.api("POST", "/api/v2/connections", json=conn, expect=201)
        say("connection apicore_default -> emulator created; Ctrl-C stops the stack")
        while True:
            stack.check_alive()
            time.sleep(2)
    except KeyboardInterrupt:
        say("stopping")
    finally:
        stack.stop()
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    state = json.loads((Path(args.root) / "stack.json").read_text())
    for name, pid in state["pids"].items():
        if pid and group_exists(pid):
            say(f"stopping {name} (process group {pid})")
            stop_group(pid, 20)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack and keep it running until Ctrl-C")
    up.add_argument("--postgres", action="store_true", help="PostgreSQL metadata database instead of SQLite")
    up.add_argument(
        "--celery",
        action="store_true",
        help="distributed: CeleryExecutor, Redis, 2 workers, 2 triggerers, S3 on moto (PostgreSQL)",
    )
    up.add_argument("--root", help="directory for the Airflow home, logs and database (default: a temp dir)")
    up.add_argument("--job-seconds", type=float, default=3.0, help="emulator: seconds one Describe job runs")
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("down", help="stop the stack recorded in <root>/stack.json")
    down.add_argument("root")
    down.set_defaults(func=_cmd_down)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
