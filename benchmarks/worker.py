"""
The measured side of each benchmark, run in its own process: ``python benchmarks/worker.py CMD JSON``.

Each command prints one JSON line (its figures) on stdout. A fresh process per measurement keeps the
harness's own memory and CPU out of the numbers; the emulator runs in yet another process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _context(dag_id: str = "bench", run_id: str = "manual__bench") -> dict[str, Any]:
    ti = SimpleNamespace(dag_id=dag_id, run_id=run_id, xcom_push=lambda key, value: None)
    return {"ti": ti}


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class RssSampler(threading.Thread):
    """Samples this process's RSS every ``period`` seconds (for the memory-over-time picture)."""

    def __init__(self, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self.started_at = time.monotonic()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((round(time.monotonic() - self.started_at, 2), _rss()))
            self.stopped.wait(self.period)


# --------------------------------------------------------------------------------------- batch
def cmd_batch(args: dict[str, Any]) -> dict[str, Any]:
    """MJBatchDescribeOperator.execute in this process (no scheduler): wall time and memory."""
    from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator

    op = MJBatchDescribeOperator(
        task_id="describe_directory",
        source=args["source"],
        manifest_path=args["manifest"],
        max_in_flight=args["max_in_flight"],
        poll_interval=args["poll_interval"],
        timeout=args.get("timeout", 1800),
        flush_interval=args.get("flush_interval", 30.0),
    )
    baseline = _rss()
    sampler = RssSampler(args.get("sample_period", 0.25))
    sampler.start()
    started_wall = time.time()
    started = time.monotonic()
    summary = op.execute(_context())
    seconds = time.monotonic() - started
    sampler.stopped.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "seconds": seconds,
        "started_wall": started_wall,
        "summary": summary,
        "baseline_rss": baseline,
        "peak_rss": peak,
        "sampled_peak_rss": max(rss for _, rss in sampler.samples),
        "samples": sampler.samples[:: max(1, len(sampler.samples) // 400)],
    }


# --------------------------------------------------------------------------------------- floor
MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


async def _floor(args: dict[str, Any]) -> dict[str, Any]:
    """
    The same job as the batch operator with nothing but asyncio and httpx: read, encode, submit while
    fewer than ``max_in_flight`` jobs are upstream, follow them all with one list request per interval.
    """
    import httpx

    paths = sorted(p for p in Path(args["source"]).iterdir() if p.is_file())
    queue = list(reversed(paths))
    limit, interval = int(args["max_in_flight"]), float(args["poll_interval"])
    pending: set[str] = set()
    succeeded = failed = 0
    headers = {"Authorization": f"Bearer {args['token']}"}
    async with httpx.AsyncClient(
        base_url=args["url"], headers=headers, timeout=60, trust_env=False
    ) as client:

        async def submit(path: Path) -> None:
            data = path.read_bytes()
            mime = next(m for magic, m in MIME.items() if data.startswith(magic))
            body = {"base64": f"data:{mime};base64,{base64.b64encode(data).decode()}"}
            answer = (await client.post("/mj/submit/describe", json=body)).json()
            if answer["code"] not in (1, 21, 22):
                raise RuntimeError(f"submission refused: {answer}")
            pending.add(str(answer["result"]))

        started_wall = time.time()
        started = time.monotonic()
        next_poll = started + interval
        while queue or pending:
            free = limit - len(pending)
            batch = [queue.pop() for _ in range(min(free, len(queue)))]
            # A few submissions at a time: concurrent, without opening hundreds of connections.
            for i in range(0, len(batch), 16):
                await asyncio.gather(*(submit(p) for p in batch[i : i + 16]))
            await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
            next_poll = time.monotonic() + interval
            if pending:
                tasks = (
                    await client.post("/mj/task/list-by-condition", json={"ids": sorted(pending)})
                ).json()
                for task in tasks:
                    if task["status"] in ("SUCCESS", "FAILURE", "CANCEL"):
                        pending.discard(task["id"])
                        succeeded += task["status"] == "SUCCESS"
                        failed += task["status"] != "SUCCESS"
        seconds = time.monotonic() - started
    return {"seconds": seconds, "started_wall": started_wall, "succeeded": succeeded, "failed": failed}


def cmd_floor(args: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_floor(args))


# --------------------------------------------------------------------------------------- waiting
def cmd_wait_styles(args: dict[str, Any]) -> dict[str, Any]:
    """
    Worker-slot seconds of MJDescribeOperator per image: polling in the worker vs deferring.

    ``count`` images of each style run at the same time in threads. A polling operator holds its
    worker for the whole of ``execute``; a deferrable one for ``execute`` up to ``TaskDeferred`` and
    for ``execute_complete``; the wait in between runs the trigger, as a triggerer would.
    """
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_provider_apicore.operators.describe import MJDescribeOperator

    count, interval = int(args["count"]), float(args["poll_interval"])
    results: dict[str, list[dict[str, float]]] = {"polling": [], "deferrable": []}
    lock = threading.Lock()

    def run(style: str, image: str, index: int) -> None:
        op = MJDescribeOperator(
            task_id=f"describe_{style}_{index}",
            image=image,
            wait_for_completion=True,
            deferrable=style == "deferrable",
            poll_interval=interval,
            timeout=600,
        )
        context = _context()
        started = time.monotonic()
        slot = 0.0
        try:
            result = op.execute(context)
            slot = time.monotonic() - started
        except TaskDeferred as deferred:
            slot = time.monotonic() - started
            waited = time.monotonic()
            event = asyncio.run(_first_event(deferred.trigger))
            waited = time.monotonic() - waited
            resumed = time.monotonic()
            result = getattr(op, deferred.method_name)(context, event)
            slot += time.monotonic() - resumed
            entry = {"slot_seconds": slot, "trigger_seconds": waited}
        else:
            entry = {"slot_seconds": slot, "trigger_seconds": 0.0}
        entry["total_seconds"] = time.monotonic() - started
        entry["prompts"] = len(result["prompts"])
        with lock:
            results[style].append(entry)

    threads = [
        threading.Thread(target=run, args=(style, image, i))
        for i, image in enumerate(args["images"][:count])
        for style in ("polling", "deferrable")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


async def _first_event(trigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise RuntimeError("the trigger yielded no event")


async def _trigger_capacity(args: dict[str, Any]) -> dict[str, Any]:
    import httpx

    from airflow_provider_apicore.hooks.apicore import ApicoreHook
    from airflow_provider_apicore.triggers.task import MJTaskTrigger

    count, interval = int(args["count"]), float(args["poll_interval"])
    data = Path(args["image"]).read_bytes()
    body = {"base64": "data:image/png;base64," + base64.b64encode(data).decode()}
    headers = {"Authorization": f"Bearer {args['token']}"}
    ids: list[str] = []
    async with httpx.AsyncClient(
        base_url=args["url"], headers=headers, timeout=60, trust_env=False
    ) as client:

        async def submit() -> None:
            answer = (await client.post("/mj/submit/describe", json=body)).json()
            ids.append(str(answer["result"]))

        for i in range(0, count, 32):
            await asyncio.gather(*(submit() for _ in range(min(32, count - i))))
        before = (await client.get("/_emulator/stats")).json()["requests"]

        # Time each poll the trigger makes (one alist_tasks call per interval).
        polls: list[float] = []
        original = ApicoreHook.alist_tasks

        async def timed(self, task_ids):
            started = time.monotonic()
            try:
                return await original(self, task_ids)
            finally:
                polls.append(time.monotonic() - started)

        ApicoreHook.alist_tasks = timed
        started = time.monotonic()
        event = await _first_event(MJTaskTrigger(task_ids=ids, poll_interval=interval))
        seconds = time.monotonic() - started
        ApicoreHook.alist_tasks = original
        after = (await client.get("/_emulator/stats")).json()["requests"]
    return {
        "ids": count,
        "seconds": seconds,
        "poll_rounds": len(polls),
        "list_requests": after["list"] - before["list"],
        "other_requests": sum(after[k] - before[k] for k in after if k != "list"),
        "poll_median_ms": statistics.median(polls) * 1000,
        "poll_max_ms": max(polls) * 1000,
        "event_status": event["status"],
        "event_tasks": len(event["tasks"]),
        "event_bytes": len(json.dumps(event)),
    }


def cmd_trigger_capacity(args: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_trigger_capacity(args))


# --------------------------------------------------------------------------------------- overhead
def cmd_overhead(args: dict[str, Any]) -> dict[str, Any]:
    """
    Per-call cost of the hook's submit path next to a bare ``requests.post`` of the same payload.

    Every round times each variant once, in a shuffled order, so drift and noise hit all alike. The
    hook's log lines go to a file at INFO, as they would in a task.
    """
    logging.basicConfig(filename=args["log"], level=logging.INFO, force=True)
    return {
        label: _submit_variants(image, args["url"], args["token"], int(args["rounds"]))
        for label, image in args["images"].items()
    }


def _submit_variants(image: str, base_url: str, token: str, rounds: int) -> dict[str, Any]:
    import requests

    from airflow_provider_apicore.hooks.apicore import ApicoreHook
    from airflow_provider_apicore.operators.describe import build_describe_payload
    from airflow_provider_apicore.schemas import validate_describe_payload

    url = base_url + "/mj/submit/describe"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    payload, _ = build_describe_payload(image)
    hook = ApicoreHook()
    hook.submit_describe(payload)  # warm up: connection read, schema compiled, pool open
    session = requests.Session()
    session.trust_env = False
    session.post(url, json=payload, headers=headers, timeout=60).raise_for_status()

    def bare_post() -> None:
        requests.post(url, json=payload, headers=headers, timeout=60).raise_for_status()

    def session_post() -> None:
        session.post(url, json=payload, headers=headers, timeout=60).raise_for_status()

    def hook_unvalidated() -> None:
        hook.submit_describe(payload, validate=False)

    def hook_submit() -> None:
        hook.submit_describe(payload)

    def operator_path() -> None:
        built, _ = build_describe_payload(image)
        hook.submit_describe(built, validate=False)

    variants = {
        "requests.post (new connection)": bare_post,
        "requests.Session.post (keep-alive)": session_post,
        "hook.submit_describe(validate=False)": hook_unvalidated,
        "hook.submit_describe (validated)": hook_submit,
        "read+encode+validate+submit (operator path)": operator_path,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            started = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - started)
    # The cost of validation alone, without the network.
    started = time.perf_counter()
    for _ in range(rounds):
        validate_describe_payload(payload)
    validate_only = (time.perf_counter() - started) / rounds
    hook.close()
    session.close()
    return {
        "payload_bytes": len(json.dumps(payload)),
        "median_ms": {name: statistics.median(t) * 1000 for name, t in times.items()},
        "p90_ms": {name: sorted(t)[int(len(t) * 0.9)] * 1000 for name, t in times.items()},
        "validate_only_ms": validate_only * 1000,
    }


COMMANDS = {
    "batch": cmd_batch,
    "floor": cmd_floor,
    "wait_styles": cmd_wait_styles,
    "trigger_capacity": cmd_trigger_capacity,
    "overhead": cmd_overhead,
}

if __name__ == "__main__":
    command, raw = sys.argv[1], sys.argv[2]
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    print(json.dumps(COMMANDS[command](json.loads(raw))), flush=True)
