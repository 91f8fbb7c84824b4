"""Bearer tokens for the API and sessions for the web pages: issued after sign-in, stored only
as SHA-256 hashes, with an absolute lifetime (settings ``api_token_hours`` and
``web_session_hours``, 8 h by default), an idle timeout for web sessions
(``web_idle_minutes``), and revocable (audited)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update

from trialdesk.config import Settings
from trialdesk.domain.errors import AuthenticationFailed, ValidationFailed
from trialdesk.services.access import Actor
from trialdesk.services.auth import load_actor, sign_in
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import AuthTokenRow, UserRow

KINDS = ("api", "web")
EXPIRED = "not signed in, or the session has expired"
TOUCH_EVERY = dt.timedelta(seconds=60)
"""A session's last use is written at most this often (a write per request would not do)."""


def lifetime(settings: Settings, kind: str) -> dt.timedelta:
    hours = settings.web_session_hours if kind == "web" else settings.api_token_hours
    return dt.timedelta(hours=hours)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: dt.datetime
    actor: Actor
    csrf_token: str | None = None
    scope: str = "full"
    """``full``, or ``enrol``: the user must enrol a second factor before anything else."""


@dataclass(frozen=True)
class TokenSession:
    actor: Actor
    expires_at: dt.datetime
    csrf_token: str | None
    study_id: int | None
    scope: str = "full"


def issue_token(
    ctx: ServiceContext,
    username: str,
    password: str,
    *,
    kind: str = "api",
    client: str | None = None,
    totp: str | None = None,
) -> IssuedToken:
    """Sign in (refusals counted and audited by :func:`sign_in`) and issue a token."""
    if kind not in KINDS:
        raise ValidationFailed(f"unknown token kind {kind!r}", {"kind": "api or web"})
    signed = sign_in(ctx, username, password, client=client, totp=totp)
    actor = signed.actor
    scope = "enrol" if signed.must_enrol_totp else "full"
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24) if kind == "web" else None
    now = ctx.now()
    expires = now + lifetime(ctx.settings, kind)
    with ctx.uow() as uow:
        assert actor.user_id is not None
        uow.session.add(
            AuthTokenRow(
                token_hash=_hash(token),
                user_id=actor.user_id,
                kind=kind,
                csrf_token=csrf,
                created_at=now,
                expires_at=expires,
                last_used_at=now,
                scope=scope,
                client=(client or "local")[:100],
            )
        )
        new: dict[str, object] = {"expires_at": expires.isoformat(), "client": client or "local"}
        if scope != "full":
            new["scope"] = scope
        uow.record(
            PendingEntry(
                stream=f"user:{actor.user_id}",
                at=now,
                actor=actor.username,
                action=f"{kind}_session_started",
                entity="user",
                entity_id=actor.username,
                new=new,
            )
        )
        uow.commit()
    return IssuedToken(token=token, expires_at=expires, actor=actor, csrf_token=csrf, scope=scope)


def resolve_token(ctx: ServiceContext, token: str, *, kind: str = "api") -> TokenSession:
    """The session a token stands for, or one refusal for unknown, expired (absolute or, for
    the web, idle), revoked or deactivated."""
    now = ctx.now()
    idle = dt.timedelta(minutes=ctx.settings.web_idle_minutes)
    with ctx.uow(readonly=True) as uow:
        row = uow.session.scalars(
            select(AuthTokenRow).where(
                AuthTokenRow.token_hash == _hash(token), AuthTokenRow.kind == kind
            )
        ).one_or_none()
        if row is None or row.revoked_at is not None or _utc(row.expires_at) <= now:
            raise AuthenticationFailed(EXPIRED)
        last = _utc(row.last_used_at or row.created_at)
        if kind == "web" and last + idle <= now:
            raise AuthenticationFailed(EXPIRED)
        user = uow.session.get(UserRow, row.user_id)
        if user is None or not user.active:
            raise AuthenticationFailed(EXPIRED)
        found = TokenSession(
            actor=load_actor(uow.session, user),
            expires_at=_utc(row.expires_at),
            csrf_token=row.csrf_token,
            study_id=row.study_id,
            scope=row.scope or "full",
        )
        token_id = row.id
    if now - last >= TOUCH_EVERY:
        with ctx.uow() as uow:
            uow.session.execute(
                update(AuthTokenRow)
                .where(AuthTokenRow.id == token_id)
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
            uow.commit()
    return found


def revoke_token(ctx: ServiceContext, token: str, *, kind: str = "api") -> bool:
    """Revoke a token (sign-out); True when a live token was revoked."""
    now = ctx.now()
    with ctx.uow() as uow:
        row = uow.session.scalars(
            select(AuthTokenRow).where(
                AuthTokenRow.token_hash == _hash(token), AuthTokenRow.kind == kind
            )
        ).one_or_none()
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = now
        user = uow.session.get(UserRow, row.user_id)
        uow.record(
            PendingEntry(
                stream=f"user:{row.user_id}",
                at=now,
                actor=user.username if user else "?",
                action=f"{kind}_session_revoked",
                entity="user",
                entity_id=user.username if user else "?",
                new={"token": row.id},
            )
        )
        uow.commit()
        return True


def upgrade_scope(ctx: ServiceContext, token: str, kind: str) -> None:
    """After enrolment of a second factor the session becomes a full one (only once the
    token's user has a second factor turned on)."""
    with ctx.uow() as uow:
        row = uow.session.scalars(
            select(AuthTokenRow).where(
                AuthTokenRow.token_hash == _hash(token), AuthTokenRow.kind == kind
            )
        ).one_or_none()
        user = uow.session.get(UserRow, row.user_id) if row is not None else None
        if row is None or user is None or user.totp_enabled_at is None:
            raise AuthenticationFailed(EXPIRED)
        row.scope = "full"
        uow.commit()


def set_session_study(ctx: ServiceContext, token: str, study_id: int) -> None:
    """Remember the study a browser session works in (the study switcher)."""
    with ctx.uow() as uow:
        row = uow.session.scalars(
            select(AuthTokenRow).where(AuthTokenRow.token_hash == _hash(token))
        ).one_or_none()
        if row is None:
            raise AuthenticationFailed(EXPIRED)
        row.study_id = study_id
        uow.commit()
