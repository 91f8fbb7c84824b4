"""`trialdesk init`, `audit verify`, `study list|create|grant`: set-up and maintenance."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from trialdesk.cli.common import fail, print_json
from trialdesk.cli.options import JsonOpt
from trialdesk.cli.runtime import guarded, local_operator, open_runtime
from trialdesk.config import load_settings
from trialdesk.domain.errors import TrialError
from trialdesk.protocol.loader import ProtocolInvalid, load_protocol
from trialdesk.services.accounts import InvitationView, invite
from trialdesk.services.admin import grant_role
from trialdesk.services.allocation.lists import generate_list
from trialdesk.services.crypto import create_key_file
from trialdesk.services.maintenance import verify_audit
from trialdesk.services.setup import (
    create_demo_users,
    initialize_study,
    list_studies,
    resolve_study,
)
from trialdesk.services.supply import DEMO_LOT, stock_demo_site

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
    admin_email: str | None = typer.Option(
        None, "--admin-email", help="invite the study's first administrator (live studies)"
    ),
    admin_name: str | None = typer.Option(None, "--admin-name", help="their full name"),
    statistician_email: str | None = typer.Option(
        None,
        "--statistician-email",
        help="invite the study's first unblinded statistician (the local operator's act)",
    ),
    statistician_name: str | None = typer.Option(
        None, "--statistician-name", help="their full name"
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Create or migrate the database, load the protocol, create the sites (and demo users);
    invite the first administrator and statistician by e-mail (their links are mailed, or
    read by the local operator with 'trialdesk mail list' and 'trialdesk mail show')."""
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
        stocked = 0
        invited: list[InvitationView] = []
        for email, name, role in (
            (admin_email, admin_name, "admin"),
            (statistician_email, statistician_name, "statistician"),
        ):
            if email:
                try:
                    invited.append(
                        invite(
                            ctx, operator, info.id, email=email, full_name=name or email, role=role
                        )
                    )
                except TrialError as exc:
                    fail(f"{exc.message} [{exc.code}]")
        if demo:
            users = guarded(lambda: create_demo_users(ctx, operator, info.id, demo_password))
            stocked = guarded(lambda: stock_demo_site(ctx, operator, info.id))
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
        "demo_devices": stocked,
        "invitations": [asdict(i) for i in invited],
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
    if stocked:
        typer.echo(
            f"demo device stock: {stocked} devices of lot {DEMO_LOT} received at the first site"
        )
    if list_made:
        typer.echo(
            f"live allocation list generated: {list_made.strata} strata, "
            f"{list_made.slots} slots, fingerprint {list_made.fingerprint[:12]}"
        )
    for i in invited:
        where = "mailed" if settings.smtp_url else "waiting in the outbox ('trialdesk mail list')"
        typer.echo(f"invitation {i.id}: {i.role} {i.email}, {where}")


audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(json_out: bool = JsonOpt) -> None:
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
def study_list(json_out: bool = JsonOpt) -> None:
    """List the studies of this installation (as the local operator): code, name, mode,
    protocol version and number of sites."""
    with open_runtime() as runtime:
        studies = guarded(lambda: list_studies(runtime.context, local_operator()))
    if json_out:
        print_json([{k: v for k, v in asdict(s).items() if k != "created"} for s in studies])
        return
    for s in studies:
        typer.echo(
            f"{s.code}\t{s.name}\t{s.mode}\t{s.protocol_name} v{s.protocol_version}"
            f"\t{s.sites} sites"
        )


def _protocol(value: str) -> Path | None:
    """``flagship`` names the protocol shipped with trialdesk; anything else is a file."""
    return None if value.strip().lower() == "flagship" else Path(value)


@study_app.command("create")
def study_create(
    code: str = typer.Option(..., "--code", help="the new study's code (letters, digits, - _)"),
    protocol: str = typer.Option(
        ..., "--protocol", help="protocol file, or 'flagship' for the one shipped"
    ),
    demo: bool = typer.Option(
        False, "--demo", help="demo study: demo users (given a role here) and a generated list"
    ),
    sandbox: bool = typer.Option(False, "--sandbox", help="sandbox study (no users, no list)"),
    demo_password: str = typer.Option(
        DEMO_PASSWORD, "--demo-password", help="password of demo users created now"
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Add another study to this installation's database ('trialdesk init' made the first)."""
    if demo and sandbox:
        fail("choose one of --demo and --sandbox")
    mode = "demo" if demo else "sandbox" if sandbox else "live"
    try:
        loaded = load_protocol(_protocol(protocol))
    except ProtocolInvalid as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        fail(f"{exc.message}\n{lines}")
    settings = load_settings()
    if settings.fixed_now is not None and mode == "live":
        fail("TRIALDESK_CLOCK (a fixed clock) is only allowed for demo and sandbox studies")
    operator = local_operator()
    with open_runtime(settings) as runtime:
        ctx = runtime.context
        known = guarded(lambda: list_studies(ctx, operator))
        if any(s.code == code for s in known):
            fail(f"study {code} already exists; 'trialdesk study list' shows the studies")
        create_key_file(settings.allocation_key_file)
        info = guarded(lambda: initialize_study(ctx, operator, loaded, code=code, mode=mode))
        users: list[str] = []
        list_made = None
        if demo:
            users = guarded(lambda: create_demo_users(ctx, operator, info.id, demo_password))
            guarded(lambda: stock_demo_site(ctx, operator, info.id))
            list_made = guarded(lambda: generate_list(ctx, operator, info.id, mode="live"))
    if json_out:
        print_json(
            {
                "study": asdict(info),
                "demo_users": users,
                "allocation_list": asdict(list_made) if list_made else None,
            }
        )
        return
    typer.echo(
        f"study {info.code} created ({info.mode}): {info.protocol_name} "
        f"v{info.protocol_version} (sha256 {info.protocol_sha256[:12]}), {info.sites} sites"
    )
    if users:
        typer.echo("demo users with a role in it: " + ", ".join(users))
    if list_made:
        typer.echo(
            f"live allocation list generated: {list_made.strata} strata, "
            f"{list_made.slots} slots, fingerprint {list_made.fingerprint[:12]}"
        )


@study_app.command("grant")
def study_grant(
    username: str = typer.Argument(..., help="an existing user, of any study here"),
    study: str = typer.Option(..., "--study", help="the study to give the role in"),
    role: str = typer.Option(..., "--role", help="e.g. coordinator, manager, statistician"),
    site: str | None = typer.Option(None, "--site", help="the site, for site-scoped roles"),
    json_out: bool = JsonOpt,
) -> None:
    """Give a user a role in a study (as the local operator), e.g. a user of another study;
    a study's administrator manages its own users in the web pages."""
    operator = local_operator()
    with open_runtime() as runtime:
        ctx = runtime.context
        info = guarded(lambda: resolve_study(ctx, operator, study))
        user = guarded(lambda: grant_role(ctx, operator, info.id, username, role, site))
    if json_out:
        print_json({"study": info.code, **asdict(user)})
        return
    held = ", ".join(r.role + (f" at {r.site}" if r.site else "") for r in user.roles)
    typer.echo(f"{user.username} now holds in {info.code}: {held}")
