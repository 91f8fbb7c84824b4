"""Administration: users (invitations, roles, resets) and sites.

Pages decide nothing: every role, site, state and blinding decision is the service's; a page
renders what a service returns and shows its refusal."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trialdesk.domain.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.roles import Role
from trialdesk.http_status import status_of
from trialdesk.services import (
    accounts,
    admin,
)
from trialdesk.services.study_info import list_sites
from trialdesk.web.forms import (
    field_text,
)
from trialdesk.web.listing import choice, pager, paging, text
from trialdesk.web.render import render
from trialdesk.web.session import (
    Web,
    post_form,
    redirect,
    web_session,
)

router = APIRouter()


# --------------------------------------------------------------------------- administration

REFUSED_CHANGE = (ValidationFailed, Conflict, NotFound, PreconditionFailed)
"""Refusals of an administration form, shown on its page; a permission refusal is a 403 page."""


def _users_page(
    request: Request, web: Web, message: str | None = None, status: int = 200
) -> HTMLResponse:
    # issue 14: one page of users, filtered and paged by the service
    role = choice(request, "role", ("", *(r.value for r in Role)), "")
    user_status = choice(request, "status", admin.USER_STATUSES, "")
    site = text(request, "site", 20)
    search = text(request, "q", 80)
    at = paging(request, default=25)
    found = admin.user_page(
        web.ctx,
        web.actor,
        web.study_id,
        search=search or None,
        role=role or None,
        site=site or None,
        status=user_status,
        offset=at.offset,
        limit=at.per_page,
    )
    filters = {"q": search, "role": role, "site": site, "status": user_status}
    return render(
        request,
        "admin_users.html",
        web,
        status=status,
        users=found.items,
        filters=filters,
        p=pager("/admin/users", filters, at, found.total),
        invitations=accounts.list_invitations(web.ctx, web.actor, web.study_id),
        approvals=accounts.list_approvals(web.ctx, web.actor, web.study_id),
        all_roles=[r.value for r in Role],
        needs_approval=sorted(r.value for r in accounts.NEEDS_APPROVAL),
        sites=[s.code for s in list_sites(web.ctx, web.actor, web.study_id)],
        message=message,
    )


@router.get("/admin/users", include_in_schema=False)
def admin_users(request: Request) -> Response:
    web = web_session(request)
    return _users_page(request, web)


@router.post("/admin/invitations", include_in_schema=False)
async def admin_invite(request: Request) -> Response:
    """Invite by address; the page says the same whether or not the address has an account."""
    web, form = await post_form(request)
    try:
        view = accounts.invite(
            web.ctx,
            web.actor,
            web.study_id,
            email=field_text(form, "email"),
            full_name=field_text(form, "full_name"),
            role=field_text(form, "role"),
            site=field_text(form, "site") or None,
        )
    except REFUSED_CHANGE as exc:
        return _users_page(request, web, message=exc.message, status=status_of(exc))
    done = (
        "awaits an unblinded member's approval before the link is sent"
        if view.status == "awaiting_approval"
        else "was sent"
    )
    return _users_page(request, web, message=f"The invitation to {view.email} {done}.")


@router.post("/admin/invitations/{invitation_id}/cancel", include_in_schema=False)
async def admin_cancel_invitation(request: Request, invitation_id: int) -> Response:
    web, _form = await post_form(request)
    try:
        accounts.cancel_invitation(web.ctx, web.actor, web.study_id, invitation_id)
    except REFUSED_CHANGE as exc:
        return _users_page(request, web, message=exc.message, status=status_of(exc))
    return redirect("/admin/users#invitations", flash="Invitation cancelled.")


USER_ACTIONS = ("deactivate", "reactivate", "reset-link", "clear-backoff", "grant", "revoke")


@router.post("/admin/users/{username}/{change}", include_in_schema=False)
async def admin_change_user(request: Request, username: str, change: str) -> Response:
    web, form = await post_form(request)
    args = (web.ctx, web.actor, web.study_id, username)
    message = None
    try:
        if change == "deactivate":
            admin.deactivate_user(*args)
        elif change == "reactivate":
            admin.reactivate_user(*args)
        elif change == "reset-link":
            accounts.send_password_reset(*args)
            message = f"A reset link was mailed to {username}'s own address."
        elif change == "clear-backoff":
            admin.clear_signin_backoff(*args)
        elif change == "grant":
            info = admin.grant_role(
                *args, field_text(form, "role"), field_text(form, "site") or None
            )
            if info.pending:
                message = "The role awaits an unblinded member's e-signed approval."
        elif change == "revoke":
            admin.revoke_role(*args, field_text(form, "role"), field_text(form, "site") or None)
        else:
            raise NotFound(f"no such change {change!r}; one of {', '.join(USER_ACTIONS)}")
    except REFUSED_CHANGE as exc:
        return _users_page(request, web, message=exc.message, status=status_of(exc))
    if message:
        return _users_page(request, web, message=message)
    return redirect(
        f"/admin/users#user-{quote(username)}",
        flash=f"{username}: {change.replace('-', ' ')} done.",
    )


def _sites_page(
    request: Request, web: Web, message: str | None = None, status: int = 200
) -> HTMLResponse:
    # the administrator check first: list_sites alone is open to every study role
    admin.list_users(web.ctx, web.actor, web.study_id)
    sites = list_sites(web.ctx, web.actor, web.study_id)
    return render(request, "admin_sites.html", web, status=status, sites=sites, message=message)


@router.get("/admin/sites", include_in_schema=False)
def admin_sites(request: Request) -> Response:
    web = web_session(request)
    return _sites_page(request, web)


@router.post("/admin/sites/{code}/{change}", include_in_schema=False)
async def admin_change_site(request: Request, code: str, change: str) -> Response:
    web, _form = await post_form(request)
    try:
        if change == "activate":
            admin.activate_site(web.ctx, web.actor, web.study_id, code)
        elif change == "deactivate":
            admin.deactivate_site(web.ctx, web.actor, web.study_id, code)
        else:
            raise NotFound(f"no such change {change!r}; activate or deactivate")
    except REFUSED_CHANGE as exc:
        return _sites_page(request, web, message=exc.message, status=status_of(exc))
    return redirect(f"/admin/sites#site-{quote(code)}", flash=f"Site {code}: {change}d.")
