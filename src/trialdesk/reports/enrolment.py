"""Enrolment report (REP-1): the read model over time, the per-site forecast inputs, and the
plot (PNG and SVG) with the Poisson–Gamma forecast drawn on it.

Counts only: nothing here reads an arm (RAND-6). Test subjects are left out everywhere.

When a site opened (the forecast's ``τ`` starts there), issue 16: its recorded activation,
the site-local date it last became active on or before ``as_of`` (sites are created active,
so a site never deactivated opened at its creation), or its first registration if that is
earlier (a site closed and reopened keeps its earlier time). Planned activation dates count
only for sites not active at ``as_of`` that have registered nobody: they enter the forecast
at their plan if it is still ahead. A site closed after recruiting, or not active and with
no plan ahead, recruits no more: its subjects count, its rate does not. A site with no
recorded openings at all (none expected) falls back to the earlier of its first registration
and its planned activation.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trialdesk.stats.forecast import DAYS_PER_MONTH, Forecast, SiteState
from trialdesk.store.site_activity import site_activity
from trialdesk.store.tables import RandomizationRow, SiteRow, SubjectRow

FORECAST_LABEL = "Forecast (expected, Poisson-Gamma)"
"""Legend text of the forecast line; tests look for it in the SVG."""
INTERVAL_LABEL = "Target reached: 5-95 % interval"
MEDIAN_LABEL = "Target reached: median"


@dataclass(frozen=True)
class CountRow:
    key: str
    registered: int
    randomized: int


@dataclass(frozen=True)
class MonthRow:
    """One calendar month (``YYYY-MM``): new and cumulative subjects registered and randomized."""

    month: str
    registered: int
    randomized: int
    cumulative_registered: int
    cumulative_randomized: int


@dataclass(frozen=True)
class SiteFacts:
    """What the database says about one site up to ``as_of``."""

    code: str
    active: bool
    planned_activation: dt.date | None
    first_registration: dt.date | None
    randomized: int
    activity: tuple[tuple[dt.date, bool], ...] = ()
    """Recorded openings and closings (site-local date, active after it), oldest first."""


@dataclass(frozen=True)
class SiteForecastRow:
    """One site in the forecast: its data and its posterior rate (subjects per month)."""

    code: str
    opened_on: dt.date | None
    opens_on: dt.date | None
    randomized: int
    months_open: float
    opens_in_months: float
    posterior_shape: float
    posterior_rate: float
    posterior_mean: float


@dataclass(frozen=True)
class DatabaseForecast:
    """The forecast from the database: the prior used, every site's posterior, the result."""

    as_of: dt.date
    target: int
    randomized: int
    alpha: float
    beta: float
    prior: str
    forecast: Forecast
    sites: list[SiteForecastRow] = field(default_factory=list)
    excluded_sites: list[str] = field(default_factory=list)

    def site(self, code: str) -> SiteForecastRow:
        return next(s for s in self.sites if s.code == code)

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "target": self.target,
            "randomized": self.randomized,
            "prior": {"shape": self.alpha, "rate": self.beta, "source": self.prior},
            "forecast": self.forecast.to_dict(),
            "sites": [_json(asdict(s)) for s in self.sites],
            "excluded_sites": list(self.excluded_sites),
        }


@dataclass(frozen=True)
class EnrolmentReport:
    """Screened (registered) and randomized against target, by level and by month."""

    as_of: dt.date
    target: int
    registered: int
    randomized: int
    by_site: list[CountRow]
    by_country: list[CountRow]
    by_region: list[CountRow]
    by_month: list[MonthRow]
    forecast: DatabaseForecast | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "target": self.target,
            "registered": self.registered,
            "randomized": self.randomized,
            "by_site": [asdict(r) for r in self.by_site],
            "by_country": [asdict(r) for r in self.by_country],
            "by_region": [asdict(r) for r in self.by_region],
            "by_month": [asdict(r) for r in self.by_month],
            "forecast": self.forecast.to_dict() if self.forecast else None,
        }


def _json(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dt.date):
            out[key] = value.isoformat()
        elif isinstance(value, float) and not math.isfinite(value):
            out[key] = None
        else:
            out[key] = value
    return out


# --- queries (read only) --------------------------------------------------------------------


def _live(study_id: int) -> Any:
    return (SubjectRow.study_id == study_id) & SubjectRow.test_subject.is_(False)


