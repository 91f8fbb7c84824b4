"""Records that hold, lane x15b of issue 15: data-quality rules run and excluded (REC-6), the
missing-data report (REC-10), query assignment and verification (REC-7), consents and the
re-consent worklist (REC-8), exits through the protocol's forms and contacts after a
withdrawal (REC-9). Each route calls one service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep, WindowDep
from trialdesk.api.schemas import Page, QueryPublic, SubjectPublic, paginate, plain
from trialdesk.api.schemas_records import (
    AssignQueryIn,
    ConsentDuePublic,
    ContactIn,
    DiscrepancyPublic,
    ExclusionIn,
    ExclusionPublic,
    ExitFormIn,
    MissingRowPublic,
    QualityRunIn,
    QualityRunPublic,
    ReconsentIn,
    RevokeExclusionIn,
    SubjectConsentsPublic,
)
from trialdesk.services import consent, data_queries, exits, quality

router = APIRouter(prefix="/studies/{study}")

Id = Annotated[int, Path(ge=1, le=2**62)]
Number = Annotated[str, Path(min_length=1, max_length=40, description="e.g. S101-0001")]
Site = Annotated[str | None, Query(max_length=40)]
Subject = Annotated[str | None, Query(max_length=40)]


@router.get("/quality", response_model=Page[DiscrepancyPublic], tags=["data quality"])
def quality_report(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    window: WindowDep,
    site: Site = None,
    subject: Subject = None,
) -> dict[str, Any]:
    """What the protocol's data-quality rules find now (excluded findings marked)."""
    items = quality.quality_report(ctx, actor, study.id, number=subject, site=site)
    return paginate([plain(d) for d in items], window.offset, window.limit)


@router.post("/quality/run", response_model=QualityRunPublic, tags=["data quality"])
def run_quality(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, body: QualityRunIn
) -> QualityRunPublic:
    """Every rule (on-save and on-demand) on a subject, a site or the study; queries follow."""
    run = quality.run_quality_rules(ctx, actor, study.id, number=body.subject, site=body.site)
    return QualityRunPublic.model_validate(run.to_dict())


@router.post(
    "/subjects/{number}/quality-exclusions",
    response_model=ExclusionPublic,
    status_code=201,
    tags=["data quality"],
)
def exclude_rule(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: ExclusionIn
) -> ExclusionPublic:
    view = quality.exclude_rule(
        ctx,
        actor,
        study.id,
        number,
        rule_id=body.rule,
        form_code=body.form,
        visit_code=body.visit,
        seq=body.seq,
        reason=body.reason,
    )
    return ExclusionPublic.model_validate(plain(view))


@router.post(
    "/quality-exclusions/{exclusion_id}/revoke",
    response_model=ExclusionPublic,
    tags=["data quality"],
)
def revoke_exclusion(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, exclusion_id: Id, body: RevokeExclusionIn
) -> ExclusionPublic:
    view = quality.revoke_exclusion(
        ctx, actor, study.id, exclusion_id=exclusion_id, reason=body.reason
    )
    return ExclusionPublic.model_validate(plain(view))


@router.get("/reports/missing-data", response_model=Page[MissingRowPublic], tags=["data quality"])
def missing_data(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep, site: Site = None
) -> dict[str, Any]:
    """Expected records per visit and form: complete, incomplete, not saved, marked missing."""
    items = quality.missing_data(ctx, actor, study.id, site=site)
    return paginate([plain(r) for r in items], window.offset, window.limit)


@router.post("/queries/{query_id}/assign", response_model=QueryPublic, tags=["data queries"])
def assign_query(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, query_id: Id, body: AssignQueryIn
) -> QueryPublic:
    view = data_queries.assign_query(ctx, actor, study.id, query_id, assignee=body.assignee)
    return QueryPublic.model_validate(plain(view))


@router.post("/queries/{query_id}/verify", response_model=QueryPublic, tags=["data queries"])
def verify_query(ctx: CtxDep, actor: ActorDep, study: StudyDep, query_id: Id) -> QueryPublic:
    """The monitor accepts the answer (REC-7)."""
    return QueryPublic.model_validate(
        plain(data_queries.verify_query(ctx, actor, study.id, query_id))
    )


@router.get("/subjects/{number}/consents", response_model=SubjectConsentsPublic, tags=["consent"])
def subject_consents(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number
) -> SubjectConsentsPublic:
    view = consent.subject_consents(ctx, actor, study.id, number)
    return SubjectConsentsPublic.model_validate(view.to_dict())


@router.post("/subjects/{number}/reconsent", response_model=SubjectConsentsPublic, tags=["consent"])
def reconsent(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: ReconsentIn
) -> SubjectConsentsPublic:
    """A re-consent, e.g. to the version an amendment brought (REC-8)."""
    view = consent.record_reconsent(
        ctx,
        actor,
        study.id,
        number,
        signed_on=body.signed_on,
        version=body.version,
        document=body.document,
    )
    return SubjectConsentsPublic.model_validate(view.to_dict())


@router.get("/consent-worklist", response_model=Page[ConsentDuePublic], tags=["consent"])
def consent_worklist(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep, site: Site = None
) -> dict[str, Any]:
    """Subjects who must re-consent today at their site."""
    items = consent.consent_worklist(ctx, actor, study.id, site=site)
    return paginate([plain(d) for d in items], window.offset, window.limit)


@router.post("/subjects/{number}/exit-form", response_model=SubjectPublic, tags=["subjects"])
def exit_form(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: ExitFormIn
) -> SubjectPublic:
    """Death or withdrawal on the protocol's form (REC-9)."""
    view = exits.record_exit(
        ctx, actor, study.id, number, exit=body.exit, values=body.values, kind=body.kind
    )
    return SubjectPublic.model_validate(plain(view))


@router.post("/subjects/{number}/contacts", response_model=SubjectPublic, tags=["subjects"])
def contact(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: ContactIn
) -> SubjectPublic:
    """A follow-up contact after a withdrawal that allows contact (REC-9)."""
    view = exits.record_contact(
        ctx,
        actor,
        study.id,
        number,
        visit_code=body.visit,
        contact_date=body.contact_date,
        forms=body.forms,
    )
    return SubjectPublic.model_validate(plain(view))
