"""Server-rendered pages: thin handlers over the services.

Pages decide nothing: every role, site, state and blinding decision is the service's; a page
renders what a service returns and shows its refusal. Every form POST carries the session's
CSRF token (compared in constant time); sign-in carries a pre-session double-submit token.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from trialdesk.domain.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)
from trialdesk.domain.lifecycle import Action
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.reports.csv_cells import csv_text
from trialdesk.reports.enrolment import render_plot
from trialdesk.services import (
    accounts,
    admin,
    crc,
    design,
    devices,
    endpoints,
    followup,
    lists,
    randomization,
    report_views,
    reports,
    screening,
)
from trialdesk.services.access import Actor
from trialdesk.services.context import ServiceContext
from trialdesk.services.dashboard import current_protocol, enrolment, my_sites, screening_log
from trialdesk.services.data_queries import open_queries
from trialdesk.services.forms import form_specs, screening_form_specs
from trialdesk.services.history import subject_history
from trialdesk.services.queries import get_subject, list_subjects
from trialdesk.services.sessions import (
    issue_token,
    resolve_token,
    revoke_token,
    set_session_study,
)
from trialdesk.services.setup import list_studies
from trialdesk.services.study_info import list_sites
from trialdesk.services.views import SubjectView
from trialdesk.services.visits import visit_worklist
from trialdesk.web.timezones import page_time_values

HERE = Path(__file__).parent
SESSION_COOKIE = "trialdesk_session"
SIGNIN_COOKIE = "trialdesk_signin"
JOURNEY = [
    "registered",
    "screening",
    "echo_qualified",
    "awaiting_procedure",
    "randomized",
    "unblinded",
    "completed",
]
ACTION_TITLES: dict[str, str] = {
    Action.RECORD_CONSENT.value: "Record consent",
    Action.RECORD_SCREENING_FORM.value: "Enter screening forms",
    Action.CONFIRM_CRITERION.value: "Confirm investigator criteria (signed)",
    Action.PASS_SCREENING.value: "Complete screening",
    Action.CRC_APPROVE.value: "CRC decision (CRC members, on the CRC queue)",
    Action.ANATOMY_SUITABLE.value: "Record procedure-day anatomy",
    Action.RANDOMIZE.value: "Randomize",
    Action.RECORD_VISIT.value: "Record a follow-up visit",
}
"""The journey actions the subject page offers, in journey order."""

router = APIRouter()


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _ctx(request: Request) -> ServiceContext:
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


class _SignedOut(Exception):
    """No live web session. Handlers let it propagate; :func:`signed_out` (installed by
    create_app) answers every page with the redirect to the sign-in page."""


class _MustEnrol(Exception):
    """A session good for second-factor enrolment only: every other page redirects to the
    enrolment page (installed with the signed-out handler)."""


def _session(request: Request) -> Web:
    web = _session_any(request)
    if web.scope != "full":
        raise _MustEnrol
    return web


def _session_any(request: Request) -> Web:
    """The session, also one good for enrolling a second factor only."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise _SignedOut
    ctx = _ctx(request)
    try:
        found = resolve_token(ctx, token, kind="web")
    except AuthenticationFailed:
        raise _SignedOut from None
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


def _study_values(web: Web | None) -> dict[str, Any]:
    """The header's study name and, for a user of several studies, the switcher (PROT-1):
    only studies the user holds a role in."""
    if web is None:
        return {"studies": [], "study": None}
    studies = list_studies(web.ctx, web.actor)
    return {"studies": studies, "study": next((s for s in studies if s.id == web.study_id), None)}


def _render(
    request: Request, template: str, web: Web | None, status: int = 200, **values: Any
) -> HTMLResponse:
    html = (
        _env()
        .get_template(template)
        .render(
            request=request,
            user=web.actor if web else None,
            roles=sorted(web.actor.roles(web.study_id)) if web else [],
            csrf=web.csrf if web else "",
            **_study_values(web),
            **page_time_values(web.ctx, web.actor, web.study_id) if web else {},
            **values,
        )
    )
    return HTMLResponse(html, status_code=status)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _to_signin(request: Request) -> RedirectResponse:
    return _redirect("/signin?next=" + quote(request.url.path, safe="/"))


def install_signed_out_handler(app: FastAPI) -> None:
    """Pages raise ``_SignedOut`` from :func:`_session`; one handler redirects them all."""

    async def signed_out(request: Request, _exc: Exception) -> Response:
        return _to_signin(request)

    async def must_enrol(_request: Request, _exc: Exception) -> Response:
        return _redirect("/account/totp")

    app.add_exception_handler(_SignedOut, signed_out)
    app.add_exception_handler(_MustEnrol, must_enrol)


