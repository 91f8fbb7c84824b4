"""`trialdesk me ...`: the signed-in person's own settings."""

from __future__ import annotations

import typer

from trialdesk.bootstrap import Runtime
from trialdesk.cli.common import fail
from trialdesk.cli.options import StudyOpt, UserOpt, signed_in_call
from trialdesk.cli.runtime import guarded, open_runtime, signature_password, signed_in
from trialdesk.services import accounts
from trialdesk.services.auth import SignedIn
from trialdesk.services.preferences import set_time_zone

app = typer.Typer(help="Your own settings.", no_args_is_help=True)


@app.command("time-zone")
def time_zone(
    zone: str | None = typer.Argument(
        None, help="IANA zone, e.g. Australia/Sydney; omit to go back to your site's zone"
    ),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """Choose the zone timestamps are shown in (TIME-1); stored times stay UTC."""
    shown = signed_in_call(user, study, lambda s: set_time_zone(s.runtime.context, s.actor, zone))
    typer.echo(f"times are shown in {shown}" if zone else "times follow your site's zone")


def _full(runtime: Runtime, user: str | None) -> SignedIn:
    signed = signed_in(runtime, user)
    if signed.must_enrol_totp:
        fail("your roles need a second factor: 'trialdesk me totp-enrol' first")
    return signed


@app.command("password")
def password(user: str | None = UserOpt) -> None:
    """Change your own password (the current one from TRIALDESK_PASSWORD or a prompt)."""
    with open_runtime() as runtime:
        signed = _full(runtime, user)
        old = signature_password(runtime.context.settings)
        new = str(typer.prompt("New password", hide_input=True, confirmation_prompt=True))
        guarded(lambda: accounts.change_password(runtime.context, signed.actor, old, new))
    typer.echo("password changed")


@app.command("totp-status")
def totp_status(user: str | None = UserOpt) -> None:
    """Whether you have a second factor, and whether your roles need one."""
    with open_runtime() as runtime:
        signed = signed_in(runtime, user)
        status = guarded(lambda: accounts.totp_status(runtime.context, signed.actor))
    typer.echo(
        ("enrolled " + (status.enrolled_at or "") if status.enrolled else "not enrolled")
        + ("; required for your roles" if status.required else "")
    )


@app.command("totp-enrol")
def totp_enrol(user: str | None = UserOpt) -> None:
    """Start enrolment: prints the secret and its otpauth:// URI once; then
    'trialdesk me totp-confirm CODE' with a code from the app."""
    with open_runtime() as runtime:
        signed = signed_in(runtime, user)
        enrolment = guarded(lambda: accounts.begin_totp(runtime.context, signed.actor))
    typer.echo(f"secret: {enrolment.secret}\nuri: {enrolment.uri}")
    typer.echo("enter it in an authenticator app, then: trialdesk me totp-confirm CODE")


@app.command("totp-confirm")
def totp_confirm(code: str, user: str | None = UserOpt) -> None:
    """Turn the second factor on with a current code from the app."""
    with open_runtime() as runtime:
        signed = signed_in(runtime, user)
        guarded(lambda: accounts.confirm_totp(runtime.context, signed.actor, code))
    typer.echo("second factor enrolled: sign-ins now need a code (TRIALDESK_TOTP or a prompt)")


@app.command("totp-disable")
def totp_disable(code: str = typer.Option(..., "--code"), user: str | None = UserOpt) -> None:
    """Turn the second factor off (password and a current code), where your roles allow."""
    with open_runtime() as runtime:
        signed = _full(runtime, user)
        password = signature_password(runtime.context.settings)
        guarded(lambda: accounts.disable_totp(runtime.context, signed.actor, password, code))
    typer.echo("second factor disabled")
