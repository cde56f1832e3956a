"""Faults that strike after processing: the job exists, the answer is a 5xx, an HTML 502 or nothing.

Each case is observed from a real client over loopback HTTP, and the admin counters must show the
job created and its answer not delivered, so a test of a client can count duplicate jobs.
"""

from __future__ import annotations

import hashlib
import time

import pytest
import requests

from airflow_provider_apicore.emulator.gate import classify, strip_mode

SUBMIT_PATHS = ["/mj/submit/describe", "/mj-fast/mj/submit/describe", "/mj-relax/mj/submit/describe"]


def _post(api, path: str, body: dict, timeout: float = 10) -> requests.Response:
    return api.session.post(api.url + path, json=body, timeout=timeout)


def _assert_one_job_unanswered(api, fault: str) -> None:
    stats = api.server.stats()
    assert stats["tasks_created"] == stats["jobs_created"] == 1
    assert stats["jobs_unanswered"] == 1 and stats["submit_answers_delivered"] == 0
    assert stats["faults_injected"][fault] == 1
    assert sum(stats["faults_injected"].values()) == 1


@pytest.mark.parametrize("path", SUBMIT_PATHS)
def test_http_5xx_after_creates_the_job_then_answers_a_server_error(
    start_emulator, client_for, data_url, png, path
):
    api = client_for(start_emulator(job_seconds=5, faults={"http_5xx_after": 1.0}))
    response = _post(api, path, {"base64": data_url(png(8, 8)), "state": "ambiguous"})
    assert response.status_code in (500, 502, 504)
    assert "Submit success" not in response.text
    created = api.server.tasks(state="ambiguous")
    assert len(created) == 1 and created[0]["status"] in ("NOT_START", "SUBMITTED", "IN_PROGRESS")
    _assert_one_job_unanswered(api, "http_5xx_after")


def test_http_5xx_after_varies_status_and_body_and_never_says_503(start_emulator, client_for, png):
    api = client_for(start_emulator(job_seconds=5, queue_size=20, faults={"http_5xx_after": 1.0}))
    responses = [api.submit(png(4, 4, (i, 0, 0))) for i in range(12)]
    assert {r.status_code for r in responses} <= {500, 502, 504}
    assert len({r.status_code for r in responses}) > 1
    assert {r.headers["content-type"].split(";")[0] for r in responses} == {"application/json", "text/plain"}
    stats = api.server.stats()
    assert (
        stats["tasks_created"] == stats["jobs_unanswered"] == stats["faults_injected"]["http_5xx_after"] == 12
    )


@pytest.mark.parametrize("path", SUBMIT_PATHS)
def test_html_error_after_creates_the_job_then_answers_a_proxy_502_page(
    start_emulator, client_for, data_url, png, path
):
    api = client_for(start_emulator(job_seconds=5, faults={"html_error_after": 1.0}))
    response = _post(api, path, {"base64": data_url(png(8, 8)), "state": "html"})
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>502 Bad Gateway</title>" in response.text
    assert len(api.server.tasks(state="html")) == 1
    _assert_one_job_unanswered(api, "html_error_after")


@pytest.mark.parametrize("path", SUBMIT_PATHS)
def test_drop_after_creates_the_job_then_hangs_up_and_is_counted(
    start_emulator, client_for, data_url, png, path
):
    api = client_for(start_emulator(job_seconds=5, faults={"drop_after": 1.0}))
    with pytest.raises(requests.ConnectionError):
        _post(api, path, {"base64": data_url(png(8, 8)), "state": "dropped"})
    assert len(api.server.tasks(state="dropped")) == 1
    _assert_one_job_unanswered(api, "drop_after")


def test_a_refused_submit_under_an_after_fault_is_not_an_unanswered_job(start_emulator, client_for):
    api = client_for(start_emulator(faults={"html_error_after": 1.0}))
    response = api.session.post(f"{api.url}/mj/submit/describe", json={"base64": ""}, timeout=10)
    assert response.status_code == 502
    stats = api.server.stats()
    assert stats["jobs_created"] == stats["jobs_unanswered"] == 0
    assert stats["submissions_rejected"] == {"4": 1}


