"""
Per-token accounting, as a new-api gateway does it: a price per action, a balance per token,
unlimited tokens, refusals once the balance is spent, and the three quota endpoints.

Amounts are kept in the gateway's raw quota units (``500000`` units = 1 USD) and shown the way
each endpoint shows them (``apicore-mj-protocol-family.md`` §9.3, §12):

* ``GET /api/usage/token/``: raw units, ``unlimited_quota``, ``expires_at`` seconds (``0`` = never),
  ``code`` a boolean; exhausted tokens are still answered (the gateway's read-only token auth);
* ``GET /v1/dashboard/billing/subscription`` (also without ``/v1``): the grant in USD,
  ``100000000`` for an unlimited token, ``access_until`` seconds (``0`` = never);
* ``GET /v1/dashboard/billing/usage`` (also without ``/v1``): ``total_usage`` in US cents.

On the two dashboard routes an exhausted token gets the gateway's 401
``{"error": {"message": "该令牌额度已用尽 …", "type": "new_api_error"}}``. A submission the token
cannot pay for gets HTTP 400 ``{"code": 4, "description": "quota_not_enough ", "type":
"upstream_error"}`` and creates nothing. A submission is paid when it is accepted (code 1, 21 or 22):
:meth:`Billing.charge` reserves the price before the submission is processed and
:meth:`Billing.refund` gives it back when the submission was refused, as the gateway's
pre-consume/refund does, so two submissions processed at once can never overdraw a token.

Tokens without an account of their own are unlimited (their spending is still counted), so an
emulator that was not told about money behaves as before. The admin route ``/_emulator/billing``
reads and changes the accounts, prices and which quota endpoints exist; ``/_emulator/reset`` puts
the billing back to how it was created.
"""

from __future__ import annotations

import copy
import math
import secrets
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from airflow_provider_apicore.emulator.errors import EmulatorConfigError

if TYPE_CHECKING:
    from airflow_provider_apicore.emulator.state import EmulatorState

#: Raw quota units per US dollar (new-api ``QuotaPerUnit``).
QUOTA_PER_USD = 500_000
#: The subscription endpoint's limit for an unlimited token.
UNLIMITED_USD = 100_000_000
#: Price of a model without a price of its own, in USD.
DEFAULT_PRICE_USD = 0.05
#: Emulator prices per gateway model name, in USD (illustrative; APICore's own prices are not
#: public). The gateway names its prices ``mj_<action>`` (§9.2); fetch, list and image-seed are free.
DEFAULT_PRICES_USD: dict[str, float] = {
    "mj_imagine": 0.1,
    "mj_describe": 0.05,
    "mj_blend": 0.1,
    "mj_shorten": 0.1,
    "mj_upscale": 0.05,
    "mj_variation": 0.1,
    "mj_high_variation": 0.1,
    "mj_low_variation": 0.1,
    "mj_reroll": 0.1,
    "mj_pan": 0.1,
    "mj_zoom": 0.1,
    "mj_custom_zoom": 0.0,
    "mj_inpaint": 0.0,
    "mj_modal": 0.1,
    "swap_face": 0.05,
    "mj_upload": 0.0,
}
#: The quota endpoints, by name; ``endpoints`` in the configuration chooses which ones exist.
ENDPOINT_NAMES = ("usage_token", "subscription", "usage")

QUOTA_NOT_ENOUGH = {"code": 4, "description": "quota_not_enough ", "type": "upstream_error"}
EXHAUSTED_MESSAGE = "该令牌额度已用尽 TokenStatusExhausted[{masked}]"


def usd_to_units(usd: float) -> int:
    """US dollars to raw quota units (rounded to the nearest unit)."""
    return round(usd * QUOTA_PER_USD)


def mask_token(token: str) -> str:
    """How the gateway shows a token in an error: ``sk-abc***xyz``."""
    if len(token) <= 6:
        return "***"
    return f"{token[:3]}***{token[-3:]}"


