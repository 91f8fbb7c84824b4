"""`trialdesk users ...`: invitations, roles, approvals and recovery (issue 12).

A study's administrator signs in with ``--user``; the local operator acts with ``--operator``
(its grants of roles that can reach an arm are direct only in demo and sandbox studies, or
while a live study has no unblinded member yet). Recovery commands (an address on file, a
reset link printed here, a lost second factor) are the local operator's only.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import typer

from trialdesk.cli.common import fail, print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt
from trialdesk.cli.runtime import (
    Session,
    guarded,
    local_operator,
    open_runtime,
    sign_in,
    signature_password,
)
from trialdesk.services import accounts, admin
from trialdesk.services.setup import StudyInfo, resolve_study

app = typer.Typer(
    help="Users, invitations, approvals (administrators; the local operator).",
    no_args_is_help=True,
)

OPERATOR = typer.Option(False, "--operator", help="act as the local operator (no sign-in)")


def _who(runtime: Any, user: str | None, operator: bool, study: str | None) -> Session:
    if operator:
        if user:
            fail("choose one of --user and --operator")
        actor = local_operator()
        info: StudyInfo = guarded(lambda: resolve_study(runtime.context, actor, study))
        return Session(runtime=runtime, actor=actor, study=info)
    return sign_in(runtime, user, study)


def _user_line(u: admin.UserInfo) -> str:
    roles = ", ".join(r.role + (f" at {r.site}" if r.site else "") for r in u.roles) or "no role"
    extra = []
    if not u.active:
        extra.append("inactive")
    if u.pending:
        extra.append(
            "awaiting approval: "
            + ", ".join(r.role + (f" at {r.site}" if r.site else "") for r in u.pending)
        )
    if u.locked_until:
        extra.append(f"sign-in backing off until {u.locked_until}")
    if u.totp:
        extra.append("second factor")
    return f"{u.username}\t{u.full_name}\t{roles}" + (f"\t({'; '.join(extra)})" if extra else "")


@app.command("list")
def list_cmd(
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The study's users with roles, pending roles, back-off and second factor."""
    with open_runtime() as runtime:
        s = _who(runtime, user, operator, study)
        users = guarded(lambda: admin.list_users(runtime.context, s.actor, s.study.id))
    if json_out:
        print_json([asdict(u) for u in users])
        return
    for u in users:
        typer.echo(_user_line(u))


