"""The monitor's data queries on both backends: raise, answer (with or without a corrected
value through the DATA-2 correction path), close, reopen; site scoping of the list (ACC-1);
every refusal writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.errors import (
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)
from trialdesk.services import data_queries as dq
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import AuditEntryRow, Base, FormRecordRow, SubjectRow

QUESTION = "NYHA class III does not match the source document; please verify"


@pytest.fixture
def t(trial: Trial) -> Trial:
    """The trial, with the data_queries table created even before a migration names it."""
    Base.metadata.create_all(
        trial.runtime.engine, tables=[Base.metadata.tables["data_queries"]], checkfirst=True
    )
    return trial


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


def _form(t: Trial, number: str, form_code: str, visit_code: str = "") -> tuple[Any, int]:
    """The saved values and version of a form."""
    with t.ctx.uow(readonly=True) as uow:
        row = uow.session.scalars(
            select(FormRecordRow)
            .join(SubjectRow, SubjectRow.id == FormRecordRow.subject_id)
            .where(
                SubjectRow.number == number,
                FormRecordRow.form_code == form_code,
                FormRecordRow.visit_code == visit_code,
            )
        ).one()
        return json.loads(row.data), row.version


def _audit(t: Trial, number: str) -> list[dict[str, Any]]:
    """The subject's audit stream, oldest first, with old and new parsed."""
    with t.ctx.uow(readonly=True) as uow:
        subject_id = uow.session.scalars(
            select(SubjectRow.id).where(SubjectRow.number == number)
        ).one()
        rows = uow.session.scalars(
            select(AuditEntryRow)
            .where(AuditEntryRow.stream == f"subject:{subject_id}")
            .order_by(AuditEntryRow.seq)
        )
        return [
            {
                "action": e.action,
                "actor": e.actor,
                "entity": e.entity,
                "old": json.loads(e.old),
                "new": json.loads(e.new),
                "reason": e.reason,
            }
            for e in rows
        ]


def _raise(t: Trial, number: str, field: str = "nyha_class", form: str = "nyha") -> dq.QueryView:
    return dq.raise_query(
        t.ctx, t.actor("monitor"), t.study_id, number, form_code=form, field=field, text=QUESTION
    )


def test_data2_query_answered_with_a_new_value_corrects_the_form_and_audits_old_and_new(
    t: Trial,
) -> None:
    """DATA-2: the site's answer with a value changes the form through the correction path in
    the same transaction: reason required, audit keeps old and new, who and why."""
    number = j.echo_qualified(t)
    raised = _raise(t, number)
    assert (raised.status, raised.form, raised.field, raised.visit) == (
        "open",
        "nyha",
        "nyha_class",
        None,
    )
    assert raised.raised_by == "monitor"
    assert raised.raised_at == t.clock.now.isoformat()

    answered = dq.answer_query(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        raised.id,
        text="Source says class II; entry corrected",
        new_value="II",
        reason="transcription error against the clinic note",
    )
    assert (answered.status, answered.value_changed, answered.answered_by) == (
        "answered",
        True,
        "coordinator",
    )
    values, version = _form(t, number, "nyha")
    assert (values["nyha_class"], version) == ("II", 2)

    entries = _audit(t, number)
    assert [e["action"] for e in entries][-3:] == ["raise_query", "correct_data", "answer_query"]
    correction = entries[-2]
    assert (correction["old"], correction["new"]) == ({"nyha_class": "III"}, {"nyha_class": "II"})
    assert correction["reason"] == "transcription error against the clinic note"
    assert correction["actor"] == "coordinator"
    answer_new = entries[-1]["new"]
    assert (answer_new["correction"]["old"], answer_new["correction"]["new"]) == ("III", "II")

    closed = dq.close_query(t.ctx, t.actor("monitor"), t.study_id, raised.id, note="verified")
    assert (closed.status, closed.closed_by) == ("closed", "monitor")
    assert _audit(t, number)[-1]["action"] == "close_query"
    assert dq.open_queries(t.ctx, t.actor("monitor"), t.study_id) == []
    (done,) = dq.open_queries(t.ctx, t.actor("monitor"), t.study_id, status="closed")
    assert (done.id, done.raised_at) == (raised.id, raised.raised_at)
    _root(t)


