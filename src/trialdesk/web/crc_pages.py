"""The Central Review Committee's queue and its e-signed decisions (ELIG-3).

Pages decide nothing: every role, site, state and blinding decision is the service's; a page
renders what a service returns and shows its refusal."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trialdesk.domain.errors import (
    AuthenticationFailed,
    ValidationFailed,
)
from trialdesk.services import (
    crc,
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
    return render(
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
    web = web_session(request)
    return _crc_page(request, web)


@router.post("/crc/{number}", include_in_schema=False)
async def crc_decide(request: Request, number: str) -> Response:
    web, form = await post_form(request)
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
        return _crc_page(request, web, message=exc.message, status=422)
    return redirect("/crc")
