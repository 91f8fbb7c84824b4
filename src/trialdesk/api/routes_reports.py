"""Reports (REP-1..3) and standard exports (EXP-1). Each route calls one service; the services
decide roles, site scope and blinding (RAND-6), so a blinded caller gets pooled counts only,
the DSMB report is refused with ``blinded``, and only the unblinded statistician may export
with ``unblinded=true``.

The response models of this module describe the reports' own documents and live here, next to
the only routes that return them.
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
import zipfile
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep, WindowDep
from trialdesk.api.schemas import Page, QueryPublic, paginate, plain
from trialdesk.services import dashboard, data_queries, exports, report_views, reports, submission
from trialdesk.services.access import Actor
from trialdesk.services.context import ServiceContext
from trialdesk.services.setup import StudyInfo

router = APIRouter(prefix="/studies/{study}")

MAX_API_SIMULATIONS = 100_000
"""Below the service's own bound: one request should stay a fraction of a second."""

AsOf = Annotated[dt.date | None, Query(description="clinical-date cut-off; default today (UTC)")]
Simulations = Annotated[int, Query(ge=1, le=MAX_API_SIMULATIONS)]
Seed = Annotated[int | None, Query(ge=0, le=2**32 - 1, description="for a reproducible run")]
Site = Annotated[str | None, Query(max_length=40)]


# --------------------------------------------------------------------------- response models


class CountRowPublic(BaseModel):
    key: str
    registered: int
    randomized: int


class MonthRowPublic(BaseModel):
    month: str
    registered: int
    randomized: int
    cumulative_registered: int
    cumulative_randomized: int


class PriorPublic(BaseModel):
    shape: float
    rate: float
    source: str


class CompletionPublic(BaseModel):
    """Months (and dates) until the target; ``None`` where the target may never be reached."""

    target: int
    already: int
    remaining: int
    simulations: int
    p05: float | None
    p50: float | None
    p95: float | None
    mean: float | None
    never: float
    as_of: dt.date | None = None
    date_p05: dt.date | None = None
    date_p50: dt.date | None = None
    date_p95: dt.date | None = None


class SiteForecastPublic(BaseModel):
    code: str
    opened_on: dt.date | None
    opens_on: dt.date | None
    randomized: int
    months_open: float | None
    opens_in_months: float | None
    posterior_shape: float | None
    posterior_rate: float | None
    posterior_mean: float | None


class ForecastPublic(BaseModel):
    as_of: dt.date
    target: int
    randomized: int
    prior: PriorPublic
    forecast: CompletionPublic
    sites: list[SiteForecastPublic]
    excluded_sites: list[str]


class EnrolmentReportPublic(BaseModel):
    as_of: dt.date
    target: int
    registered: int
    randomized: int
    by_site: list[CountRowPublic]
    by_country: list[CountRowPublic]
    by_region: list[CountRowPublic]
    by_month: list[MonthRowPublic]
    forecast: ForecastPublic | None


class ArmFlowPublic(BaseModel):
    code: str
    label: str
    allocated: int
    received: int
    not_received: int
    not_received_reasons: dict[str, int]
    lost_to_follow_up: int
    discontinued: int
    discontinued_reasons: dict[str, int]
    analysed: int
    excluded_from_analysis: dict[str, int]
    # issue 16 (x16b): CONSORT 2025 reasons for loss and the primary safety analysis set
    lost_reasons: dict[str, int] = {}
    analysed_safety: int | None = None
    safety_not_evaluable: int = 0


class ConsortPublic(BaseModel):
    """The pooled flow; ``arms`` only for unblinded by-arm readers (REP-2, RAND-6)."""

    phases: list[str] = []
    """CONSORT 2025 phase labels shown (issue 16): enrolment only when blinded."""
    as_of: str | None
    assessed: int
    excluded: dict[str, int]
    randomized: int
    in_screening: int
    arms: list[ArmFlowPublic] | None


class ComplianceRowPublic(BaseModel):
    visit: str
    site: str
    on_time: int
    early: int
    late: int
    missed: int


class CompliancePublic(BaseModel):
    rows: list[ComplianceRowPublic]
    totals: list[ComplianceRowPublic]


