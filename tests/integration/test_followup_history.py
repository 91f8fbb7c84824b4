"""A flagship subject's follow-up history through the services, read back whole (SCHED-1,
SCHED-2, THER-1..3, AUD-1), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.therapy import add_months
from trialdesk.services import crc, followup, queries
from trialdesk.services.access import operator_actor
from trialdesk.services.forms import subject_form_values
from trialdesk.services.maintenance import verify_audit
from trialdesk.store.tables import AuditEntryRow, Base, FormRecordRow, SubjectRow, VisitRow

DAY0 = j.PROCEDURE  # randomization date of every journey subject


def _subject_id(t: Trial, number: str) -> int:
    with t.ctx.uow(readonly=True) as uow:
        row = uow.session.scalars(select(SubjectRow).where(SubjectRow.number == number)).one()
        return row.id


def _entries(t: Trial, number: str) -> list[dict[str, Any]]:
    """The subject's audit stream in chain order."""
    with t.ctx.uow(readonly=True) as uow:
        rows = uow.session.scalars(
            select(AuditEntryRow)
            .where(AuditEntryRow.stream == f"subject:{_subject_id(t, number)}")
            .order_by(AuditEntryRow.seq)
        ).all()
        return [
            {
                "seq": r.seq,
                "action": r.action,
                "hash": r.hash,
                "prev": r.prev_hash,
                "new": json.loads(r.new),
                "reason": r.reason,
            }
            for r in rows
        ]


def _visit(t: Trial, number: str, code: str, on: dt.date, **values: Any) -> None:
    t.clock.set_day(on)
    forms = fd.follow_up_forms(on.isoformat())
    forms["follow_up"].update(values)
    followup.record_visit(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        visit_code=code,
        visit_date=on,
        forms=forms,
    )


def _counts(t: Trial) -> dict[str, int]:
    """Rows per table (every table of the schema that the database has)."""
    with t.ctx.uow(readonly=True) as uow:
        present = set(inspect(uow.session.connection()).get_table_names())
        return {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
            if table.name in present
        }


