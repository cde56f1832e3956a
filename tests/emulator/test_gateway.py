"""Gateway mode: the emulator answers like new-api in front of the proxy, behaviour by behaviour."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from airflow_provider_apicore.emulator.gateway import action_for, rewrite_submit_answer

TASK_NO_FOUND = {"code": 4, "description": "task_no_found ", "type": "upstream_error"}
DTO_KEYS = {
    "id",
    "action",
    "customId",
    "botType",
    "prompt",
    "promptEn",
    "description",
    "state",
    "submitTime",
    "startTime",
    "finishTime",
    "imageUrl",
    "videoUrl",
    "videoUrls",
    "status",
    "progress",
    "failReason",
    "buttons",
    "maskBase64",
    "properties",
}


def _gateway(start_emulator, client_for, **config: Any):
    config.setdefault("gateway", True)
    config.setdefault("gateway_refresh", 60)
    return client_for(start_emulator(**config))


def _nulls(value: Any, where: str = "") -> list[str]:
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _nulls(v, f"{where}[{i}]")]
    return []


def _upstream(api, task_id: str) -> dict[str, Any]:
    return next(t for t in api.server.tasks() if t["id"] == task_id)


def _wait_upstream(api, task_id: str, statuses: set[str], timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (task := _upstream(api, task_id))["status"] not in statuses:
        assert time.monotonic() < deadline, f"upstream task {task_id} still {task['status']}"
        time.sleep(0.02)
    return task


def _refresh(api) -> dict[str, Any]:
    return api.session.post(f"{api.url}/_emulator/gateway/refresh", timeout=10).json()


# -------------------------------------------------------------------------------- submit answers
def test_queued_answer_22_reads_code_1(start_emulator, client_for, png):
    proxy = client_for(start_emulator(concurrency=1, job_seconds=5))
    gateway = _gateway(start_emulator, client_for, concurrency=1, job_seconds=5)
    for api in (proxy, gateway):
        api.submit_ok(png(4, 4, (1, 0, 0)))
    queued = proxy.submit(png(4, 4, (2, 0, 0))).json()
    relayed = gateway.submit(png(4, 4, (2, 0, 0))).json()
    assert queued["code"] == 22
    assert relayed["code"] == 1 and relayed["description"] == queued["description"]
    assert relayed["description"].startswith("排队中") and relayed["result"].isdigit()


def test_existing_answer_21_reads_code_1_with_the_earlier_task(start_emulator, client_for, png):
    api = _gateway(start_emulator, client_for, dedupe=True, job_seconds=5)
    image = png(5, 5)
    first = api.submit(image).json()
    again = api.submit(image).json()
    assert first["code"] == again["code"] == 1 and again["result"] == first["result"]
    assert again["description"] == "任务已存在"
    assert api.server.stats()["jobs_created"] == 1


def test_code_21_stays_for_inpaint_and_custom_zoom_only():
    answer = b'{"code":21,"description":"Waiting for window confirm","result":"17"}'
    assert rewrite_submit_answer(answer, "INPAINT") == answer
    assert rewrite_submit_answer(answer, "CUSTOM_ZOOM") == answer
    assert rewrite_submit_answer(answer, "VARIATION").startswith(b'{"code":1,')
    assert rewrite_submit_answer(b'{"code":22,"result":"1"}', "INPAINT") == b'{"code":1,"result":"1"}'
    assert action_for("/mj/submit/action", {"customId": "MJ::Inpaint::1::abc::SOLO"}) == "INPAINT"
    assert action_for("/mj/submit/action", {"customId": "MJ::CustomZoom::abc"}) == "CUSTOM_ZOOM"
    assert action_for("/mj/submit/action", {"customId": "MJ::JOB::upsample::2::abc"}) == "UPSCALE"
    assert action_for("/mj/submit/action", {"customId": "MJ::JOB::high_variation::1::abc::SOLO"}) == (
        "HIGH_VARIATION"
    )
    assert action_for("/mj/insight-face/swap", {}) == "SWAP_FACE"


# ----------------------------------------------------------------------------- the gateway's copy
def test_a_new_task_reads_the_stale_copy_until_the_next_refresh(start_emulator, client_for, png):
    api = _gateway(start_emulator, client_for, job_seconds=0.1)
    image = png(16, 12, (10, 120, 200))
    task_id = api.submit_ok(image, state="tag/1")
    _wait_upstream(api, task_id, {"SUCCESS"})

    stale = api.task(task_id)
    listed = api.list([task_id])
    assert listed == [stale]
    assert set(stale) == DTO_KEYS and _nulls(stale) == []
    assert (stale["status"], stale["progress"], stale["startTime"], stale["finishTime"]) == ("", "0%", 0, 0)
    assert stale["description"] == "Submit success" and stale["action"] == "DESCRIBE"
    assert stale["state"] == stale["prompt"] == stale["promptEn"] == stale["imageUrl"] == ""
    assert stale["submitTime"] > 0 and stale["properties"] == {"finalPrompt": "", "finalZhPrompt": ""}

    assert _refresh(api)["refreshes"] == 1
    fresh = api.task(task_id)
    upstream = _upstream(api, task_id)
    assert fresh["status"] == "SUCCESS" and fresh["progress"] == "100%" and _nulls(fresh) == []
    assert fresh["state"] == "tag/1"
    assert fresh["promptEn"] == upstream["promptEn"] == fresh["properties"]["finalPrompt"]
    assert fresh["promptEn"].count("\ufe0f\u20e3") == 4
    assert fresh["prompt"] == ""  # the gateway keeps the submitted prompt: describe has none
    assert fresh["description"] == "Submit success"  # never the proxy's "/describe <id>.png"
    assert (fresh["startTime"], fresh["finishTime"]) == (upstream["startTime"], upstream["finishTime"])


def test_the_copy_is_refreshed_every_gateway_refresh_seconds(start_emulator, client_for, png):
    api = _gateway(start_emulator, client_for, job_seconds=0.05)
    task_id = api.submit_ok(png(6, 6))
    _wait_upstream(api, task_id, {"SUCCESS"})
    assert api.task(task_id)["status"] == ""
    api.server.configure(gateway_refresh=0.3)
    deadline = time.monotonic() + 15
    while api.task(task_id)["status"] != "SUCCESS":
        assert time.monotonic() < deadline, "the gateway's copy was never refreshed"
        time.sleep(0.05)
    assert api.server.stats()["gateway"]["refreshes"] >= 1


def test_a_task_the_proxy_lost_fails_after_the_gateway_timeout(start_emulator, client_for, png):
    api = _gateway(
        start_emulator, client_for, job_seconds=0.1, gateway_task_timeout=0.5, faults={"vanish": 1.0}
    )
    task_id = api.submit_ok(png(6, 6))
    time.sleep(0.6)
    _refresh(api)
    task = api.task(task_id)
    assert task["status"] == "FAILURE" and task["failReason"] == "上游任务超时（超过1小时）"
    assert api.server.stats()["gateway"]["timed_out"] == 1


# ------------------------------------------------------------------------------------- not found
def test_unknown_id_on_fetch_is_a_400_task_no_found(start_emulator, client_for):
    api = _gateway(start_emulator, client_for)
    response = api.fetch("1725017482366993")
    assert response.status_code == 400 and response.json() == TASK_NO_FOUND
    assert api.list(["1725017482366993"]) == []
    bad = api.session.post(f"{api.url}/mj/task/list-by-condition", json=["1"], timeout=10)
    assert bad.status_code == 400 and bad.json()["description"] == "do_request_failed "


def test_another_tokens_task_is_not_found(start_emulator, client_for, png):
    server = start_emulator(gateway=True, gateway_refresh=60, tokens=["alice", "bob"], job_seconds=5)
    alice, bob = client_for(server, token="alice"), client_for(server, token="bob")
    task_id = alice.submit_ok(png(4, 4))
    assert alice.fetch(task_id).status_code == 200
    response = bob.fetch(task_id)
    assert response.status_code == 400 and response.json() == TASK_NO_FOUND
    assert bob.list([task_id]) == []


def test_the_proxy_alone_answers_200_with_an_empty_body(api):
    response = api.fetch("1725017482366993")
    assert response.status_code == 200 and response.content == b""


# -------------------------------------------------------------------------------------- callbacks
def test_notify_hook_is_dropped_before_the_proxy(start_emulator, client_for, png, hook_receiver):
    hook_url, received = hook_receiver
    api = _gateway(start_emulator, client_for, job_seconds=0.1)
    task_id = api.submit_ok(png(4, 4), notifyHook=hook_url)
    upstream = _wait_upstream(api, task_id, {"SUCCESS"})
    assert upstream["properties"]["notifyHook"] is None
    stats = api.server.stats()
    assert stats["gateway"]["notify_hooks_dropped"] == 1
    assert stats["notify_sent"] == stats["notify_failed"] == stats["notify_pending"] == 0
    assert received == []


# ------------------------------------------------------------------------------------------ images
def test_image_url_is_forwarded_through_the_gateway_and_served_without_a_token(
    start_emulator, client_for, png
):
    api = _gateway(start_emulator, client_for, job_seconds=0.1)
    image = png(20, 10, (250, 200, 0))
    task_id = api.submit_ok(image)
    _wait_upstream(api, task_id, {"SUCCESS"})
    _refresh(api)
    task = api.task(task_id)
    assert task["imageUrl"] == f"{api.url}/mj/image/{task_id}"
    response = requests.get(task["imageUrl"], timeout=10)  # no Authorization header
    assert response.status_code == 200 and response.content == image
    assert response.headers["content-type"] == "image/png"
    unknown = requests.get(f"{api.url}/mj/image/1725017482366993", timeout=10)
    assert unknown.status_code == 400 and unknown.json() == {"error": "midjourney_task_not_found"}


def test_image_url_carries_a_rand_query_while_not_finished(start_emulator, client_for, png):
    api = _gateway(start_emulator, client_for, job_seconds=30)
    task_id = api.submit_ok(png(4, 4))
    _wait_upstream(api, task_id, {"IN_PROGRESS"})
    _refresh(api)
    task = api.task(task_id)
    assert task["status"] == "IN_PROGRESS"
    assert task["imageUrl"].startswith(f"{api.url}/mj/image/{task_id}?rand=")


# ------------------------------------------------------------------------------------ mode prefixes
@pytest.mark.parametrize("mode", ["mj-fast", "mj-relax", "mj-turbo", "anything"])
def test_every_route_answers_under_a_mode_prefix(start_emulator, client_for, data_url, png, mode):
    api = _gateway(start_emulator, client_for, job_seconds=0.05)
    base = f"{api.url}/{mode}"
    answer = api.session.post(f"{base}/mj/submit/describe", json={"base64": data_url(png(4, 4))}, timeout=10)
    task_id = answer.json()["result"]
    assert answer.json()["code"] == 1
    assert api.session.get(f"{base}/mj/task/{task_id}/fetch", timeout=10).json()["id"] == task_id
    listed = api.session.post(f"{base}/mj/task/list-by-condition", json={"ids": [task_id]}, timeout=10).json()
    assert [t["id"] for t in listed] == [task_id]
    _wait_upstream(api, task_id, {"SUCCESS"})
    _refresh(api)
    assert requests.get(f"{base}/mj/image/{task_id}", timeout=10).status_code == 200
    assert api.server.stats()["requests_by_mode"] == {mode: 4}


def test_the_proxy_alone_routes_speed_modes_but_not_any_prefix(api, data_url, png):
    body = {"base64": data_url(png(4, 4))}
    assert (
        api.session.post(f"{api.url}/mj-turbo/mj/submit/describe", json=body, timeout=10).json()["code"] == 1
    )
    assert api.session.post(f"{api.url}/foo/mj/submit/describe", json=body, timeout=10).status_code == 404


# ------------------------------------------------------------------------------------------- tokens
@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "未提供令牌"), ({"Authorization": "Bearer wrong"}, "无效的令牌")],
)
def test_token_problems_are_401_in_new_api_shape(start_emulator, client_for, png, headers, message):
    api = _gateway(start_emulator, client_for)
    response = requests.post(
        f"{api.url}/mj/submit/describe", json={"base64": ""}, headers=headers, timeout=10
    )
    assert response.status_code == 401
    assert response.json() == {"error": {"message": message, "type": "new_api_error"}}
    assert api.server.stats()["jobs_created"] == 0


def test_an_expired_token_is_401_in_new_api_shape_and_counted(start_emulator, client_for):
    api = _gateway(start_emulator, client_for, faults={"token_expired": True})
    response = api.fetch("1")
    assert response.status_code == 401
    assert response.json() == {"error": {"message": "该令牌已过期", "type": "new_api_error"}}
    assert api.server.stats()["faults_injected"]["token_expired"] == 1


def test_the_mj_api_secret_header_is_read_when_authorization_is_absent(
    start_emulator, client_for, data_url, png
):
    api = _gateway(start_emulator, client_for)
    headers = {"mj-api-secret": "emulator-token", "Authorization": "midjourney-proxy"}
    body = {"base64": data_url(png(4, 4))}
    answer = requests.post(f"{api.url}/mj/submit/describe", json=body, headers=headers, timeout=10)
    assert answer.json()["code"] == 1


# ----------------------------------------------------------------------------- accounting seams
def test_balance_refusal_is_400_quota_not_enough_and_creates_nothing(start_emulator, client_for, png):
    server = start_emulator(gateway=True, job_seconds=5)
    api = client_for(server)
    asked: list[tuple[str, str]] = []

    def charge(token: str, model: str) -> bool:
        asked.append((token, model))
        return False

    server.app.emulator_state.charge = charge
    response = api.submit(png(4, 4))
    assert response.status_code == 400
    assert response.json() == {"code": 4, "description": "quota_not_enough ", "type": "upstream_error"}
    assert asked == [("emulator-token", "mj_describe")]
    stats = server.stats()
    assert stats["tasks_created"] == stats["jobs_created"] == 0 and stats["quota_refused"] == 1


def test_a_refused_submit_is_refunded_and_an_exhausted_token_is_401(start_emulator, client_for, png):
    server = start_emulator(gateway=True, job_seconds=5)
    api = client_for(server)
    state = server.app.emulator_state
    refunds: list[tuple[str, str]] = []
    state.refund = lambda token, model: refunds.append((token, model))
    api.session.post(f"{api.url}/mj/submit/describe", json={"base64": ""}, timeout=10)
    api.submit_ok(png(4, 4))
    assert refunds == [("emulator-token", "mj_describe")]

    state.token_check = lambda token: "该令牌额度已用尽"
    response = api.submit(png(5, 5))
    assert response.status_code == 401
    assert response.json() == {"error": {"message": "该令牌额度已用尽", "type": "new_api_error"}}


# ----------------------------------------------------------------------- faults through the gateway
def test_an_html_502_after_processing_leaves_a_job_the_gateway_knows(start_emulator, client_for, png):
    api = _gateway(start_emulator, client_for, job_seconds=5, faults={"html_error_after": 1.0})
    assert api.submit(png(4, 4), state="lost").status_code == 502
    stats = api.server.stats()
    assert stats["jobs_created"] == stats["jobs_unanswered"] == stats["gateway"]["rows"] == 1
