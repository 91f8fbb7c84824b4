"""Locks at four levels (REC-3), the freeze of the blinded phase at unblinding (REC-4) and the
database lock (REC-5): the services that set and lift them, and the hooks the subject
services call (one line each: :func:`freeze_at_unblinding`, :func:`require_hard_lock`).

The refusal itself is not here: :mod:`trialdesk.store.lock_guard` sits in every unit of
work's audit log and refuses any write an active lock covers, whatever service makes it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.database_lock import check_database_lock, check_trial_unblinding
from trialdesk.domain.errors import Conflict, NotFound, ValidationFailed
from trialdesk.domain.locks import (
    DatedRecord,
    Lock,
    LockKind,
    LockLevel,
    WriteKind,
    check_can_lock,
    check_can_unlock,
    freeze_requests,
)
from trialdesk.domain.permissions import Permission
from trialdesk.domain.records import RecordRef
from trialdesk.domain.write_guard import GuardedWrite
from trialdesk.protocol.specs import freeze_spec
from trialdesk.services.access import Actor, require
from trialdesk.services.auth import reauthenticate
from trialdesk.services.common import Acting, require_text, subject_in_scope
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.holds import RecordLock
from trialdesk.store.lock_guard import domain_lock
from trialdesk.store.ports import UnitOfWork

SYSTEM = "system"
LOCK_MEANING = "I lock these records: no change without a signed unlock."
UNLOCK_MEANING = "I unlock these records for the stated reason."


@dataclass(frozen=True)
class LockView:
    """A lock as pages, API and CLI show it (never an arm)."""

    id: int
    level: str
    kind: str
    subject: str | None
    visit: str | None
    form: str | None
    seq: int | None
    describes: str
    reason: str
    locked_by: str
    locked_name: str
    locked_at: str
    active: bool
    unlocked_by: str | None
    unlocked_name: str | None
    unlocked_at: str | None
    unlock_reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _view(row: RecordLock, numbers: dict[int, str]) -> LockView:
    lock = domain_lock(row, numbers)
    return LockView(
        id=row.id,
        level=row.level,
        kind=row.kind,
        subject=lock.subject,
        visit=row.visit_code,
        form=row.form_code,
        seq=row.seq,
        describes=lock.describe(),
        reason=row.reason,
        locked_by=row.locked_by,
        locked_name=row.locked_name,
        locked_at=row.locked_at.isoformat(),
        active=row.unlocked_at is None,
        unlocked_by=row.unlocked_by,
        unlocked_name=row.unlocked_name,
        unlocked_at=row.unlocked_at.isoformat() if row.unlocked_at else None,
        unlock_reason=row.unlock_reason,
    )


def _views(uow: UnitOfWork, rows: list[RecordLock]) -> list[LockView]:
    numbers = uow.holds.subject_numbers([r.subject_id for r in rows if r.subject_id is not None])
    return [_view(row, numbers) for row in rows]


def _entry(
    stream: str,
    actor: str,
    action: str,
    row: RecordLock,
    numbers: dict[int, str],
    at: dt.datetime,
    *,
    reason: str,
    extra: dict[str, Any] | None = None,
) -> PendingEntry:
    view = _view(row, numbers)
    new = {
        "lock": row.id,
        "level": row.level,
        "kind": row.kind,
        "subject": view.subject,
        "visit": row.visit_code,
        "form": row.form_code,
        "seq": row.seq,
        **(extra or {}),
    }
    return PendingEntry(
        stream=stream,
        at=at,
        actor=actor,
        action=action,
        entity="lock",
        entity_id=str(row.id),
        study_id=row.study_id,
        subject_id=row.subject_id,
        new={k: v for k, v in new.items() if v is not None},
        reason=reason,
    )


def _stream(row: RecordLock) -> str:
    return f"subject:{row.subject_id}" if row.subject_id is not None else f"study:{row.study_id}"


def _signature(actor: Actor, meaning: str) -> dict[str, str]:
    return {"name": actor.full_name, "username": actor.username, "meaning": meaning}


# --- record locks --------------------------------------------------------------------------


def lock_record(
    ctx: ServiceContext,
    actor: Actor,
    *,
    study_id: int,
    number: str,
    level: str,
    reason: str,
    password: str,
    visit: str | None = None,
    form: str | None = None,
    seq: int | None = None,
) -> LockView:
    """The data manager (or study manager) locks a form record, a visit or a casebook, with a
    reason and an e-signature (REC-3, SIG-1); audited in the subject's stream. Scope and
    permission come before the input: another site's subject is a 404 whatever was typed."""
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        require(actor, study_id, Permission.RECORD_LOCK, site_id=read.subject.site_id)
    try:
        lock_level = LockLevel(level)
    except ValueError:
        raise ValidationFailed(
            f"unknown lock level {level!r}; one of form, visit, casebook",
            {"level": "unknown"},
        ) from None
    if lock_level is LockLevel.STUDY:
        raise ValidationFailed(
            "the study is locked with the database lock", {"level": "use the database lock"}
        )
    text = require_text(reason, "reason", "a reason for the lock")
    reauthenticate(ctx, actor, password, meaning=LOCK_MEANING)
    now = ctx.now()
    with ctx.uow() as uow:
        uow.lock_study(study_id)
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        uow.guard.check(study_id, subject.id, GuardedWrite(WriteKind.REVIEW))  # not when final
        proposed = Lock(
            id=0,
            level=lock_level,
            kind=LockKind.MANUAL,
            reason=text,
            locked_by=actor.username,
            locked_at=now,
            subject=number,
            visit=visit or None,
            form=form or None,
            seq=seq,
        )
        active = uow.holds.locks(study_id, subject_id=subject.id, active_only=True)
        numbers = {subject.id: number}
        check_can_lock([domain_lock(r, numbers) for r in active], proposed)
        row = uow.holds.add_lock(
            study_id=study_id,
            level=lock_level.value,
            kind=LockKind.MANUAL.value,
            subject_id=subject.id,
            visit_code=visit or None,
            form_code=form or None,
            seq=seq,
            reason=text,
            locked_by=actor.username,
            locked_name=actor.full_name,
            locked_at=now,
            locked_meaning=LOCK_MEANING,
        )
        uow.audit.record(
            _entry(
                _stream(row),
                actor.label,
                "lock_record",
                row,
                numbers,
                now,
                reason=text,
                extra={"signature": _signature(actor, LOCK_MEANING)},
            )
        )
        view = _view(row, numbers)
        uow.commit()
        return view


