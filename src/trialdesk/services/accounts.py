"""Accounts without anyone choosing another person's password (issue 12, SIG-1, ACC-1).

- **Invitations** go to an e-mail address. The answer to the administrator is the same
  whether or not the address already has an account anywhere in the installation; the link
  (single use, expiring, only its SHA-256 stored) lets a new person choose a password, or the
  owner of an existing account attach the role to it by signing in.
- **Separation of duties**: a role that can reach an arm (:data:`NEEDS_APPROVAL`: the
  implanting team, the statistician and DSMB members see arms; a site coordinator may break
  the code for a subject) is given only after an e-signed approval (SIG-1) by someone who
  already holds an unblinded role in the study and is neither the requester nor the grantee.
  The local operator's grants are direct only in demo and sandbox studies and, in a live
  study, while it has no active unblinded member yet (its first statistician, at ``init``).
- **Password resets** are single-use, expiring links mailed to the person's own address.
- **TOTP**: enrolment (secret and ``otpauth://`` URI shown once), verification, disabling by
  the owner, and recovery by the local operator.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import pyotp
from sqlalchemy import select

from trialdesk.domain.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.roles import ROLE_TITLES, SITE_SCOPED, Role
from trialdesk.services.access import Actor, require
from trialdesk.services.auth import (
    SIGN_IN_REFUSED,
    UNBLINDED_ROLES,
    _count_failure,
    _totp_step,
    _verify,
    check_password_rules,
    clear_throttle,
    hash_password,
    normalized_name,
    reauthenticate,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.mail import check_address, enqueue, link, notify_role
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import (
    AuthTokenRow,
    GrantApprovalRow,
    InvitationRow,
    PasswordResetRow,
    RoleGrantRow,
    SiteRow,
    StudyRow,
    UserRow,
)
from trialdesk.store.uow import UnitOfWork

NEEDS_APPROVAL: frozenset[Role] = frozenset(
    {Role.IMPLANTER, Role.STATISTICIAN, Role.DSMB, Role.COORDINATOR}
)
"""Roles whose holder can see an arm, directly or by breaking the code for a subject."""
APPROVERS: frozenset[Role] = UNBLINDED_ROLES
INVALID_LINK = "this link is not valid: it was used already, has expired or was withdrawn"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _iso(moment: dt.datetime | None) -> str | None:
    return _utc(moment).isoformat() if moment is not None else None


def role_named(value: str) -> Role:
    """The role a form or command names; one clear refusal for an unknown name."""
    try:
        return Role(value.strip())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ValidationFailed(
            f"unknown role {value!r}; roles are {known}", {"role": "unknown role"}
        ) from None


def require_admin(actor: Actor, study_id: int, action: str) -> None:
    if not actor.operator:
        require(actor, study_id, [Role.ADMIN], action=action)


def site_for(
    uow: UnitOfWork, study_id: int, role: Role, site: str | None
) -> tuple[int | None, str | None]:
    """The site a grant of ``role`` names: required for site roles, refused for others."""
    code = (site or "").strip() or None
    if role in SITE_SCOPED:
        if code is None:
            raise ValidationFailed(f"role {role.value} needs a site", {"site": "required"})
        row = uow.session.scalars(
            select(SiteRow).where(SiteRow.study_id == study_id, SiteRow.code == code)
        ).one_or_none()
        if row is None:
            raise NotFound(f"site {code} not found")
        return row.id, code
    if code is not None:
        raise ValidationFailed(
            f"role {role.value} is study-wide; give no site", {"site": "not for this role"}
        )
    return None, None


def _study(uow: UnitOfWork, study_id: int) -> StudyRow:
    study = uow.session.get(StudyRow, study_id)
    if study is None:
        raise NotFound(f"study {study_id} not found")
    return study


def _unblinded_members(uow: UnitOfWork, study_id: int) -> set[int]:
    return set(
        uow.session.scalars(
            select(RoleGrantRow.user_id)
            .join(UserRow, UserRow.id == RoleGrantRow.user_id)
            .where(
                RoleGrantRow.study_id == study_id,
                RoleGrantRow.role.in_([r.value for r in APPROVERS]),
                UserRow.active.is_(True),
            )
        )
    )


def needs_approval(uow: UnitOfWork, actor: Actor, study_id: int, role: Role) -> bool:
    """Whether a grant of ``role`` by ``actor`` waits for a second person's approval."""
    if role not in NEEDS_APPROVAL:
        return False
    if not actor.operator:
        return True
    study = _study(uow, study_id)
    return study.mode == "live" and bool(_unblinded_members(uow, study_id))


def _study_entry(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    action: str,
    entity: str,
    entity_id: str,
    new: Any,
    old: Any = None,
) -> PendingEntry:
    return PendingEntry(
        stream=f"study:{study_id}",
        at=ctx.now(),
        actor=actor.label,
        action=action,
        entity=entity,
        entity_id=entity_id[:80],
        study_id=study_id,
        old=old,
        new=new,
    )


