"""Site zones drive the clinical calendar and the reader's zone drives what a timestamp looks
like (TIME-1): Sydney (UTC+11/+10) and Honolulu (UTC-10) around midnight UTC."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.timefmt import format_moment
from trialdesk.services import followup, screening, visits
from trialdesk.services.history import subject_history
from trialdesk.services.preferences import set_time_zone, viewer_zone
from trialdesk.store.tables import AuditEntryRow, TherapyRow, UserRow

SYDNEY, HONOLULU = "S401", "S135"


def _at(trial: Trial, iso: str) -> None:
    trial.clock.now = dt.datetime.fromisoformat(iso)


def _states(trial: Trial) -> dict[tuple[str, str], str]:
    items = visits.visit_worklist(
        trial.ctx, trial.actor("manager"), trial.study_id, states=("due", "overdue")
    )
    return {(i.site, i.visit): i.state for i in items}


def test_time1_due_today_and_overdue_follow_each_sites_calendar(trial: Trial) -> None:
    """TIME-1/SCHED-2: M1's window (randomized 15 Feb) is 10-24 March. At 14:00 UTC on 9 March
    Sydney is already on 10 March (M1 due) while Honolulu is still on 9 March (not yet due);
    at 05:00 UTC on 25 March Sydney's window has closed (overdue) but in Honolulu it is
    still 24 March, the last day of the window (due)."""
    j.procedure_done_at(trial, SYDNEY)
    j.procedure_done_at(trial, HONOLULU)
    _at(trial, "2027-03-09T14:00:00+00:00")
    states = _states(trial)
    assert states.get((SYDNEY, "M1")) == "due"
    assert (HONOLULU, "M1") not in states
    _at(trial, "2027-03-25T05:00:00+00:00")
    states = _states(trial)
    assert states[(SYDNEY, "M1")] == "overdue"
    assert states[(HONOLULU, "M1")] == "due"


def test_time1_six_month_therapy_rule_uses_the_sites_date(trial: Trial) -> None:
    """THER-1/TIME-1: at 20:00 UTC on 15 August 2027 it is already 16 August in Sydney: a
    Sydney therapy dated 16 August is allowed and counts as more than 6 months after the
    15 February randomization, while the same date in Honolulu (10:00 on the 15th) is in the
    future and refused with nothing written; Honolulu's 15 August is exactly 6 months: early."""
    sydney = j.procedure_done_at(trial, SYDNEY)
    honolulu = j.procedure_done_at(trial, HONOLULU)
    _at(trial, "2027-08-15T20:00:00+00:00")
    aug16, aug15 = dt.date(2027, 8, 16), dt.date(2027, 8, 15)
    followup.record_therapy(
        trial.ctx,
        j.staff(trial, "coordinator", SYDNEY),
        trial.study_id,
        sydney,
        therapy_date=aug16,
        therapy_type="other",
    )
    coordinator = j.staff(trial, "coordinator", HONOLULU)
    with pytest.raises(ValidationFailed, match="future"):
        followup.record_therapy(
            trial.ctx,
            coordinator,
            trial.study_id,
            honolulu,
            therapy_date=aug16,
            therapy_type="other",
        )
    followup.record_therapy(
        trial.ctx, coordinator, trial.study_id, honolulu, therapy_date=aug15, therapy_type="other"
    )
    with trial.ctx.uow(readonly=True) as uow:
        rows = {r.therapy_date: r.early for r in uow.session.scalars(select(TherapyRow))}
    assert rows == {aug16: False, aug15: True}


def test_time1_viewer_zone_defaults_to_the_site_and_can_be_chosen(trial: Trial) -> None:
    """TIME-1: a Sydney coordinator reads Sydney time without setting anything, a study-wide
    manager reads UTC; a chosen zone wins, is audited, and an unknown zone changes nothing."""
    sydney = j.staff(trial, "coordinator", SYDNEY)
    manager = trial.actor("manager")
    assert viewer_zone(trial.ctx, sydney, trial.study_id) == "Australia/Sydney"
    assert viewer_zone(trial.ctx, manager, trial.study_id) == "UTC"
    assert set_time_zone(trial.ctx, manager, "Pacific/Honolulu") == "Pacific/Honolulu"
    assert viewer_zone(trial.ctx, manager, trial.study_id) == "Pacific/Honolulu"
    with trial.ctx.uow(readonly=True) as uow:
        before = uow.session.scalar(select(func.count()).select_from(AuditEntryRow))
    with pytest.raises(ValidationFailed, match="IANA"):
        set_time_zone(trial.ctx, manager, "Hawaii/Standard")
    with trial.ctx.uow(readonly=True) as uow:
        after = uow.session.scalar(select(func.count()).select_from(AuditEntryRow))
        zone = uow.session.scalars(select(UserRow.timezone).where(UserRow.username == "manager"))
        entry = uow.session.execute(
            select(AuditEntryRow.actor, AuditEntryRow.new).where(
                AuditEntryRow.action == "set_time_zone"
            )
        ).one()
        assert zone.one() == "Pacific/Honolulu"
    assert after == before
    assert tuple(entry) == ("manager", '{"timezone":"Pacific/Honolulu"}')
    set_time_zone(trial.ctx, manager, None)
    assert viewer_zone(trial.ctx, manager, trial.study_id) == "UTC"


def test_time1_history_is_stored_in_utc_and_read_in_each_viewers_zone(trial: Trial) -> None:
    """TIME-1/AUD-1: an action at 23:30 UTC on 1 March is 2 March 10:30 in Sydney and
    1 March 13:30 in Honolulu; the stored instant is the same for both readers."""
    sydney_staff = j.staff(trial, "coordinator", SYDNEY)
    _at(trial, "2027-03-01T23:30:00+00:00")
    number = screening.register_subject(
        trial.ctx, sydney_staff, trial.study_id, site_code=SYDNEY
    ).number
    manager = trial.actor("manager")
    set_time_zone(trial.ctx, manager, "Pacific/Honolulu")
    mine = subject_history(trial.ctx, sydney_staff, trial.study_id, number)
    theirs = subject_history(trial.ctx, manager, trial.study_id, number)
    assert mine[0].at == theirs[0].at == dt.datetime(2027, 3, 1, 23, 30, tzinfo=dt.UTC)
    assert mine[0].action == "register"
    zone_s = viewer_zone(trial.ctx, sydney_staff, trial.study_id)
    zone_m = viewer_zone(trial.ctx, manager, trial.study_id)
    assert format_moment(mine[0].at, zone_s) == "2027-03-02 10:30 AEDT (Australia/Sydney)"
    assert format_moment(theirs[0].at, zone_m) == "2027-03-01 13:30 HST (Pacific/Honolulu)"


def test_aud1_history_carries_no_allocation_detail_for_blinded_readers(trial: Trial) -> None:
    """RAND-6/AUD-1: a blinded coordinator's history of a randomized subject names the
    randomization number but no list, slot or stratum (those stay in the audit data only)."""
    number, _arm = j.randomized(trial)
    entries = subject_history(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert [e.action for e in entries][-2:] == ["randomize", "allocate"]
    text = repr(entries)
    for hidden in ("slot", "stratum", "list", "INT", "CTRL"):
        assert hidden not in text
