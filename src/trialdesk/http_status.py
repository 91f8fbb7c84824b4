"""The HTTP status of a service's refusal, shared by the API and the web pages (neither
imports the other), so a refusal has one status wherever it is shown."""

from __future__ import annotations

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
from trialdesk.domain.locks import RecordLocked

STATUS: list[tuple[type[TrialError], int]] = [
    (ActionNotAllowed, 409),
    (Conflict, 409),
    (ValidationFailed, 422),
    (NotFound, 404),
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (PreconditionFailed, 409),
    (RecordLocked, 409),  # issue 15: a lock covers the write
]


def status_of(exc: TrialError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400
