"""User and site administration (SYSTEM.md §1: the administrator's job; ACC-1).

Administrator of the study, or the local operator. A user belongs to a study through its role
grants; an administrator sees and changes users holding a role in the study only, never
learns of users of other studies (PROT-1; a person is added by invitation to an e-mail
address, :mod:`.accounts`). Nobody here sets another person's password: a reset is a link
mailed to the person. A role that can reach an arm waits for a second person's approval
(:data:`.accounts.NEEDS_APPROVAL`). Every change is one audit entry in the user's stream
(``user:<id>``) or, for sites, the study's stream; a refused change writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, func, select

from trialdesk.domain.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor
from trialdesk.services.accounts import (
    add_grant,
    needs_approval,
    request_grant,
    require_admin,
    role_named,
    site_for,
)
from trialdesk.services.auth import clear_throttle, throttled_until
from trialdesk.services.common import study_by_id
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import AuthTokenRow, GrantApprovalRow, RoleGrantRow, SiteRow, UserRow
from trialdesk.store.uow import UnitOfWork

__all__ = ["role_named"]


@dataclass(frozen=True)
class RoleHeld:
    role: str
    site: str | None = None


@dataclass(frozen=True)
class UserInfo:
    username: str
    full_name: str
    active: bool
    roles: list[RoleHeld] = field(default_factory=list)
    """Grants in this study only."""
    locked_until: str | None = None
    """ISO time while sign-in for the name backs off for new clients after failures."""
    email: str | None = None
    totp: bool = False
    """A second factor is enrolled."""
    pending: list[RoleHeld] = field(default_factory=list)
    """Roles requested for the user that await a second person's approval."""


_require_admin = require_admin


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _user(
    uow: UnitOfWork, study_id: int, username: str, *, lock: bool = False, any_study: bool = False
) -> UserRow:
    """The user, if it holds a role in this study; 'not found' otherwise, the same for a user
    of another study and for no user at all (PROT-1).

    ``any_study`` is for the local operator only, who may give a user of one study a role in
    another (``trialdesk study grant``); a study's administrator never reaches other studies.
    """
    stmt = select(UserRow).where(UserRow.username == username.strip())
    if lock:
        stmt = stmt.with_for_update()
    row = uow.session.scalars(stmt).one_or_none()
    if row is not None:
        studies = set(
            uow.session.scalars(select(RoleGrantRow.study_id).where(RoleGrantRow.user_id == row.id))
        )
        if any_study or study_id in studies:
            return row
    raise NotFound(f"user {username.strip() or '?'} not found in this study")


def _site(uow: UnitOfWork, study_id: int, code: str, *, lock: bool = False) -> SiteRow:
    stmt = select(SiteRow).where(SiteRow.study_id == study_id, SiteRow.code == code.strip())
    if lock:
        stmt = stmt.with_for_update()
    row = uow.session.scalars(stmt).one_or_none()
    if row is None:
        raise NotFound(f"site {code.strip() or '?'} not found")
    return row


def _entry(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    user: UserRow,
    action: str,
    new: object,
    old: object = None,
) -> PendingEntry:
    return PendingEntry(
        stream=f"user:{user.id}",
        at=ctx.now(),
        actor=actor.label,
        action=action,
        entity="user",
        entity_id=user.username,
        study_id=study_id,
        old=old,
        new=new,
    )


def _active_admins(uow: UnitOfWork, study_id: int) -> set[int]:
    """Ids of active users holding the administrator role in the study."""
    return set(
        uow.session.scalars(
            select(RoleGrantRow.user_id)
            .join(UserRow, UserRow.id == RoleGrantRow.user_id)
            .where(
                RoleGrantRow.study_id == study_id,
                RoleGrantRow.role == Role.ADMIN.value,
                UserRow.active.is_(True),
            )
            .with_for_update()
        )
    )


def _revoke_sessions(uow: UnitOfWork, user: UserRow, now: dt.datetime) -> int:
    """End the user's live API tokens and web sessions; how many were live."""
    rows = uow.session.scalars(
        select(AuthTokenRow).where(
            AuthTokenRow.user_id == user.id, AuthTokenRow.revoked_at.is_(None)
        )
    ).all()
    live = [r for r in rows if _utc(r.expires_at) > now]
    for row in rows:
        row.revoked_at = now
    return len(live)


