"""Accounts, administration and approvals (issue 12): invitations, grants that wait for a
second person's e-signed approval, reset links, the caller's own password and second factor.
Each route calls one service; the services decide who may do what."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from trialdesk.api.deps import (
    ActorDep,
    AnySessionDep,
    ClientDep,
    CtxDep,
    StudyDep,
    TokenDep,
    WindowDep,
)
from trialdesk.api.schemas import Page, paginate, plain
from trialdesk.api.schemas_accounts import (
    AcceptedPublic,
    AcceptIn,
    ApprovalPublic,
    ApproveIn,
    ChangePasswordIn,
    CodeIn,
    DisableTotpIn,
    ForgotIn,
    GrantIn,
    InvitationLinkPublic,
    InvitationPublic,
    InviteIn,
    MePublic,
    NewPasswordIn,
    RejectIn,
    ResetSentPublic,
    TotpEnrolmentPublic,
    TotpStatusPublic,
    UserPublic,
)
from trialdesk.services import accounts, admin
from trialdesk.services.auth import totp_required_for
from trialdesk.services.sessions import upgrade_scope

router = APIRouter()

Username = Annotated[str, Path(min_length=1, max_length=254)]
LinkToken = Annotated[str, Path(min_length=1, max_length=200)]
Id = Annotated[int, Path(ge=1, le=2**62)]

# --- the caller ---------------------------------------------------------------------------


@router.get("/me", response_model=MePublic, tags=["account"])
def me(ctx: CtxDep, session: AnySessionDep) -> MePublic:
    """Who the token belongs to, and whether a second factor is enrolled or required."""
    status = accounts.totp_status(ctx, session.actor)
    return MePublic(
        username=session.actor.username,
        full_name=session.actor.full_name,
        scope=session.scope,
        totp_enrolled=status.enrolled,
        totp_required=totp_required_for(ctx.settings, session.actor),
    )


@router.post("/me/password", status_code=204, response_class=Response, tags=["account"])
def change_password(ctx: CtxDep, actor: ActorDep, body: ChangePasswordIn) -> Response:
    """Change your own password (the current one is re-entered)."""
    accounts.change_password(ctx, actor, body.old_password, body.new_password)
    return Response(status_code=204)


@router.get("/me/totp", response_model=TotpStatusPublic, tags=["account"])
def totp_status(ctx: CtxDep, session: AnySessionDep) -> TotpStatusPublic:
    return TotpStatusPublic.model_validate(plain(accounts.totp_status(ctx, session.actor)))


@router.post("/me/totp", response_model=TotpEnrolmentPublic, status_code=201, tags=["account"])
def begin_totp(ctx: CtxDep, session: AnySessionDep) -> TotpEnrolmentPublic:
    """Start enrolment: the secret and its otpauth:// URI, shown this once."""
    return TotpEnrolmentPublic.model_validate(plain(accounts.begin_totp(ctx, session.actor)))


@router.post("/me/totp/confirm", response_model=TotpStatusPublic, tags=["account"])
def confirm_totp(
    ctx: CtxDep, session: AnySessionDep, token: TokenDep, body: CodeIn
) -> TotpStatusPublic:
    """Turn the second factor on with a current code; an enrolment-only token becomes full."""
    status = accounts.confirm_totp(ctx, session.actor, body.code)
    upgrade_scope(ctx, token, "api")
    return TotpStatusPublic.model_validate(plain(status))


@router.post("/me/totp/disable", response_model=TotpStatusPublic, tags=["account"])
def disable_totp(ctx: CtxDep, actor: ActorDep, body: DisableTotpIn) -> TotpStatusPublic:
    status = accounts.disable_totp(ctx, actor, body.password, body.code)
    return TotpStatusPublic.model_validate(plain(status))


# --- links (no token: the link is the proof) ---------------------------------------------


@router.get("/account/invitations/{link}", response_model=InvitationLinkPublic, tags=["account"])
def invitation(ctx: CtxDep, link: LinkToken) -> InvitationLinkPublic:
    """What an invitation link offers (for its holder)."""
    return InvitationLinkPublic.model_validate(plain(accounts.invitation_info(ctx, link)))


@router.post("/account/invitations/{link}/accept", response_model=AcceptedPublic, tags=["account"])
def accept_invitation(
    ctx: CtxDep, link: LinkToken, body: AcceptIn, client: ClientDep
) -> AcceptedPublic:
    """Accept: a new password you choose, or your current one for an existing account."""
    done = accounts.accept_invitation(ctx, link, body.password, client=client)
    return AcceptedPublic.model_validate(plain(done))


@router.post("/account/password-reset", status_code=202, response_class=Response, tags=["account"])
def forgot_password(ctx: CtxDep, body: ForgotIn, client: ClientDep) -> Response:
    """Ask for a reset link; the answer is the same whether or not the account exists."""
    accounts.request_password_reset(ctx, body.identifier, client=client)
    return Response(status_code=202)


