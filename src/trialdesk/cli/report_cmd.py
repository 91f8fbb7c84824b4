"""`trialdesk forecast` and `trialdesk report enrolment` (REP-1): enrolment against target and
the Poisson–Gamma forecast of when the target is reached."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import typer

from trialdesk.cli.common import fail, print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt
from trialdesk.cli.runtime import guarded, open_runtime, parse_date, sign_in
from trialdesk.reports.enrolment import write_plots
from trialdesk.services import dashboard, data_queries, report_views, reports
from trialdesk.stats.forecast import planning

report_app = typer.Typer(help="Reports (REP-1..3).", no_args_is_help=True)


def _months(value: float | None) -> str:
    return "never" if value is None or not math.isfinite(value) else f"{value:.1f} months"


def _planning(
    target: int | None,
    sites: int | None,
    shape: float | None,
    rate: float | None,
    simulations: int,
    seed: int | None,
    json_out: bool,
) -> None:
    given = {"--target": target, "--sites": sites, "--shape": shape, "--rate": rate}
    missing = [name for name, value in given.items() if value is None]
    if missing:
        needed = "--target, --sites, --shape and --rate"
        fail(f"planning mode needs {needed}; missing {', '.join(missing)}")
    assert target is not None and sites is not None and shape is not None and rate is not None
    if not 1 <= simulations <= reports.MAX_SIMULATIONS:
        fail(f"--simulations must be between 1 and {reports.MAX_SIMULATIONS}, got {simulations}")
    try:
        out = planning(target, sites, shape, rate, simulations=simulations, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    if json_out:
        print_json(out)
        return
    m, c = out["months"], out["closed_form"]
    typer.echo(
        f"{target} subjects at {sites} sites, rates Gamma(shape {shape}, rate {rate}) per month:"
    )
    typer.echo(
        f"  Monte Carlo ({simulations}): 5 % {_months(m['p05'])}, median {_months(m['p50'])}, "
        f"95 % {_months(m['p95'])}, mean {_months(m['mean'])}"
    )
    typer.echo(
        f"  closed form: 5 % {_months(c['p05'])}, median {_months(c['p50'])}, "
        f"95 % {_months(c['p95'])}, mean {_months(c['mean'])}"
    )


def forecast(
    target: int | None = typer.Option(None, "--target", help="planning: subjects to randomize"),
    sites: int | None = typer.Option(None, "--sites", help="planning: number of sites"),
    shape: float | None = typer.Option(None, "--shape", help="planning: Gamma shape α"),
    rate: float | None = typer.Option(None, "--rate", help="planning: Gamma rate β (months)"),
    simulations: int = typer.Option(10_000, "--simulations", help="Monte Carlo runs"),
    seed: int | None = typer.Option(None, "--seed", help="random seed (reproducible output)"),
    as_of: str | None = typer.Option(None, "--as-of", help="database mode: cut-off date"),
    json_out: bool = JsonOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """When the randomization target is reached (Poisson–Gamma model, 5/50/95 %). With
    --target/--sites/--shape/--rate: planning mode, no database. Otherwise from the database."""
    if any(v is not None for v in (target, sites, shape, rate)):
        _planning(target, sites, shape, rate, simulations, seed, json_out)
        return
    day = parse_date(as_of, "--as-of")
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        result = guarded(
            lambda: reports.forecast_from_database(
                runtime.context,
                session.actor,
                session.study.id,
                as_of=day,
                simulations=simulations,
                seed=seed,
            )
        )
    data = result.to_dict()
    if json_out:
        print_json(data)
        return
    fc = data["forecast"]
    typer.echo(
        f"{result.randomized} of {result.target} randomized as of {data['as_of']}; "
        f"target reached: median {fc['date_p50'] or 'never'} "
        f"(5 % {fc['date_p05'] or 'never'}, 95 % {fc['date_p95'] or 'never'})"
    )


@report_app.command("enrolment")
def enrolment(
    out: Path = typer.Option(Path("."), "--out", help="folder for enrolment.png and .svg"),
    as_of: str | None = typer.Option(None, "--as-of", help="cut-off date (YYYY-MM-DD)"),
    simulations: int = typer.Option(10_000, "--simulations", help="Monte Carlo runs"),
    seed: int | None = typer.Option(None, "--seed", help="random seed"),
    json_out: bool = JsonOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """Screened and randomized against target by site, country, region and month, with the
    forecast; writes a plot as PNG and SVG."""
    day = parse_date(as_of, "--as-of")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is not a folder")
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        report = guarded(
            lambda: reports.enrolment_report(
                runtime.context,
                session.actor,
                session.study.id,
                as_of=day,
                simulations=simulations,
                seed=seed,
            )
        )
    try:
        files = write_plots(report, out)
    except OSError as exc:
        fail(f"cannot write the plot to {out}: {exc.strerror or exc}")
    data: dict[str, Any] = {**report.to_dict(), "files": [str(f) for f in files]}
    if json_out:
        print_json(data)
        return
    typer.echo(
        f"{report.randomized} randomized, {report.registered} screened, target {report.target}"
    )
    for title, rows in (("Region", report.by_region), ("Country", report.by_country)):
        typer.echo(f"{title:<8} {'screened':>9} {'randomized':>11}")
        for row in rows:
            typer.echo(f"{row.key:<8} {row.registered:>9} {row.randomized:>11}")
    for f in files:
        typer.echo(f"wrote {f}")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _report(call: Callable[[Any, Any, int], Any], user: str | None, study: str | None) -> Any:
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        return guarded(lambda: call(runtime.context, session.actor, session.study.id))


def _write(out: Path | None, name: str, content: bytes | str) -> Path | None:
    if out is None:
        return None
    try:
        out.mkdir(parents=True, exist_ok=True)
        target = out / name
        if isinstance(content, str):
            target.write_text(content, encoding="utf-8")
        else:
            target.write_bytes(content)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}")
    return target


OutOpt = typer.Option(None, "--out", help="folder to write the report files to")
AsOfOpt = typer.Option(None, "--as-of", help="cut-off date (YYYY-MM-DD)")


@report_app.command("consort")
def consort(
    out: Path | None = OutOpt,
    as_of: str | None = AsOfOpt,
    json_out: bool = JsonOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """CONSORT flow from live data (REP-2); by-arm boxes only for unblinded roles. With --out,
    writes consort.svg and consort.png."""
    day = parse_date(as_of, "--as-of")
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        ctx, actor, sid = runtime.context, session.actor, session.study.id
        flow = guarded(lambda: report_views.consort(ctx, actor, sid, as_of=day))
        figures: dict[str, bytes] = {}
        if out is not None:
            for fmt in ("svg", "png"):
                figures[fmt] = guarded(
                    partial(report_views.consort_figure, ctx, actor, sid, day, fmt)
                )
    for fmt, content in figures.items():
        _write(out, f"consort.{fmt}", content)
    data = flow.to_json()
    if json_out:
        print_json(data)
        return
    typer.echo(f"assessed {data['assessed']}, randomized {data['randomized']}")
    for reason, n in data["excluded"].items():
        typer.echo(f"  excluded ({reason}): {n}")
    for arm, boxes in data.get("arms", {}).items():
        typer.echo(f"  {arm}: " + ", ".join(f"{k} {v}" for k, v in boxes.items()))


def _simple(name: str, call: Callable[..., Any], doc: str) -> Callable[..., None]:
    def command(
        out: Path | None = OutOpt,
        as_of: str | None = AsOfOpt,
        json_out: bool = JsonOpt,
        user: str | None = UserOpt,
        study: str | None = StudyOpt,
    ) -> None:
        day = parse_date(as_of, "--as-of")
        data = _jsonable(_report(partial(call, as_of=day), user, study))
        _write(out, f"{name}.json", json.dumps(data, indent=2, default=str))
        if json_out or out is None:
            print_json(data)

    command.__doc__ = doc
    return command


def _queries(ctx: Any, actor: Any, study_id: int, as_of: Any = None) -> Any:
    items = data_queries.open_queries(ctx, actor, study_id)
    if as_of is None:
        return items
    return [q for q in items if q.raised_at[:10] <= as_of.isoformat()]


report_app.command("compliance")(
    _simple(
        "compliance",
        report_views.visit_compliance,
        "Visit compliance: on time, early, late and missed per visit and site (REP-3).",
    )
)
report_app.command("screening")(
    _simple(
        "screening",
        dashboard.screening_log,
        "The screening log: every registered subject and why it left screening (REP-3, LIFE-3).",
    )
)
report_app.command("deviations")(
    _simple(
        "deviations",
        report_views.deviations,
        "Protocol deviations: visits out of window or missed, randomizations in error (REP-3).",
    )
)
report_app.command("queries")(
    _simple(
        "queries",
        _queries,
        "Open data queries (REP-3); with --as-of, those raised by then (status as of today).",
    )
)
report_app.command("crc")(
    _simple("crc", report_views.crc_workload, "CRC workload and turnaround per case kind (REP-3).")
)
report_app.command("unblinding")(
    _simple(
        "unblinding",
        report_views.unblinding_events,
        "Unblinding events: emergency, scheduled and trial-level (RAND-7).",
    )
)


@report_app.command("dsmb")
def dsmb(
    out: Path = typer.Option(Path("."), "--out", help="folder for dsmb-report.html"),
    as_of: str | None = AsOfOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """The DSMB by-arm report as one HTML document (unblinded roles only; REP-3)."""
    day = parse_date(as_of, "--as-of")
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        html = guarded(
            lambda: report_views.dsmb_report_html(
                runtime.context, session.actor, session.study.id, as_of=day
            )
        )
    target = _write(out, "dsmb-report.html", html)
    typer.echo(f"wrote {target}")