# --------------------------------------------------------------------------- users


def list_users(ctx: ServiceContext, actor: Actor, study_id: int) -> list[UserInfo]:
    """The study's users with their grants in it, active flag and any sign-in lock."""
    with ctx.uow(readonly=True) as uow:
        _require_admin(actor, study_id, "list users")
        study_by_id(uow, study_id)
        in_study = select(RoleGrantRow.user_id).where(RoleGrantRow.study_id == study_id)
        users = uow.session.scalars(
            select(UserRow).where(UserRow.id.in_(in_study)).order_by(UserRow.username)
        ).all()
        return _user_infos(ctx, uow, study_id, users)


def _user_infos(
    ctx: ServiceContext, uow: UnitOfWork, study_id: int, users: Sequence[UserRow]
) -> list[UserInfo]:
    """Grants, pending approvals and sign-in back-off of ``users``, in their order (grants
    read for these users only, so a page of users costs a page's worth)."""
    ids = [u.id for u in users]
    sites: dict[int, str] = {
        site_id: code
        for site_id, code in uow.session.execute(
            select(SiteRow.id, SiteRow.code).where(SiteRow.study_id == study_id)
        ).tuples()
    }
    grants: dict[int, list[RoleHeld]] = {}
    for g in uow.session.scalars(
        select(RoleGrantRow)
        .where(RoleGrantRow.study_id == study_id, RoleGrantRow.user_id.in_(ids))
        .order_by(RoleGrantRow.role, RoleGrantRow.site_id)
    ):
        site = sites.get(g.site_id) if g.site_id is not None else None
        grants.setdefault(g.user_id, []).append(RoleHeld(g.role, site))
    pending: dict[int, list[RoleHeld]] = {}
    for a in uow.session.scalars(
        select(GrantApprovalRow)
        .where(
            GrantApprovalRow.study_id == study_id,
            GrantApprovalRow.status == "pending",
            GrantApprovalRow.user_id.in_(ids),
        )
        .order_by(GrantApprovalRow.id)
    ):
        site = sites.get(a.site_id) if a.site_id is not None else None
        pending.setdefault(a.user_id or 0, []).append(RoleHeld(a.role, site))
    now = ctx.now()
    out = []
    for u in users:
        until = throttled_until(uow, u.username, now)
        out.append(
            UserInfo(
                username=u.username,
                full_name=u.full_name,
                active=u.active,
                roles=grants.get(u.id, []),
                locked_until=until.isoformat() if until else None,
                email=u.email,
                totp=u.totp_enabled_at is not None,
                pending=pending.get(u.id, []),
            )
        )
    return out


def _set_active(
    ctx: ServiceContext, actor: Actor, study_id: int, username: str, active: bool
) -> UserInfo:
    verb = "reactivate" if active else "deactivate"
    _require_admin(actor, study_id, f"{verb} user")
    now = ctx.now()
    with ctx.uow() as uow:
        user = _user(uow, study_id, username, lock=True)
        if user.active == active:
            raise Conflict(f"user {user.username} is already {'active' if active else 'inactive'}")
        if not active:
            if actor.user_id is not None and actor.user_id == user.id:
                raise PreconditionFailed(
                    "you cannot deactivate your own account", reason="own-account"
                )
            if _active_admins(uow, study_id) == {user.id}:
                raise PreconditionFailed(
                    f"{user.username} is the study's last active administrator; "
                    "grant the role to someone else first",
                    reason="last-admin",
                )
        user.active = active
        ended = 0 if active else _revoke_sessions(uow, user, now)
        new: dict[str, object] = {"active": active}
        if ended:
            new["sessions_ended"] = ended
        uow.record(_entry(ctx, actor, study_id, user, f"{verb}_user", new, {"active": not active}))
        uow.commit()
    return _one(ctx, actor, study_id, username)


def deactivate_user(ctx: ServiceContext, actor: Actor, study_id: int, username: str) -> UserInfo:
    """Stop a user signing in (live sessions end now); the account and its history stay."""
    return _set_active(ctx, actor, study_id, username, False)


