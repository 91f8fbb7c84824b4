"""Account pages (issue 12): invitation and reset links, 'forgot password', the person's own
password and second factor, and the approval of access that can reach an arm.

Link pages work without a session: the link is the proof of owning the address. Their forms
carry a double-submit token like the sign-in form. No page ever shows a link token that was
not in its own address; links reach people by mail, or through the local operator's CLI.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from trialdesk.domain.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.http_status import status_of
from trialdesk.services import accounts
from trialdesk.services.accounts import APPROVERS
from trialdesk.services.sessions import upgrade_scope
from trialdesk.web.forms import field_text
from trialdesk.web.render import render
from trialdesk.web.session import (
    SECURE_COOKIES,
    Web,
    csrf_ok,
    ctx_of,
    post_form,
    redirect,
    web_session,
    web_session_any,
)

router = APIRouter()
FORM_COOKIE = "trialdesk_account_form"


def _link_page(request: Request, status: int = 200, **values: Any) -> HTMLResponse:
    """A page behind a link, with a fresh double-submit token for its form."""
    token = secrets.token_urlsafe(24)
    response = render(request, "account_link.html", None, status=status, form_token=token, **values)
    response.set_cookie(
        FORM_COOKIE, token, httponly=True, samesite="strict", secure=SECURE_COOKIES, path="/account"
    )
    return response


async def _link_form(request: Request) -> FormData | None:
    form = await request.form()
    if not csrf_ok(request.cookies.get(FORM_COOKIE, ""), form):
        return None
    return form


def _passwords(form: FormData) -> str:
    password = form.get("password")
    again = form.get("password2")
    if not isinstance(password, str) or not password:
        raise ValidationFailed("a password is required", {"password": "required"})
    if again is not None and again != password:
        raise ValidationFailed("the two passwords differ", {"password2": "differs"})
    return password


# --------------------------------------------------------------------------- invitations


def _invitation_values(info: accounts.InvitationLink, token: str) -> dict[str, Any]:
    where = f" at site {info.site}" if info.site else ""
    if info.existing_account:
        intro = (
            f"{info.full_name}, you are invited to study {info.study} ({info.study_name}) as "
            f"{info.role}{where}. Your address already has an account: sign in with its "
            "password to add the role to it."
        )
        label, button = "Your current password", "Accept the invitation"
    else:
        intro = (
            f"{info.full_name}, you are invited to study {info.study} ({info.study_name}) as "
            f"{info.role}{where}. Your username will be {info.email}; choose your password "
            "(at least 8 characters). Nobody else ever knows it."
        )
        label, button = "Choose a password", "Create my account"
    return {
        "heading": "Invitation",
        "intro": intro,
        "password_label": label,
        "button": button,
        "existing": info.existing_account,
        "action": f"/account/invitation/{token}",
    }


@router.get("/account/invitation/{token}", include_in_schema=False)
def invitation_page(request: Request, token: str) -> Response:
    try:
        info = accounts.invitation_info(ctx_of(request), token)
    except NotFound as exc:
        return _link_page(request, 404, heading="Invitation", invalid=exc.message)
    return _link_page(request, **_invitation_values(info, token))


@router.post("/account/invitation/{token}", include_in_schema=False)
async def invitation_accept(request: Request, token: str) -> Response:
    ctx = ctx_of(request)
    form = await _link_form(request)
    try:
        info = accounts.invitation_info(ctx, token)
    except NotFound as exc:
        return _link_page(request, 404, heading="Invitation", invalid=exc.message)
    values = _invitation_values(info, token)
    if form is None:
        return _link_page(request, 403, message="the form expired; please try again", **values)
    try:
        password = form.get("password") if info.existing_account else _passwords(form)
        done = accounts.accept_invitation(
            ctx,
            token,
            password if isinstance(password, str) else "",
            client=request.client.host if request.client else "unknown",
        )
    except (ValidationFailed, AuthenticationFailed, Conflict) as exc:
        return _link_page(request, status_of(exc), message=exc.message, **values)
    except NotFound as exc:
        return _link_page(request, 404, heading="Invitation", invalid=exc.message)
    what = "Your account was created" if done.new_account else "The role was added to your account"
    return _link_page(
        request,
        heading="Invitation",
        done=f"{what}: {done.role} in study {done.study}. Sign in as {done.username}.",
    )


# --------------------------------------------------------------------------- resets


@router.get("/account/forgot", include_in_schema=False)
def forgot_page(request: Request) -> Response:
    return _link_page(
        request,
        heading="Forgot your password?",
        intro="A link to choose a new password goes to the address on file for the account.",
        ask_identifier=True,
        button="Send me a link",
        action="/account/forgot",
    )


@router.post("/account/forgot", include_in_schema=False)
async def forgot(request: Request) -> Response:
    form = await _link_form(request)
    if form is None:
        return redirect("/account/forgot")
    try:
        accounts.request_password_reset(
            ctx_of(request),
            field_text(form, "identifier"),
            client=request.client.host if request.client else "unknown",
        )
    except ValidationFailed as exc:
        return _link_page(
            request,
            422,
            heading="Forgot your password?",
            message=exc.message,
            ask_identifier=True,
            button="Send me a link",
            action="/account/forgot",
        )
    return _link_page(
        request,
        heading="Forgot your password?",
        done="If the name or address belongs to an account with an address on file, a link "
        "was sent to that address. It works once and expires soon.",
    )


def _reset_values(username: str, token: str) -> dict[str, Any]:
    return {
        "heading": "Choose a new password",
        "username": username,
        "password_label": "New password (at least 8 characters)",
        "button": "Set my password",
        "existing": False,
        "action": f"/account/reset/{token}",
    }


@router.get("/account/reset/{token}", include_in_schema=False)
def reset_page(request: Request, token: str) -> Response:
    try:
        username = accounts.reset_info(ctx_of(request), token)
    except NotFound as exc:
        return _link_page(request, 404, heading="Choose a new password", invalid=exc.message)
    return _link_page(request, **_reset_values(username, token))


@router.post("/account/reset/{token}", include_in_schema=False)
async def reset(request: Request, token: str) -> Response:
    ctx = ctx_of(request)
    form = await _link_form(request)
    try:
        username = accounts.reset_info(ctx, token)
    except NotFound as exc:
        return _link_page(request, 404, heading="Choose a new password", invalid=exc.message)
    values = _reset_values(username, token)
    if form is None:
        return _link_page(request, 403, message="the form expired; please try again", **values)
    try:
        accounts.complete_password_reset(ctx, token, _passwords(form))
    except ValidationFailed as exc:
        return _link_page(request, 422, message=exc.message, **values)
    except NotFound as exc:
        return _link_page(request, 404, heading="Choose a new password", invalid=exc.message)
    return _link_page(
        request,
        heading="Choose a new password",
        done=f"The password of {username} is set; every earlier session has ended.",
    )


# --------------------------------------------------------------------------- my account


def _account_page(
    request: Request,
    web: Web,
    *,
    enrolment: accounts.TotpEnrolment | None = None,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "account.html",
        web,
        status=status,
        totp=accounts.totp_status(web.ctx, web.actor),
        enrolment=enrolment,
        full=web.scope == "full",
        message=message,
    )


@router.get("/account", include_in_schema=False)
def account(request: Request) -> Response:
    return _account_page(request, web_session_any(request))


@router.get("/account/totp", include_in_schema=False)
def account_totp(request: Request) -> Response:
    return _account_page(request, web_session_any(request))


ACCOUNT_REFUSALS = (ValidationFailed, Conflict, PreconditionFailed, AuthenticationFailed)


@router.post("/account/totp/begin", include_in_schema=False)
async def totp_begin(request: Request) -> Response:
    web, _form = await post_form(request, any_scope=True)
    try:
        enrolment = accounts.begin_totp(web.ctx, web.actor)
    except ACCOUNT_REFUSALS as exc:
        return _account_page(request, web, message=exc.message, status=status_of(exc))
    return _account_page(request, web, enrolment=enrolment)


@router.post("/account/totp/confirm", include_in_schema=False)
async def totp_confirm(request: Request) -> Response:
    web, form = await post_form(request, any_scope=True)
    try:
        accounts.confirm_totp(web.ctx, web.actor, field_text(form, "code"))
    except ACCOUNT_REFUSALS as exc:
        return _account_page(request, web, message=exc.message, status=status_of(exc))
    upgrade_scope(web.ctx, web.token, "web")
    return redirect("/account", flash="Second factor enrolled: sign-ins now ask for a code.")


@router.post("/account/totp/disable", include_in_schema=False)
async def totp_disable(request: Request) -> Response:
    web, form = await post_form(request)
    password = form.get("password")
    try:
        accounts.disable_totp(
            web.ctx,
            web.actor,
            password if isinstance(password, str) else "",
            field_text(form, "code"),
        )
    except ACCOUNT_REFUSALS as exc:
        return _account_page(request, web, message=exc.message, status=status_of(exc))
    return redirect("/account", flash="Second factor removed.")


@router.post("/account/password", include_in_schema=False)
async def change_password(request: Request) -> Response:
    web, form = await post_form(request)
    old, new = form.get("old_password"), form.get("new_password")
    try:
        accounts.change_password(
            web.ctx,
            web.actor,
            old if isinstance(old, str) else "",
            new if isinstance(new, str) else "",
        )
    except ACCOUNT_REFUSALS as exc:
        return _account_page(request, web, message=exc.message, status=status_of(exc))
    return _account_page(request, web, message="Your password was changed.")


# --------------------------------------------------------------------------- approvals


def _approvals_page(
    request: Request, web: Web, message: str | None = None, status: int = 200
) -> HTMLResponse:
    approvals = accounts.list_approvals(web.ctx, web.actor, web.study_id)
    return render(
        request,
        "approvals.html",
        web,
        status=status,
        approvals=approvals,
        may_decide=bool(web.actor.roles(web.study_id) & APPROVERS),
        message=message,
    )


@router.get("/account/approvals", include_in_schema=False)
def approvals(request: Request) -> Response:
    return _approvals_page(request, web_session(request))


@router.post("/account/approvals/{approval_id}/{decision}", include_in_schema=False)
async def decide(request: Request, approval_id: int, decision: str) -> Response:
    web, form = await post_form(request)
    if decision not in ("approve", "reject"):
        raise NotFound(f"no such decision {decision!r}; approve or reject")
    password = form.get("password")
    try:
        accounts.decide_approval(
            web.ctx,
            web.actor,
            web.study_id,
            approval_id,
            approve=decision == "approve",
            password=password if isinstance(password, str) else "",
            reason=field_text(form, "reason") or None,
        )
    except (ValidationFailed, PreconditionFailed, AuthenticationFailed) as exc:
        return _approvals_page(request, web, message=exc.message, status=status_of(exc))
    return _approvals_page(request, web, message=f"Request {approval_id}: {decision}d.")
