"""Subjects: the blinded list and view, registration, and the screening-to-randomization
actions (SYSTEM.md §2-4). Each route calls one service; the service decides."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep, WindowDep
from trialdesk.api.schemas import (
    AllowedActions,
    ConfirmationIn,
    ConsentIn,
    CrcDecisionIn,
    EligibilityPublic,
    FormIn,
    FormsIn,
    HistoryEntryPublic,
    Page,
    RandomizationPublic,
    ReasonIn,
    RegisterIn,
    SubjectPublic,
    plain,
)
from trialdesk.protocol.models import Gate
from trialdesk.services import crc, queries, screening
from trialdesk.services.allocation import randomization
from trialdesk.services.history import subject_history
from trialdesk.services.views import SubjectView

router = APIRouter(prefix="/studies/{study}/subjects", tags=["subjects"])

Number = Annotated[str, Path(min_length=1, max_length=40, description="e.g. S101-0001")]
Code = Annotated[str, Path(min_length=1, max_length=100)]


def subject_out(view: SubjectView) -> SubjectPublic:
    return SubjectPublic.model_validate(plain(view))


@router.get("", response_model=Page[SubjectPublic])
def list_subjects(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    window: WindowDep,
    site: Annotated[str | None, Query(max_length=40)] = None,
    state: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """Subjects in the caller's scope (own site only for site roles, ACC-1)."""
    page = queries.list_subjects(
        ctx, actor, study.id, site=site, state=state, offset=window.offset, limit=window.limit
    )
    return {
        "items": [subject_out(v) for v in page.items],
        "total": page.total,
        "offset": page.offset,
        "limit": page.limit,
    }


@router.post("", response_model=SubjectPublic, status_code=201)
def register(ctx: CtxDep, actor: ActorDep, study: StudyDep, body: RegisterIn) -> SubjectPublic:
    view = screening.register_subject(
        ctx, actor, study.id, site_code=body.site, registered_on=body.registered_on, test=body.test
    )
    return subject_out(view)


@router.get("/{number}", response_model=SubjectPublic)
def get_subject(ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number) -> SubjectPublic:
    return subject_out(queries.get_subject(ctx, actor, study.id, number))


@router.get("/{number}/actions", response_model=AllowedActions)
def allowed_actions(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number
) -> AllowedActions:
    """The actions the subject's state allows (LIFE-1); the caller's role is checked on use."""
    view = queries.get_subject(ctx, actor, study.id, number)
    return AllowedActions(
        subject=view.number, state=view.state, allowed_actions=view.allowed_actions
    )


@router.get("/{number}/history", response_model=list[HistoryEntryPublic])
def history(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number
) -> list[HistoryEntryPublic]:
    """Every change to the subject's record from its audit trail (AUD-1). Times are UTC, as
    every timestamp of this API is (TIME-1); pages and the CLI show them in the reader's zone."""
    return [
        HistoryEntryPublic(
            seq=e.seq,
            at=e.at,
            actor=e.actor,
            action=e.action,
            entity=e.entity,
            entity_id=e.entity_id,
            reason=e.reason,
        )
        for e in subject_history(ctx, actor, study.id, number)
    ]


@router.get("/{number}/eligibility", response_model=EligibilityPublic)
def eligibility(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, gate: Gate = Gate.ECHO
) -> EligibilityPublic:
    """Which criteria of ``gate`` pass, fail or wait for data or a confirmation (ELIG-1)."""
    result = screening.check_eligibility(ctx, actor, study.id, number, gate=gate)
    return EligibilityPublic.model_validate(
        {
            "subject": number,
            "gate": gate.value,
            "eligible": result.eligible,
            "failed": list(result.failed_ids),
            "pending": list(result.pending_ids),
            "outcomes": [plain(o) for o in result.outcomes],
        }
    )


@router.post("/{number}/consent", response_model=SubjectPublic)
def consent(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: ConsentIn
) -> SubjectPublic:
    view = screening.record_consent(
        ctx,
        actor,
        study.id,
        number,
        consent_date=body.consent_date,
        consent_version=body.consent_version,
        document=body.document,
    )
    return subject_out(view)


@router.post("/{number}/decline", response_model=SubjectPublic)
def decline(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: ReasonIn
) -> SubjectPublic:
    return subject_out(screening.decline_consent(ctx, actor, study.id, number, reason=body.reason))


@router.post("/{number}/screen-failure", response_model=SubjectPublic)
def screen_fail(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: ReasonIn
) -> SubjectPublic:
    """End screening for a reason no rule covers (LIFE-3 'other')."""
    return subject_out(
        screening.screen_fail_other(ctx, actor, study.id, number, reason=body.reason)
    )


@router.post("/{number}/forms/{form}", response_model=SubjectPublic)
def screening_form(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, form: Code, body: FormIn
) -> SubjectPublic:
    """Save one screening form: every field valid, or nothing saved (DATA-1)."""
    view = screening.record_screening_form(
        ctx, actor, study.id, number, form_code=form, values=body.values
    )
    return subject_out(view)


@router.post("/{number}/confirmations/{criterion}", response_model=SubjectPublic)
def confirm(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    number: Number,
    criterion: Code,
    body: ConfirmationIn,
) -> SubjectPublic:
    """The investigator's e-signed answer for a criterion with no rule (ELIG-1, SIG-1)."""
    view = screening.confirm_criterion(
        ctx,
        actor,
        study.id,
        number,
        criterion_id=criterion,
        confirmed=body.confirmed,
        password=body.password,
    )
    return subject_out(view)


@router.post("/{number}/complete-screening", response_model=SubjectPublic)
def complete_screening(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number
) -> SubjectPublic:
    return subject_out(screening.complete_screening(ctx, actor, study.id, number))


@router.post("/{number}/crc-decision", response_model=SubjectPublic)
def crc_decision(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: CrcDecisionIn
) -> SubjectPublic:
    """The CRC's e-signed eligibility decision (ELIG-3, SIG-1)."""
    view = crc.crc_eligibility_decision(
        ctx,
        actor,
        study.id,
        number,
        decision=body.decision,
        reason=body.reason,
        password=body.password,
    )
    return subject_out(view)


@router.post("/{number}/anatomy", response_model=SubjectPublic)
def anatomy(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: FormsIn
) -> SubjectPublic:
    """Procedure-day angiogram and venogram (ELIG-4)."""
    return subject_out(screening.record_anatomy(ctx, actor, study.id, number, forms=body.forms))


@router.post("/{number}/randomize", response_model=RandomizationPublic)
def randomize(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    number: Number,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="a retry with the same key gets the same"),
    ] = None,
) -> RandomizationPublic:
    """Randomize (RAND-4, RAND-5); the arm is in the answer only for those who may see it."""
    result = randomization.randomize(ctx, actor, study.id, number, idempotency_key=idempotency_key)
    return RandomizationPublic.model_validate(
        {
            "subject": result.subject,
            "randomization_number": result.randomization_number,
            "randomized_on": result.randomized_on,
            "arm": (
                {"code": result.arm, "label": result.arm_label or result.arm}
                if result.arm is not None
                else None
            ),
        }
    )
