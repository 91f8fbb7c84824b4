"""Notifications to a role of a study (e.g. the manager, of an emergency unblinding)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert
from sqlalchemy.orm import Session

from trialdesk.store.sql import Sql, table_of
from trialdesk.store.tables import NotificationRow

_N = table_of(NotificationRow)


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
