"""Allocation lists (statistician), endpoint summaries (unblinded roles), notifications and
trial-level unblinding (RAND-3, RAND-7, END-1..3). Each route calls one service; the services
refuse blinded callers."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep, WindowDep
from trialdesk.api.schemas import (
    EfficacyPublic,
    ExtendIn,
    GenerateListIn,
    ImportListIn,
    InterimPublic,
    ListInfoPublic,
    NotificationPublic,
    Page,
    PasswordIn,
    ReasonIn,
    SafetyPublic,
    SignedReasonIn,
    StratumStatusPublic,
    TrialUnblindingPublic,
    paginate,
    plain,
)
from trialdesk.services import endpoints
from trialdesk.services.allocation import lists, unblinding

router = APIRouter(prefix="/studies/{study}")


@router.get("/lists", response_model=Page[ListInfoPublic], tags=["allocation lists"])
def allocation_lists(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep
) -> dict[str, Any]:
    """Every list with its fingerprint, never its content."""
    items = [plain(i) for i in lists.list_info(ctx, actor, study.id)]
    return paginate(items, window.offset, window.limit)


@router.post("/lists", response_model=ListInfoPublic, status_code=201, tags=["allocation lists"])
def generate_list(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, body: GenerateListIn
) -> ListInfoPublic:
    """Generate the concealed list from a recorded seed (RAND-3)."""
    info = lists.generate_list(
        ctx, actor, study.id, mode=body.mode, seed=body.seed, size_per_stratum=body.size_per_stratum
    )
    return ListInfoPublic.model_validate(plain(info))


@router.post(
    "/lists/import", response_model=ListInfoPublic, status_code=201, tags=["allocation lists"]
)
def import_list(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, body: ImportListIn
) -> ListInfoPublic:
    """Load a list made elsewhere after checking all of it (RAND-3)."""
    info = lists.import_list(
        ctx,
        actor,
        study.id,
        body.csv,
        mode=body.mode,
        source_name=body.source_name,
        append=body.append,
    )
    return ListInfoPublic.model_validate(plain(info))


@router.get(
    "/lists/{list_id}/download",
    response_class=Response,
    tags=["allocation lists"],
    responses={200: {"content": {"text/csv": {}}, "description": "the list in import format"}},
)
def download_list(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, list_id: Annotated[int, Path(ge=1)]
) -> Response:
    """The whole list in the import format (RAND-3); every download is audited."""
    got = lists.download_list(ctx, actor, study.id, list_id)
    return Response(
        got.csv,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{got.filename}"'},
    )


@router.post("/lists/{list_id}/discard", response_model=ListInfoPublic, tags=["allocation lists"])
def discard_list(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    list_id: Annotated[int, Path(ge=1)],
    body: ReasonIn,
) -> ListInfoPublic:
    """Take a test list (or a live list nobody drew from) out of use, so another can be
    loaded (RAND-3)."""
    info = lists.discard_list(ctx, actor, study.id, list_id, body.reason)
    return ListInfoPublic.model_validate(plain(info))


@router.get("/lists/strata", response_model=Page[StratumStatusPublic], tags=["allocation lists"])
def strata(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    window: WindowDep,
    mode: Annotated[str | None, Query(max_length=10)] = None,
) -> dict[str, Any]:
    """Used and unused slots per stratum; no arms, no blocks."""
    items = [plain(s) for s in lists.stratum_status(ctx, actor, study.id, mode=mode)]
    return paginate(items, window.offset, window.limit)


@router.post("/lists/extensions", response_model=StratumStatusPublic, tags=["allocation lists"])
def extend(ctx: CtxDep, actor: ActorDep, study: StudyDep, body: ExtendIn) -> StratumStatusPublic:
    """Add seeded blocks to a stratum ahead of need (RAND-3)."""
    status = lists.extend(ctx, actor, study.id, body.stratum, blocks=body.blocks, mode=body.mode)
    return StratumStatusPublic.model_validate(plain(status))


@router.get("/endpoints/safety", response_model=SafetyPublic, tags=["endpoints"])
def safety(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, as_of: dt.date | None = None
) -> dict[str, Any]:
    """END-1, for unblinded roles only (RAND-6)."""
    return endpoints.safety_summary(ctx, actor, study.id, as_of).to_dict()


@router.get("/endpoints/efficacy", response_model=EfficacyPublic, tags=["endpoints"])
def efficacy(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, as_of: dt.date | None = None
) -> dict[str, Any]:
    """END-2 win ratio, for unblinded roles only (RAND-6)."""
    return endpoints.efficacy_summary(ctx, actor, study.id, as_of).to_dict()


@router.get("/endpoints/interim", response_model=InterimPublic, tags=["endpoints"])
def interim(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, as_of: dt.date | None = None
) -> dict[str, Any]:
    """END-3: whether the interim look is due; counts only."""
    return endpoints.interim_status(ctx, actor, study.id, as_of).to_dict()


@router.get("/notifications", response_model=Page[NotificationPublic], tags=["notifications"])
def notifications(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep, unread_only: bool = False
) -> dict[str, Any]:
    items = unblinding.notifications(ctx, actor, study.id, unread_only=unread_only)
    return paginate([plain(n) for n in items], window.offset, window.limit)


@router.post(
    "/notifications/{notification_id}/read",
    response_model=NotificationPublic,
    tags=["notifications"],
)
def read_notification(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    notification_id: Annotated[int, Path(ge=1, le=2**62)],
) -> NotificationPublic:
    view = unblinding.mark_notification_read(ctx, actor, study.id, notification_id)
    return NotificationPublic.model_validate(plain(view))


@router.get("/trial-unblinding", response_model=TrialUnblindingPublic, tags=["unblinding"])
def trial_unblinding(ctx: CtxDep, actor: ActorDep, study: StudyDep) -> TrialUnblindingPublic:
    view = unblinding.trial_unblinding_status(ctx, actor, study.id)
    return TrialUnblindingPublic.model_validate(plain(view))


@router.post("/trial-unblinding/request", response_model=TrialUnblindingPublic, tags=["unblinding"])
def request_trial_unblinding(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, body: SignedReasonIn
) -> TrialUnblindingPublic:
    """First signature, by the study manager (RAND-7); nothing changes until confirmed."""
    view = unblinding.request_trial_unblinding(ctx, actor, study.id, body.reason, body.password)
    return TrialUnblindingPublic.model_validate(plain(view))


@router.post("/trial-unblinding/confirm", response_model=TrialUnblindingPublic, tags=["unblinding"])
def confirm_trial_unblinding(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, body: PasswordIn
) -> TrialUnblindingPublic:
    """Second signature, by another unblinded statistician: the trial is unblinded."""
    view = unblinding.confirm_trial_unblinding(ctx, actor, study.id, body.password)
    return TrialUnblindingPublic.model_validate(plain(view))
