"""Read models for the web pages: the study's protocol forms, the sites a user works at, and
enrolment counts against target (REP-1). Counts only: nothing here reads an arm (RAND-6)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require
from trialdesk.services.common import loaded_protocol, version_in_force
from trialdesk.services.context import ServiceContext

READERS = list(Role)
ENROLMENT_READERS = [Role.MANAGER, Role.MONITOR, Role.ADMIN, Role.STATISTICIAN, Role.DSMB]


def current_protocol(ctx: ServiceContext, actor: Actor, study_id: int) -> LoadedProtocol:
    """The study's current protocol (form definitions for entry pages); any study role."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="read the protocol")
        return loaded_protocol(ctx, uow, version_in_force(uow, study_id))


def my_sites(ctx: ServiceContext, actor: Actor, study_id: int) -> list[str]:
    """Codes of the active sites the actor works at (all active sites for study-wide roles)."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="list sites")
        allowed = actor.site_ids(study_id)
        return [
            s.code
            for s in uow.sites.of_study(study_id)
            if s.active and (allowed is None or s.id in allowed)
        ]


@dataclass(frozen=True)
class EnrolmentRow:
    key: str
    registered: int
    randomized: int


@dataclass(frozen=True)
class Enrolment:
    """Live (non-test) subjects registered and randomized against the total target."""

    target: int
    randomized: int
    registered: int
    by_site: list[EnrolmentRow] = field(default_factory=list)
    by_country: list[EnrolmentRow] = field(default_factory=list)
    by_region: list[EnrolmentRow] = field(default_factory=list)


def enrolment(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> Enrolment:
    """Enrolment against target by site, country and region (REP-1); study-wide roles only.
    ``as_of`` counts only subjects registered (randomized) on or before that clinical date."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, ENROLMENT_READERS, action="enrolment dashboard")
        loaded = loaded_protocol(ctx, uow, version_in_force(uow, study_id))
        sites = uow.sites.of_study(study_id)
        registered = uow.reporting.registered_by_site(study_id, as_of)
        randomized = uow.reporting.randomized_by_site(study_id, as_of)
        by: dict[str, dict[str, list[int]]] = {"site": {}, "country": {}, "region": {}}
        for site in sites:
            counts = (int(registered.get(site.id, 0)), int(randomized.get(site.id, 0)))
            for level, key in (
                ("site", site.code),
                ("country", site.country),
                ("region", site.region),
            ):
                total = by[level].setdefault(key, [0, 0])
                total[0] += counts[0]
                total[1] += counts[1]

        def rows(level: str) -> list[EnrolmentRow]:
            return [EnrolmentRow(k, v[0], v[1]) for k, v in sorted(by[level].items())]

        return Enrolment(
            target=loaded.protocol.enrolment.total_cap,
            randomized=sum(int(v) for v in randomized.values()),
            registered=sum(int(v) for v in registered.values()),
            by_site=rows("site"),
            by_country=rows("country"),
            by_region=rows("region"),
        )


SCREENING_LOG_READERS = [Role.MANAGER, Role.MONITOR, Role.STATISTICIAN, Role.DSMB]


@dataclass(frozen=True)
class ScreeningLogRow:
    """One registered subject as the screening log shows it: state and reason, never an arm."""

    number: str
    site: str
    registered_on: str
    state: str
    screen_failure_reason: str | None
    screen_failure_detail: str | None


def screening_log(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> list[ScreeningLogRow]:
    """Every registered live (non-test) subject with its state and any screen-failure reason
    (REP-3, LIFE-3); study-wide roles that follow enrolment. No arm is read (RAND-6). With
    ``as_of``: subjects registered by then (their state is today's)."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, SCREENING_LOG_READERS, action="screening log")
        return [
            ScreeningLogRow(
                number=line.number,
                site=line.site,
                registered_on=line.registered_on.isoformat(),
                state=line.state,
                screen_failure_reason=line.screen_failure_reason,
                screen_failure_detail=line.screen_failure_detail,
            )
            for line in uow.reporting.screening_log(study_id, as_of)
        ]


# --------------------------------------------------------------------------- issue 14 (x14b)


@dataclass(frozen=True)
class ScreeningLogPage:
    items: list[ScreeningLogRow]
    total: int
    offset: int
    limit: int


def screening_log_page(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    site: str | None = None,
    state: str | None = None,
    search: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> ScreeningLogPage:
    """One page of the screening log (REP-3), newest registration first, filtered and counted
    in the repository: by site, state and a part of the subject number (issue 14)."""
    if not 1 <= limit <= 200 or offset < 0:
        raise ValidationFailed("limit must be 1-200 and offset ≥ 0", {"limit": "out of range"})
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, SCREENING_LOG_READERS, action="screening log")
        lines, total = uow.reporting.screening_log_page(
            study_id, site=site, state=state, search=search, offset=offset, limit=limit
        )
        items = [
            ScreeningLogRow(
                number=line.number,
                site=line.site,
                registered_on=line.registered_on.isoformat(),
                state=line.state,
                screen_failure_reason=line.screen_failure_reason,
                screen_failure_detail=line.screen_failure_detail,
            )
            for line in lines
        ]
        return ScreeningLogPage(items, total, offset, limit)
