"""Stored protocol versions. The text is read only when this process has not parsed that
version yet (see :func:`trialdesk.services.common.loaded_protocol`)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from trialdesk.store.records import ProtocolVersion
from trialdesk.store.sql import Columns, Sql, table_of
from trialdesk.store.tables import ProtocolVersionRow

VERSION = Columns(table_of(ProtocolVersionRow), ProtocolVersion)
_P = VERSION.table

_BY_ID = VERSION.select().where(_P.c.id == bindparam("id"))
_TEXT = select(_P.c.text).where(_P.c.id == bindparam("id"))
_NEWEST = (
    VERSION.select()
    .where(_P.c.study_id == bindparam("study_id"), _P.c.current.is_(True))
    .order_by(_P.c.id.desc())
    .limit(1)
)
_IN_FORCE = (
    VERSION.select()
    .where(
        _P.c.study_id == bindparam("study_id"),
        _P.c.status == "signed",
        or_(_P.c.effective_from.is_(None), _P.c.effective_from <= bindparam("on")),
    )
    .order_by(_P.c.id.desc())
    .limit(1)
)


class SqlProtocols:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)
        self._seen: dict[int, ProtocolVersion] = {}
        self._newest_signed: dict[int, ProtocolVersion] = {}

    def note_newest_signed(self, version: ProtocolVersion) -> None:
        """A version read with a subject: kept, and when it is the newest signed one of its
        study seen so far, :meth:`in_force` answers from it while it is in force (a unit of
        work is short: a version signed meanwhile by someone else shows on the next one)."""
        self._keep(version)
        known = self._newest_signed.get(version.study_id)
        if version.status == "signed" and (known is None or version.id > known.id):
            self._newest_signed[version.study_id] = version

    def _keep(self, version: ProtocolVersion | None) -> ProtocolVersion | None:
        if version is not None:
            self._seen.setdefault(version.id, version)
        return version

    def get(self, version_id: int) -> ProtocolVersion:
        version = self._seen.get(version_id)
        if version is None:
            version = self._seen[version_id] = VERSION.of(
                self._run(_BY_ID, {"id": version_id}).one()
            )
        return version

    def text(self, version_id: int) -> str:
        return str(self._run(_TEXT, {"id": version_id}).scalar_one())

    def newest(self, study_id: int) -> ProtocolVersion | None:
        return self._keep(VERSION.maybe(self._run(_NEWEST, {"study_id": study_id}).first()))

    def in_force(self, study_id: int, on: dt.date) -> ProtocolVersion | None:
        newest = self._newest_signed.get(study_id)
        if newest is not None and (newest.effective_from is None or newest.effective_from <= on):
            return newest
        row = self._run(_IN_FORCE, {"study_id": study_id, "on": on}).first()
        return self._keep(VERSION.maybe(row))