@app.command("invite")
def invite(
    email: str = typer.Argument(..., help="the person's e-mail address"),
    name: str = typer.Option(..., "--name", help="the person's full name"),
    role: str = typer.Option(..., "--role", help="e.g. coordinator, monitor, statistician"),
    site: str | None = typer.Option(None, "--site", help="the site, for site-scoped roles"),
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Invite a person by e-mail; they choose their own password with the mailed link. A role
    that can reach an arm is mailed only after an unblinded member approves it."""
    with open_runtime() as runtime:
        s = _who(runtime, user, operator, study)
        view = guarded(
            lambda: accounts.invite(
                runtime.context,
                s.actor,
                s.study.id,
                email=email,
                full_name=name,
                role=role,
                site=site,
            )
        )
    if json_out:
        print_json(asdict(view))
        return
    if view.status == "awaiting_approval":
        typer.echo(
            f"invitation {view.id} to {view.email} awaits an unblinded member's approval "
            "('trialdesk users approvals')"
        )
    else:
        typer.echo(f"invitation {view.id} to {view.email} sent (valid until {view.expires_at})")


@app.command("invitations")
def invitations(
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The study's invitations and their status (never their links)."""
    with open_runtime() as runtime:
        s = _who(runtime, user, operator, study)
        rows = guarded(lambda: accounts.list_invitations(runtime.context, s.actor, s.study.id))
    if json_out:
        print_json([asdict(r) for r in rows])
        return
    for r in rows:
        where = f" at {r.site}" if r.site else ""
        typer.echo(f"{r.id}\t{r.email}\t{r.role}{where}\t{r.status}\t{r.expires_at or '-'}")


@app.command("cancel-invitation")
def cancel_invitation(
    invitation_id: int = typer.Argument(..., help="the invitation's number"),
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
) -> None:
    """Withdraw an open invitation; its link stops working."""
    with open_runtime() as runtime:
        s = _who(runtime, user, operator, study)
        guarded(
            lambda: accounts.cancel_invitation(runtime.context, s.actor, s.study.id, invitation_id)
        )
    typer.echo(f"invitation {invitation_id} cancelled")


def _change(
    username: str, user: str | None, operator: bool, study: str | None, what: str
) -> admin.UserInfo:
    calls = {
        "deactivate": admin.deactivate_user,
        "reactivate": admin.reactivate_user,
        "clear-backoff": admin.clear_signin_backoff,
    }
    with open_runtime() as runtime:
        s = _who(runtime, user, operator, study)
        return guarded(lambda: calls[what](runtime.context, s.actor, s.study.id, username))


@app.command("deactivate")
def deactivate(
    username: str,
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
) -> None:
    """Stop a user signing in; live sessions end now."""
    typer.echo(_user_line(_change(username, user, operator, study, "deactivate")))


@app.command("reactivate")
def reactivate(
    username: str,
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
) -> None:
    """Let a deactivated user sign in again."""
    typer.echo(_user_line(_change(username, user, operator, study, "reactivate")))


@app.command("clear-backoff")
def clear_backoff(
    username: str,
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
) -> None:
    """Let a user sign in at once after failures made the name back off."""
    typer.echo(_user_line(_change(username, user, operator, study, "clear-backoff")))


@app.command("grant")
def grant(
    username: str,
    role: str = typer.Option(..., "--role"),
    site: str | None = typer.Option(None, "--site"),
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
) -> None:
    """Give a user of the study a role; one that can reach an arm awaits approval."""
    with open_runtime() as runtime:
        s = _who(runtime, user, operator, study)
        info = guarded(
            lambda: admin.grant_role(runtime.context, s.actor, s.study.id, username, role, site)
        )
    typer.echo(_user_line(info))


@app.command("revoke")
def revoke(
    username: str,
    role: str = typer.Option(..., "--role"),
    site: str | None = typer.Option(None, "--site"),
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
) -> None:
    """Take a role away (not the study's last administrator grant)."""
    with open_runtime() as runtime:
        s = _who(runtime, user, operator, study)
        info = guarded(
            lambda: admin.revoke_role(runtime.context, s.actor, s.study.id, username, role, site)
        )
    typer.echo(_user_line(info))


@app.command("send-reset")
def send_reset(
    username: str,
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
) -> None:
    """Mail a user a password reset link, to the user's own address (never shown here)."""
    with open_runtime() as runtime:
        s = _who(runtime, user, operator, study)
        to = guarded(
            lambda: accounts.send_password_reset(runtime.context, s.actor, s.study.id, username)
        )
    typer.echo(f"a reset link was mailed to {to}")


@app.command("approvals")
def approvals(
    all_requests: bool = typer.Option(False, "--all", help="decided requests too"),
    user: str | None = UserOpt,
    operator: bool = OPERATOR,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Requests for roles that can reach an arm."""
    with open_runtime() as runtime:
        s = _who(runtime, user, operator, study)
        rows = guarded(
            lambda: accounts.list_approvals(
                runtime.context, s.actor, s.study.id, pending_only=not all_requests
            )
        )
    if json_out:
        print_json([asdict(r) for r in rows])
        return
    for r in rows:
        where = f" at {r.site}" if r.site else ""
        decided = f"\t{r.decided_by} {r.decided_at}" if r.decided_by else ""
        typer.echo(
            f"{r.id}\t{r.grantee}\t{r.role}{where}\tasked by {r.requested_by}\t{r.status}{decided}"
        )


def _decide(
    approval_id: int, approve: bool, reason: str | None, user: str | None, study: str | None
) -> accounts.ApprovalView:
    with open_runtime() as runtime:
        s = sign_in(runtime, user, study)
        password = signature_password(runtime.context.settings)
        return guarded(
            lambda: accounts.decide_approval(
                runtime.context,
                s.actor,
                s.study.id,
                approval_id,
                approve=approve,
                password=password,
                reason=reason,
            )
        )


@app.command("approve")
def approve(approval_id: int, user: str | None = UserOpt, study: str | None = StudyOpt) -> None:
    """Approve a request with your e-signature (an unblinded member of the study)."""
    view = _decide(approval_id, True, None, user, study)
    typer.echo(f"request {view.id} approved: {view.meaning}")


@app.command("reject")
def reject(
    approval_id: int,
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """Reject a request with your e-signature and a reason."""
    view = _decide(approval_id, False, reason, user, study)
    typer.echo(f"request {view.id} rejected: {view.meaning}")


# --- the local operator's recovery ------------------------------------------------------------


@app.command("set-email")
def set_email(
    username: str,
    email: str = typer.Argument(..., help="the address, or '-' to remove it"),
) -> None:
    """Record a person's e-mail address (local operator)."""
    with open_runtime() as runtime:
        address = guarded(
            lambda: accounts.set_email(
                runtime.context, local_operator(), username, None if email == "-" else email
            )
        )
    typer.echo(f"{username}: {address or 'no address'}")


@app.command("reset-link")
def reset_link(username: str) -> None:
    """Issue a password reset link and print it here (local operator; also mailed when the
    user has an address). Pass it to its owner yourself."""
    with open_runtime() as runtime:
        url = guarded(
            lambda: accounts.issue_reset_link(runtime.context, local_operator(), username)
        )
    typer.echo(url)


@app.command("reset-totp")
def reset_totp(username: str) -> None:
    """Remove a user's second factor after a lost device (local operator); the user enrols
    again at the next sign-in."""
    with open_runtime() as runtime:
        guarded(lambda: accounts.reset_totp(runtime.context, local_operator(), username))
    typer.echo(f"{username}: second factor removed; sessions ended")
