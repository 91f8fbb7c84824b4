"""What every API request needs before its action, resolved in one short read transaction
(issue 13, lane x13a): the sign-in behind the bearer token (with its user's grants) and the
study named in the path. The same refusals as :func:`trialdesk.services.sessions.
resolve_token` and :func:`trialdesk.services.setup.resolve_study`: one 401 for a token that
is unknown, expired, revoked or of a deactivated user; 'not found' for a study the actor
holds no role in."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from trialdesk.domain.errors import AuthenticationFailed, NotFound
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, Grant
from trialdesk.services.context import ServiceContext
from trialdesk.services.sessions import EXPIRED, TOUCH_EVERY, TokenSession
from trialdesk.services.setup import StudyInfo
from trialdesk.store.records import StudyHead, TokenRead


@dataclass(frozen=True)
class RequestContext:
    signed_in: TokenSession
    study: StudyInfo | None
    """The study of the path, None when the path names none or one the actor cannot see."""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _session(found: TokenRead | None, now: dt.datetime, kind: str, idle: dt.timedelta) -> bool:
    if found is None or found.revoked_at is not None or found.expires_at <= now:
        return False
    if not found.active:
        return False
    last = found.last_used_at or found.created_at
    return not (kind == "web" and last + idle <= now)


def _study_info(head: StudyHead) -> StudyInfo:
    return StudyInfo(
        id=head.id,
        code=head.code,
        name=head.name,
        mode=head.mode,
        protocol_name=head.protocol_name,
        protocol_version=head.protocol_version,
        protocol_sha256=head.protocol_sha256,
        sites=head.sites,
        created=False,
    )


def resolve_request(
    ctx: ServiceContext, token: str, *, kind: str = "api", study_code: str | None = None
) -> RequestContext:
    """The token's sign-in and the path's study, in one read transaction (its last use is
    written at most once a minute, in a transaction of its own)."""
    now = ctx.now()
    idle = dt.timedelta(minutes=ctx.settings.web_idle_minutes)
    with ctx.uow(readonly=True) as uow:
        found = uow.requests.token(_token_hash(token), kind)
        if found is None or not _session(found, now, kind, idle):
            raise AuthenticationFailed(EXPIRED)
        actor = Actor(
            username=found.username,
            full_name=found.full_name,
            user_id=found.user_id,
            grants=frozenset(Grant(Role(r), s, site) for r, s, site in found.grants),
        )
        study: StudyInfo | None = None
        if study_code is not None:
            head = uow.requests.study(study_code)
            if head is not None and head.id in {g.study_id for g in actor.grants}:
                study = _study_info(head)
    signed_in = TokenSession(
        actor=actor,
        expires_at=found.expires_at,
        csrf_token=found.csrf_token,
        study_id=found.study_id,
        scope=found.scope or "full",
    )
    if now - (found.last_used_at or found.created_at) >= TOUCH_EVERY:
        with ctx.uow() as uow:
            uow.requests.touch(found.token_id, now)
            uow.commit()
    return RequestContext(signed_in, study)


def study_of(context: RequestContext, code: str) -> StudyInfo:
    if context.study is None or context.study.code != code:
        raise NotFound(f"study {code} not found")
    return context.study
