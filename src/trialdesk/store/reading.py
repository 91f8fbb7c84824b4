"""Read repositories of the rest of the seam (issue 13, lane x13b): users without their
secrets, audit streams read back, and the enrolment reports' counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from trialdesk.reports.enrolment import MonthRow, SiteFacts, load_month_rows, load_site_facts
from trialdesk.store.records import AuditEntry, AuditQuery, ScreeningLogLine, User
from trialdesk.store.sql import Columns, Sql, table_of
from trialdesk.store.tables import (
    AuditEntryRow,
    RandomizationRow,
    RoleGrantRow,
    SiteRow,
    SubjectRow,
    UserRow,
)

USER = Columns(table_of(UserRow), User)
AUDIT_ENTRY = Columns(table_of(AuditEntryRow), AuditEntry)
_U = USER.table
_A = AUDIT_ENTRY.table
_S = table_of(SubjectRow)
_R = table_of(RandomizationRow)
_SITE = table_of(SiteRow)


class SqlUsers:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def get(self, user_id: int) -> User | None:
        return USER.maybe(self._run(USER.select().where(_U.c.id == user_id)).first())

    def set_timezone(self, user_id: int, zone: str | None) -> None:
        self._run(update(_U).where(_U.c.id == user_id).values(timezone=zone))


class SqlAuditEntries:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def stream(self, stream: str) -> list[AuditEntry]:
        """The stored entries of one stream, in chain order."""
        stmt = AUDIT_ENTRY.select().where(_A.c.stream == stream).order_by(_A.c.seq)
        return [AUDIT_ENTRY.of(row) for row in self._run(stmt)]

    def _conditions(self, query: AuditQuery) -> list[ColumnElement[bool]]:
        grants = table_of(RoleGrantRow)
        users = self._run(
            select(grants.c.user_id).where(grants.c.study_id == query.study_id).distinct()
        ).scalars()
        security = or_(*(_A.c.action.like(f"%\\{s}", escape="\\") for s in query.security_suffixes))
        conds: list[ColumnElement[bool]] = [
            or_(
                _A.c.study_id == query.study_id,
                and_(
                    _A.c.study_id.is_(None),
                    _A.c.stream.in_([f"user:{u}" for u in sorted(users)]),
                    security,
                ),
            )
        ]
        if query.action_prefix is not None:
            prefix = query.action_prefix
            prefix = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(_A.c.action.like(prefix + "%", escape="\\"))
        if query.action is not None:
            conds.append(_A.c.action == query.action)
        if query.actor is not None:
            conds.append(_A.c.actor == query.actor)
        if query.subject_id is not None:
            conds.append(_A.c.subject_id == query.subject_id)
        if query.since_at is not None:
            conds.append(_A.c.at >= query.since_at)
        if query.until_at is not None:
            conds.append(_A.c.at < query.until_at)
        if query.excluded_entities:
            conds.append(_A.c.entity.not_in(sorted(query.excluded_entities)))
        return conds

    def count(self, query: AuditQuery) -> int:
        stmt = select(func.count()).select_from(_A).where(*self._conditions(query))
        return int(self._run(stmt).scalar_one())

    def find(
        self, query: AuditQuery, *, offset: int = 0, limit: int | None = None
    ) -> list[AuditEntry]:
        """The entries in the order written."""
        stmt = AUDIT_ENTRY.select().where(*self._conditions(query)).order_by(_A.c.id)
        if offset or limit is not None:
            stmt = stmt.offset(offset).limit(limit)
        return [AUDIT_ENTRY.of(row) for row in self._run(stmt)]

    def subject_numbers(self, subject_ids: Collection[int]) -> dict[int, str]:
        if not subject_ids:
            return {}
        stmt = select(_S.c.id, _S.c.number).where(_S.c.id.in_(sorted(subject_ids)))
        return {int(i): str(n) for i, n in self._run(stmt)}


class SqlReporting:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def registered_by_site(self, study_id: int, as_of: dt.date | None) -> dict[int, int]:
        """Live (non-test) subjects registered by site, on or before ``as_of`` when given."""
        stmt = select(_S.c.site_id, func.count()).where(
            _S.c.study_id == study_id, _S.c.test_subject.is_(False)
        )
        if as_of is not None:
            stmt = stmt.where(_S.c.registered_on <= as_of)
        return {int(k): int(n) for k, n in self._run(stmt.group_by(_S.c.site_id))}

    def randomized_by_site(self, study_id: int, as_of: dt.date | None) -> dict[int, int]:
        """Live (non-test) subjects randomized by site, on or before ``as_of`` when given."""
        stmt = (
            select(_S.c.site_id, func.count())
            .select_from(_S)
            .join(_R, _R.c.subject_id == _S.c.id)
            .where(_S.c.study_id == study_id, _S.c.test_subject.is_(False))
        )
        if as_of is not None:
            stmt = stmt.where(_R.c.randomized_on <= as_of)
        return {int(k): int(n) for k, n in self._run(stmt.group_by(_S.c.site_id))}

    def screening_log(self, study_id: int, as_of: dt.date | None) -> list[ScreeningLogLine]:
        stmt = (
            select(
                _S.c.number,
                _SITE.c.code,
                _S.c.registered_on,
                _S.c.state,
                _S.c.screen_failure_reason,
                _S.c.screen_failure_detail,
            )
            .select_from(_S)
            .join(_SITE, _SITE.c.id == _S.c.site_id)
            .where(
                _S.c.study_id == study_id,
                _S.c.test_subject.is_(False),
                _S.c.registered_on <= (as_of or dt.date.max),
            )
            .order_by(_S.c.registered_on, _S.c.number)
        )
        return [ScreeningLogLine(*row) for row in self._run(stmt)]

    def screening_log_page(
        self,
        study_id: int,
        *,
        site: str | None,
        state: str | None,
        search: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[ScreeningLogLine], int]:
        """Issue 14: one page of the log, newest registration first, and the total matching."""
        where = [_S.c.study_id == study_id, _S.c.test_subject.is_(False)]
        if site:
            where.append(_SITE.c.code == site)
        if state:
            where.append(_S.c.state == state)
        if search:
            where.append(_S.c.number.contains(search, autoescape=True))
        joined = _S.join(_SITE, _SITE.c.id == _S.c.site_id)
        total = self._run(select(func.count()).select_from(joined).where(*where)).scalar()
        stmt = (
            select(
                _S.c.number,
                _SITE.c.code,
                _S.c.registered_on,
                _S.c.state,
                _S.c.screen_failure_reason,
                _S.c.screen_failure_detail,
            )
            .select_from(joined)
            .where(*where)
            .order_by(_S.c.registered_on.desc(), _S.c.number.desc())
            .offset(offset)
            .limit(limit)
        )
        return [ScreeningLogLine(*row) for row in self._run(stmt)], int(total or 0)

    def site_facts(
        self, study_id: int, as_of: dt.date, randomized: dict[str, int]
    ) -> list[SiteFacts]:
        """Every site with its first registration up to ``as_of`` (the forecast's input)."""
        return load_site_facts(self._run.session, study_id, as_of, randomized)

    def month_rows(self, study_id: int, as_of: dt.date) -> list[MonthRow]:
        """Registrations and randomizations per calendar month up to ``as_of``."""
        return load_month_rows(self._run.session, study_id, as_of)