def _csrf_ok(expected: str, form: FormData) -> bool:
    given = form.get("csrf_token")
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(given, expected)


async def _post(request: Request, *, any_scope: bool = False) -> tuple[Web, FormData]:
    """The session and form of a POST, refused (nothing done) without the session's token."""
    web = _session_any(request) if any_scope else _session(request)
    form = await request.form()
    if not _csrf_ok(web.csrf, form):
        raise PermissionDenied("the form's security token is missing or wrong; reload the page")
    return web, form


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _date(form: FormData, name: str) -> dt.date:
    raw = _text(form, name)
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(
            f"{name}: {raw!r} is not a date (YYYY-MM-DD)", {name: "not a date (YYYY-MM-DD)"}
        ) from None


def _form_values(form: FormData, code: str) -> dict[str, Any]:
    prefix = code + "."
    return {
        k[len(prefix) :]: (v.strip() or None) if isinstance(v, str) else None
        for k, v in form.multi_items()
        if k.startswith(prefix)
    }


def _field_errors(problems: dict[str, str], codes: list[str]) -> dict[str, str]:
    """Service problems keyed ``form.field``; a one-form service keys by field alone."""
    out: dict[str, str] = {}
    for key, message in problems.items():
        if "." in key or len(codes) != 1:
            out[key] = message
        else:
            out[f"{codes[0]}.{key}"] = message
    return out


def _specs(loaded: LoadedProtocol, codes: list[str]) -> list[Any]:
    return form_specs(loaded, codes)  # 'not found' (404) for a form the protocol lacks


def status_of(exc: TrialError) -> int:
    """The HTTP status the API gives the same refusal."""
    from trialdesk.api.problems import status_of as api_status

    return api_status(exc)


def error_page(request: Request, exc: TrialError) -> Response:
    """A refusal from a service, as a page with its message (and 404 for 'not found')."""
    if isinstance(exc, AuthenticationFailed) and request.url.path != "/signin":
        return _to_signin(request)
    try:
        web: Web | None = _session(request)
    except (_SignedOut, TrialError):
        web = None
    status = status_of(exc)
    return _render(
        request, "error.html", web, status=status, refusal=exc.message, status_code=status
    )


# --------------------------------------------------------------------------- sign-in


SECURE_COOKIES = True
"""Always Secure: browsers keep a Secure cookie from http://localhost and http://127.0.0.1
(checked with Chromium 156), and anywhere else the session must not travel in clear text."""


