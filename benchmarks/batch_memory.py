"""
Cost of MJBatchDescribeOperator against the number of images N: peak RSS, client CPU per image, and the
manifest's bytes written and storage operations per image (local files), polling and deferrable.

Each N runs in a fresh child process (the batch alone; the emulator runs in this process, on loopback,
with fast jobs), so the peak RSS is the batch's own. Storage operations are counted in the child by
wrapping the manifest store's primitives (reads, writes, listings, deletes) and the lease's.

    .venv/bin/python benchmarks/batch_memory.py --sizes 1000,10000,100000 [--deferrable]

prints a table and writes ``benchmarks/batch_memory_results.md``. ``BM_PROFILE=1`` prints a cProfile
of the batch (cumulative time) for each N. 100,000 images take a few minutes of
CPU and about 40 MB of disk for the images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys, time
    from types import SimpleNamespace
    from airflow.sdk.exceptions import TaskDeferred
    from airflow_provider_apicore import manifest as store
    from airflow_provider_apicore.batch import lease as lease_module
    from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator

    # The manifest store counts its own operations (store.IO); the lease's files go through the same
    # primitives, except its conditional create, counted here. On S3, every HTTP request botocore
    # sends is counted as well.
    creates = {"n": 0, "bytes": 0}
    real_create = lease_module.LeaseStorage.create
    def create(self, data):
        creates["n"] += 1
        creates["bytes"] += len(data)
        return real_create(self, data)
    lease_module.LeaseStorage.create = create
    http = {"requests": 0}
    try:
        from aiobotocore.endpoint import AioEndpoint
        real_send = AioEndpoint._send
        async def send(self, request):
            http["requests"] += 1
            return await real_send(self, request)
        AioEndpoint._send = send
    except ImportError:
        pass

    source, manifest, deferrable = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    from_checkpoint = sys.argv[4] == "checkpoint"

    def new_operator():
        # A resume runs on a new operator instance, as in a new task process.
        return MJBatchDescribeOperator(
            task_id="bench", source=source, manifest_path=manifest, max_in_flight=200,
            poll_interval=0.05, timeout=None, deferrable=deferrable,
        )

    op = new_operator()
    ctx = {"ti": SimpleNamespace(dag_id="bench", run_id="r", task_id="bench", try_number=1)}

    async def first_event(trigger):
        async for event in trigger.run():
            return event.payload

    import cProfile, pstats
    prof = cProfile.Profile() if os.environ.get("BM_PROFILE") else None
    if prof:
        prof.enable()
    started = time.process_time()
    rounds = 0
    # Each round keeps only the trigger and the kwargs of its deferral: not the exception, whose
    # traceback would keep the round's operator (and its manifest) alive, as a new process would not.
    deferral = None
    try:
        summary = op.execute(ctx)
    except TaskDeferred as deferred:
        deferral = (deferred.trigger, dict(deferred.kwargs or {}))
    del op
    while deferral is not None:
        rounds += 1
        trigger, kwargs = deferral
        event = asyncio.run(first_event(trigger))
        deferral = None
        try:
            # "manifest": what a resume without its checkpoint does (reads the whole manifest).
            summary = new_operator().execute_complete(ctx, event, **(kwargs if from_checkpoint else {}))
        except TaskDeferred as again:
            deferral = (again.trigger, dict(again.kwargs or {}))
    cpu = time.process_time() - started
    if prof:
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(35)
    print("RESULT " + json.dumps({
        "summary": summary, "cpu": cpu, "rounds": rounds,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "ops": {
            "read": store.IO["reads"], "write": store.IO["writes"] + creates["n"],
            "list": store.IO["lists"], "delete": store.IO["deletes"],
            "bytes_written": store.IO["bytes_written"] + creates["bytes"],
            "bytes_read": store.IO["bytes_read"], "http_requests": http["requests"],
        },
    }))
    """
)


