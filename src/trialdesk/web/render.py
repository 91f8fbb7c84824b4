"""Rendering of the web pages: the templates, the values every page shows (user, roles,
study switcher, time zone) and the page a service's refusal becomes."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from trialdesk.domain.errors import AuthenticationFailed, TrialError
from trialdesk.http_status import status_of
from trialdesk.services.setup import list_studies
from trialdesk.web.session import (
    FLASH_COOKIE,
    SECURE_COOKIES,
    SignedOut,
    Web,
    to_signin,
    web_session,
)
from trialdesk.web.timezones import page_time_values

HERE = Path(__file__).parent


@lru_cache(maxsize=1)
def jinja_env() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def study_values(web: Web | None) -> dict[str, Any]:
    """The header's study name and, for a user of several studies, the switcher (PROT-1):
    only studies the user holds a role in."""
    if web is None:
        return {"studies": [], "study": None}
    studies = list_studies(web.ctx, web.actor)
    return {"studies": studies, "study": next((s for s in studies if s.id == web.study_id), None)}


def render(
    request: Request, template: str, web: Web | None, status: int = 200, **values: Any
) -> HTMLResponse:
    flash = unquote(request.cookies.get(FLASH_COOKIE, "")) or None
    html = (
        jinja_env()
        .get_template(template)
        .render(
            request=request,
            user=web.actor if web else None,
            roles=sorted(web.actor.roles(web.study_id)) if web else [],
            csrf=web.csrf if web else "",
            **study_values(web),
            **page_time_values(web.ctx, web.actor, web.study_id) if web else {},
            flash=flash,
            **values,
        )
    )
    response = HTMLResponse(html, status_code=status)
    if flash:
        response.delete_cookie(FLASH_COOKIE, secure=SECURE_COOKIES, httponly=True)
    return response


def error_page(request: Request, exc: TrialError) -> Response:
    """A refusal from a service, as a page with its message (and 404 for 'not found')."""
    if isinstance(exc, AuthenticationFailed) and request.url.path != "/signin":
        return to_signin(request)
    try:
        web: Web | None = web_session(request)
    except (SignedOut, TrialError):
        web = None
    status = status_of(exc)
    return render(
        request, "error.html", web, status=status, refusal=exc.message, status_code=status
    )