def _user_entry(
    ctx: ServiceContext,
    actor_label: str,
    user: UserRow,
    action: str,
    new: Any,
    study_id: int | None = None,
    old: Any = None,
) -> PendingEntry:
    return PendingEntry(
        stream=f"user:{user.id}",
        at=ctx.now(),
        actor=actor_label[:80],
        action=action,
        entity="user",
        entity_id=user.username[:80],
        study_id=study_id,
        old=old,
        new=new,
    )


def add_grant(
    uow: UnitOfWork,
    ctx: ServiceContext,
    *,
    user: UserRow,
    study_id: int,
    role: Role,
    site_id: int | None,
    site_code: str | None,
    granted_by_user_id: int | None,
    approved_by_user_id: int | None,
    label: str,
) -> None:
    """Write a grant with its provenance (who asked, who approved) and its audit entry."""
    held = uow.session.scalars(
        select(RoleGrantRow).where(
            RoleGrantRow.user_id == user.id,
            RoleGrantRow.study_id == study_id,
            RoleGrantRow.role == role.value,
            RoleGrantRow.site_id.is_(None) if site_id is None else RoleGrantRow.site_id == site_id,
        )
    ).first()
    if held is not None:
        where = f" at site {site_code}" if site_code else ""
        raise Conflict(f"user {user.username} already holds {role.value}{where}")
    uow.session.add(
        RoleGrantRow(
            user_id=user.id,
            study_id=study_id,
            role=role.value,
            site_id=site_id,
            granted_by_user_id=granted_by_user_id,
            approved_by_user_id=approved_by_user_id,
            granted_at=ctx.now(),
        )
    )
    new: dict[str, Any] = {"role": role.value, "site": site_code}
    if approved_by_user_id is not None:
        new["approved_by_user"] = approved_by_user_id
    uow.record(_user_entry(ctx, label, user, "grant_role", new, study_id))


# --------------------------------------------------------------------------- invitations


@dataclass(frozen=True)
class InvitationView:
    """What the administrator sees: never whether the address already has an account."""

    id: int
    email: str
    full_name: str
    role: str
    site: str | None
    status: str  # awaiting_approval | sent | accepted | rejected | cancelled | expired
    invited_by: str
    created_at: str
    expires_at: str | None


def _invitation_view(uow: UnitOfWork, row: InvitationRow, now: dt.datetime) -> InvitationView:
    site = uow.session.get(SiteRow, row.site_id) if row.site_id is not None else None
    status = row.status
    if status == "sent" and row.expires_at is not None and _utc(row.expires_at) <= now:
        status = "expired"
    return InvitationView(
        id=row.id,
        email=row.email,
        full_name=row.full_name,
        role=row.role,
        site=site.code if site else None,
        status=status,
        invited_by=row.invited_by,
        created_at=_iso(row.created_at) or "",
        expires_at=_iso(row.expires_at),
    )


def _send_invitation(
    uow: UnitOfWork, ctx: ServiceContext, row: InvitationRow, study: StudyRow
) -> None:
    """Issue the link (only its hash is kept) and write the mail. The same mail goes to an
    address with or without an account: the page behind the link tells its owner which."""
    token = secrets.token_urlsafe(32)
    now = ctx.now()
    row.token_hash = _hash(token)
    row.expires_at = now + dt.timedelta(hours=ctx.settings.invitation_hours)
    row.status = "sent"
    title = ROLE_TITLES[Role(row.role)]
    url = link(ctx.settings, f"/account/invitation/{token}")
    enqueue(
        uow,
        ctx,
        to=row.email,
        subject=f"trialdesk: invitation to study {study.code} as {title}",
        body=(
            f"Dear {row.full_name},\n\n"
            f"{row.invited_by} invites you to study {study.code} ({study.name}) as {title}.\n\n"
            f"To accept, open this link before {row.expires_at.isoformat(timespec='minutes')} "
            f"UTC:\n{url}\n\n"
            "If you already have a trialdesk account here you will sign in with it; otherwise "
            "you choose your own password. The link works once.\n"
            "Nobody from trialdesk will ever ask you for your password.\n"
        ),
        kind="invitation",
        study_id=study.id,
    )


def invite(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    email: str,
    full_name: str,
    role: str,
    site: str | None = None,
) -> InvitationView:
    """Invite a person by e-mail address (administrator, or the local operator). A role that
    can reach an arm waits for an unblinded member's approval before any link exists."""
    require_admin(actor, study_id, "invite a user")
    address = check_address(email)
    name = " ".join(full_name.split())
    if not name or len(name) > 200:
        raise ValidationFailed(
            "a full name is required (up to 200 characters)", {"full_name": "required"}
        )
    wanted = role_named(role)
    now = ctx.now()
    with ctx.uow() as uow:
        study = _study(uow, study_id)
        site_id, code = site_for(uow, study_id, wanted, site)
        pending = needs_approval(uow, actor, study_id, wanted)
        row = InvitationRow(
            study_id=study_id,
            email=address,
            full_name=name,
            role=wanted.value,
            site_id=site_id,
            invited_by=actor.label,
            invited_by_user_id=actor.user_id,
            created_at=now,
            status="awaiting_approval" if pending else "sent",
        )
        uow.session.add(row)
        uow.session.flush()
        if pending:
            approval = GrantApprovalRow(
                study_id=study_id,
                role=wanted.value,
                site_id=site_id,
                invitation_id=row.id,
                grantee=address,
                requested_by=actor.label,
                requested_by_user_id=actor.user_id,
                requested_at=now,
                status="pending",
            )
            uow.session.add(approval)
            uow.session.flush()
            _tell_approvers(uow, ctx, study, approval, code)
        else:
            _send_invitation(uow, ctx, row, study)
        uow.record(
            _study_entry(
                ctx,
                actor,
                study_id,
                "invite_user",
                "invitation",
                str(row.id),
                {
                    "email": address,
                    "full_name": name,
                    "role": wanted.value,
                    "site": code,
                    "status": row.status,
                },
            )
        )
        uow.session.flush()
        view = _invitation_view(uow, row, now)
        uow.commit()
        return view


