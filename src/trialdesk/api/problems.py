"""Errors as RFC 9457 problem details, one stable ``type`` per refusal reason."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from trialdesk.domain.errors import (
    TrialError,
    ValidationFailed,
)
from trialdesk.http_status import STATUS as STATUS
from trialdesk.http_status import status_of as status_of

PROBLEM_BASE = "https://trialdesk.dev/problems/"


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def trial_error_response(request: Request, exc: TrialError) -> JSONResponse:
    status = status_of(exc)
    extra: dict[str, Any] = {"instance": str(request.url.path)}
    if isinstance(exc, ValidationFailed) and exc.problems:
        extra["errors"] = exc.problems
    return problem(status, exc.code, exc.__class__.__name__, exc.message, **extra)
