"""The audit trail page (AUD-1): the study's trail filtered by action, user, subject and date
range, as the signed-in reader may see it. The service decides who reads it and projects it
for blinded readers (services/audit_trail.py); the page shows what it gets."""

from __future__ import annotations

import datetime as dt
import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from trialdesk.domain.errors import ValidationFailed
from trialdesk.services import audit_trail
from trialdesk.web.render import render
from trialdesk.web.session import web_session

router = APIRouter()
PAGE = 100


def _day(raw: str | None, name: str) -> dt.date | None:
    text = (raw or "").strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            f"{name}: {text!r} is not a date (YYYY-MM-DD)", {name: "not a date (YYYY-MM-DD)"}
        ) from None


@router.get("/audit", include_in_schema=False)
def audit_page(request: Request) -> Response:
    web = web_session(request)
    query = request.query_params
    values = {
        name: (query.get(name) or "").strip()[:80]
        for name in ("action", "user", "subject", "since", "until")
    }
    try:
        page_number = max(int(query.get("page") or 1), 1)
    except ValueError:
        page_number = 1
    message = None
    status = 200
    try:
        where = audit_trail.AuditFilter(
            action=values["action"] or None,
            user=values["user"] or None,
            subject=values["subject"] or None,
            since=_day(values["since"], "since"),
            until=_day(values["until"], "until"),
        )
        page = audit_trail.audit_entries(
            web.ctx, web.actor, web.study_id, where, limit=PAGE, offset=(page_number - 1) * PAGE
        )
    except ValidationFailed as exc:
        page, message, status = None, exc.message, 422
    rows = [
        {
            **entry.to_dict(),
            "values": "" if entry.new is None else json.dumps(entry.new, sort_keys=True),
        }
        for entry in (page.items if page else [])
    ]
    return render(
        request,
        "audit.html",
        web,
        status=status,
        values=values,
        rows=rows,
        total=page.total if page else 0,
        blinded=page.blinded if page else True,
        page_number=page_number,
        pages=max((page.total + PAGE - 1) // PAGE, 1) if page else 1,
        message=message,
    )