def test_data2_query_answered_without_a_value_leaves_the_form_and_can_be_reopened(
    t: Trial,
) -> None:
    """DATA-2: an answer alone changes no data; answered and closed queries reopen to open."""
    number = j.echo_qualified(t)
    before = _form(t, number, "nyha")
    raised = _raise(t, number)
    coord, monitor = t.actor("coordinator"), t.actor("monitor")

    answered = dq.answer_query(t.ctx, coord, t.study_id, raised.id, text="Class III is correct")
    assert (answered.status, answered.value_changed) == ("answered", False)
    assert _form(t, number, "nyha") == before
    assert "correct_data" not in [e["action"] for e in _audit(t, number)]

    dq.close_query(t.ctx, monitor, t.study_id, raised.id)
    reopened = dq.reopen_query(t.ctx, monitor, t.study_id, raised.id, text="Please attach the note")
    assert (reopened.status, reopened.reopened, reopened.answer) == ("open", 1, None)
    assert "Please attach the note" in reopened.text

    dq.answer_query(t.ctx, coord, t.study_id, raised.id, text="Note filed in the binder")
    again = dq.reopen_query(t.ctx, monitor, t.study_id, raised.id, text="Which page?")
    assert (again.status, again.reopened) == ("open", 2)
    actions = [e["action"] for e in _audit(t, number) if e["entity"] == "data_query"]
    assert actions == [
        "raise_query",
        "answer_query",
        "close_query",
        "reopen_query",
        "answer_query",
        "reopen_query",
    ]
    _root(t)


def test_data2_query_on_a_visit_form_corrects_that_visit(t: Trial) -> None:
    """DATA-2: a query names the visit of the form; the correction lands on that visit's copy."""
    number, _arm = j.procedure_done(t)
    j.record_visit(t, number, "M1", j.visit_dates()["M1"])
    raised = dq.raise_query(
        t.ctx,
        t.actor("monitor"),
        t.study_id,
        number,
        form_code="follow_up",
        field="six_minute_walk_m",
        text="Walk distance looks like a typo",
        visit_code="M1",
    )
    assert raised.visit == "M1"
    dq.answer_query(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        raised.id,
        text="Corrected to the source value",
        new_value="356",
        reason="digits swapped",
    )
    assert _form(t, number, "follow_up", "M1")[0]["six_minute_walk_m"] == 356


