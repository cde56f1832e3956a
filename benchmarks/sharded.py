"""
A sharded batch on two Celery workers against one shard, with the account's limit shared.

Starts the distributed stack (``scripts/airflow_stack.py``, ``executor="celery"``: PostgreSQL, Redis,
two workers, two triggerers, S3 on moto), puts ``--images`` small images on S3, and runs
``dags/apicore_sharded_batch.py`` once per shard count in ``--shards`` (default 1 and 4) on a fresh
manifest prefix, every run with the same account (``--account-limit`` jobs at once, ``--job-seconds``
each, so at most ``limit / job_seconds`` images per second whatever the sharding). Prints a table and
writes ``benchmarks/sharded_results.md``.

    .venv/bin/python benchmarks/sharded.py                      # 1,000 images, shards 1 and 4
    .venv/bin/python benchmarks/sharded.py --images 400 --shards 1,2,4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.airflow_stack import S3_CONN_ID, AirflowStack  # noqa: E402
from tests.helpers.imagetree import make_image_tree  # noqa: E402

DAG_ID = "apicore_sharded_batch"
BUCKET = "apicore"
OUTPUT = REPO / "benchmarks" / "sharded_results.md"


def say(message: str) -> None:
    print(f"[sharded {time.strftime('%H:%M:%S')}] {message}", flush=True)


def upload(stack: AirflowStack, root: Path, prefix: str) -> int:
    client = stack.s3_client()
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]

    def put(path: Path) -> None:
        key = f"{prefix}/{path.relative_to(root).as_posix()}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    return len(files)


def emulator(stack: AirflowStack, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(method, f"{stack.emulator_url}{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


def run_once(stack: AirflowStack, shards: int, args: argparse.Namespace) -> dict[str, Any]:
    """One DAG run with ``shards`` shards on a fresh manifest prefix; its figures."""
    emulator(stack, "POST", "/_emulator/reset")
    prefix = f"s3://{S3_CONN_ID}@{BUCKET}/bench/manifest-{shards}-{int(time.time())}"
    conf = {
        "image_dir": f"s3://{S3_CONN_ID}@{BUCKET}/bench/images",
        "manifest_prefix": prefix,
        "output_dir": f"{prefix}-captions",
        "shards": shards,
        "account_limit": args.account_limit,
        "poll_interval": 1,
        "deferrable": args.deferrable,
    }
    started = time.monotonic()
    run_id = stack.api(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}, expect=(200, 201)
    ).json()["dag_run_id"]
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{requests.utils.quote(run_id, safe='')}"
    while True:
        state = stack.api("GET", path, expect=200).json()["state"]
        if state in ("success", "failed"):
            break
        stack.check_alive()
        time.sleep(1)
    seconds = time.monotonic() - started
    tis = stack.api("GET", f"{path}/taskInstances?limit=100", expect=200).json()["task_instances"]
    shard_tis = [t for t in tis if t["task_id"] == "describe_shard"]
    describe_seconds = max((t.get("duration") or 0.0) for t in shard_tis) if shard_tis else 0.0
    stats = emulator(stack, "GET", "/_emulator/stats")
    ceiling = args.account_limit / args.job_seconds
    return {
        "shards": shards,
        "state": state,
        "seconds": round(seconds, 1),
        "describe_seconds": round(describe_seconds, 1),
        "images_per_s": round(args.images / describe_seconds, 2) if describe_seconds else None,
        "of_ceiling": round(args.images / describe_seconds / ceiling, 3) if describe_seconds else None,
        "max_in_flight": args.account_limit // shards,
        "max_active": stats["max_active"],
        "jobs": stats["submissions_accepted"],
        "duplicate_jobs": stats["duplicate_jobs"],
        "workers": sorted({t["hostname"] for t in shard_tis if t["hostname"]}),
    }


def render(rows: list[dict[str, Any]], args: argparse.Namespace, setup_seconds: float) -> str:
    ceiling = args.account_limit / args.job_seconds
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = (
        f"python benchmarks/sharded.py --images {args.images} --shards {args.shards}"
        f" --account-limit {args.account_limit} --job-seconds {args.job_seconds}"
        + ("" if args.deferrable else " --no-deferrable")
    )
    lines = [
        "# Sharded batch on two Celery workers vs one shard",
        "",
        f"`{command}`, run {when}.",
        "",
        f"Distributed stack (CeleryExecutor, Redis, 2 workers x {args.worker_concurrency} slots,"
        f" 2 triggerers, PostgreSQL, S3 on moto) on one 2-core machine; stack start {setup_seconds:.0f} s."
        f" {args.images} small images on S3; the emulated account runs {args.account_limit} jobs at once,"
        f" {args.job_seconds} s each: at most {ceiling:.0f} images/s whatever the sharding. Each shard"
        " gets `max_in_flight = account_limit // shards`.",
        "",
        "| shards | max_in_flight each | describe phase (s) | images/s | of the account's ceiling "
        "| whole run (s) | emulator max active | jobs | duplicates | workers used |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shards']} | {r['max_in_flight']} | {r['describe_seconds']} | {r['images_per_s']} "
            f"| {100 * (r['of_ceiling'] or 0):.1f} % | {r['seconds']} | {r['max_active']} | {r['jobs']} "
            f"| {r['duplicate_jobs']} | {', '.join(r['workers'])} |"
        )
    lines += [
        "",
        "Describe phase: the longest shard task's duration (all shards run at once). Whole run: trigger to"
        " end, including listing the directory once (`plan`) and merging the parts.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--shards", default="1,4", help="comma-separated shard counts, one run each")
    parser.add_argument("--account-limit", type=int, default=40)
    parser.add_argument("--job-seconds", type=float, default=0.5)
    parser.add_argument("--worker-concurrency", type=int, default=4)
    parser.add_argument("--no-deferrable", dest="deferrable", action="store_false")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    counts = [int(s) for s in args.shards.split(",")]
    started = time.monotonic()
    stack = AirflowStack(
        database="postgres",
        executor="celery",
        worker_concurrency=args.worker_concurrency,
        emulator_args=["--job-seconds", str(args.job_seconds), "--concurrency", str(args.account_limit)],
        extra_env={"APICORE_EXAMPLE_RETRY_DELAY": "3"},
        buckets=(BUCKET,),
    )
    with stack:
        setup = time.monotonic() - started
        body = {
            "connection_id": "apicore_default",
            "conn_type": "apicore",
            "host": stack.emulator_url,
            "password": stack.emulator_token,
        }
        stack.api("POST", "/api/v2/connections", json=body, expect=201)
        with tempfile.TemporaryDirectory() as tmp:
            tree = make_image_tree(Path(tmp) / "images", count=args.images, duplicates=0)
            say(f"{upload(stack, tree.root, 'bench/images')} files on S3")
        emulator(
            stack,
            "PUT",
            "/_emulator/config",
            json={"job_seconds": args.job_seconds, "concurrency": args.account_limit, "queue_size": 10000},
        )
        stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}, expect=200)
        rows = []
        for shards in counts:
            row = run_once(stack, shards, args)
            say(json.dumps(row))
            rows.append(row)
    text = render(rows, args, setup)
    print(text)
    args.output.write_text(text)
    say(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
