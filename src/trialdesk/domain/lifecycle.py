"""The subject's journey (SYSTEM.md §2) as data: states, named actions, one transition table.

Every change of a subject goes through :func:`apply_action`, so a refusal always names the
state and the actions allowed from it (LIFE-1). Actions that only record data keep the state;
they are in the table too, so "what can be done now" has one answer.
"""

from __future__ import annotations

from enum import StrEnum

from trialdesk.domain.errors import ActionNotAllowed


class SubjectState(StrEnum):
    REGISTERED = "registered"
    SCREENING = "screening"
    ECHO_QUALIFIED = "echo_qualified"
    AWAITING_PROCEDURE = "awaiting_procedure"
    RANDOMIZED = "randomized"
    UNBLINDED = "unblinded"
    COMPLETED = "completed"
    SCREEN_FAILED = "screen_failed"
    WITHDRAWN = "withdrawn"
    LOST_TO_FOLLOW_UP = "lost_to_follow_up"
    DIED = "died"


class Action(StrEnum):
    RECORD_CONSENT = "record_consent"
    DECLINE_CONSENT = "decline_consent"
    RECORD_SCREENING_FORM = "record_screening_form"
    CONFIRM_CRITERION = "confirm_criterion"
    PASS_SCREENING = "pass_screening"
    FAIL_SCREENING = "fail_screening"
    CRC_APPROVE = "crc_approve"
    CRC_REJECT = "crc_reject"
    CRC_REQUEST_INFO = "crc_request_info"
    ANATOMY_SUITABLE = "anatomy_suitable"
    ANATOMY_UNSUITABLE = "anatomy_unsuitable"
    SCREEN_FAIL_OTHER = "screen_fail_other"
    RANDOMIZE = "randomize"
    RECORD_PROCEDURE = "record_procedure"
    RECORD_DISCHARGE = "record_discharge"
    RECORD_VISIT = "record_visit"
    MISS_VISIT = "miss_visit"
    RECORD_THERAPY = "record_therapy"
    RECORD_ADVERSE_EVENT = "record_adverse_event"
    EMERGENCY_UNBLIND = "emergency_unblind"
    UNBLIND = "unblind"
    COMPLETE = "complete"
    WITHDRAW = "withdraw"
    MARK_LOST_TO_FOLLOW_UP = "mark_lost_to_follow_up"
    RECORD_DEATH = "record_death"
    CORRECT_DATA = "correct_data"


class ScreenFailureReason(StrEnum):
    """Why a subject was not randomized (LIFE-3); the CONSORT "excluded" boxes."""

    CRITERIA_NOT_MET = "criteria_not_met"
    CRC_REJECTED = "crc_rejected"
    ANATOMY_UNSUITABLE = "anatomy_unsuitable"
    DECLINED = "declined"
    OTHER = "other"


S = SubjectState
A = Action

PRE_RANDOMIZATION: frozenset[SubjectState] = frozenset(
    {S.SCREENING, S.ECHO_QUALIFIED, S.AWAITING_PROCEDURE}
)
"""Post-consent states before randomization."""

ON_STUDY: frozenset[SubjectState] = frozenset({S.RANDOMIZED, S.UNBLINDED})
"""Randomized subjects still in follow-up."""

POST_CONSENT: frozenset[SubjectState] = PRE_RANDOMIZATION | ON_STUDY

TERMINAL: frozenset[SubjectState] = frozenset(
    {S.COMPLETED, S.SCREEN_FAILED, S.WITHDRAWN, S.LOST_TO_FOLLOW_UP, S.DIED}
)

EVER_RANDOMIZED: frozenset[SubjectState] = frozenset(
    {S.RANDOMIZED, S.UNBLINDED, S.COMPLETED, S.WITHDRAWN, S.LOST_TO_FOLLOW_UP, S.DIED}
)
"""States a randomized subject can be in; exits keep the arm (LIFE-4). Exits from
pre-randomization states are told apart by the subject's randomization record, not the state."""


def _build() -> dict[tuple[SubjectState, Action], SubjectState]:
    table: dict[tuple[SubjectState, Action], SubjectState] = {
        (S.REGISTERED, A.RECORD_CONSENT): S.SCREENING,
        (S.REGISTERED, A.DECLINE_CONSENT): S.SCREEN_FAILED,
        (S.SCREENING, A.RECORD_SCREENING_FORM): S.SCREENING,
        (S.SCREENING, A.CONFIRM_CRITERION): S.SCREENING,
        (S.SCREENING, A.PASS_SCREENING): S.ECHO_QUALIFIED,
        (S.SCREENING, A.FAIL_SCREENING): S.SCREEN_FAILED,
        (S.ECHO_QUALIFIED, A.RECORD_SCREENING_FORM): S.ECHO_QUALIFIED,
        (S.ECHO_QUALIFIED, A.CRC_APPROVE): S.AWAITING_PROCEDURE,
        (S.ECHO_QUALIFIED, A.CRC_REJECT): S.SCREEN_FAILED,
        (S.ECHO_QUALIFIED, A.CRC_REQUEST_INFO): S.ECHO_QUALIFIED,
        (S.AWAITING_PROCEDURE, A.ANATOMY_SUITABLE): S.AWAITING_PROCEDURE,
        (S.AWAITING_PROCEDURE, A.ANATOMY_UNSUITABLE): S.SCREEN_FAILED,
        (S.AWAITING_PROCEDURE, A.RANDOMIZE): S.RANDOMIZED,
        (S.RANDOMIZED, A.RECORD_PROCEDURE): S.RANDOMIZED,
        (S.RANDOMIZED, A.RECORD_DISCHARGE): S.RANDOMIZED,
        (S.RANDOMIZED, A.EMERGENCY_UNBLIND): S.RANDOMIZED,
        (S.RANDOMIZED, A.UNBLIND): S.UNBLINDED,
        (S.UNBLINDED, A.COMPLETE): S.COMPLETED,
    }
    for state in PRE_RANDOMIZATION:
        table[(state, A.SCREEN_FAIL_OTHER)] = S.SCREEN_FAILED
    for state in ON_STUDY:
        for action in (A.RECORD_VISIT, A.MISS_VISIT, A.RECORD_THERAPY, A.RECORD_ADVERSE_EVENT):
            table[(state, action)] = state
    for state in POST_CONSENT:
        table[(state, A.WITHDRAW)] = S.WITHDRAWN
        table[(state, A.MARK_LOST_TO_FOLLOW_UP)] = S.LOST_TO_FOLLOW_UP
        table[(state, A.RECORD_DEATH)] = S.DIED
    for state in SubjectState:
        if state is not S.REGISTERED:
            table[(state, A.CORRECT_DATA)] = state
    return table


TRANSITIONS: dict[tuple[SubjectState, Action], SubjectState] = _build()
"""``(state, action) -> next state``: the whole lifecycle. Anything absent is refused."""


def allowed_actions(state: SubjectState) -> list[Action]:
    """Actions allowed from ``state``, in declaration order (for menus and refusals)."""
    return [action for action in Action if (state, action) in TRANSITIONS]


def apply_action(state: SubjectState, action: Action, *, subject_label: str = "") -> SubjectState:
    """Return the state after ``action`` or refuse, naming the state and what is allowed."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        allowed = ", ".join(a.value for a in allowed_actions(state)) or "none"
        who = f"subject {subject_label} " if subject_label else "a subject "
        raise ActionNotAllowed(
            f"'{action.value}' is not allowed for {who}in state '{state.value}'; "
            f"allowed now: {allowed}"
        ) from None