def _signin_page(
    request: Request, message: str | None = None, status: int = 200, username: str = ""
) -> HTMLResponse:
    pre = secrets.token_urlsafe(24)
    response = _render(
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
        _session(request)
    except _SignedOut:
        return _redirect("/signin")
    return _redirect("/home")


@router.get("/signin", include_in_schema=False)
def signin_form(request: Request) -> Response:
    return _signin_page(request)


@router.post("/signin", include_in_schema=False)
async def signin(request: Request) -> Response:
    form = await request.form()
    username = _text(form, "username")
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not _csrf_ok(expected, form):
        return _signin_page(
            request, "the sign-in form expired; please sign in again", 403, username
        )
    password = form.get("password")
    try:
        issued = issue_token(
            _ctx(request),
            username,
            password if isinstance(password, str) else "",
            kind="web",
            client=request.client.host if request.client else "unknown",
            totp=_text(form, "totp") or None,
        )
    except TrialError as exc:  # one message for every refusal (the service's)
        return _signin_page(request, exc.message, 401, username)
    target = _text(form, "next")
    if not target.startswith("/") or target[1:2] in ("/", "\\"):  # no off-site redirect
        target = "/home"
    if issued.scope != "full":
        target = "/account/totp"
    response = _redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        httponly=True,
        samesite="strict",
        secure=SECURE_COOKIES,
        path="/",
        max_age=int((issued.expires_at - _ctx(request).now()).total_seconds()),
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout", include_in_schema=False)
async def signout(request: Request) -> Response:
    try:
        web, _form = await _post(request)
    except _SignedOut:
        return _redirect("/signin")
    revoke_token(web.ctx, web.token, kind="web")
    response = _redirect("/signin")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/study", include_in_schema=False)
async def switch_study(request: Request) -> Response:
    """The study switcher: work in another study the user holds a role in (PROT-1). Any other
    code is 'not found', the same for a study that exists and one that does not, and the
    session keeps its study."""
    web, form = await _post(request)
    code = _text(form, "study")
    target = next((s for s in list_studies(web.ctx, web.actor) if s.code == code), None)
    if target is None:
        raise NotFound(f"study {code or '?'} not found")
    set_session_study(web.ctx, web.token, target.id)
    return _redirect("/home")


# --------------------------------------------------------------------------- home


def _or_refusal(call: Any) -> tuple[Any, str | None]:
    """A service's answer, or its permission refusal as a message for that panel."""
    try:
        return call(), None
    except PermissionDenied as exc:
        return None, exc.message


@router.get("/home", include_in_schema=False)
def home(request: Request) -> Response:
    web = _session(request)
    page = list_subjects(web.ctx, web.actor, web.study_id, limit=500)
    by_state: dict[str, list[SubjectView]] = {}
    for view in page.items:
        by_state.setdefault(view.state, []).append(view)
    visits, visits_refused = _or_refusal(
        lambda: visit_worklist(web.ctx, web.actor, web.study_id, states=("due", "overdue"))
    )
    data_queries, queries_refused = _or_refusal(
        lambda: open_queries(web.ctx, web.actor, web.study_id)
    )
    return _render(
        request,
        "home.html",
        web,
        by_state=by_state,
        total=page.total,
        visits=visits,
        visits_refused=visits_refused,
        queries=data_queries,
        queries_refused=queries_refused,
        sites=my_sites(web.ctx, web.actor, web.study_id),
    )


@router.post("/subjects", include_in_schema=False)
async def register(request: Request) -> Response:
    web, form = await _post(request)
    view = screening.register_subject(
        web.ctx, web.actor, web.study_id, site_code=_text(form, "site")
    )
    return _redirect(f"/subjects/{quote(view.number)}")


# --------------------------------------------------------------------------- subject


def _subject_page(
    request: Request, web: Web, number: str, *, message: str | None = None, status: int = 200
) -> HTMLResponse:
    view = get_subject(web.ctx, web.actor, web.study_id, number)
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    allowed = set(view.allowed_actions)
    actions = [
        (code, title, code in allowed)
        for code, title in ACTION_TITLES.items()
        if code != Action.RECORD_VISIT.value or view.randomized
    ]
    criteria = [c for c in loaded.protocol.criteria if c.rule is None]
    return _render(
        request,
        "subject.html",
        web,
        status=status,
        s=view,
        journey=JOURNEY,
        actions=actions,
        allowed=allowed,
        screening_forms=_specs(loaded, loaded.protocol.screening.forms),
        criteria=criteria,
        history=subject_history(web.ctx, web.actor, web.study_id, number),
        message=message,
    )


@router.get("/subjects/{number}", include_in_schema=False)
def subject(request: Request, number: str) -> Response:
    web = _session(request)
    return _subject_page(request, web, number)


@router.post("/subjects/{number}/consent", include_in_schema=False)
async def consent(request: Request, number: str) -> Response:
    web, form = await _post(request)
    try:
        screening.record_consent(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            consent_date=_date(form, "consent_date"),
            consent_version=_text(form, "consent_version"),
        )
    except ValidationFailed as exc:
        return _subject_page(request, web, number, message=exc.message, status=422)
    return _redirect(f"/subjects/{quote(number)}")


@router.post("/subjects/{number}/confirm", include_in_schema=False)
async def confirm(request: Request, number: str) -> Response:
    web, form = await _post(request)
    answer = _text(form, "confirmed")
    if answer not in ("yes", "no"):
        return _subject_page(request, web, number, message="choose met or not met", status=422)
    try:
        screening.confirm_criterion(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            criterion_id=_text(form, "criterion"),
            confirmed=answer == "yes",
            password=str(form.get("password") or ""),
        )
    except (ValidationFailed, AuthenticationFailed) as exc:
        return _subject_page(request, web, number, message=exc.message, status=422)
    return _redirect(f"/subjects/{quote(number)}#confirmations")


@router.post("/subjects/{number}/complete-screening", include_in_schema=False)
async def complete(request: Request, number: str) -> Response:
    web, _form = await _post(request)
    screening.complete_screening(web.ctx, web.actor, web.study_id, number)
    return _redirect(f"/subjects/{quote(number)}")


# --------------------------------------------------------------------------- data entry


def _entry_page(
    request: Request,
    web: Web,
    number: str,
    *,
    title: str,
    action: str,
    codes: list[str],
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    visit_date: str = "",
    status: int = 200,
    stock: list[Any] | None = None,
) -> HTMLResponse:
    view = get_subject(web.ctx, web.actor, web.study_id, number)
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    return _render(
        request,
        "entry.html",
        web,
        status=status,
        s=view,
        title=title,
        action=action,
        forms=_specs(loaded, codes),
        values=values or {},
        errors=errors or {},
        message=message,
        visit_date=visit_date,
        stock=stock or [],
    )


def _flat(form: FormData) -> dict[str, Any]:
    return {k: v for k, v in form.multi_items() if isinstance(v, str)}


@router.get("/subjects/{number}/forms/{code}", include_in_schema=False)
def screening_form(request: Request, number: str, code: str) -> Response:
    web = _session(request)
    screening_form_specs(current_protocol(web.ctx, web.actor, web.study_id), code)
    return _entry_page(
        request,
        web,
        number,
        title=f"Screening form: {code}",
        action=f"/subjects/{quote(number)}/forms/{quote(code)}",
        codes=[code],
    )


@router.post("/subjects/{number}/forms/{code}", include_in_schema=False)
async def save_screening_form(request: Request, number: str, code: str) -> Response:
    web, form = await _post(request)
    try:
        screening.record_screening_form(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            form_code=code,
            values=_form_values(form, code),
        )
    except ValidationFailed as exc:
        return _entry_page(
            request,
            web,
            number,
            title=f"Screening form: {code}",
            action=f"/subjects/{quote(number)}/forms/{quote(code)}",
            codes=[code],
            values=_flat(form),
            errors=_field_errors(exc.problems, [code]),
            message=exc.message,
            status=422,
        )
    return _redirect(f"/subjects/{quote(number)}#screening")


@router.get("/subjects/{number}/anatomy", include_in_schema=False)
def anatomy_form(request: Request, number: str) -> Response:
    web = _session(request)
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    return _entry_page(
        request,
        web,
        number,
        title="Procedure day: anatomy",
        action=f"/subjects/{quote(number)}/anatomy",
        codes=list(loaded.protocol.screening.anatomy_forms),
    )


@router.post("/subjects/{number}/anatomy", include_in_schema=False)
async def save_anatomy(request: Request, number: str) -> Response:
    web, form = await _post(request)
    codes = list(
        current_protocol(web.ctx, web.actor, web.study_id).protocol.screening.anatomy_forms
    )
    try:
        screening.record_anatomy(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            forms={c: _form_values(form, c) for c in codes},
        )
    except ValidationFailed as exc:
        return _entry_page(
            request,
            web,
            number,
            title="Procedure day: anatomy",
            action=f"/subjects/{quote(number)}/anatomy",
            codes=codes,
            values=_flat(form),
            errors=_field_errors(exc.problems, codes),
            message=exc.message,
            status=422,
        )
    return _redirect(f"/subjects/{quote(number)}#procedure")


@router.post("/subjects/{number}/randomize", include_in_schema=False)
async def randomize(request: Request, number: str) -> Response:
    web, form = await _post(request)
    key = _text(form, "idempotency_key") or None
    result = randomization.randomize(web.ctx, web.actor, web.study_id, number, idempotency_key=key)
    return _render(request, "randomized.html", web, r=result)


@router.get("/subjects/{number}/visits/{code}", include_in_schema=False)
def visit_form(request: Request, number: str, code: str) -> Response:
    web = _session(request)
    return _visit_page(request, web, number, code)


def _visit_page(
    request: Request,
    web: Web,
    number: str,
    code: str,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    visit_date: str = "",
    status: int = 200,
) -> HTMLResponse:
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    visit = next((v for v in loaded.protocol.visits if v.code == code), None)
    if visit is None:
        from trialdesk.domain.errors import NotFound

        raise NotFound(f"visit {code} is not in the protocol")
    return _entry_page(
        request,
        web,
        number,
        title=f"Visit {visit.code}: {visit.name}",
        action=f"/subjects/{quote(number)}/visits/{quote(code)}",
        codes=list(visit.forms),
        values=values,
        errors=errors,
        message=message,
        visit_date=visit_date or "visit",
        status=status,
    )


@router.post("/subjects/{number}/visits/{code}", include_in_schema=False)
async def save_visit(request: Request, number: str, code: str) -> Response:
    web, form = await _post(request)
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    visit = next((v for v in loaded.protocol.visits if v.code == code), None)
    codes = list(visit.forms) if visit else []
    try:
        followup.record_visit(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            visit_code=code,
            visit_date=_date(form, "visit_date"),
            forms={c: _form_values(form, c) for c in codes},
        )
    except ValidationFailed as exc:
        return _visit_page(
            request,
            web,
            number,
            code,
            values=_flat(form),
            errors=_field_errors(exc.problems, codes),
            message=exc.message,
            visit_date=_text(form, "visit_date") or "visit",
            status=422,
        )
    return _redirect(f"/subjects/{quote(number)}#visits")


# --------------------------------------------------------------------------- procedure, visits


def _procedure_codes(web: Web, number: str) -> list[str]:
    """The arm's procedure form, found from what the caller may see: only a caller the
    service shows the allocation to (the implanting team of the subject's site) gets a form."""
    view = get_subject(web.ctx, web.actor, web.study_id, number)
    if view.arm is None:
        return []
    arm = current_protocol(web.ctx, web.actor, web.study_id).protocol.arm(view.arm.code)
    return [arm.procedure_form] if arm.procedure_form else []


@router.get("/subjects/{number}/procedure", include_in_schema=False)
def procedure_form(request: Request, number: str) -> Response:
    web = _session(request)
    codes = _procedure_codes(web, number)
    if not codes:
        raise PermissionDenied(
            "the index procedure is recorded by the implanting team of the subject's site, "
            "who receive the allocation at the procedure"
        )
    return _entry_page(
        request,
        web,
        number,
        title="Index procedure",
        action=f"/subjects/{quote(number)}/procedure",
        codes=codes,
        stock=_device_stock(web, number, codes),
    )


@router.post("/subjects/{number}/procedure", include_in_schema=False)
async def save_procedure(request: Request, number: str) -> Response:
    web, form = await _post(request)
    codes = _procedure_codes(web, number)
    values = _form_values(form, codes[0]) if codes else {}
    try:
        followup.record_procedure(web.ctx, web.actor, web.study_id, number, values=values)
    except (ValidationFailed, PreconditionFailed) as exc:
        if isinstance(exc, PreconditionFailed) and not exc.code.startswith("device-"):
            raise
        return _entry_page(
            request,
            web,
            number,
            title="Index procedure",
            action=f"/subjects/{quote(number)}/procedure",
            codes=codes,
            values=_flat(form),
            errors=_field_errors(getattr(exc, "problems", {}), codes),
            message=exc.message,
            status=status_of(exc),
            stock=_device_stock(web, number, codes),
        )
    return _redirect(f"/subjects/{quote(number)}#procedure")


def _device_stock(web: Web, number: str, codes: list[str]) -> list[Any]:
    """Devices in stock at the subject's site, listed on a device arm's procedure form for
    the implanting team to pick one (SUP-1)."""
    protocol = current_protocol(web.ctx, web.actor, web.study_id).protocol
    arms = protocol.supply.device_arms if protocol.supply else []
    if not any(protocol.arm(a).procedure_form in codes for a in arms):
        return []
    site = number.split("-")[0]
    try:
        return [
            d
            for s in devices.site_inventory(web.ctx, web.actor, web.study_id, site).sites
            for d in s.devices
            if d.status == "at_site"
        ]
    except TrialError:
        return []


@router.post("/subjects/{number}/discharge", include_in_schema=False)
async def discharge(request: Request, number: str) -> Response:
    web, form = await _post(request)
    try:
        followup.record_discharge(
            web.ctx, web.actor, web.study_id, number, discharged_on=_date(form, "discharged_on")
        )
    except ValidationFailed as exc:
        return _subject_page(request, web, number, message=exc.message, status=422)
    return _redirect(f"/subjects/{quote(number)}#procedure")


@router.post("/subjects/{number}/visits/{code}/missed", include_in_schema=False)
async def miss_visit(request: Request, number: str, code: str) -> Response:
    web, form = await _post(request)
    try:
        followup.miss_visit(
            web.ctx, web.actor, web.study_id, number, visit_code=code, reason=_text(form, "reason")
        )
    except ValidationFailed as exc:
        return _subject_page(request, web, number, message=exc.message, status=422)
    return _redirect(f"/subjects/{quote(number)}#visits")


# --------------------------------------------------------------------------- CRC


def _crc_page(
    request: Request, web: Web, message: str | None = None, status: int = 200
) -> HTMLResponse:
    cases = crc.crc_queue(web.ctx, web.actor, web.study_id)
    return _render(
        request,
        "crc.html",
        web,
        status=status,
        cases=cases,
        decisions=crc.CRC_DECISIONS,
        message=message,
    )


@router.get("/crc", include_in_schema=False)
def crc_queue(request: Request) -> Response:
    web = _session(request)
    return _crc_page(request, web)


@router.post("/crc/{number}", include_in_schema=False)
async def crc_decide(request: Request, number: str) -> Response:
    web, form = await _post(request)
    try:
        crc.crc_eligibility_decision(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            decision=_text(form, "decision"),
            reason=_text(form, "reason"),
            password=str(form.get("password") or ""),
        )
    except (ValidationFailed, AuthenticationFailed) as exc:
        return _crc_page(request, web, message=exc.message, status=422)
    return _redirect("/crc")


# --------------------------------------------------------------------------- dashboard


def _bars(rows: list[Any], target: int | None = None) -> dict[str, Any]:
    """Geometry of a horizontal bar chart drawn as inline SVG by the template."""
    top = max([target or 0] + [max(r.registered, r.randomized) for r in rows] + [1])
    width = 300
    return {
        "width": width,
        "height": 28 * len(rows) + 10,
        "bars": [
            {
                "key": r.key,
                "y": 28 * i + 5,
                "registered": round(width * r.registered / top),
                "randomized": round(width * r.randomized / top),
                "r": r,
            }
            for i, r in enumerate(rows)
        ],
    }


@router.get("/dashboard", include_in_schema=False)
def dashboard(request: Request) -> Response:
    web = _session(request)
    data = enrolment(web.ctx, web.actor, web.study_id)
    charts = [
        ("site", _bars(data.by_site), data.by_site),
        ("country", _bars(data.by_country), data.by_country),
        ("region", _bars(data.by_region), data.by_region),
    ]
    log, log_refused = _or_refusal(lambda: screening_log(web.ctx, web.actor, web.study_id))
    flow, _ = _or_refusal(lambda: report_views.consort(web.ctx, web.actor, web.study_id))
    return _render(
        request,
        "dashboard.html",
        web,
        e=data,
        charts=charts,
        screening_log=log,
        screening_log_refused=log_refused,
        consort=flow,
        downloads=list(REPORT_DOWNLOADS),
    )


# --------------------------------------------------------------------------- report downloads


def _enrolment_rows(web: Web) -> list[dict[str, Any]]:
    data = enrolment(web.ctx, web.actor, web.study_id)
    levels = (("site", data.by_site), ("country", data.by_country), ("region", data.by_region))
    return [
        {"level": level, "key": r.key, "registered": r.registered, "randomized": r.randomized}
        for level, rows in levels
        for r in rows
    ]


def _compliance_rows(web: Web) -> list[dict[str, Any]]:
    report = report_views.visit_compliance(web.ctx, web.actor, web.study_id)
    return [asdict(r) for r in [*report.rows, *report.totals]]


REPORT_DOWNLOADS: dict[str, Callable[[Web], list[dict[str, Any]]]] = {
    "enrolment": _enrolment_rows,
    "screening-log": lambda w: [asdict(r) for r in screening_log(w.ctx, w.actor, w.study_id)],
    "compliance": _compliance_rows,
    "deviations": lambda w: [
        d.to_dict() for d in report_views.deviations(w.ctx, w.actor, w.study_id)
    ],
    "queries": lambda w: [asdict(q) for q in open_queries(w.ctx, w.actor, w.study_id)],
    "unblinding-events": lambda w: [
        e.to_dict() for e in report_views.unblinding_events(w.ctx, w.actor, w.study_id)
    ],
}
"""Tabular reports the dashboard links to, as JSON or CSV; each service decides who may read
it (REP-1, REP-3) and none carries an arm (RAND-6)."""


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0]) if rows else []
    return csv_text(columns, ([row.get(c) for c in columns] for row in rows))


SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
"""The figure's own policy: matplotlib writes inline styles, and the image runs no script."""


@router.get("/reports/consort.svg", include_in_schema=False)
def consort_svg(request: Request) -> Response:
    """The CONSORT diagram for the dashboard's <img> (REP-2); pooled boxes for blinded users."""
    web = _session(request)
    figure = report_views.consort_figure(web.ctx, web.actor, web.study_id, fmt="svg")
    return Response(
        figure, media_type="image/svg+xml", headers={"Content-Security-Policy": SVG_CSP}
    )


@router.get("/reports/enrolment.svg", include_in_schema=False)
def enrolment_svg(request: Request) -> Response:
    """The enrolment plot with the forecast for the dashboard's <img> (REP-1); counts only."""
    web = _session(request)
    report = reports.enrolment_report(
        web.ctx, web.actor, web.study_id, simulations=2000, seed=20270125
    )
    return Response(
        render_plot(report, "svg"),
        media_type="image/svg+xml",
        headers={"Content-Security-Policy": SVG_CSP},
    )


@router.get("/reports/{filename}", include_in_schema=False)
def report_download(request: Request, filename: str) -> Response:
    """``<report>.json`` or ``<report>.csv`` of one of :data:`REPORT_DOWNLOADS`."""
    web = _session(request)
    name, _, ext = filename.rpartition(".")
    if name not in REPORT_DOWNLOADS or ext not in ("json", "csv"):
        raise NotFound(f"no report download {filename!r}")
    rows = REPORT_DOWNLOADS[name](web)
    if ext == "json":
        return JSONResponse(rows)
    disposition = f'attachment; filename="{name}.csv"'
    return Response(
        _csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": disposition},
    )