def _png(index: int) -> bytes:
    """A distinct 2x2 PNG for each index (about 80 bytes)."""
    raw = b"".join(
        b"\x00" + struct.pack(">3B3B", index & 255, (index >> 8) & 255, (index >> 16) & 255, 7, 7, 7)
        for _ in range(2)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _write_images(directory: Path, count: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sub = directory / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(exist_ok=True)
        (sub / f"img_{i:06d}.png").write_bytes(_png(i))


def _moto() -> tuple[object, str]:
    """moto's S3 server on loopback, with a ``bench`` bucket: (server, endpoint URL)."""
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return server, endpoint


def measure(
    count: int, deferrable: bool, scratch: Path, s3: bool = False, resume: str = "checkpoint"
) -> dict:
    from airflow_provider_apicore.emulator import EmulatorConfig, EmulatorServer

    server = EmulatorServer(
        EmulatorConfig(
            tokens=["bench-token"],
            job_seconds=0.01,
            concurrency=400,
            queue_size=count + 10,
            tick_seconds=0.01,
        )
    )
    server.start()
    source = scratch / f"images-{count}"
    manifest = scratch / f"manifest-{count}-{int(deferrable)}-{resume}.jsonl"
    moto = None
    try:
        if not source.exists():
            _write_images(source, count)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
        env["AIRFLOW_CONN_APICORE_DEFAULT"] = json.dumps(
            {"conn_type": "apicore", "host": server.url, "password": "bench-token"}
        )
        env["AIRFLOW_HOME"] = str(scratch / "airflow-home")
        env["PYTHONPATH"] = str(REPO)
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
        target = str(manifest)
        if s3:
            moto, endpoint = _moto()
            env["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
                {"conn_type": "aws", "login": "x", "password": "y", "extra": {"endpoint_url": endpoint}}
            )
            target = f"s3://aws_default@bench/manifest-{count}-{int(deferrable)}-{resume}.jsonl"
        wall = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(source), target, "1" if deferrable else "0", resume],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        wall = time.monotonic() - wall
    finally:
        server.stop()
        if moto is not None:
            moto.stop()
    if proc.returncode != 0:
        raise SystemExit(f"the batch over {count} images failed:\n{proc.stderr[-3000:]}")
    if os.environ.get("BM_PROFILE"):
        print(proc.stderr[-12000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    ops = result["ops"]
    storage_ops = ops["read"] + ops["write"] + ops["list"] + ops["delete"]
    return {
        "images": count,
        "deferrable": deferrable,
        "resume": resume if deferrable else "",
        "store": "S3 (moto)" if s3 else "local",
        "succeeded": result["summary"]["succeeded"],
        "peak_rss_mib": result["peak_rss_kib"] / 1024,
        "cpu_ms_per_image": result["cpu"] * 1000 / count,
        "manifest_bytes_written_per_image": ops["bytes_written"] / count,
        "manifest_bytes_read_per_image": ops["bytes_read"] / count,
        "storage_ops_per_image": storage_ops / count,
        "http_requests_per_image": ops.get("http_requests", 0) / count,
        "ops": ops,
        "rounds": result["rounds"],
        "wall_s": wall,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| N | mode | resume from | manifest on | succeeded | peak RSS (MiB) | CPU ms/image | "
        "manifest bytes written/image | bytes read/image | storage ops/image | S3 requests/image | "
        "deferral rounds | wall s |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['images']:,} | {'deferrable' if r['deferrable'] else 'polling'} | {r.get('resume', '')} | "
            f"{r['store']} | "
            f"{r['succeeded']:,} | "
            f"{r['peak_rss_mib']:.0f} | {r['cpu_ms_per_image']:.2f} | "
            f"{r['manifest_bytes_written_per_image']:.0f} | "
            f"{r['manifest_bytes_read_per_image']:.0f} | {r['storage_ops_per_image']:.2f} | "
            f"{r['http_requests_per_image']:.2f} | {r['rounds']} | "
            f"{r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated numbers of images")
    parser.add_argument("--deferrable", action="store_true", help="also measure the deferrable batch")
    parser.add_argument("--s3", action="store_true", help="also with the manifest on S3 (moto's server)")
    parser.add_argument("--only-s3", action="store_true", help="only with the manifest on S3")
    parser.add_argument(
        "--resume",
        default="checkpoint",
        choices=("checkpoint", "manifest", "both"),
        help="deferrable: resume from the deferral's checkpoint, the whole manifest, or both side by side",
    )
    parser.add_argument("--scratch", default=None, help="where images and manifests go (a temp dir)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "batch_memory_results.md"))
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="batch-memory-"))
    rows = []
    try:
        for count in [int(n) for n in args.sizes.split(",") if n.strip()]:
            stores = (True,) if args.only_s3 else (False, True) if args.s3 else (False,)
            for s3 in stores:
                for deferrable in (False, True) if args.deferrable else (False,):
                    resumes = ("checkpoint", "manifest") if args.resume == "both" else (args.resume,)
                    for resume in resumes if deferrable else ("checkpoint",):
                        row = measure(count, deferrable, scratch, s3, resume)
                        rows.append(row)
                        print(table([row]).splitlines()[-1], flush=True)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    text = table(rows)
    print(text)
    Path(args.output).write_text(
        "# MJBatchDescribeOperator cost against N\n\n"
        f"`python benchmarks/batch_memory.py --sizes {args.sizes}"
        f"{' --deferrable' if args.deferrable else ''}{' --s3' if args.s3 else ''}"
        f"{' --only-s3' if args.only_s3 else ''}"
        f"{f' --resume {args.resume}' if args.deferrable else ''}` "
        f"on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Images local; "
        "2x2 PNGs; emulator jobs of 10 ms on loopback; max_in_flight=200. S3 requests are the HTTP requests "
        "botocore sent (manifest, journal and lease).\n\n" + text + "\n"
    )


if __name__ == "__main__":
    main()
