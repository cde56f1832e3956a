"""Figure 5: the hook's submit path against a bare ``requests.post`` of the same payload, per call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import Emulator, large_images, run_worker, small_images, worker_env


def run(scratch: Path, say, *, rounds: int) -> dict[str, Any]:
    small = sorted(small_images(scratch / "small", 1).iterdir())[0]
    large = sorted(large_images(scratch / "large", 1, 1_000_000).iterdir())[0]
    emulator = Emulator.start(scratch / "emulator", job_seconds=0.01, concurrency=64, queue_size=100000)
    try:
        say(f"overhead: {rounds} rounds of every submit variant, small and 1 MB images ...")
        result = run_worker(
            "overhead",
            {
                "url": emulator.url,
                "token": emulator.token,
                "rounds": rounds,
                "images": {f"{small.stat().st_size} B PNG": str(small), "1 MB image": str(large)},
                "log": str(scratch / "hook.log"),
            },
            worker_env(emulator, scratch / "worker-home"),
            1800,
            scratch / "logs" / "overhead.log",
        )
    finally:
        emulator.stop()
    return {"rounds": rounds, "results": result}