def unlock_record(
    ctx: ServiceContext,
    actor: Actor,
    *,
    study_id: int,
    lock_id: int,
    reason: str,
    password: str,
) -> LockView:
    """Lift a record lock (a manual lock or the freeze at unblinding), with a reason and an
    e-signature; the lock stays on the record as lifted (REC-3, REC-4)."""
    text = require_text(reason, "reason", "a reason for the unlock")
    with ctx.uow(readonly=True) as uow:
        row = _lock_in_scope(uow, actor, study_id, lock_id)
        if row.level == LockLevel.STUDY.value:
            raise ValidationFailed(
                "a database lock is lifted with the database unlock", {"lock": "database lock"}
            )
        numbers = uow.holds.subject_numbers([row.subject_id] if row.subject_id else [])
        check_can_unlock(domain_lock(row, numbers), text)
    reauthenticate(ctx, actor, password, meaning=UNLOCK_MEANING)
    now = ctx.now()
    with ctx.uow() as uow:
        uow.lock_study(study_id)
        row = _lock_in_scope(uow, actor, study_id, lock_id)
        check_can_unlock(domain_lock(row, numbers), text)
        uow.guard.check(study_id, row.subject_id, GuardedWrite(WriteKind.REVIEW))
        done = uow.holds.unlock(row, at=now, by=actor.username, name=actor.full_name, reason=text)
        if done is None:
            raise Conflict("the lock was lifted by someone else; reload")
        uow.audit.record(
            _entry(
                _stream(done),
                actor.label,
                "unlock_record",
                done,
                numbers,
                now,
                reason=text,
                extra={"signature": _signature(actor, UNLOCK_MEANING)},
            )
        )
        view = _view(done, numbers)
        uow.commit()
        return view


