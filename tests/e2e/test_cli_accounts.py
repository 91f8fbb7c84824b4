"""Accounts from the shell (issue 12): a live study's first statistician invited at `init`,
links read by the local operator from the outbox (no SMTP configured) and used with
`trialdesk account`, an administrator's invitation approved by the statistician with an
e-signature, a reset link issued by the operator, and a TOTP second factor."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pyotp
from typer.testing import CliRunner, Result

from tests.e2e.test_cli_journey import PASSWORD, Shell, shell
from trialdesk.cli.main import build_app

__all__ = ["shell"]
LINK = re.compile(r"https?://\S+/account/(?:invitation|reset)/[A-Za-z0-9_\-]+")


def _run(sh: Shell, *args: str, **env: str | None) -> Result:
    base: dict[str, Any] = sh.env(None, None, None)
    base.update(env)
    return CliRunner().invoke(build_app(), list(args), env=base)


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return str(result.stdout)


def _link_to(sh: Shell, address: str) -> str:
    """The local operator reads the newest waiting mail to ``address`` and its link."""
    rows = [line.split("\t") for line in _ok(_run(sh, "mail", "list")).splitlines()]
    ids = [r[0] for r in rows if r[3] == address]
    assert ids, rows
    body = _ok(_run(sh, "mail", "show", ids[-1]))
    (link,) = LINK.findall(body)
    return str(link)


def test_sig1_live_study_accounts_from_the_shell(tmp_path: Path) -> None:
    """init invites the first statistician; the operator invites an administrator; the
    administrator invites a coordinator, which waits until the statistician approves with an
    e-signature; each person sets their own password with the link; the operator's reset
    link lets the coordinator choose a new one. Flushing without SMTP is refused clearly."""
    sh = Shell(tmp_path)
    out = _ok(_run(
        sh, "init", "--statistician-email", "sam@sponsor.example",
        "--statistician-name", "Sam Statistician",
    ))  # fmt: skip
    assert "invitation 1: statistician sam@sponsor.example, waiting in the outbox" in out
    stat = _ok(_run(sh, "account", "accept", _link_to(sh, "sam@sponsor.example"),
                    TRIALDESK_PASSWORD="sam's own passphrase"))  # fmt: skip
    assert "account created: sam@sponsor.example is statistician in FLAGSHIP" in stat
    _ok(_run(sh, "users", "invite", "alex@cro.example", "--name", "Alex Admin", "--role",
             "admin", "--operator"))  # fmt: skip
    _ok(_run(sh, "account", "accept", _link_to(sh, "alex@cro.example"),
             TRIALDESK_PASSWORD="alex's own passphrase"))  # fmt: skip
    asked = _ok(_run(
        sh, "users", "invite", "casey@site.example", "--name", "Casey Coordinator", "--role",
        "coordinator", "--site", "S101", "--user", "alex@cro.example",
        TRIALDESK_PASSWORD="alex's own passphrase",
    ))  # fmt: skip
    assert "awaits an unblinded member's approval" in asked
    refused = _run(sh, "users", "approve", "1", "--user", "alex@cro.example",
                   TRIALDESK_PASSWORD="alex's own passphrase")  # fmt: skip
    assert refused.exit_code == 1 and "[forbidden]" in refused.stderr
    pending = _ok(_run(sh, "users", "approvals", "--user", "sam@sponsor.example",
                       TRIALDESK_PASSWORD="sam's own passphrase"))  # fmt: skip
    assert "casey@site.example\tcoordinator at S101\tasked by alex@cro.example" in pending
    approved = _ok(_run(sh, "users", "approve", "1", "--user", "sam@sponsor.example",
                        TRIALDESK_PASSWORD="sam's own passphrase"))  # fmt: skip
    assert "approved: Approval of coordinator at site S101 access" in approved
    _ok(_run(sh, "account", "accept", _link_to(sh, "casey@site.example"),
             TRIALDESK_PASSWORD="casey's own passphrase"))  # fmt: skip
    listed = _ok(_run(sh, "subject", "list", "--user", "casey@site.example",
                      TRIALDESK_PASSWORD="casey's own passphrase"))  # fmt: skip
    del listed
    link = _ok(_run(sh, "users", "reset-link", "casey@site.example")).strip()
    assert LINK.fullmatch(link)
    _ok(_run(sh, "account", "reset", link, TRIALDESK_PASSWORD="casey's second passphrase"))
    again = _run(sh, "account", "reset", link, TRIALDESK_PASSWORD="a third passphrase")
    assert again.exit_code == 1 and "not valid" in again.stderr
    old = _run(sh, "subject", "list", "--user", "casey@site.example",
               TRIALDESK_PASSWORD="casey's own passphrase")  # fmt: skip
    assert old.exit_code == 1 and "sign-in refused" in old.stderr
    _ok(_run(sh, "subject", "list", "--user", "casey@site.example",
             TRIALDESK_PASSWORD="casey's second passphrase"))  # fmt: skip
    flush = _run(sh, "mail", "flush")
    assert flush.exit_code == 1 and "no SMTP server is configured" in flush.stderr
    users = _ok(_run(sh, "users", "list", "--operator"))
    assert "casey@site.example\tCasey Coordinator\tcoordinator at S101" in users


def test_sig1_totp_from_the_shell(shell: Shell) -> None:
    """The statistician enrols a second factor (the secret printed once), confirms a code;
    later sign-ins need TRIALDESK_TOTP (a wrong code is refused); the operator resets it."""
    sh = shell

    def at(day: str) -> dict[str, str]:
        return {"TRIALDESK_CLOCK": f"{day}T12:00:00Z", "TRIALDESK_PASSWORD": PASSWORD}

    enrol = _ok(_run(sh, "me", "totp-enrol", "--user", "statistician", **at("2027-01-21")))
    secret = re.search(r"secret: ([A-Z2-7]+)", enrol)
    assert secret and "otpauth://totp/" in enrol

    def code(day: str) -> str:
        moment = dt.datetime.fromisoformat(f"{day}T12:00:00+00:00")
        return str(pyotp.TOTP(secret.group(1)).at(moment))

    _ok(_run(sh, "me", "totp-confirm", code("2027-01-21"), "--user", "statistician",
             **at("2027-01-21")))  # fmt: skip
    wrong = _run(sh, "lists", "show", "--user", "statistician", TRIALDESK_TOTP="000000",
                 **at("2027-01-22"))  # fmt: skip
    assert wrong.exit_code == 1 and "6-digit code" in wrong.stderr
    _ok(_run(sh, "lists", "show", "--user", "statistician", TRIALDESK_TOTP=code("2027-01-22"),
             **at("2027-01-22")))  # fmt: skip
    status = _ok(_run(sh, "me", "totp-status", "--user", "statistician",
                      TRIALDESK_TOTP=code("2027-01-23"), **at("2027-01-23")))  # fmt: skip
    assert status.startswith("enrolled")
    _ok(_run(sh, "users", "reset-totp", "statistician", **at("2027-01-23")))
    _ok(_run(sh, "lists", "show", "--user", "statistician", **at("2027-01-24")))
