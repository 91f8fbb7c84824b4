"""The enrolment dashboard, the CONSORT and enrolment images and the report downloads.

Pages decide nothing: every role, site, state and blinding decision is the service's; a page
renders what a service returns and shows its refusal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from trialdesk.domain.errors import (
    NotFound,
)
from trialdesk.reports.csv_cells import csv_text
from trialdesk.reports.enrolment import render_plot
from trialdesk.services import (
    report_views,
    reports,
)
from trialdesk.services.dashboard import enrolment, screening_log, screening_log_page
from trialdesk.services.data_queries import open_queries
from trialdesk.web.forms import (
    or_refusal,
)
from trialdesk.web.render import render
from trialdesk.web.session import (
    Web,
    web_session,
)

router = APIRouter()


# --------------------------------------------------------------------------- dashboard


def _bars(rows: list[Any], target: int | None = None) -> dict[str, Any]:
    """Geometry of a horizontal bar chart drawn as inline SVG by the template."""
    top = max([target or 0] + [max(r.registered, r.randomized) for r in rows] + [1])
    width = 300
    return {
        "width": width,
        "height": 28 * len(rows) + 10,
        "bars": [
            {
                "key": r.key,
                "y": 28 * i + 5,
                "registered": round(width * r.registered / top),
                "randomized": round(width * r.randomized / top),
                "r": r,
            }
            for i, r in enumerate(rows)
        ],
    }


@router.get("/dashboard", include_in_schema=False)
def dashboard(request: Request) -> Response:
    web = web_session(request)
    data = enrolment(web.ctx, web.actor, web.study_id)
    charts = [
        ("site", _bars(data.by_site), data.by_site),
        ("country", _bars(data.by_country), data.by_country),
        ("region", _bars(data.by_region), data.by_region),
    ]
    # issue 14: the latest registrations, and the whole log on its own paged page
    log, log_refused = or_refusal(
        lambda: screening_log_page(web.ctx, web.actor, web.study_id, limit=10)
    )
    flow, _ = or_refusal(lambda: report_views.consort(web.ctx, web.actor, web.study_id))
    return render(
        request,
        "dashboard.html",
        web,
        e=data,
        charts=charts,
        screening_log=log,
        screening_log_refused=log_refused,
        consort=flow,
        downloads=list(REPORT_DOWNLOADS),
    )


# --------------------------------------------------------------------------- report downloads


def _enrolment_rows(web: Web) -> list[dict[str, Any]]:
    data = enrolment(web.ctx, web.actor, web.study_id)
    levels = (("site", data.by_site), ("country", data.by_country), ("region", data.by_region))
    return [
        {"level": level, "key": r.key, "registered": r.registered, "randomized": r.randomized}
        for level, rows in levels
        for r in rows
    ]


def _compliance_rows(web: Web) -> list[dict[str, Any]]:
    report = report_views.visit_compliance(web.ctx, web.actor, web.study_id)
    return [asdict(r) for r in [*report.rows, *report.totals]]


REPORT_DOWNLOADS: dict[str, Callable[[Web], list[dict[str, Any]]]] = {
    "enrolment": _enrolment_rows,
    "screening-log": lambda w: [asdict(r) for r in screening_log(w.ctx, w.actor, w.study_id)],
    "compliance": _compliance_rows,
    "deviations": lambda w: [
        d.to_dict() for d in report_views.deviations(w.ctx, w.actor, w.study_id)
    ],
    "queries": lambda w: [asdict(q) for q in open_queries(w.ctx, w.actor, w.study_id)],
    "unblinding-events": lambda w: [
        e.to_dict() for e in report_views.unblinding_events(w.ctx, w.actor, w.study_id)
    ],
}
"""Tabular reports the dashboard links to, as JSON or CSV; each service decides who may read
it (REP-1, REP-3) and none carries an arm (RAND-6)."""


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0]) if rows else []
    return csv_text(columns, ([row.get(c) for c in columns] for row in rows))


SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
"""The figure's own policy: matplotlib writes inline styles, and the image runs no script."""


@router.get("/reports/consort.svg", include_in_schema=False)
def consort_svg(request: Request) -> Response:
    """The CONSORT diagram for the dashboard's <img> (REP-2); pooled boxes for blinded users."""
    web = web_session(request)
    figure = report_views.consort_figure(web.ctx, web.actor, web.study_id, fmt="svg")
    return Response(
        figure, media_type="image/svg+xml", headers={"Content-Security-Policy": SVG_CSP}
    )


@router.get("/reports/enrolment.svg", include_in_schema=False)
def enrolment_svg(request: Request) -> Response:
    """The enrolment plot with the forecast for the dashboard's <img> (REP-1); counts only."""
    web = web_session(request)
    report = reports.enrolment_report(
        web.ctx, web.actor, web.study_id, simulations=2000, seed=20270125
    )
    return Response(
        render_plot(report, "svg"),
        media_type="image/svg+xml",
        headers={"Content-Security-Policy": SVG_CSP},
    )


@router.get("/reports/{filename}", include_in_schema=False)
def report_download(request: Request, filename: str) -> Response:
    """``<report>.json`` or ``<report>.csv`` of one of :data:`REPORT_DOWNLOADS`."""
    web = web_session(request)
    name, _, ext = filename.rpartition(".")
    if name not in REPORT_DOWNLOADS or ext not in ("json", "csv"):
        raise NotFound(f"no report download {filename!r}")
    rows = REPORT_DOWNLOADS[name](web)
    if ext == "json":
        return JSONResponse(rows)
    disposition = f'attachment; filename="{name}.csv"'
    return Response(
        _csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": disposition},
    )
