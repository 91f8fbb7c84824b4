"""Visits done or missed (SCHED-1, SCHED-2)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from trialdesk.store.records import Visit
from trialdesk.store.sql import Columns, table_of
from trialdesk.store.tables import VisitRow

VISIT = Columns(table_of(VisitRow), Visit)
_V = VISIT.table


class SqlVisits:
    def __init__(self, session: Session) -> None:
        self._session = session

    def for_subject(self, subject_id: int) -> list[Visit]:
        rows = self._session.execute(
            VISIT.select().where(_V.c.subject_id == subject_id).order_by(_V.c.id)
        )
        return [VISIT.of(row) for row in rows]

    def for_subjects(self, subject_ids: Collection[int]) -> dict[int, list[Visit]]:
        out: dict[int, list[Visit]] = {i: [] for i in subject_ids}
        if not out:
            return out
        rows = self._session.execute(
            VISIT.select().where(_V.c.subject_id.in_(list(out))).order_by(_V.c.id)
        )
        for row in rows:
            visit = VISIT.of(row)
            out[visit.subject_id].append(visit)
        return out

    def get(self, subject_id: int, visit_code: str) -> Visit | None:
        row = self._session.execute(
            VISIT.select().where(_V.c.subject_id == subject_id, _V.c.visit_code == visit_code)
        ).first()
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
        row = self._session.execute(
            insert(_V)
            .values(
                subject_id=subject_id,
                visit_code=visit_code,
                status=status,
                visit_date=visit_date,
                timing=timing,
                window_start=window_start,
                window_end=window_end,
                missed_reason=missed_reason,
                protocol_version_id=protocol_version_id,
                recorded_at=recorded_at,
                recorded_by=recorded_by,
            )
            .returning(*VISIT.columns)
        ).one()
        return VISIT.of(row)

    def count_missed(self, subject_id: int) -> int:
        count = self._session.execute(
            select(func.count())
            .select_from(_V)
            .where(_V.c.subject_id == subject_id, _V.c.status == "missed")
        ).scalar()
        return int(count or 0)
