"""The data query's lifecycle grown up (REC-7): assignment, coded responses from the protocol,
"verified" once the monitor accepts the answer, and the age of each query.

One transition table, as for the subject (LIFE-1), so a refusal always names the status and
the actions allowed from it::

    open --answer--> answered --verify--> verified
      |                 |  \\--reopen (answer not accepted)--> open
      +--close--> closed <--close--+        verified/closed --reopen--> open

``close`` ends a query without an accepted answer (raised in error, superseded) and needs a
reason. Assigning keeps the status. Pure, stdlib only; dates are passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from trialdesk.domain.errors import ActionNotAllowed, ValidationFailed


class QueryStatus(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    VERIFIED = "verified"
    CLOSED = "closed"


class QueryAction(StrEnum):
    ASSIGN = "assign"
    ANSWER = "answer"
    VERIFY = "verify"
    REOPEN = "reopen"
    CLOSE = "close"


Q, QA = QueryStatus, QueryAction

TRANSITIONS: dict[tuple[QueryStatus, QueryAction], QueryStatus] = {
    (Q.OPEN, QA.ASSIGN): Q.OPEN,
    (Q.ANSWERED, QA.ASSIGN): Q.ANSWERED,
    (Q.OPEN, QA.ANSWER): Q.ANSWERED,
    (Q.ANSWERED, QA.VERIFY): Q.VERIFIED,
    (Q.ANSWERED, QA.REOPEN): Q.OPEN,
    (Q.VERIFIED, QA.REOPEN): Q.OPEN,
    (Q.CLOSED, QA.REOPEN): Q.OPEN,
    (Q.OPEN, QA.CLOSE): Q.CLOSED,
    (Q.ANSWERED, QA.CLOSE): Q.CLOSED,
}
"""``(status, action) -> next status``; anything absent is refused."""

UNRESOLVED: frozenset[QueryStatus] = frozenset({Q.OPEN, Q.ANSWERED})
"""Queries that block the database lock (REC-5): not yet verified or closed."""


def allowed_actions(status: QueryStatus) -> list[QueryAction]:
    return [action for action in QueryAction if (status, action) in TRANSITIONS]


def apply_query_action(
    status: QueryStatus, action: QueryAction, *, label: str = "the query"
) -> QueryStatus:
    """The status after ``action``, or a refusal naming the status and what is allowed."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        allowed = ", ".join(a.value for a in allowed_actions(status)) or "none"
        raise ActionNotAllowed(
            f"cannot {action.value} {label}: it is {status.value}; allowed now: {allowed}"
        ) from None


@dataclass(frozen=True)
class ResponseSpec:
    """One coded response of the protocol's ``queries.responses`` (REC-7)."""

    code: str
    label: str
    change: str = "optional"
    """``required``: the answer comes with a correction of the queried value; ``forbidden``:
    the value stays as it is; ``optional``."""
    text_required: bool = False
    marks_missing: bool = False


def check_response(
    responses: Sequence[ResponseSpec], code: str | None, text: str, *, value_changed: bool
) -> ResponseSpec | None:
    """Validate an answer against the protocol's coded responses; returns the response (None
    when the protocol has no codes, and the answer is then free text that must not be blank).

    A coded answer must fit its code: "data corrected" needs the value changed with it,
    "confirmed as is" forbids a change, and some codes need an explanation."""
    answer = text.strip()
    if not responses:
        if code:
            raise ValidationFailed(
                "this protocol has no coded query responses: answer in words",
                {"response": "no codes"},
            )
        if not answer:
            raise ValidationFailed("an answer needs text", {"answer": "is required"})
        return None
    known = {r.code: r for r in responses}
    choices = ", ".join(f"{r.code} ({r.label})" for r in responses)
    if not code:
        raise ValidationFailed(f"choose a response: {choices}", {"response": "is required"})
    response = known.get(code)
    if response is None:
        raise ValidationFailed(
            f"unknown response {code!r}; choose one of: {choices}", {"response": "unknown"}
        )
    if response.change == "required" and not value_changed:
        raise ValidationFailed(
            f"'{response.label}' needs the queried value corrected with the answer",
            {"response": "needs a correction"},
        )
    if response.change == "forbidden" and value_changed:
        raise ValidationFailed(
            f"'{response.label}' keeps the value as it is: answer without changing it, or "
            "choose a response that says it was corrected",
            {"response": "no correction allowed"},
        )
    if response.text_required and not answer:
        raise ValidationFailed(
            f"'{response.label}' needs an explanation", {"answer": "is required"}
        )
    return response


def check_close_reason(reason: str) -> str:
    """Closing without an accepted answer needs a reason (raised in error, superseded)."""
    text = reason.strip()
    if not text:
        raise ValidationFailed("closing a query needs a reason", {"reason": "is required"})
    return text


def age_days(raised_on: dt.date, *, today: dt.date, ended_on: dt.date | None = None) -> int:
    """Days a query has been (or was) unresolved: to its verification or closing date when it
    ended, else to ``today``; never negative."""
    end = ended_on if ended_on is not None else today
    return max(0, (end - raised_on).days)


AGE_BANDS: tuple[tuple[int, int | None, str], ...] = (
    (0, 7, "0-7 days"),
    (8, 14, "8-14 days"),
    (15, 30, "15-30 days"),
    (31, 90, "31-90 days"),
    (91, None, "over 90 days"),
)


def age_band(days: int) -> str:
    """The reports' ageing column."""
    for low, high, label in AGE_BANDS:
        if days >= low and (high is None or days <= high):
            return label
    return AGE_BANDS[0][2]


def overdue(status: QueryStatus, age: int, overdue_after_days: int) -> bool:
    """An open query waiting on the site longer than the protocol allows."""
    return status is QueryStatus.OPEN and age > overdue_after_days
