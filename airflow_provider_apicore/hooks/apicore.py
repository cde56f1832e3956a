"""ApicoreHook: APICore's Midjourney API, one method per endpoint (transport in ``hooks.transport``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_provider_apicore.account import TokenQuota, aread_quota, read_quota
from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreBannedPromptError,
    ApicoreConfigError,
    ApicoreHTTPError,
    ApicoreNotFoundError,
    ApicoreQueueFullError,
    ApicoreQuotaExceededError,
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
from airflow_provider_apicore.hooks.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ConnectionSettings,
)
from airflow_provider_apicore.hooks.transport import (
    MAX_RETRY_AFTER,
    RETRYABLE_STATUSES,
    Transport,
    retry_delay,
)
from airflow_provider_apicore.models import ACCEPTED_CODES, MJTask, SubmitResult

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_RETRY_AFTER",
    "RETRYABLE_STATUSES",
    "ApicoreHook",
    "ConnectionSettings",
    "mask_url_credentials",
    "retry_delay",
]

SUBMIT_DESCRIBE = "/mj/submit/describe"
SUBMIT_IMAGINE = "/mj/submit/imagine"
SUBMIT_ACTION = "/mj/submit/action"
SUBMIT_MODAL = "/mj/submit/modal"
SUBMIT_BLEND = "/mj/submit/blend"
SUBMIT_SHORTEN = "/mj/submit/shorten"
SUBMIT_SWAP_FACE = "/mj/insight-face/swap"
LIST_BY_CONDITION = "/mj/task/list-by-condition"

#: A submit ``code``: a whole number in ASCII digits (``str.isdigit`` also takes "¹", which int() refuses).
_CODE = re.compile(r"-?[0-9]{1,9}")

_SUBMIT_ERRORS: dict[int, type[ApicoreSubmitError]] = {
    23: ApicoreQueueFullError,
    # Code 9: "queue full, try later" on the C# server, "system error" on the Java one: both transient.
    9: ApicoreQueueFullError,
    24: ApicoreBannedPromptError,
    4: ApicoreValidationError,
    3: ApicoreNotFoundError,
}
#: Code 3 also means "no account instance free" (无可用的账号实例): busy, not missing.
_NO_ACCOUNT = "无可用的账号实例"


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
        self._transport: Transport | None = None
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
            extra = await conn.aextra_dejson() if hasattr(conn, "aextra_dejson") else None
            settings = self._make_settings(conn, extra)
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

    def _make_settings(self, conn: Any, extra: dict | None = None) -> ConnectionSettings:
        if conn.conn_type and conn.conn_type != self.conn_type:
            self.log.warning(
                "Connection %r has type %r, expected %r; using it anyway",
                conn.conn_id,
                conn.conn_type,
                self.conn_type,
            )
        return ConnectionSettings.from_connection(conn, self._timeout, self._max_retries, extra)

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def transport(self) -> Transport:
        """The hook's :class:`Transport` (sync context: reads the connection if needed)."""
        if self._transport is None:
            self._transport = self._make_transport(self.settings)
        return self._transport

    async def atransport(self) -> Transport:
        """The hook's :class:`Transport`, reading the connection without blocking the event loop."""
        if self._transport is None:
            self._transport = self._make_transport(await self.asettings())
        return self._transport

    def _make_transport(self, settings: ConnectionSettings) -> Transport:
        return Transport(
            settings, self.log, self.retry_backoff, self.max_backoff, sleep=lambda s: self._sleep(s)
        )

    def get_conn(self) -> requests.Session:
        """Return the hook's pooled :class:`requests.Session`, authorised with the connection's token."""
        return self.transport.session

    def close(self) -> None:
        """Close pooled connections (sync and async clients are closed by :meth:`aclose`)."""
        if self._transport is not None:
            self._transport.close()
        if getattr(self, "_image_fetcher", None) is not None:
            self._image_fetcher.close()
            self._image_fetcher = None

    async def aclose(self) -> None:
        """Close the async client, if one was opened."""
        if self._transport is not None:
            await self._transport.aclose()

    def __enter__(self) -> ApicoreHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ submissions
    def submit(self, endpoint: str, payload: dict[str, Any], *, retries: int | None = None) -> SubmitResult:
        """
        Submit a job to any ``/mj/submit/...`` endpoint (or ``/mj/insight-face/swap``).

        The connection's speed ``mode`` prefixes the path (``/mj-fast/mj/submit/...``). Only answers that
        prove nothing was processed are retried; see :mod:`airflow_provider_apicore.hooks.transport`.

        :param endpoint: the endpoint's path, e.g. ``/mj/submit/imagine``
        :param payload: the JSON body (already validated by the caller)
        :param retries: retries of 429/503/connect failures (default: the connection's ``max_retries``);
            ``0`` raises :class:`~airflow_provider_apicore.exceptions.ApicoreThrottledError` at once
        :return: the accepted submission (code 1, 21 or 22) with its task id
        :raises SubmissionFateUnknownError: the job may exist (5xx, timeout or drop after sending,
            unreadable answer); never retried
        :raises ApicoreQueueFullError: "try later" (codes 23, 9, 3 "no account instance"); nothing accepted
        :raises ApicoreQuotaExceededError: the token's balance is spent; nothing accepted
        :raises ApicoreSubmitError: any other refusal, with the server's code and description
        """
        settings = self.settings
        path = settings.submit_path(endpoint)
        body = self.transport.request("POST", path, payload, submit=True, retries=retries)
        return self._submit_result(body, path, payload)

    def submit_describe(
        self, payload: dict[str, Any], validate: bool = True, retries: int | None = None
    ) -> SubmitResult:
        """
        Submit a Describe job (``POST /mj/submit/describe``).

        :param payload: ``{"base64": "<data URL>", "notifyHook"?, "state"?, "botType"?}``
        :param validate: check the payload against the provider's JSON Schema first (no request is
            sent when it fails)
        :param retries: see :meth:`submit`
        :return: the accepted submission (code 1, 21 or 22) with its task id
        :raises PayloadValidationError: the payload breaks the schema; nothing was sent
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
        result = self.submit(SUBMIT_DESCRIBE, payload, retries=retries)
        self.log.info("APICore accepted describe job: task %s (%s)", result.task_id, result.outcome)
        return result

    # ------------------------------------------------------------------ the rest of the family
    def _submit_checked(
        self, endpoint: str, schema: str, payload: dict[str, Any], validate: bool, retries: int | None
    ) -> SubmitResult:
        """Validate against ``schemas/<schema>.json`` (nothing is sent when it fails), then :meth:`submit`."""
        if validate:
            from airflow_provider_apicore.schemas import validate_payload

            validate_payload(schema, payload)
        mask_url_credentials(payload.get("notifyHook"))
        result = self.submit(endpoint, payload, retries=retries)
        self.log.info("APICore accepted %s: task %s (%s)", endpoint, result.task_id, result.outcome)
        return result

    def submit_imagine(
        self, payload: dict[str, Any], validate: bool = True, retries: int | None = None
    ) -> SubmitResult:
        """``POST /mj/submit/imagine``: ``{"prompt", "base64Array"?, "botType"?, "notifyHook"?, ...}``."""
        return self._submit_checked(SUBMIT_IMAGINE, "imagine_payload", payload, validate, retries)

    def submit_action(
        self, payload: dict[str, Any], validate: bool = True, retries: int | None = None
    ) -> SubmitResult:
        """``POST /mj/submit/action``: ``{"taskId", "customId", "enableRemix"?, ...}`` (code 21 = window)."""
        return self._submit_checked(SUBMIT_ACTION, "action_payload", payload, validate, retries)

    def submit_modal(
        self, payload: dict[str, Any], validate: bool = True, retries: int | None = None
    ) -> SubmitResult:
        """``POST /mj/submit/modal``: ``{"taskId" (the MODAL task), "prompt"?, "maskBase64"? (PNG)}``."""
        return self._submit_checked(SUBMIT_MODAL, "modal_payload", payload, validate, retries)

    def submit_blend(
        self, payload: dict[str, Any], validate: bool = True, retries: int | None = None
    ) -> SubmitResult:
        """``POST /mj/submit/blend``: ``{"base64Array" (2-5 data URLs), "dimensions"?, ...}``."""
        return self._submit_checked(SUBMIT_BLEND, "blend_payload", payload, validate, retries)

    def submit_shorten(
        self, payload: dict[str, Any], validate: bool = True, retries: int | None = None
    ) -> SubmitResult:
        """``POST /mj/submit/shorten``: ``{"prompt", "botType"?, ...}``."""
        return self._submit_checked(SUBMIT_SHORTEN, "shorten_payload", payload, validate, retries)

    def submit_swap_face(
        self, payload: dict[str, Any], validate: bool = True, retries: int | None = None
    ) -> SubmitResult:
        """``POST /mj/insight-face/swap``: ``{"sourceBase64", "targetBase64", ...}`` (data URLs)."""
        return self._submit_checked(SUBMIT_SWAP_FACE, "swap_face_payload", payload, validate, retries)

    def get_image_seed(self, task_id: str) -> str:
        """
        The seed of a finished task's image (``GET /mj/task/{id}/image-seed``), a string of digits.

        :raises ApicoreNotFoundError: unknown task, or no seed found (code 3)
        :raises ApicoreValidationError: the task is not finished (code 4)
        :raises ApicoreSubmitError: any other refusal, with the server's code and description
        """
        path = self._fetch_path(task_id).replace("/fetch", "/image-seed")
        body = self.transport.request("GET", path, None, not_found_ok=True)
        if body is None:
            raise TaskNotFoundError(str(task_id))
        code = body.get("code") if isinstance(body, dict) else None
        if isinstance(code, bool) or not _CODE.fullmatch(str(code).strip()):
            raise ApicoreResponseError("image-seed answer has no integer 'code'", safe_excerpt(repr(body)))
        code = int(str(code).strip())
        seed = body.get("result")
        if code == 1 and isinstance(seed, (str, int)) and not isinstance(seed, bool) and str(seed).strip():
            return str(seed).strip()
        description = str(body.get("description") or "").strip()
        properties = body.get("properties") if isinstance(body.get("properties"), dict) else {}
        raise _SUBMIT_ERRORS.get(code, ApicoreSubmitError)(code, description, properties)

    @property
    def image_fetcher(self) -> Any:
        """The hook's :class:`~airflow_provider_apicore.hooks.download.ImageFetcher` (token: own host)."""
        if getattr(self, "_image_fetcher", None) is None:
            from airflow_provider_apicore.hooks.download import ImageFetcher

            settings = self.settings
            self._image_fetcher = ImageFetcher(
                settings.base_url,
                settings.token,
                retries=settings.max_retries,
                backoff=self.retry_backoff,
                max_backoff=self.max_backoff,
                sleep=lambda s: self._sleep(s),
                log=self.log,
            )
        return self._image_fetcher

    def fetch_image(self, url: str) -> tuple[bytes, Any]:
        """Download a result image and check it (see :mod:`~airflow_provider_apicore.hooks.download`)."""
        return self.image_fetcher.fetch(url)

    def download_image(self, url: str, dest: Any) -> Any:
        """
        Download a result image to ``dest`` (path or ObjectStoragePath), checked and written atomically.

        The API token is sent only when ``url`` is on the connection's own origin; a CDN gets none.

        :return: :class:`~airflow_provider_apicore.hooks.download.DownloadedImage`
        :raises ImageDownloadError: bad URL, HTTP error, over the size limit, or not an image
        """
        return self.image_fetcher.download(url, dest)

    # ------------------------------------------------------------------ queries
    def fetch_task(self, task_id: str) -> MJTask:
        """
        Fetch one task (``GET /mj/task/{id}/fetch``).

        :raises TaskNotFoundError: the server does not know the id (empty body, 204, ``null``, 404, or
            the gateway's HTTP 400 ``task_no_found``)
        """
        body = self.transport.request("GET", self._fetch_path(task_id), None, not_found_ok=True)
        return self._task_or_not_found(task_id, body)

    def list_tasks(self, ids: Sequence[str]) -> list[MJTask]:
        """
        Fetch many tasks with one request (``POST /mj/task/list-by-condition``).

        Ids the server does not know are simply absent from the answer.
        """
        if not ids:
            return []
        body = self.transport.request("POST", LIST_BY_CONDITION, {"ids": [str(i) for i in ids]})
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
        transport = await self.atransport()
        body = await transport.arequest("POST", LIST_BY_CONDITION, {"ids": [str(i) for i in ids]})
        return self._task_list(body)

    async def afetch_task(self, task_id: str) -> MJTask:
        """Async :meth:`fetch_task`."""
        transport = await self.atransport()
        body = await transport.arequest("GET", self._fetch_path(task_id), None, not_found_ok=True)
        return self._task_or_not_found(task_id, body)

    # ------------------------------------------------------------------ account
    def get_quota(self) -> TokenQuota:
        """
        The API token's balance, in US dollars (see :mod:`airflow_provider_apicore.account`).

        Asks ``GET /api/usage/token/`` (raw quota units, 500000 = 1 USD), and when the gateway does
        not have it (404) the two billing dashboards (``/v1/dashboard/billing/subscription``, the
        grant in USD with ``100000000`` = unlimited; ``/v1/dashboard/billing/usage``, spent in US
        cents). Free: the gateway does not charge for these reads.

        :return: the quota; ``remaining_usd`` is ``math.inf`` for an unlimited token and ``0.0`` for
            an exhausted one
        :raises ApicoreResponseError: the gateway answers none of the quota endpoints usefully
        :raises ApicoreAuthError: the token is refused (other than for an exhausted balance)
        """
        transport = self.transport
        return read_quota(lambda path: transport.request("GET", path, None, not_found_ok=True))

    async def aget_quota(self) -> TokenQuota:
        """Async :meth:`get_quota`, for triggers (``httpx``; never blocks the event loop)."""
        transport = await self.atransport()

        async def get(path: str) -> Any:
            return await transport.arequest("GET", path, None, not_found_ok=True)

        return await aread_quota(get)

    def test_connection(self) -> tuple[bool, str]:
        """
        Make one cheap authenticated call (an empty task query) and say in words how it went, with
        the token's remaining balance (or "unlimited") when the gateway tells it.
        """
        try:
            settings = self.settings
            self.transport.request("POST", LIST_BY_CONDITION, {"ids": []}, retries=0)
        except (
            ApicoreAuthError,
            ApicoreConfigError,
            ApicoreUnreachableError,
            ApicoreQuotaExceededError,
        ) as err:
            return False, str(err)
        except (ApicoreHTTPError, ApicoreResponseError) as err:
            return False, f"APICore answered, but not as expected: {err}"
        except Exception as err:
            return False, f"Could not reach APICore: {safe_excerpt(str(err))}"
        try:
            balance = f"Balance: {self.get_quota().describe()}."
        except Exception as err:  # the token works; a missing balance must not fail the test
            balance = f"Balance not available ({safe_excerpt(str(err), 160)})."
        return True, f"Connected to {settings.base_url}; the API token was accepted. {balance}"

    # ------------------------------------------------------------------ answers
    @staticmethod
    def _fetch_path(task_id: str) -> str:
        task_id = str(task_id).strip()
        if not task_id or "/" in task_id:
            raise ApicoreConfigError(f"Task id {task_id!r} is not a valid Midjourney task id")
        return f"/mj/task/{task_id}/fetch"

    @staticmethod
    def _submit_result(body: Any, path: str = SUBMIT_DESCRIBE, payload: dict | None = None) -> SubmitResult:
        """
        An accepted submission, or the refusal's exception.

        An answer that is not the protocol at all is a lost answer: the server may have processed the
        request behind whatever produced it.
        """
        state = payload.get("state") if isinstance(payload, dict) else None
        if not isinstance(body, dict):
            raise SubmissionFateUnknownError(
                path, f"the answer is not a JSON object: {safe_excerpt(repr(body), 80)!r}", state
            )
        code = body.get("code")
        if body.get("success") is False and code not in (None, ""):
            # The C# server's LogicException shape: {"success": false, "code": -1, "message": ...}.
            raise ApicoreValidationError(code, str(body.get("message") or ""), {})
        valid = isinstance(code, (int, str)) and not isinstance(code, bool)
        if not valid or not _CODE.fullmatch(str(code).strip()):
            raise SubmissionFateUnknownError(
                path, f"the answer has no integer 'code': {safe_excerpt(json.dumps(body), 120)!r}", state
            )
        code = int(str(code).strip())
        description = str(body.get("description") or "").strip()
        properties = body.get("properties") if isinstance(body.get("properties"), dict) else {}
        if code in ACCEPTED_CODES:
            task_id = body.get("result")
            if isinstance(task_id, bool) or not isinstance(task_id, (str, int)) or str(task_id) == "":
                raise SubmissionFateUnknownError(
                    path,
                    f"answer code {code} carries no task id in 'result': "
                    f"{safe_excerpt(json.dumps(body), 120)!r}",
                    state,
                )
            return SubmitResult(str(task_id), code, description, properties)
        if code == 3 and _NO_ACCOUNT in description:
            raise ApicoreQueueFullError(code, description, properties)
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
