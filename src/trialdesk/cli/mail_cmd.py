"""`trialdesk mail ...`: the outbox, for the local operator (issue 12). Without an SMTP
server this is the only place an invitation or reset link can be read."""

from __future__ import annotations

from dataclasses import asdict

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.options import JsonOpt
from trialdesk.cli.runtime import guarded, local_operator, open_runtime
from trialdesk.services.mail import flush_outbox, list_outbox, show_mail

app = typer.Typer(help="The mail outbox (local operator).", no_args_is_help=True)


@app.command("list")
def list_cmd(
    all_mails: bool = typer.Option(False, "--all", help="sent mails too"),
    json_out: bool = JsonOpt,
) -> None:
    """Mails waiting (or failed, with their error); bodies with 'trialdesk mail show ID'."""
    with open_runtime() as runtime:
        rows = guarded(
            lambda: list_outbox(runtime.context, local_operator(), unsent_only=not all_mails)
        )
    if json_out:
        print_json([asdict(r) for r in rows])
        return
    for r in rows:
        error = f"\t{r.last_error}" if r.last_error else ""
        typer.echo(f"{r.id}\t{r.status}\t{r.kind}\t{r.recipient}\t{r.subject}{error}")


@app.command("show")
def show(mail_id: int, json_out: bool = JsonOpt) -> None:
    """One mail with its body (and link), to pass on by hand when there is no SMTP server."""
    with open_runtime() as runtime:
        row = guarded(lambda: show_mail(runtime.context, local_operator(), mail_id))
    if json_out:
        print_json(asdict(row))
        return
    typer.echo(f"To: {row.recipient}\nSubject: {row.subject}\nStatus: {row.status}\n")
    typer.echo(row.body if row.body is not None else "(body removed after delivery)")


@app.command("flush")
def flush() -> None:
    """Send every unsent mail now (also those backing off after failures)."""
    with open_runtime() as runtime:
        report = guarded(lambda: flush_outbox(runtime.context, local_operator()))
    typer.echo(f"sent {report.sent}, failed {report.failed}, still waiting {report.waiting}")
    if report.failed:
        raise typer.Exit(1)