def _tell_approvers(
    uow: UnitOfWork,
    ctx: ServiceContext,
    study: StudyRow,
    approval: GrantApprovalRow,
    site: str | None,
) -> None:
    where = f" at site {site}" if site else ""
    for role in sorted(APPROVERS):
        notify_role(
            uow,
            ctx,
            study.id,
            role,
            subject=f"trialdesk: an access request in study {study.code} awaits approval",
            body=(
                f"{approval.requested_by} asks for {approval.role}{where} access for "
                f"{approval.grantee} in study {study.code}. It takes effect only when an "
                "unblinded member of the study other than the requester and the grantee "
                f"approves it with an e-signature:\n{link(ctx.settings, '/account/approvals')}\n"
            ),
            kind="approval_request",
        )


def list_invitations(ctx: ServiceContext, actor: Actor, study_id: int) -> list[InvitationView]:
    """The study's invitations, newest first (administrator or local operator)."""
    require_admin(actor, study_id, "list invitations")
    with ctx.uow(readonly=True) as uow:
        rows = uow.session.scalars(
            select(InvitationRow)
            .where(InvitationRow.study_id == study_id)
            .order_by(InvitationRow.id.desc())
        ).all()
        now = ctx.now()
        return [_invitation_view(uow, r, now) for r in rows]


def cancel_invitation(
    ctx: ServiceContext, actor: Actor, study_id: int, invitation_id: int
) -> InvitationView:
    """Withdraw an invitation not yet accepted: its link stops working at once."""
    require_admin(actor, study_id, "cancel an invitation")
    with ctx.uow() as uow:
        row = uow.session.get(InvitationRow, invitation_id)
        if row is None or row.study_id != study_id:
            raise NotFound(f"invitation {invitation_id} not found")
        if row.status not in ("awaiting_approval", "sent"):
            raise PreconditionFailed(
                f"invitation {invitation_id} is {row.status}; only an open one can be cancelled",
                reason="invitation-closed",
            )
        old = row.status
        row.status = "cancelled"
        row.token_hash = None
        for approval in uow.session.scalars(
            select(GrantApprovalRow).where(
                GrantApprovalRow.invitation_id == row.id, GrantApprovalRow.status == "pending"
            )
        ):
            approval.status = "rejected"
            approval.reason = "invitation cancelled"
        uow.record(
            _study_entry(
                ctx,
                actor,
                study_id,
                "cancel_invitation",
                "invitation",
                str(row.id),
                {"status": "cancelled"},
                {"status": old},
            )
        )
        uow.session.flush()
        view = _invitation_view(uow, row, ctx.now())
        uow.commit()
        return view


@dataclass(frozen=True)
class InvitationLink:
    """What the holder of a link sees (the link is the proof of owning the address)."""

    study: str
    study_name: str
    role: str
    site: str | None
    full_name: str
    email: str
    existing_account: bool
    expires_at: str


def _open_invitation(
    uow: UnitOfWork, token: str, now: dt.datetime, *, lock: bool = False
) -> InvitationRow:
    stmt = select(InvitationRow).where(InvitationRow.token_hash == _hash(token.strip()))
    if lock:
        stmt = stmt.with_for_update()
    row = uow.session.scalars(stmt).one_or_none()
    if row is None or row.status != "sent" or row.expires_at is None or _utc(row.expires_at) <= now:
        raise NotFound(INVALID_LINK)
    return row


def invitation_info(ctx: ServiceContext, token: str) -> InvitationLink:
    with ctx.uow(readonly=True) as uow:
        row = _open_invitation(uow, token, ctx.now())
        study = _study(uow, row.study_id)
        site = uow.session.get(SiteRow, row.site_id) if row.site_id is not None else None
        existing = uow.session.scalars(select(UserRow.id).where(UserRow.email == row.email)).first()
        return InvitationLink(
            study=study.code,
            study_name=study.name,
            role=row.role,
            site=site.code if site else None,
            full_name=row.full_name,
            email=row.email,
            existing_account=existing is not None,
            expires_at=_iso(row.expires_at) or "",
        )