def test_after_faults_are_set_at_run_time_and_limited_to_submit(start_emulator, client_for, png):
    api = client_for(start_emulator(job_seconds=5))
    api.server.configure(faults={"http_5xx_after": 1.0, "endpoints": ["submit"]})
    response = api.submit(png(8, 8))
    assert response.status_code >= 500
    task = api.server.tasks()[0]
    assert api.task(task["id"])["id"] == task["id"]  # fetch is not hit by the fault
    api.server.configure(faults={})
    assert api.submit(png(9, 9)).json()["code"] == 1
    stats = api.server.stats()
    assert (stats["jobs_created"], stats["jobs_unanswered"], stats["submit_answers_delivered"]) == (2, 1, 1)


def test_a_client_that_resubmits_after_an_ambiguous_answer_makes_a_counted_duplicate(
    start_emulator, client_for, png
):
    image = png(12, 12, (1, 2, 3))
    api = client_for(start_emulator(job_seconds=5, faults={"html_error_after": 1.0}))
    assert api.submit(image, state="try/1").status_code == 502
    api.server.configure(faults={})
    assert api.submit(image, state="try/2").json()["code"] == 1
    stats = api.server.stats()
    assert stats["duplicate_jobs"] == stats["duplicate_image_jobs"] == 1
    assert stats["images_with_duplicate_jobs"] == 1
    digest = hashlib.sha256(image).hexdigest()
    assert api.session.get(f"{api.url}/_emulator/submissions", timeout=10).json()["by_image"][digest] == {
        "submits": 2,
        "jobs": 2,
    }


@pytest.mark.parametrize(
    "path",
    [
        "/mj/submit/describe",
        "/mj/submit/imagine",
        "/mj/submit/action",
        "/mj/submit/modal",
        "/mj/submit/blend",
        "/mj/submit/shorten",
        "/mj/insight-face/swap",
        "/mj-fast/mj/submit/imagine",
        "/mj-relax/mj/submit/blend",
        "/mj-turbo/mj/insight-face/swap",
    ],
)
def test_every_submit_endpoint_is_a_submit_for_the_faults(path):
    scope = {"path": path, "raw_path": path.encode()}
    strip_mode(scope, gateway=False)
    assert scope["path"].startswith("/mj/")
    assert classify("POST", scope["path"]) == "submit"
    assert classify("GET", scope["path"]) == "other"


def test_only_speed_modes_are_stripped_outside_gateway_mode():
    scope = {"path": "/foo/mj/submit/describe"}
    assert strip_mode(scope, gateway=False) is None and scope["path"] == "/foo/mj/submit/describe"
    assert strip_mode(scope, gateway=True) == "foo" and scope["path"] == "/mj/submit/describe"


def test_a_held_answer_is_visible_in_the_stats_until_it_is_sent(start_emulator, client_for, png):
    faults = {"slow": 1.0, "slow_seconds": 1.5, "endpoints": ["submit"]}
    api = client_for(start_emulator(job_seconds=5, faults=faults))
    with pytest.raises(requests.ReadTimeout):
        api.submit(png(4, 4), timeout=0.3)
    deadline = time.monotonic() + 10
    while not (stats := api.server.stats())["answers_held"]:  # the client gave up; the server holds on
        assert time.monotonic() < deadline, "the answer was never held"
        time.sleep(0.01)
    assert (stats["answers_held"], stats["jobs_held"], stats["jobs_created"]) == (1, 1, 1)
    assert stats["submit_answers_delivered"] == 0
    deadline = time.monotonic() + 15
    while (stats := api.server.stats())["answers_held"]:
        assert time.monotonic() < deadline, "the held answer was never released"
        time.sleep(0.05)
    assert stats["jobs_held"] == 0 and stats["submit_answers_delivered"] == 1
