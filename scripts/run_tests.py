"""
`make test`: the whole test suite, tier by tier, with each tier's duration, then the built wheel.

Tiers: unit + end-to-end DAG runs against the emulator, the fault/soak tier, the integration tier
(real Airflow services), the distributed tier (CeleryExecutor, Redis, S3 on moto) and the wheel check
(scripts/check_wheel.py: the built wheel installed into a clean virtualenv runs the demo DAG). pytest's
"no tests collected" (exit 5) counts as a failure of the tier: a tier that runs nothing proves nothing.

Tiers run in stages (:data:`STAGES`); the tiers of one stage run at the same time, each its own process
with its own emulator, Airflow homes, ports and temporary directories: tiers that wait for emulated
jobs much of the time share a stage. Each tier's output goes to ``results/tiers/<tier>.log`` and, line
by line with the tier's name in front, to stdout. ``APICORE_TEST_SERIAL=1`` runs one tier at a time.
Before the first stage, ``scripts/install_system_deps.sh`` runs once in the background (two tiers
running apt-get at once would fail on apt's lock); the service tiers wait for it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / "results" / "tiers"

#: pytest-xdist workers for the unit + end-to-end tier. Its tests mostly wait (emulated jobs, `airflow
#: dags test` subprocesses), so three share two cores well: 685 s against 1,103 s in one process.
WORKERS = os.environ.get("APICORE_TEST_WORKERS", "3")
#: Tests handed out one at a time, in collection order (tests/conftest.py puts the slow ones first),
#: so the quick ones fill the end. xdist's default ("load") hands each worker a quarter of the
#: collection at once, so one worker got most of the `airflow dags test` runs and finished minutes
#: after the others. Under pytest 9 xdist 3.8 does not keep an ``xdist_group`` together: "loadgroup"
#: without reordering is used for its one-test-at-a-time hand-out.
XDIST = ["-n", WORKERS, "--dist", "loadgroup", "--no-loadscope-reorder"]

PYTEST = [sys.executable, "-m", "pytest"]
#: name -> (command, whether pytest's extra arguments apply, whether it needs the system packages)
TIERS: dict[str, tuple[list[str], bool, bool]] = {
    "unit + e2e": (
        [*PYTEST, "-m", "not soak and not integration and not distributed", *XDIST],
        True,
        False,
    ),
    "soak": ([*PYTEST, "-m", "soak"], True, False),
    # Its stacks one pytest process each: the SQLite stack (with the UI checks and the whole-directory
    # comparison), and the PostgreSQL stack then the asset-triggering stack. Their runs mostly wait for
    # emulated jobs, so the two processes overlap well.
    "integration sqlite": ([*PYTEST, "-m", "integration", "-k", "sqlite"], True, True),
    "integration postgres": ([*PYTEST, "-m", "integration", "-k", "not sqlite"], True, True),
    "distributed": ([*PYTEST, "-m", "distributed"], True, True),
}
#: The wheel check, a tier when ``--wheel-check SCRIPT`` is given (``make test`` gives it).
WHEEL = "wheel"

#: Tiers that run at the same time, stage after stage. The unit + e2e tier keeps both cores busy by
#: itself (and its 200-image batch run has a time limit); the two integration stacks wait for emulated
#: jobs much of the time, which leaves room for the wheel check's virtualenv (with the soak beside
#: them too, the UI's grid view once missed its time limit); the distributed tier's fan-out keeps both
#: cores busy by itself.
STAGES: list[list[str]] = [
    ["unit + e2e"],
    ["integration sqlite", "integration postgres", WHEEL],
    ["soak"],
    ["distributed"],
]


class SystemDeps:
    """``scripts/install_system_deps.sh``, started once in the background; ``wait`` before a service tier."""

    def __init__(self) -> None:
        self.log = LOGS / "system-deps.log"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "install_system_deps.sh")],
            stdout=open(self.log, "w"),  # noqa: SIM115 (closed by the child's exit)
            stderr=subprocess.STDOUT,
        )
        self.done = False

    def wait(self) -> None:
        if self.done:
            return
        self.proc.wait()
        self.done = True
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("install_system_deps:"):
                print(f"[system-deps] {line}", flush=True)
        print(f"[system-deps] done after {time.monotonic() - self.started:.0f}s", flush=True)


class Tier:
    """One tier's process; its output is copied to its log and, prefixed, to stdout."""

    def __init__(self, name: str, cmd: list[str], takes_extra: bool, extra: list[str]) -> None:
        self.name = name
        self.cmd = [*cmd, *extra] if takes_extra else list(cmd)
        self.log = LOGS / (re.sub(r"[^a-z0-9]+", "-", name).strip("-") + ".log")
        self.last = ""
        self.code: int | None = None
        self.started = self.ended = 0.0
        self._thread = threading.Thread(target=self._run, name=name)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        with open(self.log, "w") as log:
            proc = subprocess.Popen(
                self.cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                sys.stdout.write(f"[{self.name}] {line}")
                sys.stdout.flush()
                if line.strip():
                    self.last = line
            self.code = proc.wait()
        self.ended = time.monotonic()

    def join(self) -> None:
        self._thread.join()

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def counts(self) -> tuple[int, int]:
        """Passed and failed (or errors) from pytest's last line; the wheel check counts as one test."""
        if self.name == WHEEL:
            return (1, 0) if self.code == 0 else (0, 1)
        passed = sum(int(n) for n in re.findall(r"(\d+) passed", self.last))
        failed = sum(int(n) for n in re.findall(r"(\d+) (?:failed|errors?)", self.last))
        return passed, failed


def main(argv: list[str]) -> int:
    """Run the stages; ``--wheel-check SCRIPT`` adds the wheel check, other arguments go to pytest."""
    extra = argv[1:]
    tiers = dict(TIERS)
    if "--wheel-check" in extra:
        at = extra.index("--wheel-check")
        tiers[WHEEL] = ([sys.executable, str(REPO / extra[at + 1])], False, False)
        del extra[at : at + 2]
    LOGS.mkdir(parents=True, exist_ok=True)
    stages = [[name for name in stage if name in tiers] for stage in STAGES]
    if os.environ.get("APICORE_TEST_SERIAL"):
        stages = [[name] for stage in stages for name in stage]
    started = time.monotonic()
    deps = SystemDeps()
    done: list[Tier] = []
    for stage in stages:
        print(f"\n==== stage: {' | '.join(stage)} ====", flush=True)
        if any(tiers[name][2] for name in stage):
            deps.wait()
        running = [Tier(name, tiers[name][0], tiers[name][1], extra) for name in stage]
        for tier in running:
            tier.start()
        for tier in running:
            tier.join()
            print(f"==== tier {tier.name}: exit {tier.code} after {tier.seconds:.1f}s ====", flush=True)
        done += running
    deps.wait()
    print("\n==== summary ====")
    passed = failed = 0
    for tier in done:
        p, f = tier.counts()
        passed, failed = passed + p, failed + f
        print(
            f"{tier.name:<20} {tier.seconds:7.1f}s  {p:4d} passed  {f:3d} failed  (exit {tier.code})"
            f"  started at +{tier.started - started:.0f}s; log {tier.log.relative_to(REPO)}"
        )
    print(f"total: {passed} passed, {failed} failed; {time.monotonic() - started:.0f}s")
    return 1 if any(tier.code for tier in done) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
