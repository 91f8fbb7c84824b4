"""Clinical date rules (issue 12, Deliver 10) on SQLite and PostgreSQL: the index procedure is
not dated before randomization, discharge not before the procedure, and a visit cannot be
marked missed before its window opens. Each refusal is one clear message and changes nothing.
And the data query on the concealed index procedure: one refusal for implant and sham alike
(RAND-6), never a server error."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.errors import PreconditionFailed, Refusal, ValidationFailed
from trialdesk.services import data_queries, followup
from trialdesk.services.queries import get_subject
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import Base

DAY = dt.timedelta(days=1)


def _snapshot(t: Trial) -> tuple[dict[str, int], str]:
    with t.ctx.uow(readonly=True) as uow:
        counts = {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }
        return counts, verify_chain(uow.session).root


def _procedure(t: Trial, number: str, arm: str, on: dt.date) -> None:
    values = {**j.procedure_values(t, arm), "procedure_date": on.isoformat()}
    followup.record_procedure(t.ctx, t.actor("implanter"), t.study_id, number, values=values)


@pytest.mark.req("PROC-1")
def test_proc1_index_procedure_dated_before_randomization_is_refused(trial: Trial) -> None:
    number, arm = j.randomized(trial)
    values = {**j.procedure_values(trial, arm), "procedure_date": str(j.PROCEDURE - DAY)}
    before = _snapshot(trial)
    with pytest.raises(ValidationFailed, match="before randomization") as info:
        followup.record_procedure(
            trial.ctx, trial.actor("implanter"), trial.study_id, number, values=values
        )
    assert info.value.problems == {"procedure_date": "before randomization"}
    assert _snapshot(trial) == before
    _procedure(trial, number, arm, j.PROCEDURE)  # on the day of randomization it is recorded


@pytest.mark.req("PROC-2")
def test_proc2_discharge_before_the_index_procedure_is_refused(trial: Trial) -> None:
    """PROC-2: the procedure a day after randomization; discharge on the randomization day
    is refused naming the procedure date, the same words for either arm."""
    number, arm = j.randomized(trial)
    trial.clock.set_day(j.PROCEDURE + 2 * DAY)
    _procedure(trial, number, arm, j.PROCEDURE + DAY)
    coordinator = trial.actor("coordinator")
    before = _snapshot(trial)
    with pytest.raises(ValidationFailed) as info:
        followup.record_discharge(
            trial.ctx, coordinator, trial.study_id, number, discharged_on=j.PROCEDURE
        )
    assert info.value.message == (
        f"discharge date {j.PROCEDURE.isoformat()} is before the index procedure "
        f"({(j.PROCEDURE + DAY).isoformat()})"
    )
    assert _snapshot(trial) == before
    view = followup.record_discharge(
        trial.ctx, coordinator, trial.study_id, number, discharged_on=j.PROCEDURE + DAY
    )
    assert view.discharged_on == (j.PROCEDURE + DAY).isoformat()


@pytest.mark.req("SCHED-2")
def test_sched2_a_visit_is_not_missed_before_its_window_opens(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    coordinator = trial.actor("coordinator")
    visits = get_subject(trial.ctx, coordinator, trial.study_id, number).visits
    opens = dt.date.fromisoformat({v.code: v for v in visits}["M6"].window_start)
    trial.clock.set_day(opens - DAY)
    before = _snapshot(trial)
    with pytest.raises(PreconditionFailed, match="cannot be missed yet") as info:
        followup.miss_visit(
            trial.ctx, coordinator, trial.study_id, number, visit_code="M6", reason="no contact"
        )
    assert info.value.code == Refusal.VISIT_NOT_OPEN
    assert _snapshot(trial) == before
    trial.clock.set_day(opens)
    view = followup.miss_visit(
        trial.ctx, coordinator, trial.study_id, number, visit_code="M6", reason="no contact"
    )
    assert {v.code: v.status for v in view.visits}["M6"] == "missed"


@pytest.mark.req("RAND-6")
def test_rand6_a_query_on_the_index_procedure_is_refused_alike_for_both_arms(
    trial: Trial,
) -> None:
    """RAND-6: the monitor's query on the concealed procedure record, or on either arm's
    procedure form, of an implant subject, a sham subject and a subject whose procedure is
    not recorded yet: the same refusal, nothing written."""
    by_arm: dict[str, str] = {}
    while len(by_arm) < 2:
        number, arm = j.procedure_done(trial)
        by_arm.setdefault(arm, number)
    pending, _arm = j.randomized(trial)
    monitor = trial.actor("monitor")
    before = _snapshot(trial)
    for form in ("index_procedure", *sorted(fd.implant_procedure_forms()), "sham_procedure"):
        answers = set()
        for number in (*by_arm.values(), pending):
            with pytest.raises(ValidationFailed) as info:
                data_queries.raise_query(
                    trial.ctx,
                    monitor,
                    trial.study_id,
                    number,
                    form_code=form,
                    field="procedure_date",
                    text="please confirm",
                )
            answers.add((info.value.message.replace(number, "N"), str(info.value.problems)))
        assert len(answers) == 1, answers
    assert _snapshot(trial) == before
