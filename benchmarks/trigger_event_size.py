"""
Size of one MJTaskTrigger event for N finished describe tasks: the raw task objects (what events
carried before) against the compact form (:func:`airflow_provider_apicore.tracking.compact_task`).

A trigger event is stored in the metadata database, so its size is paid on every deferral round.
Prints a table and writes ``benchmarks/trigger_event_size.md``.
Run: ``python benchmarks/trigger_event_size.py``.
"""

from __future__ import annotations

import json
import pathlib
import sys

from airflow_provider_apicore.models import MJTask
from airflow_provider_apicore.tracking import TaskTracker

OUT = pathlib.Path(__file__).with_name("trigger_event_size.md")


def describe_task(i: int) -> dict:
    """A SUCCESS describe task as a plus server behind a gateway answers it (four prompts, three times)."""
    prompts = "\n\n".join(
        f"{n}\ufe0f\u20e3 a watercolor painting of a lighthouse number {i} at dusk, soft pastel colours, "
        f"seagulls over calm water, dramatic sky, highly detailed, trending on artstation --ar 4:3"
        for n in range(1, 5)
    )
    task_id = str(1725017482366000 + i)
    return {
        "id": task_id,
        "action": "DESCRIBE",
        "customId": "",
        "botType": "",
        "status": "SUCCESS",
        "progress": "100%",
        "prompt": prompts,
        "promptEn": prompts,
        "description": "Submit success",
        "state": f"dag/run/{i:08x}/1",
        "submitTime": 1725017482366,
        "startTime": 1725017483001,
        "finishTime": 1725017499123,
        "imageUrl": f"https://api.apicore.ai/mj/image/{task_id}",
        "videoUrl": "",
        "failReason": "",
        "maskBase64": "",
        "buttons": [
            {
                "customId": f"MJ::Job::PicReader::{n}",
                "emoji": f"{n}\ufe0f\u20e3",
                "label": "",
                "type": 2,
                "style": 2,
            }
            for n in range(1, 5)
        ],
        "properties": {
            "finalPrompt": prompts,
            "finalZhPrompt": "",
            "discordInstanceId": "1550471212151513088",
        },
    }


def main(sizes: list[int]) -> str:
    rows = [
        "| ids | raw task objects (before) | compact, results carried | status only | before / status only |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        raws = [describe_task(i) for i in range(n)]
        tracker = TaskTracker([r["id"] for r in raws])
        tracker.update(MJTask.from_json(r) for r in raws)
        compact = len(json.dumps(tracker.event()).encode())
        status_only = len(json.dumps(tracker.event(carry_results=False)).encode())
        before = len(json.dumps({**tracker.event(), "tasks": {r["id"]: r for r in raws}}).encode())
        mib = 1048576
        rows.append(
            f"| {n:,} | {before / mib:.2f} MiB | {compact / mib:.2f} MiB | {status_only / mib:.2f} MiB "
            f"| {before / status_only:.0f}x |"
        )
    table = "\n".join(rows)
    OUT.write_text(
        "# Trigger event size (finished describe tasks)\n\n"
        "Produced by `python benchmarks/trigger_event_size.py`.\n\n" + table + "\n",
        encoding="utf-8",
    )
    return table


if __name__ == "__main__":
    print(main([int(a) for a in sys.argv[1:]] or [1000, 5000]))
