"""
`make demo`: describe the bundled sample images end to end, for real.

Starts the local APICore emulator, prepares an Airflow home on SQLite, runs the example DAG
``apicore_describe_images`` with ``airflow dags test`` (mapped, deferrable tasks; the trigger runs for
real), prints each image's prompts, and stops the emulator.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO = REPO / ".demo"


def start_emulator(token: str) -> tuple[subprocess.Popen, str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen(
        [
            str(BIN / "apicore-emulator"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--tokens",
            token,
            "--job-seconds",
            "3",
            "--concurrency",
            "3",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, f"http://127.0.0.1:{port_file.read_text().strip()}"
        if proc.poll() is not None:
            raise SystemExit("The emulator exited before it was ready")
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("The emulator did not start within 30 s")


def main() -> int:
    token = "demo-" + secrets.token_hex(8)
    home = DEMO / "airflow-home"
    output_dir = DEMO / "output"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    print("1/4 Preparing the Airflow home on SQLite:", home)
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)

    print("2/4 Starting the local APICore emulator")
    emulator, url = start_emulator(token)
    try:
        print("    listening on", url)
        env["AIRFLOW_CONN_APICORE_DEFAULT"] = json.dumps(
            {"conn_type": "apicore", "host": url, "password": token}
        )
        conf = {"image_dir": str(REPO / "dags" / "sample_images"), "output_dir": str(output_dir)}
        print(f"3/4 Running DAG apicore_describe_images with `airflow dags test` (conf: {json.dumps(conf)})")
        started = time.monotonic()
        log_path = DEMO / "dags-test.log"
        with log_path.open("w") as log:
            run = subprocess.run(
                [str(BIN / "airflow"), "dags", "test", "apicore_describe_images", "--conf", json.dumps(conf)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        elapsed = time.monotonic() - started
        with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=10) as answer:
            stats = json.loads(answer.read())
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)

    print(f"4/4 Results (DAG run took {elapsed:.1f}s; full log: {log_path})")
    manifest = output_dir / "manifest.jsonl"
    if run.returncode != 0 or not manifest.exists():
        print("The DAG run failed; last lines of its log:")
        print("\n".join(log_path.read_text().splitlines()[-40:]))
        return 1
    for line in manifest.read_text().splitlines():
        entry = json.loads(line)
        print(f"\n  {Path(entry['image']).name}  (task {entry['task_id']}, {entry['status']})")
        for number, prompt in enumerate(entry["prompts"], 1):
            print(f"    {number}. {prompt}")
    print(f"\nManifest: {manifest}\nCaptions: {output_dir}/*.txt")
    if stats:
        print(f"Emulator counted {stats.get('submissions_accepted')} submissions accepted.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
