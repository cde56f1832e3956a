"""
The benchmark harness runs end to end with tiny N and reports what it measured.

Correctness only: every image described, requests counted, the report written. No timing is asserted:
speeds are benchmarks/run.py's business, never a test's.
"""

from __future__ import annotations

import math

from benchmarks import memory, overhead, report, throughput, waiting


def quiet(message: str) -> None:
    pass


def test_throughput_variants_describe_every_image_and_count_requests(tmp_path):
    settings = throughput.Settings(
        job_seconds=0.2,
        concurrency=4,
        n_batch=12,
        n_slow=2,
        max_in_flight=6,
        poll_interval=0.1,
        airflow=False,
        batch_without_headroom=True,
    )
    fig = throughput.run(settings, tmp_path / "scratch", quiet)

    assert fig["errors"] == []
    assert [row["variant"] for row in fig["rows"]] == [
        "asyncio + httpx, no Airflow (floor)",
        "MJBatchDescribeOperator (batched)",
        "MJBatchDescribeOperator, max_in_flight = C",
    ]
    for row in fig["rows"]:
        assert row["succeeded"] == row["submissions"] == 12
        assert row["requests"]["submit"] == 12
        # Polls are list-by-condition requests only, at least one, counted per image.
        assert row["requests"]["fetch"] == 0
        assert row["requests_beyond_submit_per_image"] == row["requests"]["list"] / 12 > 0
        assert math.isclose(row["pct_of_limit"], 100 * row["images_per_s"] / settings.limit)
        assert row["timeline"][-1][1] == 12
        assert row["max_concurrent_in_progress"] <= settings.concurrency

    out = tmp_path / "out"
    out.mkdir()
    text = report.write(
        {
            "command": "test",
            "quick": True,
            "machine": {"nproc": "2"},
            "seconds": 1.0,
            "figures": {"throughput": fig},
        },
        out,
    ).read_text()
    assert "## 1. Throughput against the physical limit" in text
    assert "| 2. batched ≤ 1.1 requests per image beyond the submit |" in text
    assert (out / "throughput.svg").read_text().startswith("<svg")


def test_waiting_memory_and_overhead_figures_are_complete(tmp_path):
    wait = waiting.run(
        tmp_path / "waiting",
        quiet,
        images=1,
        job_seconds=0.3,
        poll_interval=0.1,
        id_counts=[25],
        follow_seconds=1.0,
    )
    for style in ("polling", "deferrable"):
        assert wait["styles"][style]["images"] == 1
        assert wait["styles"][style]["all_have_four_prompts"]
    follow = wait["trigger"][0]
    assert follow["ids"] == follow["event_tasks"] == 25
    assert follow["event_status"] == "done"
    # The emulator saw exactly the requests the trigger made: one list request per poll round.
    assert follow["list_requests"] == follow["poll_rounds"] >= 1
    assert follow["other_requests"] == 0

    mem = memory.run(tmp_path / "memory", quiet, grid=[(3, 200_000)])
    assert mem["skipped"] == []
    (row,) = mem["rows"]
    assert row["succeeded"] == row["submissions"] == 3
    assert row["peak_rss"] >= row["baseline_rss"] > 0

    over = overhead.run(tmp_path / "overhead", quiet, rounds=2)
    for result in over["results"].values():
        assert set(result["median_ms"]) == {
            "requests.post (new connection)",
            "requests.Session.post (keep-alive)",
            "hook.submit_describe(validate=False)",
            "hook.submit_describe (validated)",
            "read+encode+validate+submit (operator path)",
        }
        assert all(ms > 0 for ms in result["median_ms"].values())

    out = tmp_path / "out"
    out.mkdir()
    text = report.write(
        {
            "command": "test",
            "quick": True,
            "machine": {},
            "seconds": 1.0,
            "figures": {"waiting": wait, "memory": mem, "overhead": over},
        },
        out,
    ).read_text()
    for heading in ("## 3.", "## 4.", "## 5."):
        assert heading in text
