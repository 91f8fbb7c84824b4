"""Data queries on saved form fields (DATA-2)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import func, insert, select
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

    # ---- issue 14 (x14b): the query list of the pages, filtered and paged in SQL

    def page(
        self,
        study_id: int,
        *,
        statuses: Collection[str],
        site_ids: Collection[int] | None,
        site_code: str | None = None,
        raised_before: dt.datetime | None = None,
        subject: str | None = None,
        form_record_id: int | None = None,
        newest_first: bool = False,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[tuple[DataQuery, Subject, Site]], int]:
        """One page of queries and the total matching: by status, site (the actor's
        ``site_ids`` and one ``site_code``), raised before a moment (the age filter), a
        subject number prefix, one form record; oldest first unless ``newest_first``."""
        s, st = SUBJECT.table, SITE.table
        where = [_Q.c.study_id == study_id, _Q.c.status.in_(list(statuses))]
        if site_ids is not None:
            where.append(st.c.id.in_(list(site_ids)))
        if site_code is not None:
            where.append(st.c.code == site_code)
        if raised_before is not None:
            where.append(_Q.c.raised_at <= raised_before)
        if subject:
            where.append(s.c.number.startswith(subject, autoescape=True))
        if form_record_id is not None:
            where.append(_Q.c.form_record_id == form_record_id)
        joined = _Q.join(s, s.c.id == _Q.c.subject_id).join(st, st.c.id == s.c.site_id)
        total = int(self._run(select(func.count()).select_from(joined).where(*where)).scalar() or 0)
        order = (
            (_Q.c.raised_at.desc(), _Q.c.id.desc()) if newest_first else (_Q.c.raised_at, _Q.c.id)
        )
        stmt = (
            select(*QUERY.columns, *SUBJECT.columns, *SITE.columns)
            .select_from(joined)
            .where(*where)
            .order_by(*order)
            .offset(offset)
            .limit(limit)
        )
        subject_at, site_at = QUERY.width, QUERY.width + SUBJECT.width
        rows = [
            (QUERY.of(row), SUBJECT.of(row, subject_at), SITE.of(row, site_at))
            for row in self._run(stmt)
        ]
        return rows, total

    def unresolved_for_subjects(
        self, subject_ids: Collection[int]
    ) -> list[tuple[int, str, str, str]]:
        """Issue 14: (subject id, form, visit, status) of every query not closed on these
        subjects, for the status grid."""
        if not subject_ids:
            return []
        rows = self._run(
            select(_Q.c.subject_id, _Q.c.form_code, _Q.c.visit_code, _Q.c.status).where(
                _Q.c.subject_id.in_(list(subject_ids)), _Q.c.status != "closed"
            )
        )
        return [(int(a), str(b), str(c), str(d)) for a, b, c, d in rows]

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

    def of_subject(self, subject_id: int) -> list[DataQuery]:
        """Every query on the subject's records (issue 15: "not available" answers)."""
        stmt = QUERY.select().where(_Q.c.subject_id == subject_id).order_by(_Q.c.id)
        return [QUERY.of(row) for row in self._run(stmt)]
