"""Domain refusals. Each carries a stable ``code`` that adapters map to messages and HTTP types."""

from __future__ import annotations


class TrialError(Exception):
    """Base for every refusal a user can cause; ``code`` is stable across versions."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ActionNotAllowed(TrialError):
    """The subject's state does not allow this action (LIFE-1)."""

    code = "not-allowed-in-state"


class ValidationFailed(TrialError):
    """Input values are wrong; ``problems`` maps a field or path to its message."""

    code = "validation-failed"

    def __init__(self, message: str, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems = dict(problems or {})


class PreconditionFailed(TrialError):
    """A named precondition of an action does not hold (e.g. consent missing)."""

    code = "precondition-failed"

    def __init__(self, message: str, reason: str = "precondition-failed") -> None:
        super().__init__(message)
        self.code = reason


class NotFound(TrialError):
    """The record does not exist, or the actor may not know that it exists (ACC-1)."""

    code = "not-found"


class PermissionDenied(TrialError):
    """The actor's roles do not allow the action."""

    code = "forbidden"


class AuthenticationFailed(TrialError):
    """Username or password wrong, or the account is locked."""

    code = "authentication-failed"


class Conflict(TrialError):
    """Someone else changed the record first; the caller may reload and retry."""

    code = "conflict"
