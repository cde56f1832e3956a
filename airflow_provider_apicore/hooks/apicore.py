"""ApicoreHook: the one place that speaks HTTP to APICore's Midjourney API."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from requests.adapters import HTTPAdapter

from airflow_provider_apicore import __version__
from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreBannedPromptError,
    ApicoreConfigError,
    ApicoreHTTPError,
    ApicoreNotFoundError,
    ApicoreQueueFullError,
    ApicoreResponseError,
    ApicoreSubmitError,
    ApicoreUnreachableError,
    ApicoreValidationError,
    SubmissionFateUnknownError,
    TaskNotFoundError,
    redact_url_credentials,
    safe_excerpt,
    url_credentials,
)
from airflow_provider_apicore.models import ACCEPTED_CODES, MJTask, SubmitResult

DEFAULT_HOST = "https://api.apicore.ai"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5

SUBMIT_DESCRIBE = "/mj/submit/describe"
LIST_BY_CONDITION = "/mj/task/list-by-condition"

#: Statuses that say "not processed, try again later": rate limiting and gateway/server trouble.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Never sleep longer than this for one Retry-After, whatever the server asks.
MAX_RETRY_AFTER = 300.0
#: A submit ``code``: a whole number in ASCII digits (``str.isdigit`` also takes "¹", which int() refuses).
_CODE = re.compile(r"-?[0-9]{1,9}")

_SUBMIT_ERRORS: dict[int, type[ApicoreSubmitError]] = {
    23: ApicoreQueueFullError,
    24: ApicoreBannedPromptError,
    4: ApicoreValidationError,
    3: ApicoreNotFoundError,
}


@dataclass(frozen=True)
class ConnectionSettings:
    """What the hook needs from an ``apicore`` connection, checked once."""

    conn_id: str
    base_url: str
    token: str = field(repr=False)
    timeout: float
    max_retries: int

    @classmethod
    def from_connection(
        cls, conn: Any, timeout: float | None = None, max_retries: int | None = None
    ) -> ConnectionSettings:
        conn_id = conn.conn_id
        token = (conn.password or "").strip()
        if not token:
            raise ApicoreConfigError(
                f"Connection {conn_id!r} has no API token: put the APICore token in the connection's "
                "password field."
            )
        base_url = _base_url(conn)
        extra = conn.extra_dejson or {}
        timeout = _positive(
            timeout if timeout is not None else _extra(extra, "timeout", DEFAULT_TIMEOUT), "timeout", conn_id
        )
        retries = (
            max_retries if max_retries is not None else _extra(extra, "max_retries", DEFAULT_MAX_RETRIES)
        )
        try:
            retries = int(retries)
        except (TypeError, ValueError):
            retries = -1
        if not 0 <= retries <= 20:
            raise ApicoreConfigError(
                f"Connection {conn_id!r}: max_retries must be a whole number from 0 to 20, got {retries!r}"
            )
        return cls(conn_id=conn_id, base_url=base_url, token=token, timeout=timeout, max_retries=retries)


def _extra(extra: dict, name: str, default: Any) -> Any:
    """An extra field, stored plain or with the UI's ``extra__apicore__`` prefix; blank means default."""
    for key in (name, f"extra__apicore__{name}"):
        value = extra.get(key)
        if value not in (None, ""):
            return value
    return default