@router.post(
    "/account/password-reset/{link}", status_code=204, response_class=Response, tags=["account"]
)
def complete_reset(ctx: CtxDep, link: LinkToken, body: NewPasswordIn) -> Response:
    """Choose the new password with a reset link (single use)."""
    accounts.complete_password_reset(ctx, link, body.password)
    return Response(status_code=204)


# --- administration ------------------------------------------------------------------------

study_router = APIRouter(prefix="/studies/{study}", tags=["administration"])


def _user(info: admin.UserInfo) -> UserPublic:
    return UserPublic.model_validate(plain(info))


@study_router.get("/users", response_model=Page[UserPublic])
def users(ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep) -> dict[str, Any]:
    """The study's users, their roles, pending roles and sign-in back-off (administrator)."""
    items = [plain(u) for u in admin.list_users(ctx, actor, study.id)]
    return paginate(items, window.offset, window.limit)


@study_router.post("/invitations", response_model=InvitationPublic, status_code=201)
def invite(ctx: CtxDep, actor: ActorDep, study: StudyDep, body: InviteIn) -> InvitationPublic:
    """Invite a person by address. The same answer whether or not the address has an account;
    a role that can reach an arm waits for an unblinded member's approval."""
    view = accounts.invite(
        ctx,
        actor,
        study.id,
        email=body.email,
        full_name=body.full_name,
        role=body.role,
        site=body.site,
    )
    return InvitationPublic.model_validate(plain(view))


@study_router.get("/invitations", response_model=Page[InvitationPublic])
def invitations(ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep) -> dict[str, Any]:
    items = [plain(i) for i in accounts.list_invitations(ctx, actor, study.id)]
    return paginate(items, window.offset, window.limit)


@study_router.post("/invitations/{invitation_id}/cancel", response_model=InvitationPublic)
def cancel_invitation(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, invitation_id: Id
) -> InvitationPublic:
    view = accounts.cancel_invitation(ctx, actor, study.id, invitation_id)
    return InvitationPublic.model_validate(plain(view))


@study_router.post("/users/{username}/grants", response_model=UserPublic)
def grant(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, username: Username, body: GrantIn
) -> UserPublic:
    """Give a role; one that can reach an arm is listed under 'pending' until approved."""
    return _user(admin.grant_role(ctx, actor, study.id, username, body.role, body.site))


@study_router.post("/users/{username}/grants/revoke", response_model=UserPublic)
def revoke(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, username: Username, body: GrantIn
) -> UserPublic:
    return _user(admin.revoke_role(ctx, actor, study.id, username, body.role, body.site))


@study_router.post("/users/{username}/deactivate", response_model=UserPublic)
def deactivate(ctx: CtxDep, actor: ActorDep, study: StudyDep, username: Username) -> UserPublic:
    return _user(admin.deactivate_user(ctx, actor, study.id, username))


@study_router.post("/users/{username}/reactivate", response_model=UserPublic)
def reactivate(ctx: CtxDep, actor: ActorDep, study: StudyDep, username: Username) -> UserPublic:
    return _user(admin.reactivate_user(ctx, actor, study.id, username))


@study_router.post("/users/{username}/password-reset", response_model=ResetSentPublic)
def send_reset(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, username: Username
) -> ResetSentPublic:
    """Mail the user a reset link to the user's own address (never shown here)."""
    return ResetSentPublic(sent_to=accounts.send_password_reset(ctx, actor, study.id, username))


@study_router.post("/users/{username}/clear-backoff", response_model=UserPublic)
def clear_backoff(ctx: CtxDep, actor: ActorDep, study: StudyDep, username: Username) -> UserPublic:
    """Let a user sign in at once after others' failures made the name back off."""
    return _user(admin.clear_signin_backoff(ctx, actor, study.id, username))


# --- approvals -----------------------------------------------------------------------------


@study_router.get("/approvals", response_model=Page[ApprovalPublic], tags=["approvals"])
def approvals(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    window: WindowDep,
    all_requests: Annotated[bool, Query(alias="all")] = False,
) -> dict[str, Any]:
    """Requests for roles that can reach an arm (pending only unless ``all``)."""
    items = accounts.list_approvals(ctx, actor, study.id, pending_only=not all_requests)
    return paginate([plain(a) for a in items], window.offset, window.limit)


@study_router.post(
    "/approvals/{approval_id}/approve", response_model=ApprovalPublic, tags=["approvals"]
)
def approve(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, approval_id: Id, body: ApproveIn
) -> ApprovalPublic:
    """E-signed approval (SIG-1) by an unblinded member, not the requester nor the grantee."""
    view = accounts.decide_approval(
        ctx, actor, study.id, approval_id, approve=True, password=body.password
    )
    return ApprovalPublic.model_validate(plain(view))


@study_router.post(
    "/approvals/{approval_id}/reject", response_model=ApprovalPublic, tags=["approvals"]
)
def reject(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, approval_id: Id, body: RejectIn
) -> ApprovalPublic:
    view = accounts.decide_approval(
        ctx,
        actor,
        study.id,
        approval_id,
        approve=False,
        password=body.password,
        reason=body.reason,
    )
    return ApprovalPublic.model_validate(plain(view))


router.include_router(study_router)
