"""
Transport to APICore: sessions, retries, and whether a failed request may have been processed.

:class:`ApicoreHook` holds the API's methods; everything about one HTTP exchange lives here, written
once for the sync (``requests``) and async (``httpx``) clients:

* **Reads** (fetch, list, quota) are idempotent: 429, 5xx, answers that are not JSON and connection
  failures are retried with backoff, honouring ``Retry-After``.
* **Submissions** create paid jobs and nothing deduplicates them. Only answers that prove nothing was
  processed are retried (429, 503, a connection that was never established). A 500/502/504, a read
  timeout, a connection dropped after the request left, or an answer that cannot be read mean *the
  job may exist*: :class:`SubmissionFateUnknownError`, never a second send.

Whether a request left is decided by the exception's type (urllib3 / requests / httpx classes),
never by its message.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from airflow_provider_apicore import __version__
from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreHTTPError,
    ApicoreQuotaExceededError,
    ApicoreResponseError,
    ApicoreThrottledError,
    ApicoreUnreachableError,
    SubmissionFateUnknownError,
    safe_excerpt,
)
from airflow_provider_apicore.hooks.settings import ConnectionSettings

#: Answers that say "nothing was processed, come back later", for every request.
THROTTLED_STATUSES = frozenset({429, 503})
#: Answers after which a read is retried but a submission's fate is unknown (the gateway may have
#: created the job upstream before failing).
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})
#: Kept for callers that want "worth retrying later" in one set.
RETRYABLE_STATUSES = THROTTLED_STATUSES | AMBIGUOUS_STATUSES
#: Never sleep longer than this for one Retry-After, whatever the server asks.
MAX_RETRY_AFTER = 300.0
#: Words by which gateways say a token's quota is spent (new-api, one-api; Chinese and English builds).
_QUOTA_MARKERS = ("quota_not_enough", "额度已用尽", "额度不足", "insufficient_quota", "exhausted")


def retry_delay(attempt: int, backoff: float, max_backoff: float, retry_after: str | None = None) -> float:
    """
    Seconds to wait before retry number ``attempt`` (0-based).

    A server's ``Retry-After`` (seconds or an HTTP date) wins when given; otherwise exponential
    backoff with "equal jitter", so that many clients retrying together spread out.
    """
    seconds = parse_retry_after(retry_after)
    if seconds is not None:
        return seconds
    ceiling = min(max_backoff, backoff * (2**attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (capped at :data:`MAX_RETRY_AFTER`), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        seconds = when.timestamp() - time.time()
    # "nan" or "inf" would reach time.sleep(), which refuses NaN: fall back to the backoff instead.
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


# ------------------------------------------------------------------------------ was it sent?
def requests_error_sent(err: BaseException) -> bool:
    """
    Whether a ``requests`` failure may have happened after the request reached the server.

    Before sending: the URL or a header was refused locally, the TCP connection or the TLS handshake
    failed, a proxy refused the tunnel, a connect timeout. Anything else (read timeout, reset or close
    while waiting for the answer, a body cut short) may be after.
    """
    from urllib3 import exceptions as u3

    if isinstance(
        err,
        (
            requests.exceptions.ConnectTimeout,
            requests.exceptions.SSLError,
            requests.exceptions.ProxyError,
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidHeader,
        ),
    ):
        return False
    if isinstance(err, requests.exceptions.ConnectionError):
        cause = err.args[0] if err.args else None
        if isinstance(cause, u3.MaxRetryError):
            cause = cause.reason
        # NameResolutionError and ConnectTimeoutError are NewConnectionError / TimeoutError kinds
        # raised while establishing the connection, before a byte of the request is written.
        before = (u3.NewConnectionError, u3.ConnectTimeoutError, u3.SSLError, u3.ProxyError)
        return not isinstance(cause, before)
    return True


def httpx_error_sent(err: BaseException) -> bool:
    """Whether an ``httpx`` failure may have happened after the request reached the server."""
    import httpx

    return not isinstance(
        err, (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError, httpx.UnsupportedProtocol)
    )


# ------------------------------------------------------------------------------ one answer
@dataclass
class Attempt:
    """What the retry loop does after one attempt."""

    done: bool
    value: Any = None
    delay: float = 0.0
    why: str = ""


#: What :func:`error_body` returns for an answer that is not JSON (``None`` is JSON's ``null``).
NOT_JSON = object()


def error_body(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return NOT_JSON


def error_detail(content: bytes) -> str:
    """A short, safe description from a gateway's JSON error body (several shapes exist)."""
    body = error_body(content)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return safe_excerpt(str(error["message"]), 160)
        for key in ("description", "message", "error"):
            if body.get(key):
                return safe_excerpt(str(body[key]).strip(), 160)
    return safe_excerpt(content, 160)


