"""Death and withdrawal through the protocol's forms, and contacts after a withdrawal, on both
backends (REC-9, LIFE-4): the form is saved, the exit date and reason come from it; a
withdrawal from further visits still allows the annual contact, one from any contact does
not; bad input changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import Trial
from tests.protocol_variants import records_variant
from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.services import exits, followup
from trialdesk.store.tables import Base, FormRecordRow, SubjectRow

WITHDRAWN_ON = dt.date(2027, 8, 20)  # after M6
Y3 = j.visit_dates()["Y3"]


def _counts(t: Trial) -> dict[str, int]:
    with t.ctx.uow(readonly=True) as uow:
        return {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def _withdraw(t: Trial, number: str, kind: str | None, **extra: Any) -> None:
    t.clock.set_day(WITHDRAWN_ON)
    values = {"withdrawal_date": WITHDRAWN_ON.isoformat(), "reason": "subject_decision", **extra}
    exits.record_exit(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        exit="withdrawal",
        values=values,
        kind=kind,
    )


def _contact(t: Trial, number: str) -> None:
    t.clock.set_day(Y3)
    exits.record_contact(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        visit_code="Y3",
        contact_date=Y3,
        forms=fd.annual_contact_forms(Y3.isoformat()),
    )


def _subject(t: Trial, number: str) -> SubjectRow:
    with t.ctx.uow(readonly=True) as uow:
        return uow.session.scalars(select(SubjectRow).where(SubjectRow.number == number)).one()


def test_rec9_death_through_the_death_form(trial: Trial) -> None:
    """REC-9: the death form is saved and the subject dies on its date with its cause."""
    number, _ = j.procedure_done(trial)
    on = dt.date(2027, 5, 2)
    trial.clock.set_day(on)
    view = exits.record_exit(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        exit="death",
        values={"death_date": on.isoformat(), "cause": "cardiovascular"},
    )
    assert view.state == "died"
    row = _subject(trial, number)
    assert (row.exit_date, row.exit_reason) == (on, "cardiovascular")
    with trial.ctx.uow(readonly=True) as uow:
        forms = uow.session.scalars(
            select(FormRecordRow.form_code).where(FormRecordRow.subject_id == row.id)
        ).all()
    assert "death" in forms
    with pytest.raises(PreconditionFailed):  # a died subject gets no contact
        _contact(trial, number)


def test_rec9_withdrawal_from_visits_still_records_the_annual_contact(trial: Trial) -> None:
    """REC-9: withdrawn from further visits (``further_data``), the Y3 annual contact is still
    recorded and the subject stays withdrawn; a clinic follow-up form is refused."""
    number, _ = j.procedure_done(trial)
    _withdraw(trial, number, "further_data")
    row = _subject(trial, number)
    assert row.state == "withdrawn" and row.exit_date == WITHDRAWN_ON
    assert row.follow_up_contact_allowed is True
    _contact(trial, number)
    assert _subject(trial, number).state == "withdrawn"
    before = _counts(trial)
    with pytest.raises(PreconditionFailed, match="only follow-up contacts") as e:
        exits.record_contact(
            trial.ctx,
            trial.actor("coordinator"),
            trial.study_id,
            number,
            visit_code="M24",
            contact_date=Y3,
            forms=fd.follow_up_forms(Y3.isoformat()),
        )
    assert e.value.code == "withdrawn-contact-only"
    assert _counts(trial) == before


def test_rec9_withdrawal_from_any_contact_refuses_the_contact(trial: Trial) -> None:
    """REC-9: withdrawn from any contact, the annual contact is refused, nothing written."""
    number, _ = j.procedure_done(trial)
    _withdraw(trial, number, "all_contact")
    before = _counts(trial)
    with pytest.raises(PreconditionFailed, match="from any further contact") as e:
        _contact(trial, number)
    assert e.value.code == "withdrawn-no-contact"
    assert _counts(trial) == before


def test_rec9_the_older_withdrawal_path_keeps_its_kind(trial: Trial) -> None:
    """REC-9: a withdrawal recorded with "contact allowed" (no form) allows the contact."""
    number, _ = j.procedure_done(trial)
    trial.clock.set_day(WITHDRAWN_ON)
    followup.withdraw(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        withdrawn_on=WITHDRAWN_ON,
        reason="moved away",
        follow_up_contact_allowed=True,
    )
    _contact(trial, number)


def test_rec9_bad_withdrawals_are_refused_and_change_nothing(trial: Trial) -> None:
    """REC-9: no kind, an unknown kind, a form with errors: one message each, nothing
    written, the subject still on study."""
    number, _ = j.procedure_done(trial)
    before = _counts(trial)
    with pytest.raises(ValidationFailed, match="say what the subject withdraws from"):
        _withdraw(trial, number, None)
    with pytest.raises(ValidationFailed, match="unknown withdrawal kind 'sometimes'"):
        _withdraw(trial, number, "sometimes")
    with pytest.raises(ValidationFailed):
        _withdraw(trial, number, "further_data", reason="bored")
    with pytest.raises(ValidationFailed, match="unknown exit"):
        exits.record_exit(
            trial.ctx, trial.actor("coordinator"), trial.study_id, number, exit="lost", values={}
        )
    assert _counts(trial) == before
    assert _subject(trial, number).state == "randomized"


def test_rec9_second_protocol_reads_the_kind_from_its_form(
    make_trial: Callable[..., Trial], monkeypatch: pytest.MonkeyPatch
) -> None:
    """REC-9: the second protocol's withdrawal form holds the kind (``scope``); "visits"
    allows its annual contact."""
    monkeypatch.setattr(j, "CONSENT_VERSION", "A")
    t = make_trial(records_variant())
    number, _ = j.procedure_done(t)
    _withdraw(t, number, None, scope="visits")
    assert _subject(t, number).follow_up_contact_allowed is True
    _contact(t, number)
