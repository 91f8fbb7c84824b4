"""The site's pages: home (subjects, visits due, open queries), registration and the subject's
journey from consent to follow-up: screening forms, confirmations, anatomy, randomization,
procedure, discharge and visits.

Pages decide nothing: every role, site, state and blinding decision is the service's; a page
renders what a service returns and shows its refusal."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trialdesk.domain.errors import (
    AuthenticationFailed,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)
from trialdesk.domain.lifecycle import Action
from trialdesk.http_status import status_of
from trialdesk.services import (
    devices,
    followup,
    randomization,
    screening,
)
from trialdesk.services.dashboard import current_protocol, my_sites
from trialdesk.services.data_queries import open_queries
from trialdesk.services.forms import screening_form_specs
from trialdesk.services.history import subject_history
from trialdesk.services.queries import get_subject, subject_counts
from trialdesk.services.visits import visit_worklist
from trialdesk.web.forms import (
    field_date,
    field_errors,
    field_text,
    flat_form,
    form_values,
    or_refusal,
    page_specs,
)
from trialdesk.web.render import render
from trialdesk.web.session import (
    Web,
    post_form,
    redirect,
    web_session,
)

router = APIRouter()

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


# --------------------------------------------------------------------------- home


@router.get("/home", include_in_schema=False)
def home(request: Request) -> Response:
    web = web_session(request)
    # issue 14: counts by state linking to the paged subject list (no list cut at 500)
    counts = subject_counts(web.ctx, web.actor, web.study_id)
    visits, visits_refused = or_refusal(
        lambda: visit_worklist(web.ctx, web.actor, web.study_id, states=("due", "overdue"))
    )
    data_queries, queries_refused = or_refusal(
        lambda: open_queries(web.ctx, web.actor, web.study_id)
    )
    return render(
        request,
        "home.html",
        web,
        counts=counts,
        total=sum(counts.values()),
        visits=visits,
        visits_refused=visits_refused,
        queries=data_queries,
        queries_refused=queries_refused,
        sites=my_sites(web.ctx, web.actor, web.study_id),
    )


@router.post("/subjects", include_in_schema=False)
async def register(request: Request) -> Response:
    web, form = await post_form(request)
    view = screening.register_subject(
        web.ctx, web.actor, web.study_id, site_code=field_text(form, "site")
    )
    return redirect(f"/subjects/{quote(view.number)}")


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
    return render(
        request,
        "subject.html",
        web,
        status=status,
        s=view,
        journey=JOURNEY,
        actions=actions,
        allowed=allowed,
        screening_forms=page_specs(loaded, loaded.protocol.screening.forms),
        criteria=criteria,
        history=subject_history(web.ctx, web.actor, web.study_id, number),
        message=message,
    )


@router.get("/subjects/{number}", include_in_schema=False)
def subject(request: Request, number: str) -> Response:
    web = web_session(request)
    return _subject_page(request, web, number)


@router.post("/subjects/{number}/consent", include_in_schema=False)
async def consent(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    try:
        screening.record_consent(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            consent_date=field_date(form, "consent_date"),
            consent_version=field_text(form, "consent_version"),
        )
    except ValidationFailed as exc:
        return _subject_page(request, web, number, message=exc.message, status=422)
    return redirect(f"/subjects/{quote(number)}")


@router.post("/subjects/{number}/confirm", include_in_schema=False)
async def confirm(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    answer = field_text(form, "confirmed")
    if answer not in ("yes", "no"):
        return _subject_page(request, web, number, message="choose met or not met", status=422)
    try:
        screening.confirm_criterion(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            criterion_id=field_text(form, "criterion"),
            confirmed=answer == "yes",
            password=str(form.get("password") or ""),
        )
    except (ValidationFailed, AuthenticationFailed) as exc:
        return _subject_page(request, web, number, message=exc.message, status=422)
    return redirect(f"/subjects/{quote(number)}#confirmations")


@router.post("/subjects/{number}/complete-screening", include_in_schema=False)
async def complete(request: Request, number: str) -> Response:
    web, _form = await post_form(request)
    screening.complete_screening(web.ctx, web.actor, web.study_id, number)
    return redirect(f"/subjects/{quote(number)}")


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
    return render(
        request,
        "entry.html",
        web,
        status=status,
        s=view,
        title=title,
        action=action,
        forms=page_specs(loaded, codes),
        values=values or {},
        errors=errors or {},
        message=message,
        visit_date=visit_date,
        stock=stock or [],
    )


@router.get("/subjects/{number}/forms/{code}", include_in_schema=False)
def screening_form(request: Request, number: str, code: str) -> Response:
    web = web_session(request)
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
    web, form = await post_form(request)
    try:
        screening.record_screening_form(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            form_code=code,
            values=form_values(form, code),
        )
    except ValidationFailed as exc:
        return _entry_page(
            request,
            web,
            number,
            title=f"Screening form: {code}",
            action=f"/subjects/{quote(number)}/forms/{quote(code)}",
            codes=[code],
            values=flat_form(form),
            errors=field_errors(exc.problems, [code]),
            message=exc.message,
            status=422,
        )
    return redirect(f"/subjects/{quote(number)}#screening")


@router.get("/subjects/{number}/anatomy", include_in_schema=False)
def anatomy_form(request: Request, number: str) -> Response:
    web = web_session(request)
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
    web, form = await post_form(request)
    codes = list(
        current_protocol(web.ctx, web.actor, web.study_id).protocol.screening.anatomy_forms
    )
    try:
        screening.record_anatomy(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            forms={c: form_values(form, c) for c in codes},
        )
    except ValidationFailed as exc:
        return _entry_page(
            request,
            web,
            number,
            title="Procedure day: anatomy",
            action=f"/subjects/{quote(number)}/anatomy",
            codes=codes,
            values=flat_form(form),
            errors=field_errors(exc.problems, codes),
            message=exc.message,
            status=422,
        )
    return redirect(f"/subjects/{quote(number)}#procedure")


@router.post("/subjects/{number}/randomize", include_in_schema=False)
async def randomize(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    key = field_text(form, "idempotency_key") or None
    result = randomization.randomize(web.ctx, web.actor, web.study_id, number, idempotency_key=key)
    return render(request, "randomized.html", web, r=result)


@router.get("/subjects/{number}/visits/{code}", include_in_schema=False)
def visit_form(request: Request, number: str, code: str) -> Response:
    web = web_session(request)
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
    web, form = await post_form(request)
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
            visit_date=field_date(form, "visit_date"),
            forms={c: form_values(form, c) for c in codes},
        )
    except ValidationFailed as exc:
        return _visit_page(
            request,
            web,
            number,
            code,
            values=flat_form(form),
            errors=field_errors(exc.problems, codes),
            message=exc.message,
            visit_date=field_text(form, "visit_date") or "visit",
            status=422,
        )
    return redirect(f"/subjects/{quote(number)}#visits")


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
    web = web_session(request)
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
    web, form = await post_form(request)
    codes = _procedure_codes(web, number)
    values = form_values(form, codes[0]) if codes else {}
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
            values=flat_form(form),
            errors=field_errors(getattr(exc, "problems", {}), codes),
            message=exc.message,
            status=status_of(exc),
            stock=_device_stock(web, number, codes),
        )
    return redirect(f"/subjects/{quote(number)}#procedure")


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
    web, form = await post_form(request)
    try:
        followup.record_discharge(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            discharged_on=field_date(form, "discharged_on"),
        )
    except ValidationFailed as exc:
        return _subject_page(request, web, number, message=exc.message, status=422)
    return redirect(f"/subjects/{quote(number)}#procedure")


@router.post("/subjects/{number}/visits/{code}/missed", include_in_schema=False)
async def miss_visit(request: Request, number: str, code: str) -> Response:
    web, form = await post_form(request)
    try:
        followup.miss_visit(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            visit_code=code,
            reason=field_text(form, "reason"),
        )
    except ValidationFailed as exc:
        return _subject_page(request, web, number, message=exc.message, status=422)
    return redirect(f"/subjects/{quote(number)}#visits")
