"""Unblinding (RAND-7, SIG-1), randomized-in-error (LIFE-4) and manager notifications, on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.factory import hard_lock
from tests.integration.test_blinding_sweep import arm_leaks
from trialdesk.domain.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.roles import Role
from trialdesk.services import followup, queries
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.allocation import unblinding
from trialdesk.services.setup import create_user
from trialdesk.store.tables import (
    AllocationSlotRow,
    AuditEntryRow,
    NotificationRow,
    RandomizationRow,
    StudyRow,
    SubjectRow,
    TrialUnblindingRow,
)

WRONG = "not the password"


def _user(t: Trial, username: str, roles: list[tuple[Role, str | None]]) -> Actor:
    create_user(
        t.ctx,
        operator_actor(),
        t.study_id,
        username=username,
        full_name=username.title(),
        password=PASSWORD,
        roles=roles,
    )
    return t.actor(username)


def _audit(t: Trial) -> list[AuditEntryRow]:
    with t.ctx.uow(readonly=True) as uow:
        rows = list(uow.session.scalars(select(AuditEntryRow).order_by(AuditEntryRow.id)))
        uow.session.expunge_all()  # keep loaded values after the unit of work closes
        return rows


def _subject_row(t: Trial, number: str) -> SubjectRow:
    with t.ctx.uow(readonly=True) as uow:
        row = uow.session.scalars(select(SubjectRow).where(SubjectRow.number == number)).one()
        uow.session.expunge_all()
        return row


def _randomization(t: Trial, number: str) -> RandomizationRow:
    with t.ctx.uow(readonly=True) as uow:
        row = uow.session.scalars(
            select(RandomizationRow)
            .join(SubjectRow, SubjectRow.id == RandomizationRow.subject_id)
            .where(SubjectRow.number == number)
        ).one()
        uow.session.expunge_all()
        return row


def _failed_signatures(t: Trial, username: str) -> list[AuditEntryRow]:
    return [e for e in _audit(t) if e.actor == username and e.action == "signature_failed"]


# --- emergency unblinding ------------------------------------------------------------------


def test_rand7_emergency_unblinding_shows_arm_and_notifies_manager_without_it(
    trial: Trial,
) -> None:
    """RAND-7, SIG-1: reason + password → the investigator sees the arm; the manager is told
    which subject (not which arm); the event is audited with the signature and flagged."""
    number, arm = j.procedure_done(trial)
    coord = trial.actor("coordinator")
    view = followup.emergency_unblind(
        trial.ctx,
        coord,
        trial.study_id,
        number,
        reason="anaphylaxis, treating team must know",
        password=PASSWORD,
    )
    assert view.arm is not None and view.arm.code == arm
    assert view.emergency_unblinded is True
    assert _subject_row(trial, number).emergency_unblinded is True

    manager = trial.actor("manager")
    notes = unblinding.notifications(trial.ctx, manager, trial.study_id)
    assert [n.subject for n in notes] == [number]
    assert number in notes[0].text and "anaphylaxis" in notes[0].text
    assert arm_leaks(repr(notes)) == []
    # the manager's own view of the subject stays blinded
    assert queries.get_subject(trial.ctx, manager, trial.study_id, number).arm is None

    (entry,) = [e for e in _audit(trial) if e.action == "emergency_unblind"]
    assert entry.actor == "coordinator" and entry.entity_id == number
    assert entry.reason == "anaphylaxis, treating team must know"
    assert '"signature"' in entry.new and "Casey Coordinator" in entry.new
    assert arm_leaks(entry.old + entry.new + (entry.reason or "")) == []


def test_rand7_emergency_unblinding_wrong_password_is_refused_and_audited(trial: Trial) -> None:
    """RAND-7, SIG-1: a wrong password refuses the unblinding, changes nothing, and is audited
    as a failed signature."""
    number, _arm = j.procedure_done(trial)
    with pytest.raises(AuthenticationFailed):
        followup.emergency_unblind(
            trial.ctx,
            trial.actor("coordinator"),
            trial.study_id,
            number,
            reason="AE",
            password=WRONG,
        )
    assert _subject_row(trial, number).emergency_unblinded is False
    assert unblinding.notifications(trial.ctx, trial.actor("manager"), trial.study_id) == []
    assert not [e for e in _audit(trial) if e.action == "emergency_unblind"]
    (failed,) = _failed_signatures(trial, "coordinator")
    assert f"Emergency unblinding of subject {number}" in failed.new


def test_rand7_emergency_unblinding_needs_a_reason(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    with pytest.raises(ValidationFailed, match="reason"):
        followup.emergency_unblind(
            trial.ctx,
            trial.actor("coordinator"),
            trial.study_id,
            number,
            reason="  ",
            password=PASSWORD,
        )
    assert _subject_row(trial, number).emergency_unblinded is False


# --- scheduled unblinding ------------------------------------------------------------------


def test_rand7_scheduled_unblinding_only_after_m24_then_coordinator_sees_arm(
    trial: Trial,
) -> None:
    """RAND-7, SCHED-3: refused before the 24-month evaluation is done, allowed after; then
    the site coordinator sees the arm while the monitor stays blinded."""
    number, arm = j.procedure_done(trial)
    coord = trial.actor("coordinator")
    for code in ("M1", "M6", "M12", "M18"):
        j.record_visit(trial, number, code, j.visit_dates()[code])
    with pytest.raises(PreconditionFailed, match="M24") as refused:
        followup.unblind_subject(trial.ctx, coord, trial.study_id, number, password=PASSWORD)
    assert refused.value.code == "unblinding-not-due"
    assert queries.get_subject(trial.ctx, coord, trial.study_id, number).arm is None

    j.record_visit(trial, number, "M24", j.visit_dates()["M24"])
    view = followup.unblind_subject(trial.ctx, coord, trial.study_id, number, password=PASSWORD)
    assert view.state == "unblinded" and view.unblinded_on is not None
    seen = queries.get_subject(trial.ctx, coord, trial.study_id, number)
    assert seen.arm is not None and seen.arm.code == arm
    assert (
        queries.get_subject(trial.ctx, trial.actor("monitor"), trial.study_id, number).arm is None
    )
    (entry,) = [e for e in _audit(trial) if e.action == "unblind"]
    assert arm_leaks(entry.new) == []


def test_rand7_scheduled_unblinding_wrong_password_is_audited(trial: Trial) -> None:
    number, _arm = j.blinded_visits_done(trial)
    with pytest.raises(AuthenticationFailed):
        followup.unblind_subject(
            trial.ctx, trial.actor("coordinator"), trial.study_id, number, password=WRONG
        )
    assert _subject_row(trial, number).unblinded_on is None
    assert len(_failed_signatures(trial, "coordinator")) == 1


# --- trial-level unblinding ----------------------------------------------------------------


def test_rand7_trial_unblinding_needs_manager_then_statistician(trial: Trial) -> None:
    """RAND-7, SIG-1: the manager requests, a statistician confirms; only then do site and
    study roles see arms. Both signatures are audited with name and meaning."""
    number, arm = j.procedure_done(trial)
    hard_lock(trial)  # REC-5: trial unblinding needs the hard database lock
    manager, stat = trial.actor("manager"), trial.actor("statistician")
    blinded = ["manager", "coordinator", "crc", "monitor"]

    pending = unblinding.request_trial_unblinding(
        trial.ctx, manager, trial.study_id, "database locked after last 24-month visit", PASSWORD
    )
    assert (pending.status, pending.requested_by) == ("requested", "Morgan Manager")
    for name in blinded:  # one signature changes nothing
        view = queries.get_subject(trial.ctx, trial.actor(name), trial.study_id, number)
        assert view.arm is None, name
    stat_notes = unblinding.notifications(trial.ctx, stat, trial.study_id)
    assert len(stat_notes) == 1 and "requested by Morgan Manager" in stat_notes[0].text

    done = unblinding.confirm_trial_unblinding(trial.ctx, stat, trial.study_id, PASSWORD)
    assert (done.status, done.confirmed_by) == ("unblinded", "Sam Statistician")
    assert done.confirmed_at is not None
    for name in blinded:
        view = queries.get_subject(trial.ctx, trial.actor(name), trial.study_id, number)
        assert view.arm is not None and view.arm.code == arm, name
    # the administrator runs the system and never needs the allocation
    assert queries.get_subject(trial.ctx, trial.actor("admin"), trial.study_id, number).arm is None
    status = unblinding.trial_unblinding_status(trial.ctx, trial.actor("crc"), trial.study_id)
    assert status.status == "unblinded"

    entries = [e for e in _audit(trial) if e.action.endswith("trial_unblinding")]
    assert [(e.action, e.actor) for e in entries] == [
        ("request_trial_unblinding", "manager"),
        ("confirm_trial_unblinding", "statistician"),
    ]
    assert entries[0].reason == "database locked after last 24-month visit"
    assert "Morgan Manager" in entries[0].new and "Sam Statistician" in entries[1].new
    assert all(arm_leaks(e.new) == [] for e in entries)
    with trial.ctx.uow(readonly=True) as uow:
        study = uow.session.get(StudyRow, trial.study_id)
        assert study is not None and study.trial_unblinded_at is not None


def test_rand7_trial_unblinding_same_person_cannot_sign_twice(trial: Trial) -> None:
    """SIG-1 two-person rule: a user holding manager and statistician roles cannot confirm
    their own request; another statistician can."""
    number, _arm = j.procedure_done(trial)
    hard_lock(trial)  # REC-5: trial unblinding needs the hard database lock
    both = _user(trial, "boss", [(Role.MANAGER, None), (Role.STATISTICIAN, None)])
    unblinding.request_trial_unblinding(trial.ctx, both, trial.study_id, "study end", PASSWORD)
    with pytest.raises(PermissionDenied, match="two-person"):
        unblinding.confirm_trial_unblinding(trial.ctx, both, trial.study_id, PASSWORD)
    status = unblinding.trial_unblinding_status(trial.ctx, both, trial.study_id)
    assert status.status == "requested"
    coord = trial.actor("coordinator")
    assert queries.get_subject(trial.ctx, coord, trial.study_id, number).arm is None
    unblinding.confirm_trial_unblinding(
        trial.ctx, trial.actor("statistician"), trial.study_id, PASSWORD
    )
    assert queries.get_subject(trial.ctx, coord, trial.study_id, number).arm is not None


def test_rand7_trial_unblinding_roles_order_and_repeats_are_refused(trial: Trial) -> None:
    """RAND-7: each step needs its own role; no confirmation without a request; no second
    request while one is pending or after unblinding."""
    hard_lock(trial)  # REC-5: trial unblinding needs the hard database lock
    manager, stat = trial.actor("manager"), trial.actor("statistician")
    with pytest.raises(PreconditionFailed, match="has not been requested"):
        unblinding.confirm_trial_unblinding(trial.ctx, stat, trial.study_id, PASSWORD)
    with pytest.raises(PermissionDenied):
        unblinding.request_trial_unblinding(trial.ctx, stat, trial.study_id, "end", PASSWORD)
    with pytest.raises(PermissionDenied):
        unblinding.request_trial_unblinding(
            trial.ctx, trial.actor("coordinator"), trial.study_id, "end", PASSWORD
        )
    with pytest.raises(ValidationFailed, match="reason"):
        unblinding.request_trial_unblinding(trial.ctx, manager, trial.study_id, " ", PASSWORD)
    unblinding.request_trial_unblinding(trial.ctx, manager, trial.study_id, "end", PASSWORD)
    with pytest.raises(PreconditionFailed, match="already requested by Morgan Manager"):
        unblinding.request_trial_unblinding(trial.ctx, manager, trial.study_id, "again", PASSWORD)
    with pytest.raises(PermissionDenied):
        unblinding.confirm_trial_unblinding(trial.ctx, manager, trial.study_id, PASSWORD)
    unblinding.confirm_trial_unblinding(trial.ctx, stat, trial.study_id, PASSWORD)
    with pytest.raises(PreconditionFailed, match="was unblinded at trial level"):
        unblinding.request_trial_unblinding(trial.ctx, manager, trial.study_id, "x", PASSWORD)
    with pytest.raises(PreconditionFailed, match="was unblinded at trial level"):
        unblinding.confirm_trial_unblinding(trial.ctx, stat, trial.study_id, PASSWORD)
    with trial.ctx.uow(readonly=True) as uow:
        rows = uow.session.scalars(select(TrialUnblindingRow)).all()
        assert [r.status for r in rows] == ["confirmed"]


def test_rand7_sig1_trial_unblinding_wrong_password_refused_and_audited(trial: Trial) -> None:
    """SIG-1: a wrong password at either step is refused, audited as a failed signature, and
    leaves the study blinded."""
    hard_lock(trial)  # REC-5: trial unblinding needs the hard database lock
    manager, stat = trial.actor("manager"), trial.actor("statistician")
    with pytest.raises(AuthenticationFailed):
        unblinding.request_trial_unblinding(trial.ctx, manager, trial.study_id, "end", WRONG)
    assert unblinding.trial_unblinding_status(trial.ctx, manager, trial.study_id).status == (
        "blinded"
    )
    (failed,) = _failed_signatures(trial, "manager")
    assert "trial-level unblinding of study FLAGSHIP" in failed.new
    unblinding.request_trial_unblinding(trial.ctx, manager, trial.study_id, "end", PASSWORD)
    with pytest.raises(AuthenticationFailed):
        unblinding.confirm_trial_unblinding(trial.ctx, stat, trial.study_id, WRONG)
    assert len(_failed_signatures(trial, "statistician")) == 1
    assert unblinding.trial_unblinding_status(trial.ctx, stat, trial.study_id).status == (
        "requested"
    )


# --- randomized in error -------------------------------------------------------------------


def test_life4_randomized_in_error_is_flagged_never_undone(trial: Trial) -> None:
    """LIFE-4, RAND-6: the statistician flags the record with a reason; the subject stays
    randomized with its number, the slot stays used, and the audit carries no arm."""
    number, _arm = j.procedure_done(trial)
    before = queries.get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    result = unblinding.mark_randomized_in_error(
        trial.ctx,
        trial.actor("statistician"),
        trial.study_id,
        number,
        "LVEF from the wrong echo; subject was not eligible",
    )
    assert (result.in_error, result.randomization_number) == (True, before.randomization_number)
    rand = _randomization(trial, number)
    assert rand.in_error is True
    assert rand.in_error_reason == "LVEF from the wrong echo; subject was not eligible"
    after = queries.get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert (after.state, after.randomization_number) == (before.state, before.randomization_number)
    with trial.ctx.uow(readonly=True) as uow:
        slot = uow.session.get(AllocationSlotRow, rand.slot_id)
        assert slot is not None and slot.used_by_subject_id == rand.subject_id
    (entry,) = [e for e in _audit(trial) if e.action == "mark_randomized_in_error"]
    assert entry.actor == "statistician" and entry.reason == rand.in_error_reason
    assert arm_leaks(entry.old + entry.new + (entry.reason or "")) == []


def test_life4_randomized_in_error_refusals_change_nothing(trial: Trial) -> None:
    """LIFE-4: only the statistician; a reason is required and may not name an arm; a
    non-randomized subject or a second marking is refused with a clear message."""
    number, _arm = j.randomized(trial)
    stat = trial.actor("statistician")
    for name in ("coordinator", "implanter", "manager", "dsmb"):
        with pytest.raises(PermissionDenied, match="unblinded statistician"):
            unblinding.mark_randomized_in_error(
                trial.ctx, trial.actor(name), trial.study_id, number, "wrong subject"
            )
    with pytest.raises(ValidationFailed, match="reason"):
        unblinding.mark_randomized_in_error(trial.ctx, stat, trial.study_id, number, "  ")
    for text in ("got INT but was ineligible", "allocated to control (sham procedure) by error"):
        with pytest.raises(ValidationFailed, match="must not name an arm"):
            unblinding.mark_randomized_in_error(trial.ctx, stat, trial.study_id, number, text)
    assert _randomization(trial, number).in_error is False
    not_randomized = j.echo_qualified(trial)
    with pytest.raises(PreconditionFailed, match="has not been randomized") as refused:
        unblinding.mark_randomized_in_error(
            trial.ctx, stat, trial.study_id, not_randomized, "wrong subject"
        )
    assert refused.value.code == "not-randomized"
    with pytest.raises(NotFound):
        unblinding.mark_randomized_in_error(trial.ctx, stat, trial.study_id, "S999-0001", "x")
    unblinding.mark_randomized_in_error(trial.ctx, stat, trial.study_id, number, "wrong subject")
    with pytest.raises(PreconditionFailed, match="already marked in error") as twice:
        unblinding.mark_randomized_in_error(trial.ctx, stat, trial.study_id, number, "again")
    assert twice.value.code == "already-in-error"
    assert _randomization(trial, number).in_error_reason == "wrong subject"
    assert len([e for e in _audit(trial) if e.action == "mark_randomized_in_error"]) == 1


# --- notifications -------------------------------------------------------------------------


def test_rand7_notifications_are_read_only_by_their_recipient_role(trial: Trial) -> None:
    """RAND-7: the emergency notification is for the study manager; other roles neither list
    nor mark it (it is 'not found' to them); marking read is idempotent."""
    number, _arm = j.procedure_done(trial)
    followup.emergency_unblind(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        reason="bleeding",
        password=PASSWORD,
    )
    manager = trial.actor("manager")
    (note,) = unblinding.notifications(trial.ctx, manager, trial.study_id, unread_only=True)
    for name in ("coordinator", "monitor", "admin", "statistician", "crc"):
        other = trial.actor(name)
        assert unblinding.notifications(trial.ctx, other, trial.study_id) == [], name
        with pytest.raises(NotFound):
            unblinding.mark_notification_read(trial.ctx, other, trial.study_id, note.id)
    with pytest.raises(NotFound):
        unblinding.mark_notification_read(trial.ctx, manager, trial.study_id, note.id + 1000)
    read = unblinding.mark_notification_read(trial.ctx, manager, trial.study_id, note.id)
    assert read.read_at is not None
    trial.clock.advance(hours=1)
    again = unblinding.mark_notification_read(trial.ctx, manager, trial.study_id, note.id)
    assert again.read_at == read.read_at
    assert unblinding.notifications(trial.ctx, manager, trial.study_id, unread_only=True) == []
    assert [n.id for n in unblinding.notifications(trial.ctx, manager, trial.study_id)] == [note.id]


def test_acc1_site_notification_stays_within_its_site(trial: Trial) -> None:
    """ACC-1: a notification addressed to a site role about a subject of site S101 is not
    shown to that role at another site."""
    number = j.register(trial)
    elsewhere = _user(trial, "coord-s102", [(Role.COORDINATOR, "S102")])
    subject = _subject_row(trial, number)
    with trial.ctx.uow() as uow:
        uow.session.add(
            NotificationRow(
                study_id=trial.study_id,
                recipient_role=Role.COORDINATOR.value,
                subject_id=subject.id,
                text=f"Visit due for {number}",
                created_at=trial.clock.now,
            )
        )
        uow.commit()
    own = unblinding.notifications(trial.ctx, trial.actor("coordinator"), trial.study_id)
    assert [n.subject for n in own] == [number]
    assert unblinding.notifications(trial.ctx, elsewhere, trial.study_id) == []
    with pytest.raises(NotFound):
        unblinding.mark_notification_read(trial.ctx, elsewhere, trial.study_id, own[0].id)
