"""
Figures 1 and 2: images/s against the physical limit (concurrency / job duration) and HTTP requests
per image beyond the submission, for every way of describing a directory, in one run against one
emulator.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Emulator, requests_beyond_submit, run_worker, small_images, worker_env


@dataclass
class Settings:
    job_seconds: float
    concurrency: int
    n_batch: int
    n_slow: int
    max_in_flight: int
    poll_interval: float
    airflow: bool = True
    batch_without_headroom: bool = True
    #: A second, higher concurrency at which the batch and the by-hand DAG run again (None: skip).
    high_concurrency: int | None = None

    @property
    def limit(self) -> float:
        return self.concurrency / self.job_seconds

    def emulator_config_at(self, concurrency: int) -> dict[str, Any]:
        return {**self.emulator_config, "concurrency": concurrency}

    @property
    def emulator_config(self) -> dict[str, Any]:
        # The queue is deep enough that nothing is ever refused: the only limit is the concurrency.
        return {
            "job_seconds": self.job_seconds,
            "concurrency": self.concurrency,
            "queue_size": 5000,
            # The emulator starts a queued job and notices a finished one on its scheduler tick; a short
            # tick keeps that quantisation (paid at every job boundary, by every variant) small.
            "tick_seconds": 0.02,
        }


def _timeline(tasks: list[dict[str, Any]]) -> tuple[list[tuple[float, float]], float | None]:
    """Images finished against seconds since the first submission; and the span of all jobs."""
    submits = [t["submitTime"] for t in tasks if t.get("submitTime")]
    finishes = sorted(t["finishTime"] for t in tasks if t.get("finishTime") and t["status"] == "SUCCESS")
    if not submits or not finishes:
        return [], None
    start = min(submits)
    step = max(1, len(finishes) // 200)
    points = [(0.0, 0.0)] + [
        ((f - start) / 1000, i + 1) for i, f in enumerate(finishes) if i % step == 0 or i == len(finishes) - 1
    ]
    return points, (finishes[-1] - start) / 1000


def _row(
    name: str,
    short: str,
    how: str,
    n: int,
    seconds: float,
    emulator: Emulator,
    settings: Settings,
    concurrency: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    stats = emulator.stats()
    timeline, span = _timeline(emulator.tasks())
    rate = n / seconds
    concurrency = concurrency or settings.concurrency
    limit = concurrency / settings.job_seconds
    return {
        "variant": name,
        "short": short,
        "phase": "main" if concurrency == settings.concurrency else "high",
        "concurrency": concurrency,
        "limit": limit,
        "how": how,
        "n": n,
        "seconds": seconds,
        "images_per_s": rate,
        "pct_of_limit": 100 * rate / limit,
        "succeeded": stats["tasks_by_status"].get("SUCCESS", 0),
        "submissions": stats["submissions_accepted"],
        "requests": stats["requests"],
        "requests_beyond_submit_per_image": requests_beyond_submit(stats) / n,
        "max_concurrent_in_progress": stats["max_concurrent_in_progress"],
        "job_span_seconds": span,
        "timeline": timeline,
        **extra,
    }


def run(settings: Settings, scratch: Path, say) -> dict[str, Any]:
    stack = None
    if settings.airflow:
        from benchmarks.airflow_runs import start_stack

        say("throughput: starting the Airflow stack (SQLite, LocalExecutor) and its emulator")
        stack, emulator = start_stack(scratch / "airflow", settings.emulator_config)
        say("throughput: stack up (" + ", ".join(stack.startup_phases) + ")")
    else:
        emulator = Emulator.start(scratch / "emulator", **settings.emulator_config)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        many = small_images(scratch / "images-batch", settings.n_batch)
        few = small_images(scratch / "images-slow", settings.n_slow)
        env = worker_env(emulator, scratch / "worker-home")
        cfg = settings.emulator_config

        def variant(name: str, func, config: dict[str, Any] | None = None) -> None:
            emulator.reset(**(config or cfg))
            say(f"throughput: {name} ...")
            try:
                row = func()
            except Exception as err:  # one broken variant must not lose the others' figures
                errors.append(f"{name}: {err}")
                say(f"throughput: {name} FAILED: {err}")
                return
            rows.append(row)
            say(
                f"throughput: {name}: {row['n']} images in {row['seconds']:.1f}s = "
                f"{row['images_per_s']:.2f}/s ({row['pct_of_limit']:.1f}% of the limit)"
            )

        def floor() -> dict[str, Any]:
            args = {
                "source": str(many),
                "max_in_flight": settings.max_in_flight,
                "poll_interval": settings.poll_interval,
                "url": emulator.url,
                "token": emulator.token,
            }
            result = run_worker("floor", args, env, 1800, scratch / "logs" / "floor.log")
            return _row(
                "asyncio + httpx, no Airflow (floor)",
                "floor: asyncio, no Airflow",
                f"one process; max_in_flight={settings.max_in_flight}, poll {settings.poll_interval:g}s",
                settings.n_batch,
                result["seconds"],
                emulator,
                settings,
            )

        def batch(max_in_flight: int, label: str, short: str, concurrency: int | None = None):
            def go() -> dict[str, Any]:
                args = {
                    "source": str(many),
                    "manifest": str(scratch / f"manifest-{max_in_flight}-{time.time_ns()}.jsonl"),
                    "max_in_flight": max_in_flight,
                    "poll_interval": settings.poll_interval,
                }
                result = run_worker("batch", args, env, 1800, scratch / "logs" / f"batch-{max_in_flight}.log")
                return _row(
                    label,
                    short,
                    f"execute() in a plain process, no scheduler; max_in_flight={max_in_flight}, "
                    f"poll {settings.poll_interval:g}s",
                    settings.n_batch,
                    result["seconds"],
                    emulator,
                    settings,
                    concurrency,
                    peak_rss=result["peak_rss"],
                )

            return go

        variant("floor", floor)
        variant(
            "batch",
            batch(settings.max_in_flight, "MJBatchDescribeOperator (batched)", "batch, in-process"),
        )
        if settings.batch_without_headroom:
            variant(
                "batch, max_in_flight = C",
                batch(
                    settings.concurrency,
                    "MJBatchDescribeOperator, max_in_flight = C",
                    "batch, max_in_flight = C",
                ),
            )
        if stack is not None:
            from benchmarks.airflow_runs import run_dag

            def dag(
                dag_id: str,
                label: str,
                short: str,
                how: str,
                n: int,
                conf: dict[str, Any],
                concurrency: int | None = None,
            ):
                def go() -> dict[str, Any]:
                    result = run_dag(stack, dag_id, conf, timeout=1800)
                    if result["state"] != "success":
                        raise RuntimeError(f"{dag_id} run {result['state']}: {result['task_states']}")
                    return _row(
                        label,
                        short,
                        how,
                        n,
                        result["seconds"],
                        emulator,
                        settings,
                        concurrency,
                        airflow=result,
                    )

                return go

            variant(
                "batch DAG under Airflow",
                dag(
                    "apicore_batch_describe",
                    "MJBatchDescribeOperator in a DAG run (deferrable)",
                    "batch DAG under Airflow",
                    "dags/apicore_batch_describe.py triggered under the scheduler; whole DAG run "
                    f"(queued -> end); max_in_flight={settings.max_in_flight}, "
                    f"poll {settings.poll_interval:g}s",
                    settings.n_batch,
                    {
                        "image_dir": str(many),
                        "manifest_path": str(scratch / "batch-dag" / "manifest.jsonl"),
                        "output_dir": str(scratch / "batch-dag" / "captions"),
                        "max_in_flight": settings.max_in_flight,
                        "poll_interval": settings.poll_interval,
                    },
                ),
            )
            if settings.batch_without_headroom:
                deep = 3 * settings.concurrency
                variant(
                    "batch DAG under Airflow, max_in_flight = 3C",
                    dag(
                        "apicore_batch_describe",
                        "MJBatchDescribeOperator in a DAG run (deferrable), max_in_flight = 3C",
                        "batch DAG, max_in_flight = 3C",
                        f"as above with max_in_flight={deep}",
                        settings.n_batch,
                        {
                            "image_dir": str(many),
                            "manifest_path": str(scratch / "batch-dag-deep" / "manifest.jsonl"),
                            "output_dir": str(scratch / "batch-dag-deep" / "captions"),
                            "max_in_flight": deep,
                            "poll_interval": settings.poll_interval,
                        },
                    ),
                )
            variant(
                "fan-out DAG",
                dag(
                    "apicore_describe_images",
                    "Fan-out: one mapped deferrable MJDescribeOperator per image",
                    "fan-out DAG",
                    "dags/apicore_describe_images.py under the scheduler + LocalExecutor + triggerer; "
                    "whole DAG run (queued -> end); poll 2s",
                    settings.n_slow,
                    {"image_dir": str(few), "output_dir": str(scratch / "fanout-out")},
                ),
            )
            variant(
                "by hand",
                dag(
                    "apicore_by_hand_http",
                    "By hand: HttpOperator submit + HttpSensor poll per image",
                    "by hand (http provider)",
                    "benchmarks/dags/apicore_by_hand_http.py (http provider) under the scheduler + "
                    "LocalExecutor; whole DAG run (queued -> end); poke 2s, mode poke",
                    settings.n_slow,
                    {"image_dir": str(few)},
                ),
            )
        high = settings.high_concurrency
        if high:
            # The by-hand way is bounded by Airflow, not by the API: at a higher limit it stays where it
            # was, while the batch follows the limit. Both run again, side by side, at C = high.
            variant(
                f"batch at C = {high}",
                batch(
                    2 * high,
                    f"MJBatchDescribeOperator (batched), C = {high}",
                    f"batch, in-process, C = {high}",
                    high,
                ),
                settings.emulator_config_at(high),
            )
            if stack is not None:
                variant(
                    f"by hand at C = {high}",
                    dag(
                        "apicore_by_hand_http",
                        f"By hand: HttpOperator submit + HttpSensor poll per image, C = {high}",
                        f"by hand, C = {high}",
                        "as above",
                        settings.n_slow,
                        {"image_dir": str(few)},
                        high,
                    ),
                    settings.emulator_config_at(high),
                )
    finally:
        if stack is not None:
            stack.stop()
        else:
            emulator.stop()
    return {"settings": {**asdict(settings), "limit": settings.limit}, "rows": rows, "errors": errors}
