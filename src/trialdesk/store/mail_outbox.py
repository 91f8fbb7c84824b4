"""The mail outbox (issue 12): mails written in the action's own transaction and the
addresses of a role's holders, so services that send notices hold no SQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import event, func, insert, or_, select, update
from sqlalchemy.orm import Session

from trialdesk.store.records import Mail
from trialdesk.store.sql import Columns, Sql, table_of
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


# --- delivery (lane x13b, issue 13): the sender's side of the outbox --------------------------

MAIL = Columns(_M, Mail)


class SqlMailDelivery:
    """What the sender and the local operator do with the outbox: due mails claimed one at a
    time (a claim is a guarded update, so two senders never send one mail twice), marked sent
    or failed, listed."""

    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def due(self, now: dt.datetime, *, max_attempts: int, force: bool) -> list[int]:
        """Unsent mails due now (``force``: also those backing off or given up on)."""
        stmt = select(_M.c.id).where(_M.c.sent_at.is_(None))
        if not force:
            stmt = stmt.where(_M.c.attempts < max_attempts, _M.c.next_attempt_at <= now)
        return list(self._run(stmt.order_by(_M.c.id)).scalars())

    def claim(self, mail_id: int, now: dt.datetime, until: dt.datetime) -> Mail | None:
        """Claim an unsent mail no one else holds until ``until``; None when taken or sent."""
        stmt = (
            update(_M)
            .where(
                _M.c.id == mail_id,
                _M.c.sent_at.is_(None),
                or_(_M.c.claimed_until.is_(None), _M.c.claimed_until < now),
            )
            .values(claimed_until=until)
            .returning(*MAIL.columns)
        )
        return MAIL.maybe(self._run(stmt).first())

    def get(self, mail_id: int) -> Mail | None:
        return MAIL.maybe(self._run(MAIL.select().where(_M.c.id == mail_id)).first())

    def update(self, mail_id: int, values: Mapping[str, Any]) -> None:
        self._run(update(_M).where(_M.c.id == mail_id).values(**values))

    def listing(self, *, unsent_only: bool) -> list[Mail]:
        stmt = MAIL.select()
        if unsent_only:
            stmt = stmt.where(_M.c.sent_at.is_(None))
        return [MAIL.of(row) for row in self._run(stmt.order_by(_M.c.id))]

    def waiting(self) -> int:
        stmt = select(func.count()).select_from(_M).where(_M.c.sent_at.is_(None))
        return int(self._run(stmt).scalar_one())
