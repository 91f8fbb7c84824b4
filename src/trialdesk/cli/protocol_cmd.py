"""`trialdesk protocol ...` commands: check a protocol file and show what it says."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from trialdesk.cli.common import fail, print_json
from trialdesk.protocol.checks import describe_rule
from trialdesk.protocol.loader import LoadedProtocol, ProtocolInvalid, load_protocol

app = typer.Typer(help="protocol commands", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="protocol YAML file", show_default=False)]
OptionalFileArg = Annotated[
    Path | None,
    typer.Argument(help="protocol YAML file (default: the flagship protocol)", show_default=False),
]


@app.command()
def validate(file: FileArg) -> None:
    """Check FILE; print a summary, or every problem as FILE:LINE: path: message."""
    try:
        loaded = load_protocol(file)
    except ProtocolInvalid as exc:
        for problem in exc.problems:
            where = f"{file}:{problem.line}" if problem.line is not None else f"{file}"
            parts = (
                [where, problem.path, problem.message] if problem.path else [where, problem.message]
            )
            typer.echo(": ".join(parts), err=True)
        count = len(exc.problems)
        fail(f"{file}: {count} problem{'' if count == 1 else 's'}; the protocol was not accepted")
    typer.echo(f"ok: {summary(loaded)}")


@app.command()
def show(
    file: OptionalFileArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Show arms, caps, visits and criteria of FILE (the flagship when no FILE is given)."""
    try:
        loaded = load_protocol(file)
    except ProtocolInvalid as exc:
        fail(f"{exc.message}; run `trialdesk protocol validate {file}` for the full list")
    if as_json:
        print_json(as_dict(loaded))
        return
    _print_tables(loaded)


def summary(loaded: LoadedProtocol) -> str:
    """One line that identifies a protocol file, e.g. for logs and the validate command."""
    p = loaded.protocol
    return (
        f"{p.name} v{p.version} sha256 {loaded.sha256[:12]}: {len(p.arms)} arms, "
        f"{len(p.visits)} visits, {len(p.criteria)} criteria, {len(p.forms)} forms, "
        f"{len(p.sites)} sites"
    )


def as_dict(loaded: LoadedProtocol) -> dict[str, Any]:
    """The JSON of `protocol show --json`: what a script needs to know about a protocol."""
    p = loaded.protocol
    return {
        "name": p.name,
        "version": p.version,
        "title": p.title,
        "sha256": loaded.sha256,
        "source": loaded.source,
        "arms": [{"code": a.code, "label": a.label, "ratio": a.ratio} for a in p.arms],
        "target_subjects": p.enrolment.target_subjects,
        "cap_total": p.enrolment.total_cap,
        "cap_per_site": p.enrolment.cap_per_site,
        "randomization": {
            "method": p.randomization.method.value,
            "strata": list(p.randomization.strata),
            "block_sizes": list(p.randomization.block_sizes),
        },
        "visits": [
            {
                "code": v.code,
                "name": v.name,
                "kind": v.kind.value,
                "target_day": v.target_day,
                "window_before": v.window_before,
                "window_after": v.window_after,
                "forms": list(v.forms),
            }
            for v in p.visits
        ],
        "criteria": [
            {
                "id": c.id,
                "kind": c.kind,
                "gate": c.gate.value,
                "check": "rule" if c.rule is not None else "investigator",
                "rule": describe_rule(c.rule) if c.rule is not None else None,
                "text": c.text,
                "assumption": c.assumption,
            }
            for c in p.criteria
        ],
        "forms": [f.code for f in p.forms],
        "sites": len(p.sites),
    }


def _print_tables(loaded: LoadedProtocol) -> None:
    p = loaded.protocol
    console = Console()
    console.print(f"[bold]{p.name}[/bold] v{p.version}  sha256 {loaded.sha256[:12]}")
    console.print(p.title)
    caps = f"target {p.enrolment.target_subjects} subjects, total cap {p.enrolment.total_cap}"
    if p.enrolment.cap_per_site is not None:
        caps += f", per site {p.enrolment.cap_per_site}"
    console.print(f"Enrolment: {caps}; {len(p.sites)} sites in {len(p.countries)} countries")
    r = p.randomization
    method = r.method.value
    if r.strata:
        method += f", strata {', '.join(r.strata)}"
    if r.block_sizes:
        method += f", block sizes {', '.join(map(str, r.block_sizes))}"
    console.print(f"Randomization: {method}")

    arms = Table(title="Arms")
    for column in ("code", "label", "ratio", "procedure form"):
        arms.add_column(column)
    for arm in p.arms:
        arms.add_row(arm.code, arm.label, str(arm.ratio), arm.procedure_form or "")
    console.print(arms)

    visits = Table(title="Visits (day 0 = randomization; windows include both ends)")
    for column in ("code", "name", "kind", "target day", "window", "days", "forms"):
        visits.add_column(column)
    for v in p.visits:
        visits.add_row(
            v.code,
            v.name,
            v.kind.value,
            str(v.target_day),
            f"-{v.window_before}/+{v.window_after}",
            f"{v.target_day - v.window_before}-{v.target_day + v.window_after}",
            ", ".join(v.forms),
        )
    console.print(visits)

    criteria = Table(title="Criteria")
    for column in ("id", "kind", "gate", "check", "text"):
        criteria.add_column(column)
    for c in p.criteria:
        check = describe_rule(c.rule) if c.rule is not None else "investigator confirms"
        text = c.text + (" (assumption)" if c.assumption else "")
        criteria.add_row(c.id, c.kind, c.gate.value, check, text)
    console.print(criteria)
