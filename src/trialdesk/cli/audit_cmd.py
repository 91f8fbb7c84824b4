"""`trialdesk audit list`: the study's audit trail filtered by action, user, subject and
date range (AUD-1), as the signed-in reader may see it (services/audit_trail.py)."""

from __future__ import annotations

import datetime as dt
import json

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt
from trialdesk.cli.runtime import guarded, open_runtime, sign_in
from trialdesk.services.audit_trail import AuditFilter, audit_entries


def _day(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name) from None


def audit_list(
    action: str | None = typer.Option(
        None, "--action", help="an action, or a prefix ending in * (e.g. 'disclose_*')"
    ),
    by: str | None = typer.Option(None, "--by", help="only what this user did"),
    subject: str | None = typer.Option(None, "--subject", help="only this subject's entries"),
    since: str | None = typer.Option(None, "--since", help="first day, UTC (YYYY-MM-DD)"),
    until: str | None = typer.Option(None, "--until", help="last day, UTC (YYYY-MM-DD)"),
    offset: int = typer.Option(0, "--offset"),
    limit: int = typer.Option(100, "--limit", help="at most 1000"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The study's audit trail, oldest first, with failed sign-ins and e-signatures of its
    users. Blinded readers get it without per-device entries, hashes or sub-second times."""
    where = AuditFilter(
        action=action,
        user=by,
        subject=subject,
        since=_day(since, "--since"),
        until=_day(until, "--until"),
    )
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        page = guarded(
            lambda: audit_entries(
                runtime.context,
                session.actor,
                session.study.id,
                where,
                limit=limit,
                offset=offset,
            )
        )
    if json_out:
        print_json(page.to_dict())
        return
    for e in page.items:
        reason = f"  ({e.reason})" if e.reason else ""
        subject_text = f" [{e.subject}]" if e.subject else ""
        values = "" if e.new is None else "  " + json.dumps(e.new, sort_keys=True)[:120]
        typer.echo(
            f"{e.at}  {e.actor:<14} {e.action:<26} {e.entity} {e.entity_id}"
            f"{subject_text}{reason}{values}"
        )
    shown = f"{len(page.items)} of {page.total} entries"
    typer.echo(shown + (" (blinded view)" if page.blinded else ""))


def build_audit_app() -> typer.Typer:
    """`trialdesk audit`: verify (the operator's chain check) and list (a reader's view)."""
    from trialdesk.cli.setup_cmd import audit_verify

    app = typer.Typer(help="The audit trail.", no_args_is_help=True)
    app.command("verify")(audit_verify)
    app.command("list")(audit_list)
    return app
