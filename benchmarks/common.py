"""What every benchmark shares: the emulator over HTTP, image files, worker subprocesses, machine facts."""

from __future__ import annotations

import json
import os
import platform
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
BIN = Path(sys.executable).parent
EMULATOR_CLI = str(BIN / "apicore-emulator")


# --------------------------------------------------------------------------------------- emulator
class Emulator:
    """
    A running emulator reached over HTTP: its API base URL and token, plus the admin endpoints.

    Either one the harness starts (:meth:`start`, a subprocess of the ``apicore-emulator`` CLI, so its
    CPU is not the measured process's) or the one an :class:`AirflowStack` started.
    """

    def __init__(self, url: str, token: str, proc: subprocess.Popen | None = None) -> None:
        self.url = url
        self.token = token
        self.proc = proc
        self.session = requests.Session()
        self.session.trust_env = False  # loopback admin calls must not go through a proxy

    @classmethod
    def start(cls, root: Path, token: str = "bench-token", **config: Any) -> Emulator:
        root.mkdir(parents=True, exist_ok=True)
        port_file = root / "emulator.port"
        port_file.unlink(missing_ok=True)
        args = [EMULATOR_CLI, "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)]
        args += ["--tokens", token, "--log-level", "warning"]
        for name, value in config.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        log = open(root / "emulator.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the emulator did not start; see {root / 'emulator.log'}")
            time.sleep(0.05)
        return cls(f"http://127.0.0.1:{port_file.read_text().strip()}", token, proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stats(self) -> dict[str, Any]:
        return self.session.get(f"{self.url}/_emulator/stats", timeout=30).json()

    def reset(self, **config: Any) -> None:
        """Forget every task and counter, then apply ``config`` (faults always off)."""
        self.session.post(f"{self.url}/_emulator/reset", timeout=60).raise_for_status()
        response = self.session.put(f"{self.url}/_emulator/config", json={**config, "faults": {}}, timeout=30)
        response.raise_for_status()

    def tasks(self) -> list[dict[str, Any]]:
        """Every task object the emulator holds (``GET /_emulator/tasks``)."""
        return self.session.get(f"{self.url}/_emulator/tasks", timeout=120).json()

    def conn_env(self, conn_id: str = "apicore_default") -> dict[str, str]:
        conn = {"conn_type": "apicore", "host": self.url, "password": self.token}
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}


def requests_beyond_submit(stats: dict[str, Any]) -> int:
    """API requests other than submissions (fetch, list-by-condition, anything else) the emulator saw."""
    counts = stats["requests"]
    return sum(n for endpoint, n in counts.items() if endpoint != "submit")


# --------------------------------------------------------------------------------------- images
def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid RGB PNG of one colour (standard library only)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def small_images(directory: Path, count: int) -> Path:
    """``count`` distinct 8x8 PNGs (about 90 bytes each): cheap to send, decode and describe."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rgb = (i % 256, (i // 256) % 256, (i * 7) % 256)
        (directory / f"img{i:05d}.png").write_bytes(png(8, 8, rgb))
    return directory


#: A GIF header of a 4x4 image: the emulator reads the type and size from it and takes the colours
#: from the digest, so the rest of a large file can be noise it never decodes.
GIF_HEADER = b"GIF89a" + struct.pack("<HH", 4, 4) + b"\x00\x00\x00"


def large_images(directory: Path, count: int, size: int, seed: int = 0) -> Path:
    """
    ``count`` distinct files of ``size`` bytes: a GIF header, a unique counter, then random bytes.

    One block of noise is shared (writing 5 GB of fresh randomness would dominate the run); the
    counter makes every file's SHA-256 different, so none is deduplicated and each is really sent.
    """
    directory.mkdir(parents=True, exist_ok=True)
    noise = random.Random(seed).randbytes(size)
    for i in range(count):
        head = GIF_HEADER + f"{i:016d}".encode()
        (directory / f"big{i:05d}.gif").write_bytes(head + noise[len(head) :])
    return directory


# --------------------------------------------------------------------------------------- processes
def worker_env(emulator: Emulator | None, home: Path) -> dict[str, str]:
    """Environment of a worker subprocess: its own Airflow home, the emulator as ``apicore_default``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    if emulator is not None:
        env.update(emulator.conn_env())
    return env


def run_worker(
    command: str, args: dict[str, Any], env: dict[str, str], timeout: float, log: Path
) -> dict[str, Any]:
    """Run ``benchmarks/worker.py <command>`` with JSON arguments; return the JSON it prints last."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, str(BENCH / "worker.py"), command, json.dumps(args)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=timeout,
        )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"worker {command} failed ({proc.returncode}); log {log}:\n{tail}")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------- facts
def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "cpu": cpu,
        "python": platform.python_version(),
        "airflow": pkg("apache-airflow"),
        "apache-airflow-providers-http": pkg("apache-airflow-providers-http"),
        "os": platform.platform(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def mem_available_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def scratch_dir(prefix: str) -> Path:
    """A fresh directory under the largest scratch space (/tmp here)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
