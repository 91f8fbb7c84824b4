"""The browser session of the web pages: cookies, the signed-in :class:`Web`, CSRF checks and
the one handler that sends signed-out requests to the sign-in page. Every page module uses
these; none decides a role or a blinding (the services do)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from trialdesk.domain.errors import AuthenticationFailed, PermissionDenied
from trialdesk.services.access import Actor
from trialdesk.services.context import ServiceContext
from trialdesk.services.sessions import resolve_token, set_session_study
from trialdesk.services.setup import list_studies

SESSION_COOKIE = "trialdesk_session"
SIGNIN_COOKIE = "trialdesk_signin"
SECURE_COOKIES = True
"""Always Secure: browsers keep a Secure cookie from http://localhost and http://127.0.0.1
(checked with Chromium 156), and anywhere else the session must not travel in clear text."""


def ctx_of(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.runtime.context
    return ctx


@dataclass(frozen=True)
class Web:
    """A signed-in browser session: who, in which study, with which CSRF token."""

    ctx: ServiceContext
    actor: Actor
    study_id: int
    csrf: str
    token: str
    scope: str = "full"


class SignedOut(Exception):
    """No live web session. Handlers let it propagate; :func:`signed_out` (installed by
    create_app) answers every page with the redirect to the sign-in page."""


class MustEnrol(Exception):
    """A session good for second-factor enrolment only: every other page redirects to the
    enrolment page (installed with the signed-out handler)."""


def web_session(request: Request) -> Web:
    web = web_session_any(request)
    if web.scope != "full":
        raise MustEnrol
    return web


def web_session_any(request: Request) -> Web:
    """The session, also one good for enrolling a second factor only."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignedOut
    ctx = ctx_of(request)
    try:
        found = resolve_token(ctx, token, kind="web")
    except AuthenticationFailed:
        raise SignedOut from None
    study_id = found.study_id
    if study_id is None or not found.actor.roles(study_id):
        # first page of the session, or the role in the session's study was revoked since:
        # the first study the user still holds a role in (PROT-1)
        studies = list_studies(ctx, found.actor)
        if not studies:
            raise PermissionDenied(f"{found.actor.username} holds no role in any study")
        study_id = studies[0].id
        set_session_study(ctx, token, study_id)
    return Web(ctx, found.actor, study_id, found.csrf_token or "", token, found.scope)


FLASH_COOKIE = "trialdesk_flash"
"""A one-shot success message carried across the redirect after a POST (issue 14): set by
:func:`redirect`, shown and cleared by the next rendered page."""


def redirect(url: str, *, flash: str | None = None) -> RedirectResponse:
    """See other ``url``; ``flash`` is the success message the next page shows once."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(
            FLASH_COOKIE,
            quote(flash[:300], safe=" "),
            max_age=120,
            httponly=True,
            secure=SECURE_COOKIES,
            samesite="lax",
        )
    return response


def to_signin(request: Request) -> RedirectResponse:
    """Back to the page asked for after sign-in, query string included (``?visit=M1``)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect("/signin?next=" + quote(target, safe="/"))


def install_signed_out_handler(app: FastAPI) -> None:
    """Pages raise ``SignedOut`` from :func:`_session`; one handler redirects them all."""

    async def signed_out(request: Request, _exc: Exception) -> Response:
        return to_signin(request)

    async def must_enrol(_request: Request, _exc: Exception) -> Response:
        return redirect("/account/totp")

    app.add_exception_handler(SignedOut, signed_out)
    app.add_exception_handler(MustEnrol, must_enrol)


def csrf_ok(expected: str, form: FormData) -> bool:
    given = form.get("csrf_token")
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(given, expected)


async def post_form(request: Request, *, any_scope: bool = False) -> tuple[Web, FormData]:
    """The session and form of a POST, refused (nothing done) without the session's token."""
    web = web_session_any(request) if any_scope else web_session(request)
    form = await request.form()
    if not csrf_ok(web.csrf, form):
        raise PermissionDenied("the form's security token is missing or wrong; reload the page")
    return web, form