def _lock_in_scope(uow: UnitOfWork, actor: Actor, study_id: int, lock_id: int) -> RecordLock:
    row = uow.holds.lock(study_id, lock_id)
    if row is None:
        raise NotFound(f"lock {lock_id} not found")
    if row.subject_id is not None:
        number = uow.holds.subject_numbers([row.subject_id]).get(row.subject_id, "")
        read = subject_in_scope(uow, actor, study_id, number)
        require(actor, study_id, Permission.RECORD_LOCK, site_id=read.subject.site_id)
    else:
        require(actor, study_id, Permission.DATABASE_LOCK)
    return row


def subject_locks(
    ctx: ServiceContext, actor: Actor, *, study_id: int, number: str
) -> list[LockView]:
    """Every lock of the subject, lifted ones too (shown on the record, REC-3), and the
    study's active database lock."""
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        require(actor, study_id, Permission.SUBJECT_READ, site_id=read.subject.site_id)
        rows = uow.holds.locks(study_id, subject_id=read.subject.id)
        study_rows = [
            r for r in uow.holds.locks(study_id, active_only=True) if r.subject_id is None
        ]
        return _views(uow, study_rows + rows)


# --- the freeze at unblinding (REC-4) ----------------------------------------------------


def freeze_at_unblinding(act: Acting, kind: str) -> int:
    """Lock the subject's blinded phase as the protocol's ``freeze`` says, in the unblinding's
    own unit of work and before the arm is shown; returns how many locks were set. Called by
    scheduled (``kind="scheduled"``) and emergency (``"emergency"``) unblinding."""
    spec = freeze_spec(act.protocol().protocol)
    if spec is None:
        return 0
    uow, subject = act.uow, act.subject
    recorded = [v.visit_code for v in uow.visits.for_subject(subject.id)]
    records = [
        DatedRecord(RecordRef(subject.number, f.form_code, f.visit_code, f.seq), None)
        for f in uow.holds.subject_forms(subject.id)
    ]
    requests = freeze_requests(spec, kind, subject.number, act.today, recorded, records)
    active = uow.holds.locks(subject.study_id, subject_id=subject.id, active_only=True)
    taken = {(r.level, r.visit_code or "", r.form_code, r.seq) for r in active}
    numbers = {subject.id: subject.number}
    count = 0
    for req in requests:
        key = (req.level.value, req.visit or "", req.form, req.seq)
        if key in taken:
            continue
        row = uow.holds.add_lock(
            study_id=subject.study_id,
            level=req.level.value,
            kind=LockKind.FREEZE.value,
            subject_id=subject.id,
            visit_code=req.visit,
            form_code=req.form,
            seq=req.seq,
            reason=req.reason,
            locked_by=SYSTEM,
            locked_name=f"freeze at unblinding by {act.actor.full_name}",
            locked_at=act.now,
            locked_meaning=f"{kind} unblinding by {act.actor.username}",
        )
        uow.audit.record(
            _entry(_stream(row), SYSTEM, "lock_freeze", row, numbers, act.now, reason=req.reason)
        )
        count += 1
    return count


def unblinded_on(uow: UnitOfWork, study_id: int, subject_id: int) -> dt.datetime | None:
    """When the subject's blinded phase was frozen: the first freeze lock, lifted or not."""
    freezes = [
        r.locked_at
        for r in uow.holds.locks(study_id, subject_id=subject_id)
        if r.kind == LockKind.FREEZE.value
    ]
    return min(freezes) if freezes else None


# --- the database lock (REC-5) -----------------------------------------------------------


def database_lock(uow: UnitOfWork, study_id: int) -> RecordLock | None:
    """The study's active database lock (soft or hard), if any."""
    for row in uow.holds.locks(study_id, active_only=True):
        if row.level == LockLevel.STUDY.value:
            return row
    return None


def require_hard_lock(uow: UnitOfWork, study_id: int) -> None:
    """Trial-level unblinding needs the hard database lock first (REC-5, RAND-7)."""
    row = database_lock(uow, study_id)
    check_trial_unblinding(row is not None and row.kind == LockKind.HARD.value)