def _usd(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise EmulatorConfigError(f"{name} must be a number of US dollars >= 0, got {value!r}")
    return float(value)


class Account:
    """
    One token's quota.

    :param remain: raw units left
    :param used: raw units spent
    :param unlimited: no limit (``remain`` is then not consulted)
    :param expires_at: epoch seconds the token expires, ``0`` = never
    :param name: the token's name as the gateway shows it
    """

    __slots__ = ("expires_at", "name", "remain", "unlimited", "used")

    def __init__(
        self,
        remain: int = 0,
        used: int = 0,
        unlimited: bool = True,
        expires_at: int = 0,
        name: str = "emulator",
    ) -> None:
        self.remain = remain
        self.used = used
        self.unlimited = unlimited
        self.expires_at = expires_at
        self.name = name

    @property
    def exhausted(self) -> bool:
        return not self.unlimited and self.remain <= 0

    @classmethod
    def from_dict(cls, token: str, spec: Any) -> Account:
        """``{"balance_usd": 1.25, "used_usd": 0, "unlimited": false, "expires_at": 0, "name": "..."}``."""
        if not isinstance(spec, dict):
            raise EmulatorConfigError(f"accounts[{mask_token(token)}] must be an object, got {spec!r}")
        unknown = sorted(set(spec) - {"balance_usd", "used_usd", "unlimited", "expires_at", "name"})
        if unknown:
            raise EmulatorConfigError(f"accounts[{mask_token(token)}]: unknown field(s) {', '.join(unknown)}")
        unlimited = spec.get("unlimited", "balance_usd" not in spec)
        if not isinstance(unlimited, bool):
            raise EmulatorConfigError(f"accounts[{mask_token(token)}].unlimited must be true or false")
        expires_at = spec.get("expires_at", 0)
        if isinstance(expires_at, bool) or not isinstance(expires_at, int) or expires_at < 0:
            raise EmulatorConfigError(
                f"accounts[{mask_token(token)}].expires_at must be epoch seconds >= 0 (0 = never)"
            )
        name = spec.get("name", "emulator")
        if not isinstance(name, str):
            raise EmulatorConfigError(f"accounts[{mask_token(token)}].name must be a string")
        return cls(
            remain=usd_to_units(_usd("balance_usd", spec.get("balance_usd", 0))),
            used=usd_to_units(_usd("used_usd", spec.get("used_usd", 0))),
            unlimited=unlimited,
            expires_at=expires_at,
            name=name,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "balance_usd": self.remain / QUOTA_PER_USD,
            "used_usd": self.used / QUOTA_PER_USD,
            "unlimited": self.unlimited,
            "expires_at": self.expires_at,
            "name": self.name,
            "remain_quota": self.remain,
            "used_quota": self.used,
        }


class Billing:
    """
    Accounts of every token, prices, and the counters behind ``GET /_emulator/billing``.

    Every method runs on the server's event loop thread (no locks), like the rest of the state.

    :param accounts: token -> account spec (see :meth:`Account.from_dict`); other tokens are unlimited
    :param prices_usd: price per gateway model name (``mj_describe`` ...) in USD, over
        :data:`DEFAULT_PRICES_USD`
    :param default_price_usd: price of a model not in ``prices_usd``
    :param endpoints: which quota endpoints exist (:data:`ENDPOINT_NAMES`); the others answer 404
    """

    def __init__(
        self,
        accounts: dict[str, Any] | None = None,
        prices_usd: dict[str, float] | None = None,
        default_price_usd: float = DEFAULT_PRICE_USD,
        endpoints: list[str] | tuple[str, ...] = ENDPOINT_NAMES,
    ) -> None:
        self._initial = {
            "accounts": copy.deepcopy(accounts or {}),
            "prices_usd": dict(prices_usd or {}),
            "default_price_usd": default_price_usd,
            "endpoints": list(endpoints),
        }
        self.reset()

    # ------------------------------------------------------------------ configuration
    def reset(self) -> None:
        """Back to the configuration the billing was created with; spending forgotten."""
        self.accounts: dict[str, Account] = {}
        self.prices: dict[str, int] = {k: usd_to_units(v) for k, v in DEFAULT_PRICES_USD.items()}
        self.default_price = usd_to_units(DEFAULT_PRICE_USD)
        self.endpoints: list[str] = list(ENDPOINT_NAMES)
        self.refused = 0
        self.charged: dict[str, int] = {}
        self.update(copy.deepcopy(self._initial))

    def update(self, changes: Any) -> None:
        """
        Apply a partial update atomically (all valid and applied, or :class:`EmulatorConfigError`).

        :param changes: ``accounts`` (token -> spec; replaces those tokens' accounts, ``null`` removes
            one), ``prices_usd`` (model -> USD, merged), ``default_price_usd``, ``endpoints``
        """
        if not isinstance(changes, dict):
            raise EmulatorConfigError("the billing update must be a JSON object")
        unknown = sorted(set(changes) - {"accounts", "prices_usd", "default_price_usd", "endpoints"})
        if unknown:
            raise EmulatorConfigError(f"unknown billing field(s): {', '.join(unknown)}")
        accounts = dict(self.accounts)
        raw_accounts = changes.get("accounts", {})
        if not isinstance(raw_accounts, dict):
            raise EmulatorConfigError("accounts must be an object of token -> account")
        for token, spec in raw_accounts.items():
            if spec is None:
                accounts.pop(token, None)
            else:
                accounts[token] = Account.from_dict(token, spec)
        prices = dict(self.prices)
        raw_prices = changes.get("prices_usd", {})
        if not isinstance(raw_prices, dict):
            raise EmulatorConfigError("prices_usd must be an object of model name -> US dollars")
        for model, usd in raw_prices.items():
            prices[str(model)] = usd_to_units(_usd(f"prices_usd[{model}]", usd))
        default_price = self.default_price
        if "default_price_usd" in changes:
            default_price = usd_to_units(_usd("default_price_usd", changes["default_price_usd"]))
        endpoints = self.endpoints
        if "endpoints" in changes:
            endpoints = changes["endpoints"]
            if not isinstance(endpoints, list) or not set(endpoints) <= set(ENDPOINT_NAMES):
                raise EmulatorConfigError(f"endpoints must be a list drawn from {', '.join(ENDPOINT_NAMES)}")
            endpoints = list(endpoints)
        self.accounts, self.prices, self.default_price, self.endpoints = (
            accounts,
            prices,
            default_price,
            endpoints,
        )

    def to_dict(self) -> dict[str, Any]:
        """The admin view (tokens in full: the emulator holds no real secrets)."""
        return {
            "accounts": {token: account.to_dict() for token, account in self.accounts.items()},
            "prices_usd": {model: units / QUOTA_PER_USD for model, units in sorted(self.prices.items())},
            "default_price_usd": self.default_price / QUOTA_PER_USD,
            "endpoints": list(self.endpoints),
            "refused_for_quota": self.refused,
            "charged": dict(self.charged),
        }

    # ------------------------------------------------------------------ accounting
    def account(self, token: str) -> Account:
        """The token's account; a token without one gets an unlimited account on first use."""
        account = self.accounts.get(token)
        if account is None:
            account = self.accounts[token] = Account()
        return account

    def price(self, model: str) -> int:
        return self.prices.get(model, self.default_price)

    def charge(self, token: str | None, model: str) -> bool:
        """
        Reserve the price of one job of ``model`` (``mj_describe`` ...) for ``token``; False (nothing
        taken) when the token cannot pay. :meth:`refund` gives it back if the job is not accepted.
        """
        if token is None:
            return True
        account = self.account(token)
        price = self.price(model)
        if not account.unlimited and account.remain < price:
            self.refused += 1
            return False
        if not account.unlimited:
            account.remain -= price
        account.used += price
        self.charged[model] = self.charged.get(model, 0) + 1
        return True

    def refund(self, token: str | None, model: str) -> None:
        """Give back a price reserved by :meth:`charge` (submission refused, or the job failed)."""
        if token is None:
            return
        account = self.account(token)
        price = self.price(model)
        if not account.unlimited:
            account.remain += price
        account.used = max(0, account.used - price)
        self.charged[model] = max(0, self.charged.get(model, 0) - 1)

    def token_check(self, token: str | None) -> str | None:
        """The gateway's 401 message when ``token`` is exhausted (no balance left), else None."""
        if token is None or not self.account(token).exhausted:
            return None
        return EXHAUSTED_MESSAGE.format(masked=mask_token(token))

    # ------------------------------------------------------------------ the gateway's bodies
    def usage_token_body(self, token: str) -> dict[str, Any]:
        account = self.account(token)
        return {
            "code": True,
            "message": "ok",
            "data": {
                "object": "token_usage",
                "name": account.name,
                "total_granted": account.remain + account.used,
                "total_used": account.used,
                "total_available": account.remain,
                "unlimited_quota": account.unlimited,
                "model_limits": {},
                "model_limits_enabled": False,
                "expires_at": account.expires_at,
            },
        }

    def subscription_body(self, token: str) -> dict[str, Any]:
        account = self.account(token)
        amount = (
            float(UNLIMITED_USD) if account.unlimited else (account.remain + account.used) / QUOTA_PER_USD
        )
        return {
            "object": "billing_subscription",
            "has_payment_method": True,
            "soft_limit_usd": amount,
            "hard_limit_usd": amount,
            "system_hard_limit_usd": amount,
            "access_until": account.expires_at,
        }

    def usage_body(self, token: str) -> dict[str, Any]:
        # unit: 0.01 dollar, as the gateway's comment says
        return {"object": "list", "total_usage": self.account(token).used / QUOTA_PER_USD * 100}

    def exhausted_body(self, token: str) -> dict[str, Any]:
        message = self.token_check(token) or EXHAUSTED_MESSAGE.format(masked=mask_token(token))
        return {
            "error": {
                "message": f"{message} (request id: {secrets.token_hex(8)})",
                "type": "new_api_error",
            }
        }


def request_token(request: Request) -> str | None:
    """The Bearer token of a request (the gate has already checked it is a known one)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def quota_not_enough() -> JSONResponse:
    """The gateway's answer to a submission the token cannot pay for."""
    return JSONResponse(QUOTA_NOT_ENOUGH, status_code=400)


def add_billing_routes(app: FastAPI, billing: Billing) -> None:
    """
    Register the three quota endpoints (each also without ``/v1`` where the gateway has that alias)
    and the admin route ``/_emulator/billing`` (GET: view, PUT: partial update).
    """

    def not_found() -> JSONResponse:
        return JSONResponse(
            {"error": {"message": "Invalid URL", "type": "invalid_request_error", "code": ""}},
            status_code=404,
        )

    def token_of(request: Request) -> str:
        return request_token(request) or ""

    @app.get("/api/usage/token/")
    async def usage_token(request: Request) -> Response:
        if "usage_token" not in billing.endpoints:
            return not_found()
        # Read-only token auth: exhausted tokens are answered too.
        return JSONResponse(billing.usage_token_body(token_of(request)))

    @app.get("/api/usage/token")
    async def usage_token_no_slash(request: Request) -> Response:
        if "usage_token" not in billing.endpoints:
            return not_found()
        return RedirectResponse("/api/usage/token/", status_code=301)

    async def subscription(request: Request) -> Response:
        if "subscription" not in billing.endpoints:
            return not_found()
        token = token_of(request)
        if billing.account(token).exhausted:
            return JSONResponse(billing.exhausted_body(token), status_code=401)
        return JSONResponse(billing.subscription_body(token))

    async def usage(request: Request) -> Response:
        if "usage" not in billing.endpoints:
            return not_found()
        token = token_of(request)
        if billing.account(token).exhausted:
            return JSONResponse(billing.exhausted_body(token), status_code=401)
        return JSONResponse(billing.usage_body(token))

    for prefix in ("/v1", ""):
        app.add_api_route(f"{prefix}/dashboard/billing/subscription", subscription, methods=["GET"])
        app.add_api_route(f"{prefix}/dashboard/billing/usage", usage, methods=["GET"])

    @app.get("/_emulator/billing")
    async def get_billing() -> dict[str, Any]:
        return billing.to_dict()

    @app.put("/_emulator/billing")
    async def put_billing(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        try:
            billing.update(body)
        except EmulatorConfigError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_config"}}, status_code=400)
        return JSONResponse(billing.to_dict())


def install_billing(app: FastAPI, state: EmulatorState, billing: Billing | None = None) -> Billing:
    """
    Plug per-token accounting into an emulator: the state's ``charge`` / ``refund`` /
    ``token_check`` seams, its ``reset`` (which then also resets the billing), and the routes.

    :param app: the emulator application
    :param state: its state
    :param billing: the accounts to use; default: every token unlimited, default prices
    :return: the billing installed (also ``state.billing``)
    """
    billing = billing if billing is not None else Billing()
    state.billing = billing
    state.charge = billing.charge
    state.refund = billing.refund
    state.token_check = billing.token_check
    reset_tasks = state.reset

    def reset() -> None:
        reset_tasks()
        billing.reset()

    state.reset = reset
    add_billing_routes(app, billing)
    return billing
