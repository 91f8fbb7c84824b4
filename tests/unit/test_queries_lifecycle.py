"""The query lifecycle grown up (REC-7): one transition table, coded responses from the
protocol file, verification by the monitor, and each query's age."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import flagship
from tests.protocol_variants import records_variant
from trialdesk.domain.errors import ActionNotAllowed, ValidationFailed
from trialdesk.domain.queries import (
    TRANSITIONS,
    UNRESOLVED,
    QueryAction,
    QueryStatus,
    ResponseSpec,
    age_band,
    age_days,
    allowed_actions,
    apply_query_action,
    check_close_reason,
    check_response,
    overdue,
)
from trialdesk.protocol.specs import response_specs

Q, QA = QueryStatus, QueryAction


def test_rec7_the_query_journey() -> None:
    """Raised open, assigned, answered, sent back, answered again, verified; a verified query
    can be reopened; closing needs no answer."""
    status = Q.OPEN
    for action, expected in [
        (QA.ASSIGN, Q.OPEN),
        (QA.ANSWER, Q.ANSWERED),
        (QA.REOPEN, Q.OPEN),
        (QA.ANSWER, Q.ANSWERED),
        (QA.ASSIGN, Q.ANSWERED),
        (QA.VERIFY, Q.VERIFIED),
        (QA.REOPEN, Q.OPEN),
        (QA.CLOSE, Q.CLOSED),
        (QA.REOPEN, Q.OPEN),
    ]:
        status = apply_query_action(status, action)
        assert status is expected, action


@pytest.mark.parametrize("status", list(QueryStatus))
@pytest.mark.parametrize("action", list(QueryAction))
def test_rec7_every_refusal_names_the_status_and_the_allowed_actions(
    status: QueryStatus, action: QueryAction
) -> None:
    """Exhaustive over statuses and actions: allowed ones move per the table, the others are
    refused with one message naming the status and what is allowed."""
    if (status, action) in TRANSITIONS:
        assert apply_query_action(status, action) is TRANSITIONS[(status, action)]
        return
    with pytest.raises(ActionNotAllowed) as info:
        apply_query_action(status, action, label="query 7")
    allowed = ", ".join(a.value for a in allowed_actions(status))
    assert info.value.message == (
        f"cannot {action.value} query 7: it is {status.value}; allowed now: {allowed}"
    )


def test_rec7_only_verified_or_closed_queries_are_resolved() -> None:
    """An answered query still blocks the database lock until the monitor verifies it."""
    assert {Q.OPEN, Q.ANSWERED} == UNRESOLVED
    assert QA.VERIFY in allowed_actions(Q.ANSWERED)
    assert QA.VERIFY not in allowed_actions(Q.OPEN)


def test_rec7_coded_responses_come_from_the_protocol_file() -> None:
    a = response_specs(flagship().protocol)
    b = response_specs(records_variant().protocol)
    assert [r.code for r in a] == ["corrected", "confirmed", "not_available", "other"]
    assert [r.code for r in b] == ["fixed", "as_is"]
    assert a[2] == ResponseSpec(
        "not_available",
        "Not available (not done or source lost)",
        "forbidden",
        text_required=True,
        marks_missing=True,
    )


FLAGSHIP_CODES = (
    ResponseSpec("corrected", "Data corrected", "required"),
    ResponseSpec("confirmed", "Confirmed as is (source checked)", "forbidden"),
    ResponseSpec("not_available", "Not available", "forbidden", True, True),
    ResponseSpec("other", "Other (explained)", "optional", True),
)


@pytest.mark.parametrize(
    ("code", "text", "changed", "error"),
    [
        ("corrected", "", True, None),
        ("corrected", "", False, "'Data corrected' needs the queried value corrected"),
        ("confirmed", "checked chart", False, None),
        ("confirmed", "", True, "keeps the value as it is"),
        ("not_available", "source lost in flood", False, None),
        ("not_available", "  ", False, "'Not available' needs an explanation"),
        ("other", "x", True, None),
        ("other", "x", False, None),
        (None, "a free answer", False, "choose a response: corrected (Data corrected), "),
        ("fixed", "", True, "unknown response 'fixed'"),
    ],
)
def test_rec7_an_answer_must_fit_its_code(
    code: str | None, text: str, changed: bool, error: str | None
) -> None:
    if error is None:
        response = check_response(FLAGSHIP_CODES, code, text, value_changed=changed)
        assert response is not None and response.code == code
        return
    with pytest.raises(ValidationFailed) as info:
        check_response(FLAGSHIP_CODES, code, text, value_changed=changed)
    assert error in info.value.message


def test_rec7_without_codes_answers_are_free_text() -> None:
    assert check_response((), None, "value checked", value_changed=False) is None
    with pytest.raises(ValidationFailed, match="needs text"):
        check_response((), None, "  ", value_changed=False)
    with pytest.raises(ValidationFailed, match="no coded query responses"):
        check_response((), "corrected", "x", value_changed=True)
    with pytest.raises(ValidationFailed, match="needs a reason"):
        check_close_reason(" ")
    assert check_close_reason(" raised in error ") == "raised in error"


def test_rec7_age_and_overdue() -> None:
    raised = dt.date(2028, 3, 1)
    assert age_days(raised, today=dt.date(2028, 3, 16)) == 15
    assert age_days(raised, today=dt.date(2028, 9, 1), ended_on=dt.date(2028, 3, 4)) == 3
    assert age_days(raised, today=dt.date(2028, 2, 1)) == 0
    assert [age_band(d) for d in (0, 7, 8, 14, 15, 30, 31, 90, 91, 4000)] == [
        "0-7 days",
        "0-7 days",
        "8-14 days",
        "8-14 days",
        "15-30 days",
        "15-30 days",
        "31-90 days",
        "31-90 days",
        "over 90 days",
        "over 90 days",
    ]
    assert overdue(Q.OPEN, 15, 14) and not overdue(Q.OPEN, 14, 14)
    assert not overdue(Q.ANSWERED, 100, 14)  # waiting on the monitor, not the site


@settings(max_examples=200, derandomize=True, database=None)
@given(st.lists(st.sampled_from(list(QueryAction)), max_size=12))
def test_rec7_any_sequence_of_actions_stays_in_the_table(actions: list[QueryAction]) -> None:
    """REC-7 property: whatever is tried, the status only ever moves along the table, and a
    verified query was answered just before."""
    status = Q.OPEN
    for action in actions:
        try:
            after = apply_query_action(status, action)
        except ActionNotAllowed:
            continue
        assert TRANSITIONS[(status, action)] is after
        if after is Q.VERIFIED:
            assert status is Q.ANSWERED
        status = after
