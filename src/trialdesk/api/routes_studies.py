"""The caller's studies and the protocol each runs (PROT-1: only studies the caller holds a
role in are listed or found)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep, WindowDep
from trialdesk.api.schemas import (
    Page,
    ProtocolDetailPublic,
    ProtocolPublic,
    SitePublic,
    StudyPublic,
    paginate,
)
from trialdesk.services.setup import StudyInfo, list_studies
from trialdesk.services.study_info import list_sites, protocol_summary

router = APIRouter(tags=["studies"])


def _public(info: StudyInfo) -> StudyPublic:
    return StudyPublic(
        code=info.code,
        name=info.name,
        mode=info.mode,
        protocol=ProtocolPublic(
            name=info.protocol_name, version=info.protocol_version, sha256=info.protocol_sha256
        ),
        sites=info.sites,
    )


@router.get("/studies", response_model=Page[StudyPublic])
def studies(ctx: CtxDep, actor: ActorDep, window: WindowDep) -> dict[str, object]:
    items = [_public(s) for s in list_studies(ctx, actor)]
    return paginate(items, window.offset, window.limit)


@router.get("/studies/{study}", response_model=StudyPublic)
def study(info: StudyDep) -> StudyPublic:
    return _public(info)


@router.get("/studies/{study}/protocol", response_model=ProtocolDetailPublic)
def protocol(ctx: CtxDep, actor: ActorDep, info: StudyDep) -> ProtocolDetailPublic:
    """The protocol version the study runs now: fingerprint, visits and windows, criteria."""
    return ProtocolDetailPublic.model_validate(protocol_summary(ctx, actor, info.id).to_dict())


@router.get("/studies/{study}/sites", response_model=Page[SitePublic])
def sites(ctx: CtxDep, actor: ActorDep, info: StudyDep, window: WindowDep) -> dict[str, object]:
    """The study's sites (a site-scoped caller sees only its own)."""
    items = [SitePublic.model_validate(asdict(s)) for s in list_sites(ctx, actor, info.id)]
    return paginate(items, window.offset, window.limit)
