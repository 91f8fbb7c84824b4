"""Subjects, and the part of their allocation the blinded data path may carry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from sqlalchemy import Select, bindparam, func, insert, select
from sqlalchemy.orm import Session

from trialdesk.store.protocols import VERSION
from trialdesk.store.records import Allocation, ProtocolVersion, Site, Subject, SubjectRead
from trialdesk.store.sites import SITE
from trialdesk.store.sql import Columns, Sql, guarded_update, table_of
from trialdesk.store.tables import RandomizationRow, StudyRow, SubjectRow

SUBJECT = Columns(table_of(SubjectRow), Subject)
ALLOCATION = Columns(table_of(RandomizationRow), Allocation)

_S = SUBJECT.table
_SITE = SITE.table
_R = ALLOCATION.table
_STUDY = table_of(StudyRow)


def _read_select() -> Select[Any]:
    return (
        select(
            *SUBJECT.columns,
            *SITE.columns,
            *VERSION.columns,
            *ALLOCATION.columns,
            _STUDY.c.trial_unblinded_at,
        )
        .select_from(_S)
        .join(_SITE, _SITE.c.id == _S.c.site_id)
        .join(VERSION.table, VERSION.table.c.id == _S.c.protocol_version_id)
        .join(_STUDY, _STUDY.c.id == _S.c.study_id)
        .outerjoin(_R, _R.c.subject_id == _S.c.id)
    )


_READ = _read_select()
SUBJECT_ORDERS = {
    "number": _S.c.number,
    "registered": _S.c.registered_on,
    "state": _S.c.state,
    "site": _SITE.c.code,
}
"""The subject list's sort keys (issue 14): none depends on an arm; ties by number."""
_SITE_AT = SUBJECT.width
_VERSION_AT = _SITE_AT + SITE.width
_ALLOCATION_AT = _VERSION_AT + VERSION.width
_UNBLINDED_AT = _ALLOCATION_AT + ALLOCATION.width


def _subject_read(row: Any) -> SubjectRead:
    return SubjectRead(
        subject=SUBJECT.of(row),
        site=SITE.of(row, _SITE_AT),
        version=VERSION.of(row, _VERSION_AT),
        allocation=None if row[_ALLOCATION_AT] is None else ALLOCATION.of(row, _ALLOCATION_AT),
        trial_unblinded=row[_UNBLINDED_AT] is not None,
    )


_GET = SUBJECT.select().where(
    _S.c.study_id == bindparam("study_id"), _S.c.number == bindparam("number")
)
_BY_ID = SUBJECT.select().where(_S.c.id == bindparam("id"))
# one subject: with the study's newest signed protocol version, which is the version in force
# unless it takes effect later (SqlProtocols.in_force then needs no statement of its own)
_NEWEST = VERSION.table.alias("newest_signed")
_NEWEST_ID = (
    select(func.max(VERSION.table.c.id))
    .where(VERSION.table.c.study_id == _S.c.study_id, VERSION.table.c.status == "signed")
    .correlate(_S)
    .scalar_subquery()
)
_READ_ONE = _READ.add_columns(*(_NEWEST.c[name] for name in VERSION.names)).outerjoin(
    _NEWEST, _NEWEST.c.id == _NEWEST_ID
)
_READ_NUMBER = _READ_ONE.where(
    _S.c.study_id == bindparam("study_id"), _S.c.number == bindparam("number")
)
_READ_ID = _READ_ONE.where(_S.c.id == bindparam("id"))
_ADD = insert(_S).returning(*SUBJECT.columns)
_ALLOCATION = ALLOCATION.select().where(_R.c.subject_id == bindparam("subject_id"))


class _Versions(Protocol):
    def note_newest_signed(self, version: ProtocolVersion) -> None: ...


