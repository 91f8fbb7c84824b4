"""Sign-in and re-authentication for e-signatures (SIG-1), with lockout after failures."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from trialdesk.domain.errors import AuthenticationFailed, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, Grant
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import RoleGrantRow, UserRow

MIN_PASSWORD_LENGTH = 8


@lru_cache(maxsize=4)
def _hasher(time_cost: int = 3, memory_kib: int = 65536) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)


def hash_password(ctx: ServiceContext, password: str) -> str:
    """argon2id with the installation's cost settings (verification reads them from the hash)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters",
            {"password": "too short"},
        )
    s = ctx.settings
    return _hasher(s.argon2_time_cost, s.argon2_memory_kib).hash(password)


def _password_ok(row: UserRow, password: str) -> bool:
    try:
        return _hasher().verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def load_actor(session: Session, row: UserRow) -> Actor:
    grants = frozenset(
        Grant(role=Role(g.role), study_id=g.study_id, site_id=g.site_id)
        for g in session.scalars(select(RoleGrantRow).where(RoleGrantRow.user_id == row.id))
    )
    return Actor(username=row.username, full_name=row.full_name, user_id=row.id, grants=grants)


def _as_utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def authenticate(
    ctx: ServiceContext,
    username: str,
    password: str,
    *,
    kind: str = "sign_in",
    meaning: str | None = None,
) -> Actor:
    """Check a password; count failures, lock the account after too many (audited as
    ``<kind>_failed`` / ``<kind>_refused``; a signature's meaning goes with the entry)."""
    now = ctx.now()
    about: dict[str, object] = {"meaning": meaning} if meaning else {}
    with ctx.uow() as uow:
        row = uow.session.scalars(
            select(UserRow).where(UserRow.username == username).with_for_update()
        ).one_or_none()
        if row is None or not row.active:
            uow.record(
                PendingEntry(
                    stream="auth",
                    at=now,
                    actor=username or "?",
                    action=f"{kind}_failed",
                    entity="user",
                    entity_id=username or "?",
                    new={"reason": "unknown or inactive", **about},
                )
            )
            uow.commit()
            raise AuthenticationFailed("wrong username or password")
        if row.locked_until is not None and _as_utc(row.locked_until) > now:
            uow.record(
                PendingEntry(
                    stream=f"user:{row.id}",
                    at=now,
                    actor=username,
                    action=f"{kind}_refused",
                    entity="user",
                    entity_id=username,
                    new={"reason": "locked", **about},
                )
            )
            uow.commit()
            raise AuthenticationFailed(
                f"account {username} is locked after repeated failed sign-ins; "
                "try again later or ask an administrator"
            )
        if not _password_ok(row, password):
            row.failed_attempts += 1
            new: dict[str, object] = {"failed_attempts": row.failed_attempts, **about}
            if row.failed_attempts >= ctx.settings.lockout_attempts:
                row.locked_until = now + dt.timedelta(minutes=ctx.settings.lockout_minutes)
                new["locked_until"] = row.locked_until.isoformat()
            uow.record(
                PendingEntry(
                    stream=f"user:{row.id}",
                    at=now,
                    actor=username,
                    action=f"{kind}_failed",
                    entity="user",
                    entity_id=username,
                    new=new,
                )
            )
            uow.commit()
            raise AuthenticationFailed("wrong username or password")
        actor = load_actor(uow.session, row)
        if row.failed_attempts or row.locked_until is not None:
            row.failed_attempts = 0
            row.locked_until = None
            uow.commit()
        return actor


def reauthenticate(ctx: ServiceContext, actor: Actor, password: str, *, meaning: str) -> None:
    """Re-enter the password for an e-signature; a wrong one is audited as a failed attempt."""
    if actor.operator:
        raise AuthenticationFailed("the local operator cannot sign records")
    authenticate(ctx, actor.username, password, kind="signature", meaning=meaning)
