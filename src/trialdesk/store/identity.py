"""Rows of the sign-in throttle, created on first use with the dialect's upsert (the one
place here that knows PostgreSQL from SQLite), then locked for the caller's update."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from trialdesk.store.tables import AuditEntryRow, AuthTokenRow, SignInThrottleRow


def throttle_rows(
    session: Session, wanted: Sequence[tuple[str, str, str | None, str | None]]
) -> dict[str, SignInThrottleRow]:
    """The rows for ``(key, kind, client, name)``, made when missing, locked (PostgreSQL) in
    key order so that two sign-ins never wait on each other in a cycle."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    for key, kind, client, name in sorted(wanted):
        stmt = insert(SignInThrottleRow).values(
            key=key, kind=kind, client=client, name=name, failures=0
        )
        session.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
    stmt2 = select(SignInThrottleRow).where(SignInThrottleRow.key.in_([w[0] for w in wanted]))
    if dialect == "postgresql":
        stmt2 = stmt2.order_by(SignInThrottleRow.key).with_for_update()
    return {row.key: row for row in session.scalars(stmt2)}


def peek_rows(session: Session, keys: Sequence[str]) -> dict[str, SignInThrottleRow]:
    """The rows that exist for ``keys``, unlocked (a read-only look)."""
    rows = session.scalars(select(SignInThrottleRow).where(SignInThrottleRow.key.in_(keys)))
    return {row.key: row for row in rows}


def failing_clients(session: Session, name: str, since: dt.datetime) -> int:
    """How many distinct clients failed to sign in as ``name`` since ``since``."""
    rows = session.scalars(
        select(SignInThrottleRow.client).where(
            SignInThrottleRow.kind == "pair",
            SignInThrottleRow.name == name,
            SignInThrottleRow.failures > 0,
            SignInThrottleRow.last_failure_at >= since,
        )
    ).all()
    return len(set(rows))


def prune(session: Session, before: dt.datetime, now: dt.datetime) -> None:
    """Forget rows with no recent failure and no back-off running."""
    session.execute(
        delete(SignInThrottleRow)
        .where(
            or_(
                SignInThrottleRow.last_failure_at.is_(None),
                SignInThrottleRow.last_failure_at < before,
            ),
            or_(SignInThrottleRow.blocked_until.is_(None), SignInThrottleRow.blocked_until < now),
        )
        .execution_options(synchronize_session=False)
    )


def client_signed_in_before(
    session: Session, user_id: int | None, client: str, since: dt.datetime
) -> bool:
    """Whether a session was issued to ``user_id`` at ``client`` since ``since`` (always the
    same query, so an unknown name costs what a known one does)."""
    found = session.scalars(
        select(AuthTokenRow.id)
        .where(
            AuthTokenRow.user_id == (user_id if user_id is not None else -1),
            AuthTokenRow.client == client,
            AuthTokenRow.created_at >= since,
        )
        .limit(1)
    ).first()
    return found is not None


def signature_failures_since(session: Session, user_id: int, since: str) -> list[str]:
    """Times (as stored) of the user's failed e-signatures since ``since``, from the audit
    trail itself: counting them needs no row of its own."""
    return list(
        session.scalars(
            select(AuditEntryRow.at).where(
                AuditEntryRow.stream == f"user:{user_id}",
                AuditEntryRow.action == "signature_failed",
                AuditEntryRow.at >= since,
            )
        )
    )
