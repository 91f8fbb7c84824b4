"""Due, overdue and missed visit lists per site and overall, for any date (SCHED-2)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.errors import ValidationFailed
from trialdesk.services import followup
from trialdesk.services.visits import visit_worklist


def test_sched2_worklist_due_overdue_missed_as_of_any_date(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    other = j.procedure_done_at(trial, "S102")
    dates = j.visit_dates()
    manager = trial.actor("manager")
    # the day M1's window opens: M1 is due for both subjects
    opening = dates["M1"] - dt.timedelta(days=7)
    items = visit_worklist(trial.ctx, manager, trial.study_id, as_of=opening)
    assert {(i.subject, i.visit, i.state) for i in items} == {
        (number, "M1", "due"),
        (other, "M1", "due"),
    }
    # the day before: nothing is due yet (upcoming visits are not listed)
    assert (
        visit_worklist(trial.ctx, manager, trial.study_id, as_of=opening - dt.timedelta(days=1))
        == []
    )
    # the day after the window closes: overdue
    closed = dates["M1"] + dt.timedelta(days=8)
    assert {i.state for i in visit_worklist(trial.ctx, manager, trial.study_id, as_of=closed)} == {
        "overdue"
    }
    # marking it missed moves it to the missed list; M6 is judged on its own (never blocked)
    trial.clock.set_day(closed)
    followup.miss_visit(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        visit_code="M1",
        reason="in hospital abroad",
    )
    m6 = dates["M6"]
    items = visit_worklist(trial.ctx, manager, trial.study_id, as_of=m6, site="S101")
    assert {(i.visit, i.state) for i in items} == {("M1", "missed"), ("M6", "due")}


def test_acc1_worklist_of_a_site_user_shows_only_that_site(trial: Trial) -> None:
    j.procedure_done(trial)
    j.procedure_done_at(trial, "S102")
    as_of = j.visit_dates()["M1"]
    mine = visit_worklist(trial.ctx, trial.actor("coordinator"), trial.study_id, as_of=as_of)
    assert {i.site for i in mine} == {"S101"}
    everyone = visit_worklist(trial.ctx, trial.actor("monitor"), trial.study_id, as_of=as_of)
    assert {i.site for i in everyone} == {"S101", "S102"}


def test_sched2_unknown_state_is_refused(trial: Trial) -> None:
    with pytest.raises(ValidationFailed, match="unknown visit state"):
        visit_worklist(trial.ctx, trial.actor("manager"), trial.study_id, states=("late",))
