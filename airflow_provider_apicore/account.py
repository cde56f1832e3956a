"""
The API token's account: how much it may still spend, and a guard that stops a batch in time.

APICore runs a new-api gateway, which answers the token's quota on up to three endpoints, in three
different units (read from the gateway's source, see ``apicore-mj-protocol-family.md`` §12):

=========================================  ==================================================
``GET /api/usage/token/`` (newer gateways)  raw quota units: ``500000`` units = 1 USD;
                                            ``unlimited_quota``; ``expires_at`` in seconds,
                                            ``0`` = never; ``code`` is a *boolean*
``GET /v1/dashboard/billing/subscription``  the token's grant (remaining + used) in **USD**;
                                            ``100000000`` marks an unlimited token;
                                            ``access_until`` in seconds, ``0`` = never
``GET /v1/dashboard/billing/usage``         ``total_usage`` spent so far, in **US cents**
=========================================  ==================================================

:func:`read_quota` asks them in that order (a 404 means "this gateway does not have it, ask the
next") and turns the answer into one :class:`TokenQuota` in US dollars. :class:`QuotaGuard` uses it
to refuse a batch the balance cannot pay for, to stop submitting when the balance falls below a floor
(reading it at most once per interval, never per image), and to report the balance before and after.

The gateway can be set to show quota in raw units or another currency instead of USD
(``DisplayInCurrencyEnabled`` / display type); the dashboard numbers are then not dollars and this
module cannot tell. ``/api/usage/token/`` is always in raw units and is preferred for that reason.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreConfigError,
    ApicoreQuotaExceededError,
    ApicoreResponseError,
    safe_excerpt,
)

#: Raw quota units per US dollar (new-api's default ``QuotaPerUnit``).
QUOTA_PER_USD = 500_000
#: What the subscription endpoint reports as the limit of an unlimited token, in USD.
UNLIMITED_USD = 100_000_000
#: US cents per US dollar (``/v1/dashboard/billing/usage`` reports cents).
CENTS_PER_USD = 100

USAGE_TOKEN = "/api/usage/token/"
SUBSCRIPTION = "/v1/dashboard/billing/subscription"
USAGE = "/v1/dashboard/billing/usage"
#: The endpoints :func:`read_quota` tries, in order (the two dashboard ones are read together).
QUOTA_ENDPOINTS = (USAGE_TOKEN, SUBSCRIPTION, USAGE)

#: How the gateway words an exhausted token (``该令牌额度已用尽``, one-api's ``额度已用尽``).
EXHAUSTED_MARKERS = ("额度已用尽", "quota exhausted", "TokenStatusExhausted")

#: A getter returns the decoded JSON answer of ``GET <path>``, or None when the path is not there (404).
Getter = Callable[[str], Any]
AsyncGetter = Callable[[str], Awaitable[Any]]

log = logging.getLogger(__name__)


def is_exhausted_message(text: str | None) -> bool:
    """Whether a gateway message says the token's quota is used up."""
    return bool(text) and any(marker in str(text) for marker in EXHAUSTED_MARKERS)


@dataclass(frozen=True)
class TokenQuota:
    """
    What an API token may still spend, in US dollars.

    :param limit_usd: the token's total grant (spent + remaining); ``math.inf`` for an unlimited
        token; None when the gateway did not say (an exhausted token on the dashboard endpoints)
    :param used_usd: spent so far; None when the gateway did not say
    :param remaining_usd: left to spend; ``math.inf`` for an unlimited token, ``0.0`` when exhausted
    :param unlimited: the token has no quota limit
    :param expires_at: when the token expires (UTC), None when it never does
    :param source: the endpoint the numbers came from
    :param name: the token's name, when the gateway gives it
    """

    limit_usd: float | None
    used_usd: float | None
    remaining_usd: float
    unlimited: bool
    expires_at: datetime | None
    source: str
    name: str | None = None

    @property
    def exhausted(self) -> bool:
        """Nothing left to spend."""
        return not self.unlimited and self.remaining_usd <= 0

    def covers(self, cost_usd: float) -> bool:
        """Whether the balance pays for ``cost_usd``."""
        return self.unlimited or cost_usd <= self.remaining_usd

    def describe(self) -> str:
        """The balance in words: ``unlimited`` or ``1.2500 USD left of 5.0000 USD``."""
        if self.unlimited:
            return "unlimited"
        text = f"{self.remaining_usd:.4f} USD left"
        if self.limit_usd is not None:
            text += f" of {self.limit_usd:.4f} USD"
        if self.expires_at is not None:
            text += f", token expires {self.expires_at.isoformat()}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (XCom); infinite amounts of unlimited tokens become None."""

        def finite(value: float | None) -> float | None:
            return None if value is None or math.isinf(value) else round(value, 6)

        return {
            "unlimited": self.unlimited,
            "limit_usd": finite(self.limit_usd),
            "used_usd": finite(self.used_usd),
            "remaining_usd": finite(self.remaining_usd),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "source": self.source,
        }


