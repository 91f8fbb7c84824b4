"""`trialdesk endpoints ...`: the primary endpoints from live data (unblinded roles; END-1..3)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.runtime import guarded, open_runtime, parse_date, sign_in
from trialdesk.services import endpoints

app = typer.Typer(help="Primary endpoints (unblinded roles).", no_args_is_help=True)


def _show(call: Callable[..., Any], as_of: str | None, user: str | None, study: str | None) -> None:
    day: dt.date | None = parse_date(as_of, "--as-of")
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        result = guarded(lambda: call(runtime.context, session.actor, session.study.id, as_of=day))
    print_json(result.to_dict())


@app.command("safety")
def safety(
    as_of: str | None = typer.Option(None, "--as-of"),
    user: str | None = typer.Option(None, "--user"),
    study: str | None = typer.Option(None, "--study"),
) -> None:
    """END-1: freedom from major adverse events at 12 months in the intervention arm (JSON)."""
    _show(endpoints.safety_summary, as_of, user, study)


@app.command("efficacy")
def efficacy(
    as_of: str | None = typer.Option(None, "--as-of"),
    user: str | None = typer.Option(None, "--user"),
    study: str | None = typer.Option(None, "--study"),
) -> None:
    """END-2: win ratio over the hierarchical composite at 24 months (JSON)."""
    _show(endpoints.efficacy_summary, as_of, user, study)


@app.command("interim")
def interim(
    as_of: str | None = typer.Option(None, "--as-of"),
    user: str | None = typer.Option(None, "--user"),
    study: str | None = typer.Option(None, "--study"),
) -> None:
    """END-3: whether the interim look (half the randomized subjects past 12 months) is due."""
    _show(endpoints.interim_status, as_of, user, study)
