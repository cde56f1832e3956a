"""The token's quota: parsing of the three gateway answers (units!), endpoint fallback, QuotaGuard."""

from __future__ import annotations

import asyncio
import base64
import math
from datetime import datetime, timezone

import pytest
import requests

from airflow_provider_apicore.account import (
    SUBSCRIPTION,
    USAGE,
    USAGE_TOKEN,
    QuotaGuard,
    TokenQuota,
    quota_from_dashboard,
    quota_from_usage_token,
    read_quota,
)
from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreConfigError,
    ApicoreQuotaExceededError,
    ApicoreResponseError,
)
from airflow_provider_apicore.hooks.apicore import ApicoreHook
from tests.helpers.imagegen import make_png

# The gateway's own example bodies (apicore-mj-protocol-family.md §12).
USAGE_TOKEN_BODY = {
    "code": True,
    "message": "ok",
    "data": {
        "object": "token_usage",
        "name": "我的令牌",
        "total_granted": 1000000,
        "total_used": 250000,
        "total_available": 750000,
        "unlimited_quota": False,
        "model_limits": {},
        "model_limits_enabled": False,
        "expires_at": 0,
    },
}
SUBSCRIPTION_BODY = {
    "object": "billing_subscription",
    "has_payment_method": True,
    "soft_limit_usd": 5,
    "hard_limit_usd": 5,
    "system_hard_limit_usd": 5,
    "access_until": 0,
}
USAGE_BODY = {"object": "list", "total_usage": 69.5}


def limited(remaining: float, used: float = 0.0) -> TokenQuota:
    return TokenQuota(remaining + used, used, remaining, False, None, "test")


UNLIMITED = TokenQuota(math.inf, 3.0, math.inf, True, None, "test")


# ----------------------------------------------------------------------------- parsing


def test_usage_token_amounts_are_raw_units_500000_per_usd():
    quota = quota_from_usage_token(USAGE_TOKEN_BODY)
    assert (quota.limit_usd, quota.used_usd, quota.remaining_usd) == (2.0, 0.5, 1.5)
    assert not quota.unlimited and quota.expires_at is None and quota.name == "我的令牌"
    assert quota.source == USAGE_TOKEN


def test_usage_token_unlimited_and_expiry_in_seconds():
    body = {
        "code": True,
        "data": {**USAGE_TOKEN_BODY["data"], "unlimited_quota": True, "total_available": -1},
    }
    body["data"]["expires_at"] = 1_800_000_000
    quota = quota_from_usage_token(body)
    assert quota.unlimited and quota.remaining_usd == math.inf and quota.limit_usd == math.inf
    assert quota.used_usd == 0.5
    assert quota.expires_at == datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc)
    assert quota.to_dict()["remaining_usd"] is None and quota.describe().startswith("unlimited")