def load_site_facts(
    session: Session, study_id: int, as_of: dt.date, randomized: dict[str, int]
) -> list[SiteFacts]:
    """Every site of the study with its first registration up to ``as_of``; ``randomized``
    (site code -> count) comes from the dashboard's counts so they are not computed twice."""
    # not dict(result): a Result has keys(), so dict() would read it as a mapping
    first: dict[int, dt.date] = {
        int(site_id): day
        for site_id, day in session.execute(
            select(SubjectRow.site_id, func.min(SubjectRow.registered_on))
            .where(_live(study_id), SubjectRow.registered_on <= as_of)
            .group_by(SubjectRow.site_id)
        ).tuples()
    }
    sites = session.scalars(
        select(SiteRow).where(SiteRow.study_id == study_id).order_by(SiteRow.code)
    ).all()
    recorded = site_activity(session, study_id)
    return [
        SiteFacts(
            code=s.code,
            active=bool(s.active),
            planned_activation=s.planned_activation,
            first_registration=first.get(s.id),
            randomized=int(randomized.get(s.code, 0)),
            activity=site_events(recorded.get(s.code, []), s.timezone, first.get(s.id)),
        )
        for s in sites
    ]


def site_events(
    recorded: list[tuple[str, bool]], zone: str, first_registration: dt.date | None
) -> tuple[tuple[dt.date, bool], ...]:
    """A site's openings and closings as site-local dates, in date order. The first entry is
    its creation (active): where later entries or registrations are dated before it (a demo
    made after the fact, on a simulated clock), the site existed by then, so the creation is
    taken at the earliest of them."""
    events = [(local_date(at, zone), active) for at, active in recorded]
    if events:
        earliest = min(
            [d for d, _ in events] + ([first_registration] if first_registration else [])
        )
        events[0] = (min(events[0][0], earliest), events[0][1])
    return tuple(sorted(events, key=lambda e: e[0]))


def local_date(at: str, zone: str) -> dt.date:
    """The site-local date of a stored UTC time."""
    moment = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(ZoneInfo(zone)).date()


def load_month_rows(session: Session, study_id: int, as_of: dt.date) -> list[MonthRow]:
    """Registrations and randomizations per calendar month up to ``as_of``."""
    registered = session.scalars(
        select(SubjectRow.registered_on).where(_live(study_id), SubjectRow.registered_on <= as_of)
    ).all()
    randomized = session.scalars(
        select(RandomizationRow.randomized_on)
        .join(SubjectRow, SubjectRow.id == RandomizationRow.subject_id)
        .where(_live(study_id), RandomizationRow.randomized_on <= as_of)
    ).all()
    return month_rows(registered, randomized, as_of)


# --- pure builders --------------------------------------------------------------------------


def _month(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_rows(
    registered: Iterable[dt.date], randomized: Iterable[dt.date], as_of: dt.date
) -> list[MonthRow]:
    """Every month from the first registration to ``as_of``, gaps filled with zeros."""
    reg = sorted(registered)
    ran = sorted(randomized)
    if not reg and not ran:
        return []
    start = min([*reg[:1], *ran[:1]])
    year, month = start.year, start.month
    rows: list[MonthRow] = []
    cum_reg = cum_ran = 0
    while (year, month) <= (as_of.year, as_of.month):
        key = f"{year:04d}-{month:02d}"
        n_reg = sum(1 for d in reg if _month(d) == key)
        n_ran = sum(1 for d in ran if _month(d) == key)
        cum_reg += n_reg
        cum_ran += n_ran
        rows.append(MonthRow(key, n_reg, n_ran, cum_reg, cum_ran))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return rows


def opened_on(facts: SiteFacts, as_of: dt.date) -> dt.date | None:
    """When the site opened, as the module docstring says; ``None`` if not open at ``as_of``."""
    if facts.activity:
        active, since = activation(facts, as_of)
        if not active or since is None:
            return None
        first = facts.first_registration
        return min(since, first) if first is not None and first <= as_of else since
    candidates = [d for d in (facts.first_registration, facts.planned_activation) if d]
    candidates = [d for d in candidates if d <= as_of]
    return min(candidates) if candidates else None


def activation(facts: SiteFacts, as_of: dt.date) -> tuple[bool, dt.date | None]:
    """Whether the site was active at the end of ``as_of`` by its record, and since when."""
    active, since = False, None
    for day, opens in facts.activity:  # in date order
        if day > as_of:
            break
        if opens and not active:
            since = day
        active = opens
    return active, since if active else None


def site_state(facts: SiteFacts, as_of: dt.date) -> tuple[SiteState, dt.date | None] | None:
    """The forecast's view of one site and the date it opens (or opened); ``None`` for a site
    that recruits no more (closed, or not active with no plan ahead)."""
    opened = opened_on(facts, as_of)
    if opened is not None:
        months = (as_of - opened).days / DAYS_PER_MONTH
        return SiteState(facts.code, facts.randomized, months), opened
    planned = facts.planned_activation
    if facts.activity and facts.first_registration is not None:
        return None  # closed after recruiting
    if planned is not None and planned > as_of:
        return SiteState(facts.code, 0, 0.0, (planned - as_of).days / DAYS_PER_MONTH), planned
    if facts.activity:
        return None
    return SiteState(facts.code, 0, 0.0), as_of


# --- plot -----------------------------------------------------------------------------------


def expected_curve(report: EnrolmentReport, weeks: int) -> tuple[list[dt.date], list[float]] | None:
    """Expected cumulative randomized after ``as_of``: each site adds its posterior mean rate
    from the time it is open, ``E[N(t)] = n + Σ m_i · max(0, t − o_i)``."""
    fc = report.forecast
    if fc is None:
        return None
    days: list[dt.date] = []
    values: list[float] = []
    for week in range(weeks + 1):
        t = week * 7 / DAYS_PER_MONTH
        expected = fc.randomized + sum(
            s.posterior_mean * max(0.0, t - s.opens_in_months) for s in fc.sites
        )
        days.append(fc.as_of + dt.timedelta(days=7 * week))
        values.append(expected)
        if expected >= fc.target:
            break
    return days, values


def _month_end(key: str) -> dt.date:
    year, month = int(key[:4]), int(key[5:])
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)


