"""What each submit failure means to the batch: decided by the exception's type, never by its text."""

from __future__ import annotations

import pytest

from airflow_provider_apicore.batch.submit import Verdict, classify
from airflow_provider_apicore.exceptions import (
    ApicoreAuthError,
    ApicoreBannedPromptError,
    ApicoreConfigError,
    ApicoreHTTPError,
    ApicoreQueueFullError,
    ApicoreQuotaExceededError,
    ApicoreResponseError,
    ApicoreSubmitError,
    ApicoreThrottledError,
    ApicoreUnreachableError,
    ApicoreValidationError,
    SubmissionFateUnknownError,
)

CASES = {
    "502 after processing": (
        SubmissionFateUnknownError("/mj/submit/describe", "HTTP 502", status=502),
        Verdict.UNKNOWN,
    ),
    "read timeout": (SubmissionFateUnknownError("/mj/submit/describe", "read timeout"), Verdict.UNKNOWN),
    "2xx not JSON": (ApicoreResponseError("answer is not JSON", "<html>"), Verdict.UNKNOWN),
    "bare HTTP 500": (ApicoreHTTPError("HTTP 500", 500), Verdict.UNKNOWN),
    "429 with Retry-After": (ApicoreThrottledError("HTTP 429", 429, retry_after=7.0), Verdict.PAUSE),
    "503": (ApicoreThrottledError("HTTP 503", 503), Verdict.PAUSE),
    "unreachable": (ApicoreUnreachableError("connect refused"), Verdict.PAUSE),
    "queue full 23": (ApicoreQueueFullError(23, "队列已满"), Verdict.PAUSE),
    "code 9 as a plain refusal": (ApicoreSubmitError(9, "提交失败，队列已满，请稍后重试"), Verdict.PAUSE),
    "code 3 no account": (ApicoreSubmitError(3, "无可用的账号实例"), Verdict.PAUSE),
    "banned": (ApicoreBannedPromptError(24, "banned"), Verdict.REJECT),
    "validation": (ApicoreValidationError(4, "bad image"), Verdict.REJECT),
    "HTTP 413": (ApicoreHTTPError("too large", 413), Verdict.REJECT),
    "quota": (ApicoreQuotaExceededError("quota_not_enough", status=400), Verdict.FATAL),
    "auth": (ApicoreAuthError("apicore_default", 401, "invalid token"), Verdict.FATAL),
    "config": (ApicoreConfigError("no connection"), Verdict.FATAL),
    "HTTP 404": (ApicoreHTTPError("not found", 404), Verdict.FATAL),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_failure_gets_its_verdict(case):
    error, verdict = CASES[case]
    assert classify(error).verdict is verdict


def test_a_server_asked_pause_is_kept():
    assert classify(ApicoreThrottledError("HTTP 429", 429, retry_after=7.0)).retry_after == 7.0
    assert classify(ApicoreThrottledError("HTTP 429", 429, retry_after=None)).retry_after is None
