"""
`make test`: the whole test suite, tier by tier, with each tier's duration.

Tiers: unit + end-to-end DAG runs against the emulator, the fault/soak tier, the integration tier
(real Airflow services) and the distributed tier (CeleryExecutor, Redis, S3 on moto). pytest's "no
tests collected" (exit 5) counts as a failure of the tier: a tier that runs nothing proves nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


def main(argv: list[str]) -> int:
    extra = argv[1:]
    summary = []
    passed = failed = 0
    worst = 0
    for name, args in TIERS:
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
    print("\n==== summary ====")
    for name, elapsed, p, f, code in summary:
        print(f"{name:<14} {elapsed:7.1f}s  {p:4d} passed  {f:3d} failed  (exit {code})")
    print(f"total: {passed} passed, {failed} failed")
    return 1 if worst else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
