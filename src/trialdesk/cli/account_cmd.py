"""`trialdesk account ...`: use an invitation or reset link from the terminal, or ask for a
reset link (issue 12). The password is the person's own: TRIALDESK_PASSWORD or a prompt."""

from __future__ import annotations

import typer

from trialdesk.cli.runtime import cli_client, guarded, open_runtime
from trialdesk.services import accounts

app = typer.Typer(help="Invitation and reset links.", no_args_is_help=True)


def _token(link: str) -> str:
    """The token of a link (the whole URL or its last part)."""
    return link.strip().rstrip("/").rsplit("/", 1)[-1]


def _new_password(settings_password: str | None) -> str:
    if settings_password is not None:
        return settings_password
    return str(typer.prompt("Choose a password", hide_input=True, confirmation_prompt=True))


@app.command("accept")
def accept(link: str = typer.Argument(..., help="the invitation link (or its token)")) -> None:
    """Accept an invitation: choose a password, or give your current one when the address
    already has an account."""
    with open_runtime() as runtime:
        ctx = runtime.context
        info = guarded(lambda: accounts.invitation_info(ctx, _token(link)))
        if info.existing_account:
            password = ctx.settings.password or str(
                typer.prompt("Your current password", hide_input=True)
            )
        else:
            password = _new_password(ctx.settings.password)
        done = guarded(
            lambda: accounts.accept_invitation(ctx, _token(link), password, client=cli_client())
        )
    what = "account created" if done.new_account else "role added to your account"
    typer.echo(f"{what}: {done.username} is {done.role} in {done.study}")


@app.command("reset")
def reset(link: str = typer.Argument(..., help="the reset link (or its token)")) -> None:
    """Choose a new password with a reset link."""
    with open_runtime() as runtime:
        ctx = runtime.context
        guarded(lambda: accounts.reset_info(ctx, _token(link)))
        password = _new_password(ctx.settings.password)
        username = guarded(lambda: accounts.complete_password_reset(ctx, _token(link), password))
    typer.echo(f"password of {username} set; earlier sessions ended")


@app.command("forgot")
def forgot(identifier: str = typer.Argument(..., help="your username or e-mail address")) -> None:
    """Ask for a reset link by mail (the same answer whether or not the account exists)."""
    with open_runtime() as runtime:
        guarded(
            lambda: accounts.request_password_reset(
                runtime.context, identifier, client=cli_client()
            )
        )
    typer.echo("if the account exists and has an address on file, a link was mailed to it")
