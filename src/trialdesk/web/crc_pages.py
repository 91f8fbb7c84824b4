"""The Central Review Committee's queue, the case dossier it decides on, its e-signed
decisions (ELIG-3, THER-2, THER-3), and the site's replies to its requests for more
information (issue 14).

Pages decide nothing: every role, site, state and blinding decision is the service's; a page
renders what a service returns and shows its refusal. A refused decision re-renders the
dossier with what the member typed (the reason is never lost); no decision is preselected.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trialdesk.domain.errors import (
    AuthenticationFailed,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.services import (
    crc,
    crc_dossier,
)
from trialdesk.web.forms import (
    field_text,
)
from trialdesk.web.render import render
from trialdesk.web.session import (
    Web,
    post_form,
    redirect,
    web_session,
)

router = APIRouter()


# --------------------------------------------------------------------------- CRC


def _crc_page(
    request: Request, web: Web, message: str | None = None, status: int = 200
) -> HTMLResponse:
    cases = crc.crc_queue(web.ctx, web.actor, web.study_id)
    return render(request, "crc.html", web, status=status, cases=cases, message=message)


@router.get("/crc", include_in_schema=False)
def crc_queue(request: Request) -> Response:
    web = web_session(request)
    return _crc_page(request, web)


def _dossier_page(
    request: Request,
    web: Web,
    case_id: int,
    *,
    message: str | None = None,
    notice: str | None = None,
    entered: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    dossier = crc_dossier.case_dossier(web.ctx, web.actor, web.study_id, case_id)
    kind = dossier.case.kind
    decisions: dict[str, str] = (
        {code: meaning for code, (_action, meaning) in crc.CRC_DECISIONS.items()}
        if kind == "eligibility"
        else dict(crc.THERAPY_DECISIONS)
    )
    return render(
        request,
        "crc_case.html",
        web,
        status=status,
        d=dossier,
        c=dossier.case,
        decisions=decisions,
        message=message,
        notice=notice,
        entered=entered or {},
    )


@router.get("/crc/cases/{case_id}", include_in_schema=False)
def crc_case(request: Request, case_id: int) -> Response:
    web = web_session(request)
    signed = request.query_params.get("signed") == "1"
    return _dossier_page(
        request, web, case_id, notice="Your signed decision is recorded." if signed else None
    )


def _signed(case_id: str) -> Response:
    return redirect(f"/crc/cases/{quote(case_id)}?signed=1") if case_id else redirect("/crc")


@router.post("/crc/{number}", include_in_schema=False)
async def crc_decide(request: Request, number: str) -> Response:
    """The eligibility decision (ELIG-3); from the dossier the form names its case."""
    web, form = await post_form(request)
    case_id = field_text(form, "case")
    try:
        crc.crc_eligibility_decision(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            decision=field_text(form, "decision"),
            reason=field_text(form, "reason"),
            password=str(form.get("password") or ""),
        )
    except (ValidationFailed, AuthenticationFailed) as exc:
        if case_id.isdigit():
            return _refused(request, web, int(case_id), exc.message, form)
        return _crc_page(request, web, message=exc.message, status=422)
    return _signed(case_id if case_id.isdigit() else "")


def _refused(request: Request, web: Web, case_id: int, message: str, form: Any) -> Response:
    entered = {"decision": field_text(form, "decision"), "reason": field_text(form, "reason")}
    return _dossier_page(request, web, case_id, message=message, entered=entered, status=422)


@router.post("/crc/cases/{case_id}/therapy", include_in_schema=False)
async def crc_therapy_decide(request: Request, case_id: int) -> Response:
    """The therapy review (THER-2, THER-3): the subject stays on the trial whatever it says."""
    web, form = await post_form(request)
    try:
        crc.decide_therapy_case(
            web.ctx,
            web.actor,
            web.study_id,
            case_id,
            classification=field_text(form, "decision"),
            reason=field_text(form, "reason"),
            password=str(form.get("password") or ""),
        )
    except (ValidationFailed, AuthenticationFailed) as exc:
        return _refused(request, web, case_id, exc.message, form)
    return _signed(str(case_id))


# --------------------------------------------------------------------------- the site's reply


def _replies_page(
    request: Request,
    web: Web,
    *,
    message: str | None = None,
    notice: str | None = None,
    entered: dict[int, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    waiting = crc_dossier.cases_waiting_for_site(web.ctx, web.actor, web.study_id)
    return render(
        request,
        "crc_replies.html",
        web,
        status=status,
        waiting=waiting,
        message=message,
        notice=notice,
        entered=entered or {},
    )


@router.get("/crc-requests", include_in_schema=False)
def crc_requests(request: Request) -> Response:
    web = web_session(request)
    replied = request.query_params.get("replied", "")
    notice = f"Your reply on case {replied} is sent to the committee." if replied else None
    return _replies_page(request, web, notice=notice)


@router.post("/crc-requests/{case_id}", include_in_schema=False)
async def crc_reply(request: Request, case_id: int) -> Response:
    web, form = await post_form(request)
    text = field_text(form, "text")
    try:
        crc_dossier.reply_to_crc(web.ctx, web.actor, web.study_id, case_id, text=text)
    except (ValidationFailed, PreconditionFailed) as exc:
        return _replies_page(request, web, message=exc.message, entered={case_id: text}, status=422)
    return redirect(f"/crc-requests?replied={case_id}")