def test_aud1_full_flagship_subject_history_reads_back_whole(trial: Trial) -> None:
    """SCHED-1/SCHED-2/THER-2/AUD-1: M1 on time, M6 late (accepted, flagged as a deviation),
    M12 missed (M18 and M24 still recorded), a therapy at 9 months reviewed by the CRC and an
    adverse event; everything reads back and every step is in the subject's audit chain."""
    t = trial
    number, arm = j.procedure_done(t)
    coord = t.actor("coordinator")
    dates = j.visit_dates()

    _visit(t, number, "M1", dates["M1"], kccq_overall_score=55.0)
    m6_late = DAY0 + dt.timedelta(days=180 + 30 + 1)  # the day after M6's window
    _visit(t, number, "M6", m6_late, kccq_overall_score=58.5, hf_hospitalizations=1)
    nine_months = add_months(DAY0, 9)
    t.clock.set_day(nine_months)
    followup.record_therapy(
        t.ctx, coord, t.study_id, number, therapy_date=nine_months, therapy_type="crt"
    )
    ae_on = nine_months + dt.timedelta(days=10)
    t.clock.set_day(ae_on)
    (ae,) = fd.adverse_event_forms(ae_on.isoformat()).values()
    followup.record_adverse_event(t.ctx, coord, t.study_id, number, values=ae)
    t.clock.set_day(DAY0 + dt.timedelta(days=365 + 30 + 1))
    followup.miss_visit(
        t.ctx, coord, t.study_id, number, visit_code="M12", reason="patient abroad for months"
    )
    _visit(t, number, "M18", dates["M18"])
    _visit(t, number, "M24", dates["M24"], kccq_overall_score=66.0)

    # the CRC finds the therapy in its queue, with months since randomization and the flag
    crc_user = t.actor("crc")
    (case,) = [c for c in crc.crc_queue(t.ctx, crc_user, t.study_id) if c.subject == number]
    assert (case.kind, case.status) == ("therapy", "open")
    assert case.therapy is not None
    assert (case.therapy.type, case.therapy.date) == ("crt", nine_months.isoformat())
    assert case.therapy.months_since_randomization == 9.0
    assert case.therapy.early is False and case.therapy.review == "endpoint_evaluation"
    decided = crc.decide_therapy_case(
        t.ctx,
        crc_user,
        t.study_id,
        case.id,
        classification="not_endpoint_event",
        reason="CRT: not in hierarchy",
        password=PASSWORD,
    )
    assert (decided.status, decided.decision) == ("decided", "not_endpoint_event")
    assert case.id not in [c.id for c in crc.crc_queue(t.ctx, crc_user, t.study_id)]

    # the subject view: visits with dates and timing, still blinded for the site
    view = queries.get_subject(t.ctx, coord, t.study_id, number)
    assert view.state == "randomized" and view.arm is None
    got = {v.code: (v.status, v.visit_date, v.timing) for v in view.visits}
    assert got == {
        "M1": ("done", dates["M1"].isoformat(), "on_time"),
        "M6": ("done", m6_late.isoformat(), "late"),
        "M12": ("missed", None, None),
        "M18": ("done", dates["M18"].isoformat(), "on_time"),
        "M24": ("done", dates["M24"].isoformat(), "on_time"),
        "Y3": ("planned", None, None),
        "Y4": ("planned", None, None),
        "Y5": ("planned", None, None),
    }
    m6 = next(v for v in view.visits if v.code == "M6")
    assert m6.window_end == (m6_late - dt.timedelta(days=1)).isoformat()
    stat_view = queries.get_subject(t.ctx, t.actor("statistician"), t.study_id, number)
    assert stat_view.arm is not None and stat_view.arm.code == arm

    # the forms, typed, as saved
    sid = _subject_id(t, number)
    with t.ctx.uow(readonly=True) as uow:
        m6_forms = subject_form_values(uow, t.ctx, sid, visit_code="M6")
        m24_forms = subject_form_values(uow, t.ctx, sid, visit_code="M24")
        assert subject_form_values(uow, t.ctx, sid, visit_code="M12") == {}
        baseline = subject_form_values(uow, t.ctx, sid)
        missed = uow.session.execute(
            select(VisitRow.status, VisitRow.missed_reason).where(
                VisitRow.subject_id == sid, VisitRow.visit_code == "M12"
            )
        ).one()
        ae_rows = uow.session.scalars(
            select(FormRecordRow.data).where(
                FormRecordRow.subject_id == sid, FormRecordRow.form_code == "adverse_event"
            )
        ).all()
    assert m6_forms["follow_up"]["visit_date"] == m6_late
    assert m6_forms["follow_up"]["kccq_overall_score"] == 58.5
    assert m6_forms["follow_up"]["hf_hospitalizations"] == 1
    assert m24_forms["follow_up"]["kccq_overall_score"] == 66.0
    assert baseline["kccq"]["overall_score"] == 48.5
    assert baseline["adverse_event"]["onset_date"] == ae_on
    assert tuple(missed) == ("missed", "patient abroad for months")
    assert len(ae_rows) == 1 and json.loads(ae_rows[0])["mae_category"] == "none"

    # AUD-1: every step is in the chain, in order, linked; the deviation is flagged there
    entries = _entries(t, number)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert all(b["prev"] == a["hash"] for a, b in pairwise(entries))
    start = next(i for i, e in enumerate(entries) if e["action"] == "record_discharge")
    assert [e["action"] for e in entries[start + 1 :]] == [
        "record_visit_form",
        "record_visit",  # M1
        "record_visit_form",
        "record_visit",  # M6, late
        "record_therapy",
        "record_adverse_event",
        "miss_visit",
        "record_visit_form",
        "record_visit",  # M18
        "record_visit_form",
        "record_visit",  # M24
        "crc_therapy_decision",  # signed by the CRC member
    ]
    visits = {e["new"]["visit"]: e for e in entries if e["action"] == "record_visit"}
    assert {code: e["new"]["protocol_deviation"] for code, e in visits.items()} == {
        "M1": False,
        "M6": True,
        "M18": False,
        "M24": False,
    }
    assert visits["M6"]["new"]["timing"] == "late"
    therapy = next(e for e in entries if e["action"] == "record_therapy")["new"]
    assert (therapy["early"], therapy["review"], therapy["crc_case"]) == (
        False,
        "endpoint_evaluation",
        case.id,
    )
    result = verify_audit(t.ctx, operator_actor())
    assert result.ok, result.problem


