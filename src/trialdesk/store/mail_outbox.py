"""The mail outbox (issue 12): mails written in the action's own transaction and the
addresses of a role's holders, so services that send notices hold no SQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import event, insert, or_, select
from sqlalchemy.orm import Session

from trialdesk.store.sql import Sql, table_of
from trialdesk.store.tables import MailOutboxRow, RoleGrantRow, UserRow

_M = table_of(MailOutboxRow)


class SqlMailOutbox:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._run = Sql(session)

    def addresses(self, *, study_id: int, role: str, site_id: int | None) -> list[str]:
        stmt = (
            select(UserRow.email)
            .join(RoleGrantRow, RoleGrantRow.user_id == UserRow.id)
            .where(
                RoleGrantRow.study_id == study_id,
                RoleGrantRow.role == role,
                UserRow.active.is_(True),
                UserRow.email.is_not(None),
            )
        )
        if site_id is not None:
            stmt = stmt.where(or_(RoleGrantRow.site_id.is_(None), RoleGrantRow.site_id == site_id))
        return sorted({e for e in self._session.scalars(stmt) if e})

    def add(
        self,
        *,
        study_id: int | None,
        kind: str,
        recipient: str,
        subject: str,
        body_enc: bytes,
        at: dt.datetime,
    ) -> None:
        self._run(
            insert(_M).values(
                study_id=study_id,
                kind=kind,
                recipient=recipient,
                subject=subject,
                body_enc=body_enc,
                created_at=at,
                attempts=0,
                next_attempt_at=at,
            )
        )

    def after_commit(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` once this transaction commits (the sender then delivers at once)."""
        info = self._session.info
        if not info.get("trialdesk_mail_hook"):
            info["trialdesk_mail_hook"] = True
            event.listen(self._session, "after_commit", lambda _s: wake(), once=True)
