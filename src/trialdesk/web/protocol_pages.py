"""The protocol page (PROT-2): every role reads the versions and their signers; the study
manager previews a new version's diff and signs it; the statistician co-signs a pending
change of the allocation design. The services decide roles and blinding."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trialdesk.domain.errors import (
    AuthenticationFailed,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.protocol.loader import LoadedProtocol, ProtocolInvalid, parse_protocol
from trialdesk.services import amendments
from trialdesk.web.forms import field_text
from trialdesk.web.render import render
from trialdesk.web.session import Web, post_form, redirect, web_session

router = APIRouter()


def _page(
    request: Request,
    web: Web,
    *,
    values: dict[str, str] | None = None,
    preview: amendments.AmendmentPreview | None = None,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    versions = amendments.list_protocol_versions(web.ctx, web.actor, web.study_id)
    pending: list[dict[str, Any]] = []
    for v in versions:
        if v.status == "pending" and v.amendment is not None:
            view = amendments.amendment_diff(web.ctx, web.actor, web.study_id, v.amendment)
            pending.append(view.to_dict())
    return render(
        request,
        "protocol.html",
        web,
        status=status,
        versions=[v.to_dict() for v in versions],
        pending=pending,
        values=values or {},
        preview=preview.to_dict() if preview else None,
        message=message,
    )


@router.get("/protocol", include_in_schema=False)
def protocol_page(request: Request) -> Response:
    web = web_session(request)
    return _page(request, web)


def _effective(raw: str) -> dt.date | None:
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(
            f"effective date {raw!r} is not a date (YYYY-MM-DD)", {"effective_from": "not a date"}
        ) from None


def _loaded(text: str) -> LoadedProtocol:
    try:
        return parse_protocol(text, source="the pasted protocol")
    except ProtocolInvalid as exc:
        raise ValidationFailed(
            exc.message + "; every problem: " + "; ".join(str(p) for p in exc.problems),
            {"text": "invalid protocol"},
        ) from None


@router.post("/protocol/preview", include_in_schema=False)
async def protocol_preview(request: Request) -> Response:
    """The diff and what it changes for enrolled subjects; writes nothing (dry run)."""
    web, form = await post_form(request)
    values = {
        "text": str(form.get("text") or ""),
        "effective_from": field_text(form, "effective_from"),
    }
    try:
        preview = amendments.preview_amendment(
            web.ctx,
            web.actor,
            web.study_id,
            _loaded(values["text"]),
            effective_from=_effective(values["effective_from"]),
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        return _page(request, web, values=values, message=exc.message, status=422)
    return _page(request, web, values=values, preview=preview)


@router.post("/protocol/amend", include_in_schema=False)
async def protocol_amend(request: Request) -> Response:
    web, form = await post_form(request)
    values = {
        "text": str(form.get("text") or ""),
        "effective_from": field_text(form, "effective_from"),
    }
    try:
        amendments.propose_amendment(
            web.ctx,
            web.actor,
            web.study_id,
            _loaded(values["text"]),
            reason=field_text(form, "reason"),
            password=str(form.get("password") or ""),
            effective_from=_effective(values["effective_from"]),
        )
    except (ValidationFailed, PreconditionFailed, AuthenticationFailed) as exc:
        return _page(request, web, values=values, message=exc.message, status=422)
    return redirect("/protocol", flash="Amendment proposed and signed by you.")


@router.post("/protocol/amendments/{amendment_id}/sign", include_in_schema=False)
async def protocol_sign(request: Request, amendment_id: int) -> Response:
    web, form = await post_form(request)
    try:
        amendments.sign_amendment(
            web.ctx, web.actor, web.study_id, amendment_id, str(form.get("password") or "")
        )
    except (PreconditionFailed, AuthenticationFailed) as exc:
        return _page(request, web, message=exc.message, status=422)
    return redirect("/protocol", flash="Amendment co-signed.")
