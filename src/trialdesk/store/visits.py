"""Visits done or missed (SCHED-1, SCHED-2)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import Session

from trialdesk.store.records import Visit
from trialdesk.store.sql import Columns, Sql, table_of
from trialdesk.store.tables import VisitRow

VISIT = Columns(table_of(VisitRow), Visit)
_V = VISIT.table

_OF_SUBJECT = VISIT.select().where(_V.c.subject_id == bindparam("subject_id")).order_by(_V.c.id)
_OF_SUBJECTS = (
    VISIT.select()
    .where(_V.c.subject_id.in_(bindparam("subject_ids", expanding=True)))
    .order_by(_V.c.id)
)
_ONE = VISIT.select().where(
    _V.c.subject_id == bindparam("subject_id"), _V.c.visit_code == bindparam("visit_code")
)
_ADD = insert(_V).returning(*VISIT.columns)
_MISSED = (
    select(func.count())
    .select_from(_V)
    .where(_V.c.subject_id == bindparam("subject_id"), _V.c.status == "missed")
)


class SqlVisits:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def for_subject(self, subject_id: int) -> list[Visit]:
        return [VISIT.of(row) for row in self._run(_OF_SUBJECT, {"subject_id": subject_id})]

    def for_subjects(self, subject_ids: Collection[int]) -> dict[int, list[Visit]]:
        out: dict[int, list[Visit]] = {i: [] for i in subject_ids}
        if out:
            for row in self._run(_OF_SUBJECTS, {"subject_ids": list(out)}):
                visit = VISIT.of(row)
                out[visit.subject_id].append(visit)
        return out

    def get(self, subject_id: int, visit_code: str) -> Visit | None:
        row = self._run(_ONE, {"subject_id": subject_id, "visit_code": visit_code}).first()
        return VISIT.maybe(row)

    def add(
        self,
        *,
        subject_id: int,
        visit_code: str,
        status: str,
        visit_date: dt.date | None,
        timing: str | None,
        window_start: dt.date,
        window_end: dt.date,
        missed_reason: str | None,
        protocol_version_id: int,
        recorded_at: dt.datetime,
        recorded_by: str,
    ) -> Visit:
        row = self._run(
            _ADD,
            {
                "subject_id": subject_id,
                "visit_code": visit_code,
                "status": status,
                "visit_date": visit_date,
                "timing": timing,
                "window_start": window_start,
                "window_end": window_end,
                "missed_reason": missed_reason,
                "protocol_version_id": protocol_version_id,
                "recorded_at": recorded_at,
                "recorded_by": recorded_by,
            },
        ).one()
        return VISIT.of(row)

    def count_missed(self, subject_id: int) -> int:
        return int(self._run(_MISSED, {"subject_id": subject_id}).scalar() or 0)
