"""Visit planning and the due / overdue / missed lists (SCHED-1, SCHED-2)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.lifecycle import ON_STUDY
from trialdesk.domain.permissions import Permission
from trialdesk.domain.schedule import VisitState, plan_visits, visit_statuses
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.specs import visit_specs
from trialdesk.services.access import Actor, require
from trialdesk.services.common import schedule_version, site_today
from trialdesk.services.consent import reconsent_due
from trialdesk.services.context import ServiceContext


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
    reconsent: str | None = None
    """Issue 15 (REC-8): the consent version the subject must sign at this visit, if any."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    require(actor, study_id, Permission.VISIT_WORKLIST_READ)
    now = ctx.now()
    items: list[VisitItem] = []
    with ctx.uow(readonly=True) as uow:
        on_study = [
            (subject, site_row)
            for subject, site_row in uow.subjects.on_study(
                study_id,
                [s.value for s in ON_STUDY],
                site_ids=actor.site_ids(study_id),
                site_code=site,
            )
            if subject.randomized_on is not None
        ]
        visits = uow.visits.for_subjects([subject.id for subject, _ in on_study])
        for subject, site_row in on_study:
            assert subject.randomized_on is not None
            recorded = {
                v.visit_code: (v.visit_date, v.status == "missed") for v in visits[subject.id]
            }
            day = as_of or site_today(site_row, now)
            # visits not yet done follow the version in force that day (PROT-2)
            own = uow.protocols.get(subject.protocol_version_id)
            _version, loaded = schedule_version(ctx, uow, subject, own, day)
            planned = plan_visits(subject.randomized_on, visit_specs(loaded.protocol))
            due = "; ".join(reconsent_due(ctx, uow, subject, site_row, day)) or None
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
                            reconsent=due,
                        )
                    )
    return items
