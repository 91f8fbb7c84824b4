"""Stored protocol versions. The text is read only when this process has not parsed that
version yet (see :func:`trialdesk.services.common.loaded_protocol`)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from trialdesk.store.records import ProtocolVersion
from trialdesk.store.sql import Columns, table_of
from trialdesk.store.tables import ProtocolVersionRow

VERSION = Columns(table_of(ProtocolVersionRow), ProtocolVersion)


class SqlProtocols:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._seen: dict[int, ProtocolVersion] = {}

    def _keep(self, version: ProtocolVersion | None) -> ProtocolVersion | None:
        if version is not None:
            self._seen[version.id] = version
        return version

    def get(self, version_id: int) -> ProtocolVersion:
        version = self._seen.get(version_id)
        if version is None:
            t = VERSION.table
            row = self._session.execute(VERSION.select().where(t.c.id == version_id)).one()
            version = self._seen[version_id] = VERSION.of(row)
        return version

    def text(self, version_id: int) -> str:
        t = VERSION.table
        return str(self._session.execute(select(t.c.text).where(t.c.id == version_id)).scalar_one())

    def newest(self, study_id: int) -> ProtocolVersion | None:
        t = VERSION.table
        row = self._session.execute(
            VERSION.select()
            .where(t.c.study_id == study_id, t.c.current.is_(True))
            .order_by(t.c.id.desc())
            .limit(1)
        ).first()
        return self._keep(VERSION.maybe(row))

    def in_force(self, study_id: int, on: dt.date) -> ProtocolVersion | None:
        t = VERSION.table
        row = self._session.execute(
            VERSION.select()
            .where(
                t.c.study_id == study_id,
                t.c.status == "signed",
                or_(t.c.effective_from.is_(None), t.c.effective_from <= on),
            )
            .order_by(t.c.id.desc())
            .limit(1)
        ).first()
        return self._keep(VERSION.maybe(row))
