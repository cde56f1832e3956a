"""The emulator's per-token accounting and the gateway's three quota endpoints, over loopback HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.emulator.conftest import TOKEN, Api, png_bytes

QUOTA_NOT_ENOUGH = {"code": 4, "description": "quota_not_enough ", "type": "upstream_error"}
UNITS = 500_000  # raw quota units per USD


def put_billing(api: Api, **changes: Any) -> requests.Response:
    return requests.put(f"{api.url}/_emulator/billing", json=changes, timeout=10)


def get(api: Api, path: str, **kwargs: Any) -> requests.Response:
    return api.session.get(f"{api.url}{path}", timeout=10, **kwargs)


def image(i: int) -> bytes:
    return png_bytes(8 + i, 8)


def test_tokens_are_unlimited_by_default_and_spending_is_still_counted(api):
    api.submit_ok(image(1))
    api.submit_ok(image(2))
    data = get(api, "/api/usage/token/").json()["data"]
    assert data["unlimited_quota"] is True and data["total_used"] == 2 * 0.05 * UNITS
    sub = get(api, "/v1/dashboard/billing/subscription").json()
    assert sub["hard_limit_usd"] == sub["soft_limit_usd"] == sub["system_hard_limit_usd"] == 100000000
    assert get(api, "/v1/dashboard/billing/usage").json() == {"object": "list", "total_usage": 10.0}


def test_a_limited_token_pays_per_job_then_gets_quota_not_enough(api):
    assert put_billing(api, accounts={TOKEN: {"balance_usd": 0.12}}).status_code == 200
    api.submit_ok(image(1))
    api.submit_ok(image(2))
    refused = api.submit(image(3))
    assert refused.status_code == 400 and refused.json() == QUOTA_NOT_ENOUGH
    stats = requests.get(f"{api.url}/_emulator/stats", timeout=10).json()
    assert stats["tasks_created"] == 2 and stats["quota_refused"] == 1
    body = get(api, "/api/usage/token/").json()
    assert body["code"] is True and body["message"] == "ok"
    assert body["data"] | {"name": "x"} == {
        "object": "token_usage",
        "name": "x",
        "total_granted": 60000,
        "total_used": 50000,
        "total_available": 10000,
        "unlimited_quota": False,
        "model_limits": {},
        "model_limits_enabled": False,
        "expires_at": 0,
    }
    assert get(api, "/v1/dashboard/billing/subscription").json() == {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": 0.12,
        "hard_limit_usd": 0.12,
        "system_hard_limit_usd": 0.12,
        "access_until": 0,
    }
    # total_usage is in US cents
    assert get(api, "/v1/dashboard/billing/usage").json()["total_usage"] == pytest.approx(10.0)
    # Topping up lets the next submission through.
    put_billing(api, accounts={TOKEN: {"balance_usd": 1.0, "used_usd": 0.1}})
    api.submit_ok(image(3))


def test_the_price_per_model_is_configurable(api):
    put_billing(api, prices_usd={"mj_describe": 0.2}, accounts={TOKEN: {"balance_usd": 0.5}})
    api.submit_ok(image(1))
    api.submit_ok(image(2))
    assert api.submit(image(3)).json() == QUOTA_NOT_ENOUGH
    assert get(api, "/api/usage/token/").json()["data"]["total_available"] == pytest.approx(0.1 * UNITS)


def test_refused_submissions_are_not_charged(start_emulator):
    api = Api(start_emulator(concurrency=1, queue_size=0))
    put_billing(api, accounts={TOKEN: {"balance_usd": 1.0}})
    bad = api.session.post(f"{api.url}/mj/submit/describe", json={"base64": "not a data url"}, timeout=10)
    assert bad.json()["code"] == 4
    api.submit_ok(image(1))
    assert api.submit(image(2)).json()["code"] == 23  # queue full: nothing accepted
    data = get(api, "/api/usage/token/").json()["data"]
    assert data["total_used"] == 0.05 * UNITS and data["total_available"] == 0.95 * UNITS


def test_an_exhausted_token_gets_the_gateways_401_on_the_dashboard_routes(api):
    put_billing(api, prices_usd={"mj_describe": 0.05}, accounts={TOKEN: {"balance_usd": 0.05}})
    api.submit_ok(image(1))  # spends it all
    for path in ("/v1/dashboard/billing/subscription", "/v1/dashboard/billing/usage"):
        answer = get(api, path)
        assert answer.status_code == 401, path
        error = answer.json()["error"]
        assert error["type"] == "new_api_error"
        assert error["message"].startswith("该令牌额度已用尽 TokenStatusExhausted[emu***ken]")
        assert TOKEN not in error["message"]


def test_an_exhausted_token_is_still_answered_by_the_read_only_usage_route_and_refused_elsewhere(api):
    put_billing(api, prices_usd={"mj_describe": 0.05}, accounts={TOKEN: {"balance_usd": 0.05}})
    task_id = api.submit_ok(image(1))
    data = get(api, "/api/usage/token/").json()["data"]
    assert (data["total_available"], data["total_used"], data["unlimited_quota"]) == (0, 25000, False)
    # Every other route behind the gateway's token auth refuses it, in the gateway's shape.
    for answer in (api.submit(image(2)), api.fetch(task_id)):
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "new_api_error"
        assert "额度已用尽" in answer.json()["error"]["message"]


def test_endpoints_can_be_switched_off_and_have_the_gateways_aliases(api):
    put_billing(api, endpoints=["subscription", "usage"])
    assert get(api, "/api/usage/token/").status_code == 404
    assert get(api, "/dashboard/billing/subscription").status_code == 200
    assert get(api, "/dashboard/billing/usage").status_code == 200
    put_billing(api, endpoints=["usage_token"])
    assert get(api, "/v1/dashboard/billing/subscription").status_code == 404
    redirect = get(api, "/api/usage/token", allow_redirects=False)
    assert redirect.status_code == 301 and redirect.headers["location"] == "/api/usage/token/"


def test_quota_endpoints_need_a_known_token(api):
    for path in ("/api/usage/token/", "/v1/dashboard/billing/subscription"):
        answer = requests.get(f"{api.url}{path}", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert answer.status_code == 401


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"accounts": {TOKEN: {"balance_usd": -1}}}, "balance_usd"),
        ({"accounts": {TOKEN: {"balance": 1}}}, "unknown field"),
        ({"prices_usd": {"mj_describe": "cheap"}}, "prices_usd[mj_describe]"),
        ({"endpoints": ["usage_token", "credits"]}, "endpoints"),
        ({"price": 1}, "unknown billing field"),
    ],
)
def test_bad_billing_configuration_is_refused_naming_the_field(api, changes, words):
    before = requests.get(f"{api.url}/_emulator/billing", timeout=10).json()
    answer = put_billing(api, **changes)
    assert answer.status_code == 400 and words in answer.json()["error"]["message"]
    assert requests.get(f"{api.url}/_emulator/billing", timeout=10).json() == before


def test_reset_puts_the_billing_back_as_it_was_created(api):
    put_billing(api, accounts={TOKEN: {"balance_usd": 0.05}}, endpoints=["usage"])
    api.submit_ok(image(1))
    requests.post(f"{api.url}/_emulator/reset", timeout=10).raise_for_status()
    data = get(api, "/api/usage/token/").json()["data"]
    assert data["unlimited_quota"] is True and data["total_used"] == 0
