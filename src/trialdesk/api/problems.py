"""Errors as RFC 9457 problem details, one stable ``type`` per refusal reason."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from trialdesk.domain.errors import (
    ActionNotAllowed,
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)

PROBLEM_BASE = "https://trialdesk.dev/problems/"

STATUS: list[tuple[type[TrialError], int]] = [
    (ActionNotAllowed, 409),
    (Conflict, 409),
    (ValidationFailed, 422),
    (NotFound, 404),
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (PreconditionFailed, 409),
]


def status_of(exc: TrialError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400


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