@pytest.mark.parametrize(
    "body, words",
    [
        ({**USAGE_TOKEN_BODY, "code": "true"}, "'code' must be true"),
        ({"success": False, "message": "无效的令牌"}, "无效的令牌"),
        ({"code": True, "data": {**USAGE_TOKEN_BODY["data"], "total_used": "250000"}}, "'total_used'"),
        ({"code": True, "data": {**USAGE_TOKEN_BODY["data"], "unlimited_quota": 0}}, "unlimited_quota"),
        ({"code": True}, "no 'data'"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_usage_token_refuses_what_is_not_the_shape(body, words):
    with pytest.raises(ApicoreResponseError, match=words):
        quota_from_usage_token(body)


def test_dashboard_limit_in_usd_usage_in_cents():
    quota = quota_from_dashboard(SUBSCRIPTION_BODY, USAGE_BODY)
    assert (quota.limit_usd, quota.used_usd) == (5.0, 0.695)
    assert quota.remaining_usd == pytest.approx(4.305)
    assert quota.source == f"{SUBSCRIPTION} + {USAGE}"


def test_dashboard_100000000_means_unlimited_and_access_until_seconds():
    sub = {**SUBSCRIPTION_BODY, "hard_limit_usd": 100000000, "access_until": 1_800_000_000}
    quota = quota_from_dashboard(sub, USAGE_BODY)
    assert quota.unlimited and quota.remaining_usd == math.inf and quota.used_usd == 0.695
    assert quota.expires_at is not None and quota.expires_at.year == 2027
    # An unlimited token needs no usage answer; a limited one does.
    assert quota_from_dashboard(sub, None).unlimited
    with pytest.raises(ApicoreResponseError, match="cannot be computed"):
        quota_from_dashboard(SUBSCRIPTION_BODY, None)


def test_dashboard_error_in_a_200_answer():
    with pytest.raises(ApicoreResponseError, match="boom"):
        quota_from_dashboard({"error": {"message": "boom", "type": "upstream_error"}}, USAGE_BODY)
    with pytest.raises(ApicoreResponseError, match="total_usage"):
        quota_from_dashboard(SUBSCRIPTION_BODY, {"object": "list"})


def test_overspent_token_reads_zero_not_negative():
    quota = quota_from_dashboard(SUBSCRIPTION_BODY, {"total_usage": 600})
    assert quota.remaining_usd == 0.0 and quota.exhausted


# ----------------------------------------------------------------------------- fallback


def getter(answers: dict):
    asked: list[str] = []

    def get(path: str):
        asked.append(path)
        answer = answers.get(path)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return get, asked


def test_read_quota_prefers_usage_token():
    get, asked = getter({USAGE_TOKEN: USAGE_TOKEN_BODY, SUBSCRIPTION: SUBSCRIPTION_BODY, USAGE: USAGE_BODY})
    assert read_quota(get).remaining_usd == 1.5
    assert asked == [USAGE_TOKEN]


def test_read_quota_falls_back_to_the_dashboard_on_404_or_error_body():
    get, asked = getter({SUBSCRIPTION: SUBSCRIPTION_BODY, USAGE: USAGE_BODY})
    assert read_quota(get).remaining_usd == pytest.approx(4.305)
    assert asked == [USAGE_TOKEN, SUBSCRIPTION, USAGE]
    get, _ = getter(
        {USAGE_TOKEN: {"success": False, "message": "x"}, SUBSCRIPTION: SUBSCRIPTION_BODY, USAGE: USAGE_BODY}
    )
    assert read_quota(get).source.startswith(SUBSCRIPTION)


def test_read_quota_exhausted_token_on_the_dashboard_is_zero_left():
    exhausted = ApicoreAuthError(
        "apicore_default", 401, "该令牌额度已用尽 TokenStatusExhausted[sk-abc***xyz]"
    )
    get, _ = getter({SUBSCRIPTION: exhausted})
    quota = read_quota(get)
    assert quota.exhausted and quota.remaining_usd == 0.0 and quota.limit_usd is None
    get, _ = getter({SUBSCRIPTION: ApicoreQuotaExceededError("quota_not_enough", status=401)})
    assert read_quota(get).exhausted


def test_read_quota_other_auth_errors_propagate():
    get, _ = getter({SUBSCRIPTION: ApicoreAuthError("apicore_default", 401, "无效的令牌")})
    with pytest.raises(ApicoreAuthError):
        read_quota(get)


def test_read_quota_nothing_answers():
    get, _ = getter({})
    with pytest.raises(ApicoreResponseError, match="none of the token quota endpoints") as info:
        read_quota(get)
    assert USAGE_TOKEN in str(info.value) and SUBSCRIPTION in str(info.value)


# ----------------------------------------------------------------------------- the guard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reader:
    def __init__(self, *quotas: TokenQuota | Exception) -> None:
        self.quotas = list(quotas)
        self.calls = 0

    def __call__(self) -> TokenQuota:
        self.calls += 1
        item = self.quotas[min(self.calls, len(self.quotas)) - 1]
        if isinstance(item, Exception):
            raise item
        return item


def test_preflight_refuses_a_batch_the_balance_cannot_pay_and_gives_both_numbers():
    guard = QuotaGuard(Reader(limited(1.25)), estimated_cost_per_image_usd=0.05, conn_id="apicore_default")
    with pytest.raises(ApicoreQuotaExceededError) as info:
        guard.preflight(40)
    err = info.value
    assert (err.remaining_usd, err.required_usd) == (1.25, pytest.approx(2.0))
    assert "2.0000 USD" in str(err) and "1.2500 USD" in str(err) and "40 pending images" in str(err)
    assert "Top up" in str(err) and "clear this task" in str(err)


def test_preflight_passes_when_the_balance_covers_it_or_is_unlimited():
    guard = QuotaGuard(Reader(limited(1.25)), estimated_cost_per_image_usd=0.05)
    assert guard.preflight(25).remaining_usd == 1.25
    assert guard.balance_before.remaining_usd == 1.25
    assert QuotaGuard(Reader(UNLIMITED), estimated_cost_per_image_usd=9.0).preflight(10**6).unlimited


def test_preflight_with_an_exhausted_token_refuses_even_without_an_estimate():
    with pytest.raises(ApicoreQuotaExceededError, match="no balance left"):
        QuotaGuard(Reader(limited(0.0, 5.0))).preflight(3)
    # Nothing to submit: no reason to refuse.
    assert QuotaGuard(Reader(limited(0.0, 5.0))).preflight(0).exhausted


def test_preflight_unreadable_balance_fails_only_when_a_check_was_asked_for():
    down = ApicoreResponseError("the gateway answers none of the token quota endpoints")
    assert QuotaGuard(Reader(down)).preflight(10) is None
    with pytest.raises(ApicoreResponseError, match="estimated_cost_per_image_usd"):
        QuotaGuard(Reader(down), estimated_cost_per_image_usd=0.05).preflight(10)


def test_may_submit_reads_at_most_once_per_interval_and_stops_below_the_floor():
    clock = Clock()
    reader = Reader(limited(1.0), limited(0.6), limited(0.4))
    guard = QuotaGuard(reader, min_quota_usd=0.5, interval=30, clock=clock)
    guard.preflight(100)
    assert reader.calls == 1
    for _ in range(50):  # fifty images in the same interval: no read
        assert guard.may_submit()
    assert reader.calls == 1
    clock.now += 30
    assert guard.may_submit() and reader.calls == 2  # 0.6 left
    clock.now += 10
    assert guard.may_submit() and reader.calls == 2
    clock.now += 20
    assert not guard.may_submit() and reader.calls == 3  # 0.4 left < 0.5
    assert "0.4000 USD is below min_quota_usd=0.5" in guard.stop_reason


def test_may_submit_keeps_going_on_a_read_failure_and_without_a_floor():
    clock = Clock()
    reader = Reader(limited(1.0), ApicoreResponseError("hiccup"))
    guard = QuotaGuard(reader, min_quota_usd=0.5, interval=1, clock=clock)
    guard.preflight(1)
    clock.now += 5
    assert guard.may_submit() and reader.calls == 2 and guard.last.remaining_usd == 1.0
    no_floor = Reader(limited(0.0))
    assert QuotaGuard(no_floor).may_submit() and no_floor.calls == 0


def test_summary_balance_before_after_and_spend():
    guard = QuotaGuard(Reader(limited(1.3, 0.2), limited(0.05, 1.45)))
    guard.preflight(25)
    guard.finish()
    assert guard.summary() == {
        "balance_before_usd": 1.3,
        "balance_after_usd": 0.05,
        "spent_usd": 1.25,
        "unlimited": False,
    }
    assert "spent 1.2500 USD" in guard.describe()
    unlimited = QuotaGuard(Reader(UNLIMITED, TokenQuota(math.inf, 4.0, math.inf, True, None, "t")))
    unlimited.preflight(1)
    unlimited.finish()
    assert unlimited.summary() == {
        "balance_before_usd": None,
        "balance_after_usd": None,
        "spent_usd": 1.0,
        "unlimited": True,
    }
    assert "before unlimited" in unlimited.describe()


def test_exceeded_error_names_the_balance_and_the_unsent_images():
    guard = QuotaGuard(Reader(limited(0.02)), conn_id="apicore_default")
    guard.finish()
    err = guard.exceeded("APICore refused a submission for balance (quota_not_enough)", 15)
    assert err.remaining_usd == 0.02
    assert "15 images were not sent and stay pending" in str(err) and "0.0200 USD" in str(err)


@pytest.mark.parametrize(
    "kwargs", [{"min_quota_usd": -1}, {"estimated_cost_per_image_usd": "a"}, {"interval": -1}]
)
def test_guard_arguments_are_checked(kwargs):
    with pytest.raises(ApicoreConfigError):
        QuotaGuard(Reader(UNLIMITED), **kwargs)


# ----------------------------------------------------------------------------- over loopback


def billing(emulator, **changes) -> dict:
    """``PUT /_emulator/billing`` on the session emulator."""
    response = requests.put(f"{emulator.url}/_emulator/billing", json=changes, timeout=10)
    response.raise_for_status()
    return response.json()


def png_data_url(seed: int) -> str:
    png = make_png(4, 4, (seed % 256, (seed * 7) % 256, 90))
    return "data:image/png;base64," + base64.b64encode(png).decode()


VARIANTS = {
    "usage-token": (["usage_token", "subscription", "usage"], USAGE_TOKEN),
    "dashboard": (["subscription", "usage"], f"{SUBSCRIPTION} + {USAGE}"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_get_quota_of_a_limited_token_on_each_endpoint_variant(apicore_conn, variant):
    endpoints, source = VARIANTS[variant]
    billing(
        apicore_conn,
        endpoints=endpoints,
        prices_usd={"mj_describe": 0.05},
        accounts={apicore_conn.token: {"balance_usd": 1.3, "used_usd": 0.2, "expires_at": 1_800_000_000}},
    )
    hook = ApicoreHook()
    quota = hook.get_quota()
    assert (quota.limit_usd, quota.used_usd, quota.remaining_usd) == (1.5, 0.2, 1.3)
    assert not quota.unlimited and quota.source == source and quota.expires_at.year == 2027
    for i in range(3):  # three paid jobs: 0.15 USD
        hook.submit_describe({"base64": png_data_url(i)}, validate=False)
    quota = hook.get_quota()
    assert quota.used_usd == pytest.approx(0.35) and quota.remaining_usd == pytest.approx(1.15)
    assert quota.limit_usd == pytest.approx(1.5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_get_quota_of_an_unlimited_token_on_each_endpoint_variant(apicore_conn, variant):
    endpoints, source = VARIANTS[variant]
    billing(apicore_conn, endpoints=endpoints, accounts={apicore_conn.token: {"unlimited": True}})
    hook = ApicoreHook()
    hook.submit_describe({"base64": png_data_url(1)}, validate=False)
    quota = hook.get_quota()
    assert quota.unlimited and quota.remaining_usd == math.inf and quota.source == source
    assert quota.used_usd == pytest.approx(0.05) and quota.expires_at is None
    assert quota.describe() == "unlimited"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_aget_quota_reads_the_same_without_blocking(apicore_conn, variant):
    endpoints, source = VARIANTS[variant]
    billing(apicore_conn, endpoints=endpoints, accounts={apicore_conn.token: {"balance_usd": 2.5}})

    async def run() -> TokenQuota:
        hook = ApicoreHook()
        try:
            return await hook.aget_quota()
        finally:
            await hook.aclose()

    quota = asyncio.run(run())
    assert quota.remaining_usd == 2.5 and quota.source == source


def test_get_quota_of_an_exhausted_token_on_the_dashboard_is_zero(apicore_conn):
    billing(
        apicore_conn, endpoints=["subscription", "usage"], accounts={apicore_conn.token: {"balance_usd": 0}}
    )
    raw = requests.get(
        f"{apicore_conn.url}{SUBSCRIPTION}",
        headers={"Authorization": f"Bearer {apicore_conn.token}"},
        timeout=10,
    )
    assert raw.status_code == 401 and "额度已用尽" in raw.json()["error"]["message"]
    quota = ApicoreHook().get_quota()
    assert quota.exhausted and quota.remaining_usd == 0.0


def test_get_quota_of_an_exhausted_token_on_the_usage_route_is_zero(apicore_conn):
    billing(apicore_conn, accounts={apicore_conn.token: {"balance_usd": 0, "used_usd": 2.0}})
    quota = ApicoreHook().get_quota()
    assert quota.exhausted and quota.source == USAGE_TOKEN
    assert (quota.limit_usd, quota.used_usd, quota.remaining_usd) == (2.0, 2.0, 0.0)


def test_get_quota_when_the_gateway_has_no_quota_endpoint(apicore_conn):
    billing(apicore_conn, endpoints=[])
    with pytest.raises(ApicoreResponseError, match="none of the token quota endpoints"):
        ApicoreHook().get_quota()


def test_test_connection_reports_the_balance_or_unlimited(apicore_conn):
    billing(apicore_conn, accounts={apicore_conn.token: {"balance_usd": 1.25}})
    ok, message = ApicoreHook().test_connection()
    assert ok and "token was accepted" in message and "Balance: 1.2500 USD left of 1.2500 USD" in message
    billing(apicore_conn, accounts={apicore_conn.token: {"unlimited": True}})
    ok, message = ApicoreHook().test_connection()
    assert ok and message.endswith("Balance: unlimited.")
    assert apicore_conn.token not in message


def test_test_connection_passes_when_only_the_balance_is_unavailable(apicore_conn):
    billing(apicore_conn, endpoints=[])
    ok, message = ApicoreHook().test_connection()
    assert ok and "token was accepted" in message and "Balance not available" in message


def test_preflight_against_the_emulator_refuses_forty_images_on_a_balance_for_twenty_five(apicore_conn):
    billing(
        apicore_conn, prices_usd={"mj_describe": 0.05}, accounts={apicore_conn.token: {"balance_usd": 1.27}}
    )
    hook = ApicoreHook()
    guard = QuotaGuard(hook.get_quota, estimated_cost_per_image_usd=0.05, conn_id="apicore_default")
    with pytest.raises(ApicoreQuotaExceededError) as info:
        guard.preflight(40)
    assert info.value.remaining_usd == pytest.approx(1.27) and info.value.required_usd == pytest.approx(2.0)
    assert "1.2700 USD" in str(info.value) and "2.0000 USD" in str(info.value)
    assert apicore_conn.stats()["tasks_created"] == 0
    assert guard.preflight(25).remaining_usd == pytest.approx(1.27)


def test_single_submit_past_the_balance_raises_quota_exceeded_saying_what_to_do(apicore_conn):
    billing(
        apicore_conn, prices_usd={"mj_describe": 0.05}, accounts={apicore_conn.token: {"balance_usd": 0.07}}
    )
    hook = ApicoreHook()
    hook.submit_describe({"base64": png_data_url(1)}, validate=False)
    with pytest.raises(ApicoreQuotaExceededError) as info:
        hook.submit_describe({"base64": png_data_url(2)}, validate=False)
    assert info.value.status == 400 and "quota_not_enough" in str(info.value)
    assert "Top up" in str(info.value) and "clear this task" in str(info.value)
    assert apicore_conn.stats()["tasks_created"] == 1
    assert hook.get_quota().remaining_usd == pytest.approx(0.02)
