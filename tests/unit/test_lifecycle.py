"""The lifecycle table (SYSTEM.md §2): every transition allowed and every one refused."""

from __future__ import annotations

import pytest

from trialdesk.domain.errors import ActionNotAllowed
from trialdesk.domain.lifecycle import (
    EVER_RANDOMIZED,
    POST_CONSENT,
    TERMINAL,
    TRANSITIONS,
    Action,
    SubjectState,
    allowed_actions,
    apply_action,
)

S, A = SubjectState, Action

# The journey of SYSTEM.md §2 written out by hand, independently of the table's construction.
EXPECTED_STATE_CHANGES = {
    (S.REGISTERED, A.RECORD_CONSENT): S.SCREENING,
    (S.REGISTERED, A.DECLINE_CONSENT): S.SCREEN_FAILED,
    (S.SCREENING, A.PASS_SCREENING): S.ECHO_QUALIFIED,
    (S.SCREENING, A.FAIL_SCREENING): S.SCREEN_FAILED,
    (S.ECHO_QUALIFIED, A.CRC_APPROVE): S.AWAITING_PROCEDURE,
    (S.ECHO_QUALIFIED, A.CRC_REJECT): S.SCREEN_FAILED,
    (S.AWAITING_PROCEDURE, A.ANATOMY_UNSUITABLE): S.SCREEN_FAILED,
    (S.AWAITING_PROCEDURE, A.RANDOMIZE): S.RANDOMIZED,
    (S.RANDOMIZED, A.UNBLIND): S.UNBLINDED,
    (S.UNBLINDED, A.COMPLETE): S.COMPLETED,
    **{
        (s, A.SCREEN_FAIL_OTHER): S.SCREEN_FAILED
        for s in (S.SCREENING, S.ECHO_QUALIFIED, S.AWAITING_PROCEDURE)
    },
    **{(s, A.WITHDRAW): S.WITHDRAWN for s in POST_CONSENT},
    **{(s, A.MARK_LOST_TO_FOLLOW_UP): S.LOST_TO_FOLLOW_UP for s in POST_CONSENT},
    **{(s, A.RECORD_DEATH): S.DIED for s in POST_CONSENT},
}
ALL_PAIRS = [(s, a) for s in SubjectState for a in Action]


@pytest.mark.parametrize(("state", "action"), sorted(EXPECTED_STATE_CHANGES))
def test_life1_each_journey_transition_is_allowed(state: SubjectState, action: Action) -> None:
    """LIFE-1: every arrow of the journey diagram is in the table with its target."""
    assert apply_action(state, action) is EXPECTED_STATE_CHANGES[(state, action)]


@pytest.mark.parametrize(("state", "action"), ALL_PAIRS)
def test_life1_every_pair_is_allowed_or_refused_with_state_and_allowed_actions(
    state: SubjectState, action: Action
) -> None:
    """LIFE-1: outside the table an action is refused, naming the state and what is allowed."""
    if (state, action) in TRANSITIONS:
        target = apply_action(state, action)
        assert target is EXPECTED_STATE_CHANGES.get((state, action), state)
        return
    with pytest.raises(ActionNotAllowed) as info:
        apply_action(state, action, subject_label="S101-0001")
    message = str(info.value)
    assert f"'{action.value}'" in message and f"state '{state.value}'" in message
    for allowed in allowed_actions(state):
        assert allowed.value in message
    assert info.value.code == "not-allowed-in-state"


def test_life1_state_changes_are_exactly_the_journey() -> None:
    """No transition changes state unless the journey diagram has that arrow."""
    changes = {k: v for k, v in TRANSITIONS.items() if v is not k[0]}
    assert changes == EXPECTED_STATE_CHANGES


def test_life4_no_way_back_from_randomized() -> None:
    """LIFE-4: nothing leads from a randomized state to a never-randomized one."""
    for (state, _action), target in TRANSITIONS.items():
        if state in EVER_RANDOMIZED:
            assert target in EVER_RANDOMIZED


def test_life4_terminal_states_only_allow_corrections() -> None:
    """Exits keep data: a terminal subject only accepts data corrections (DATA-2)."""
    for state in TERMINAL:
        assert allowed_actions(state) == [A.CORRECT_DATA]


def test_life2_nothing_but_consent_decisions_before_consent() -> None:
    """LIFE-2: a registered candidate can only consent or decline."""
    assert allowed_actions(S.REGISTERED) == [A.RECORD_CONSENT, A.DECLINE_CONSENT]
