"""Read models for the web pages: the study's protocol forms, the sites a user works at, and
enrolment counts against target (REP-1). Counts only: nothing here reads an arm (RAND-6)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require
from trialdesk.services.common import current_protocol_row, protocol_of
from trialdesk.services.context import ServiceContext
from trialdesk.store.tables import RandomizationRow, SiteRow, SubjectRow

READERS = list(Role)
ENROLMENT_READERS = [Role.MANAGER, Role.MONITOR, Role.ADMIN, Role.STATISTICIAN, Role.DSMB]


def current_protocol(ctx: ServiceContext, actor: Actor, study_id: int) -> LoadedProtocol:
    """The study's current protocol (form definitions for entry pages); any study role."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="read the protocol")
        return protocol_of(ctx, current_protocol_row(uow, study_id))


def my_sites(ctx: ServiceContext, actor: Actor, study_id: int) -> list[str]:
    """Codes of the active sites the actor works at (all active sites for study-wide roles)."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="list sites")
        stmt = select(SiteRow.code).where(SiteRow.study_id == study_id, SiteRow.active.is_(True))
        allowed = actor.site_ids(study_id)
        if allowed is not None:
            stmt = stmt.where(SiteRow.id.in_(allowed))
        return list(uow.session.scalars(stmt.order_by(SiteRow.code)))


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


def _counts(rows: Iterable[tuple[int, int]]) -> dict[int, int]:
    # not dict(result): a Result has keys(), so dict() would read it as a mapping
    return {int(key): int(count) for key, count in rows}


def enrolment(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> Enrolment:
    """Enrolment against target by site, country and region (REP-1); study-wide roles only.
    ``as_of`` counts only subjects registered (randomized) on or before that clinical date."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, ENROLMENT_READERS, action="enrolment dashboard")
        loaded = protocol_of(ctx, current_protocol_row(uow, study_id))
        sites = uow.session.scalars(
            select(SiteRow).where(SiteRow.study_id == study_id).order_by(SiteRow.code)
        ).all()
        registered_stmt = select(SubjectRow.site_id, func.count()).where(
            SubjectRow.study_id == study_id, SubjectRow.test_subject.is_(False)
        )
        randomized_stmt = (
            select(SubjectRow.site_id, func.count())
            .join(RandomizationRow, RandomizationRow.subject_id == SubjectRow.id)
            .where(SubjectRow.study_id == study_id, SubjectRow.test_subject.is_(False))
        )
        if as_of is not None:
            registered_stmt = registered_stmt.where(SubjectRow.registered_on <= as_of)
            randomized_stmt = randomized_stmt.where(RandomizationRow.randomized_on <= as_of)
        registered: dict[int, int] = _counts(
            uow.session.execute(registered_stmt.group_by(SubjectRow.site_id)).tuples()
        )
        randomized: dict[int, int] = _counts(
            uow.session.execute(randomized_stmt.group_by(SubjectRow.site_id)).tuples()
        )
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
        rows = uow.session.execute(
            select(
                SubjectRow.number,
                SiteRow.code,
                SubjectRow.registered_on,
                SubjectRow.state,
                SubjectRow.screen_failure_reason,
                SubjectRow.screen_failure_detail,
            )
            .join(SiteRow, SiteRow.id == SubjectRow.site_id)
            .where(
                SubjectRow.study_id == study_id,
                SubjectRow.test_subject.is_(False),
                SubjectRow.registered_on <= (as_of or dt.date.max),
            )
            .order_by(SubjectRow.registered_on, SubjectRow.number)
        ).tuples()
        return [
            ScreeningLogRow(
                number=number,
                site=site,
                registered_on=registered_on.isoformat(),
                state=state,
                screen_failure_reason=reason,
                screen_failure_detail=detail,
            )
            for number, site, registered_on, state, reason, detail in rows
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
    in SQL: by site, state and a part of the subject number (issue 14)."""
    if not 1 <= limit <= 200 or offset < 0:
        raise ValidationFailed("limit must be 1-200 and offset ≥ 0", {"limit": "out of range"})
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, SCREENING_LOG_READERS, action="screening log")
        where = [SubjectRow.study_id == study_id, SubjectRow.test_subject.is_(False)]
        if site:
            where.append(SiteRow.code == site)
        if state:
            where.append(SubjectRow.state == state)
        if search:
            where.append(SubjectRow.number.contains(search, autoescape=True))
        joined = select(SubjectRow.id).join(SiteRow, SiteRow.id == SubjectRow.site_id)
        total = int(
            uow.session.scalar(select(func.count()).select_from(joined.where(*where).subquery()))
            or 0
        )
        rows = uow.session.execute(
            select(
                SubjectRow.number,
                SiteRow.code,
                SubjectRow.registered_on,
                SubjectRow.state,
                SubjectRow.screen_failure_reason,
                SubjectRow.screen_failure_detail,
            )
            .join(SiteRow, SiteRow.id == SubjectRow.site_id)
            .where(*where)
            .order_by(SubjectRow.registered_on.desc(), SubjectRow.number.desc())
            .offset(offset)
            .limit(limit)
        ).tuples()
        items = [
            ScreeningLogRow(number, code, registered.isoformat(), st, reason, detail)
            for number, code, registered, st, reason, detail in rows
        ]
        return ScreeningLogPage(items, total, offset, limit)