def lock_database(
    ctx: ServiceContext,
    actor: Actor,
    *,
    study_id: int,
    kind: str,
    reason: str,
    password: str,
) -> LockView:
    """Lock the whole study: ``soft`` (a reversible freeze for an interim look; allowed with
    blockers, which the checklist still shows) or ``hard`` (final; refused while the lock
    checklist lists anything). Re-authenticated and audited in the study's stream."""
    from trialdesk.services.records.checklist import blockers_in

    try:
        lock_kind = LockKind(kind)
    except ValueError:
        lock_kind = LockKind.MANUAL
    if lock_kind not in (LockKind.SOFT, LockKind.HARD):
        raise ValidationFailed(
            f"unknown database lock {kind!r}; soft or hard", {"kind": "soft or hard"}
        )
    text = require_text(reason, "reason", "a reason for the database lock")
    require(actor, study_id, Permission.DATABASE_LOCK)
    meaning = f"I lock the study database ({lock_kind.value})."
    with ctx.uow(readonly=True) as uow:
        _check_database_lock(ctx, uow, study_id, lock_kind, text, actor, blockers_in)
    reauthenticate(ctx, actor, password, meaning=meaning)
    now = ctx.now()
    with ctx.uow() as uow:
        uow.lock_study(study_id)
        ends = _check_database_lock(ctx, uow, study_id, lock_kind, text, actor, blockers_in)
        for old in ends:
            uow.holds.unlock(
                old, at=now, by=actor.username, name=actor.full_name, reason="made final: " + text
            )
        row = uow.holds.add_lock(
            study_id=study_id,
            level=LockLevel.STUDY.value,
            kind=lock_kind.value,
            subject_id=None,
            visit_code=None,
            form_code=None,
            seq=None,
            reason=text,
            locked_by=actor.username,
            locked_name=actor.full_name,
            locked_at=now,
            locked_meaning=meaning,
        )
        uow.audit.record(
            _entry(
                _stream(row),
                actor.label,
                "lock_database",
                row,
                {},
                now,
                reason=text,
                extra={"signature": _signature(actor, meaning), "ended": [r.id for r in ends]},
            )
        )
        view = _view(row, {})
        uow.commit()
        return view


def _check_database_lock(
    ctx: ServiceContext,
    uow: UnitOfWork,
    study_id: int,
    kind: LockKind,
    reason: str,
    actor: Actor,
    blockers_in: Any,
) -> list[RecordLock]:
    if uow.studies.get(study_id) is None:
        raise NotFound(f"study {study_id} not found")
    active = [r for r in uow.holds.locks(study_id, active_only=True) if r.level == "study"]
    proposed = Lock(0, LockLevel.STUDY, kind, reason, actor.username, ctx.now())
    ending = {lock.id for lock in check_can_lock([domain_lock(r, {}) for r in active], proposed)}
    if kind is LockKind.HARD:
        check_database_lock(kind.value, blockers_in(ctx, uow, study_id, site=None))
    return [r for r in active if r.id in ending]


def unlock_database(
    ctx: ServiceContext, actor: Actor, *, study_id: int, reason: str, password: str
) -> LockView:
    """Lift the soft database lock (the hard one is final), with a reason and a signature."""
    text = require_text(reason, "reason", "a reason for the unlock")
    require(actor, study_id, Permission.DATABASE_LOCK)
    with ctx.uow(readonly=True) as uow:
        row = database_lock(uow, study_id)
        if row is None:
            raise ValidationFailed("the study's database is not locked", {"lock": "none"})
        check_can_unlock(domain_lock(row, {}), text)
    meaning = "I lift the soft database lock."
    reauthenticate(ctx, actor, password, meaning=meaning)
    now = ctx.now()
    with ctx.uow() as uow:
        uow.lock_study(study_id)
        row = database_lock(uow, study_id)
        if row is None:
            raise Conflict("the database lock was lifted by someone else; reload")
        check_can_unlock(domain_lock(row, {}), text)
        done = uow.holds.unlock(row, at=now, by=actor.username, name=actor.full_name, reason=text)
        if done is None:
            raise Conflict("the database lock was lifted by someone else; reload")
        uow.audit.record(
            _entry(
                _stream(done),
                actor.label,
                "unlock_database",
                done,
                {},
                now,
                reason=text,
                extra={"signature": _signature(actor, meaning)},
            )
        )
        view = _view(done, {})
        uow.commit()
        return view


def database_lock_status(ctx: ServiceContext, actor: Actor, *, study_id: int) -> list[LockView]:
    """Every database lock of the study, the active one last (everyone in the study)."""
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        rows = [r for r in uow.holds.locks(study_id) if r.level == LockLevel.STUDY.value]
        return _views(uow, rows)
