"""Exceptions raised by the APICore provider.

Every error the provider raises derives from :class:`ApicoreError`, so a DAG can catch them all at
once, and each subclass carries the facts a user needs to act (field, file, code, task id) as
attributes as well as in its message. No message ever contains the API token or image data.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from airflow.sdk.exceptions import AirflowException

#: Longest excerpt of a server answer quoted in an error message.
EXCERPT_LIMIT = 200

# "scheme://authority": the user-info part is everything before the authority's last "@".
_URL_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#\s]*)")


def safe_excerpt(text: str | bytes | None, limit: int = EXCERPT_LIMIT) -> str:
    """Return a short, single-line, printable excerpt of a server answer for an error message."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    flat = " ".join(text.split())
    flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def redact_url_credentials(url: str) -> str:
    """
    ``url`` with the secret of its user-info part replaced by ``***``, for logs and messages.

    ``https://user:pass@host/hook`` becomes ``https://user:***@host/hook``; a user-info without a
    colon (``https://token@host``) is often a token and is hidden whole. Works on malformed URLs too.
    """
    if not isinstance(url, str):
        return url

    def hide(match: re.Match[str]) -> str:
        authority = match.group(2)
        if "@" not in authority:
            return match.group(0)
        userinfo, _, host = authority.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        return f"{match.group(1)}{user + ':***' if colon else '***'}@{host}"

    return _URL_AUTHORITY.sub(hide, url)


def url_credentials(url: str) -> list[str]:
    """
    The secrets in a URL's user-info part (the password, or a lone user name that may be a token), as
    written and percent-decoded: what to register with Airflow's secret masker.
    """
    if not isinstance(url, str):
        return []
    secrets: list[str] = []
    for match in _URL_AUTHORITY.finditer(url):
        authority = match.group(2)
        if "@" not in authority:
            continue
        userinfo = authority.rpartition("@")[0]
        user, colon, password = userinfo.partition(":")
        secret = password if colon else user
        for form in (secret, unquote(secret)):
            if form and form not in secrets:
                secrets.append(form)
    return secrets


class ApicoreError(AirflowException):
    """Base class of every error raised by the APICore provider."""


class ApicoreConfigError(ApicoreError):
    """A connection or an operator argument is unusable (missing token, host without scheme, ...)."""


class ApicoreInputError(ApicoreError, ValueError):
    """User input was rejected before anything was sent to APICore."""


class InvalidImageError(ApicoreInputError):
    """
    An image cannot be described: not an image, unsupported type, empty, too large, unreadable.

    :param source: the file (or "data URL") that was rejected
    :param rule: the rule it broke, in words a user can act on
    """

    def __init__(self, source: str, rule: str) -> None:
        self.source = source
        self.rule = rule
        super().__init__(f"Image {source!r} rejected: {rule}")


class PayloadValidationError(ApicoreInputError):
    """
    The request payload broke the JSON Schema shipped with the provider.

    :param field: the payload field at fault (``base64``, ``notifyHook``, ``state`` or ``<root>``)
    :param rule: the rule it broke
    """

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"Payload field {field!r} is invalid: {rule}")


class ApicoreAuthError(ApicoreError):
    """APICore refused the token (HTTP 401/403). Names the connection, never the token."""

    def __init__(self, conn_id: str, status: int, detail: str = "") -> None:
        self.conn_id = conn_id
        self.status = status
        what = "rejected the API token" if status == 401 else "refused access with this API token"
        msg = (
            f"APICore {what} (HTTP {status}) of connection {conn_id!r}. Check the connection's "
            "password (API token): it may be wrong, expired, disabled or out of quota."
        )
        if detail:
            msg += f" Server said: {detail}"
        super().__init__(msg)


class ApicoreHTTPError(ApicoreError):
    """An HTTP status the client cannot act on, or retries ran out."""

    def __init__(self, message: str, status: int | None = None, excerpt: str = "") -> None:
        self.status = status
        self.excerpt = excerpt
        super().__init__(message + (f" Response began: {excerpt!r}" if excerpt else ""))


class ApicoreUnreachableError(ApicoreHTTPError):
    """APICore could not be reached (connection refused, DNS, timeouts) after every retry."""


