"""`trialdesk schedule` and `trialdesk visits`: the calendar and the visit worklists."""

from __future__ import annotations

from pathlib import Path

import typer

from trialdesk.cli.common import fail, print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt
from trialdesk.cli.runtime import guarded, open_runtime, parse_date, require_date, sign_in
from trialdesk.protocol.loader import ProtocolInvalid, load_protocol
from trialdesk.services.visits import planned_calendar, visit_worklist


def schedule(
    randomized: str = typer.Option(..., "--randomized", help="randomization date (day 0)"),
    protocol: Path | None = typer.Option(None, "--protocol", help="default: the flagship"),
    json_out: bool = JsonOpt,
) -> None:
    """The planned visit calendar of a subject randomized on DATE (SCHED-1)."""
    day = require_date(randomized, "--randomized")
    try:
        loaded = load_protocol(protocol)
    except ProtocolInvalid as exc:
        fail(exc.message)
    rows = planned_calendar(loaded, day)
    if json_out:
        print_json(
            [
                {k: r[k] for k in ("code", "target_date", "window_start", "window_end")}
                | {"name": r["name"], "kind": r["kind"]}
                for r in rows
            ]
        )
        return
    for r in rows:
        typer.echo(
            f"{r['code']:4} {r['name']:12} {r['kind']:7} target {r['target_date']}  "
            f"window {r['window_start']} .. {r['window_end']}"
        )


visits_app = typer.Typer(help="Visit worklists.", no_args_is_help=True)


@visits_app.command("due")
def due(
    as_of: str | None = typer.Option(None, "--as-of", help="date (default: today at each site)"),
    site: str | None = typer.Option(None, "--site"),
    state: list[str] = typer.Option(["due", "overdue", "missed"], "--state"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Due, overdue and missed visits, per site or overall (SCHED-2)."""
    day = parse_date(as_of, "--as-of")
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        items = guarded(
            lambda: visit_worklist(
                runtime.context,
                session.actor,
                session.study.id,
                as_of=day,
                site=site,
                states=tuple(state),
            )
        )
    if json_out:
        print_json([i.to_dict() for i in items])
        return
    for i in items:
        typer.echo(f"{i.site}\t{i.subject}\t{i.visit}\t{i.state}\t{i.window_start}..{i.window_end}")
    typer.echo(f"{len(items)} visits")
