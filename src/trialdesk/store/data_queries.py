"""Data queries on saved form fields (DATA-2)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from trialdesk.store.records import DataQuery, Site, Subject
from trialdesk.store.sites import SITE
from trialdesk.store.sql import Columns, Sql, for_update, plain_update, table_of
from trialdesk.store.subjects import SUBJECT
from trialdesk.store.tables import DataQueryRow, RoleGrantRow, UserRow

QUERY = Columns(table_of(DataQueryRow), DataQuery)
_Q = QUERY.table


class SqlDataQueries:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def get(self, study_id: int, query_id: int, *, lock: bool = False) -> DataQuery | None:
        stmt = QUERY.select().where(_Q.c.id == query_id, _Q.c.study_id == study_id)
        if lock:
            stmt = for_update(self._run, stmt)
        return QUERY.maybe(self._run(stmt).first())

    def in_progress(self, form_record_id: int, field: str) -> int | None:
        value = self._run(
            select(_Q.c.id)
            .where(
                _Q.c.form_record_id == form_record_id,
                _Q.c.field == field,
                _Q.c.status.in_(("open", "answered")),
            )
            .limit(1)
        ).scalar()
        return None if value is None else int(value)

    def add(
        self,
        *,
        study_id: int,
        subject_id: int,
        form_record_id: int,
        form_code: str,
        visit_code: str,
        field: str,
        text: str,
        raised_by: str,
        raised_at: dt.datetime,
        origin: str = "manual",
        rule_id: str | None = None,
        discrepancy_key: str | None = None,
        severity: str | None = None,
    ) -> DataQuery:
        row = self._run(
            insert(_Q)
            .values(
                study_id=study_id,
                subject_id=subject_id,
                form_record_id=form_record_id,
                form_code=form_code,
                visit_code=visit_code,
                field=field,
                status="open",
                text=text,
                raised_by=raised_by,
                raised_at=raised_at,
                value_changed=False,
                reopened=0,
                origin=origin,
                rule_id=rule_id,
                discrepancy_key=discrepancy_key,
                severity=severity,
            )
            .returning(*QUERY.columns)
        ).one()
        return QUERY.of(row)

    def update(self, query: DataQuery, values: Mapping[str, Any]) -> DataQuery:
        return plain_update(self._run, QUERY, query.id, values)

    def listing(
        self,
        study_id: int,
        *,
        statuses: Collection[str],
        site_id: int | None,
        site_ids: Collection[int] | None,
    ) -> list[tuple[DataQuery, Subject, Site]]:
        s, st = SUBJECT.table, SITE.table
        stmt = (
            select(*QUERY.columns, *SUBJECT.columns, *SITE.columns)
            .join(s, s.c.id == _Q.c.subject_id)
            .join(st, st.c.id == s.c.site_id)
            .where(_Q.c.study_id == study_id, _Q.c.status.in_(list(statuses)))
            .order_by(_Q.c.raised_at, _Q.c.id)
        )
        if site_id is not None:
            stmt = stmt.where(st.c.id == site_id)
        if site_ids is not None:
            stmt = stmt.where(st.c.id.in_(list(site_ids)))
        subject_at, site_at = QUERY.width, QUERY.width + SUBJECT.width
        return [
            (QUERY.of(row), SUBJECT.of(row, subject_at), SITE.of(row, site_at))
            for row in self._run(stmt)
        ]

    # issue 15 (x15b): the queries data-quality rules opened, for their reruns (REC-6)
    def of_rules(self, subject_id: int) -> list[DataQuery]:
        stmt = (
            QUERY.select()
            .where(_Q.c.subject_id == subject_id, _Q.c.origin == "rule")
            .order_by(_Q.c.id)
        )
        return [QUERY.of(row) for row in self._run(stmt)]

    def grants_of(self, study_id: int, username: str) -> list[tuple[str, int | None]]:
        """``(role, site id or None)`` of an active user in the study: whom a query may be
        assigned to (issue 15, REC-7)."""
        u, g = table_of(UserRow), table_of(RoleGrantRow)
        stmt = (
            select(g.c.role, g.c.site_id)
            .join(u, u.c.id == g.c.user_id)
            .where(u.c.username == username, u.c.active.is_(True), g.c.study_id == study_id)
        )
        return [(str(role), site_id) for role, site_id in self._run(stmt)]