class ApicoreResponseError(ApicoreError):
    """The server answered something that is not the protocol (non-JSON, missing ``code``, ...)."""

    def __init__(self, reason: str, excerpt: str = "") -> None:
        self.reason = reason
        self.excerpt = excerpt
        super().__init__(
            f"Malformed APICore answer: {reason}" + (f" Excerpt: {excerpt!r}" if excerpt else "")
        )


class SubmissionFateUnknownError(ApicoreError):
    """
    A submission may or may not have reached APICore (read timeout or reset after sending).

    It is never blindly retried, since that could start the same paid job twice. Callers that tag
    submissions through ``state`` can look the task up to reconcile it.
    """

    def __init__(
        self, endpoint: str, cause: str, state: str | None = None, status: int | None = None
    ) -> None:
        self.endpoint = endpoint
        self.cause = cause
        self.state = state
        self.status = status
        super().__init__(
            f"The submission to {endpoint} may or may not have been accepted ({cause}); it was not "
            "retried to avoid a duplicate job. Look the task up before submitting again."
        )


class ApicoreSubmitError(ApicoreError):
    """APICore refused a submission; ``code`` and ``description`` are the server's."""

    def __init__(self, code: int | None, description: str, properties: dict | None = None) -> None:
        self.code = code
        self.description = description
        self.properties = properties or {}
        super().__init__(f"APICore refused the submission: code {code}, {description!r}")


class ApicoreQueueFullError(ApicoreSubmitError):
    """Code 23: the account's queue is full. Nothing was accepted; retry after a backoff."""


class ApicoreBannedPromptError(ApicoreSubmitError):
    """Code 24: the prompt or image contains a banned word (named in the message when the server says)."""

    def __init__(self, code: int | None, description: str, properties: dict | None = None) -> None:
        super().__init__(code, description, properties)
        word = self.banned_word
        if word:
            self.args = (f"{self.args[0]}; banned word: {safe_excerpt(str(word), 80)!r}",)

    @property
    def banned_word(self) -> str | None:
        return self.properties.get("bannedWord")


class ApicoreValidationError(ApicoreSubmitError):
    """Code 4: the server rejected the payload (bad base64, missing field)."""


class ApicoreNotFoundError(ApicoreSubmitError):
    """Code 3: the server did not find what the submission refers to."""


class TaskNotFoundError(ApicoreError):
    """The server does not know (or no longer knows) a task id."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(
            f"APICore does not know task {task_id!r}: it may have expired, or belong to another account."
        )


class TaskFailedError(ApicoreError):
    """A task ended in FAILURE (or CANCEL); carries the server's ``failReason``."""

    def __init__(self, task_id: str, status: str, fail_reason: str | None) -> None:
        self.task_id = task_id
        self.status = status
        self.fail_reason = fail_reason
        super().__init__(f"Midjourney task {task_id} ended {status}: {fail_reason or 'no reason given'}")


class TaskTimeoutError(ApicoreError):
    """Waiting for a task passed its timeout; says the last status and progress seen."""

    def __init__(
        self, task_id: str, timeout: float, last_status: str | None, last_progress: str | None
    ) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.last_status = last_status
        self.last_progress = last_progress
        super().__init__(
            f"Midjourney task {task_id} did not finish within {timeout:g}s; last seen status "
            f"{last_status or 'unknown'}, progress {last_progress or 'unknown'}"
        )


class ApicoreQuotaExceededError(ApicoreError):
    """
    The API token's balance cannot pay for the work. Nothing was accepted.

    Raised when the gateway refuses a submission for balance (HTTP 400 ``quota_not_enough``, or a
    401 whose message says the token's quota is exhausted, ``额度已用尽``), and by a pre-flight check
    that finds the pending work would cost more than what is left. The message says what to do: top
    up the token (or raise its limit), then clear the task, which continues where it stopped.

    :param reason: what happened, in words (the gateway's description, or the pre-flight arithmetic)
    :param conn_id: the Airflow connection whose token ran out, when known
    :param remaining_usd: the balance left in USD, when known
    :param required_usd: what the pending work would cost in USD, when known
    :param status: the HTTP status of the refusal, when it came from the gateway
    """

    def __init__(
        self,
        reason: str,
        *,
        conn_id: str | None = None,
        remaining_usd: float | None = None,
        required_usd: float | None = None,
        status: int | None = None,
    ) -> None:
        self.reason = reason
        self.conn_id = conn_id
        self.remaining_usd = remaining_usd
        self.required_usd = required_usd
        self.status = status
        token = f"the API token of connection {conn_id!r}" if conn_id else "the API token"
        parts = [f"APICore quota exceeded: {reason}."]
        if remaining_usd is not None:
            parts.append(f"Balance left: {remaining_usd:.4f} USD.")
        if required_usd is not None:
            parts.append(f"Needed: {required_usd:.4f} USD.")
        parts.append(
            f"Top up {token} (or raise its quota) in the APICore console, then clear this task to "
            "continue; work already accepted is kept."
        )
        super().__init__(" ".join(parts))


