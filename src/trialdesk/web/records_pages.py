"""Pages of issue 15, lane x15b: the data-quality report with the missing-data report and the
on-demand run (REC-6, REC-10), the re-consent worklist (REC-8), and a subject's consents with
the re-consent form. Each page calls the services; an action is offered only to a role whose
permission the service would accept."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.domain.permissions import Permission
from trialdesk.services import consent, quality
from trialdesk.web.forms import field_date, field_text
from trialdesk.web.render import render
from trialdesk.web.session import Web, post_form, redirect, web_session

router = APIRouter()


def _may(web: Web, permission: Permission) -> bool:
    return web.actor.may(web.study_id, permission)


def _quality_page(
    request: Request, web: Web, *, message: str | None = None, status: int = 200
) -> Response:
    return render(
        request,
        "records_quality.html",
        web,
        status=status,
        findings=quality.quality_report(web.ctx, web.actor, web.study_id),
        missing=quality.missing_data(web.ctx, web.actor, web.study_id),
        may_run=_may(web, Permission.DQ_RUN),
        message=message,
    )


@router.get("/quality", include_in_schema=False)
def quality_page(request: Request) -> Response:
    return _quality_page(request, web_session(request))


@router.post("/quality/run", include_in_schema=False)
async def quality_run(request: Request) -> Response:
    web, _form = await post_form(request)
    run = quality.run_quality_rules(web.ctx, web.actor, web.study_id)
    message = (
        f"{run.subjects} subjects checked: {len(run.opened)} queries opened, "
        f"{len(run.reopened)} reopened, {len(run.resolved)} resolved"
    )
    return _quality_page(request, web, message=message)


@router.get("/consents", include_in_schema=False)
def consent_worklist_page(request: Request) -> Response:
    web = web_session(request)
    due = consent.consent_worklist(web.ctx, web.actor, web.study_id)
    return render(request, "records_consents.html", web, due=due)


def _subject_consents(
    request: Request,
    web: Web,
    number: str,
    *,
    message: str | None = None,
    status: int = 200,
    values: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "records_subject_consents.html",
        web,
        status=status,
        view=consent.subject_consents(web.ctx, web.actor, web.study_id, number),
        may_record=_may(web, Permission.CONSENT_RECORD),
        message=message,
        values=values or {},
    )


@router.get("/subjects/{number}/consents", include_in_schema=False)
def subject_consents_page(request: Request, number: str) -> Response:
    return _subject_consents(request, web_session(request), number)


@router.post("/subjects/{number}/reconsent", include_in_schema=False)
async def reconsent(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    try:
        consent.record_reconsent(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            signed_on=field_date(form, "signed_on"),
            version=field_text(form, "version"),
            document=field_text(form, "document") or None,
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        typed = {k: field_text(form, k) for k in ("signed_on", "version", "document")}
        return _subject_consents(
            request, web, number, message=exc.message, status=422, values=typed
        )
    return redirect(f"/subjects/{quote(number)}/consents", flash="Re-consent recorded.")
