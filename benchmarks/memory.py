"""
Figure 4: peak memory (RSS) of the process running MJBatchDescribeOperator against the number and the
size of the images.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from benchmarks.common import Emulator, large_images, mem_available_gib, run_worker, worker_env

MB = 1_000_000


def run(scratch: Path, say, *, grid: list[tuple[int, int]]) -> dict[str, Any]:
    """``grid``: (number of images, bytes per image) pairs, measured in that order."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    scratch.mkdir(parents=True, exist_ok=True)
    for count, size in grid:
        # The emulator keeps every submitted image in memory: it needs count x size of RAM.
        need = count * size / 2**30 * 1.5 + 2
        if mem_available_gib() < need:
            skipped.append(
                f"{count} x {size / MB:g} MB: needs ~{need:.0f} GiB free, {mem_available_gib():.1f} available"
            )
            continue
        if shutil.disk_usage(scratch).free < count * size * 1.2 + 2**30:
            skipped.append(f"{count} x {size / MB:g} MB: not enough free disk under {scratch}")
            continue
        emulator = Emulator.start(
            scratch / f"emulator-{count}-{size}", job_seconds=0.05, concurrency=32, queue_size=5000
        )
        source = scratch / f"images-{count}-{size}"
        try:
            say(f"memory: writing {count} files of {size / MB:g} MB ...")
            large_images(source, count, size)
            say(f"memory: batch over {count} x {size / MB:g} MB ...")
            result = run_worker(
                "batch",
                {
                    "source": str(source),
                    "manifest": str(scratch / f"manifest-{count}-{size}.jsonl"),
                    "max_in_flight": 10,
                    "poll_interval": 0.2,
                    "sample_period": 0.2,
                },
                worker_env(emulator, scratch / "worker-home"),
                1800,
                scratch / "logs" / f"memory-{count}-{size}.log",
            )
            stats = emulator.stats()
        finally:
            emulator.stop()
            shutil.rmtree(source, ignore_errors=True)
        rows.append(
            {
                "images": count,
                "image_bytes": size,
                "total_bytes": count * size,
                "seconds": result["seconds"],
                "baseline_rss": result["baseline_rss"],
                "peak_rss": result["peak_rss"],
                "growth": result["peak_rss"] - result["baseline_rss"],
                "succeeded": result["summary"]["succeeded"],
                "submissions": stats["submissions_accepted"],
                "samples": result["samples"],
            }
        )
        say(f"memory: {count} x {size / MB:g} MB: peak RSS {result['peak_rss'] / 2**20:.0f} MiB")
    return {"rows": rows, "skipped": skipped}
