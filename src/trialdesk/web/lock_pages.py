"""Pages of issue 15, lane x15a: a subject's locks, signatures and SDV with small forms (lock,
unlock, verify, sign) and the database-lock checklist. Each page calls the services; a form
is offered only to a role whose permission the service would accept; a refusal (a lock, a
wrong password) is the pages' one refusal page."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from trialdesk.domain.permissions import Permission
from trialdesk.services.records import checklist, locks, review
from trialdesk.web.forms import field_text
from trialdesk.web.render import render
from trialdesk.web.session import Web, post_form, redirect, web_session

router = APIRouter()


def _may(web: Web, permission: Permission) -> bool:
    return web.actor.may(web.study_id, permission)


@router.get("/subjects/{number}/records", include_in_schema=False)
def subject_records_page(request: Request, number: str) -> Response:
    web = web_session(request)
    sdv = (
        review.sdv_status(web.ctx, web.actor, study_id=web.study_id, number=number).records
        if _may(web, Permission.SDV_READ)
        else []
    )
    return render(
        request,
        "records_holds.html",
        web,
        number=number,
        locks=locks.subject_locks(web.ctx, web.actor, study_id=web.study_id, number=number),
        signatures=review.subject_signatures(
            web.ctx, web.actor, study_id=web.study_id, number=number
        ),
        sdv=sdv,
        may_lock=_may(web, Permission.RECORD_LOCK),
        may_sdv=_may(web, Permission.SDV_MARK),
        may_sign=_may(web, Permission.RECORD_SIGN),
    )


def _back(number: str, flash: str) -> Response:
    return redirect(f"/subjects/{quote(number)}/records", flash=flash)


@router.post("/subjects/{number}/records/lock", include_in_schema=False)
async def lock_record(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    view = locks.lock_record(
        web.ctx,
        web.actor,
        study_id=web.study_id,
        number=number,
        level=field_text(form, "level"),
        visit=field_text(form, "visit") or None,
        form=field_text(form, "form") or None,
        reason=field_text(form, "reason"),
        password=field_text(form, "password"),
    )
    return _back(number, f"Locked: {view.describes}.")


@router.post("/records/locks/{lock_id}/unlock", include_in_schema=False)
async def unlock_record(request: Request, lock_id: int) -> Response:
    web, form = await post_form(request)
    view = locks.unlock_record(
        web.ctx,
        web.actor,
        study_id=web.study_id,
        lock_id=lock_id,
        reason=field_text(form, "reason"),
        password=field_text(form, "password"),
    )
    return _back(view.subject or "", f"Unlocked: {view.describes}.")


@router.post("/subjects/{number}/records/sdv", include_in_schema=False)
async def mark_sdv(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    view = review.mark_sdv(
        web.ctx,
        web.actor,
        study_id=web.study_id,
        number=number,
        form=field_text(form, "form"),
        visit=field_text(form, "visit"),
    )
    return _back(number, f"Source data verified: {view.form} {view.visit}.")


@router.post("/subjects/{number}/records/sign", include_in_schema=False)
async def sign(request: Request, number: str) -> Response:
    web, form = await post_form(request)
    view = review.sign_records(
        web.ctx,
        web.actor,
        study_id=web.study_id,
        number=number,
        level=field_text(form, "level"),
        visit=field_text(form, "visit") or None,
        password=field_text(form, "password"),
    )
    return _back(number, f"Signed by {view.signed_name}: {view.meaning}")


@router.get("/records/checklist", include_in_schema=False)
def checklist_page(request: Request) -> Response:
    web = web_session(request)
    view = checklist.lock_checklist(web.ctx, web.actor, study_id=web.study_id)
    history = locks.database_lock_status(web.ctx, web.actor, study_id=web.study_id)
    return render(request, "records_checklist.html", web, view=view, history=history)
