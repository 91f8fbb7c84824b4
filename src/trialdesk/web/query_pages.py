"""Data queries on the pages (issue 14, DATA-2): the query list (status, site, age, subject;
sorted and paged by the service), and a saved form instance with each field's value and the
thread of its queries, where the monitor raises, closes and reopens and the site answers
(correcting the value with a reason when the answer is a correction).

Pages decide nothing: what is offered comes from the service (``FormQueries.may_*``); a
refused step re-renders the page with the message and the text the user typed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from trialdesk.domain.errors import ActionNotAllowed, PreconditionFailed, ValidationFailed
from trialdesk.services import data_queries, query_pages
from trialdesk.services.dashboard import my_sites
from trialdesk.web.forms import field_text
from trialdesk.web.listing import choice, pager, paging, text
from trialdesk.web.render import render
from trialdesk.web.session import Web, post_form, redirect, web_session

router = APIRouter()

AGES = ("", "7", "14", "30", "60")
"""The list's age filter: any age, or raised at least that many days ago."""
ORDERS = ("oldest", "newest")
DONE = {
    "raised": "Query raised.",
    "answered": "Answer sent to the monitor.",
    "closed": "Query closed.",
    "reopened": "Query reopened.",
    "verified": "Answer verified.",
    "assigned": "Query assigned.",
}


# --------------------------------------------------------------------------- the list


@router.get("/queries", include_in_schema=False)
def query_list(request: Request) -> Response:
    web = web_session(request)
    status = choice(request, "status", query_pages.STATUS_FILTERS, query_pages.UNRESOLVED)
    age = choice(request, "older_than", AGES, "")
    order = choice(request, "order", ORDERS, "oldest")
    site = text(request, "site", 20)
    subject = text(request, "subject", 40)
    at = paging(request)
    found = query_pages.query_list(
        web.ctx,
        web.actor,
        web.study_id,
        status=status,
        site=site or None,
        older_than_days=int(age) if age else None,
        subject=subject or None,
        newest_first=order == "newest",
        offset=at.offset,
        limit=at.per_page,
    )
    filters = {
        "status": status,
        "site": site,
        "older_than": age,
        "subject": subject,
        "order": order,
    }
    return render(
        request,
        "queries.html",
        web,
        found=found,
        filters=filters,
        statuses=query_pages.STATUS_FILTERS,
        ages=AGES,
        sites=my_sites(web.ctx, web.actor, web.study_id),
        p=pager("/queries", filters, at, found.total),
    )


# --------------------------------------------------------------------------- a form instance


def form_url(number: str, form: str, visit: str, done: str = "") -> str:
    query = {k: v for k, v in (("visit", visit), ("done", done)) if v}
    tail = f"?{urlencode(query)}" if query else ""
    return f"/subjects/{quote(number)}/queries/{quote(form)}{tail}"


