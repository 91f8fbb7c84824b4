"""Read-only services: subjects in scope, as blinded views."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, require
from trialdesk.services.common import load_subject
from trialdesk.services.context import ServiceContext
from trialdesk.services.views import SubjectView, subject_view
from trialdesk.store.tables import SiteRow, SubjectRow

READERS = list(Role)


@dataclass(frozen=True)
class Page:
    items: list[SubjectView]
    total: int
    offset: int
    limit: int


def get_subject(ctx: ServiceContext, actor: Actor, study_id: int, number: str) -> SubjectView:
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="view subject")
        subject = load_subject(uow, actor, study_id, number)
        return subject_view(ctx, uow, actor, subject)


def list_subjects(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    site: str | None = None,
    state: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Page:
    """Subjects the actor may see (own site only for site-scoped roles, ACC-1)."""
    if limit < 1 or limit > 500 or offset < 0:
        raise ValidationFailed("limit must be 1-500 and offset ≥ 0", {"limit": "out of range"})
    if state is not None and state not in {s.value for s in SubjectState}:
        raise ValidationFailed(f"unknown state {state!r}", {"state": "unknown"})
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="list subjects")
        stmt = select(SubjectRow).where(SubjectRow.study_id == study_id)
        allowed = actor.site_ids(study_id)
        if allowed is not None:
            stmt = stmt.where(SubjectRow.site_id.in_(allowed))
        if site is not None:
            stmt = stmt.join(SiteRow, SiteRow.id == SubjectRow.site_id).where(SiteRow.code == site)
        if state is not None:
            stmt = stmt.where(SubjectRow.state == state)
        total = uow.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        rows = uow.session.scalars(stmt.order_by(SubjectRow.number).offset(offset).limit(limit))
        items = [subject_view(ctx, uow, actor, row) for row in rows]
        return Page(items=items, total=total, offset=offset, limit=limit)