def is_quota_answer(content: bytes) -> bool:
    text = error_detail(content).lower()
    return any(marker in text for marker in _QUOTA_MARKERS)


class Transport:
    """
    Send requests to APICore with the hook's retry rules; one instance per hook.

    :param settings: the checked connection settings
    :param log: the hook's logger
    :param retry_backoff: first backoff step in seconds (doubles each retry, with jitter)
    :param max_backoff: longest backoff between two retries, in seconds
    :param sleep: the blocking sleep (replaceable so tests of the schedule need not sleep)
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        log: Any,
        retry_backoff: float = 1.0,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.log = log
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self._session: requests.Session | None = None
        self._async_client: Any = None

    # ------------------------------------------------------------------ clients
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.settings.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"airflow-provider-apicore/{__version__}",
        }

    @property
    def session(self) -> requests.Session:
        """A pooled session; urllib3's own retries are off, since only this class knows what was sent."""
        if self._session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update(self.headers())
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    async def aclient(self) -> Any:
        import httpx

        if self._async_client is None:
            settings = self.settings
            self._async_client = httpx.AsyncClient(
                base_url=settings.base_url,
                headers=self.headers(),
                timeout=httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout)),
            )
        return self._async_client

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    # ------------------------------------------------------------------ requests
    def request(
        self,
        method: str,
        path: str,
        payload: dict | None = None,
        *,
        submit: bool = False,
        not_found_ok: bool = False,
        retries: int | None = None,
    ) -> Any:
        """
        One API call with retries; the decoded JSON answer (``None`` for "not found" when allowed).

        :param submit: the call creates a job: never resent once it may have been processed
        :param not_found_ok: an empty body, 204 or 404 (and the gateway's ``task_no_found``) mean
            "not found" and return ``None``
        :param retries: retries of an answer that proves nothing was processed (default: the
            connection's ``max_retries``)
        """
        retries = self.settings.max_retries if retries is None else retries
        url = self.settings.base_url + path
        # A short connect timeout: failing to connect is cheap and safe to retry.
        timeout = (min(10.0, self.settings.timeout), self.settings.timeout)
        attempt = 0
        while True:
            try:
                response = self.session.request(method, url, json=payload, timeout=timeout)
            except requests.RequestException as err:
                outcome = self._transport_failure(
                    path, err, requests_error_sent(err), submit, attempt, retries, payload
                )
            else:
                outcome = self.interpret(
                    path,
                    response.status_code,
                    response.headers,
                    response.content,
                    attempt,
                    retries,
                    submit=submit,
                    not_found_ok=not_found_ok,
                    payload=payload,
                )
            if outcome.done:
                return outcome.value
            self._log_retry(method, path, outcome, attempt, retries)
            self.sleep(outcome.delay)
            attempt += 1

    async def arequest(
        self,
        method: str,
        path: str,
        payload: dict | None = None,
        *,
        not_found_ok: bool = False,
        retries: int | None = None,
    ) -> Any:
        """Async :meth:`request` for reads (triggers never submit)."""
        import httpx

        client = await self.aclient()
        retries = self.settings.max_retries if retries is None else retries
        attempt = 0
        while True:
            try:
                response = await client.request(method, path, json=payload)
            except httpx.HTTPError as err:
                outcome = self._transport_failure(
                    path, err, httpx_error_sent(err), False, attempt, retries, payload
                )
            else:
                outcome = self.interpret(
                    path,
                    response.status_code,
                    response.headers,
                    response.content,
                    attempt,
                    retries,
                    not_found_ok=not_found_ok,
                )
            if outcome.done:
                return outcome.value
            self._log_retry(method, path, outcome, attempt, retries)
            await asyncio.sleep(outcome.delay)
            attempt += 1

    # ------------------------------------------------------------------ decisions
    def _backoff(self, attempt: int, retry_after: str | None = None) -> float:
        return retry_delay(attempt, self.retry_backoff, self.max_backoff, retry_after)

    def _log_retry(self, method: str, path: str, outcome: Attempt, attempt: int, retries: int) -> None:
        self.log.warning(
            "%s %s: %s; retry %d/%d in %.1fs", method, path, outcome.why, attempt + 1, retries, outcome.delay
        )

    def interpret(
        self,
        path: str,
        status: int,
        headers: Any,
        content: bytes,
        attempt: int,
        retries: int,
        *,
        submit: bool = False,
        not_found_ok: bool = False,
        payload: dict | None = None,
    ) -> Attempt:
        """Turn one HTTP answer into a value, a retry, or an exception (shared by sync and async)."""
        conn_id = self.settings.conn_id
        if status in (401, 403):
            if is_quota_answer(content):
                raise ApicoreQuotaExceededError(error_detail(content), conn_id=conn_id, status=status)
            raise ApicoreAuthError(conn_id, status, error_detail(content))
        if status in THROTTLED_STATUSES:
            retry_after = headers.get("Retry-After")
            if attempt < retries:
                return Attempt(False, delay=self._backoff(attempt, retry_after), why=f"HTTP {status}")
            raise ApicoreThrottledError(
                f"APICore answered HTTP {status} to {path} {attempt + 1} times; nothing was processed "
                f"(max_retries={retries}).",
                status,
                safe_excerpt(content),
                retry_after=parse_retry_after(retry_after),
            )
        if status in AMBIGUOUS_STATUSES:
            if submit:
                raise SubmissionFateUnknownError(
                    path, f"HTTP {status}: {error_detail(content) or 'no body'}", _state(payload), status
                )
            if attempt < retries:
                return Attempt(False, delay=self._backoff(attempt), why=f"HTTP {status}")
            raise ApicoreHTTPError(
                f"APICore answered HTTP {status} to {path} {attempt + 1} times; gave up "
                f"(max_retries={retries}).",
                status,
                safe_excerpt(content),
            )
        body = error_body(content) if content.strip() else NOT_JSON
        if not 200 <= status < 300:
            return self._error_status(path, status, content, body, submit, not_found_ok)
        if status == 204 or not content.strip():
            if not_found_ok:
                return Attempt(True, None)
            return self._unreadable(path, "the answer was empty", "", submit, attempt, retries, payload)
        if body is NOT_JSON:
            return self._unreadable(
                path, "the answer is not JSON", safe_excerpt(content), submit, attempt, retries, payload
            )
        return Attempt(True, body)

    def _error_status(
        self, path: str, status: int, content: bytes, body: Any, submit: bool, not_found_ok: bool
    ) -> Attempt:
        """A 4xx other than 401/403/429: a business answer in one of the servers' shapes, or an error."""
        if status == 400 and is_quota_answer(content):
            raise ApicoreQuotaExceededError(error_detail(content), conn_id=self.settings.conn_id, status=400)
        if isinstance(body, dict) and "code" in body and "description" in body:
            if not_found_ok and "task_no_found" in str(body.get("description")):
                # new-api: an unknown id on fetch is HTTP 400 code 4 "task_no_found ".
                return Attempt(True, None)
            if submit or "image-seed" in path:
                # The midjourney-proxy envelope with an error status (C# server: 400 before v3.5, 404
                # for a missing parent task; the gateway's own errors are 400): mapped by its code.
                return Attempt(True, body)
        if status == 404 and not_found_ok:
            return Attempt(True, None)
        hint = " Is the connection's host the API's base URL?" if status == 404 else ""
        raise ApicoreHTTPError(
            f"APICore answered HTTP {status} to {path}.{hint}", status, safe_excerpt(content)
        )

    def _unreadable(
        self,
        path: str,
        reason: str,
        excerpt: str,
        submit: bool,
        attempt: int,
        retries: int,
        payload: dict | None,
    ) -> Attempt:
        """
        An answer that cannot be read: cut short, or replaced on the way (a proxy's page with 200).

        A read is asked again like after a 5xx. A submission is not: the server may have processed it.
        """
        if submit:
            raise SubmissionFateUnknownError(
                path, f"{reason}: {excerpt!r}" if excerpt else reason, _state(payload)
            )
        if attempt < retries:
            return Attempt(False, delay=self._backoff(attempt), why=reason)
        if attempt:
            reason = f"{reason}, {attempt + 1} times; gave up (max_retries={retries})"
        raise ApicoreResponseError(f"{reason} ({path})", excerpt)

    def _transport_failure(
        self,
        path: str,
        err: BaseException,
        sent: bool,
        submit: bool,
        attempt: int,
        retries: int,
        payload: dict | None,
    ) -> Attempt:
        cause = f"{type(err).__name__}: {safe_excerpt(str(err), 120)}"
        if sent and submit:
            raise SubmissionFateUnknownError(path, cause, _state(payload)) from None
        if attempt < retries:
            return Attempt(False, delay=self._backoff(attempt), why=cause)
        raise ApicoreUnreachableError(
            f"Could not reach APICore at {self.settings.base_url} for {path} after {attempt + 1} "
            f"attempts ({cause})."
        ) from None


def _state(payload: dict | None) -> str | None:
    return payload.get("state") if isinstance(payload, dict) else None