def reactivate_user(ctx: ServiceContext, actor: Actor, study_id: int, username: str) -> UserInfo:
    """Let a deactivated user sign in again with the password it had."""
    return _set_active(ctx, actor, study_id, username, True)


def _one(ctx: ServiceContext, actor: Actor, study_id: int, username: str) -> UserInfo:
    wanted = username.strip()
    found = next((u for u in list_users(ctx, actor, study_id) if u.username == wanted), None)
    if found is not None:
        return found
    # its last role here was just revoked and it holds roles in another study, so it is no
    # longer listed in this one (PROT-1): what the administrator just changed, no roles left
    with ctx.uow(readonly=True) as uow:
        row = uow.session.scalars(select(UserRow).where(UserRow.username == wanted)).one()
        return UserInfo(username=row.username, full_name=row.full_name, active=row.active)


def clear_signin_backoff(
    ctx: ServiceContext, actor: Actor, study_id: int, username: str
) -> UserInfo:
    """Let a user of the study sign in again at once after failures made the name back off
    (e.g. the implanting team on a procedure day); audited, nothing else changes."""
    _require_admin(actor, study_id, "clear sign-in back-off")
    with ctx.uow() as uow:
        user = _user(uow, study_id, username, lock=True)
        cleared = clear_throttle(uow, user.username)
        uow.record(_entry(ctx, actor, study_id, user, "clear_signin_backoff", {"cleared": cleared}))
        uow.commit()
    return _one(ctx, actor, study_id, username)


def _grant_site(
    uow: UnitOfWork, study_id: int, role: Role, site: str | None
) -> tuple[int | None, str | None]:
    return site_for(uow, study_id, role, site)


def grant_role(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    username: str,
    role: str,
    site: str | None = None,
) -> UserInfo:
    """Give a user of the study a role (with its site for site-scoped roles, ACC-1).

    A role that can reach an arm is not given here: it becomes a request that an unblinded
    member of the study approves with an e-signature (the returned info lists it under
    ``pending``). The local operator may also add a user of another study (PROT-1) and, in
    demo and sandbox studies or a live study with no unblinded member yet, grant directly."""
    _require_admin(actor, study_id, "grant role")
    wanted = role_named(role)
    with ctx.uow() as uow:
        study = study_by_id(uow, study_id)
        user = _user(uow, study_id, username, lock=True, any_study=actor.operator)
        site_id, code = _grant_site(uow, study_id, wanted, site)
        if needs_approval(uow, actor, study_id, wanted):
            held = uow.session.scalars(
                select(RoleGrantRow.id).where(
                    RoleGrantRow.user_id == user.id,
                    RoleGrantRow.study_id == study_id,
                    RoleGrantRow.role == wanted.value,
                    RoleGrantRow.site_id.is_(None)
                    if site_id is None
                    else RoleGrantRow.site_id == site_id,
                )
            ).first()
            if held is not None:
                where = f" at site {code}" if code else ""
                raise Conflict(f"user {user.username} already holds {wanted.value}{where}")
            request_grant(uow, ctx, actor, study, user, wanted, site_id, code)
        else:
            add_grant(
                uow,
                ctx,
                user=user,
                study_id=study_id,
                role=wanted,
                site_id=site_id,
                site_code=code,
                granted_by_user_id=actor.user_id,
                approved_by_user_id=None,
                label=actor.label,
            )
        uow.commit()
    return _one(ctx, actor, study_id, username)


def revoke_role(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    username: str,
    role: str,
    site: str | None = None,
) -> UserInfo:
    """Take a role away; the study's last active administrator grant cannot be revoked."""
    _require_admin(actor, study_id, "revoke role")
    wanted = role_named(role)
    with ctx.uow() as uow:
        user = _user(uow, study_id, username, lock=True)
        site_id, code = _grant_site(uow, study_id, wanted, site)
        grant = uow.session.scalars(
            select(RoleGrantRow).where(
                RoleGrantRow.user_id == user.id,
                RoleGrantRow.study_id == study_id,
                RoleGrantRow.role == wanted.value,
                RoleGrantRow.site_id.is_(None)
                if site_id is None
                else RoleGrantRow.site_id == site_id,
            )
        ).first()
        if grant is None:
            where = f" at site {code}" if code else ""
            raise NotFound(f"user {user.username} does not hold {wanted.value}{where}")
        if wanted is Role.ADMIN and user.active and _active_admins(uow, study_id) == {user.id}:
            raise PreconditionFailed(
                f"this is the study's last active administrator grant ({user.username}); "
                "grant the role to someone else first",
                reason="last-admin",
            )
        uow.session.delete(grant)
        uow.record(
            _entry(
                ctx,
                actor,
                study_id,
                user,
                "revoke_role",
                None,
                {"role": wanted.value, "site": code},
            )
        )
        uow.commit()
    return _one(ctx, actor, study_id, username)


