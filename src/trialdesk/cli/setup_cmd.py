"""`trialdesk init`, `audit verify`, `study list`: set-up and maintenance."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from trialdesk.cli.common import fail, print_json
from trialdesk.cli.runtime import guarded, local_operator, open_runtime
from trialdesk.config import load_settings
from trialdesk.domain.errors import TrialError
from trialdesk.protocol.loader import ProtocolInvalid, load_protocol
from trialdesk.services.crypto import create_key_file
from trialdesk.services.lists import generate_list
from trialdesk.services.maintenance import verify_audit
from trialdesk.services.setup import create_demo_users, initialize_study, list_studies

DEMO_PASSWORD = "trialdesk-demo"


def init(
    protocol: Path | None = typer.Option(
        None, "--protocol", help="protocol file (default: the flagship)"
    ),
    study: str = typer.Option("FLAGSHIP", "--study", help="study code"),
    demo: bool = typer.Option(False, "--demo", help="demo study: demo users and a generated list"),
    demo_password: str = typer.Option(
        DEMO_PASSWORD, "--demo-password", help="password of the demo users"
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Create or migrate the database, load the protocol, create the sites (and demo users)."""
    settings = load_settings()
    try:
        loaded = load_protocol(protocol)
    except ProtocolInvalid as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        fail(f"{exc.message}\n{lines}")
    key_created = create_key_file(settings.allocation_key_file)
    operator = local_operator()
    with open_runtime(settings, migrate=True, demo=demo) as runtime:
        ctx = runtime.context
        info = guarded(
            lambda: initialize_study(
                ctx, operator, loaded, code=study, mode="demo" if demo else "live"
            )
        )
        users: list[str] = []
        list_made = None
        if demo:
            users = guarded(lambda: create_demo_users(ctx, operator, info.id, demo_password))
            try:
                list_made = generate_list(ctx, operator, info.id, mode="live")
            except TrialError as exc:
                if getattr(exc, "code", "") != "list-exists":
                    fail(f"{exc.message} [{exc.code}]")
    out = {
        "study": asdict(info),
        "allocation_key_file": str(settings.allocation_key_file),
        "key_created": key_created,
        "demo_users": users,
        "demo_password": demo_password if demo and users else None,
        "allocation_list": asdict(list_made) if list_made else None,
    }
    if json_out:
        print_json(out)
        return
    verb = "created" if info.created else "already initialised"
    typer.echo(
        f"study {info.code} {verb}: {info.protocol_name} v{info.protocol_version} "
        f"(sha256 {info.protocol_sha256[:12]}), {info.sites} sites"
    )
    if key_created:
        typer.echo(f"allocation key written to {settings.allocation_key_file} (keep it safe)")
    if users:
        typer.echo(f"demo users (password '{demo_password}'): " + ", ".join(users))
    if list_made:
        typer.echo(
            f"live allocation list generated: {list_made.strata} strata, "
            f"{list_made.slots} slots, fingerprint {list_made.fingerprint[:12]}"
        )


audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(json_out: bool = typer.Option(False, "--json")) -> None:
    """Check every hash chain; exit 1 naming the first edited, deleted or moved entry."""
    with open_runtime() as runtime:
        result = guarded(lambda: verify_audit(runtime.context, local_operator()))
    if json_out:
        print_json(
            {
                "ok": result.ok,
                "entries": result.entries,
                "streams": result.streams,
                "root": result.root,
                "problem": asdict(result.problem) if result.problem else None,
            }
        )
        if not result.ok:
            raise typer.Exit(1)
        return
    if result.ok:
        typer.echo(
            f"audit chain ok: {result.entries} entries in {result.streams} chains; "
            f"root {result.root}"
        )
        return
    assert result.problem is not None
    fail(f"audit chain broken: {result.problem.message}")


study_app = typer.Typer(help="Studies in this installation.", no_args_is_help=True)


@study_app.command("list")
def study_list(json_out: bool = typer.Option(False, "--json")) -> None:
    """List the studies (as the local operator)."""
    with open_runtime() as runtime:
        studies = guarded(lambda: list_studies(runtime.context, local_operator()))
    if json_out:
        print_json([asdict(s) for s in studies])
        return
    for s in studies:
        typer.echo(f"{s.code}\t{s.mode}\t{s.protocol_name} v{s.protocol_version}\t{s.sites} sites")
