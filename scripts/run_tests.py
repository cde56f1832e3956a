"""
`make test`: the whole test suite, tier by tier, with each tier's duration.

Tiers: unit + end-to-end DAG runs against the emulator, the fault/soak tier, the integration tier
(real Airflow services) and the distributed tier (CeleryExecutor, Redis, S3 on moto). pytest's "no
tests collected" (exit 5) counts as a failure of the tier: a tier that runs nothing proves nothing.
``--wheel-check scripts/check_wheel.py`` also runs the wheel check, beside the soak tier; its output
and duration are printed when it has finished, and a failed check fails the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

#: pytest-xdist workers for the unit + end-to-end tier. Its tests mostly wait (emulated jobs, `airflow
#: dags test` subprocesses), so three share two cores well: 685 s against 1,103 s in one process.
WORKERS = os.environ.get("APICORE_TEST_WORKERS", "3")

TIERS = [
    ("unit + e2e", ["-m", "not soak and not integration and not distributed", "-n", WORKERS]),
    ("soak", ["-m", "soak"]),
    ("integration", ["-m", "integration"]),
    ("distributed", ["-m", "distributed"]),
]


#: ``--wheel-check SCRIPT`` (what ``make test`` passes: scripts/check_wheel.py) runs the wheel check
#: beside these tiers and waits for it before the next one. The soak tier uses about a third of a core
#: and the wheel check under one (its install mostly waits on the disk), so together on 2 cores they
#: took 167 s against 75 s + 161 s one after the other. The real Airflow services of the integration
#: and distributed tiers keep the two cores to themselves (their UI and timing checks need them).
WHEEL_CHECK_WITH = ("soak",)


class Background:
    """A command run beside the tiers; its output is printed when it has finished."""

    def __init__(self, name: str, cmd: list[str]) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by finish())
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def finish(self) -> tuple[float, int]:
        code = self.proc.wait()
        elapsed = time.monotonic() - self.started
        print(f"\n==== {self.name} (ran beside the tiers above) ====", flush=True)
        self.log.seek(0)
        sys.stdout.write(self.log.read())
        sys.stdout.flush()
        self.log.close()
        return elapsed, code


def main(argv: list[str]) -> int:
    extra = argv[1:]
    wheel_check = None
    if "--wheel-check" in extra:
        at = extra.index("--wheel-check")
        wheel_check = extra[at + 1]
        del extra[at : at + 2]
    summary = []
    background: Background | None = None
    passed = failed = 0
    worst = 0
    for name, args in TIERS:
        if background is not None and name not in WHEEL_CHECK_WITH:
            elapsed, code = background.finish()
            summary.append(("wheel check", elapsed, 0, 0, code))
            worst = worst or code
            background = None
        if wheel_check and name in WHEEL_CHECK_WITH and background is None:
            background = Background("wheel check", [sys.executable, wheel_check])
            wheel_check = None
        print(f"\n==== tier: {name} ====", flush=True)
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", *args, *extra], stdout=subprocess.PIPE, text=True
        )
        last = ""
        for line in proc.stdout:
            sys.stdout.write(line)
            if line.strip():
                last = line
        code = proc.wait()
        elapsed = time.monotonic() - started
        p = sum(int(n) for n in re.findall(r"(\d+) passed", last))
        f = sum(int(n) for n in re.findall(r"(\d+) (?:failed|errors?)", last))
        passed += p
        failed += f
        worst = worst or code
        summary.append((name, elapsed, p, f, code))
    if background is not None:
        elapsed, code = background.finish()
        summary.append(("wheel check", elapsed, 0, 0, code))
        worst = worst or code
    if wheel_check:  # no tier to run it beside
        started = time.monotonic()
        code = subprocess.call([sys.executable, wheel_check])
        summary.append(("wheel check", time.monotonic() - started, 0, 0, code))
        worst = worst or code
    print("\n==== summary ====")
    for name, elapsed, p, f, code in summary:
        print(f"{name:<14} {elapsed:7.1f}s  {p:4d} passed  {f:3d} failed  (exit {code})")
    print(f"total: {passed} passed, {failed} failed")
    return 1 if worst else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
