"""Enrolment report and forecast (REP-1) for study-wide roles. Counts only, never an arm.

Counts by site, country and region come from :func:`trialdesk.services.dashboard.enrolment`;
this module adds the months, when each site opened (see :mod:`trialdesk.reports.enrolment`),
and the Poisson–Gamma forecast: the prior Gamma(α, β) is fitted to the open sites
(:func:`trialdesk.stats.forecast.fit_prior`, its fallback when too few sites have data), each
site's rate is updated by its own randomized subjects and months open, and sites not yet open
join at their planned activation. ``as_of`` defaults to today's UTC date.
"""

from __future__ import annotations

import datetime as dt

from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.reports.enrolment import (
    DatabaseForecast,
    EnrolmentReport,
    SiteForecastRow,
    count_rows,
    site_state,
)
from trialdesk.services import dashboard
from trialdesk.services.access import Actor, require
from trialdesk.services.context import ServiceContext
from trialdesk.stats.forecast import FALLBACK_PRIOR, SiteState, fit_prior, forecast, posterior

REPORT_READERS = [Role.MANAGER, Role.STATISTICIAN, Role.DSMB, Role.MONITOR]
MAX_SIMULATIONS = 1_000_000


def _check_simulations(simulations: int) -> None:
    if isinstance(simulations, bool) or not isinstance(simulations, int):
        raise ValidationFailed("simulations must be a whole number", {"simulations": "whole"})
    if not 1 <= simulations <= MAX_SIMULATIONS:
        raise ValidationFailed(
            f"simulations must be between 1 and {MAX_SIMULATIONS}, got {simulations}",
            {"simulations": "out of range"},
        )


def _check_as_of(ctx: ServiceContext, as_of: dt.date | None) -> dt.date:
    today = ctx.now().astimezone(dt.UTC).date()
    if as_of is None:
        return today
    if as_of > today + dt.timedelta(days=1):  # a site east of UTC may already be a day ahead
        raise ValidationFailed(
            f"as_of {as_of.isoformat()} is in the future", {"as_of": "in the future"}
        )
    return as_of


def forecast_from_database(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    as_of: dt.date | None = None,
    simulations: int = 10_000,
    seed: int | None = None,
) -> DatabaseForecast:
    """When the randomization target is reached, from each site's own recruitment (REP-1)."""
    require(actor, study_id, REPORT_READERS, action="enrolment forecast")
    _check_simulations(simulations)
    day = _check_as_of(ctx, as_of)
    counts = dashboard.enrolment(ctx, actor, study_id, as_of=day)
    return _forecast(ctx, study_id, day, counts, simulations, seed)


def _forecast(
    ctx: ServiceContext,
    study_id: int,
    day: dt.date,
    counts: dashboard.Enrolment,
    simulations: int,
    seed: int | None,
) -> DatabaseForecast:
    randomized = {row.key: row.randomized for row in counts.by_site}
    with ctx.uow(readonly=True) as uow:
        facts = uow.reporting.site_facts(study_id, day, randomized)
    states: list[tuple[SiteState, dt.date | None]] = []
    excluded: list[str] = []
    for f in facts:
        # issue 16: open since its recorded activation; a plan only for a site not yet active
        seen = site_state(f, day) if f.active or f.activity else None
        if seen is None:
            excluded.append(f.code)
        else:
            states.append(seen)
    if not states:
        raise PreconditionFailed("no active site to forecast from", reason="no-active-site")
    sites = [s for s, _ in states]
    alpha, beta = fit_prior(sites)
    source = "fallback" if (alpha, beta) == FALLBACK_PRIOR else "fitted"
    result = forecast(
        alpha,
        beta,
        sites,
        counts.target,
        counts.randomized,
        simulations=simulations,
        seed=seed,
        as_of=day,
    )
    rows = []
    for state, when in states:
        shape, rate = posterior(alpha, beta, state)
        rows.append(
            SiteForecastRow(
                code=state.code,
                opened_on=when if state.opens_in_months == 0 else None,
                opens_on=when if state.opens_in_months > 0 else None,
                randomized=state.recruited,
                months_open=state.months_open,
                opens_in_months=state.opens_in_months,
                posterior_shape=shape,
                posterior_rate=rate,
                posterior_mean=shape / rate,
            )
        )
    return DatabaseForecast(
        as_of=day,
        target=counts.target,
        randomized=counts.randomized,
        alpha=alpha,
        beta=beta,
        prior=source,
        forecast=result,
        sites=rows,
        excluded_sites=excluded,
    )


def enrolment_report(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    as_of: dt.date | None = None,
    simulations: int = 10_000,
    seed: int | None = None,
) -> EnrolmentReport:
    """Screened and randomized against target by site, country, region and month, with the
    forecast (REP-1). The forecast is ``None`` only when no site is active."""
    require(actor, study_id, REPORT_READERS, action="enrolment report")
    _check_simulations(simulations)
    day = _check_as_of(ctx, as_of)
    counts = dashboard.enrolment(ctx, actor, study_id, as_of=day)
    with ctx.uow(readonly=True) as uow:
        months = uow.reporting.month_rows(study_id, day)
    try:
        predicted: DatabaseForecast | None = _forecast(
            ctx, study_id, day, counts, simulations, seed
        )
    except PreconditionFailed:
        predicted = None
    return EnrolmentReport(
        as_of=day,
        target=counts.target,
        registered=counts.registered,
        randomized=counts.randomized,
        by_site=count_rows(counts.by_site),
        by_country=count_rows(counts.by_country),
        by_region=count_rows(counts.by_region),
        by_month=months,
        forecast=predicted,
    )