# --------------------------------------------------------------------------- administration

REFUSED_CHANGE = (ValidationFailed, Conflict, NotFound, PreconditionFailed)
"""Refusals of an administration form, shown on its page; a permission refusal is a 403 page."""


def _users_page(
    request: Request, web: Web, message: str | None = None, status: int = 200
) -> HTMLResponse:
    users = admin.list_users(web.ctx, web.actor, web.study_id)
    return _render(
        request,
        "admin_users.html",
        web,
        status=status,
        users=users,
        invitations=accounts.list_invitations(web.ctx, web.actor, web.study_id),
        approvals=accounts.list_approvals(web.ctx, web.actor, web.study_id),
        all_roles=[r.value for r in Role],
        needs_approval=sorted(r.value for r in accounts.NEEDS_APPROVAL),
        sites=[s.code for s in list_sites(web.ctx, web.actor, web.study_id)],
        message=message,
    )


@router.get("/admin/users", include_in_schema=False)
def admin_users(request: Request) -> Response:
    web = _session(request)
    return _users_page(request, web)


@router.post("/admin/invitations", include_in_schema=False)
async def admin_invite(request: Request) -> Response:
    """Invite by address; the page says the same whether or not the address has an account."""
    web, form = await _post(request)
    try:
        view = accounts.invite(
            web.ctx,
            web.actor,
            web.study_id,
            email=_text(form, "email"),
            full_name=_text(form, "full_name"),
            role=_text(form, "role"),
            site=_text(form, "site") or None,
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
    web, _form = await _post(request)
    try:
        accounts.cancel_invitation(web.ctx, web.actor, web.study_id, invitation_id)
    except REFUSED_CHANGE as exc:
        return _users_page(request, web, message=exc.message, status=status_of(exc))
    return _redirect("/admin/users#invitations")


USER_ACTIONS = ("deactivate", "reactivate", "reset-link", "clear-backoff", "grant", "revoke")


@router.post("/admin/users/{username}/{change}", include_in_schema=False)
async def admin_change_user(request: Request, username: str, change: str) -> Response:
    web, form = await _post(request)
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
            info = admin.grant_role(*args, _text(form, "role"), _text(form, "site") or None)
            if info.pending:
                message = "The role awaits an unblinded member's e-signed approval."
        elif change == "revoke":
            admin.revoke_role(*args, _text(form, "role"), _text(form, "site") or None)
        else:
            raise NotFound(f"no such change {change!r}; one of {', '.join(USER_ACTIONS)}")
    except REFUSED_CHANGE as exc:
        return _users_page(request, web, message=exc.message, status=status_of(exc))
    if message:
        return _users_page(request, web, message=message)
    return _redirect(f"/admin/users#user-{quote(username)}")


def _sites_page(
    request: Request, web: Web, message: str | None = None, status: int = 200
) -> HTMLResponse:
    # the administrator check first: list_sites alone is open to every study role
    admin.list_users(web.ctx, web.actor, web.study_id)
    sites = list_sites(web.ctx, web.actor, web.study_id)
    return _render(request, "admin_sites.html", web, status=status, sites=sites, message=message)


@router.get("/admin/sites", include_in_schema=False)
def admin_sites(request: Request) -> Response:
    web = _session(request)
    return _sites_page(request, web)


@router.post("/admin/sites/{code}/{change}", include_in_schema=False)
async def admin_change_site(request: Request, code: str, change: str) -> Response:
    web, _form = await _post(request)
    try:
        if change == "activate":
            admin.activate_site(web.ctx, web.actor, web.study_id, code)
        elif change == "deactivate":
            admin.deactivate_site(web.ctx, web.actor, web.study_id, code)
        else:
            raise NotFound(f"no such change {change!r}; activate or deactivate")
    except REFUSED_CHANGE as exc:
        return _sites_page(request, web, message=exc.message, status=status_of(exc))
    return _redirect(f"/admin/sites#site-{quote(code)}")


# --------------------------------------------------------------------------- statistician


def _design_table(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The assessment's JSON flattened to (figure, value) rows, nested keys joined by ' / '."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix} / {key}" if prefix else str(key), item)
        elif isinstance(value, list):
            rows.append((prefix, ", ".join(map(str, value)) or "–"))
        else:
            rows.append((prefix, "–" if value is None else str(value)))

    walk("", {k: v for k, v in result.items() if k != "interpretation"})
    return rows


def _int_field(form: FormData, name: str) -> int:
    raw = _text(form, name)
    try:
        return int(raw)
    except ValueError:
        raise ValidationFailed(
            f"{name}: {raw!r} is not a whole number", {name: "not a whole number"}
        ) from None


def _int_list(form: FormData, name: str) -> tuple[int, ...]:
    raw = _text(form, name)
    if not raw:
        return ()
    try:
        return tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ValidationFailed(
            f"{name}: {raw!r} is not whole numbers separated by commas (e.g. 4,6)",
            {name: "whole numbers separated by commas"},
        ) from None


def _statistician_page(
    request: Request,
    web: Web,
    *,
    values: dict[str, str] | None = None,
    result: dict[str, Any] | None = None,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    # by-arm figures first: a blinded caller is refused here, with a 403 page (RAND-6)
    safety = endpoints.safety_summary(web.ctx, web.actor, web.study_id)
    efficacy = endpoints.efficacy_summary(web.ctx, web.actor, web.study_id)
    strata, strata_refused = _or_refusal(
        lambda: lists.stratum_status(web.ctx, web.actor, web.study_id)
    )
    list_rows, _ = _or_refusal(lambda: lists.list_info(web.ctx, web.actor, web.study_id))
    defaults, design_refused = _or_refusal(
        lambda: design.design_defaults(web.ctx, web.actor, web.study_id)
    )
    if values is None and defaults is not None:
        values = {
            "method": defaults.method,
            "block_sizes": ",".join(map(str, defaults.block_sizes)),
            "strata": str(defaults.strata),
            "subjects": str(defaults.subjects),
            "ratio": ",".join(map(str, defaults.arms_ratio)),
            "simulations": str(defaults.simulations),
            "seed": str(defaults.seed),
        }
    return _render(
        request,
        "statistician.html",
        web,
        status=status,
        safety=safety,
        efficacy=efficacy,
        strata=strata,
        strata_refused=strata_refused,
        lists=list_rows or [],
        design_refused=design_refused,
        values=values or {},
        methods=("complete", "blocks", "minimization"),
        max_simulations=design.MAX_SIMULATIONS,
        result=result,
        result_rows=_design_table(result) if result else [],
        message=message,
    )


@router.get("/statistician", include_in_schema=False)
def statistician(request: Request) -> Response:
    web = _session(request)
    return _statistician_page(request, web)


@router.post("/statistician/design", include_in_schema=False)
async def statistician_design(request: Request) -> Response:
    web, form = await _post(request)
    values = {k: v.strip() for k, v in _flat(form).items() if k != "csrf_token"}
    try:
        result = design.assess_design(
            web.ctx,
            web.actor,
            web.study_id,
            method=_text(form, "method"),
            block_sizes=_int_list(form, "block_sizes"),
            strata=_int_field(form, "strata"),
            subjects=_int_field(form, "subjects"),
            simulations=_int_field(form, "simulations"),
            seed=_int_field(form, "seed"),
            arms_ratio=_int_list(form, "ratio"),
        )
    except ValidationFailed as exc:
        return _statistician_page(request, web, values=values, message=exc.message, status=422)
    return _statistician_page(request, web, values=values, result=result)


@router.get("/statistician/lists/{list_id}/download", include_in_schema=False)
def statistician_list_download(request: Request, list_id: int) -> Response:
    """The whole list as a CSV file in the import format (RAND-3); audited by the service."""
    web = _session(request)
    got = lists.download_list(web.ctx, web.actor, web.study_id, list_id)
    return Response(
        got.csv,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{got.filename}"'},
    )


@router.post("/statistician/lists/{list_id}/discard", include_in_schema=False)
async def statistician_list_discard(request: Request, list_id: int) -> Response:
    """Take a test list (or an unused live list) out of use (RAND-3)."""
    web, form = await _post(request)
    # a refusal is the error page: the statistics page would read (and audit) by-arm results
    lists.discard_list(web.ctx, web.actor, web.study_id, list_id, _text(form, "reason"))
    return _redirect("/statistician#lists")


@router.get("/static/site.css", include_in_schema=False)
def site_css() -> Response:
    return Response((HERE / "static" / "site.css").read_bytes(), media_type="text/css")