@dataclass(frozen=True)
class Accepted:
    username: str
    study: str
    role: str
    site: str | None
    new_account: bool


def accept_invitation(
    ctx: ServiceContext, token: str, password: str, *, client: str | None = None
) -> Accepted:
    """Use an invitation link. Without an account for the address, ``password`` becomes the
    new account's password (its owner chose it; the username is the address). With one, it
    must be that account's current password: the owner attaches the role by signing in."""
    if not isinstance(password, str):
        raise ValidationFailed("a password is required", {"password": "required"})
    now = ctx.now()
    with ctx.uow() as uow:
        row = _open_invitation(uow, token, now, lock=True)
        study = _study(uow, row.study_id)
        user = uow.session.scalars(
            select(UserRow).where(UserRow.email == row.email).with_for_update()
        ).one_or_none()
        role = Role(row.role)
        site = uow.session.get(SiteRow, row.site_id) if row.site_id is not None else None
        if user is None:
            check_password_rules(password)
            taken = uow.session.scalars(
                select(UserRow.id).where(UserRow.username == row.email)
            ).first()
            if taken is not None:  # a legacy username equal to the address: no silent merge
                raise Conflict(
                    "an account named like this address exists without it on file; ask the "
                    "local operator to record the address ('trialdesk users set-email')"
                )
            user = UserRow(
                username=row.email,
                full_name=row.full_name,
                password_hash=hash_password(ctx, password),
                active=True,
                created_at=now,
                email=row.email,
            )
            uow.session.add(user)
            uow.session.flush()
            uow.record(
                _user_entry(
                    ctx,
                    user.username,
                    user,
                    "create_user",
                    {
                        "full_name": row.full_name,
                        "email": row.email,
                        "invitation": row.id,
                        "password": "set by its owner",
                    },
                    study.id,
                )
            )
            new_account = True
        else:
            if not (user.active and _verify(ctx.settings, user.password_hash, password)):
                _count_failure(
                    uow,
                    ctx.settings,
                    (client or "local")[:100],
                    normalized_name(user.username),
                    now,
                )
                uow.record(
                    _user_entry(
                        ctx,
                        user.username,
                        user,
                        "accept_invitation_failed",
                        {"invitation": row.id, "reason": "wrong password or inactive"},
                        study.id,
                    )
                )
                uow.commit()
                raise AuthenticationFailed(SIGN_IN_REFUSED)
            new_account = False
        add_grant(
            uow,
            ctx,
            user=user,
            study_id=study.id,
            role=role,
            site_id=row.site_id,
            site_code=site.code if site else None,
            granted_by_user_id=row.invited_by_user_id,
            approved_by_user_id=row.approved_by_user_id,
            label=user.username,
        )
        row.status = "accepted"
        row.accepted_at = now
        row.user_id = user.id
        row.token_hash = None
        uow.record(
            _study_entry(
                ctx,
                _named(user),
                study.id,
                "accept_invitation",
                "invitation",
                str(row.id),
                {"status": "accepted", "user": user.username, "new_account": new_account},
                {"status": "sent"},
            )
        )
        uow.commit()
        return Accepted(
            username=user.username,
            study=study.code,
            role=role.value,
            site=site.code if site else None,
            new_account=new_account,
        )


def _named(user: UserRow) -> Actor:
    return Actor(username=user.username, full_name=user.full_name, user_id=user.id)


# --------------------------------------------------------------------------- approvals


@dataclass(frozen=True)
class ApprovalView:
    id: int
    role: str
    site: str | None
    grantee: str
    requested_by: str
    requested_at: str
    status: str
    decided_by: str | None = None
    decided_at: str | None = None
    meaning: str | None = None
    reason: str | None = None


def _approval_view(uow: UnitOfWork, row: GrantApprovalRow) -> ApprovalView:
    site = uow.session.get(SiteRow, row.site_id) if row.site_id is not None else None
    return ApprovalView(
        id=row.id,
        role=row.role,
        site=site.code if site else None,
        grantee=row.grantee,
        requested_by=row.requested_by,
        requested_at=_iso(row.requested_at) or "",
        status=row.status,
        decided_by=row.decided_name,
        decided_at=_iso(row.decided_at),
        meaning=row.meaning,
        reason=row.reason,
    )


def request_grant(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    study: StudyRow,
    user: UserRow,
    role: Role,
    site_id: int | None,
    code: str | None,
) -> GrantApprovalRow:
    """A request that an existing user of the study get ``role`` (awaits approval)."""
    open_one = uow.session.scalars(
        select(GrantApprovalRow).where(
            GrantApprovalRow.study_id == study.id,
            GrantApprovalRow.user_id == user.id,
            GrantApprovalRow.role == role.value,
            GrantApprovalRow.status == "pending",
        )
    ).first()
    if open_one is not None:
        raise Conflict(f"a request for {role.value} for {user.username} already awaits approval")
    row = GrantApprovalRow(
        study_id=study.id,
        role=role.value,
        site_id=site_id,
        user_id=user.id,
        grantee=user.username,
        requested_by=actor.label,
        requested_by_user_id=actor.user_id,
        requested_at=ctx.now(),
        status="pending",
    )
    uow.session.add(row)
    uow.session.flush()
    uow.record(
        _user_entry(
            ctx,
            actor.label,
            user,
            "request_grant",
            {"role": role.value, "site": code, "approval": row.id, "status": "pending"},
            study.id,
        )
    )
    _tell_approvers(uow, ctx, study, row, code)
    return row


