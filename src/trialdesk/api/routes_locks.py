"""Records that hold (issue 15, lane x15a): locks at four levels (REC-3), the database lock
and its checklist (REC-5), SDV (REC-1) and investigator signatures (REC-2, SIG-1). Each
route calls one service; refusals are problem documents (a lock: ``record-locked``, 409)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep
from trialdesk.api.routes_subjects import Number
from trialdesk.api.schemas import plain
from trialdesk.api.schemas_locks import (
    ChecklistPublic,
    DatabaseLockIn,
    LockIn,
    LockPublic,
    RecordSignaturePublic,
    SdvIn,
    SdvRecordPublic,
    SdvSummaryPublic,
    SignIn,
    UnlockIn,
)
from trialdesk.services.records import checklist, locks, review

router = APIRouter(prefix="/studies/{study}", tags=["records"])

Id = Annotated[int, Path(ge=1, le=2**62)]
Filter = Annotated[str | None, Query(max_length=40)]


def _out(model: Any, view: Any) -> Any:
    return model.model_validate(plain(view))


@router.get("/subjects/{number}/locks", response_model=list[LockPublic])
def subject_locks(ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number) -> list[Any]:
    """The subject's locks, lifted ones too, and the study's active database lock (REC-3)."""
    views = locks.subject_locks(ctx, actor, study_id=study.id, number=number)
    return [_out(LockPublic, v) for v in views]


@router.post("/subjects/{number}/locks", response_model=LockPublic, status_code=201)
def lock_record(ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: LockIn) -> Any:
    """Lock a form record, a visit or the casebook, with a reason and the password (REC-3)."""
    view = locks.lock_record(
        ctx,
        actor,
        study_id=study.id,
        number=number,
        level=body.level,
        visit=body.visit,
        form=body.form,
        seq=body.seq,
        reason=body.reason,
        password=body.password,
    )
    return _out(LockPublic, view)


@router.post("/locks/{lock_id}/unlock", response_model=LockPublic)
def unlock_record(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, lock_id: Id, body: UnlockIn
) -> Any:
    """Lift a record lock or a freeze at unblinding, with a reason and the password."""
    view = locks.unlock_record(
        ctx, actor, study_id=study.id, lock_id=lock_id, reason=body.reason, password=body.password
    )
    return _out(LockPublic, view)


@router.get("/database-lock", response_model=list[LockPublic])
def database_lock(ctx: CtxDep, actor: ActorDep, study: StudyDep) -> list[Any]:
    """Every database lock of the study, lifted ones too (REC-5)."""
    return [_out(LockPublic, v) for v in locks.database_lock_status(ctx, actor, study_id=study.id)]


@router.post("/database-lock", response_model=LockPublic, status_code=201)
def lock_database(ctx: CtxDep, actor: ActorDep, study: StudyDep, body: DatabaseLockIn) -> Any:
    """The soft (interim, reversible) or hard (final) database lock (REC-5)."""
    view = locks.lock_database(
        ctx, actor, study_id=study.id, kind=body.kind, reason=body.reason, password=body.password
    )
    return _out(LockPublic, view)


@router.post("/database-lock/unlock", response_model=LockPublic)
def unlock_database(ctx: CtxDep, actor: ActorDep, study: StudyDep, body: UnlockIn) -> Any:
    """Lift the soft database lock; the hard lock is final."""
    view = locks.unlock_database(
        ctx, actor, study_id=study.id, reason=body.reason, password=body.password
    )
    return _out(LockPublic, view)


@router.get("/database-lock/checklist", response_model=ChecklistPublic)
def lock_checklist(ctx: CtxDep, actor: ActorDep, study: StudyDep, site: Filter = None) -> Any:
    """Everything in the way of the hard database lock, one line each (REC-5)."""
    return _out(ChecklistPublic, checklist.lock_checklist(ctx, actor, study_id=study.id, site=site))


@router.post("/subjects/{number}/sdv", response_model=SdvRecordPublic, status_code=201)
def mark_sdv(ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: SdvIn) -> Any:
    """The monitor marks a saved record (or chosen fields) verified against source (REC-1)."""
    view = review.mark_sdv(
        ctx,
        actor,
        study_id=study.id,
        number=number,
        form=body.form,
        visit=body.visit,
        seq=body.seq,
        fields=body.fields,
    )
    return _out(SdvRecordPublic, view)


@router.get("/sdv", response_model=SdvSummaryPublic)
def sdv_status(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    site: Filter = None,
    subject: Filter = None,
    visit: Filter = None,
) -> Any:
    """SDV per record and by subject, site and visit (REC-1)."""
    view = review.sdv_status(ctx, actor, study_id=study.id, site=site, number=subject, visit=visit)
    return _out(SdvSummaryPublic, view)


@router.get("/subjects/{number}/signatures", response_model=list[RecordSignaturePublic])
def signatures(ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number) -> list[Any]:
    """The subject's signatures, each valid or with what changed since (REC-2)."""
    views = review.subject_signatures(ctx, actor, study_id=study.id, number=number)
    return [_out(RecordSignaturePublic, v) for v in views]


@router.post("/subjects/{number}/signatures", response_model=RecordSignaturePublic, status_code=201)
def sign(ctx: CtxDep, actor: ActorDep, study: StudyDep, number: Number, body: SignIn) -> Any:
    """The investigator e-signs a form, a visit or the casebook (REC-2, SIG-1)."""
    view = review.sign_records(
        ctx,
        actor,
        study_id=study.id,
        number=number,
        level=body.level,
        visit=body.visit,
        form=body.form,
        seq=body.seq,
        password=body.password,
    )
    return _out(RecordSignaturePublic, view)