@pytest.mark.parametrize(
    ("offset", "early", "review"),
    [(-1, True, "early_therapy"), (0, True, "early_therapy"), (1, False, "endpoint_evaluation")],
    ids=["6-months-minus-a-day", "exactly-6-months", "6-months-plus-a-day"],
)
def test_ther2_ther3_six_month_boundary_through_the_service(
    trial: Trial, offset: int, early: bool, review: str
) -> None:
    """THER-2/THER-3: a therapy up to and including 6 calendar months after randomization is
    early, the day after is not; both open a CRC case and the subject stays on the trial."""
    t = trial
    number, _arm = j.procedure_done(t)
    on = add_months(DAY0, 6) + dt.timedelta(days=offset)
    t.clock.set_day(on)
    view = followup.record_therapy(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        therapy_date=on,
        therapy_type="transcatheter_mitral_repair",
    )
    assert view.state == "randomized"
    (case,) = [c for c in crc.crc_queue(t.ctx, t.actor("crc"), t.study_id) if c.subject == number]
    assert case.kind == "therapy" and case.status == "open" and case.therapy is not None
    assert (case.therapy.early, case.therapy.review) == (early, review)
    assert (case.therapy.months_since_randomization >= 6.0) == (offset >= 0)
    (entry,) = [e for e in _entries(t, number) if e["action"] == "record_therapy"]
    assert (entry["new"]["early"], entry["new"]["review"]) == (early, review)


def test_ther1_therapy_before_randomization_or_of_unknown_type_changes_nothing(
    trial: Trial,
) -> None:
    """THER-1: a therapy is recorded at any time after randomization, with a protocol type;
    one dated before randomization, or of an unknown type, is refused and writes nothing."""
    t = trial
    number, _arm = j.procedure_done(t)
    coord = t.actor("coordinator")
    before = _counts(t)
    with pytest.raises(ValidationFailed) as refused:
        followup.record_therapy(
            t.ctx,
            coord,
            t.study_id,
            number,
            therapy_date=DAY0 - dt.timedelta(days=1),
            therapy_type="crt",
        )
    assert refused.value.problems == {"therapy_date": "before randomization"}
    with pytest.raises(ValidationFailed) as refused:
        followup.record_therapy(
            t.ctx, coord, t.study_id, number, therapy_date=DAY0, therapy_type="acupuncture"
        )
    assert refused.value.problems == {"therapy_type": "unknown"}
    assert _counts(t) == before
    followup.record_therapy(
        t.ctx, coord, t.study_id, number, therapy_date=DAY0, therapy_type="crt"
    )  # day 0 is allowed
    assert _counts(t)["therapies"] == before["therapies"] + 1


@pytest.mark.parametrize(
    ("day", "timing"),
    [(22, "early"), (23, "on_time"), (37, "on_time"), (38, "late")],
    ids=["day-before-window", "first-day", "last-day", "day-after-window"],
)
def test_sched1_m1_window_edges_through_the_service(trial: Trial, day: int, timing: str) -> None:
    """SCHED-1/SCHED-2: M1's window is days 23 to 37 inclusive; a visit on day 22 is early
    and on day 38 late, both accepted and flagged as a deviation in the audit trail."""
    t = trial
    number, _arm = j.procedure_done(t)
    on = DAY0 + dt.timedelta(days=day)
    _visit(t, number, "M1", on)
    view = queries.get_subject(t.ctx, t.actor("coordinator"), t.study_id, number)
    m1 = next(v for v in view.visits if v.code == "M1")
    assert (m1.window_start, m1.window_end) == (
        (DAY0 + dt.timedelta(days=23)).isoformat(),
        (DAY0 + dt.timedelta(days=37)).isoformat(),
    )
    assert (m1.status, m1.visit_date, m1.timing) == ("done", on.isoformat(), timing)
    (entry,) = [e for e in _entries(t, number) if e["action"] == "record_visit"]
    assert entry["new"]["protocol_deviation"] is (timing != "on_time")


def test_sched1_every_visit_window_edge_through_the_service(trial: Trial) -> None:
    """SCHED-1: for one subject, M6 the day before its window (early), M12 on its first day,
    M18 on its last day (on time), M24 and Y3 the day after theirs (late), per the table."""
    t = trial
    number, _arm = j.procedure_done(t)
    plan = {
        "M6": (180 - 30 - 1, "early"),
        "M12": (365 - 30, "on_time"),
        "M18": (545 + 30, "on_time"),
        "M24": (730 + 30 + 1, "late"),
        "Y3": (1095 + 60 + 1, "late"),
    }
    for code, (day, _timing) in plan.items():
        on = DAY0 + dt.timedelta(days=day)
        if code == "Y3":
            t.clock.set_day(on)
            forms = fd.annual_contact_forms(on.isoformat())
            followup.record_visit(
                t.ctx,
                t.actor("coordinator"),
                t.study_id,
                number,
                visit_code=code,
                visit_date=on,
                forms=forms,
            )
        else:
            _visit(t, number, code, on)
    view = queries.get_subject(t.ctx, t.actor("coordinator"), t.study_id, number)
    got = {v.code: v.timing for v in view.visits if v.code in plan}
    assert got == {code: timing for code, (_day, timing) in plan.items()}
    assert next(v for v in view.visits if v.code == "M1").status == "planned"