def _form_page(
    request: Request,
    web: Web,
    number: str,
    form: str,
    visit: str,
    *,
    message: str | None = None,
    notice: str | None = None,
    entered: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    found = query_pages.form_queries(
        web.ctx, web.actor, web.study_id, number, form_code=form, visit_code=visit
    )
    return render(
        request,
        "form_queries.html",
        web,
        status=status,
        f=found,
        message=message,
        notice=notice,
        entered=entered or {},
    )


@router.get("/subjects/{number}/queries/{form}", include_in_schema=False)
def form_with_queries(request: Request, number: str, form: str) -> Response:
    web = web_session(request)
    done = request.query_params.get("done", "")
    return _form_page(
        request,
        web,
        number,
        form,
        text(request, "visit", 20),
        notice=DONE.get(done),
    )


@router.post("/subjects/{number}/queries/{form}", include_in_schema=False)
async def raise_query(request: Request, number: str, form: str) -> Response:
    web, posted = await post_form(request)
    visit = field_text(posted, "visit")
    try:
        data_queries.raise_query(
            web.ctx,
            web.actor,
            web.study_id,
            number,
            form_code=form,
            field=field_text(posted, "field"),
            text=field_text(posted, "text"),
            visit_code=visit,
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        entered = {
            "raise": {"field": field_text(posted, "field"), "text": field_text(posted, "text")}
        }
        return _form_page(
            request, web, number, form, visit, message=exc.message, entered=entered, status=422
        )
    return redirect(form_url(number, form, visit, "raised"))


def _back(posted: FormData) -> tuple[str, str, str]:
    return field_text(posted, "subject"), field_text(posted, "form"), field_text(posted, "visit")


def _refused(request: Request, web: Web, posted: FormData, query_id: int, message: str) -> Response:
    number, form, visit = _back(posted)
    entered = {
        str(query_id): {
            "text": field_text(posted, "text"),
            "new_value": field_text(posted, "new_value"),
            "reason": field_text(posted, "reason"),
            "response": field_text(posted, "response"),
            "assignee": field_text(posted, "assignee"),
        }
    }
    if number and form:
        return _form_page(
            request, web, number, form, visit, message=message, entered=entered, status=422
        )
    return render(request, "error.html", web, status=422, refusal=message, status_code=422)


def _after(posted: FormData, view: data_queries.QueryView, done: str) -> Response:
    return redirect(form_url(view.subject, view.form, view.visit or "", done))


@router.post("/queries/{query_id}/answer", include_in_schema=False)
async def answer_query(request: Request, query_id: int) -> Response:
    web, posted = await post_form(request)
    new_value = field_text(posted, "new_value")
    try:
        view = data_queries.answer_query(
            web.ctx,
            web.actor,
            web.study_id,
            query_id,
            text=field_text(posted, "text"),
            new_value=new_value or None,
            reason=field_text(posted, "reason") or None,
            response=field_text(posted, "response") or None,
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        return _refused(request, web, posted, query_id, exc.message)
    return _after(posted, view, "answered")


@router.post("/queries/{query_id}/close", include_in_schema=False)
async def close_query(request: Request, query_id: int) -> Response:
    web, posted = await post_form(request)
    try:
        view = data_queries.close_query(
            web.ctx, web.actor, web.study_id, query_id, note=field_text(posted, "text") or None
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        return _refused(request, web, posted, query_id, exc.message)
    return _after(posted, view, "closed")


@router.post("/queries/{query_id}/reopen", include_in_schema=False)
async def reopen_query(request: Request, query_id: int) -> Response:
    web, posted = await post_form(request)
    try:
        view = data_queries.reopen_query(
            web.ctx, web.actor, web.study_id, query_id, text=field_text(posted, "text")
        )
    except (ValidationFailed, PreconditionFailed) as exc:
        return _refused(request, web, posted, query_id, exc.message)
    return _after(posted, view, "reopened")


@router.post("/queries/{query_id}/verify", include_in_schema=False)
async def verify_query(request: Request, query_id: int) -> Response:
    """The monitor accepts the site's answer (REC-7, issue 15's verified status)."""
    web, posted = await post_form(request)
    try:
        view = data_queries.verify_query(web.ctx, web.actor, web.study_id, query_id)
    except (ValidationFailed, PreconditionFailed) as exc:
        return _refused(request, web, posted, query_id, exc.message)
    return _after(posted, view, "verified")


@router.post("/queries/{query_id}/assign", include_in_schema=False)
async def assign_query(request: Request, query_id: int) -> Response:
    """The monitor hands a query to one person of the site who answers queries, or back to
    the site as a whole with an empty name (REC-7, issue 15)."""
    web, posted = await post_form(request)
    try:
        view = data_queries.assign_query(
            web.ctx, web.actor, web.study_id, query_id, assignee=field_text(posted, "assignee")
        )
    except (ValidationFailed, PreconditionFailed, ActionNotAllowed) as exc:
        return _refused(request, web, posted, query_id, exc.message)
    return _after(posted, view, "assigned")
