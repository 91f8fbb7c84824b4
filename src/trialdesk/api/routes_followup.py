"""After randomization: procedure, discharge, visits, therapies, adverse events, unblinding,
exits, completion and corrections (SYSTEM.md §2, 5-7, 9). Each route calls one service."""

from __future__ import annotations

from fastapi import APIRouter

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep
from trialdesk.api.routes_subjects import Code, Number, subject_out
from trialdesk.api.schemas import (
    CorrectionIn,
    DeathIn,
    DischargeIn,
    FormIn,
    InErrorPublic,
    LostIn,
    PasswordIn,
    ReasonIn,
    SignedReasonIn,
    SubjectPublic,
    TherapyIn,
    VisitIn,
    WithdrawIn,
    plain,
)
from trialdesk.services import followup
from trialdesk.services.allocation import unblinding

router = APIRouter(prefix="/studies/{study}/subjects/{number}", tags=["follow-up"])


@router.post("/procedure", response_model=SubjectPublic)
def procedure(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: FormIn
) -> SubjectPublic:
    """The implanting team's index procedure form for the subject's arm (PROC-1/2, RAND-8)."""
    return subject_out(followup.record_procedure(ctx, actor, study.id, number, values=body.values))


@router.post("/discharge", response_model=SubjectPublic)
def discharge(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: DischargeIn
) -> SubjectPublic:
    view = followup.record_discharge(ctx, actor, study.id, number, discharged_on=body.discharged_on)
    return subject_out(view)


@router.post("/visits/{code}", response_model=SubjectPublic)
def visit(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, code: Code, body: VisitIn
) -> SubjectPublic:
    """A visit in, before or after its window; outside it is a deviation (SCHED-2)."""
    view = followup.record_visit(
        ctx,
        actor,
        study.id,
        number,
        visit_code=code,
        visit_date=body.visit_date,
        forms=body.forms,
    )
    return subject_out(view)


@router.post("/visits/{code}/missed", response_model=SubjectPublic)
def missed(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, code: Code, body: ReasonIn
) -> SubjectPublic:
    view = followup.miss_visit(ctx, actor, study.id, number, visit_code=code, reason=body.reason)
    return subject_out(view)


@router.post("/therapies", response_model=SubjectPublic)
def therapy(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: TherapyIn
) -> SubjectPublic:
    """An additional therapy; it goes to the CRC (THER-1..3)."""
    view = followup.record_therapy(
        ctx,
        actor,
        study.id,
        number,
        therapy_date=body.therapy_date,
        therapy_type=body.therapy_type,
    )
    return subject_out(view)


@router.post("/adverse-events", response_model=SubjectPublic)
def adverse_event(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: FormIn
) -> SubjectPublic:
    view = followup.record_adverse_event(ctx, actor, study.id, number, values=body.values)
    return subject_out(view)


@router.post("/unblind", response_model=SubjectPublic)
def unblind(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: PasswordIn
) -> SubjectPublic:
    """Scheduled, e-signed unblinding after the 24-month evaluation (RAND-7)."""
    view = followup.unblind_subject(ctx, actor, study.id, number, password=body.password)
    return subject_out(view)


@router.post("/emergency-unblind", response_model=SubjectPublic)
def emergency_unblind(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: SignedReasonIn
) -> SubjectPublic:
    """The investigator breaks the code, with reason and signature (RAND-7)."""
    view = followup.emergency_unblind(
        ctx, actor, study.id, number, reason=body.reason, password=body.password
    )
    return subject_out(view)


@router.post("/withdraw", response_model=SubjectPublic)
def withdraw(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: WithdrawIn
) -> SubjectPublic:
    view = followup.withdraw(
        ctx,
        actor,
        study.id,
        number,
        withdrawn_on=body.withdrawn_on,
        reason=body.reason,
        follow_up_contact_allowed=body.follow_up_contact_allowed,
    )
    return subject_out(view)


@router.post("/lost-to-follow-up", response_model=SubjectPublic)
def lost(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: LostIn
) -> SubjectPublic:
    view = followup.mark_lost_to_follow_up(
        ctx, actor, study.id, number, on=body.on, reason=body.reason
    )
    return subject_out(view)


@router.post("/death", response_model=SubjectPublic)
def death(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: DeathIn
) -> SubjectPublic:
    view = followup.record_death(
        ctx, actor, study.id, number, death_date=body.death_date, cause=body.cause
    )
    return subject_out(view)


@router.post("/complete", response_model=SubjectPublic)
def complete(ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number) -> SubjectPublic:
    """Completion at the final contact (SCHED-3)."""
    return subject_out(followup.complete_subject(ctx, actor, study.id, number))


@router.post("/corrections", response_model=SubjectPublic)
def correction(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: CorrectionIn
) -> SubjectPublic:
    """Change saved form values with a reason; the audit keeps old and new (DATA-2)."""
    view = followup.correct_form_data(
        ctx,
        actor,
        study.id,
        number,
        form_code=body.form,
        changes=body.changes,
        reason=body.reason,
        visit_code=body.visit,
        seq=body.seq,
    )
    return subject_out(view)


@router.post("/randomized-in-error", response_model=InErrorPublic)
def randomized_in_error(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: ReasonIn
) -> InErrorPublic:
    """The statistician flags a randomization made in error; it stays randomized (LIFE-4)."""
    view = unblinding.mark_randomized_in_error(ctx, actor, study.id, number, body.reason)
    return InErrorPublic.model_validate(plain(view))