# --------------------------------------------------------------------------- sites


def _set_site_active(
    ctx: ServiceContext, actor: Actor, study_id: int, code: str, active: bool
) -> bool:
    verb = "activate" if active else "deactivate"
    _require_admin(actor, study_id, f"{verb} site")
    with ctx.uow() as uow:
        site = _site(uow, study_id, code, lock=True)
        if site.active == active:
            raise Conflict(f"site {site.code} is already {'active' if active else 'inactive'}")
        site.active = active
        uow.record(
            PendingEntry(
                stream=f"study:{study_id}",
                at=ctx.now(),
                actor=actor.label,
                action=f"{verb}_site",
                entity="site",
                entity_id=site.code,
                study_id=study_id,
                old={"active": not active},
                new={"active": active},
            )
        )
        uow.commit()
        return active


def activate_site(ctx: ServiceContext, actor: Actor, study_id: int, code: str) -> bool:
    """Open a site for registration; returns the new active flag."""
    return _set_site_active(ctx, actor, study_id, code, True)


def deactivate_site(ctx: ServiceContext, actor: Actor, study_id: int, code: str) -> bool:
    """Close a site to new registrations; its subjects and their data stay."""
    return _set_site_active(ctx, actor, study_id, code, False)


# --------------------------------------------------------------------------- issue 14 (x14b)

USER_STATUSES = ("", "active", "inactive")


@dataclass(frozen=True)
class UserPage:
    items: list[UserInfo]
    total: int
    offset: int
    limit: int


def user_page(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    search: str | None = None,
    role: str | None = None,
    site: str | None = None,
    status: str = "",
    offset: int = 0,
    limit: int = 25,
) -> UserPage:
    """One page of the study's users (by username), filtered in SQL: ``search`` in the
    username, name or address, holding ``role`` (at ``site``), active or inactive (issue 14:
    the users page of a study with hundreds of users)."""
    if role and role not in {r.value for r in Role}:
        raise ValidationFailed(f"unknown role {role!r}", {"role": "unknown"})
    if status not in USER_STATUSES:
        raise ValidationFailed("status must be active or inactive", {"status": "unknown"})
    if not 1 <= limit <= 200 or offset < 0:
        raise ValidationFailed("limit must be 1-200 and offset ≥ 0", {"limit": "out of range"})
    with ctx.uow(readonly=True) as uow:
        _require_admin(actor, study_id, "list users")
        study_by_id(uow, study_id)
        grants = select(RoleGrantRow.user_id).where(RoleGrantRow.study_id == study_id)
        if role:
            grants = grants.where(RoleGrantRow.role == role)
        if site:
            found = uow.session.scalar(
                select(SiteRow.id).where(SiteRow.study_id == study_id, SiteRow.code == site)
            )
            if found is None:
                raise NotFound(f"site {site} not found")
            grants = grants.where(RoleGrantRow.site_id == found)
        where: list[ColumnElement[bool]] = [UserRow.id.in_(grants)]
        if search:
            like = f"%{search.strip().lower()}%"
            where.append(
                func.lower(UserRow.username).like(like)
                | func.lower(UserRow.full_name).like(like)
                | func.lower(func.coalesce(UserRow.email, "")).like(like)
            )
        if status:
            where.append(UserRow.active.is_(status == "active"))
        total = int(uow.session.scalar(select(func.count(UserRow.id)).where(*where)) or 0)
        users = uow.session.scalars(
            select(UserRow).where(*where).order_by(UserRow.username).offset(offset).limit(limit)
        ).all()
        return UserPage(_user_infos(ctx, uow, study_id, users), total, offset, limit)
