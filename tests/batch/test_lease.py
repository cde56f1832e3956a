"""One writer per manifest: the lease next to the manifest, its fencing token, and take-over by a retry."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_apicore.batch.errors import LeaseLostError, ManifestLeaseError
from airflow_provider_apicore.batch.lease import FencingToken, ManifestLease
from airflow_provider_apicore.manifest import Manifest, read_manifest, to_storage_path
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from tests.reliability.conftest import write_images

FAST = {"job_seconds": 0.2, "concurrency": 10, "queue_size": 100, "dedupe": False}


def context(run_id: str = "manual__1", try_number: int = 1) -> dict:
    return {
        "ti": SimpleNamespace(
            dag_id="lease", run_id=run_id, task_id="batch", map_index=-1, try_number=try_number
        )
    }


def token(run_id: str = "manual__1", try_number: int = 1) -> FencingToken:
    return FencingToken("lease", run_id, "batch", -1, try_number)


def operator(tmp_path: Path, **kwargs) -> MJBatchDescribeOperator:
    return MJBatchDescribeOperator(
        task_id="batch",
        source=str(tmp_path / "src"),
        manifest_path=str(tmp_path / "out" / "manifest.jsonl"),
        poll_interval=0.1,
        **kwargs,
    )


def test_a_second_run_on_a_manifest_in_use_fails_fast_naming_the_holder_and_writes_nothing(
    tmp_path, apicore_conn
):
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 4)
    first = operator(tmp_path, deferrable=True, max_in_flight=2)
    with pytest.raises(TaskDeferred):
        first.execute(context("manual__1"))
    manifest = tmp_path / "out" / "manifest.jsonl"
    before = sorted((p.name, p.read_bytes()) for p in manifest.parent.rglob("*") if p.is_file())
    submits = apicore_conn.stats()["requests"]["submit"]
    with pytest.raises(ManifestLeaseError) as info:
        operator(tmp_path, max_in_flight=2).execute(context("scheduled__2"))
    assert "held by lease/manual__1/batch/-1 try 1" in str(info.value)
    assert str(manifest) + ".lease" in str(info.value)
    after = sorted((p.name, p.read_bytes()) for p in manifest.parent.rglob("*") if p.is_file())
    assert after == before, "nothing was overwritten"
    assert apicore_conn.stats()["requests"]["submit"] == submits


def test_the_lease_is_released_when_the_batch_ends_so_the_next_run_can_start(tmp_path, apicore_conn):
    apicore_conn.configure(**FAST)
    write_images(tmp_path / "src", 2)
    operator(tmp_path).execute(context("manual__1"))
    assert not (tmp_path / "out" / "manifest.jsonl.lease").exists()
    assert operator(tmp_path).execute(context("scheduled__2"))["succeeded"] == 2


def test_a_retry_takes_the_lease_over_and_the_earlier_try_stops_before_writing(tmp_path):
    path = to_storage_path(str(tmp_path / "manifest.jsonl"))
    first = ManifestLease(path, token(try_number=1), check_interval=0)
    first.acquire()
    zombie = Manifest(path)
    zombie.before_write = first.check
    zombie.touch(zombie.add("a.png"), status="pending")
    zombie.commit()  # still the holder: written

    retry = ManifestLease(path, token(try_number=2), check_interval=0)
    retry.acquire()
    assert json.loads(Path(retry.path.path).read_text())["try_number"] == 2

    zombie.touch(zombie.get("a.png"), status="submitted", task_id="1")
    with pytest.raises(LeaseLostError, match=r"held by lease/manual__1/batch/-1 try 2"):
        zombie.commit()
    assert [r.status for r in read_manifest(path)] == ["pending"], "the zombie's change was not written"
    # The earlier try cannot take it back.
    with pytest.raises(ManifestLeaseError, match="a later try of this task instance"):
        ManifestLease(path, token(try_number=1)).acquire()


def test_the_same_try_resuming_after_a_deferral_keeps_its_lease(tmp_path):
    path = to_storage_path(str(tmp_path / "manifest.jsonl"))
    ManifestLease(path, token()).acquire()
    again = ManifestLease(path, token(), check_interval=0)
    again.acquire()
    again.check()


def test_of_two_writers_starting_at_once_exactly_one_gets_the_lease(tmp_path):
    path = to_storage_path(str(tmp_path / "manifest.jsonl"))
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        lease = ManifestLease(path, token(run_id=f"run_{i}"))
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("won")
        except ManifestLeaseError:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]


def test_an_unreadable_lease_is_not_taken_over(tmp_path):
    path = to_storage_path(str(tmp_path / "manifest.jsonl"))
    Path(str(tmp_path / "manifest.jsonl.lease")).write_text("garbage")
    with pytest.raises(ManifestLeaseError, match="cannot be read as a lease"):
        ManifestLease(path, token()).acquire()


# ------------------------------------------------------------------ S3 (moto's server on loopback)
@pytest.fixture
def s3_manifest(monkeypatch):
    """A manifest path on S3 served by moto's server mode over loopback (If-None-Match is enforced)."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import boto3
    from airflow.sdk import ObjectStoragePath

    for key, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    # A fresh filesystem for this server: Airflow caches one store per connection, and s3fs one
    # instance per set of options, so an earlier test's (stopped) server would be reached otherwise.
    from airflow.sdk.io import store
    from s3fs import S3FileSystem

    store._STORE_CACHE.clear()
    S3FileSystem.clear_instance_cache()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    conn = {"conn_type": "aws", "login": "x", "password": "y", "extra": {"endpoint_url": endpoint}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_LEASE", json.dumps(conn))
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="leases")
    try:
        yield ObjectStoragePath("s3://leases/run/manifest.jsonl", conn_id="aws_lease")
    finally:
        server.stop()


def test_on_s3_the_lease_is_a_conditional_put_and_fences_an_earlier_try(s3_manifest):
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        lease = ManifestLease(s3_manifest, token(run_id=f"run_{i}"))
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append(f"run_{i}")
        except ManifestLeaseError:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [winner] = [o for o in outcomes if o != "refused"]
    assert outcomes.count("refused") == 5
    holder = ManifestLease(s3_manifest, token(run_id=winner), check_interval=0)
    holder.acquire()  # the same try again (a resume after a deferral)
    retry = ManifestLease(s3_manifest, token(run_id=winner, try_number=2), check_interval=0)
    retry.acquire()
    with pytest.raises(LeaseLostError):
        holder.check()
    retry.release()
    assert not (s3_manifest.parent / "manifest.jsonl.lease").exists()