def test_data2_every_query_refusal_is_clear_and_writes_nothing(t: Trial) -> None:
    """DATA-2 / RAND-6: wrong role, unknown field, unsaved or arm-specific form, closing an
    unanswered query, answering a closed or answered one, a value without a reason or an invalid
    value: each refused with a clear message; row counts and the audit root are unchanged."""
    number = j.echo_qualified(t)
    coord, monitor = t.actor("coordinator"), t.actor("monitor")
    other_coord = j.staff(t, "coordinator", "S102")
    open_q = _raise(t, number, "nyha_class")
    answered_q = _raise(t, number, "distance_m", "six_minute_walk")
    dq.answer_query(t.ctx, coord, t.study_id, answered_q.id, text="as measured")
    closed_q = _raise(t, number, "overall_score", "kccq")
    dq.answer_query(t.ctx, coord, t.study_id, closed_q.id, text="as measured")
    dq.close_query(t.ctx, monitor, t.study_id, closed_q.id)
    sid = t.study_id

    def ask(who: Any, form: str, field: str, text: str) -> object:
        return dq.raise_query(t.ctx, who, sid, number, form_code=form, field=field, text=text)

    def answer(who: Any, query_id: int, text: str, **correction: Any) -> object:
        return dq.answer_query(t.ctx, who, sid, query_id, text=text, **correction)

    cases: list[tuple[str, Callable[[], Any], type[TrialError], str]] = [
        (
            "coordinator raises",
            lambda: ask(coord, "tte", "lvef_pct", "x"),
            PermissionDenied,
            "monitor",
        ),
        (
            "crc raises",
            lambda: ask(t.actor("crc"), "tte", "lvef_pct", "x"),
            PermissionDenied,
            "monitor",
        ),
        (
            "unknown field",
            lambda: ask(monitor, "tte", "lvef", "x"),
            ValidationFailed,
            "no field 'lvef'",
        ),
        (
            "unsaved form",
            lambda: ask(monitor, "angiogram", "notes", "x"),
            NotFound,
            "not been saved",
        ),
        (
            "arm-specific form",
            lambda: ask(monitor, "implant_procedure", "end_time", "x"),
            ValidationFailed,
            "procedure form",
        ),
        (
            "arm-specific form, other arm",
            lambda: ask(monitor, "sham_procedure", "end_time", "x"),
            ValidationFailed,
            "procedure form",
        ),
        (
            "empty question",
            lambda: ask(monitor, "tte", "lvef_pct", "  "),
            ValidationFailed,
            "required",
        ),
        ("field already queried", lambda: _raise(t, number), PreconditionFailed, "in progress"),
        (
            "close unanswered",
            lambda: dq.close_query(t.ctx, monitor, sid, open_q.id),
            PreconditionFailed,
            "no answer yet",
        ),
        (
            "close closed",
            lambda: dq.close_query(t.ctx, monitor, sid, closed_q.id),
            PreconditionFailed,
            "already closed",
        ),
        (
            "coordinator closes",
            lambda: dq.close_query(t.ctx, coord, sid, answered_q.id),
            PermissionDenied,
            "monitor",
        ),
        (
            "monitor answers",
            lambda: answer(monitor, open_q.id, "x"),
            PermissionDenied,
            "coordinator",
        ),
        ("answer closed", lambda: answer(coord, closed_q.id, "x"), PreconditionFailed, "is closed"),
        (
            "answer answered",
            lambda: answer(coord, answered_q.id, "x"),
            PreconditionFailed,
            "is answered",
        ),
        (
            "value without reason",
            lambda: answer(coord, open_q.id, "fixed", new_value="II"),
            ValidationFailed,
            "reason",
        ),
        (
            "invalid value",
            lambda: answer(coord, open_q.id, "fixed", new_value="V", reason="typo"),
            ValidationFailed,
            "not one of the choices",
        ),
        (
            "same value",
            lambda: answer(coord, open_q.id, "fixed", new_value="III", reason="typo"),
            ValidationFailed,
            "nothing changed",
        ),
        ("empty answer", lambda: answer(coord, open_q.id, ""), ValidationFailed, "required"),
        (
            "other site's coordinator",
            lambda: answer(other_coord, open_q.id, "x"),
            NotFound,
            f"query {open_q.id} not found",
        ),
        ("unknown query", lambda: answer(coord, 9999, "x"), NotFound, "query 9999 not found"),
        (
            "reopen open",
            lambda: dq.reopen_query(t.ctx, monitor, sid, open_q.id, text="x"),
            PreconditionFailed,
            "already open",
        ),
        (
            "coordinator reopens",
            lambda: dq.reopen_query(t.ctx, coord, sid, closed_q.id, text="x"),
            PermissionDenied,
            "monitor",
        ),
        (
            "unknown status",
            lambda: dq.open_queries(t.ctx, monitor, sid, status="pending"),
            ValidationFailed,
            "unknown query status",
        ),
    ]
    before_counts, before_root = _counts(t), _root(t)
    form_before = _form(t, number, "nyha")
    for label, call, error, fragment in cases:
        with pytest.raises(error) as info:
            call()
        assert fragment in info.value.message, (label, info.value.message)
    assert _counts(t) == before_counts
    assert _root(t) == before_root
    assert _form(t, number, "nyha") == form_before


def test_data2_open_query_list_is_site_scoped(t: Trial) -> None:
    """DATA-2 / ACC-1: site staff list only their own site's queries; study-wide roles see all,
    oldest first, and may filter by site; another site's list is 'not found' to site staff."""
    here = j.echo_qualified(t, "S101")
    there = j.echo_qualified(t, "S102")
    t.clock.advance(hours=1)
    q_here = _raise(t, here)
    t.clock.advance(hours=1)
    q_there = _raise(t, there)
    monitor = t.actor("monitor")

    assert [q.id for q in dq.open_queries(t.ctx, monitor, t.study_id)] == [q_here.id, q_there.id]
    assert [q.id for q in dq.open_queries(t.ctx, t.actor("manager"), t.study_id)] == [
        q_here.id,
        q_there.id,
    ]
    only_there = dq.open_queries(t.ctx, monitor, t.study_id, site="S102")
    assert [(q.id, q.site) for q in only_there] == [(q_there.id, "S102")]
    mine = dq.open_queries(t.ctx, t.actor("coordinator"), t.study_id)
    assert [(q.id, q.subject) for q in mine] == [(q_here.id, here)]
    theirs = dq.open_queries(t.ctx, j.staff(t, "coordinator", "S102"), t.study_id)
    assert [(q.id, q.subject) for q in theirs] == [(q_there.id, there)]
    with pytest.raises(NotFound, match="site S102 not found"):
        dq.open_queries(t.ctx, t.actor("coordinator"), t.study_id, site="S102")
    with pytest.raises(PermissionDenied):
        dq.open_queries(t.ctx, t.actor("crc"), t.study_id)
