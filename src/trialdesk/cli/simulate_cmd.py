"""`trialdesk simulate`: fill a demo or sandbox study with a synthetic trial (never a live one)."""

from __future__ import annotations

import datetime as dt
import sys

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trialdesk.cli.common import fail, print_json
from trialdesk.cli.runtime import guarded, open_runtime, parse_date
from trialdesk.config import load_settings
from trialdesk.demo.trial import (
    SimulationConfig,
    SimulationRefused,
    check_simulable,
    simulate_trial,
)
from trialdesk.services.context import ServiceContext


def _day(value: str | None, name: str, today: dt.date) -> dt.date | None:
    """A date, or 'today': the last whole UTC day, so that nothing simulated lies in the
    future of any site's calendar when the demo is then served on the real clock."""
    if value == "today":
        return today - dt.timedelta(days=1)
    return parse_date(value, name)


def _simulable(ctx: ServiceContext, study: str | None) -> bool:
    """False (and why, on stdout) when the study already has subjects: simulating is done."""
    try:
        check_simulable(ctx, study)
    except SimulationRefused as exc:
        if exc.code != "study-has-subjects":
            raise
        typer.echo(exc.message)
        return False
    return True


def simulate(
    subjects: int = typer.Option(..., "--subjects", help="subjects to randomize"),
    sites: int = typer.Option(..., "--sites", help="how many of the protocol's sites take part"),
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="stop after this date (YYYY-MM-DD, or 'today': up to yesterday, UTC); default: once "
        "the last subject randomized has had the 1-month visit",
    ),
    start: str | None = typer.Option(
        None, "--start", help="first day of the trial (default: the first planned activation)"
    ),
    enrolment_years: float | None = typer.Option(
        None, "--enrolment-years", help="start this many years before --as-of (instead of --start)"
    ),
    seed: int = typer.Option(1, "--seed", help="same seed, same trial"),
    rate: float = typer.Option(
        1.0, "--screened-per-site-month", help="subjects screened per open site per month"
    ),
    study: str | None = typer.Option(None, "--study", help="study code"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Simulate a trial through the services on a demo or sandbox study with no subjects yet:
    screening with failures at each gate, randomization, procedures, visits, queries,
    therapies, adverse events and exits. Refuses a live study, writing nothing."""
    settings = load_settings()
    today = (settings.fixed_now or dt.datetime.now(dt.UTC)).date()
    as_of_day = _day(as_of, "--as-of", today)
    start_day = _day(start, "--start", today)
    if enrolment_years is not None:
        if start_day is not None or as_of_day is None:
            fail("--enrolment-years needs --as-of and replaces --start")
        if enrolment_years <= 0:
            fail("--enrolment-years must be positive")
        start_day = as_of_day - dt.timedelta(days=round(enrolment_years * 365.25))
    config = SimulationConfig(
        subjects=subjects,
        sites=sites,
        seed=seed,
        as_of=as_of_day,
        start=start_day,
        screened_per_site_month=rate,
    )
    with open_runtime(settings) as runtime:
        ctx = runtime.context
        if not guarded(lambda: _simulable(ctx, study)):
            return
        console = Console(stderr=True)
        with Progress(
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("randomized"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=json_out or not sys.stderr.isatty(),
        ) as bar:
            task = bar.add_task("simulate", total=subjects)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = guarded(lambda: simulate_trial(ctx, study, config, progress))
    if json_out:
        print_json(summary.to_dict())
        return
    excluded = ", ".join(f"{k} {v}" for k, v in summary.excluded.items() if v) or "none"
    states = ", ".join(f"{k} {v}" for k, v in summary.states.items())
    typer.echo(
        f"simulated study {summary.study} from {summary.start} to {summary.end} "
        f"(seed {summary.seed}, {summary.sites} sites)"
    )
    typer.echo(f"screened {summary.registered}, randomized {summary.randomized}")
    typer.echo(f"excluded: {excluded}")
    typer.echo(f"states: {states}")
    typer.echo(
        f"visits {summary.visits_done} done ({summary.visits_late} late), "
        f"{summary.visits_missed} missed; adverse events {summary.adverse_events}; "
        f"therapies {summary.therapies} ({summary.crc_therapy_decisions} adjudicated); "
        f"queries {summary.queries_raised} raised, {summary.queries_closed} closed"
    )
    typer.echo(
        f"deaths {summary.deaths}, withdrawals {summary.withdrawals}, lost to follow-up "
        f"{summary.lost_to_follow_up}, unblinded {summary.unblinded}, "
        f"completed {summary.completed}"
    )
