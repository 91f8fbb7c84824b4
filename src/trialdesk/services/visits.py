"""Visit planning and the due / overdue / missed lists (SCHED-1, SCHED-2)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.lifecycle import ON_STUDY
from trialdesk.domain.roles import Role
from trialdesk.domain.schedule import VisitState, plan_visits, visit_statuses
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.specs import visit_specs
from trialdesk.services.access import Actor, require
from trialdesk.services.common import schedule_protocol, site_today
from trialdesk.services.context import ServiceContext
from trialdesk.store.tables import SiteRow, SubjectRow, VisitRow


def planned_calendar(loaded: LoadedProtocol, randomized_on: dt.date) -> list[dict[str, Any]]:
    """The calendar a coordinator books visits from: target date and inclusive window."""
    specs = {v.code: v for v in loaded.protocol.visits}
    return [
        {
            "code": p.code,
            "name": specs[p.code].name,
            "kind": specs[p.code].kind.value,
            "target_date": p.target_date.isoformat(),
            "window_start": p.window_start.isoformat(),
            "window_end": p.window_end.isoformat(),
        }
        for p in plan_visits(randomized_on, visit_specs(loaded.protocol))
    ]


@dataclass(frozen=True)
class VisitItem:
    subject: str
    site: str
    visit: str
    state: str  # due | overdue | missed
    target_date: str
    window_start: str
    window_end: str
    as_of: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


VISIT_READERS = [Role.COORDINATOR, Role.IMPLANTER, Role.MANAGER, Role.MONITOR, Role.CRC]


def visit_worklist(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    as_of: dt.date | None = None,
    site: str | None = None,
    states: tuple[str, ...] = ("due", "overdue", "missed"),
) -> list[VisitItem]:
    """Due, overdue and missed visits of subjects in follow-up, per site or overall, on any
    date; ``as_of`` defaults to today in each site's own time zone (TIME-1)."""
    unknown = set(states) - {s.value for s in VisitState}
    if unknown:
        raise ValidationFailed(f"unknown visit state {sorted(unknown)}", {"state": "unknown"})
    require(actor, study_id, VISIT_READERS, action="list visits")
    now = ctx.now()
    items: list[VisitItem] = []
    with ctx.uow(readonly=True) as uow:
        stmt = (
            select(SubjectRow, SiteRow)
            .join(SiteRow, SiteRow.id == SubjectRow.site_id)
            .where(
                SubjectRow.study_id == study_id,
                SubjectRow.state.in_([s.value for s in ON_STUDY]),
            )
            .order_by(SiteRow.code, SubjectRow.number)
        )
        allowed = actor.site_ids(study_id)
        if allowed is not None:
            stmt = stmt.where(SubjectRow.site_id.in_(allowed))
        if site is not None:
            stmt = stmt.where(SiteRow.code == site)
        for subject, site_row in uow.session.execute(stmt).tuples():
            if subject.randomized_on is None:
                continue
            recorded = {
                v.visit_code: (v.visit_date, v.status == "missed")
                for v in uow.session.scalars(
                    select(VisitRow).where(VisitRow.subject_id == subject.id)
                )
            }
            day = as_of or site_today(site_row, now)
            # visits not yet done follow the version in force that day (PROT-2)
            _row, loaded = schedule_protocol(ctx, uow, subject, day)
            planned = plan_visits(subject.randomized_on, visit_specs(loaded.protocol))
            for status in visit_statuses(planned, recorded, day):
                if status.state.value in states:
                    items.append(
                        VisitItem(
                            subject=subject.number,
                            site=site_row.code,
                            visit=status.code,
                            state=status.state.value,
                            target_date=status.planned.target_date.isoformat(),
                            window_start=status.planned.window_start.isoformat(),
                            window_end=status.planned.window_end.isoformat(),
                            as_of=day.isoformat(),
                        )
                    )
    return items
