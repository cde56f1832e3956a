"""
The deferrable batch under the real scheduler against the physical limit, as N grows, side by side
with the same operator's ``execute()`` in a plain process.

One Airflow stack (SQLite, LocalExecutor, scheduler, triggerer; ``benchmarks/airflow_runs.py``) and its
emulator: every job takes ``--job-seconds`` and at most ``--concurrency`` run at once, so no client can
describe more than C / D images a second. For each N in ``--sizes`` the in-process batch and the
``apicore_batch_describe`` DAG run (deferrable, triggered through the REST API) describe the same N
images, one after the other, with the same settings. A DAG run pays a fixed cost the in-process call
does not (scheduling the run, starting the task, resuming it after each deferral, the
``write_captions`` task); the table shows how that cost is amortised as N grows.

    .venv/bin/python benchmarks/scheduler_batch.py                  # N = 1,000 and 3,000 (about 20 min)
    .venv/bin/python benchmarks/scheduler_batch.py --sizes 500      # a quick look

prints a table and writes ``benchmarks/scheduler_batch_results.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.airflow_runs import _quote, run_dag, start_stack  # noqa: E402
from benchmarks.common import machine_info, run_worker, scratch_dir, small_images, worker_env  # noqa: E402
from benchmarks.throughput import Settings, _timeline  # noqa: E402

OUTPUT = REPO / "benchmarks" / "scheduler_batch_results.md"


def say(message: str) -> None:
    print(f"[scheduler-batch {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _describe_task(stack, run_id: str) -> dict[str, Any]:
    """The describe task's own start and end, and how often it was started (resumes included)."""
    path = f"/api/v2/dags/apicore_batch_describe/dagRuns/{_quote(run_id)}/taskInstances/describe_directory"
    ti = stack.api("GET", path, expect=200).json()
    start, end = ti.get("start_date"), ti.get("end_date")
    seconds = None
    if start and end:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return {"task_seconds": seconds, "try_number": ti.get("try_number")}


def _row(n: int, variant: str, seconds: float, emulator, limit: float, **extra: Any) -> dict[str, Any]:
    stats = emulator.stats()
    _, span = _timeline(emulator.tasks())
    rate = n / seconds
    row = {
        "n": n,
        "variant": variant,
        "seconds": seconds,
        "images_per_s": rate,
        "pct": 100 * rate / limit,
        "span": span,
        "outside_span": None if span is None else seconds - span,
        "succeeded": stats["tasks_by_status"].get("SUCCESS", 0),
        "submissions": stats["submissions_accepted"],
        **extra,
    }
    shown = "?" if span is None else f"{span:.1f}"
    say(f"N={n} {variant}: {seconds:.1f}s, {rate:.2f}/s = {row['pct']:.1f}% of the limit, job span {shown}s")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,3000", help="comma-separated N")
    parser.add_argument("--job-seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=200, help="2C: a whole wave queued upstream")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
    settings = Settings(
        job_seconds=args.job_seconds,
        concurrency=args.concurrency,
        n_batch=max(sizes),
        n_slow=0,
        max_in_flight=args.max_in_flight,
        poll_interval=args.poll_interval,
    )
    limit = settings.limit
    scratch = scratch_dir("apicore-bench-scheduler-")
    started = time.time()
    info = machine_info()
    say(f"starting the Airflow stack in {scratch}")
    stack, emulator = start_stack(scratch / "airflow", settings.emulator_config)
    rows: list[dict[str, Any]] = []
    try:
        env = worker_env(emulator, scratch / "worker-home")
        for n in sizes:
            images = small_images(scratch / f"images-{n}", n)

            emulator.reset(**settings.emulator_config)
            say(f"N={n}: execute() in a plain process ...")
            result = run_worker(
                "batch",
                {
                    "source": str(images),
                    "manifest": str(scratch / f"inprocess-{n}" / "manifest.jsonl"),
                    "max_in_flight": args.max_in_flight,
                    "poll_interval": args.poll_interval,
                },
                env,
                3600,
                scratch / "logs" / f"batch-{n}.log",
            )
            rows.append(_row(n, "execute() in a plain process", result["seconds"], emulator, limit))

            emulator.reset(**settings.emulator_config)
            say(f"N={n}: the deferrable DAG run under the scheduler ...")
            dag = run_dag(
                stack,
                "apicore_batch_describe",
                {
                    "image_dir": str(images),
                    "manifest_path": str(scratch / f"dag-{n}" / "manifest.jsonl"),
                    "output_dir": str(scratch / f"dag-{n}" / "captions"),
                    "max_in_flight": args.max_in_flight,
                    "poll_interval": args.poll_interval,
                },
                timeout=3600,
            )
            if dag["state"] != "success":
                raise RuntimeError(f"N={n}: the DAG run ended {dag['state']}: {dag['task_states']}")
            task = _describe_task(stack, dag["run_id"])
            rows.append(
                _row(
                    n,
                    "deferrable DAG run (queued -> end)",
                    dag["seconds"],
                    emulator,
                    limit,
                    task_seconds=task["task_seconds"],
                    tries=task["try_number"],
                )
            )
    finally:
        stack.stop()

    header = (
        "| N | variant | seconds | images/s | % of limit | job span (s) | outside the job span (s) "
        "| describe task start -> end (s) | succeeded | submissions |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        span = "" if r["span"] is None else f"{r['span']:.1f}"
        outside = "" if r["outside_span"] is None else f"{r['outside_span']:.1f}"
        task_s = "" if r.get("task_seconds") is None else f"{r['task_seconds']:.1f}"
        lines.append(
            f"| {r['n']:,} | {r['variant']} | {r['seconds']:.1f} | {r['images_per_s']:.2f} "
            f"| {r['pct']:.1f} % | {span} | {outside} | {task_s} | {r['succeeded']:,} "
            f"| {r['submissions']:,} |"
        )
    table = header + "\n".join(lines) + "\n"
    print(table)
    minutes = (time.time() - started) / 60
    text = (
        "# The deferrable batch under the real scheduler, against N\n\n"
        f"`python benchmarks/scheduler_batch.py --sizes {args.sizes}` — "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {minutes:.1f} minutes; "
        f"{info.get('nproc')} cores, load average at start {info.get('load average at start', '?')}.\n\n"
        f"Emulator: jobs of D = {args.job_seconds:g} s, at most C = {args.concurrency} at once: the limit is "
        f"C / D = {limit:g} images/s. max_in_flight = {args.max_in_flight}, poll {args.poll_interval:g} s. "
        "For each N, both variants ran one after the other on the same stack and emulator. The DAG run is "
        "timed as Airflow records it, from `queued_at` to `end_date` (scheduling, the describe task with its "
        "deferrals and resumes, `write_captions`); the in-process variant is `execute()` alone. Job span: "
        "first submission to the last job finished, as the emulator saw them.\n\n" + table
    )
    args.output.write_text(text)
    say(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