class ApicoreThrottledError(ApicoreHTTPError):
    """
    HTTP 429 or 503: APICore processed nothing and asks to come back later.

    :param retry_after: seconds the server asked to wait (``Retry-After``), if it said
    """

    def __init__(
        self, message: str, status: int | None = None, excerpt: str = "", retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status, excerpt)


class SubmissionInDoubtError(ApicoreError):
    """
    A retry found that an earlier try's submission may have created a job (its answer was lost), and
    ``on_unknown_fate="fail"`` forbids sending it again: a second submission could be a second paid job.

    :param state: the ``state`` tag the earlier submission carried (visible on the task in APICore)
    """

    def __init__(self, task: str, state: str | None, cause: str | None) -> None:
        self.state = state
        self.cause = cause
        super().__init__(
            f"An earlier try of {task} sent a submission whose answer was lost ({cause or 'unknown cause'}); "
            f"a job tagged state={state!r} may exist and be billed. Not submitting again. Check the APICore "
            "account; to submit anyway, set on_unknown_fate='resubmit' (may pay twice) and clear the task."
        )


class ApicoreActionNotOfferedError(ApicoreInputError):
    """
    The parent task has no button for the requested action; nothing was sent.

    :param task_id: the parent task
    :param action: the action asked for (with its index, e.g. ``"upscale 5"``)
    :param offered: the readable actions the parent's buttons do offer (e.g. ``["upscale 1-4", "reroll"]``)
    """

    def __init__(self, task_id: str | None, action: str, offered: list[str]) -> None:
        self.task_id = task_id
        self.action = action
        self.offered = list(offered)
        where = f"Task {task_id}" if task_id else "The parent task"
        choice = ", ".join(offered) if offered else "no actions at all (it has no buttons)"
        super().__init__(f"{where} does not offer {action!r}; it offers: {choice}")


class ParentTaskNotReadyError(ApicoreInputError):
    """
    An action was asked on a parent task that has not finished with SUCCESS; nothing was sent.

    :param task_id: the parent task
    :param status: its status when checked
    """

    def __init__(self, task_id: str, status: str, fail_reason: str | None = None) -> None:
        self.task_id = task_id
        self.status = status
        self.fail_reason = fail_reason
        reason = f" ({fail_reason})" if fail_reason else ""
        super().__init__(
            f"Task {task_id} is {status or 'not started'}{reason}, not SUCCESS: actions (upscale, variation, "
            "zoom, ...) can only run on a finished task"
        )


class ImageDownloadError(ApicoreError):
    """
    A result image could not be downloaded or is not an image; says which URL (credentials hidden) and why.

    :param url: the image URL, with any user-info redacted
    :param rule: what went wrong, in words
    :param status: the HTTP status, when the server answered
    """

    def __init__(self, url: str, rule: str, status: int | None = None) -> None:
        self.url = redact_url_credentials(url)
        self.rule = rule
        self.status = status
        super().__init__(f"Downloading image {safe_excerpt(self.url, 160)} failed: {rule}")


class ManifestChangedError(ApicoreConfigError):
    """
    A manifest file changed under the batch that writes it: a record's line is not where it was written.

    Only one writer may use a manifest at a time (the batch's lease enforces it); this means something
    else wrote, moved or deleted the manifest's files while the batch ran.

    :param path: the manifest file
    :param image: the image whose record was read back, if known
    :param rule: what was found
    """

    def __init__(self, path: str, image: str | None, rule: str) -> None:
        self.path = path
        self.image = image
        super().__init__(
            f"Manifest {path} changed while this batch was writing it ({rule}"
            f"{f'; reading back the record of {image}' if image else ''}). One writer per manifest: make "
            "sure no other task, run or tool writes it, then clear this task to resume from what is stored."
        )
