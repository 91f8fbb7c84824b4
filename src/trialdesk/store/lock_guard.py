"""The one lock guard of every write path (REC-3, REC-5): the unit of work's audit log calls it
for each entry before buffering it, and it refuses the write that entry records when an active
lock covers it. The write and its entry share the transaction, so a refusal leaves nothing
written; as every change of a subject's data is audited (AUD-1), no write path passes around
it: not a new service, not one still holding SQL, not an adapter.

Cost: one indexed read of the active locks of the study and the subject per guarded entry;
the form record is read only when a record lock may cover it.
"""

from __future__ import annotations

from typing import Protocol

from trialdesk.domain.locks import Lock, LockKind, LockLevel, Write, WriteKind, check_writable
from trialdesk.domain.write_guard import GuardedWrite, write_of
from trialdesk.store.audit import PendingEntry
from trialdesk.store.holds import RecordLock
from trialdesk.store.records import FormRecord


class _Holds(Protocol):
    def active_locks(self, study_id: int, subject_id: int | None) -> list[RecordLock]: ...

    def subject_numbers(self, subject_ids: list[int]) -> dict[int, str]: ...


class _Forms(Protocol):
    def get(self, record_id: int) -> FormRecord: ...


def domain_lock(row: RecordLock, numbers: dict[int, str]) -> Lock:
    """A stored lock as :mod:`trialdesk.domain.locks` judges it (subjects by number)."""
    return Lock(
        id=row.id,
        level=LockLevel(row.level),
        kind=LockKind(row.kind),
        reason=row.reason,
        locked_by=row.locked_by,
        locked_at=row.locked_at,
        subject=numbers.get(row.subject_id) if row.subject_id is not None else None,
        visit=row.visit_code,
        form=row.form_code,
        seq=row.seq,
        unlocked_at=row.unlocked_at,
        unlocked_by=row.unlocked_by,
        unlock_reason=row.unlock_reason,
    )


class LockGuard:
    """Called with every audit entry of a unit of work; raises ``RecordLocked``."""

    def __init__(self, holds: _Holds, forms: _Forms) -> None:
        self._holds = holds
        self._forms = forms

    def __call__(self, entry: PendingEntry) -> None:
        if entry.study_id is None:
            return
        guarded = write_of(
            stream=entry.stream,
            action=entry.action,
            entity=entry.entity,
            entity_id=entry.entity_id,
            new=entry.new,
        )
        if guarded is None or guarded.kind is WriteKind.EMERGENCY_UNBLIND:
            return
        self.check(entry.study_id, entry.subject_id, guarded)

    def check(self, study_id: int, subject_id: int | None, guarded: GuardedWrite) -> None:
        """Refuse ``guarded`` (of ``subject_id``, or the study's when None) when an active
        lock covers it; services call this directly for writes that are not audited in a
        subject's stream (an SDV mark, a signature, trial-level unblinding)."""
        rows = self._holds.active_locks(study_id, subject_id)
        if not rows:
            return
        ids = [subject_id] if subject_id is not None else []
        ids += [row.subject_id for row in rows if row.subject_id is not None]
        numbers = self._holds.subject_numbers(ids)
        subject = numbers.get(subject_id) if subject_id is not None else None
        kind, visit, form, seq = guarded.kind, guarded.visit, guarded.form, None
        if kind is WriteKind.DATA and guarded.record_id is not None:
            record = self._forms.get(guarded.record_id)
            form, visit, seq = record.form_code, record.visit_code, record.seq
        if kind is WriteKind.DATA:
            visit = visit or ""
        write = Write(kind, subject, visit, form, seq)
        check_writable([domain_lock(row, numbers) for row in rows], write)
