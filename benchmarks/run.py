"""
Run the benchmarks against the APICore emulator and write benchmarks/RESULTS.md (+ SVG plots).

    .venv/bin/python benchmarks/run.py                       # everything (about 20 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick               # small N, a few minutes
    .venv/bin/python benchmarks/run.py --only overhead,memory
    .venv/bin/python benchmarks/run.py --quick --no-airflow  # no Airflow services: about a minute

Figures: ``throughput`` (1 and 2), ``waiting`` (3), ``memory`` (4), ``overhead`` (5). Every run writes
the figures it measured to RESULTS.md (and the raw numbers to results.json) in ``--output-dir``.
The by-hand baseline needs ``apache-airflow-providers-http``; it is installed into this virtualenv when
missing (benchmark only: the provider does not depend on it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import memory, overhead, report, throughput, waiting
from benchmarks.common import BENCH, machine_info, scratch_dir

FIGURES = ("throughput", "waiting", "memory", "overhead")
MB = 1_000_000
QUICK_OUTPUT = Path("/tmp/apicore-bench-quick")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_http_provider() -> None:
    """Install Airflow's http provider (for the by-hand baseline only), pinned to the installed Airflow."""
    if importlib.util.find_spec("airflow.providers.http") is not None:
        return
    from importlib.metadata import version

    pin = f"apache-airflow=={version('apache-airflow')}"
    say(f"installing apache-airflow-providers-http for the by-hand baseline ({pin} kept)")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "apache-airflow-providers-http", pin], check=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated subset of {FIGURES}")
    parser.add_argument("--quick", action="store_true", help="small N everywhere: a check, not a figure")
    parser.add_argument("--no-airflow", action="store_true", help="skip the variants that need the services")
    parser.add_argument(
        "--output-dir",
        help="where RESULTS.md, results.json and the plots go (default: benchmarks/ for a full run, "
        "/tmp/apicore-bench-quick for --quick, so a check never overwrites the committed results)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, manifests)")
    parser.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite RESULTS.md and the plots from a results.json of an earlier run",
    )
    args = parser.parse_args(argv)
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(only) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    out = Path(args.output_dir or (QUICK_OUTPUT if args.quick else BENCH))
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        source = Path(args.render)
        results = json.loads(source.read_text())
        finished = time.gmtime(source.stat().st_mtime)
        results.setdefault("finished_utc", time.strftime("%Y-%m-%d %H:%M UTC", finished))
        say(f"wrote {report.write(results, out)} from {source}")
        return 0
    scratch = scratch_dir("apicore-bench-")
    command = (
        "python benchmarks/run.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    )
    results: dict = {"command": command, "quick": args.quick, "machine": machine_info(), "figures": {}}
    say(f"scratch directory {scratch}")
    started = time.monotonic()
    try:
        if "throughput" in only:
            airflow = not args.no_airflow
            if airflow:
                ensure_http_provider()
            settings = (
                throughput.Settings(
                    job_seconds=10,
                    concurrency=20,
                    n_batch=60,
                    n_slow=10,
                    max_in_flight=40,
                    poll_interval=2,
                    airflow=airflow,
                    batch_without_headroom=False,
                )
                if args.quick
                else throughput.Settings(
                    job_seconds=10,
                    concurrency=100,
                    n_batch=1000,
                    n_slow=150,
                    max_in_flight=200,
                    poll_interval=2,
                    airflow=airflow,
                    high_concurrency=300,
                )
            )
            results["figures"]["throughput"] = throughput.run(settings, scratch / "throughput", say)
        if "waiting" in only:
            results["figures"]["waiting"] = waiting.run(
                scratch / "waiting",
                say,
                images=2 if args.quick else 5,
                job_seconds=4 if args.quick else 10,
                poll_interval=1 if args.quick else 2,
                id_counts=[100] if args.quick else [1000, 5000],
            )
        if "memory" in only:
            grid = (
                [(10, MB), (40, MB)]
                if args.quick
                else [(100, MB), (1000, MB), (100, 5 * MB), (1000, 5 * MB), (10000, 1000)]
            )
            results["figures"]["memory"] = memory.run(scratch / "memory", say, grid=grid)
        if "overhead" in only:
            results["figures"]["overhead"] = overhead.run(
                scratch / "overhead", say, rounds=20 if args.quick else 150
            )
    finally:
        results["seconds"] = time.monotonic() - started
        results["finished_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        report.write(results, out)
        say(f"wrote {out / 'RESULTS.md'} after {results['seconds'] / 60:.1f} min")
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
