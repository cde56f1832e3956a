"""
Figure 3: worker-slot seconds while waiting (polling vs deferrable MJDescribeOperator), and how many
task ids one MJTaskTrigger follows with one request per interval.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import Emulator, run_worker, small_images, worker_env


def run(
    scratch: Path,
    say,
    *,
    images: int,
    job_seconds: float,
    poll_interval: float,
    id_counts: list[int],
    follow_seconds: float = 15.0,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    emulator = Emulator.start(scratch / "emulator", job_seconds=job_seconds, concurrency=max(id_counts))
    try:
        env = worker_env(emulator, scratch / "worker-home")
        files = sorted(str(p) for p in small_images(scratch / "images", images).iterdir())

        emulator.reset(job_seconds=job_seconds, concurrency=2 * images, queue_size=100)
        say(f"waiting: {images} polling and {images} deferrable MJDescribeOperator side by side ...")
        styles = run_worker(
            "wait_styles",
            {"images": files, "count": images, "poll_interval": poll_interval},
            env,
            600,
            scratch / "logs" / "wait_styles.log",
        )
        stats = emulator.stats()
        out["styles"] = {
            style: {
                "images": len(entries),
                "slot_seconds_median": statistics.median(e["slot_seconds"] for e in entries),
                "slot_seconds_total": sum(e["slot_seconds"] for e in entries),
                "trigger_seconds_median": statistics.median(e["trigger_seconds"] for e in entries),
                "total_seconds_median": statistics.median(e["total_seconds"] for e in entries),
                "all_have_four_prompts": all(e["prompts"] == 4 for e in entries),
            }
            for style, entries in styles.items()
        }
        out["styles_requests"] = stats["requests"]
        out["job_seconds"], out["poll_interval"] = job_seconds, poll_interval

        capacity = []
        for count in id_counts:
            # Every job runs at once and lasts long enough to be followed over several intervals.
            emulator.reset(job_seconds=follow_seconds, concurrency=count, queue_size=count)
            say(f"waiting: one MJTaskTrigger following {count} task ids ...")
            capacity.append(
                run_worker(
                    "trigger_capacity",
                    {
                        "count": count,
                        "poll_interval": 1.0,
                        "image": files[0],
                        "url": emulator.url,
                        "token": emulator.token,
                    },
                    env,
                    600,
                    scratch / "logs" / f"trigger_{count}.log",
                )
            )
        out["trigger"] = capacity
        out["follow_seconds"] = follow_seconds
    finally:
        emulator.stop()
    return out
