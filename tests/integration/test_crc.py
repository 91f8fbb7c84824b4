"""The Central Review Committee on both backends: the work queue (no arm, oldest first),
therapy reviews (THER-2 endpoint evaluation, THER-3 early therapy), eligibility decisions
(ELIG-3), e-signatures (SIG-1), and refused attempts that leave exactly one audit entry."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from tests import journey as j
from tests.conftest import PASSWORD, Trial, flagship
from trialdesk.domain.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.services import crc, followup, screening
from trialdesk.services.queries import get_subject
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import AuditEntryRow, Base, CrcCaseRow, SubjectRow

EARLY_DAY = dt.date(2027, 7, 15)  # 5 months after randomization on 2027-02-15
LATE_DAY = dt.date(2027, 11, 15)  # 9 months after
REVIEW_DAY = dt.date(2027, 12, 1)


@pytest.fixture
def t(trial: Trial) -> Trial:
    """The trial, with every table of the metadata even before a migration names it."""
    Base.metadata.create_all(
        trial.runtime.engine, tables=[Base.metadata.tables["data_queries"]], checkfirst=True
    )
    return trial


@dataclass
class Cases:
    randomized: str
    waiting: str  # echo qualified, eligibility case open
    more_info: str  # echo qualified, CRC asked for more information
    early: int
    late: int


def _cases(t: Trial) -> Cases:
    """A randomized subject with an early and a late therapy, then two eligibility cases that
    are created later but opened on an earlier day (so order by id would be wrong)."""
    number, _arm = j.procedure_done(t)
    coord = t.actor("coordinator")
    for day, kind in ((EARLY_DAY, "crt"), (LATE_DAY, "mitral_surgery")):
        t.clock.set_day(day)
        followup.record_therapy(
            t.ctx, coord, t.study_id, number, therapy_date=day, therapy_type=kind
        )
    waiting = j.echo_qualified(t)
    more_info = j.echo_qualified(t)
    screening.crc_eligibility_decision(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        more_info,
        decision="request_info",
        reason="Need the TTE loops",
        password=PASSWORD,
    )
    with t.ctx.uow(readonly=True) as uow:
        early, late = uow.session.scalars(
            select(CrcCaseRow.id).where(CrcCaseRow.kind == "therapy").order_by(CrcCaseRow.id)
        ).all()
    t.clock.set_day(REVIEW_DAY)
    return Cases(number, waiting, more_info, early, late)


def _subject(t: Trial, number: str) -> dict[str, Any]:
    with t.ctx.uow(readonly=True) as uow:
        row = uow.session.scalars(select(SubjectRow).where(SubjectRow.number == number)).one()
        return {c.key: getattr(row, c.key) for c in SubjectRow.__table__.columns if c.key != "id"}


def _case(t: Trial, case_id: int) -> dict[str, Any]:
    with t.ctx.uow(readonly=True) as uow:
        row = uow.session.get(CrcCaseRow, case_id)
        assert row is not None
        return {c.key: getattr(row, c.key) for c in CrcCaseRow.__table__.columns}


def _counts(t: Trial) -> dict[str, int]:
    with t.ctx.uow(readonly=True) as uow:
        return {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def _entries_after(t: Trial, last_id: int) -> list[dict[str, Any]]:
    with t.ctx.uow(readonly=True) as uow:
        rows = uow.session.scalars(
            select(AuditEntryRow).where(AuditEntryRow.id > last_id).order_by(AuditEntryRow.id)
        )
        return [
            {
                "stream": e.stream,
                "actor": e.actor,
                "action": e.action,
                "subject_id": e.subject_id,
                "new": json.loads(e.new),
                "reason": e.reason,
            }
            for e in rows
        ]


def _last_entry_id(t: Trial) -> int:
    with t.ctx.uow(readonly=True) as uow:
        return int(uow.session.scalar(select(func.max(AuditEntryRow.id))) or 0)


def _chain_ok(t: Trial) -> None:
    with t.ctx.uow(readonly=True) as uow:
        result = verify_chain(uow.session)
        assert result.ok, result.problem


def test_ther2_ther3_queue_lists_pending_cases_oldest_first_without_any_arm(t: Trial) -> None:
    """THER-2, THER-3, ELIG-3: open and info-requested cases, oldest first, with subject, site,
    kind, opening time and, for therapies, type, date, months since randomization and the early
    flag; decided cases are gone; nothing in the serialised queue names an arm (RAND-6)."""
    cases = _cases(t)
    queue = crc.crc_queue(t.ctx, t.actor("crc"), t.study_id)

    assert [(c.kind, c.subject, c.status) for c in queue] == [
        ("eligibility", cases.waiting, "open"),
        ("eligibility", cases.more_info, "info_requested"),
        ("therapy", cases.randomized, "open"),
        ("therapy", cases.randomized, "open"),
    ]
    opened = [dt.datetime.fromisoformat(c.opened_at) for c in queue]
    assert opened == sorted(opened) and all(o.tzinfo is not None for o in opened)
    assert all(c.site == "S101" for c in queue)
    early, late = queue[2], queue[3]
    assert early.id == cases.early and late.id == cases.late
    assert early.therapy is not None and late.therapy is not None
    assert (early.therapy.type, early.therapy.date, early.therapy.early) == (
        "crt",
        EARLY_DAY.isoformat(),
        True,
    )
    assert early.therapy.months_since_randomization == pytest.approx(5.0)
    assert early.therapy.review == "early_therapy"
    assert (late.therapy.type, late.therapy.early, late.therapy.review) == (
        "mitral_surgery",
        False,
        "endpoint_evaluation",
    )
    assert late.therapy.months_since_randomization == pytest.approx(9.0)
    assert queue[0].therapy is None

    text = json.dumps([c.to_dict() for c in queue])
    for arm in flagship().protocol.arms:
        assert arm.code not in text and arm.label not in text
    assert '"arm"' not in text

    manager_view = crc.crc_queue(t.ctx, t.actor("manager"), t.study_id)
    assert [c.id for c in manager_view] == [c.id for c in queue]
    with pytest.raises(PermissionDenied):
        crc.crc_queue(t.ctx, t.actor("coordinator"), t.study_id)


def test_ther2_late_therapy_is_reviewed_as_endpoint_and_the_subject_stays(t: Trial) -> None:
    """THER-2, SIG-1: a therapy 9 months after randomization goes to endpoint evaluation; the
    e-signed decision stores signer, printed name, time and meaning, and the subject's record
    is untouched (still randomized, same version)."""
    cases = _cases(t)
    before = _subject(t, cases.randomized)
    view = crc.decide_therapy_case(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        cases.late,
        classification="endpoint_event",
        reason="Surgical mitral intervention: hierarchy level 3",
        password=PASSWORD,
    )
    assert (view.status, view.decision) == ("decided", "endpoint_event")
    assert view.therapy is not None and view.therapy.review == "endpoint_evaluation"
    stored = _case(t, cases.late)
    assert (stored["signed_by"], stored["signed_name"]) == ("crc", "Riley Reviewer")
    assert stored["signed_at"].replace(tzinfo=dt.UTC) == t.clock.now  # SQLite drops the zone
    assert view.signed_at == t.clock.now.isoformat()
    assert stored["meaning"] == crc.THERAPY_DECISIONS["endpoint_event"]
    assert stored["reason"] == "Surgical mitral intervention: hierarchy level 3"
    assert _subject(t, cases.randomized) == before
    assert get_subject(t.ctx, t.actor("coordinator"), t.study_id, cases.randomized).state == (
        "randomized"
    )
    assert cases.late not in [c.id for c in crc.crc_queue(t.ctx, t.actor("crc"), t.study_id)]
    with pytest.raises(PreconditionFailed, match="already decided"):
        crc.decide_therapy_case(
            t.ctx,
            t.actor("crc"),
            t.study_id,
            cases.late,
            classification="not_endpoint_event",
            reason="x",
            password=PASSWORD,
        )
    _chain_ok(t)


def test_ther3_early_therapy_is_flagged_and_needs_an_explicit_decision(t: Trial) -> None:
    """THER-3: a therapy 5 months after randomization is flagged early and waits in the queue
    until the CRC decides (request for information keeps it there); the decision is recorded
    and audited; the subject is never withdrawn or changed."""
    cases = _cases(t)
    before = _subject(t, cases.randomized)
    crc_user = t.actor("crc")
    asked = crc.decide_therapy_case(
        t.ctx,
        crc_user,
        t.study_id,
        cases.early,
        classification="request_info",
        reason="Operative note?",
        password=PASSWORD,
    )
    assert asked.status == "info_requested"
    pending = {c.id: c.therapy for c in crc.crc_queue(t.ctx, crc_user, t.study_id)}
    therapy = pending[cases.early]
    assert therapy is not None and therapy.early

    first = _last_entry_id(t)
    decided = crc.decide_therapy_case(
        t.ctx,
        crc_user,
        t.study_id,
        cases.early,
        classification="continue_follow_up",
        reason="Early CRT for dyssynchrony; follow-up continues",
        password=PASSWORD,
    )
    assert (decided.status, decided.decision) == ("decided", "continue_follow_up")
    assert decided.signed_name == "Riley Reviewer"
    assert decided.meaning == crc.THERAPY_DECISIONS["continue_follow_up"]
    (entry,) = _entries_after(t, first)
    assert entry["action"] == "crc_therapy_decision"
    assert entry["new"]["therapy"]["early"] is True
    assert entry["new"]["signature"]["name"] == "Riley Reviewer"
    assert entry["new"]["subject_state"] == "randomized"
    assert entry["reason"] == "Early CRT for dyssynchrony; follow-up continues"
    assert _subject(t, cases.randomized) == before
    assert cases.early not in [c.id for c in crc.crc_queue(t.ctx, crc_user, t.study_id)]
    _chain_ok(t)


def test_sig1_wrong_password_is_refused_and_leaves_one_failed_attempt_entry(t: Trial) -> None:
    """SIG-1: a decision signed with the wrong password is refused; exactly one audit entry (the
    failed re-authentication) is written, nothing else changes; for therapy and eligibility."""
    cases = _cases(t)
    calls: list[Callable[[], Any]] = [
        lambda: crc.decide_therapy_case(
            t.ctx,
            t.actor("crc"),
            t.study_id,
            cases.late,
            classification="endpoint_event",
            reason="x",
            password="wrong pw!",
        ),
        lambda: crc.crc_eligibility_decision(
            t.ctx,
            t.actor("crc"),
            t.study_id,
            cases.waiting,
            decision="approve",
            reason="x",
            password="wrong pw!",
        ),
    ]
    for call in calls:
        counts, last = _counts(t), _last_entry_id(t)
        with pytest.raises(AuthenticationFailed):
            call()
        (entry,) = _entries_after(t, last)
        assert entry["actor"] == "crc"
        assert entry["action"] == "signature_failed"
        assert entry["new"]["meaning"]
        after = _counts(t)
        assert after.pop("audit_entries") == counts.pop("audit_entries") + 1
        after.pop("audit_heads"), counts.pop("audit_heads")
        assert after == counts
    assert _case(t, cases.late)["status"] == "open"
    assert _subject(t, cases.waiting)["state"] == "echo_qualified"
    _chain_ok(t)


def test_sig1_decision_by_a_non_crc_user_is_refused_and_audited_once(t: Trial) -> None:
    """SIG-1, ELIG-3, THER-2: a coordinator, monitor or manager attempting a CRC decision is
    refused; each attempt leaves exactly one failed-attempt entry in the subject's stream and
    changes nothing else."""
    cases = _cases(t)
    with t.ctx.uow(readonly=True) as uow:
        ids = dict(uow.session.execute(select(SubjectRow.number, SubjectRow.id)).tuples().all())

    def therapy(user: str) -> Any:
        return crc.decide_therapy_case(
            t.ctx,
            t.actor(user),
            t.study_id,
            cases.late,
            classification="endpoint_event",
            reason="x",
            password=PASSWORD,
        )

    def eligibility(user: str) -> Any:
        return crc.crc_eligibility_decision(
            t.ctx,
            t.actor(user),
            t.study_id,
            cases.waiting,
            decision="approve",
            reason="x",
            password=PASSWORD,
        )

    attempts = [
        (number, call, user)
        for user in ("coordinator", "monitor", "manager")
        for number, call in ((cases.randomized, therapy), (cases.waiting, eligibility))
    ]
    for number, call, user in attempts:
        counts, last = _counts(t), _last_entry_id(t)
        with pytest.raises(PermissionDenied, match="Central Review Committee"):
            call(user)
        (entry,) = _entries_after(t, last)
        assert entry["action"] == "crc_decision_refused"
        assert (entry["stream"], entry["subject_id"]) == (f"subject:{ids[number]}", ids[number])
        assert entry["new"]["refused"] == "not a CRC member"
        after = _counts(t)
        assert after.pop("audit_entries") == counts.pop("audit_entries") + 1
        assert after == counts
    assert _case(t, cases.late)["status"] == "open"
    assert _subject(t, cases.waiting)["state"] == "echo_qualified"
    _chain_ok(t)


def test_sig1_non_crc_attempt_on_an_unknown_case_is_audited_in_the_user_stream(t: Trial) -> None:
    """SIG-1: the refusal is the same whether or not the case exists (nothing leaks); with no
    subject to file it under, the attempt is audited in the user's stream."""
    monitor = t.actor("monitor")
    last = _last_entry_id(t)
    with pytest.raises(PermissionDenied):
        crc.decide_therapy_case(
            t.ctx,
            monitor,
            t.study_id,
            4242,
            classification="endpoint_event",
            reason="x",
            password=PASSWORD,
        )
    (entry,) = _entries_after(t, last)
    assert (entry["stream"], entry["action"]) == (f"user:{monitor.user_id}", "crc_decision_refused")


