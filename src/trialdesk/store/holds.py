"""Records that hold (issue 15, lane x15a): locks from form record to database, SDV marks,
investigator signatures and the values changed after unblinding, as one repository
(``uow.holds``). Rows are never deleted: an unlock, a cleared mark or an invalidated signature
fills its ``*_at``/``*_reason`` columns, so every record shows its history (REC-1..REC-5).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from trialdesk.store.records import FormRecord
from trialdesk.store.sql import Columns, Sql, table_of
from trialdesk.store.tables import (
    FormRecordRow,
    RecordLockRow,
    RecordSignatureRow,
    SdvMarkRow,
    SubjectRow,
    UnblindingChangeRow,
)


@dataclass(frozen=True, slots=True)
class RecordLock:
    id: int
    study_id: int
    level: str
    kind: str
    subject_id: int | None
    visit_code: str | None
    form_code: str | None
    seq: int | None
    reason: str
    locked_by: str
    locked_name: str
    locked_at: dt.datetime
    locked_meaning: str
    unlocked_at: dt.datetime | None
    unlocked_by: str | None
    unlocked_name: str | None
    unlock_reason: str | None


@dataclass(frozen=True, slots=True)
class SdvMarkRecord:
    id: int
    study_id: int
    subject_id: int
    form_record_id: int
    fields: str
    fingerprints: str
    marked_by: str
    marked_at: dt.datetime
    cleared_at: dt.datetime | None
    cleared_reason: str | None


@dataclass(frozen=True, slots=True)
class SignatureRecord:
    id: int
    study_id: int
    subject_id: int
    level: str
    visit_code: str | None
    form_record_id: int | None
    signed_by: str
    signed_name: str
    signed_at: dt.datetime
    meaning: str
    covered: str
    invalidated_at: dt.datetime | None
    invalidated_reason: str | None


@dataclass(frozen=True, slots=True)
class UnblindingChange:
    id: int
    study_id: int
    subject_id: int
    form_record_id: int
    form_code: str
    visit_code: str
    field: str
    flag: str
    old: str
    new: str
    changed_at: dt.datetime
    changed_by: str
    reason: str | None


LOCK = Columns(table_of(RecordLockRow), RecordLock)
SDV = Columns(table_of(SdvMarkRow), SdvMarkRecord)
SIGNATURE = Columns(table_of(RecordSignatureRow), SignatureRecord)
CHANGE = Columns(table_of(UnblindingChangeRow), UnblindingChange)
_FORMS = Columns(table_of(FormRecordRow), FormRecord)
_L, _S, _G, _C = LOCK.table, SDV.table, SIGNATURE.table, CHANGE.table
_SUBJ = table_of(SubjectRow)

_ACTIVE = (
    LOCK.select()
    .where(
        _L.c.study_id == bindparam("study_id"),
        _L.c.unlocked_at.is_(None),
        or_(_L.c.subject_id.is_(None), _L.c.subject_id == bindparam("subject_id")),
    )
    .order_by(_L.c.id)
)
_NUMBERS = select(_SUBJ.c.id, _SUBJ.c.number).where(
    _SUBJ.c.id.in_(bindparam("ids", expanding=True))
)


class SqlHolds:
    """Implements :class:`trialdesk.store.ports.HoldRepository`."""

    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    # --- locks ------------------------------------------------------------------------

    def active_locks(self, study_id: int, subject_id: int | None) -> list[RecordLock]:
        params = {"study_id": study_id, "subject_id": subject_id if subject_id else -1}
        return [LOCK.of(row) for row in self._run(_ACTIVE, params)]

    def locks(
        self, study_id: int, *, subject_id: int | None = None, active_only: bool = False
    ) -> list[RecordLock]:
        stmt = LOCK.select().where(_L.c.study_id == study_id).order_by(_L.c.id)
        if subject_id is not None:
            stmt = stmt.where(_L.c.subject_id == subject_id)
        if active_only:
            stmt = stmt.where(_L.c.unlocked_at.is_(None))
        return [LOCK.of(row) for row in self._run(stmt)]

    def lock(self, study_id: int, lock_id: int) -> RecordLock | None:
        stmt = LOCK.select().where(_L.c.id == lock_id, _L.c.study_id == study_id)
        return LOCK.maybe(self._run(stmt).first())

    def add_lock(
        self,
        *,
        study_id: int,
        level: str,
        kind: str,
        subject_id: int | None,
        visit_code: str | None,
        form_code: str | None,
        seq: int | None,
        reason: str,
        locked_by: str,
        locked_name: str,
        locked_at: dt.datetime,
        locked_meaning: str,
    ) -> RecordLock:
        values = dict(
            study_id=study_id,
            level=level,
            kind=kind,
            subject_id=subject_id,
            visit_code=visit_code,
            form_code=form_code,
            seq=seq,
            reason=reason,
            locked_by=locked_by,
            locked_name=locked_name,
            locked_at=locked_at,
            locked_meaning=locked_meaning,
        )
        return LOCK.of(self._run(insert(_L).values(**values).returning(*LOCK.columns)).one())

    def unlock(
        self, lock: RecordLock, *, at: dt.datetime, by: str, name: str, reason: str
    ) -> RecordLock | None:
        stmt = (
            update(_L)
            .where(_L.c.id == lock.id, _L.c.unlocked_at.is_(None))
            .values(unlocked_at=at, unlocked_by=by, unlocked_name=name, unlock_reason=reason)
            .returning(*LOCK.columns)
        )
        return LOCK.maybe(self._run(stmt).first())

    def subject_numbers(self, subject_ids: Collection[int]) -> dict[int, str]:
        if not subject_ids:
            return {}
        return {int(i): str(n) for i, n in self._run(_NUMBERS, {"ids": sorted(set(subject_ids))})}

    # --- SDV ----------------------------------------------------------------------------

    def sdv_marks(
        self, *, study_id: int | None = None, subject_id: int | None = None
    ) -> list[SdvMarkRecord]:
        stmt = SDV.select().order_by(_S.c.id)
        if study_id is not None:
            stmt = stmt.where(_S.c.study_id == study_id)
        if subject_id is not None:
            stmt = stmt.where(_S.c.subject_id == subject_id)
        return [SDV.of(row) for row in self._run(stmt)]

    def add_sdv_mark(
        self,
        *,
        study_id: int,
        subject_id: int,
        form_record_id: int,
        fields: str,
        fingerprints: str,
        marked_by: str,
        marked_at: dt.datetime,
    ) -> SdvMarkRecord:
        values = dict(
            study_id=study_id,
            subject_id=subject_id,
            form_record_id=form_record_id,
            fields=fields,
            fingerprints=fingerprints,
            marked_by=marked_by,
            marked_at=marked_at,
        )
        return SDV.of(self._run(insert(_S).values(**values).returning(*SDV.columns)).one())

    def clear_sdv_mark(self, mark_id: int, *, at: dt.datetime, reason: str) -> None:
        self._run(
            update(_S)
            .where(_S.c.id == mark_id, _S.c.cleared_at.is_(None))
            .values(cleared_at=at, cleared_reason=reason)
        )

    # --- signatures ---------------------------------------------------------------------

    def signatures(
        self, *, study_id: int | None = None, subject_id: int | None = None
    ) -> list[SignatureRecord]:
        stmt = SIGNATURE.select().order_by(_G.c.id)
        if study_id is not None:
            stmt = stmt.where(_G.c.study_id == study_id)
        if subject_id is not None:
            stmt = stmt.where(_G.c.subject_id == subject_id)
        return [SIGNATURE.of(row) for row in self._run(stmt)]

    def add_signature(
        self,
        *,
        study_id: int,
        subject_id: int,
        level: str,
        visit_code: str | None,
        form_record_id: int | None,
        signed_by: str,
        signed_name: str,
        signed_at: dt.datetime,
        meaning: str,
        covered: str,
    ) -> SignatureRecord:
        values = dict(
            study_id=study_id,
            subject_id=subject_id,
            level=level,
            visit_code=visit_code,
            form_record_id=form_record_id,
            signed_by=signed_by,
            signed_name=signed_name,
            signed_at=signed_at,
            meaning=meaning,
            covered=covered,
        )
        row = self._run(insert(_G).values(**values).returning(*SIGNATURE.columns)).one()
        return SIGNATURE.of(row)

    def invalidate_signature(self, signature_id: int, *, at: dt.datetime, reason: str) -> None:
        self._run(
            update(_G)
            .where(_G.c.id == signature_id, _G.c.invalidated_at.is_(None))
            .values(invalidated_at=at, invalidated_reason=reason)
        )

    # --- the subject's records, and values changed after unblinding --------------------

    def subject_forms(self, subject_id: int) -> list[FormRecord]:
        """Every saved form record of the subject, visits and outside, in saving order."""
        stmt = (
            _FORMS.select()
            .where(_FORMS.table.c.subject_id == subject_id)
            .order_by(_FORMS.table.c.id)
        )
        return [_FORMS.of(row) for row in self._run(stmt)]

    def add_unblinding_change(
        self,
        *,
        study_id: int,
        subject_id: int,
        form_record_id: int,
        form_code: str,
        visit_code: str,
        field: str,
        flag: str,
        old: str,
        new: str,
        changed_at: dt.datetime,
        changed_by: str,
        reason: str | None,
    ) -> None:
        self._run(
            insert(_C).values(
                study_id=study_id,
                subject_id=subject_id,
                form_record_id=form_record_id,
                form_code=form_code,
                visit_code=visit_code,
                field=field,
                flag=flag,
                old=old,
                new=new,
                changed_at=changed_at,
                changed_by=changed_by,
                reason=reason,
            )
        )

    def unblinding_changes(
        self, study_id: int, *, subject_id: int | None = None
    ) -> list[UnblindingChange]:
        stmt = CHANGE.select().where(_C.c.study_id == study_id).order_by(_C.c.id)
        if subject_id is not None:
            stmt = stmt.where(_C.c.subject_id == subject_id)
        return [CHANGE.of(row) for row in self._run(stmt)]
