"""Study-level work lists: visits due (SCHED-2), data queries, the CRC queue and its
therapy decisions (ELIG-3, THER-2/3). Each route calls one service."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep, WindowDep
from trialdesk.api.schemas import (
    AnswerQueryIn,
    CasePublic,
    CloseQueryIn,
    Page,
    QueryPublic,
    RaiseQueryIn,
    ReopenQueryIn,
    TherapyDecisionIn,
    VisitItemPublic,
    paginate,
    plain,
)
from trialdesk.services import crc, data_queries, visits

router = APIRouter(prefix="/studies/{study}")

Id = Annotated[int, Path(ge=1, le=2**62)]
Site = Annotated[str | None, Query(max_length=40)]


@router.get("/visits", response_model=Page[VisitItemPublic], tags=["visits"])
def visit_worklist(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    window: WindowDep,
    site: Site = None,
    state: Annotated[
        list[str] | None, Query(description="due, overdue, missed, ...; default the first three")
    ] = None,
    as_of: dt.date | None = None,
) -> dict[str, Any]:
    """Due, overdue and missed visits, per site or overall, in each site's time zone."""
    states = tuple(state) if state else ("due", "overdue", "missed")
    items = visits.visit_worklist(ctx, actor, study.id, as_of=as_of, site=site, states=states)
    return paginate([plain(i) for i in items], window.offset, window.limit)


def _query(view: data_queries.QueryView) -> QueryPublic:
    return QueryPublic.model_validate(plain(view))


@router.get("/queries", response_model=Page[QueryPublic], tags=["data queries"])
def list_queries(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    window: WindowDep,
    site: Site = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    assignee: Annotated[str | None, Query(max_length=80)] = None,
) -> dict[str, Any]:
    """Queries not yet closed (or of one status), oldest first; own site for site roles."""
    items = data_queries.open_queries(
        ctx, actor, study.id, site=site, status=status, assignee=assignee
    )
    return paginate([_query(q) for q in items], window.offset, window.limit)


@router.post("/queries", response_model=QueryPublic, status_code=201, tags=["data queries"])
def raise_query(ctx: CtxDep, actor: ActorDep, study: StudyDep, body: RaiseQueryIn) -> QueryPublic:
    view = data_queries.raise_query(
        ctx,
        actor,
        study.id,
        body.subject,
        form_code=body.form,
        field=body.field,
        text=body.text,
        visit_code=body.visit,
    )
    return _query(view)


@router.post("/queries/{query_id}/answer", response_model=QueryPublic, tags=["data queries"])
def answer_query(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, query_id: Id, body: AnswerQueryIn
) -> QueryPublic:
    """The site's answer; with ``new_value`` the field is corrected (DATA-2)."""
    view = data_queries.answer_query(
        ctx,
        actor,
        study.id,
        query_id,
        text=body.text,
        new_value=body.new_value,
        reason=body.reason,
        response=body.response,
    )
    return _query(view)


@router.post("/queries/{query_id}/close", response_model=QueryPublic, tags=["data queries"])
def close_query(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, query_id: Id, body: CloseQueryIn
) -> QueryPublic:
    return _query(data_queries.close_query(ctx, actor, study.id, query_id, note=body.note))


@router.post("/queries/{query_id}/reopen", response_model=QueryPublic, tags=["data queries"])
def reopen_query(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, query_id: Id, body: ReopenQueryIn
) -> QueryPublic:
    return _query(data_queries.reopen_query(ctx, actor, study.id, query_id, text=body.text))


@router.get("/crc/cases", response_model=Page[CasePublic], tags=["CRC"])
def crc_queue(ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep) -> dict[str, Any]:
    """Open and info-requested CRC cases, oldest first; never an arm."""
    items = [CasePublic.model_validate(plain(c)) for c in crc.crc_queue(ctx, actor, study.id)]
    return paginate(items, window.offset, window.limit)


@router.post("/crc/cases/{case_id}/decision", response_model=CasePublic, tags=["CRC"])
def therapy_decision(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, case_id: Id, body: TherapyDecisionIn
) -> CasePublic:
    """The CRC's e-signed review of an additional therapy (THER-2, THER-3, SIG-1).
    Eligibility decisions are made on the subject: POST .../subjects/{number}/crc-decision."""
    view = crc.decide_therapy_case(
        ctx,
        actor,
        study.id,
        case_id,
        classification=body.classification,
        reason=body.reason,
        password=body.password,
    )
    return CasePublic.model_validate(plain(view))
