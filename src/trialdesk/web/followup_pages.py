"""The subject's pages after randomization: index procedure, discharge, visit entry (window
and target shown, an out-of-window date confirmed as a deviation before saving, "missed"
only once the window has opened and with a confirmation), adverse events, additional
therapies (to the CRC), emergency and scheduled unblinding, withdrawal, loss to follow-up,
death and completion. Offers and refusals are the services' (see subject_pages)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trialdesk.domain.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)
from trialdesk.http_status import status_of
from trialdesk.services import devices, followup
from trialdesk.services.dashboard import current_protocol
from trialdesk.services.queries import get_subject, subject_actions
from trialdesk.services.views import SubjectView, VisitView
from trialdesk.web.forms import (
    field_date,
    field_errors,
    field_text,
    flat_form,
    form_values,
)
from trialdesk.web.render import render
from trialdesk.web.session import Web, post_form, redirect, web_session
from trialdesk.web.subject_pages import _act, _entry_page, page_status, subject_url

router = APIRouter()


# --------------------------------------------------------------------------- procedure


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
    return redirect(subject_url(number, "procedure"), flash="Index procedure recorded.")


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
    return await _act(
        request,
        number,
        lambda web, form: followup.record_discharge(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            discharged_on=field_date(form, "discharged_on"),
        ),
        done="Discharge recorded.",
        anchor="procedure",
    )


# --------------------------------------------------------------------------- visits


def _visit(web: Web, number: str, code: str) -> tuple[SubjectView, VisitView, Any]:
    view = get_subject(web.ctx, web.actor, web.study_id, number)
    shown = next((v for v in view.visits if v.code == code), None)
    loaded = current_protocol(web.ctx, web.actor, web.study_id)
    spec = next((v for v in loaded.protocol.visits if v.code == code), None)
    if shown is None or spec is None:
        raise NotFound(f"visit {code} is not in the schedule of subject {number}")
    return view, shown, spec


def _date_fields(web: Web, codes: list[str]) -> dict[str, str]:
    """Each visit form's own date field: filled from the one visit date, never asked twice."""
    protocol = current_protocol(web.ctx, web.actor, web.study_id).protocol
    return {c: f for c in codes if (f := protocol.form(c).date_field)}