def _may_read_approvals(actor: Actor, study_id: int) -> None:
    if actor.operator:
        return
    require(actor, study_id, [Role.ADMIN, *sorted(APPROVERS)], action="list access requests")


def list_approvals(
    ctx: ServiceContext, actor: Actor, study_id: int, *, pending_only: bool = True
) -> list[ApprovalView]:
    """Requests for roles that can reach an arm: for administrators (who ask) and unblinded
    members (who approve)."""
    _may_read_approvals(actor, study_id)
    with ctx.uow(readonly=True) as uow:
        stmt = select(GrantApprovalRow).where(GrantApprovalRow.study_id == study_id)
        if pending_only:
            stmt = stmt.where(GrantApprovalRow.status == "pending")
        rows = uow.session.scalars(stmt.order_by(GrantApprovalRow.id)).all()
        return [_approval_view(uow, r) for r in rows]


def _decidable(
    uow: UnitOfWork, actor: Actor, study_id: int, approval_id: int, *, lock: bool
) -> GrantApprovalRow:
    require(actor, study_id, sorted(APPROVERS), action="approve access")
    stmt = select(GrantApprovalRow).where(
        GrantApprovalRow.id == approval_id, GrantApprovalRow.study_id == study_id
    )
    if lock:
        stmt = stmt.with_for_update()
    row = uow.session.scalars(stmt).one_or_none()
    if row is None:
        raise NotFound(f"access request {approval_id} not found")
    if row.status != "pending":
        raise PreconditionFailed(
            f"access request {approval_id} is already {row.status}", reason="request-decided"
        )
    if row.requested_by_user_id is not None and row.requested_by_user_id == actor.user_id:
        raise PermissionDenied(
            "you asked for this access; another unblinded member of the study must approve it "
            "(separation of duties)"
        )
    grantee_id = row.user_id
    if grantee_id is None and row.invitation_id is not None:
        invitation = uow.session.get(InvitationRow, row.invitation_id)
        if invitation is not None:
            grantee_id = uow.session.scalars(
                select(UserRow.id).where(UserRow.email == invitation.email)
            ).first()
    if grantee_id is not None and grantee_id == actor.user_id:
        raise PermissionDenied(
            "this access is for you; another unblinded member of the study must approve it "
            "(separation of duties)"
        )
    return row


def _meaning(verb: str, row: GrantApprovalRow, study: StudyRow, site: str | None) -> str:
    where = f" at site {site}" if site else ""
    return (
        f"{verb} of {row.role}{where} access to study {study.code} for {row.grantee}, "
        f"requested by {row.requested_by}"
    )[:300]


def decide_approval(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    approval_id: int,
    *,
    approve: bool,
    password: str,
    reason: str | None = None,
) -> ApprovalView:
    """Approve or reject a request, e-signed (SIG-1: password, name, time, meaning).
    An approved invitation's link is mailed now; an approved grant takes effect now."""
    with ctx.uow(readonly=True) as uow:
        row = _decidable(uow, actor, study_id, approval_id, lock=False)
        study = _study(uow, study_id)
        site = uow.session.get(SiteRow, row.site_id) if row.site_id is not None else None
        meaning = _meaning(
            "Approval" if approve else "Rejection", row, study, site.code if site else None
        )
    text = (reason or "").strip() or None
    if not approve and text is None:
        raise ValidationFailed("a reason is required to reject", {"reason": "required"})
    reauthenticate(ctx, actor, password, meaning=meaning)
    now = ctx.now()
    with ctx.uow() as uow:
        row = _decidable(uow, actor, study_id, approval_id, lock=True)
        study = _study(uow, study_id)
        site = uow.session.get(SiteRow, row.site_id) if row.site_id is not None else None
        row.status = "approved" if approve else "rejected"
        row.decided_by = actor.username
        row.decided_by_user_id = actor.user_id
        row.decided_name = actor.full_name
        row.decided_at = now
        row.meaning = meaning
        row.reason = text
        if row.invitation_id is not None:
            invitation = uow.session.get(InvitationRow, row.invitation_id)
            assert invitation is not None
            if approve:
                invitation.approved_by_user_id = actor.user_id
                _send_invitation(uow, ctx, invitation, study)
            else:
                invitation.status = "rejected"
        elif approve:
            user = uow.session.get(UserRow, row.user_id)
            assert user is not None
            add_grant(
                uow,
                ctx,
                user=user,
                study_id=study_id,
                role=Role(row.role),
                site_id=row.site_id,
                site_code=site.code if site else None,
                granted_by_user_id=row.requested_by_user_id,
                approved_by_user_id=actor.user_id,
                label=actor.label,
            )
        uow.record(
            _study_entry(
                ctx,
                actor,
                study_id,
                "approve_grant" if approve else "reject_grant",
                "grant_approval",
                str(row.id),
                {
                    "status": row.status,
                    "role": row.role,
                    "grantee": row.grantee,
                    "requested_by": row.requested_by,
                    "signature": {
                        "name": actor.full_name,
                        "username": actor.username,
                        "at": now.isoformat(),
                        "meaning": meaning,
                    },
                },
                {"status": "pending"},
            )
        )
        uow.session.flush()
        view = _approval_view(uow, row)
        uow.commit()
        return view