def test_elig3_eligibility_decision_is_e_signed_on_the_case(t: Trial) -> None:
    """ELIG-3, SIG-1: approval stores signer, printed name, time and meaning on the case and
    moves the subject to awaiting_procedure."""
    number = j.echo_qualified(t)
    view = crc.crc_eligibility_decision(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        number,
        decision="approve",
        reason="Suitable on echo",
        password=PASSWORD,
    )
    assert view.state == "awaiting_procedure" and view.crc_approved
    with t.ctx.uow(readonly=True) as uow:
        case = uow.session.scalars(select(CrcCaseRow)).one()
        signed = (case.status, case.decision, case.signed_by, case.signed_name, case.meaning)
    assert signed == (
        "decided",
        "approve",
        "crc",
        "Riley Reviewer",
        crc.CRC_DECISIONS["approve"][1],
    )


def test_ther2_therapy_decision_input_errors_are_clear_and_write_nothing(t: Trial) -> None:
    """THER-2: an unknown classification, an empty reason, an unknown or eligibility case id
    are refused with one clear message each and write nothing."""
    cases = _cases(t)
    crc_user, sid = t.actor("crc"), t.study_id
    with t.ctx.uow(readonly=True) as uow:
        elig_id = uow.session.scalars(
            select(CrcCaseRow.id).where(CrcCaseRow.kind == "eligibility")
        ).first()
    assert elig_id is not None

    def decide(case_id: int, classification: str, reason: str) -> object:
        return crc.decide_therapy_case(
            t.ctx,
            crc_user,
            sid,
            case_id,
            classification=classification,
            reason=reason,
            password=PASSWORD,
        )

    refusals: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: decide(cases.late, "withdraw", "x"), ValidationFailed, "unknown classification"),
        (lambda: decide(cases.late, "endpoint_event", " "), ValidationFailed, "reason"),
        (lambda: decide(4242, "endpoint_event", "x"), NotFound, "therapy case 4242 not found"),
        (lambda: decide(elig_id, "endpoint_event", "x"), NotFound, "not found"),
    ]
    counts, last = _counts(t), _last_entry_id(t)
    for call, error, fragment in refusals:
        with pytest.raises(error, match=fragment):
            call()
    assert _counts(t) == counts
    assert _entries_after(t, last) == []


def test_sig1_every_signature_meaning_fits_its_column() -> None:
    """SIG-1: the meaning is stored with each decision (crc_cases.meaning, 200 characters)."""
    meanings = [m for _a, m in crc.CRC_DECISIONS.values()] + list(crc.THERAPY_DECISIONS.values())
    assert meanings and all(0 < len(m) <= 200 for m in meanings)
