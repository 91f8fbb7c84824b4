"""Exits through the protocol's forms and follow-up contacts after a withdrawal (issue 14
deliver 1 for lane x15b's services, REC-9): death or withdrawal recorded on the protocol's
death / withdrawal form (with what the subject withdraws from), and the annual contacts of a
subject who withdrew from visits but not from contact. Offered only when the service allows
it (``subject_actions``, ``exits.contacts_offered``); a refusal re-renders what was typed."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trialdesk.domain.errors import PermissionDenied, PreconditionFailed, ValidationFailed
from trialdesk.http_status import status_of
from trialdesk.protocol.specs import exit_form_specs, withdrawal_kind_specs
from trialdesk.services import exits
from trialdesk.services.dashboard import current_protocol
from trialdesk.services.queries import subject_actions
from trialdesk.web.followup_pages import _date_fields
from trialdesk.web.forms import field_date, field_errors, field_text, flat_form, form_values
from trialdesk.web.session import Web, post_form, redirect, web_session
from trialdesk.web.subject_pages import _entry_page, subject_url

router = APIRouter()

OFFERED = {"death": "record_death", "withdrawal": "withdraw"}
"""The subject action (``subject_actions``) that offers each exit's form."""
TITLES = {"death": "Death", "withdrawal": "Withdrawal"}


def _exit_form(web: Web, exit: str) -> tuple[str, list[tuple[str, str]]]:
    """The protocol's form for ``exit`` and, for a withdrawal without a kind field on the
    form, the kinds to choose from."""
    protocol = current_protocol(web.ctx, web.actor, web.study_id).protocol
    spec = exit_form_specs(protocol).get(exit)
    if spec is None:
        raise ValidationFailed(
            f"this protocol names no {exit} form (its exits section)", {"exit": "no form"}
        )
    kinds: list[tuple[str, str]] = []
    if exit == "withdrawal" and spec.kind_field is None:
        kinds = [(k.code, k.label) for k in withdrawal_kind_specs(protocol)]
    return spec.form, kinds


def _exit_page(
    request: Request,
    web: Web,
    number: str,
    exit: str,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    code, kinds = _exit_form(web, exit)
    return _entry_page(
        request,
        web,
        number,
        title=TITLES[exit],
        action=f"/subjects/{quote(number)}/exit-form",
        codes=[code],
        values=values,
        errors=errors,
        message=message,
        status=status,
        hidden_inputs={"exit": exit},
        kinds=kinds,
    )


@router.get("/subjects/{number}/exit-form/{exit}", include_in_schema=False)
def exit_form(request: Request, number: str, exit: str) -> Response:
    """``death`` or ``withdrawal``: the protocol's form, to whom the service would let
    record that exit now."""
    web = web_session(request)
    offered = subject_actions(web.ctx, web.actor, web.study_id, number)  # scope first (ACC-1)
    if exit not in OFFERED:
        raise ValidationFailed("exit is death or withdrawal", {"exit": "unknown"})
    if OFFERED[exit] not in offered:
        raise PermissionDenied(f"{web.actor.username} cannot record the {exit} of {number} now")
    return _exit_page(request, web, number, exit)


@router.post("/subjects/{number}/exit-form", include_in_schema=False)
async def save_exit_form(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    subject_actions(web.ctx, web.actor, web.study_id, number)  # scope first: ACC-1's 404
    exit = field_text(form, "exit")
    if exit not in OFFERED:
        raise ValidationFailed("exit is death or withdrawal", {"exit": "unknown"})
    code, _kinds = _exit_form(web, exit)
    try:
        exits.record_exit(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            exit=exit,
            values=form_values(form, code),
            kind=field_text(form, "kind") or None,
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        return _exit_page(
            request,
            web,
            number,
            exit,
            values=flat_form(form),
            errors=field_errors(getattr(exc, "problems", {}), [code]),
            message=exc.message,
            status=status_of(exc),
        )
    done = "Death recorded." if exit == "death" else "Withdrawal recorded on its form."
    return redirect(subject_url(number), flash=done)


# --------------------------------------------------------------------------- contacts


def _contact_forms(web: Web, visit: str) -> list[str]:
    protocol = current_protocol(web.ctx, web.actor, web.study_id).protocol
    spec = next((v for v in protocol.visits if v.code == visit), None)
    return list(spec.forms) if spec is not None else []


def _contact_page(
    request: Request,
    web: Web,
    number: str,
    visit: str,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    codes = _contact_forms(web, visit)
    return _entry_page(
        request,
        web,
        number,
        title=f"Follow-up contact {visit}",
        action=f"/subjects/{quote(number)}/contacts",
        codes=codes,
        values=values,
        errors=errors,
        message=message,
        status=status,
        visit_date="contact",
        hidden_inputs={"visit": visit},
        hidden_fields={f"{c}.{f}" for c, f in _date_fields(web, codes).items()},
    )


@router.get("/subjects/{number}/contacts/{visit}", include_in_schema=False)
def contact_form(request: Request, number: str, visit: str) -> Response:
    """A contact (``Y3``) the service would take now (``exits.contacts_offered``)."""
    web = web_session(request)
    if visit not in exits.contacts_offered(web.ctx, web.actor, web.study_id, number):
        raise PermissionDenied(
            f"{web.actor.username} cannot record contact {visit} of {number} now"
        )
    return _contact_page(request, web, number, visit)


@router.post("/subjects/{number}/contacts", include_in_schema=False)
async def save_contact(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    exits.contacts_offered(web.ctx, web.actor, web.study_id, number)  # scope first (ACC-1)
    visit = field_text(form, "visit")
    codes = _contact_forms(web, visit)
    try:
        on = field_date(form, "visit_date")
        forms = {c: form_values(form, c) for c in codes}
        for c, f in _date_fields(web, codes).items():
            forms[c][f] = on.isoformat()
        exits.record_contact(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            visit_code=visit,
            contact_date=on,
            forms=forms,
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        if not codes:
            raise
        return _contact_page(
            request,
            web,
            number,
            visit,
            values=flat_form(form),
            errors=field_errors(getattr(exc, "problems", {}), codes),
            message=exc.message,
            status=status_of(exc),
        )
    return redirect(subject_url(number, "visits"), flash=f"Contact {visit} recorded.")
