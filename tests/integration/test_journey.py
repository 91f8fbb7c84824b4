"""The flagship journey through the service layer, on SQLite and PostgreSQL (LIFE-1..4)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from trialdesk.domain.errors import PreconditionFailed
from trialdesk.services import followup, queries, screening
from trialdesk.services.access import operator_actor
from trialdesk.services.allocation import randomization
from trialdesk.services.maintenance import verify_audit


def test_life1_flagship_subject_walks_from_registration_to_completed(trial: Trial) -> None:
    """LIFE-1, SCHED-1, SCHED-3, RAND-7: one subject, every step, ends `completed`."""
    number, arm = j.completed(trial)
    view = queries.get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert view.state == "completed"
    assert [v.status for v in view.visits] == ["done"] * 8
    assert all(v.timing == "on_time" for v in view.visits)
    assert view.unblinded_on is not None
    # once unblinded, the site sees the arm; the randomization number never changes
    assert view.arm is not None and view.arm.code == arm
    assert view.randomization_number is not None
    result = verify_audit(trial.ctx, operator_actor())
    assert result.ok, result.problem


def test_life2_procedure_dated_before_consent_is_refused(trial: Trial) -> None:
    """LIFE-2: a screening form dated before consent is refused and nothing is saved."""
    number = j.consented(trial)
    trial.clock.set_day(j.SCREENING)
    forms = fd.screening_forms(on="2027-01-20")
    with pytest.raises(Exception, match="before consent"):
        screening.record_screening_form(
            trial.ctx,
            trial.actor("coordinator"),
            trial.study_id,
            number,
            form_code="demographics",
            values=forms["demographics"],
        )


@pytest.mark.parametrize("criterion", ["INC-3", "INC-5", "EXC-1"])
def test_life3_screen_failure_keeps_failed_criterion(trial: Trial, criterion: str) -> None:
    """LIFE-3: a failed rule criterion ends screening and names the criterion."""
    number = j.consented(trial)
    j.enter_screening(trial, number, fd.failing_screening_forms(criterion))
    view = screening.complete_screening(
        trial.ctx, trial.actor("coordinator"), trial.study_id, number
    )
    assert view.state == "screen_failed"
    assert view.screen_failure_reason == "criteria_not_met"
    assert view.screen_failure_detail == criterion


def test_life3_crc_rejection_is_a_screen_failure(trial: Trial) -> None:
    number = j.echo_qualified(trial)
    view = screening.crc_eligibility_decision(
        trial.ctx,
        trial.actor("crc"),
        trial.study_id,
        number,
        decision="reject",
        reason="Severe MAC on review",
        password=PASSWORD,
    )
    assert (view.state, view.screen_failure_reason) == ("screen_failed", "crc_rejected")


def test_life3_elig4_unsuitable_anatomy_is_never_randomized(trial: Trial) -> None:
    number = j.awaiting_procedure(trial)
    trial.clock.set_day(j.PROCEDURE)
    view = screening.record_anatomy(
        trial.ctx,
        trial.actor("implanter"),
        trial.study_id,
        number,
        forms=fd.failing_anatomy_forms("ANAT-2"),
    )
    assert (view.state, view.screen_failure_reason) == ("screen_failed", "anatomy_unsuitable")
    assert view.screen_failure_detail == "ANAT-2"
    with pytest.raises(Exception, match="not allowed"):
        randomization.randomize(trial.ctx, trial.actor("implanter"), trial.study_id, number)


def test_life3_declined_and_other_screen_failures(trial: Trial) -> None:
    coord = trial.actor("coordinator")
    declined = j.register(trial)
    view = screening.decline_consent(
        trial.ctx, coord, trial.study_id, declined, reason="does not want a procedure"
    )
    assert (view.state, view.screen_failure_reason) == ("screen_failed", "declined")
    other = j.consented(trial)
    view = screening.screen_fail_other(
        trial.ctx, coord, trial.study_id, other, reason="moved abroad before screening"
    )
    assert (view.state, view.screen_failure_reason) == ("screen_failed", "other")


def test_life4_withdrawn_subject_keeps_arm_and_data(trial: Trial) -> None:
    number, arm = j.procedure_done(trial)
    j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    view = followup.withdraw(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        withdrawn_on=j.visit_dates()["M1"],
        reason="subject decision",
        follow_up_contact_allowed=False,
    )
    assert view.state == "withdrawn"
    assert view.randomization_number is not None
    stat = queries.get_subject(trial.ctx, trial.actor("statistician"), trial.study_id, number)
    assert stat.arm is not None and stat.arm.code == arm
    assert [v.status for v in stat.visits][:1] == ["done"]


def test_life4_lost_to_follow_up_after_missed_contacts(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    coord = trial.actor("coordinator")
    dates = j.visit_dates()
    trial.clock.set_day(dates["M6"] + dt.timedelta(days=40))
    followup.miss_visit(
        trial.ctx, coord, trial.study_id, number, visit_code="M1", reason="no answer"
    )
    with pytest.raises(PreconditionFailed, match="missed contacts"):
        followup.mark_lost_to_follow_up(
            trial.ctx, coord, trial.study_id, number, on=trial.clock.now.date(), reason="no contact"
        )
    followup.miss_visit(
        trial.ctx, coord, trial.study_id, number, visit_code="M6", reason="no answer"
    )
    view = followup.mark_lost_to_follow_up(
        trial.ctx,
        coord,
        trial.study_id,
        number,
        on=trial.clock.now.date(),
        reason="three letters unanswered",
    )
    assert view.state == "lost_to_follow_up"
    assert view.randomization_number is not None


def test_life4_death_ends_follow_up(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    on = j.visit_dates()["M6"]
    trial.clock.set_day(on)
    view = followup.record_death(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        death_date=on,
        cause="heart failure",
    )
    assert view.state == "died" and view.exit_date == on.isoformat()
    assert view.allowed_actions == ["correct_data"]


def test_sched2_missed_visit_never_blocks_the_next(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    dates = j.visit_dates()
    trial.clock.set_day(dates["M6"])
    followup.miss_visit(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        visit_code="M1",
        reason="hospitalised elsewhere",
    )
    j.record_visit(trial, number, "M6", dates["M6"])
    late = dates["M12"] + dt.timedelta(days=31)
    j.record_visit(trial, number, "M12", late)
    view = queries.get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    by_code = {v.code: v for v in view.visits}
    assert by_code["M1"].status == "missed"
    assert (by_code["M6"].status, by_code["M6"].timing) == ("done", "on_time")
    assert (by_code["M12"].status, by_code["M12"].timing) == ("done", "late")
