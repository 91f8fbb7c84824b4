"""`trialdesk endpoints ...`: the primary endpoints from live data (unblinded roles; END-1..3)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.options import StudyOpt, UserOpt, signed_in_call
from trialdesk.cli.runtime import parse_date
from trialdesk.services import endpoints

app = typer.Typer(help="Primary endpoints (unblinded roles).", no_args_is_help=True)


def _show(call: Callable[..., Any], as_of: str | None, user: str | None, study: str | None) -> None:
    day: dt.date | None = parse_date(as_of, "--as-of")
    result = signed_in_call(
        user, study, lambda s: call(s.runtime.context, s.actor, s.study.id, as_of=day)
    )
    print_json(result.to_dict())


@app.command("safety")
def safety(
    as_of: str | None = typer.Option(None, "--as-of"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """END-1: freedom from major adverse events at 12 months in the intervention arm (JSON)."""
    _show(endpoints.safety_summary, as_of, user, study)


@app.command("efficacy")
def efficacy(
    as_of: str | None = typer.Option(None, "--as-of"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """END-2: win ratio over the hierarchical composite at 24 months (JSON)."""
    _show(endpoints.efficacy_summary, as_of, user, study)


@app.command("interim")
def interim(
    as_of: str | None = typer.Option(None, "--as-of"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """END-3: whether the interim look (half the randomized subjects past 12 months) is due."""
    _show(endpoints.interim_status, as_of, user, study)
