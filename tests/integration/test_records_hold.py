"""Records that hold (issue 15, lane x15a) on both databases: the KCCQ case (the blinded phase
frozen at unblinding, REC-4), locks at four levels with one guard (REC-3), SDV cleared by a
later change (REC-1), investigator signatures invalidated by a later change (REC-2, SIG-1),
and the database lock with its checklist before trial-level unblinding (REC-5)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from trialdesk.domain.errors import AuthenticationFailed, PreconditionFailed, ValidationFailed
from trialdesk.domain.locks import RecordLocked
from trialdesk.services import (
    data_queries,
    endpoints,
    followup,
    report_views,
    screening,
    unblinding,
)
from trialdesk.services.records import checklist, locks, review
from trialdesk.store.tables import AuditEntryRow, FormRecordRow

WRONG = "not-the-password"


def _audit(t: Trial, action: str) -> list[AuditEntryRow]:
    with t.ctx.uow(readonly=True) as uow:
        return list(
            uow.session.scalars(
                select(AuditEntryRow)
                .where(AuditEntryRow.action == action)
                .order_by(AuditEntryRow.id)
            )
        )


def _value(t: Trial, number: str, form: str, visit: str, field: str) -> object:
    with t.ctx.uow(readonly=True) as uow:
        subject = uow.subjects.get(t.study_id, number)
        assert subject is not None
        record = uow.forms.latest(subject.id, form, visit)
        assert record is not None
        return json.loads(record.data)[field]


def _correct_kccq(t: Trial, number: str, score: float) -> None:
    followup.correct_form_data(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        form_code="follow_up",
        visit_code="M24",
        changes={"kccq_overall_score": score},
        reason="transcription error against the source",
    )


def test_rec4_kccq_change_after_scheduled_unblinding_is_refused_until_unlocked_then_flagged(
    trial: Trial,
) -> None:
    """REC-4 (Must show): after the scheduled unblinding at M24 (RAND-7) the coordinator's
    change of the KCCQ score 61 -> 75 is refused by the freeze, naming it; the data manager
    unlocks with a reason and a signature; the change then goes through and is flagged
    "changed after unblinding" in the audit and in the efficacy output (END-2)."""
    number, _arm = j.unblinded(trial)
    frozen = locks.subject_locks(
        trial.ctx, trial.actor("monitor"), study_id=trial.study_id, number=number
    )
    assert {(v.level, v.kind, v.visit) for v in frozen} >= {
        ("visit", "freeze", "M24"),
        ("visit", "freeze", "M1"),
    }
    assert _audit(trial, "lock_freeze"), "the freeze is audited"

    with pytest.raises(RecordLocked) as refused:
        _correct_kccq(trial, number, 75)
    message = refused.value.message
    assert "follow_up at M24" in message and "freeze at unblinding of visit M24" in message
    assert "data manager may unlock" in message
    assert refused.value.code == "record-locked"
    assert _value(trial, number, "follow_up", "M24", "kccq_overall_score") == 61

    (m24,) = [v for v in frozen if v.visit == "M24"]
    monitor = trial.actor("monitor")
    with pytest.raises(AuthenticationFailed):
        locks.unlock_record(
            trial.ctx, monitor, study_id=trial.study_id, lock_id=m24.id, reason="x", password=WRONG
        )
    with pytest.raises(ValidationFailed, match="reason"):
        locks.unlock_record(
            trial.ctx,
            monitor,
            study_id=trial.study_id,
            lock_id=m24.id,
            reason=" ",
            password=PASSWORD,
        )
    lifted = locks.unlock_record(
        trial.ctx,
        monitor,
        study_id=trial.study_id,
        lock_id=m24.id,
        reason="source document shows 75; transcription error",
        password=PASSWORD,
    )
    assert not lifted.active and lifted.unlocked_by == "monitor"

    _correct_kccq(trial, number, 75)
    assert _value(trial, number, "follow_up", "M24", "kccq_overall_score") == 75
    (flag,) = _audit(trial, "changed_after_unblinding")
    assert "changed_after_unblinding" in flag.new and "75" in flag.new
    (unlock,) = _audit(trial, "unlock_record")
    assert unlock.reason == "source document shows 75; transcription error"

    summary = endpoints.efficacy_summary(trial.ctx, trial.actor("statistician"), trial.study_id)
    (changed,) = summary.changed_after_unblinding
    assert (changed["subject"], changed["field"], changed["old"], changed["new"]) == (
        number,
        "kccq_overall_score",
        61,
        75,
    )
    assert changed["flag"] == "changed_after_unblinding"
    dsmb = report_views.dsmb_report_html(trial.ctx, trial.actor("dsmb"), trial.study_id)
    section = dsmb.split("Data changed after unblinding", 1)[1]
    assert number in section and "kccq_overall_score" in section and "75" in section


def test_rec4_emergency_unblinding_freezes_from_that_moment(trial: Trial) -> None:
    """REC-4: an emergency unblinding freezes the visits already recorded and is itself never
    refused by a lock (a patient's safety does not wait)."""
    number, _arm = j.procedure_done(trial)
    j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    locks.lock_record(
        trial.ctx,
        trial.actor("monitor"),
        study_id=trial.study_id,
        number=number,
        level="casebook",
        reason="interim review",
        password=PASSWORD,
    )
    view = followup.emergency_unblind(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        reason="bleed",
        password=PASSWORD,
    )
    assert view.arm is not None
    frozen = locks.subject_locks(
        trial.ctx, trial.actor("monitor"), study_id=trial.study_id, number=number
    )
    assert ("visit", "freeze", "M1") in {(v.level, v.kind, v.visit) for v in frozen}


def test_rec3_casebook_lock_refuses_every_change_and_unlock_is_shown(trial: Trial) -> None:
    """REC-3: a casebook lock refuses a visit, a correction and an adverse event with one
    message naming it; only the data manager or study manager may set it; the unlock is kept
    on the record."""
    number, _arm = j.procedure_done(trial)
    with pytest.raises(Exception, match="lock or unlock"):
        locks.lock_record(
            trial.ctx,
            trial.actor("coordinator"),
            study_id=trial.study_id,
            number=number,
            level="casebook",
            reason="x",
            password=PASSWORD,
        )
    lock = locks.lock_record(
        trial.ctx,
        trial.actor("manager"),
        study_id=trial.study_id,
        number=number,
        level="casebook",
        reason="data review",
        password=PASSWORD,
    )
    with pytest.raises(RecordLocked, match="casebook of " + number):
        j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    with pytest.raises(RecordLocked, match="casebook"):
        followup.record_adverse_event(
            trial.ctx,
            trial.actor("coordinator"),
            trial.study_id,
            number,
            values=fd.adverse_event_forms(j.visit_dates()["M1"].isoformat())["adverse_event"],
        )
    locks.unlock_record(
        trial.ctx,
        trial.actor("manager"),
        study_id=trial.study_id,
        lock_id=lock.id,
        reason="review done",
        password=PASSWORD,
    )
    j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    shown = locks.subject_locks(
        trial.ctx, trial.actor("coordinator"), study_id=trial.study_id, number=number
    )
    (kept,) = [v for v in shown if v.id == lock.id]
    assert not kept.active and kept.unlock_reason == "review done"
    assert [e.actor for e in _audit(trial, "lock_record")] == ["manager"]


def test_rec1_rec2_a_change_clears_the_sdv_mark_and_invalidates_the_signature(
    trial: Trial,
) -> None:
    """REC-1, REC-2, SIG-1 (Must show): the monitor verifies the M1 follow-up form and the
    investigator signs the casebook; a later correction clears the mark and invalidates the
    signature, visibly (status with the change as reason) and in the audit."""
    number, _arm = j.procedure_done(trial)
    j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    mark = review.mark_sdv(
        trial.ctx,
        trial.actor("monitor"),
        study_id=trial.study_id,
        number=number,
        form="follow_up",
        visit="M1",
    )
    assert mark.status == "verified" and "kccq_overall_score" in mark.fields
    with pytest.raises(AuthenticationFailed):
        review.sign_records(
            trial.ctx,
            trial.actor("coordinator"),
            study_id=trial.study_id,
            number=number,
            level="casebook",
            password=WRONG,
        )
    signed = review.sign_records(
        trial.ctx,
        trial.actor("coordinator"),
        study_id=trial.study_id,
        number=number,
        level="casebook",
        password=PASSWORD,
    )
    assert signed.valid and signed.meaning == "I attest the data are accurate and complete."
    assert signed.signed_name and signed.signed_at

    followup.correct_form_data(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        form_code="follow_up",
        visit_code="M1",
        changes={"kccq_overall_score": 70},
        reason="re-scored",
    )
    status = review.sdv_status(
        trial.ctx, trial.actor("monitor"), study_id=trial.study_id, number=number, visit="M1"
    )
    (m1,) = [r for r in status.records if r.form == "follow_up"]
    assert m1.status == "invalidated"
    assert "kccq_overall_score changed 61 -> 70" in m1.why and "re-scored" in m1.why
    (sig,) = review.subject_signatures(
        trial.ctx, trial.actor("monitor"), study_id=trial.study_id, number=number
    )
    assert not sig.valid and any("follow_up at M1" in why for why in sig.invalid_because)
    (cleared,) = _audit(trial, "sdv_cleared")
    assert "re-scored" in (cleared.reason or "")
    (invalid,) = _audit(trial, "signature_invalidated")
    assert "changed after signing" in (invalid.reason or "")
    assert _audit(trial, "sdv_mark") and _audit(trial, "sign_records")


def _complete_checklist(t: Trial, number: str) -> None:
    """Verify every record SDV needs and sign the casebook."""
    status = review.sdv_status(t.ctx, t.actor("monitor"), study_id=t.study_id, number=number)
    for record in status.records:
        if record.required and record.status != "verified":
            review.mark_sdv(
                t.ctx,
                t.actor("monitor"),
                study_id=t.study_id,
                number=number,
                form=record.form,
                visit=record.visit,
                seq=record.seq,
            )
    review.sign_records(
        t.ctx,
        t.actor("coordinator"),
        study_id=t.study_id,
        number=number,
        level="casebook",
        password=PASSWORD,
    )


def test_rec5_trial_unblinding_needs_the_database_lock_and_the_lock_needs_the_checklist(
    trial: Trial,
) -> None:
    """REC-5 (Must show): trial unblinding is refused while the database is not hard-locked;
    the hard lock is refused while blockers remain and the checklist lists each (an open
    query, the unsigned casebook, SDV pending, a subject still on study); once resolved, the
    lock and the unblinding go through, and afterwards a correction and a registration are
    refused."""
    number, _arm = j.blinded_visits_done(trial)
    manager, monitor = trial.actor("manager"), trial.actor("monitor")
    query = data_queries.raise_query(
        trial.ctx,
        monitor,
        trial.study_id,
        number,
        form_code="follow_up",
        field="nyha_class",
        text="confirm NYHA",
        visit_code="M24",
    )
    with pytest.raises(PreconditionFailed) as refused:
        unblinding.request_trial_unblinding(trial.ctx, manager, trial.study_id, "end", PASSWORD)
    assert refused.value.code == "database-not-locked"

    report = checklist.lock_checklist(trial.ctx, monitor, study_id=trial.study_id)
    kinds = {b.kind for b in report.blockers}
    assert not report.ready
    assert {"open_query", "casebook_unsigned", "sdv_pending", "subject_on_study"} <= kinds
    with pytest.raises(PreconditionFailed) as blocked:
        locks.lock_database(
            trial.ctx,
            manager,
            study_id=trial.study_id,
            kind="hard",
            reason="final",
            password=PASSWORD,
        )
    assert blocked.value.code == "database-lock-blocked"
    assert "see the lock checklist" in blocked.value.message

    # resolve: the subject finishes, the query is answered and closed, SDV done, signed
    followup.unblind_subject(
        trial.ctx, trial.actor("coordinator"), trial.study_id, number, password=PASSWORD
    )
    for code in ("Y3", "Y4", "Y5"):
        j.record_visit(trial, number, code, j.visit_dates()[code])
    followup.complete_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    data_queries.answer_query(
        trial.ctx, trial.actor("coordinator"), trial.study_id, query.id, text="confirmed"
    )
    data_queries.close_query(trial.ctx, monitor, trial.study_id, query.id)
    _complete_checklist(trial, number)
    report = checklist.lock_checklist(trial.ctx, monitor, study_id=trial.study_id)
    assert report.blockers == [] and report.ready, report.blockers

    done = locks.lock_database(
        trial.ctx, manager, study_id=trial.study_id, kind="hard", reason="final", password=PASSWORD
    )
    assert (done.level, done.kind, done.active) == ("study", "hard", True)
    assert _audit(trial, "lock_database")
    with pytest.raises(PreconditionFailed, match="final"):
        locks.unlock_database(
            trial.ctx, manager, study_id=trial.study_id, reason="oops", password=PASSWORD
        )
    unblinding.request_trial_unblinding(trial.ctx, manager, trial.study_id, "end", PASSWORD)
    view = unblinding.confirm_trial_unblinding(
        trial.ctx, trial.actor("statistician"), trial.study_id, PASSWORD
    )
    assert view.status == "unblinded"

    with pytest.raises(RecordLocked, match="hard database lock"):
        _correct_kccq(trial, number, 80)
    with trial.ctx.uow(readonly=True) as uow:
        before = uow.session.query(FormRecordRow).count()
    with pytest.raises(RecordLocked, match="hard database lock"):
        screening.register_subject(
            trial.ctx, trial.actor("coordinator"), trial.study_id, site_code=j.SITE
        )
    with trial.ctx.uow(readonly=True) as uow:
        assert uow.session.query(FormRecordRow).count() == before


def test_rec5_soft_lock_is_reversible_and_refuses_data_changes(trial: Trial) -> None:
    """REC-5: the soft lock (interim look) goes ahead with blockers, refuses data changes and
    is lifted with a reason; SDV still works under it."""
    number, _arm = j.procedure_done(trial)
    manager = trial.actor("manager")
    soft = locks.lock_database(
        trial.ctx,
        manager,
        study_id=trial.study_id,
        kind="soft",
        reason="interim",
        password=PASSWORD,
    )
    assert soft.kind == "soft"
    with pytest.raises(RecordLocked, match="soft database lock"):
        j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    review.mark_sdv(
        trial.ctx, trial.actor("monitor"), study_id=trial.study_id, number=number, form="tte"
    )
    locks.unlock_database(
        trial.ctx, manager, study_id=trial.study_id, reason="interim done", password=PASSWORD
    )
    j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    (entry,) = _audit(trial, "unlock_database")
    assert entry.reason == "interim done"