def _visit_page(
    request: Request,
    web: Web,
    number: str,
    code: str,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    deviation: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    _view, shown, spec = _visit(web, number, code)
    codes = list(spec.forms)
    dates = _date_fields(web, codes)
    return _entry_page(
        request,
        web,
        number,
        title=f"Visit {spec.code}: {spec.name}",
        action=f"/subjects/{quote(number)}/visits/{quote(code)}",
        codes=codes,
        values=values,
        errors=errors,
        message=message,
        status=status,
        visit_date="visit",
        visit=shown,
        deviation=deviation,
        hidden_fields={f"{c}.{f}" for c, f in dates.items()},
    )


@router.get("/subjects/{number}/visits/{code}", include_in_schema=False)
def visit_form(request: Request, number: str, code: str) -> Response:
    web = web_session(request)
    return _visit_page(request, web, number, code)


def _deviation(shown: VisitView, on: dt.date) -> str | None:
    """The words for a visit date outside its window, or None when inside."""
    start = dt.date.fromisoformat(shown.window_start)
    end = dt.date.fromisoformat(shown.window_end)
    window = f"({shown.window_start} to {shown.window_end})"
    if on < start:
        return f"{(start - on).days} days before its window {window}"
    if on > end:
        return f"{(on - end).days} days after its window {window}"
    return None


@router.post("/subjects/{number}/visits/{code}", include_in_schema=False)
async def save_visit(request: Request, number: str, code: str) -> Response:
    """Save a visit. A date outside the window is shown as a deviation to confirm first
    (SCHED-2): nothing is saved until the user ticks the confirmation."""
    web, form = await post_form(request)
    _view, shown, spec = _visit(web, number, code)
    codes = list(spec.forms)
    typed = {k: v for k, v in flat_form(form).items() if k != "csrf_token"}
    try:
        on = field_date(form, "visit_date")
        forms = {c: form_values(form, c) for c in codes}
        for c, f in _date_fields(web, codes).items():
            forms[c][f] = on.isoformat()
        outside = _deviation(shown, on)
        if (
            outside
            and field_text(form, "confirm_deviation") != "yes"
            and "record_visit" in subject_actions(web.ctx, web.actor, web.study_id, number)
        ):
            return _visit_page(
                request,
                web,
                number,
                code,
                values=typed,
                deviation=f"Visit {code} on {on.isoformat()} is {outside}. Saving records "
                "a protocol deviation: confirm below, or correct the date.",
                status=409,
            )
        followup.record_visit(
            web.ctx, web.actor, web.study_id, number, visit_code=code, visit_date=on, forms=forms
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        return _visit_page(
            request,
            web,
            number,
            code,
            values=typed,
            errors=field_errors(getattr(exc, "problems", {}), codes),
            message=exc.message,
            status=status_of(exc),
        )
    note = " (outside its window: recorded as a protocol deviation)" if outside else ""
    return redirect(subject_url(number, "visits"), flash=f"Visit {code} saved{note}.")


@router.get("/subjects/{number}/visits/{code}/missed", include_in_schema=False)
def miss_visit_confirm(request: Request, number: str, code: str) -> Response:
    """The confirmation step before marking a visit missed (it cannot be undone)."""
    web = web_session(request)
    view, shown, spec = _visit(web, number, code)
    if "miss_visit" not in subject_actions(web.ctx, web.actor, web.study_id, number):
        raise PermissionDenied(
            f"no visit of {number} can be marked missed by {web.actor.username} now"
        )
    return render(request, "missed.html", web, s=view, v=shown, spec=spec, values={})


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
    except (ValidationFailed, PreconditionFailed) as exc:
        view, shown, spec = _visit(web, number, code)
        return render(
            request,
            "missed.html",
            web,
            status=status_of(exc),
            s=view,
            v=shown,
            spec=spec,
            values=flat_form(form),
            message=exc.message,
        )
    return redirect(subject_url(number, "visits"), flash=f"Visit {code} marked missed.")


# --------------------------------------------------------------------------- events


@router.get("/subjects/{number}/adverse-events", include_in_schema=False)
def adverse_event_form(request: Request, number: str) -> Response:
    web = web_session(request)
    if "record_adverse_event" not in subject_actions(web.ctx, web.actor, web.study_id, number):
        raise PermissionDenied(
            f"{web.actor.username} cannot record an adverse event for {number} now"
        )
    return _entry_page(
        request,
        web,
        number,
        title="Adverse event",
        action=f"/subjects/{quote(number)}/adverse-events",
        codes=["adverse_event"],
    )


@router.post("/subjects/{number}/adverse-events", include_in_schema=False)
async def save_adverse_event(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    try:
        followup.record_adverse_event(
            web.ctx, web.actor, web.study_id, number, values=form_values(form, "adverse_event")
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        return _entry_page(
            request,
            web,
            number,
            title="Adverse event",
            action=f"/subjects/{quote(number)}/adverse-events",
            codes=["adverse_event"],
            values=flat_form(form),
            errors=field_errors(getattr(exc, "problems", {}), ["adverse_event"]),
            message=exc.message,
            status=status_of(exc),
        )
    return redirect(subject_url(number, "forms"), flash="Adverse event recorded.")


@router.post("/subjects/{number}/therapies", include_in_schema=False)
async def therapy(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, form: followup.record_therapy(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            therapy_date=field_date(form, "therapy_date"),
            therapy_type=field_text(form, "therapy_type"),
        ),
        done="Additional therapy recorded and sent to the CRC for adjudication.",
        anchor="events",
    )


# --------------------------------------------------------------------------- unblinding


@router.get("/subjects/{number}/emergency-unblind", include_in_schema=False)
def emergency_form(request: Request, number: str) -> Response:
    """The emergency code break: reason and signature, a warning that it is audited and the
    study manager is told (RAND-7)."""
    web = web_session(request)
    view = get_subject(web.ctx, web.actor, web.study_id, number)
    if "emergency_unblind" not in subject_actions(web.ctx, web.actor, web.study_id, number):
        raise PermissionDenied(f"{web.actor.username} cannot unblind {number} in an emergency")
    return render(request, "emergency.html", web, s=view, values={})


@router.post("/subjects/{number}/emergency-unblind", include_in_schema=False)
async def emergency(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    try:
        view = followup.emergency_unblind(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            reason=field_text(form, "reason"),
            password=str(form.get("password") or ""),
        )
    except (ValidationFailed, PreconditionFailed, AuthenticationFailed) as exc:
        return _emergency_again(request, web, number, form, exc)
    return render(request, "emergency.html", web, s=view, done=True, values={})


def _emergency_again(
    request: Request, web: Web, number: str, form: Any, exc: TrialError
) -> HTMLResponse:
    view = get_subject(web.ctx, web.actor, web.study_id, number)
    typed = {k: v for k, v in flat_form(form).items() if k not in ("password", "csrf_token")}
    return render(
        request,
        "emergency.html",
        web,
        status=page_status(exc),
        s=view,
        values=typed,
        message=exc.message,
    )


@router.post("/subjects/{number}/unblind", include_in_schema=False)
async def unblind(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, form: followup.unblind_subject(
            web.ctx, web.actor, web.study_id, number, password=str(form.get("password") or "")
        ),
        done="Unblinded after the scheduled evaluation (signed).",
    )


# --------------------------------------------------------------------------- exits


@router.post("/subjects/{number}/withdraw", include_in_schema=False)
async def withdraw(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, form: followup.withdraw(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            withdrawn_on=field_date(form, "withdrawn_on"),
            reason=field_text(form, "reason"),
            follow_up_contact_allowed=field_text(form, "follow_up_contact_allowed") == "yes",
        ),
        done="Withdrawal recorded; the data stay and the subject stays in its arm.",
    )


@router.post("/subjects/{number}/lost-to-follow-up", include_in_schema=False)
async def lost(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, form: followup.mark_lost_to_follow_up(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            on=field_date(form, "lost_on"),
            reason=field_text(form, "lost_reason"),
        ),
        done="Recorded as lost to follow-up.",
    )


@router.post("/subjects/{number}/death", include_in_schema=False)
async def death(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, form: followup.record_death(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            death_date=field_date(form, "death_date"),
            cause=field_text(form, "cause"),
        ),
        done="Death recorded.",
    )


@router.post("/subjects/{number}/complete", include_in_schema=False)
async def complete_subject(request: Request, number: str) -> Response:
    return await _act(
        request,
        number,
        lambda web, _form: followup.complete_subject(web.ctx, web.actor, web.study_id, number),
        done="Follow-up complete: the subject has finished the study.",
    )
