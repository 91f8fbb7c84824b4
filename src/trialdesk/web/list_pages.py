"""The lists that scale (issue 14): the subject list with search, site and state filters,
sorting and pagination, all done by the service in the repository; the page passes the
choices on and renders one page. Also the record status grid and the subject casebook.
Blinded and unblinded users get the same columns and orderings: no sort key or column
depends on an arm (RAND-6)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from trialdesk.domain.lifecycle import SubjectState
from trialdesk.services import casebook, record_grid
from trialdesk.services.dashboard import my_sites, screening_log_page
from trialdesk.services.queries import SUBJECT_ORDERS, list_subjects
from trialdesk.web.listing import choice, pager, paging, text
from trialdesk.web.render import render
from trialdesk.web.session import web_session

router = APIRouter()

STATES = ("", *(s.value for s in SubjectState))
DIRECTIONS = ("asc", "desc")


def sort_links(path: str, filters: dict[str, str], keys: tuple[str, ...]) -> dict[str, str]:
    """For each sort key, the link that sorts by it (and flips the direction when it is the
    current key), keeping the filters."""
    links = {}
    for key in keys:
        flip = filters.get("order") == key and filters.get("dir") == "asc"
        wanted = {**filters, "order": key, "dir": "desc" if flip else "asc"}
        links[key] = f"{path}?{urlencode({k: v for k, v in wanted.items() if v})}"
    return links


@router.get("/subjects", include_in_schema=False)
def subject_list(request: Request) -> Response:
    web = web_session(request)
    state = choice(request, "state", STATES, "")
    order = choice(request, "order", SUBJECT_ORDERS, "number")
    direction = choice(request, "dir", DIRECTIONS, "asc")
    site = text(request, "site", 20)
    search = text(request, "q", 40)
    at = paging(request)
    found = list_subjects(
        web.ctx,
        web.actor,
        web.study_id,
        site=site or None,
        state=state or None,
        search=search or None,
        order=order,
        descending=direction == "desc",
        offset=at.offset,
        limit=at.per_page,
    )
    filters = {"site": site, "state": state, "q": search, "order": order, "dir": direction}
    return render(
        request,
        "subjects.html",
        web,
        found=found,
        filters=filters,
        states=STATES,
        sites=my_sites(web.ctx, web.actor, web.study_id),
        sorts=sort_links("/subjects", filters, SUBJECT_ORDERS),
        p=pager("/subjects", filters, at, found.total),
    )


# --------------------------------------------------------------------------- status grid

GRID_STATUSES = ("", *record_grid.CELL_STATUSES)
ICONS = {
    "complete": "●",
    "corrected": "◆",
    "query": "?",
    "not_started": "○",
    "due": "◔",
    "overdue": "!",
    "missed": "✕",
    "upcoming": "·",
    "": "",
}


@router.get("/grid", include_in_schema=False)
def status_grid(request: Request) -> Response:
    """The record status grid, study-wide or for one site."""
    web = web_session(request)
    state = choice(request, "state", STATES, "")
    status = choice(request, "status", GRID_STATUSES, "")
    site = text(request, "site", 20)
    at = paging(request)
    grid = record_grid.status_grid(
        web.ctx,
        web.actor,
        web.study_id,
        site=site or None,
        state=state or None,
        status=status or None,
        offset=at.offset,
        limit=at.per_page,
    )
    filters = {"site": site, "state": state, "status": status}
    return render(
        request,
        "grid.html",
        web,
        grid=grid,
        filters=filters,
        states=STATES,
        statuses=GRID_STATUSES,
        words=record_grid.CELL_WORDS,
        icons=ICONS,
        sites=my_sites(web.ctx, web.actor, web.study_id),
        p=pager("/grid", filters, at, grid.total),
    )


# --------------------------------------------------------------------------- casebook


@router.get("/subjects/{number}/casebook", include_in_schema=False)
def subject_casebook(request: Request, number: str) -> Response:
    web = web_session(request)
    book = casebook.casebook(web.ctx, web.actor, web.study_id, number)
    return render(request, "casebook.html", web, book=book)


# --------------------------------------------------------------------------- screening log


@router.get("/screening-log", include_in_schema=False)
def screening_log(request: Request) -> Response:
    """The screening log (REP-3) as a list that scales: newest first, filtered, paged."""
    web = web_session(request)
    state = choice(request, "state", STATES, "")
    site = text(request, "site", 20)
    search = text(request, "q", 40)
    at = paging(request)
    found = screening_log_page(
        web.ctx,
        web.actor,
        web.study_id,
        site=site or None,
        state=state or None,
        search=search or None,
        offset=at.offset,
        limit=at.per_page,
    )
    filters = {"site": site, "state": state, "q": search}
    return render(
        request,
        "screening_log.html",
        web,
        found=found,
        filters=filters,
        states=STATES,
        sites=my_sites(web.ctx, web.actor, web.study_id),
        p=pager("/screening-log", filters, at, found.total),
    )
