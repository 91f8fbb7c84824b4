"""Central Review Committee cases and the additional therapies they review."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from trialdesk.store.records import CaseDetail, CaseNote, CrcCase, Therapy
from trialdesk.store.sites import SITE
from trialdesk.store.sql import Columns, Sql, for_update, plain_update, table_of
from trialdesk.store.subjects import SUBJECT
from trialdesk.store.tables import CrcCaseNoteRow, CrcCaseRow, TherapyRow

CASE = Columns(table_of(CrcCaseRow), CrcCase)
THERAPY = Columns(table_of(TherapyRow), Therapy)
NOTE = Columns(table_of(CrcCaseNoteRow), CaseNote)
_K = CASE.table
_T = THERAPY.table
_S = SUBJECT.table
_DETAIL = (
    select(*CASE.columns, *SUBJECT.columns, *SITE.columns, *THERAPY.columns)
    .select_from(_K)
    .join(_S, _S.c.id == _K.c.subject_id)
    .join(SITE.table, SITE.table.c.id == _S.c.site_id)
    .outerjoin(_T, _T.c.id == _K.c.therapy_id)
)
_SUBJECT_AT = CASE.width
_SITE_AT = _SUBJECT_AT + SUBJECT.width
_THERAPY_AT = _SITE_AT + SITE.width


def _detail(row: Any) -> CaseDetail:
    return CaseDetail(
        case=CASE.of(row),
        subject=SUBJECT.of(row, _SUBJECT_AT),
        site=SITE.of(row, _SITE_AT),
        therapy=None if row[_THERAPY_AT] is None else THERAPY.of(row, _THERAPY_AT),
    )


class SqlCrc:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def open_case(
        self,
        *,
        study_id: int,
        subject_id: int,
        kind: str,
        at: dt.datetime,
        therapy_id: int | None = None,
    ) -> CrcCase:
        row = self._run(
            insert(_K)
            .values(
                study_id=study_id,
                subject_id=subject_id,
                kind=kind,
                status="open",
                therapy_id=therapy_id,
                opened_at=at,
            )
            .returning(*CASE.columns)
        ).one()
        return CASE.of(row)

    def pending(self, study_id: int, statuses: Sequence[str]) -> list[CaseDetail]:
        stmt = _DETAIL.where(_K.c.study_id == study_id, _K.c.status.in_(list(statuses)))
        rows = self._run(stmt.order_by(_K.c.opened_at, _K.c.id))
        return [_detail(row) for row in rows]

    def detail(self, case: CrcCase) -> CaseDetail:
        return _detail(self._run(_DETAIL.where(_K.c.id == case.id)).one())

    def undecided_eligibility(self, subject_id: int) -> CrcCase | None:
        row = self._run(
            CASE.select()
            .where(
                _K.c.subject_id == subject_id,
                _K.c.kind == "eligibility",
                _K.c.status != "decided",
            )
            .order_by(_K.c.id.desc())
            .limit(1)
        ).first()
        return CASE.maybe(row)

    def therapy_case(self, study_id: int, case_id: int, *, lock: bool = False) -> CrcCase | None:
        stmt = CASE.select().where(
            _K.c.id == case_id, _K.c.study_id == study_id, _K.c.kind == "therapy"
        )
        if lock:
            stmt = for_update(self._run, stmt)
        return CASE.maybe(self._run(stmt).first())

    def decide(self, case: CrcCase, values: Mapping[str, Any]) -> CrcCase:
        return plain_update(self._run, CASE, case.id, values)

    def add_therapy(
        self,
        *,
        subject_id: int,
        therapy_date: dt.date,
        therapy_type: str,
        early: bool,
        months_since: float,
        at: dt.datetime,
        by: str,
    ) -> Therapy:
        row = self._run(
            insert(_T)
            .values(
                subject_id=subject_id,
                therapy_date=therapy_date,
                therapy_type=therapy_type,
                early=early,
                months_since=months_since,
                recorded_at=at,
                recorded_by=by,
            )
            .returning(*THERAPY.columns)
        ).one()
        return THERAPY.of(row)

    def therapy(self, therapy_id: int) -> Therapy:
        return THERAPY.of(self._run(THERAPY.select().where(_T.c.id == therapy_id)).one())

    # ---- issue 14 (x14b): the case dossier and its rounds

    def case(self, study_id: int, case_id: int, *, lock: bool = False) -> CrcCase | None:
        """A case of either kind, by id within the study."""
        stmt = CASE.select().where(_K.c.id == case_id, _K.c.study_id == study_id)
        if lock:
            stmt = for_update(self._run, stmt)
        return CASE.maybe(self._run(stmt).first())

    def notes(self, case_id: int) -> list[CaseNote]:
        rows = self._run(
            NOTE.select().where(NOTE.table.c.case_id == case_id).order_by(NOTE.table.c.id)
        )
        return [NOTE.of(row) for row in rows]

    def add_note(
        self,
        *,
        case_id: int,
        kind: str,
        text: str,
        written_by: str,
        written_name: str,
        at: dt.datetime,
    ) -> CaseNote:
        row = self._run(
            insert(NOTE.table)
            .values(
                case_id=case_id,
                kind=kind,
                text=text,
                written_by=written_by,
                written_name=written_name,
                written_at=at,
            )
            .returning(*NOTE.columns)
        ).one()
        return NOTE.of(row)
