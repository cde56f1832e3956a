"""MJBatchImagineOperator in a real ``airflow dags test`` run: prompts from XCom, deferrable, files stored."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from airflow_provider_apicore.manifest import REJECTED, SUCCESS, read_manifest
from tests.helpers.airflow_run import airflow_env, run_dag_test

DAGS = Path(__file__).resolve().parent / "dags"


def test_prompts_from_xcom_are_imagined_in_one_deferrable_task(tmp_path, emulator, airflow_home):
    emulator.configure(job_seconds=0.2, concurrency=10, queue_size=100, gateway=False, faults={})
    conf = {"manifest": str(tmp_path / "out" / "manifest.jsonl"), "output": str(tmp_path / "grids")}
    env = airflow_env(airflow_home, {**emulator.conn_env(), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS)})
    run = run_dag_test(env, "apicore_batch_imagine_test", conf, timeout=300)
    assert run.states("imagine_all") == ["success"], run.output[-3000:]
    summary = run.xcom("imagine_all")
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (7, 6, 1)
    records = read_manifest(conf["manifest"])
    rejected = [r for r in records if r.status == REJECTED]
    assert len(rejected) == 1 and "blood" in rejected[0].error
    for record in (r for r in records if r.status == SUCCESS):
        [stored] = record.files
        with Image.open(stored) as image:
            assert image.format == "PNG"
    stats = emulator.stats()
    assert stats["submissions_accepted"] == 6 and stats["duplicate_prompt_jobs"] == 0
    assert stats["max_active"] <= 3
    assert emulator.token not in run.output
