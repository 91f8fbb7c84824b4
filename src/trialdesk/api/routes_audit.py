"""The study's audit trail, filtered (AUD-1): one route over services/audit_trail.py, which
decides what the caller may read and projects it (blinded readers: no per-device entry, no
hash, whole seconds)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep, WindowDep
from trialdesk.services import audit_trail

router = APIRouter(prefix="/studies/{study}", tags=["audit trail"])


class AuditEntryPublic(BaseModel):
    """One entry as the caller may see it; ``id``, ``seq`` and the hashes are null for
    blinded readers, and ``at`` (UTC) is in whole seconds for them."""

    stream: str
    at: str
    actor: str
    action: str
    entity: str
    entity_id: str
    subject: str | None
    old: Any
    new: Any
    reason: str | None
    protocol_sha256: str | None
    id: int | None
    seq: int | None
    prev_hash: str | None
    hash: str | None


class AuditPagePublic(BaseModel):
    items: list[AuditEntryPublic]
    total: int
    offset: int
    limit: int
    blinded: bool


@router.get("/audit", response_model=AuditPagePublic)
def audit_entries(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    window: WindowDep,
    action: Annotated[
        str | None, Query(max_length=80, description="an action, or a prefix ending in *")
    ] = None,
    user: Annotated[str | None, Query(max_length=80, description="who acted")] = None,
    subject: Annotated[str | None, Query(max_length=80, description="subject number")] = None,
    since: Annotated[dt.date | None, Query(description="first day, UTC, inclusive")] = None,
    until: Annotated[dt.date | None, Query(description="last day, UTC, inclusive")] = None,
) -> dict[str, Any]:
    """The study's audit trail oldest first, filtered by action, user, subject and date range
    (AUD-1); failed sign-ins and e-signatures of the study's users included."""
    where = audit_trail.AuditFilter(
        action=action, user=user, subject=subject, since=since, until=until
    )
    page = audit_trail.audit_entries(
        ctx, actor, study.id, where, limit=window.limit, offset=window.offset
    )
    return {
        "items": [i.to_dict() for i in page.items],
        "total": page.total,
        "offset": window.offset,
        "limit": window.limit,
        "blinded": page.blinded,
    }
