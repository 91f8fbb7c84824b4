"""`trialdesk me ...`: the signed-in person's own settings."""

from __future__ import annotations

import typer

from trialdesk.cli.runtime import guarded, open_runtime, sign_in
from trialdesk.services.preferences import set_time_zone

app = typer.Typer(help="Your own settings.", no_args_is_help=True)


@app.command("time-zone")
def time_zone(
    zone: str | None = typer.Argument(
        None, help="IANA zone, e.g. Australia/Sydney; omit to go back to your site's zone"
    ),
    user: str | None = typer.Option(None, "--user", help="act as this user (or TRIALDESK_USER)"),
    study: str | None = typer.Option(None, "--study", help="study code (default: the only one)"),
) -> None:
    """Choose the zone timestamps are shown in (TIME-1); stored times stay UTC."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        shown = guarded(lambda: set_time_zone(runtime.context, session.actor, zone))
    typer.echo(f"times are shown in {shown}" if zone else "times follow your site's zone")