def grant_requesters(
    uow: UnitOfWork, study_id: int, user_id: int | None, roles: list[Role]
) -> set[int]:
    """Who asked for the user's grants of ``roles`` (the local operator not counted)."""
    if user_id is None:
        return set()
    return {
        g
        for g in uow.session.scalars(
            select(RoleGrantRow.granted_by_user_id).where(
                RoleGrantRow.study_id == study_id,
                RoleGrantRow.user_id == user_id,
                RoleGrantRow.role.in_([r.value for r in roles]),
            )
        )
        if g is not None
    }


def independent_grant(
    uow: UnitOfWork, study_id: int, user_id: int | None, roles: list[Role], people: set[int | None]
) -> bool:
    """Whether ``user_id`` holds one of ``roles`` in the study through a grant that none of
    ``people`` asked for or approved (the two-person rules need two people each granted by
    someone else)."""
    if user_id is None:
        return False
    people = {p for p in people if p is not None}
    grants = uow.session.scalars(
        select(RoleGrantRow).where(
            RoleGrantRow.study_id == study_id,
            RoleGrantRow.user_id == user_id,
            RoleGrantRow.role.in_([r.value for r in roles]),
        )
    ).all()
    return any(
        g.granted_by_user_id not in people and g.approved_by_user_id not in people for g in grants
    )


# --------------------------------------------------------------------------- resets


def _reset_mail(uow: UnitOfWork, ctx: ServiceContext, user: UserRow, by: str) -> str:
    token = secrets.token_urlsafe(32)
    now = ctx.now()
    expires = now + dt.timedelta(minutes=ctx.settings.reset_minutes)
    uow.session.add(
        PasswordResetRow(
            user_id=user.id,
            token_hash=_hash(token),
            created_at=now,
            expires_at=expires,
            requested_by=by[:80],
        )
    )
    url = link(ctx.settings, f"/account/reset/{token}")
    if user.email:
        enqueue(
            uow,
            ctx,
            to=user.email,
            subject="trialdesk: choose a new password",
            body=(
                f"Dear {user.full_name},\n\nA new password was asked for your trialdesk account "
                f"{user.username}. Choose it here before "
                f"{expires.isoformat(timespec='minutes')} UTC (the link works once):\n{url}\n\n"
                "If you did not ask for this, ignore this mail: your password stays as it is.\n"
            ),
            kind="password_reset",
        )
    uow.record(
        _user_entry(ctx, by, user, "password_reset_link", {"expires_at": expires.isoformat()})
    )
    return url


def request_password_reset(
    ctx: ServiceContext, identifier: str, *, client: str | None = None
) -> None:
    """Self-service 'forgot password': a link goes to the address on file when the name or
    address belongs to an active account. The answer is the same either way (nothing to
    enumerate), and requests back off per client and per name."""
    name = normalized_name(identifier)
    if not name:
        raise ValidationFailed("give your username or e-mail address", {"identifier": "required"})
    now = ctx.now()
    client = (client or "local")[:100]
    with ctx.uow() as uow:
        from trialdesk.store.identity import throttle_rows

        rows = throttle_rows(
            uow.session,
            [
                (f"reset-client:{client}", "reset", client, None),
                (f"reset-name:{name}", "reset", None, name),
            ],
        )
        window = dt.timedelta(minutes=ctx.settings.signin_window_minutes)
        limits = {
            f"reset-client:{client}": ctx.settings.lockout_attempts * 2,
            f"reset-name:{name}": 3,
        }
        over = False
        for key, row in rows.items():
            if row.last_failure_at is None or _utc(row.last_failure_at) < now - window:
                row.failures = 0
            row.failures += 1
            row.last_failure_at = now
            over = over or row.failures > limits[key]
        user = uow.session.scalars(
            select(UserRow).where(
                (UserRow.username == identifier.strip()) | (UserRow.email == name)
            )
        ).first()
        if not over and user is not None and user.active and user.email:
            _reset_mail(uow, ctx, user, user.username)
        uow.commit()


def _study_user(uow: UnitOfWork, study_id: int, username: str) -> UserRow:
    row = uow.session.scalars(
        select(UserRow).where(UserRow.username == username.strip())
    ).one_or_none()
    if row is not None:
        studies = set(
            uow.session.scalars(select(RoleGrantRow.study_id).where(RoleGrantRow.user_id == row.id))
        )
        if study_id in studies:
            return row
    raise NotFound(f"user {username.strip() or '?'} not found in this study")


