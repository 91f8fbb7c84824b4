"""Bearer tokens for the API and sessions for the web pages: issued after a password check,
stored only as SHA-256 hashes, with an expiry, and revocable (audited)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from trialdesk.domain.errors import AuthenticationFailed, ValidationFailed
from trialdesk.services.access import Actor
from trialdesk.services.auth import authenticate, load_actor
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import AuthTokenRow, UserRow

KINDS = {"api": dt.timedelta(hours=8), "web": dt.timedelta(hours=12)}


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


@dataclass(frozen=True)
class TokenSession:
    actor: Actor
    expires_at: dt.datetime
    csrf_token: str | None
    study_id: int | None


def issue_token(
    ctx: ServiceContext, username: str, password: str, *, kind: str = "api"
) -> IssuedToken:
    """Sign in (failures counted and audited by :func:`authenticate`) and issue a token."""
    if kind not in KINDS:
        raise ValidationFailed(f"unknown token kind {kind!r}", {"kind": "api or web"})
    actor = authenticate(ctx, username, password)
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24) if kind == "web" else None
    now = ctx.now()
    expires = now + KINDS[kind]
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
            )
        )
        uow.record(
            PendingEntry(
                stream=f"user:{actor.user_id}",
                at=now,
                actor=actor.username,
                action=f"{kind}_session_started",
                entity="user",
                entity_id=actor.username,
                new={"expires_at": expires.isoformat()},
            )
        )
        uow.commit()
    return IssuedToken(token=token, expires_at=expires, actor=actor, csrf_token=csrf)


def resolve_token(ctx: ServiceContext, token: str, *, kind: str = "api") -> TokenSession:
    """The session a token stands for, or one refusal for unknown, expired or revoked."""
    now = ctx.now()
    with ctx.uow(readonly=True) as uow:
        row = uow.session.scalars(
            select(AuthTokenRow).where(
                AuthTokenRow.token_hash == _hash(token), AuthTokenRow.kind == kind
            )
        ).one_or_none()
        if row is None or row.revoked_at is not None or _utc(row.expires_at) <= now:
            raise AuthenticationFailed("not signed in, or the session has expired")
        user = uow.session.get(UserRow, row.user_id)
        if user is None or not user.active:
            raise AuthenticationFailed("not signed in, or the session has expired")
        return TokenSession(
            actor=load_actor(uow.session, user),
            expires_at=_utc(row.expires_at),
            csrf_token=row.csrf_token,
            study_id=row.study_id,
        )


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


def set_session_study(ctx: ServiceContext, token: str, study_id: int) -> None:
    """Remember the study a browser session works in (the study switcher)."""
    with ctx.uow() as uow:
        row = uow.session.scalars(
            select(AuthTokenRow).where(AuthTokenRow.token_hash == _hash(token))
        ).one_or_none()
        if row is None:
            raise AuthenticationFailed("not signed in, or the session has expired")
        row.study_id = study_id
        uow.commit()
