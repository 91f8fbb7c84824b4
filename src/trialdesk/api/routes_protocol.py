"""Protocol versions and amendments (PROT-2, PROT-3): list the versions, preview a new one's
diff (writes nothing), propose it with the study manager's signature, co-sign it as
statistician. Each route calls one service; the services check roles and blinding."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep, WindowDep
from trialdesk.api.schemas import (
    AmendmentIn,
    AmendmentPreviewIn,
    AmendmentPreviewPublic,
    AmendmentPublic,
    Page,
    PasswordIn,
    ProtocolVersionPublic,
    paginate,
    plain,
)
from trialdesk.domain.errors import ValidationFailed
from trialdesk.protocol.loader import LoadedProtocol, ProtocolInvalid, parse_protocol
from trialdesk.services import amendments

router = APIRouter(prefix="/studies/{study}/protocol", tags=["protocol"])

AmendmentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _parse(text: str) -> LoadedProtocol:
    """The protocol text, or a 422 naming every problem with its line."""
    try:
        return parse_protocol(text, source="request body")
    except ProtocolInvalid as exc:
        problems = {
            (p.path or "text") + (f" (line {p.line})" if p.line is not None else ""): p.message
            for p in exc.problems
        }
        raise ValidationFailed(exc.message, problems) from None


@router.get("/versions", response_model=Page[ProtocolVersionPublic])
def versions(ctx: CtxDep, actor: ActorDep, study: StudyDep, window: WindowDep) -> dict[str, object]:
    """Every version of the study's protocol: status, effective date, signers."""
    items = [
        ProtocolVersionPublic.model_validate(plain(v))
        for v in amendments.list_protocol_versions(ctx, actor, study.id)
    ]
    return paginate(items, window.offset, window.limit)


@router.post("/amendments/preview", response_model=AmendmentPreviewPublic)
def preview(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, body: AmendmentPreviewIn
) -> AmendmentPreviewPublic:
    """The diff of a proposed version and what it changes for enrolled subjects; a dry run."""
    view = amendments.preview_amendment(
        ctx, actor, study.id, _parse(body.text), effective_from=body.effective_from
    )
    return AmendmentPreviewPublic.model_validate(plain(view))


@router.get("/amendments/{id}", response_model=AmendmentPublic)
def amendment(ctx: CtxDep, actor: ActorDep, study: StudyDep, id: AmendmentId) -> AmendmentPublic:
    """A stored amendment with its diff against the version it amends."""
    return AmendmentPublic.model_validate(
        plain(amendments.amendment_diff(ctx, actor, study.id, id))
    )


@router.post("/amendments", response_model=AmendmentPublic, status_code=201)
def propose(ctx: CtxDep, actor: ActorDep, study: StudyDep, body: AmendmentIn) -> AmendmentPublic:
    """Load a new version signed by the study manager (SIG-1); pending when the statistician
    must co-sign (a change of the allocation design of a running study)."""
    view = amendments.propose_amendment(
        ctx,
        actor,
        study.id,
        _parse(body.text),
        reason=body.reason,
        password=body.password,
        effective_from=body.effective_from,
    )
    return AmendmentPublic.model_validate(plain(view))


@router.post("/amendments/{id}/signatures", response_model=AmendmentPublic)
def sign(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, id: AmendmentId, body: PasswordIn
) -> AmendmentPublic:
    """The unblinded statistician's co-signature; the amendment then takes effect."""
    return AmendmentPublic.model_validate(
        plain(amendments.sign_amendment(ctx, actor, study.id, id, body.password))
    )