def send_password_reset(ctx: ServiceContext, actor: Actor, study_id: int, username: str) -> str:
    """An administrator sends a user of the study a reset link, to the user's own address;
    the administrator never sees the link and the old password works until it is used."""
    require_admin(actor, study_id, "send a password reset link")
    with ctx.uow() as uow:
        user = _study_user(uow, study_id, username)
        if not user.email:
            raise PreconditionFailed(
                f"user {user.username} has no e-mail address on file; the local operator can "
                "record one ('trialdesk users set-email') or issue a link "
                "('trialdesk users reset-link')",
                reason="no-email",
            )
        _reset_mail(uow, ctx, user, actor.label)
        uow.commit()
        return user.email


def issue_reset_link(ctx: ServiceContext, actor: Actor, username: str) -> str:
    """The local operator's recovery: a reset link printed on the terminal (and mailed when
    the user has an address). Never available to a signed-in user."""
    if not actor.operator:
        raise PermissionDenied("reset links are issued by the local operator only")
    with ctx.uow() as uow:
        user = uow.session.scalars(
            select(UserRow).where(UserRow.username == username.strip())
        ).one_or_none()
        if user is None:
            raise NotFound(f"user {username.strip() or '?'} not found")
        url = _reset_mail(uow, ctx, user, actor.label)
        uow.commit()
        return url


def _open_reset(
    uow: UnitOfWork, token: str, now: dt.datetime, *, lock: bool = False
) -> PasswordResetRow:
    stmt = select(PasswordResetRow).where(PasswordResetRow.token_hash == _hash(token.strip()))
    if lock:
        stmt = stmt.with_for_update()
    row = uow.session.scalars(stmt).one_or_none()
    if row is None or row.used_at is not None or _utc(row.expires_at) <= now:
        raise NotFound(INVALID_LINK)
    return row


def reset_info(ctx: ServiceContext, token: str) -> str:
    """The username a valid reset link is for (shown to its holder)."""
    with ctx.uow(readonly=True) as uow:
        row = _open_reset(uow, token, ctx.now())
        user = uow.session.get(UserRow, row.user_id)
        assert user is not None
        return user.username


def complete_password_reset(ctx: ServiceContext, token: str, new_password: str) -> str:
    """Set the password its owner chose; ends every session and back-off of the account and
    spends every other open link of it. Returns the username."""
    now = ctx.now()
    password_hash = hash_password(ctx, new_password)
    with ctx.uow() as uow:
        row = _open_reset(uow, token, now, lock=True)
        user = uow.session.get(UserRow, row.user_id)
        assert user is not None
        if not user.active:
            raise NotFound(INVALID_LINK)
        user.password_hash = password_hash
        for other in uow.session.scalars(
            select(PasswordResetRow).where(
                PasswordResetRow.user_id == user.id, PasswordResetRow.used_at.is_(None)
            )
        ):
            other.used_at = now
        ended = 0
        for session_row in uow.session.scalars(
            select(AuthTokenRow).where(
                AuthTokenRow.user_id == user.id, AuthTokenRow.revoked_at.is_(None)
            )
        ):
            session_row.revoked_at = now
            ended += 1
        clear_throttle(uow, user.username)
        uow.record(
            _user_entry(
                ctx,
                user.username,
                user,
                "reset_password",
                {"password": "set by its owner", "sessions_ended": ended},
            )
        )
        uow.commit()
        return user.username


def change_password(
    ctx: ServiceContext, actor: Actor, old_password: str, new_password: str
) -> None:
    """A person changes their own password (re-entering the current one)."""
    if actor.user_id is None:
        raise PermissionDenied("the local operator has no password here")
    password_hash = hash_password(ctx, new_password)
    reauthenticate(ctx, actor, old_password, meaning="Change of my password")
    with ctx.uow() as uow:
        user = uow.session.get(UserRow, actor.user_id)
        assert user is not None
        user.password_hash = password_hash
        uow.record(_user_entry(ctx, actor.label, user, "change_password", {"password": "changed"}))
        uow.commit()


def set_email(ctx: ServiceContext, actor: Actor, username: str, email: str | None) -> str | None:
    """The local operator records a person's address (administrators cannot: whoever sets an
    address receives that account's reset links)."""
    if not actor.operator:
        raise PermissionDenied("e-mail addresses are recorded by the local operator only")
    address = check_address(email) if email else None
    with ctx.uow() as uow:
        user = uow.session.scalars(
            select(UserRow).where(UserRow.username == username.strip())
        ).one_or_none()
        if user is None:
            raise NotFound(f"user {username.strip() or '?'} not found")
        if address is not None:
            other = uow.session.scalars(
                select(UserRow.id).where(UserRow.email == address, UserRow.id != user.id)
            ).first()
            if other is not None:
                raise Conflict(f"another account already has the address {address}")
        old = user.email
        user.email = address
        uow.record(
            _user_entry(ctx, actor.label, user, "set_email", {"email": address}, old={"email": old})
        )
        uow.commit()
        return address