class SqlSubjects:
    def __init__(self, session: Session, versions: _Versions | None = None) -> None:
        self._run = Sql(session)
        self._versions = versions

    def _one(self, row: Any) -> SubjectRead:
        read = _subject_read(row)
        if self._versions is not None:
            self._versions.note_newest_signed(read.version)  # the subject's own, signed
            if row[_UNBLINDED_AT + 1] is not None:
                self._versions.note_newest_signed(VERSION.of(row, _UNBLINDED_AT + 1))
        return read

    def get(self, study_id: int, number: str) -> Subject | None:
        return SUBJECT.maybe(self._run(_GET, {"study_id": study_id, "number": number}).first())

    def by_id(self, subject_id: int) -> Subject:
        return SUBJECT.of(self._run(_BY_ID, {"id": subject_id}).one())

    def find_any_site(self, study_id: int, number: str) -> Subject | None:
        return self.get(study_id, number)

    def read(self, study_id: int, number: str) -> SubjectRead | None:
        row = self._run(_READ_NUMBER, {"study_id": study_id, "number": number}).first()
        return None if row is None else self._one(row)

    def read_of(self, subject: Subject) -> SubjectRead:
        return self._one(self._run(_READ_ID, {"id": subject.id}).one())

    def add(
        self,
        *,
        study_id: int,
        site_id: int,
        number: str,
        state: str,
        protocol_version_id: int,
        registered_on: dt.date,
        test_subject: bool,
        at: dt.datetime,
    ) -> Subject:
        values = {
            "study_id": study_id,
            "site_id": site_id,
            "number": number,
            "state": state,
            "version": 1,
            "protocol_version_id": protocol_version_id,
            "registered_on": registered_on,
            "test_subject": test_subject,
            "crc_approved": False,
            "procedure_done": False,
            "emergency_unblinded": False,
            "created_at": at,
            "updated_at": at,
        }
        return SUBJECT.of(self._run(_ADD, values).one())

    def update(self, subject: Subject, values: Mapping[str, Any]) -> Subject | None:
        return guarded_update(
            self._run,
            SUBJECT,
            subject.id,
            {"state": subject.state, "version": subject.version},
            {**values, "version": subject.version + 1},
        )

    def page(
        self,
        study_id: int,
        *,
        site_ids: Collection[int] | None,
        site_code: str | None,
        state: str | None,
        offset: int,
        limit: int,
        search: str | None = None,
        order: str = "number",
        descending: bool = False,
    ) -> tuple[list[SubjectRead], int]:
        where = [_S.c.study_id == study_id]
        if search:  # issue 14 (x14b): the subject list's search box, a part of the number
            where.append(_S.c.number.contains(search, autoescape=True))
        if site_ids is not None:
            where.append(_S.c.site_id.in_(list(site_ids)))
        if site_code is not None:
            where.append(
                _S.c.site_id.in_(
                    select(_SITE.c.id).where(
                        _SITE.c.study_id == study_id, _SITE.c.code == site_code
                    )
                )
            )
        if state is not None:
            where.append(_S.c.state == state)
        total = self._run(select(func.count()).select_from(_S).where(*where)).scalar()
        key = SUBJECT_ORDERS[order]
        first = key.desc() if descending else key
        number = _S.c.number.desc() if descending else _S.c.number
        keys = [number] if key is _S.c.number else [first, number]
        rows = self._run(_READ.where(*where).order_by(*keys).offset(offset).limit(limit))
        return [_subject_read(row) for row in rows], int(total or 0)

    def state_counts(self, study_id: int, *, site_ids: Collection[int] | None) -> dict[str, int]:
        """How many subjects are in each state (issue 14: the home page's summary)."""
        stmt = (
            select(_S.c.state, func.count()).where(_S.c.study_id == study_id).group_by(_S.c.state)
        )
        if site_ids is not None:
            stmt = stmt.where(_S.c.site_id.in_(list(site_ids)))
        return {str(state): int(n) for state, n in self._run(stmt)}

    def on_study(
        self,
        study_id: int,
        states: Collection[str],
        *,
        site_ids: Collection[int] | None,
        site_code: str | None,
    ) -> list[tuple[Subject, Site]]:
        stmt = (
            select(*SUBJECT.columns, *SITE.columns)
            .join(_SITE, _SITE.c.id == _S.c.site_id)
            .where(_S.c.study_id == study_id, _S.c.state.in_(list(states)))
            .order_by(_SITE.c.code, _S.c.number)
        )
        if site_ids is not None:
            stmt = stmt.where(_S.c.site_id.in_(list(site_ids)))
        if site_code is not None:
            stmt = stmt.where(_SITE.c.code == site_code)
        return [(SUBJECT.of(row), SITE.of(row, SUBJECT.width)) for row in self._run(stmt)]


class SqlAllocations:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def for_subject(self, subject_id: int) -> Allocation | None:
        return ALLOCATION.maybe(self._run(_ALLOCATION, {"subject_id": subject_id}).first())


# For the allocation repositories (store/allocation.py), which read a subject the same way.
read_select = _read_select
subject_read = _subject_read
READ_WIDTH = _UNBLINDED_AT + 1