def write_plots(report: EnrolmentReport, out_dir: Path, stem: str = "enrolment") -> list[Path]:
    """Cumulative screened and randomized by month against the target, with the forecast;
    written as ``<stem>.png`` and ``<stem>.svg`` (text kept as text in the SVG)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    for path, fmt in zip(paths, ("png", "svg"), strict=True):
        path.write_bytes(render_plot(report, fmt))
    return paths


def render_plot(report: EnrolmentReport, fmt: str = "svg") -> bytes:
    """The enrolment plot as PNG or SVG bytes (for files, pages and the API)."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display; chosen here, never at import
    import matplotlib.pyplot as plt

    if fmt not in ("png", "svg"):
        raise ValueError(f"unknown plot format {fmt!r}; png or svg")
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "trialdesk"}):
        fig, ax = plt.subplots(figsize=(9, 5))
        try:
            _draw(ax, report)
            if fmt == "png":
                fig.savefig(buffer, format="png", dpi=100)
            else:
                fig.savefig(buffer, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    return buffer.getvalue()


def _draw(ax: Any, report: EnrolmentReport) -> None:
    months = [min(_month_end(r.month), report.as_of) for r in report.by_month]
    screened = [r.cumulative_registered for r in report.by_month]
    randomized = [r.cumulative_randomized for r in report.by_month]
    ax.step(months, screened, where="post", marker=".", label="Screened (registered)")
    ax.step(months, randomized, where="post", marker=".", label="Randomized")
    ax.axhline(report.target, color="grey", linestyle=":", label=f"Target ({report.target})")
    fc = report.forecast
    if fc is not None:
        horizon = fc.forecast.date_p95 or fc.forecast.date_p50
        weeks = 520 if horizon is None else max(1, (horizon - fc.as_of).days // 7 + 1)
        curve = expected_curve(report, weeks)
        if curve is not None:
            ax.plot(*curve, linestyle="--", color="C3", label=FORECAST_LABEL, gid="forecast-line")
        low, mid, high = fc.forecast.date_p05, fc.forecast.date_p50, fc.forecast.date_p95
        if low is not None and high is not None:
            ax.axvspan(low, high, color="C3", alpha=0.12, label=INTERVAL_LABEL)
        if mid is not None:
            ax.axvline(mid, color="C3", linewidth=0.8, label=MEDIAN_LABEL)
    ax.set_title(f"Enrolment against target as of {report.as_of.isoformat()}")
    ax.set_xlabel("Date")
    ax.set_ylabel("Subjects (cumulative)")
    ax.legend(loc="upper left", fontsize="small")
    ax.figure.autofmt_xdate()
    ax.figure.tight_layout()


def count_rows(rows: Sequence[Any]) -> list[CountRow]:
    """The dashboard's rows as report rows."""
    return [CountRow(r.key, int(r.registered), int(r.randomized)) for r in rows]