# --------------------------------------------------------------------------- TOTP


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str
    uri: str
    """``otpauth://`` URI for an authenticator app (shown once; no QR image is made)."""


@dataclass(frozen=True)
class TotpStatus:
    enrolled: bool
    required: bool
    enrolled_at: str | None


def _own(uow: UnitOfWork, actor: Actor) -> UserRow:
    if actor.user_id is None:
        raise PermissionDenied("the local operator has no second factor here")
    user = uow.session.get(UserRow, actor.user_id, with_for_update=True)
    if user is None or not user.active:
        raise PermissionDenied("this account is not active")
    return user


def totp_status(ctx: ServiceContext, actor: Actor) -> TotpStatus:
    from trialdesk.services.auth import totp_required_for

    with ctx.uow(readonly=True) as uow:
        if actor.user_id is None:
            raise PermissionDenied("the local operator has no second factor here")
        user = uow.session.get(UserRow, actor.user_id)
        assert user is not None
        return TotpStatus(
            enrolled=user.totp_enabled_at is not None,
            required=totp_required_for(ctx.settings, actor),
            enrolled_at=_iso(user.totp_enabled_at),
        )


def begin_totp(ctx: ServiceContext, actor: Actor) -> TotpEnrolment:
    """A new secret, stored encrypted and inactive until a code from it is confirmed."""
    with ctx.uow() as uow:
        user = _own(uow, actor)
        if user.totp_enabled_at is not None:
            raise Conflict("a second factor is already enrolled; disable it first to replace it")
        secret = pyotp.random_base32()
        user.totp_secret_enc = ctx.cipher.encrypt(secret)
        user.totp_last_step = None
        uow.commit()
    uri = pyotp.TOTP(secret).provisioning_uri(name=actor.username, issuer_name="trialdesk")
    return TotpEnrolment(secret=secret, uri=uri)


def confirm_totp(ctx: ServiceContext, actor: Actor, code: str) -> TotpStatus:
    """Turn the enrolled secret on once a current code from it is given."""
    now = ctx.now()
    with ctx.uow() as uow:
        user = _own(uow, actor)
        if user.totp_enabled_at is not None:
            raise Conflict("a second factor is already enrolled")
        if user.totp_secret_enc is None:
            raise PreconditionFailed("start the enrolment first", reason="totp-not-started")
        step = _totp_step(ctx.settings, ctx.cipher.decrypt(user.totp_secret_enc), code, None, now)
        if step is None:
            raise ValidationFailed(
                "the code does not match; check the app's clock", {"code": "wrong code"}
            )
        user.totp_enabled_at = now
        user.totp_last_step = step
        uow.record(_user_entry(ctx, actor.label, user, "enrol_totp", {"totp": "enrolled"}))
        uow.commit()
    return totp_status(ctx, actor)


def disable_totp(ctx: ServiceContext, actor: Actor, password: str, code: str) -> TotpStatus:
    """The owner turns the second factor off with the password and a current code; refused
    when the installation requires one for the owner's roles."""
    from trialdesk.services.auth import totp_required_for

    if totp_required_for(ctx.settings, actor):
        raise PreconditionFailed(
            "your roles need a second factor; the local operator can reset it if the device is "
            "lost ('trialdesk users reset-totp')",
            reason="totp-required",
        )
    reauthenticate(ctx, actor, password, meaning="Disabling my second factor")
    now = ctx.now()
    with ctx.uow() as uow:
        user = _own(uow, actor)
        if user.totp_enabled_at is None or user.totp_secret_enc is None:
            raise PreconditionFailed("no second factor is enrolled", reason="totp-not-enrolled")
        step = _totp_step(
            ctx.settings, ctx.cipher.decrypt(user.totp_secret_enc), code, user.totp_last_step, now
        )
        if step is None:
            raise ValidationFailed("the code does not match", {"code": "wrong code"})
        user.totp_enabled_at = None
        user.totp_secret_enc = None
        user.totp_last_step = None
        uow.record(_user_entry(ctx, actor.label, user, "disable_totp", {"totp": "disabled"}))
        uow.commit()
    return totp_status(ctx, actor)


def reset_totp(ctx: ServiceContext, actor: Actor, username: str) -> None:
    """The local operator's recovery for a lost device: the second factor is removed and
    the user's sessions end; the user enrols again at the next sign-in."""
    if not actor.operator:
        raise PermissionDenied("a second factor is reset by the local operator only")
    now = ctx.now()
    with ctx.uow() as uow:
        user = uow.session.scalars(
            select(UserRow).where(UserRow.username == username.strip())
        ).one_or_none()
        if user is None:
            raise NotFound(f"user {username.strip() or '?'} not found")
        user.totp_enabled_at = None
        user.totp_secret_enc = None
        user.totp_last_step = None
        for session_row in uow.session.scalars(
            select(AuthTokenRow).where(
                AuthTokenRow.user_id == user.id, AuthTokenRow.revoked_at.is_(None)
            )
        ):
            session_row.revoked_at = now
        uow.record(_user_entry(ctx, actor.label, user, "reset_totp", {"totp": "reset"}))
        uow.commit()