# ----------------------------------------------------------------------------- parsing


def _number(body: dict, key: str, where: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApicoreResponseError(
            f"{where}: field {key!r} must be a number", safe_excerpt(repr(body.get(key)))
        )
    return float(value)


def _expiry(seconds: Any, where: str, key: str) -> datetime | None:
    """Epoch seconds to a UTC datetime; ``0`` (and the gateway's ``-1``) mean "never"."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise ApicoreResponseError(
            f"{where}: field {key!r} must be epoch seconds", safe_excerpt(repr(seconds))
        )
    if seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _error_of(body: Any) -> str | None:
    """The message of an error carried in a 200 answer (``{"error": {...}}`` / ``{"success": false}``)."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if error:
        return str(error)
    if body.get("success") is False or body.get("code") is False:
        return str(body.get("message") or "success=false")
    return None


def quota_from_usage_token(body: Any, source: str = USAGE_TOKEN) -> TokenQuota:
    """
    Parse ``GET /api/usage/token/``: ``{"code": true, "data": {"total_granted", "total_used",
    "total_available", "unlimited_quota", "expires_at", "name"}}``, amounts in raw quota units.

    :raises ApicoreResponseError: an error answer, or a field missing or of the wrong type
    """
    where = f"answer to {source}"
    if not isinstance(body, dict):
        raise ApicoreResponseError(f"{where} is not a JSON object", safe_excerpt(repr(body)))
    error = _error_of(body)
    if error is not None:
        raise ApicoreResponseError(f"{where} reports an error: {safe_excerpt(error, 120)}")
    if body.get("code") is not True:
        raise ApicoreResponseError(f"{where}: 'code' must be true", safe_excerpt(repr(body.get("code"))))
    data = body.get("data")
    if not isinstance(data, dict):
        raise ApicoreResponseError(f"{where} has no 'data' object", safe_excerpt(repr(data)))
    unlimited = data.get("unlimited_quota")
    if not isinstance(unlimited, bool):
        raise ApicoreResponseError(
            f"{where}: 'unlimited_quota' must be true or false", safe_excerpt(repr(unlimited))
        )
    expires_at = _expiry(data.get("expires_at"), where, "expires_at")
    name = data.get("name") if isinstance(data.get("name"), str) else None
    used = _number(data, "total_used", where) / QUOTA_PER_USD
    if unlimited:
        # The other amounts of an unlimited token are not meaningful (some builds say -1).
        return TokenQuota(math.inf, used, math.inf, True, expires_at, source, name)
    available = _number(data, "total_available", where) / QUOTA_PER_USD
    if "total_granted" in data:
        granted = _number(data, "total_granted", where) / QUOTA_PER_USD
    else:
        granted = available + used
    return TokenQuota(granted, used, max(0.0, available), False, expires_at, source, name)


def quota_from_dashboard(
    subscription: Any, usage: Any, sources: tuple[str, str] = (SUBSCRIPTION, USAGE)
) -> TokenQuota:
    """
    Combine ``GET /v1/dashboard/billing/subscription`` (the grant in USD, ``100000000`` = unlimited,
    ``access_until`` seconds, ``0`` = never) and ``GET /v1/dashboard/billing/usage`` (``total_usage``
    in US cents) into one quota: remaining = grant - usage.

    :param usage: the usage answer, or None when that endpoint is missing (enough for an unlimited
        token only)
    :raises ApicoreResponseError: an error answer, a field missing, or the usage of a limited token
        unknown
    """
    sub_where, usage_where = (f"answer to {path}" for path in sources)
    if not isinstance(subscription, dict):
        raise ApicoreResponseError(f"{sub_where} is not a JSON object", safe_excerpt(repr(subscription)))
    error = _error_of(subscription)
    if error is not None:
        raise ApicoreResponseError(f"{sub_where} reports an error: {safe_excerpt(error, 120)}")
    limit = _number(subscription, "hard_limit_usd", sub_where)
    unlimited = limit >= UNLIMITED_USD
    expires_at = _expiry(subscription.get("access_until"), sub_where, "access_until")
    used: float | None = None
    if usage is not None:
        if not isinstance(usage, dict):
            raise ApicoreResponseError(f"{usage_where} is not a JSON object", safe_excerpt(repr(usage)))
        error = _error_of(usage)
        if error is not None:
            raise ApicoreResponseError(f"{usage_where} reports an error: {safe_excerpt(error, 120)}")
        used = _number(usage, "total_usage", usage_where) / CENTS_PER_USD
    source = f"{sources[0]} + {sources[1]}" if usage is not None else sources[0]
    if unlimited:
        return TokenQuota(math.inf, used, math.inf, True, expires_at, source)
    if used is None:
        raise ApicoreResponseError(
            f"{sources[1]} is missing (404), so the balance of a limited token cannot be computed from "
            f"{sources[0]} alone"
        )
    return TokenQuota(limit, used, max(0.0, limit - used), False, expires_at, source)


def exhausted_quota(source: str, name: str | None = None) -> TokenQuota:
    """The quota of a token the gateway refused as exhausted (401 ``额度已用尽``): nothing left."""
    return TokenQuota(None, None, 0.0, False, None, source, name)


# ----------------------------------------------------------------------------- reading


class _Exhausted(Exception):
    """A dashboard endpoint refused the token as exhausted."""


def _get_or_exhausted(get: Getter, path: str) -> Any:
    try:
        return get(path)
    except ApicoreQuotaExceededError:
        raise _Exhausted() from None
    except ApicoreAuthError as err:
        if is_exhausted_message(str(err)):
            raise _Exhausted() from None
        raise


def _no_endpoint_error(reasons: list[str]) -> ApicoreResponseError:
    return ApicoreResponseError(
        "the gateway answers none of the token quota endpoints "
        f"({', '.join(QUOTA_ENDPOINTS)}): " + "; ".join(reasons)
    )


def read_quota(get: Getter) -> TokenQuota:
    """
    Read the token's quota from whichever endpoint the gateway answers.

    ``/api/usage/token/`` first (it accepts exhausted tokens and is in exact units), then the two
    dashboard endpoints together. A 404 (``get`` returns None) or an error carried in a 200 answer
    moves on to the next endpoint; a refusal for balance (401 ``额度已用尽``, which the gateway gives
    on the dashboard endpoints) is an exhausted token (remaining 0). Other errors (auth, unreachable)
    are raised as they are.

    :param get: ``get(path)`` -> decoded JSON of ``GET <path>``, or None for a 404
    :raises ApicoreResponseError: no endpoint gave a usable answer; the message lists why per endpoint
    """
    reasons: list[str] = []
    try:
        body = _get_or_exhausted(get, USAGE_TOKEN)
    except _Exhausted:
        return exhausted_quota(USAGE_TOKEN)
    if body is None:
        reasons.append(f"{USAGE_TOKEN}: not found")
    else:
        try:
            return quota_from_usage_token(body)
        except ApicoreResponseError as err:
            reasons.append(f"{USAGE_TOKEN}: {err.reason}")
    try:
        subscription = _get_or_exhausted(get, SUBSCRIPTION)
        if subscription is None:
            reasons.append(f"{SUBSCRIPTION}: not found")
            raise _no_endpoint_error(reasons)
        usage = _get_or_exhausted(get, USAGE)
    except _Exhausted:
        return exhausted_quota(SUBSCRIPTION)
    try:
        return quota_from_dashboard(subscription, usage)
    except ApicoreResponseError as err:
        reasons.append(err.reason)
        raise _no_endpoint_error(reasons) from None


async def _aget_or_exhausted(get: AsyncGetter, path: str) -> Any:
    try:
        return await get(path)
    except ApicoreQuotaExceededError:
        raise _Exhausted() from None
    except ApicoreAuthError as err:
        if is_exhausted_message(str(err)):
            raise _Exhausted() from None
        raise


async def aread_quota(get: AsyncGetter) -> TokenQuota:
    """Async :func:`read_quota` (``get`` is a coroutine function), for triggers."""
    reasons: list[str] = []
    try:
        body = await _aget_or_exhausted(get, USAGE_TOKEN)
    except _Exhausted:
        return exhausted_quota(USAGE_TOKEN)
    if body is None:
        reasons.append(f"{USAGE_TOKEN}: not found")
    else:
        try:
            return quota_from_usage_token(body)
        except ApicoreResponseError as err:
            reasons.append(f"{USAGE_TOKEN}: {err.reason}")
    try:
        subscription = await _aget_or_exhausted(get, SUBSCRIPTION)
        if subscription is None:
            reasons.append(f"{SUBSCRIPTION}: not found")
            raise _no_endpoint_error(reasons)
        usage = await _aget_or_exhausted(get, USAGE)
    except _Exhausted:
        return exhausted_quota(SUBSCRIPTION)
    try:
        return quota_from_dashboard(subscription, usage)
    except ApicoreResponseError as err:
        reasons.append(err.reason)
        raise _no_endpoint_error(reasons) from None


# ----------------------------------------------------------------------------- the guard


def usd_amount(name: str, value: Any) -> float | None:
    """``value`` as US dollars (a number >= 0) or None; :class:`ApicoreConfigError` naming ``name``."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ApicoreConfigError(f"{name} must be a number of US dollars >= 0 (or None), got {value!r}")
    return float(value)


class QuotaGuard:
    """
    Keeps a batch within the token's balance.

    * :meth:`preflight` (before the first submit): reads the balance (``balance_before``) and, with
      ``estimated_cost_per_image_usd``, refuses to start when ``pending_images`` would cost more than
      what is left, giving both numbers.
    * :meth:`may_submit` (before each submit): re-reads the balance at most once per ``interval``
      seconds, and answers False once it is below ``min_quota_usd``. Never a request per image.
    * :meth:`finish`: reads the balance once more (``balance_after``) for :meth:`summary`.

    A balance that cannot be read (a gateway without the quota endpoints, a network hiccup) does not
    stop the batch: it is logged, the last known balance is kept, and the gateway's own refusal
    (``quota_not_enough``) remains the backstop. Only the pre-flight check, when asked for with
    ``estimated_cost_per_image_usd``, fails when it cannot read the balance at all.

    :param read: returns the current :class:`TokenQuota` (e.g. ``hook.get_quota``)
    :param min_quota_usd: stop submitting when the remaining balance falls below this (None: never)
    :param estimated_cost_per_image_usd: the expected price of one image, for the pre-flight check
        (None: no pre-flight check)
    :param interval: fewest seconds between two balance reads by :meth:`may_submit`
    :param conn_id: the connection, named in messages
    :param clock: monotonic clock (tests)
    :param logger: where to log (default: this module's logger)
    """

    def __init__(
        self,
        read: Callable[[], TokenQuota],
        *,
        min_quota_usd: float | None = None,
        estimated_cost_per_image_usd: float | None = None,
        interval: float = 60.0,
        conn_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: Any = None,
    ) -> None:
        self._read = read
        self.min_quota_usd = usd_amount("min_quota_usd", min_quota_usd)
        self.estimated_cost_per_image_usd = usd_amount(
            "estimated_cost_per_image_usd", estimated_cost_per_image_usd
        )
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval >= 0:
            raise ApicoreConfigError(
                f"the quota check interval must be a number of seconds >= 0, got {interval!r}"
            )
        self.interval = float(interval)
        self.conn_id = conn_id
        self._clock = clock
        self.log = logger if logger is not None else log
        self.balance_before: TokenQuota | None = None
        self.balance_after: TokenQuota | None = None
        self.last: TokenQuota | None = None
        self.last_read_at: float | None = None
        self.reads = 0
        self.stop_reason: str | None = None

    # ------------------------------------------------------------------ reading
    def _try_read(self) -> TokenQuota | None:
        """One balance read; None (logged) when it fails, so that a hiccup never stops a batch."""
        self.last_read_at = self._clock()
        try:
            quota = self._read()
        except Exception as err:
            self.log.warning("Could not read the API token's balance: %s", err)
            return None
        self._record(quota)
        return quota

    def _record(self, quota: TokenQuota) -> None:
        self.reads += 1
        self.last = quota
        if self.balance_before is None:
            self.balance_before = quota

    def refresh(self, force: bool = False) -> TokenQuota | None:
        """
        The balance, read again when ``force`` or when ``interval`` has passed since the last read.

        :return: the latest known quota (the last one read when this read failed), or None when it
            was never read successfully
        """
        if force or self.last_read_at is None or self._clock() - self.last_read_at >= self.interval:
            quota = self._try_read()
            if quota is not None:
                return quota
        return self.last

    # ------------------------------------------------------------------ checks
    def preflight(self, pending_images: int) -> TokenQuota | None:
        """
        Read the balance before the first submit and refuse a batch it cannot pay for.

        :param pending_images: images this run is about to submit
        :return: the balance read (None when unreadable and no pre-flight check was asked for)
        :raises ApicoreQuotaExceededError: ``estimated_cost_per_image_usd * pending_images`` is more
            than the remaining balance (both numbers in the message), or the token is exhausted
        :raises ApicoreResponseError: a pre-flight check was asked for and the balance is unreadable
        """
        cost = self.estimated_cost_per_image_usd
        if cost is not None:
            self.last_read_at = self._clock()
            try:
                quota = self._read()
            except ApicoreAuthError:
                raise
            except Exception as err:
                raise ApicoreResponseError(
                    "estimated_cost_per_image_usd asks for a pre-flight balance check, but the token's "
                    f"balance could not be read: {err}"
                ) from err
            self._record(quota)
        else:
            quota = self._try_read()
        if quota is None:
            return None
        self.log.info("API token balance before the batch: %s (from %s)", quota.describe(), quota.source)
        if pending_images > 0 and quota.exhausted:
            raise ApicoreQuotaExceededError(
                f"the token has no balance left, and {pending_images} images wait to be submitted",
                conn_id=self.conn_id,
                remaining_usd=quota.remaining_usd,
                required_usd=None if cost is None else cost * pending_images,
            )
        if cost is not None and pending_images > 0 and not quota.covers(cost * pending_images):
            required = cost * pending_images
            raise ApicoreQuotaExceededError(
                f"{pending_images} pending images at an estimated {cost:.4f} USD each would cost "
                f"{required:.4f} USD, more than the {quota.remaining_usd:.4f} USD left on the token; "
                "nothing was submitted",
                conn_id=self.conn_id,
                remaining_usd=quota.remaining_usd,
                required_usd=required,
            )
        return quota

    def may_submit(self) -> bool:
        """
        Whether the next image may be submitted: False once the balance (read at most once per
        ``interval``) is below ``min_quota_usd``. ``stop_reason`` then says why.
        """
        if self.min_quota_usd is None:
            return True
        quota = self.refresh()
        if quota is None or quota.unlimited or quota.remaining_usd >= self.min_quota_usd:
            return True
        self.stop_reason = (
            f"the token's balance {quota.remaining_usd:.4f} USD is below min_quota_usd="
            f"{self.min_quota_usd:g} USD"
        )
        return False

    def finish(self) -> TokenQuota | None:
        """Read the balance after the batch (``balance_after``); None when it cannot be read."""
        self.balance_after = self._try_read()
        return self.balance_after

    def exceeded(self, reason: str, pending_images: int) -> ApicoreQuotaExceededError:
        """
        The error a batch raises when it stopped for balance, naming the balance.

        :param reason: why submitting stopped (the gateway's refusal or :attr:`stop_reason`)
        :param pending_images: images left unsent (they stay pending for a rerun)
        """
        quota = self.balance_after or self.last
        remaining = None if quota is None or quota.unlimited else quota.remaining_usd
        cost = self.estimated_cost_per_image_usd
        return ApicoreQuotaExceededError(
            f"{reason}; {pending_images} images were not sent and stay pending for a rerun",
            conn_id=self.conn_id,
            remaining_usd=remaining,
            required_usd=None if cost is None else cost * pending_images,
        )

    # ------------------------------------------------------------------ reporting
    def summary(self) -> dict[str, Any]:
        """
        Spend of this run for the batch's summary (XCom): balances before and after in USD (None when
        unknown or unlimited), what was spent, and whether the token is unlimited.
        """
        before, after = self.balance_before, self.balance_after
        spent: float | None = None
        if before is not None and after is not None:
            if before.used_usd is not None and after.used_usd is not None:
                spent = after.used_usd - before.used_usd
            elif not before.unlimited and not after.unlimited:
                spent = before.remaining_usd - after.remaining_usd
        return {
            "balance_before_usd": None if before is None else before.to_dict()["remaining_usd"],
            "balance_after_usd": None if after is None else after.to_dict()["remaining_usd"],
            "spent_usd": None if spent is None else round(spent, 6),
            "unlimited": None if after is None else after.unlimited,
        }

    def describe(self) -> str:
        """``balance before X, after Y, spent Z`` for a final log line."""
        before, after = self.balance_before, self.balance_after
        spent = self.summary()["spent_usd"]
        return (
            f"balance before {before.describe() if before else 'unknown'}, "
            f"after {after.describe() if after else 'unknown'}, "
            f"spent {'unknown' if spent is None else f'{spent:.4f} USD'}"
        )