class ScreeningLogRowPublic(BaseModel):
    number: str
    site: str
    registered_on: str
    state: str
    screen_failure_reason: str | None
    screen_failure_detail: str | None


class DeviationPublic(BaseModel):
    subject: str
    site: str
    kind: str
    visit: str | None
    date: str | None
    detail: str | None


class CrcKindPublic(BaseModel):
    kind: str
    opened: int
    pending: int
    info_requested: int
    decided: int
    median_turnaround_hours: float | None
    max_turnaround_hours: float | None


class CrcWorkloadPublic(BaseModel):
    by_kind: list[CrcKindPublic]
    decisions: dict[str, int]
    by_reviewer: dict[str, int]


class UnblindingEventPublic(BaseModel):
    kind: str
    at: str
    by: str
    subject: str | None
    site: str | None
    reason: str | None


# --------------------------------------------------------------------------- REP-1


@router.get("/reports/enrolment", response_model=EnrolmentReportPublic, tags=["reports"])
def enrolment(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    as_of: AsOf = None,
    simulations: Simulations = 10_000,
    seed: Seed = None,
) -> dict[str, Any]:
    """Registered and randomized against target by site, country, region and month, with the
    forecast of the date the target is reached (REP-1); counts only."""
    report = reports.enrolment_report(ctx, actor, study.id, as_of, simulations, seed)
    return report.to_dict()


@router.get("/reports/forecast", response_model=ForecastPublic, tags=["reports"])
def forecast(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    as_of: AsOf = None,
    simulations: Simulations = 10_000,
    seed: Seed = None,
) -> dict[str, Any]:
    """The Poisson–Gamma forecast alone: prior, each site's posterior, the completion dates."""
    found = reports.forecast_from_database(ctx, actor, study.id, as_of, simulations, seed)
    return found.to_dict()


# --------------------------------------------------------------------------- REP-2


class ConsortFormat(StrEnum):
    json = "json"
    svg = "svg"
    png = "png"


FIGURE_TYPES = {"svg": "image/svg+xml", "png": "image/png"}
BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "/reports/consort",
    response_model=ConsortPublic,
    tags=["reports"],
    responses={
        200: {
            "description": "the flow as JSON, or the diagram with ?format=svg|png",
            "content": {media: BINARY for media in FIGURE_TYPES.values()},
        }
    },
)
def consort(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    as_of: AsOf = None,
    fmt: Annotated[ConsortFormat, Query(alias="format")] = ConsortFormat.json,
) -> Any:
    """The CONSORT flow (REP-2); blinded callers get the pooled boxes, never an arm."""
    if fmt is ConsortFormat.json:
        return report_views.consort(ctx, actor, study.id, as_of).to_dict()
    figure = report_views.consort_figure(ctx, actor, study.id, as_of, fmt=fmt.value)
    return Response(figure, media_type=FIGURE_TYPES[fmt.value])


# --------------------------------------------------------------------------- REP-3


@router.get("/reports/compliance", response_model=CompliancePublic, tags=["reports"])
def compliance(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, as_of: dt.date | None = None
) -> dict[str, Any]:
    """Visits on time, early, late and missed, per visit and site; own site for coordinators."""
    return report_views.visit_compliance(ctx, actor, study.id, as_of).to_dict()


@router.get("/reports/screening-log", response_model=Page[ScreeningLogRowPublic], tags=["reports"])
def screening_log(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep, as_of: dt.date | None = None
) -> dict[str, Any]:
    """Every registered subject with its state and screen-failure reason (REP-3, LIFE-3)."""
    rows = [plain(r) for r in dashboard.screening_log(ctx, actor, study.id, as_of)]
    return paginate(rows, window.offset, window.limit)


@router.get("/reports/deviations", response_model=Page[DeviationPublic], tags=["reports"])
def deviations(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep, as_of: dt.date | None = None
) -> dict[str, Any]:
    """Visits out of window or missed and randomizations in error, oldest first."""
    rows = [d.to_dict() for d in report_views.deviations(ctx, actor, study.id, as_of)]
    return paginate(rows, window.offset, window.limit)


