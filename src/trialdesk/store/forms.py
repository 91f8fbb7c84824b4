"""Saved forms (DATA-1, DATA-2) and the investigator's signed criterion answers (ELIG-1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from trialdesk.store.records import Confirmation, FormMark, FormRecord
from trialdesk.store.sql import Columns, Sql, guarded_update, table_of
from trialdesk.store.tables import ConfirmationRow, FormRecordRow

FORM = Columns(table_of(FormRecordRow), FormRecord)
CONFIRMATION = Columns(table_of(ConfirmationRow), Confirmation)
_F = FORM.table
_C = CONFIRMATION.table

_OF_FORM = (
    _F.c.subject_id == bindparam("subject_id"),
    _F.c.form_code == bindparam("form_code"),
    _F.c.visit_code == bindparam("visit_code"),
)
_LATEST = FORM.select().where(*_OF_FORM).order_by(_F.c.seq.desc()).limit(1)
_LATEST_SEQ = FORM.select().where(*_OF_FORM, _F.c.seq == bindparam("seq")).limit(1)
_BY_ID = FORM.select().where(_F.c.id == bindparam("id"))
_MAX_SEQ = select(func.max(_F.c.seq)).where(*_OF_FORM)
_AT_VISIT = (
    FORM.select()
    .where(_F.c.subject_id == bindparam("subject_id"), _F.c.visit_code == bindparam("visit_code"))
    .order_by(_F.c.seq, _F.c.id)
)
_ADD = insert(_F).returning(*FORM.columns)
_CONFIRMED = select(_C.c.criterion_id, _C.c.confirmed).where(
    _C.c.subject_id == bindparam("subject_id")
)
_CONFIRMATION = CONFIRMATION.select().where(
    _C.c.subject_id == bindparam("subject_id"), _C.c.criterion_id == bindparam("criterion_id")
)


class SqlForms:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def latest(
        self, subject_id: int, form_code: str, visit_code: str, *, seq: int | None = None
    ) -> FormRecord | None:
        key = {"subject_id": subject_id, "form_code": form_code, "visit_code": visit_code}
        if seq is None:
            return FORM.maybe(self._run(_LATEST, key).first())
        return FORM.maybe(self._run(_LATEST_SEQ, {**key, "seq": seq}).first())

    def get(self, record_id: int) -> FormRecord:
        return FORM.of(self._run(_BY_ID, {"id": record_id}).one())

    def max_seq(self, subject_id: int, form_code: str, visit_code: str) -> int:
        key = {"subject_id": subject_id, "form_code": form_code, "visit_code": visit_code}
        return int(self._run(_MAX_SEQ, key).scalar() or 0)

    def for_subject(self, subject_id: int, *, visit_code: str = "") -> list[FormRecord]:
        rows = self._run(_AT_VISIT, {"subject_id": subject_id, "visit_code": visit_code})
        return [FORM.of(row) for row in rows]

    def add(
        self,
        *,
        subject_id: int,
        form_code: str,
        visit_code: str,
        seq: int,
        data: str,
        protocol_version_id: int,
        at: dt.datetime,
        by: str,
    ) -> FormRecord:
        values = {
            "subject_id": subject_id,
            "form_code": form_code,
            "visit_code": visit_code,
            "seq": seq,
            "data": data,
            "protocol_version_id": protocol_version_id,
            "created_at": at,
            "created_by": by,
            "updated_at": at,
            "version": 1,
        }
        return FORM.of(self._run(_ADD, values).one())

    def marks_for_subjects(self, subject_ids: Collection[int]) -> list[FormMark]:
        """Issue 14: every saved form copy of these subjects (no data), oldest first, so the
        last of a (subject, form, visit) is the latest copy."""
        if not subject_ids:
            return []
        rows = self._run(
            select(_F.c.subject_id, _F.c.form_code, _F.c.visit_code, _F.c.id, _F.c.version)
            .where(_F.c.subject_id.in_(list(subject_ids)))
            .order_by(_F.c.subject_id, _F.c.seq, _F.c.id)
        )
        return [FormMark(*row) for row in rows]

    def update_data(self, record: FormRecord, data: str, at: dt.datetime) -> FormRecord | None:
        return guarded_update(
            self._run,
            FORM,
            record.id,
            {"version": record.version},
            {"data": data, "updated_at": at, "version": record.version + 1},
        )

    # issue 15 (x15b): every record of a subject, for the data-quality rules (REC-6)
    def all_of_subject(self, subject_id: int) -> list[FormRecord]:
        stmt = FORM.select().where(_F.c.subject_id == subject_id).order_by(_F.c.id)
        return [FORM.of(row) for row in self._run(stmt)]


class SqlConfirmations:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def for_subject(self, subject_id: int) -> dict[str, bool]:
        rows = self._run(_CONFIRMED, {"subject_id": subject_id})
        return {str(criterion): bool(confirmed) for criterion, confirmed in rows}

    def get(self, subject_id: int, criterion_id: str) -> Confirmation | None:
        row = self._run(_CONFIRMATION, {"subject_id": subject_id, "criterion_id": criterion_id})
        return CONFIRMATION.maybe(row.first())

    def save(
        self,
        *,
        subject_id: int,
        criterion_id: str,
        confirmed: bool,
        signed_by: str,
        signed_name: str,
        signed_at: dt.datetime,
        meaning: str,
    ) -> Confirmation:
        values = {
            "confirmed": confirmed,
            "signed_by": signed_by,
            "signed_name": signed_name,
            "signed_at": signed_at,
            "meaning": meaning,
        }
        row = self._run(
            update(_C)
            .where(_C.c.subject_id == subject_id, _C.c.criterion_id == criterion_id)
            .values(**values)
            .returning(*CONFIRMATION.columns)
        ).first()
        if row is None:
            row = self._run(
                insert(_C)
                .values(subject_id=subject_id, criterion_id=criterion_id, **values)
                .returning(*CONFIRMATION.columns)
            ).one()
        return CONFIRMATION.of(row)
