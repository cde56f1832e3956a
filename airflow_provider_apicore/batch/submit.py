"""
What one refused or unanswered batch submission means, decided by the exception's type.

The batch sends every image with the hook's own retries off (``retries=0``) and sorts each failure
into exactly one :class:`Verdict`:

* ``UNKNOWN``: the request may have created a job (``SubmissionFateUnknownError``: a 500/502/504, a
  2xx that is not JSON, a read timeout, a connection dropped after sending). Never sent again blindly.
* ``PAUSE``: nothing was accepted and the server said "later" (429/503 ``ApicoreThrottledError`` with
  its ``Retry-After``, connect failures ``ApicoreUnreachableError``, queue full / no account free
  ``ApicoreQueueFullError``). The image goes back in line and submitting pauses.
* ``REJECT``: the server refused this image (validation code 4, banned content code 24, an HTTP 4xx
  about the body). Final for the image.
* ``FATAL``: the task cannot go on (authentication, quota, configuration): nothing was accepted, the
  image's ``pending_submit`` mark is undone and the error is raised.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreConfigError,
    ApicoreHTTPError,
    ApicoreQueueFullError,
    ApicoreQuotaExceededError,
    ApicoreResponseError,
    ApicoreSubmitError,
    ApicoreThrottledError,
    ApicoreUnreachableError,
    SubmissionFateUnknownError,
)

if TYPE_CHECKING:
    from airflow_provider_apicore.hooks.apicore import ApicoreHook
    from airflow_provider_apicore.models import SubmitResult

#: Submit codes that mean "nothing accepted, try later" on some server: 23 queue full, 9 queue full
#: (C# midjourney-proxy; a system error on the Java one), 3 no account instance free, 30 the gateway's
#: rate limit. The hook maps them to ``ApicoreQueueFullError``; codes are checked here too so an older
#: mapping never turns "later" into a permanent refusal.
RETRY_LATER_CODES = frozenset({23, 9, 3, 30})
#: HTTP statuses that prove nothing was processed.
THROTTLED_STATUSES = frozenset({429, 503})
#: HTTP statuses after which a submitted job may exist.
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})
#: HTTP statuses about the request body: the image is refused.
REFUSED_STATUSES = frozenset({400, 413, 415, 422})


class Verdict(enum.Enum):
    UNKNOWN = "unknown"
    PAUSE = "pause"
    REJECT = "reject"
    FATAL = "fatal"


@dataclass(frozen=True)
class SubmitFailure:
    """
    One failed submission, classified.

    :param verdict: what the batch does with the image
    :param reason: what happened, for the manifest and the log (never the token)
    :param retry_after: seconds the server asked to wait (``Retry-After``), if it said
    """

    verdict: Verdict
    reason: str
    retry_after: float | None = None


def classify(err: BaseException) -> SubmitFailure:
    """Sort one exception raised by a submit into a :class:`SubmitFailure`."""
    if isinstance(err, SubmissionFateUnknownError):
        return SubmitFailure(Verdict.UNKNOWN, f"the answer to the submission was lost: {err}")
    if isinstance(err, ApicoreResponseError):
        # An answer that is not a submit answer at all (a proxy's page with 200): may have been processed.
        return SubmitFailure(Verdict.UNKNOWN, f"the answer to the submission was lost: {err}")
    if isinstance(err, ApicoreQuotaExceededError):
        return SubmitFailure(Verdict.FATAL, str(err))
    if isinstance(err, (ApicoreAuthError, ApicoreConfigError)):
        return SubmitFailure(Verdict.FATAL, str(err))
    if isinstance(err, ApicoreThrottledError):
        return SubmitFailure(
            Verdict.PAUSE,
            f"APICore answered HTTP {getattr(err, 'status', None) or 429} (busy)",
            _seconds(getattr(err, "retry_after", None)),
        )
    if isinstance(err, ApicoreUnreachableError):
        return SubmitFailure(Verdict.PAUSE, "APICore is unreachable (nothing was sent)")
    if isinstance(err, ApicoreQueueFullError) or (
        isinstance(err, ApicoreSubmitError) and err.code in RETRY_LATER_CODES
    ):
        return SubmitFailure(
            Verdict.PAUSE, f"APICore cannot take the job now (code {err.code}: {err.description})"
        )
    if isinstance(err, ApicoreSubmitError):
        word = (err.properties or {}).get("bannedWord") if isinstance(err.properties, dict) else None
        return SubmitFailure(
            Verdict.REJECT,
            f"APICore refused the image: code {err.code}, {err.description}"
            + (f"; banned word: {str(word)[:80]!r}" if word else ""),
        )
    if isinstance(err, ApicoreHTTPError):
        if err.status in THROTTLED_STATUSES:
            return SubmitFailure(Verdict.PAUSE, f"APICore answered HTTP {err.status} (busy)")
        if err.status in AMBIGUOUS_STATUSES:
            return SubmitFailure(
                Verdict.UNKNOWN, f"APICore answered HTTP {err.status}; the job may have been created"
            )
        if err.status in REFUSED_STATUSES:
            return SubmitFailure(Verdict.REJECT, f"APICore answered HTTP {err.status}: {err.excerpt or err}")
        return SubmitFailure(Verdict.FATAL, str(err))
    return SubmitFailure(Verdict.FATAL, str(err))


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


def submit_once(hook: ApicoreHook, payload: dict[str, Any]) -> SubmitResult:
    """
    Send one describe payload with the hook's retries off, so the batch decides every pause itself
    and keeps following its jobs in flight meanwhile.

    :param hook: the APICore hook
    :param payload: an already validated payload
    """
    return hook.submit_describe(payload, validate=False, retries=0)