@router.get("/reports/queries", response_model=Page[QueryPublic], tags=["reports"])
def queries(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    window: WindowDep,
    site: Site = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> dict[str, Any]:
    """Data queries not yet closed (or of one status), oldest first; own site for site roles."""
    found = data_queries.open_queries(ctx, actor, study.id, site=site, status=status)
    return paginate([plain(q) for q in found], window.offset, window.limit)


@router.get("/reports/crc", response_model=CrcWorkloadPublic, tags=["reports"])
def crc_workload(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, as_of: dt.date | None = None
) -> dict[str, Any]:
    """CRC cases by kind with turnaround, decisions by outcome and by reviewer."""
    return report_views.crc_workload(ctx, actor, study.id, as_of).to_dict()


@router.get(
    "/reports/unblinding-events", response_model=Page[UnblindingEventPublic], tags=["reports"]
)
def unblinding_events(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep
) -> dict[str, Any]:
    """Every unblinding (RAND-7): who, when and why, never the arm."""
    rows = [e.to_dict() for e in report_views.unblinding_events(ctx, actor, study.id)]
    return paginate(rows, window.offset, window.limit)


@router.get("/reports/dsmb", response_class=HTMLResponse, tags=["reports"])
def dsmb(ctx: CtxDep, actor: ActorDep, study: StudyDep, as_of: AsOf = None) -> HTMLResponse:
    """The DSMB by-arm report as one HTML document; refused (``blinded``) for blinded roles."""
    return HTMLResponse(report_views.dsmb_report_html(ctx, actor, study.id, as_of))


# --------------------------------------------------------------------------- EXP-1


Exporter = Callable[..., exports.ExportResult]
ZIP_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a zip archive of the exported files",
        "content": {"application/zip": BINARY},
    }
}
Unblinded = Annotated[
    bool, Query(description="with arms; for the unblinded statistician only (RAND-6)")
]


def _zipped(
    exporter: Exporter, ctx: ServiceContext, actor: Actor, study: StudyInfo, unblinded: bool
) -> Response:
    """Run one export into a temporary directory and answer with its files as one zip."""
    with tempfile.TemporaryDirectory(prefix="trialdesk-export-") as tmp:
        out = Path(tmp) / "export"
        result = exporter(ctx, actor, study.id, out, unblinded=unblinded)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in result.files:
                archive.write(out / name, arcname=name)
    filename = f"{study.code}-{result.kind}{'-unblinded' if unblinded else ''}.zip"
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post("/exports/csv", response_class=Response, tags=["exports"], responses=ZIP_RESPONSE)
def export_csv(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, unblinded: Unblinded = False
) -> Response:
    """One CSV per table (EXP-1); blinded: no encrypted column, no protocol text, no arm."""
    return _zipped(exports.export_csv, ctx, actor, study, unblinded)


@router.post("/exports/odm", response_class=Response, tags=["exports"], responses=ZIP_RESPONSE)
def export_odm(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, unblinded: Unblinded = False
) -> Response:
    """The study as one CDISC ODM 1.3.2 snapshot, ``odm.xml`` (EXP-1)."""
    return _zipped(exports.export_odm, ctx, actor, study, unblinded)


@router.post("/exports/sdtm", response_class=Response, tags=["exports"], responses=ZIP_RESPONSE)
def export_sdtm(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, unblinded: Unblinded = False
) -> Response:
    """SDTM datasets as SAS XPORT v5 with Define-XML 2.1 (``define.xml``, ``define.html``) and
    the annotated CRF (EXP-1, issue 16); blinded: arm columns empty, no TA, DI, DX or SUPPPR."""
    return _zipped(exports.export_sdtm, ctx, actor, study, unblinded)


@router.post("/exports/adam", response_class=Response, tags=["exports"], responses=ZIP_RESPONSE)
def export_adam(ctx: CtxDep, actor: ActorDep, study: StudyDep) -> Response:
    """ADaM (ADSL, ADMAE for END-1, ADHCE for END-2) with Define-XML 2.1 (issue 16): by arm,
    so for the unblinded statistician only, and audited as a disclosure."""
    return _zipped(submission.export_adam, ctx, actor, study, True)
