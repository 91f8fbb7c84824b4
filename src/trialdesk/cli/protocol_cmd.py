"""`trialdesk protocol ...` commands: check a protocol file, show what it says, and amend the
study's protocol with a signed new version (PROT-2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from trialdesk.cli.common import fail, print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt
from trialdesk.cli.runtime import guarded, open_runtime, parse_date, sign_in, signature_password
from trialdesk.protocol.checks import describe_rule
from trialdesk.protocol.loader import LoadedProtocol, ProtocolInvalid, load_protocol
from trialdesk.services import amendments

app = typer.Typer(help="protocol commands", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="protocol YAML file", show_default=False)]
OptionalFileArg = Annotated[
    Path | None,
    typer.Argument(help="protocol YAML file (default: the flagship protocol)", show_default=False),
]


def _load_or_fail(file: Path) -> LoadedProtocol:
    """The validated protocol, or every problem as FILE:LINE: path: message and exit 1."""
    try:
        return load_protocol(file)
    except ProtocolInvalid as exc:
        for problem in exc.problems:
            where = f"{file}:{problem.line}" if problem.line is not None else f"{file}"
            parts = (
                [where, problem.path, problem.message] if problem.path else [where, problem.message]
            )
            typer.echo(": ".join(parts), err=True)
        count = len(exc.problems)
        fail(f"{file}: {count} problem{'' if count == 1 else 's'}; the protocol was not accepted")


@app.command()
def validate(file: FileArg) -> None:
    """Check FILE; print a summary, or every problem as FILE:LINE: path: message."""
    loaded = _load_or_fail(file)
    typer.echo(f"ok: {summary(loaded)}")


def _print_preview(preview: amendments.AmendmentPreview) -> None:
    typer.echo(
        f"Amendment of study {preview.study}: {preview.old_version} "
        f"({preview.old_sha256[:12]}) -> {preview.new_version} ({preview.new_sha256[:12]}), "
        f"effective {preview.effective_from} (site-local date)"
    )
    for line in preview.lines:
        typer.echo(line)
    if preview.impact:
        typer.echo("for subjects already enrolled:")
        for line in preview.impact:
            typer.echo(f"  - {line}")
    if preview.needs_statistician:
        typer.echo(
            "the allocation design changes in a running study: the amendment stays pending "
            "until an unblinded statistician signs it ('trialdesk protocol sign-amendment')"
        )


def _print_amendment(view: amendments.AmendmentView) -> None:
    signers = ", ".join(f"{s.name} ({s.username}) at {s.at}" for s in view.signatures)
    typer.echo(
        f"amendment {view.id}: version {view.version} ({view.sha256[:12]}) {view.status}, "
        f"effective {view.effective_from}; signed by {signers}"
    )
    if view.status == "pending":
        typer.echo("pending: it takes effect when an unblinded statistician signs it")


@app.command()
def amend(
    file: FileArg,
    effective: Annotated[
        str | None,
        typer.Option(
            "--effective",
            help="site-local date it takes effect (YYYY-MM-DD; default: the earliest date not "
            "past at any site)",
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="why the protocol is amended (to sign)")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="sign and apply (otherwise a dry run)")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show the diff and write nothing")
    ] = False,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Load FILE as a new version of the study's protocol (PROT-2): show what it changes and,
    with --yes, e-sign it as study manager. Without --yes (or with --dry-run) nothing is
    written. A change of arms, ratio or randomization of a running study stays pending until
    the statistician signs it too."""
    loaded = _load_or_fail(file)
    effective_from = parse_date(effective, "--effective")
    apply = yes and not dry_run
    if apply and not (reason or "").strip():
        fail("--reason is required to sign an amendment")
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        ctx = runtime.context
        preview = guarded(
            lambda: amendments.preview_amendment(
                ctx, session.actor, session.study.id, loaded, effective_from=effective_from
            )
        )
        if not apply:
            if json_out:
                print_json({"dry_run": True, **preview.to_dict()})
            else:
                _print_preview(preview)
            if preview.refusals:
                fail("the amendment cannot be made: " + "; ".join(preview.refusals))
            if not json_out:
                typer.echo("dry run: nothing was written; add --yes --reason TEXT to sign it")
            return
        if preview.refusals:
            fail("the amendment cannot be made: " + "; ".join(preview.refusals))
        if not json_out:
            _print_preview(preview)
        password = signature_password(ctx.settings)
        view = guarded(
            lambda: amendments.propose_amendment(
                ctx,
                session.actor,
                session.study.id,
                loaded,
                reason=reason or "",
                password=password,
                effective_from=effective_from,
            )
        )
    if json_out:
        print_json(view.to_dict())
    else:
        _print_amendment(view)


@app.command("sign-amendment")
def sign_amendment(
    amendment_id: Annotated[int, typer.Argument(help="amendment number", show_default=False)],
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Co-sign a pending amendment as unblinded statistician (allocation-design changes)."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        ctx = runtime.context
        shown = guarded(
            lambda: amendments.amendment_diff(ctx, session.actor, session.study.id, amendment_id)
        )
        if not json_out:
            for line in shown.lines:
                typer.echo(line)
        password = signature_password(ctx.settings)
        view = guarded(
            lambda: amendments.sign_amendment(
                ctx, session.actor, session.study.id, amendment_id, password
            )
        )
    if json_out:
        print_json(view.to_dict())
    else:
        _print_amendment(view)


@app.command()
def versions(
    user: str | None = UserOpt, study: str | None = StudyOpt, json_out: bool = JsonOpt
) -> None:
    """List the study's protocol versions: status, effective date and who signed them."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        rows = guarded(
            lambda: amendments.list_protocol_versions(
                runtime.context, session.actor, session.study.id
            )
        )
    if json_out:
        print_json([r.to_dict() for r in rows])
        return
    for r in rows:
        since = r.effective_from or "the start"
        mark = " (newest)" if r.current else ""
        line = f"{r.version} {r.sha256[:12]} {r.status}{mark}, in force from {since}"
        if r.signatures:
            line += "; signed by " + ", ".join(f"{s.name} at {s.at}" for s in r.signatures)
        typer.echo(line)


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
