"""Sign-in, sign-out and the study switcher.

Pages decide nothing: every role, site, state and blinding decision is the service's; a page
renders what a service returns and shows its refusal."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trialdesk.domain.errors import (
    NotFound,
    TrialError,
)
from trialdesk.services.sessions import (
    issue_token,
    revoke_token,
    set_session_study,
)
from trialdesk.services.setup import list_studies
from trialdesk.web.forms import (
    field_text,
)
from trialdesk.web.render import render
from trialdesk.web.session import (
    SECURE_COOKIES,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    SignedOut,
    csrf_ok,
    ctx_of,
    post_form,
    redirect,
    web_session,
)

router = APIRouter()


# --------------------------------------------------------------------------- sign-in


def _signin_page(
    request: Request, message: str | None = None, status: int = 200, username: str = ""
) -> HTMLResponse:
    pre = secrets.token_urlsafe(24)
    response = render(
        request,
        "signin.html",
        None,
        status=status,
        message=message,
        signin_token=pre,
        username=username,
        next=request.query_params.get("next", ""),
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        pre,
        httponly=True,
        samesite="strict",
        secure=SECURE_COOKIES,
        path="/signin",
    )
    return response


@router.get("/", include_in_schema=False)
def root(request: Request) -> Response:
    try:
        web_session(request)
    except SignedOut:
        return redirect("/signin")
    return redirect("/home")


@router.get("/signin", include_in_schema=False)
def signin_form(request: Request) -> Response:
    return _signin_page(request)


@router.post("/signin", include_in_schema=False)
async def signin(request: Request) -> Response:
    form = await request.form()
    username = field_text(form, "username")
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not csrf_ok(expected, form):
        return _signin_page(
            request, "the sign-in form expired; please sign in again", 403, username
        )
    password = form.get("password")
    try:
        issued = issue_token(
            ctx_of(request),
            username,
            password if isinstance(password, str) else "",
            kind="web",
            client=request.client.host if request.client else "unknown",
            totp=field_text(form, "totp") or None,
        )
    except TrialError as exc:  # one message for every refusal (the service's)
        return _signin_page(request, exc.message, 401, username)
    target = field_text(form, "next")
    if not target.startswith("/") or target[1:2] in ("/", "\\"):  # no off-site redirect
        target = "/home"
    if issued.scope != "full":
        target = "/account/totp"
    response = redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        httponly=True,
        samesite="strict",
        secure=SECURE_COOKIES,
        path="/",
        max_age=int((issued.expires_at - ctx_of(request).now()).total_seconds()),
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout", include_in_schema=False)
async def signout(request: Request) -> Response:
    try:
        web, _form = await post_form(request)
    except SignedOut:
        return redirect("/signin")
    revoke_token(web.ctx, web.token, kind="web")
    response = redirect("/signin")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/study", include_in_schema=False)
async def switch_study(request: Request) -> Response:
    """The study switcher: work in another study the user holds a role in (PROT-1). Any other
    code is 'not found', the same for a study that exists and one that does not, and the
    session keeps its study."""
    web, form = await post_form(request)
    code = field_text(form, "study")
    target = next((s for s in list_studies(web.ctx, web.actor) if s.code == code), None)
    if target is None:
        raise NotFound(f"study {code or '?'} not found")
    set_session_study(web.ctx, web.token, target.id)
    return redirect("/home")


@router.get("/static/site.css", include_in_schema=False)
def site_css() -> Response:
    return Response(
        (Path(__file__).parent / "static" / "site.css").read_bytes(), media_type="text/css"
    )
