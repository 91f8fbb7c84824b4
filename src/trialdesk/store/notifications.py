"""Notifications to a role of a study (e.g. the manager, of an emergency unblinding)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, bindparam, insert, select, update
from sqlalchemy.orm import Session

from trialdesk.store.records import Notification, NotificationRead
from trialdesk.store.sql import Columns, Sql, table_of
from trialdesk.store.tables import NotificationRow, SubjectRow

_N = table_of(NotificationRow)
NOTIFICATION = Columns(_N, Notification)
_S = table_of(SubjectRow)


def _read_select() -> Select[Any]:
    return select(*NOTIFICATION.columns, _S.c.number, _S.c.site_id).outerjoin(
        _S, _S.c.id == _N.c.subject_id
    )


_READ = _read_select()
_GET = _READ.where(_N.c.id == bindparam("id"))


def _read(row: Any) -> NotificationRead:
    width = NOTIFICATION.width
    return NotificationRead(NOTIFICATION.of(row), row[width], row[width + 1])


class SqlNotifications:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def add(
        self,
        *,
        study_id: int,
        recipient_role: str,
        subject_id: int | None,
        text: str,
        at: dt.datetime,
    ) -> None:
        self._run(
            insert(_N).values(
                study_id=study_id,
                recipient_role=recipient_role,
                subject_id=subject_id,
                text=text,
                created_at=at,
            )
        )

    def for_roles(
        self, study_id: int, roles: Collection[str], *, unread_only: bool
    ) -> list[NotificationRead]:
        stmt = _READ.where(_N.c.study_id == study_id, _N.c.recipient_role.in_(list(roles)))
        if unread_only:
            stmt = stmt.where(_N.c.read_at.is_(None))
        return [_read(row) for row in self._run(stmt.order_by(_N.c.id.desc()))]

    def get(self, notification_id: int) -> NotificationRead | None:
        row = self._run(_GET, {"id": notification_id}).first()
        return None if row is None else _read(row)

    def mark_read(self, notification_id: int, at: dt.datetime) -> NotificationRead:
        self._run(
            update(_N).where(_N.c.id == notification_id, _N.c.read_at.is_(None)).values(read_at=at)
        )
        return _read(self._run(_GET, {"id": notification_id}).one())
