"""Every action refused from every state where it is not allowed, through the services, with
nothing written on refusal (LIFE-1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from trialdesk.domain.errors import ActionNotAllowed
from trialdesk.domain.lifecycle import TRANSITIONS, Action, SubjectState, allowed_actions
from trialdesk.services import followup, screening
from trialdesk.services.allocation import randomization
from trialdesk.services.queries import get_subject
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import Base

Call = Callable[[Trial, str], Any]
DAY = dt.date(2027, 2, 15)


def _calls() -> dict[Action, Call]:
    def coord(t: Trial) -> Any:
        return t.actor("coordinator")

    def impl(t: Trial) -> Any:
        return t.actor("implanter")

    return {
        A.RECORD_CONSENT: lambda t, n: screening.record_consent(
            t.ctx, coord(t), t.study_id, n, consent_date=DAY, consent_version="v1"
        ),
        A.DECLINE_CONSENT: lambda t, n: screening.decline_consent(
            t.ctx, coord(t), t.study_id, n, reason="no"
        ),
        A.RECORD_SCREENING_FORM: lambda t, n: screening.record_screening_form(
            t.ctx, coord(t), t.study_id, n, form_code="nyha", values=fd.screening_forms()["nyha"]
        ),
        A.CONFIRM_CRITERION: lambda t, n: screening.confirm_criterion(
            t.ctx,
            coord(t),
            t.study_id,
            n,
            criterion_id=fd.INVESTIGATOR_CRITERIA[0],
            confirmed=True,
            password=PASSWORD,
        ),
        A.PASS_SCREENING: lambda t, n: screening.complete_screening(t.ctx, coord(t), t.study_id, n),
        A.FAIL_SCREENING: lambda t, n: screening.complete_screening(t.ctx, coord(t), t.study_id, n),
        A.CRC_APPROVE: lambda t, n: screening.crc_eligibility_decision(
            t.ctx, t.actor("crc"), t.study_id, n, decision="approve", reason="ok", password=PASSWORD
        ),
        A.CRC_REJECT: lambda t, n: screening.crc_eligibility_decision(
            t.ctx, t.actor("crc"), t.study_id, n, decision="reject", reason="no", password=PASSWORD
        ),
        A.CRC_REQUEST_INFO: lambda t, n: screening.crc_eligibility_decision(
            t.ctx,
            t.actor("crc"),
            t.study_id,
            n,
            decision="request_info",
            reason="more",
            password=PASSWORD,
        ),
        A.ANATOMY_SUITABLE: lambda t, n: screening.record_anatomy(
            t.ctx, impl(t), t.study_id, n, forms=fd.anatomy_forms()
        ),
        A.ANATOMY_UNSUITABLE: lambda t, n: screening.record_anatomy(
            t.ctx, impl(t), t.study_id, n, forms=fd.failing_anatomy_forms("ANAT-1")
        ),
        A.SCREEN_FAIL_OTHER: lambda t, n: screening.screen_fail_other(
            t.ctx, coord(t), t.study_id, n, reason="other"
        ),
        A.RANDOMIZE: lambda t, n: randomization.randomize(t.ctx, impl(t), t.study_id, n),
        A.RECORD_PROCEDURE: lambda t, n: followup.record_procedure(
            t.ctx, impl(t), t.study_id, n, values=fd.sham_procedure_forms()["sham_procedure"]
        ),
        A.RECORD_DISCHARGE: lambda t, n: followup.record_discharge(
            t.ctx, coord(t), t.study_id, n, discharged_on=DAY
        ),
        A.RECORD_VISIT: lambda t, n: followup.record_visit(
            t.ctx,
            coord(t),
            t.study_id,
            n,
            visit_code="M1",
            visit_date=DAY,
            forms=fd.follow_up_forms(),
        ),
        A.MISS_VISIT: lambda t, n: followup.miss_visit(
            t.ctx, coord(t), t.study_id, n, visit_code="M1", reason="away"
        ),
        A.RECORD_THERAPY: lambda t, n: followup.record_therapy(
            t.ctx, coord(t), t.study_id, n, therapy_date=DAY, therapy_type="crt"
        ),
        A.RECORD_ADVERSE_EVENT: lambda t, n: followup.record_adverse_event(
            t.ctx, coord(t), t.study_id, n, values=fd.adverse_event_forms()["adverse_event"]
        ),
        A.EMERGENCY_UNBLIND: lambda t, n: followup.emergency_unblind(
            t.ctx, coord(t), t.study_id, n, reason="bleeding", password=PASSWORD
        ),
        A.UNBLIND: lambda t, n: followup.unblind_subject(
            t.ctx, coord(t), t.study_id, n, password=PASSWORD
        ),
        A.COMPLETE: lambda t, n: followup.complete_subject(t.ctx, coord(t), t.study_id, n),
        A.WITHDRAW: lambda t, n: followup.withdraw(
            t.ctx,
            coord(t),
            t.study_id,
            n,
            withdrawn_on=DAY,
            reason="consent withdrawn",
            follow_up_contact_allowed=False,
        ),
        A.MARK_LOST_TO_FOLLOW_UP: lambda t, n: followup.mark_lost_to_follow_up(
            t.ctx, coord(t), t.study_id, n, on=DAY, reason="no contact"
        ),
        A.RECORD_DEATH: lambda t, n: followup.record_death(
            t.ctx, coord(t), t.study_id, n, death_date=DAY, cause="stroke"
        ),
        A.CORRECT_DATA: lambda t, n: followup.correct_form_data(
            t.ctx,
            coord(t),
            t.study_id,
            n,
            form_code="nyha",
            changes={"nyha_class": "III"},
            reason="typo",
        ),
    }


A = Action


def _subjects_in_every_state(t: Trial) -> dict[SubjectState, str]:
    coord = t.actor("coordinator")
    subjects = {
        S.REGISTERED: j.register(t),
        S.SCREENING: j.consented(t),
        S.ECHO_QUALIFIED: j.echo_qualified(t),
        S.AWAITING_PROCEDURE: j.anatomy_suitable(t),
        S.RANDOMIZED: j.randomized(t)[0],
        S.UNBLINDED: j.unblinded(t)[0],
        S.COMPLETED: j.completed(t)[0],
    }
    failed = j.register(t)
    screening.decline_consent(t.ctx, coord, t.study_id, failed, reason="no")
    subjects[S.SCREEN_FAILED] = failed
    withdrawn = j.consented(t)
    followup.withdraw(
        t.ctx,
        coord,
        t.study_id,
        withdrawn,
        withdrawn_on=j.CONSENT,
        reason="x",
        follow_up_contact_allowed=True,
    )
    subjects[S.WITHDRAWN] = withdrawn
    died = j.consented(t)
    followup.record_death(t.ctx, coord, t.study_id, died, death_date=j.CONSENT, cause="x")
    subjects[S.DIED] = died
    lost = j.consented(t)
    followup.mark_lost_to_follow_up(
        t.ctx, coord, t.study_id, lost, on=j.CONSENT, reason="moved away"
    )
    subjects[S.LOST_TO_FOLLOW_UP] = lost
    return subjects


S = SubjectState


def _counts(t: Trial) -> dict[str, int]:
    with t.ctx.uow(readonly=True) as uow:
        return {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def _root(t: Trial) -> tuple[int, str]:
    with t.ctx.uow(readonly=True) as uow:
        result = verify_chain(uow.session)
        assert result.ok, result.problem
        return result.entries, result.root


def test_life1_every_action_refused_in_every_state_where_not_allowed(trial: Trial) -> None:
    """LIFE-1: the service of every action not allowed in a state refuses, names the state and
    the allowed actions, and writes nothing (row counts and audit root unchanged)."""
    subjects = _subjects_in_every_state(trial)
    for state, number in subjects.items():
        view = get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
        assert view.state == state.value, (number, view.state, state)
    calls = _calls()
    assert set(calls) == set(Action)
    before_counts, before_root = _counts(trial), _root(trial)
    mismatches: list[str] = []
    refused = 0
    for state, number in subjects.items():
        allowed = [a.value for a in allowed_actions(state)]
        for action in Action:
            if (state, action) in TRANSITIONS:
                continue
            try:
                calls[action](trial, number)
            except ActionNotAllowed as exc:
                refused += 1
                msg = exc.message
                if f"state '{state.value}'" not in msg or not all(a in msg for a in allowed):
                    mismatches.append(f"{state}/{action}: message {msg!r}")
            except Exception as exc:  # any other refusal is a wrong answer here
                mismatches.append(f"{state}/{action}: {type(exc).__name__}: {exc}")
            else:
                mismatches.append(f"{state}/{action}: was allowed")
    assert not mismatches, "\n".join(mismatches)
    assert refused > 150
    assert _counts(trial) == before_counts
    assert _root(trial) == before_root