def _positive(value: Any, name: str, conn_id: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0 < number <= 3600:
        raise ApicoreConfigError(
            f"Connection {conn_id!r}: {name} must be a number of seconds above 0 and at most 3600, "
            f"got {value!r}"
        )
    return number


def _base_url(conn: Any) -> str:
    host = (conn.host or "").strip()
    if not host:
        return DEFAULT_HOST
    if "://" not in host:
        scheme = (conn.schema or "").strip().lower()
        if scheme not in ("http", "https"):
            raise ApicoreConfigError(
                f"Connection {conn.conn_id!r}: host {host!r} has no scheme; write it as a full URL, "
                f"e.g. 'https://{host}'."
            )
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApicoreConfigError(
            f"Connection {conn.conn_id!r}: host must be an http(s) URL with a host name, e.g. "
            f"{DEFAULT_HOST!r}; got {safe_excerpt(host, 80)!r}"
        )
    base = f"{parts.scheme}://{parts.netloc}"
    if conn.port and not parts.port:
        base = f"{base}:{conn.port}"
    return base + parts.path.rstrip("/")


def mask_url_credentials(url: str | None) -> str | None:
    """
    Register the credentials in a URL (``https://user:pass@host/hook``) with Airflow's secret masker,
    and return the URL with them redacted, fit for a log line.

    Used for ``notifyHook``: the masker then hides the password wherever it would appear afterwards
    (task logs, rendered template fields, error messages).
    """
    if not url or not isinstance(url, str):
        return url
    secrets = url_credentials(url)
    if secrets:
        from airflow.sdk.log import mask_secret

        for secret in secrets:
            mask_secret(secret)
    return redact_url_credentials(url)


def retry_delay(attempt: int, backoff: float, max_backoff: float, retry_after: str | None = None) -> float:
    """
    Seconds to wait before retry number ``attempt`` (0-based).

    A server's ``Retry-After`` (seconds or an HTTP date) wins when given; otherwise exponential
    backoff with "equal jitter", so that many clients retrying together spread out.
    """
    if retry_after:
        seconds = _parse_retry_after(retry_after)
        if seconds is not None:
            return min(max(seconds, 0.0), MAX_RETRY_AFTER)
    ceiling = min(max_backoff, backoff * (2**attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _parse_retry_after(value: str) -> float | None:
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan" or "inf" would reach time.sleep(), which refuses NaN: fall back to the backoff instead.
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return when.timestamp() - time.time()


@dataclass
class _Attempt:
    """What the retry loop should do after one attempt."""

    done: bool
    value: Any = None
    delay: float = 0.0
    why: str = ""


class ApicoreHook(BaseHook):
    """
    Talk to APICore's Midjourney API (midjourney-proxy protocol) with a token from an Airflow connection.

    The connection (type ``apicore``) holds the API token in its password and the base URL in its host
    (default ``https://api.apicore.ai``); extras ``timeout`` and ``max_retries`` tune the client.
    Transient answers (429 honouring ``Retry-After``, 500/502/503/504, connection errors before the
    request was sent, and answers to task queries that are not JSON at all) are retried with
    exponential backoff and jitter, at most ``max_retries`` times. A submission that may have
    reached the server is never blindly retried: :class:`SubmissionFateUnknownError` is raised instead.

    :param apicore_conn_id: the Airflow connection id
    :param timeout: per-request timeout in seconds; overrides the connection's ``timeout`` extra
    :param max_retries: retries of a transient failure; overrides the connection's ``max_retries`` extra
    :param retry_backoff: first backoff step in seconds (doubles each retry, with jitter)
    :param max_backoff: longest backoff between two retries, in seconds
    """

    conn_name_attr = "apicore_conn_id"
    default_conn_name = "apicore_default"
    conn_type = "apicore"
    hook_name = "APICore"

    def __init__(
        self,
        apicore_conn_id: str = default_conn_name,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__()
        self.apicore_conn_id = apicore_conn_id
        self._timeout = timeout
        self._max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self._settings: ConnectionSettings | None = None
        self._session: requests.Session | None = None
        self._async_client: Any = None
        # Replaceable so tests of the retry schedule need not sleep.
        self._sleep: Callable[[float], None] = time.sleep

    # ------------------------------------------------------------------ connection
    @property
    def settings(self) -> ConnectionSettings:
        """The connection's settings, read and checked once (sync context)."""
        if self._settings is None:
            try:
                conn = self.get_connection(self.apicore_conn_id)
            except AirflowNotFoundException:
                raise self._missing_connection() from None
            self._settings = self._make_settings(conn)
            from airflow.sdk.log import mask_secret

            mask_secret(self._settings.token)
        return self._settings

    async def asettings(self) -> ConnectionSettings:
        """The connection's settings, read without blocking the event loop (async context)."""
        if self._settings is None:
            try:
                conn = await self.aget_connection(self.apicore_conn_id)
            except AirflowNotFoundException:
                raise self._missing_connection() from None
            settings = self._make_settings(conn)
            from airflow.sdk.log import amask_secret

            await amask_secret(settings.token)
            self._settings = settings
        return self._settings

    def _missing_connection(self) -> ApicoreConfigError:
        conn_id = self.apicore_conn_id
        return ApicoreConfigError(
            f"Airflow connection {conn_id!r} does not exist. Create it (type 'APICore', the API token "
            f'as password), e.g. with AIRFLOW_CONN_{conn_id.upper()}=\'{{"conn_type": "apicore", '
            f'"host": "{DEFAULT_HOST}", "password": "<token>"}}\'.'
        )

    def _make_settings(self, conn: Any) -> ConnectionSettings:
        if conn.conn_type and conn.conn_type != self.conn_type:
            self.log.warning(
                "Connection %r has type %r, expected %r; using it anyway",
                conn.conn_id,
                conn.conn_type,
                self.conn_type,
            )
        return ConnectionSettings.from_connection(conn, self._timeout, self._max_retries)

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def _headers(self, settings: ConnectionSettings) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {settings.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"airflow-provider-apicore/{__version__}",
        }

    def get_conn(self) -> requests.Session:
        """Return the hook's pooled :class:`requests.Session`, authorised with the connection's token."""
        if self._session is None:
            session = requests.Session()
            # Retries are ours (they must know whether a POST was sent); urllib3 must not add its own.
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update(self._headers(self.settings))
            self._session = session
        return self._session

    def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            self._session.close()
            self._session = None

    # ------------------------------------------------------------------ public API
    def submit_describe(self, payload: dict[str, Any], validate: bool = True) -> SubmitResult:
        """
        Submit a Describe job (``POST /mj/submit/describe``).

        :param payload: ``{"base64": "<data URL>", "notifyHook"?, "state"?, "botType"?}``
        :param validate: check the payload against the provider's JSON Schema first (no request is
            sent when it fails)
        :return: the accepted submission (code 1, 21 or 22) with its task id
        :raises PayloadValidationError: the payload breaks the schema; nothing was sent
        :raises ApicoreQueueFullError: code 23, nothing accepted; retry after a backoff
        :raises ApicoreSubmitError: any other refusal, with the server's code and description
        :raises SubmissionFateUnknownError: the request may have reached the server
        """
        notify_hook = mask_url_credentials(payload.get("notifyHook"))
        if validate:
            from airflow_provider_apicore.schemas import validate_describe_payload

            validate_describe_payload(payload)
        self.log.info(
            "Submitting describe job to %s (payload %.1f KiB%s%s)",
            self.base_url,
            len(payload.get("base64", "")) / 1024,
            f", state {payload['state']!r}" if payload.get("state") else "",
            f", notifyHook {notify_hook}" if notify_hook else "",
        )
        body = self._request("POST", SUBMIT_DESCRIBE, payload, idempotent=False)
        result = self._submit_result(body)
        self.log.info("APICore accepted describe job: task %s (%s)", result.task_id, result.outcome)
        return result

    def fetch_task(self, task_id: str) -> MJTask:
        """
        Fetch one task (``GET /mj/task/{id}/fetch``).

        :raises TaskNotFoundError: the server does not know the id (empty body, ``null`` or 404)
        """
        body = self._request("GET", self._fetch_path(task_id), None, idempotent=True, not_found_ok=True)
        return self._task_or_not_found(task_id, body)

    def list_tasks(self, ids: Sequence[str]) -> list[MJTask]:
        """
        Fetch many tasks with one request (``POST /mj/task/list-by-condition``).

        Ids the server does not know are simply absent from the answer.
        """
        if not ids:
            return []
        body = self._request("POST", LIST_BY_CONDITION, {"ids": [str(i) for i in ids]}, idempotent=True)
        return self._task_list(body)

    def wait_for_tasks(
        self, task_ids: Sequence[str], poll_interval: float = 5.0, timeout: float | None = None
    ) -> dict[str, Any]:
        """
        Poll until every task is terminal or gone, or ``timeout`` seconds pass (blocking).

        One ``list-by-condition`` request per interval follows all ids. The answer is a tracker event
        (see :meth:`TaskTracker.event`), the same shape :class:`MJTaskTrigger` yields.
        """
        from airflow_provider_apicore.tracking import TaskTracker

        tracker = TaskTracker(task_ids, timeout=timeout)
        while True:
            tracker.update(self.list_tasks(tracker.pending))
            if tracker.done or tracker.timed_out:
                return tracker.event()
            left = tracker.seconds_left()
            self._sleep(poll_interval if left is None else min(poll_interval, left))

    async def alist_tasks(self, ids: Sequence[str]) -> list[MJTask]:
        """Async :meth:`list_tasks`, for triggers (``httpx``; never blocks the event loop)."""
        if not ids:
            return []
        body = await self._arequest("POST", LIST_BY_CONDITION, {"ids": [str(i) for i in ids]})
        return self._task_list(body)

    async def afetch_task(self, task_id: str) -> MJTask:
        """Async :meth:`fetch_task`."""
        body = await self._arequest("GET", self._fetch_path(task_id), None, not_found_ok=True)
        return self._task_or_not_found(task_id, body)

    async def aclose(self) -> None:
        """Close the async client, if one was opened."""
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    def test_connection(self) -> tuple[bool, str]:
        """Make one cheap authenticated call (an empty task query) and say in words how it went."""
        try:
            settings = self.settings
            self._request("POST", LIST_BY_CONDITION, {"ids": []}, idempotent=True, retries=0)
        except ApicoreAuthError as err:
            return False, str(err)
        except ApicoreConfigError as err:
            return False, str(err)
        except ApicoreUnreachableError as err:
            return False, str(err)
        except (ApicoreHTTPError, ApicoreResponseError) as err:
            return False, f"APICore answered, but not as expected: {err}"
        except Exception as err:
            return False, f"Could not reach APICore: {safe_excerpt(str(err))}"
        return True, f"Connected to {settings.base_url}; the API token was accepted."

    # ------------------------------------------------------------------ answers
    @staticmethod
    def _fetch_path(task_id: str) -> str:
        task_id = str(task_id).strip()
        if not task_id or "/" in task_id:
            raise ApicoreConfigError(f"Task id {task_id!r} is not a valid Midjourney task id")
        return f"/mj/task/{task_id}/fetch"

    @staticmethod
    def _submit_result(body: Any) -> SubmitResult:
        if not isinstance(body, dict):
            raise ApicoreResponseError("submit answer is not a JSON object", safe_excerpt(repr(body)))
        code = body.get("code")
        valid = isinstance(code, (int, str)) and not isinstance(code, bool)
        if not valid or not _CODE.fullmatch(str(code).strip()):
            raise ApicoreResponseError("submit answer has no integer 'code'", safe_excerpt(json.dumps(body)))
        code = int(str(code).strip())
        description = str(body.get("description") or "")
        properties = body.get("properties") if isinstance(body.get("properties"), dict) else {}
        if code in ACCEPTED_CODES:
            task_id = body.get("result")
            if isinstance(task_id, bool) or not isinstance(task_id, (str, int)) or str(task_id) == "":
                raise ApicoreResponseError(
                    f"submit answer code {code} carries no task id in 'result'",
                    safe_excerpt(json.dumps(body)),
                )
            return SubmitResult(str(task_id), code, description, properties)
        raise _SUBMIT_ERRORS.get(code, ApicoreSubmitError)(code, description, properties)

    @staticmethod
    def _task_or_not_found(task_id: str, body: Any) -> MJTask:
        if body is None or body == {}:
            raise TaskNotFoundError(task_id)
        return MJTask.from_json(body)

    @staticmethod
    def _task_list(body: Any) -> list[MJTask]:
        if body is None:
            return []
        if not isinstance(body, list):
            raise ApicoreResponseError(
                "list-by-condition answer is not a JSON array", safe_excerpt(json.dumps(body))
            )
        return [MJTask.from_json(item) for item in body]

    def _interpret(
        self,
        path: str,
        status: int,
        headers: Any,
        content: bytes,
        attempt: int,
        retries: int,
        not_found_ok: bool,
        idempotent: bool = True,
    ) -> _Attempt:
        """Turn one HTTP answer into a value, a retry, or an exception (shared by sync and async)."""
        settings = self._settings
        assert settings is not None
        if status in (401, 403):
            raise ApicoreAuthError(settings.conn_id, status, _error_detail(content))
        if status in RETRYABLE_STATUSES:
            why = f"HTTP {status}"
            if attempt < retries:
                return _Attempt(
                    False,
                    delay=retry_delay(
                        attempt, self.retry_backoff, self.max_backoff, headers.get("Retry-After")
                    ),
                    why=why,
                )
            raise ApicoreHTTPError(
                f"APICore answered HTTP {status} to {path} {attempt + 1} times; gave up "
                f"(max_retries={retries}).",
                status,
                safe_excerpt(content),
            )
        if status == 404 and not_found_ok:
            return _Attempt(True, None)
        if not 200 <= status < 300:
            hint = " Is the connection's host the API's base URL?" if status == 404 else ""
            raise ApicoreHTTPError(
                f"APICore answered HTTP {status} to {path}.{hint}", status, safe_excerpt(content)
            )
        if not content.strip():
            if not_found_ok:
                return _Attempt(True, None)
            return self._not_json(f"answer to {path} was empty", "", idempotent, attempt, retries)
        try:
            return _Attempt(True, json.loads(content))
        except ValueError:
            return self._not_json(
                f"answer to {path} is not JSON", safe_excerpt(content), idempotent, attempt, retries
            )

    def _not_json(self, reason: str, excerpt: str, idempotent: bool, attempt: int, retries: int) -> _Attempt:
        """
        An answer that is not JSON at all: cut short, or replaced on the way (a proxy's page with 200).

        That is transport damage, so a read is asked again like after a 5xx. A submit is not: the
        server may have processed it, and sending it again could start a second paid job.
        """
        if idempotent and attempt < retries:
            return _Attempt(
                False, delay=retry_delay(attempt, self.retry_backoff, self.max_backoff), why=reason
            )
        if idempotent and attempt:
            reason = f"{reason}, {attempt + 1} times; gave up (max_retries={retries})"
        raise ApicoreResponseError(reason, excerpt)

    # ------------------------------------------------------------------ transport: sync
    def _request(
        self,
        method: str,
        path: str,
        payload: dict | None,
        *,
        idempotent: bool,
        not_found_ok: bool = False,
        retries: int | None = None,
    ) -> Any:
        settings = self.settings
        session = self.get_conn()
        retries = settings.max_retries if retries is None else retries
        url = settings.base_url + path
        # A short connect timeout: failing to connect is cheap and safe to retry.
        timeout = (min(10.0, settings.timeout), settings.timeout)
        attempt = 0
        while True:
            try:
                response = session.request(method, url, json=payload, timeout=timeout)
            except requests.RequestException as err:
                sent = _requests_error_after_send(err)
                outcome = self._transport_failure(path, err, sent, idempotent, attempt, retries, payload)
            else:
                outcome = self._interpret(
                    path,
                    response.status_code,
                    response.headers,
                    response.content,
                    attempt,
                    retries,
                    not_found_ok,
                    idempotent,
                )
            if outcome.done:
                return outcome.value
            self._log_retry(method, path, outcome, attempt, retries)
            self._sleep(outcome.delay)
            attempt += 1

    def _log_retry(self, method: str, path: str, outcome: _Attempt, attempt: int, retries: int) -> None:
        self.log.warning(
            "%s %s: %s; retry %d/%d in %.1fs", method, path, outcome.why, attempt + 1, retries, outcome.delay
        )

    def _transport_failure(
        self,
        path: str,
        err: Exception,
        sent: bool,
        idempotent: bool,
        attempt: int,
        retries: int,
        payload: dict | None,
    ) -> _Attempt:
        cause = f"{type(err).__name__}: {safe_excerpt(str(err), 120)}"
        if sent and not idempotent:
            state = payload.get("state") if payload else None
            raise SubmissionFateUnknownError(path, cause, state) from None
        if attempt < retries:
            return _Attempt(
                False, delay=retry_delay(attempt, self.retry_backoff, self.max_backoff), why=cause
            )
        raise ApicoreUnreachableError(
            f"Could not reach APICore at {self._settings.base_url if self._settings else '?'} for {path} "
            f"after {attempt + 1} attempts ({cause})."
        ) from None

    # ------------------------------------------------------------------ transport: async
    async def _aclient(self) -> Any:
        import httpx

        settings = await self.asettings()
        if self._async_client is None:
            self._async_client = httpx.AsyncClient(
                base_url=settings.base_url,
                headers=self._headers(settings),
                timeout=httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout)),
            )
        return self._async_client

    async def _arequest(
        self, method: str, path: str, payload: dict | None, *, not_found_ok: bool = False
    ) -> Any:
        """Async request loop; only for idempotent reads (triggers never submit)."""
        import httpx

        client = await self._aclient()
        retries = self._settings.max_retries if self._settings else DEFAULT_MAX_RETRIES
        attempt = 0
        while True:
            try:
                response = await client.request(method, path, json=payload)
            except httpx.HTTPError as err:
                outcome = self._transport_failure(path, err, True, True, attempt, retries, payload)
            else:
                outcome = self._interpret(
                    path,
                    response.status_code,
                    response.headers,
                    response.content,
                    attempt,
                    retries,
                    not_found_ok,
                )
            if outcome.done:
                return outcome.value
            self._log_retry(method, path, outcome, attempt, retries)
            await asyncio.sleep(outcome.delay)
            attempt += 1


def _requests_error_after_send(err: Exception) -> bool:
    """
    Whether a ``requests`` failure may have happened after the request reached the server.

    Failing to connect (refused, DNS, connect timeout) is known to be before sending; anything else
    (read timeout, reset or close while waiting for the answer) might be after.
    """
    if isinstance(err, (requests.ConnectTimeout, requests.exceptions.InvalidURL)):
        return False
    if isinstance(err, requests.ConnectionError):
        markers = ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError")
        return not any(marker in repr(err) for marker in markers)
    return True


def _error_detail(content: bytes) -> str:
    """A short, safe description from a gateway's JSON error body (several shapes exist)."""
    try:
        body = json.loads(content)
    except ValueError:
        return safe_excerpt(content, 120)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return safe_excerpt(str(error["message"]), 120)
        for key in ("description", "message", "error"):
            if body.get(key):
                return safe_excerpt(str(body[key]), 120)
    return safe_excerpt(content, 120)
