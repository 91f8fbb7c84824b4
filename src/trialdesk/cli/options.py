"""The options every signed-in command shares, and the one sign-in callback.

``--user``, ``--study`` and ``--json`` are defined once here (same names, defaults and help in
every command group); :func:`signed_in_call` opens the runtime, signs the person in (password,
TOTP when enrolled, study resolved) and runs the service call with refusals turned into one
line on stderr. The *_cmd modules import these instead of defining their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer

from trialdesk.cli.runtime import Session, guarded, open_runtime, sign_in

T = TypeVar("T")

UserOpt = typer.Option(None, "--user", help="act as this user (or TRIALDESK_USER)")
StudyOpt = typer.Option(None, "--study", help="study code (default: the only one)")
JsonOpt = typer.Option(False, "--json", help="print JSON")


def signed_in_call(user: str | None, study: str | None, call: Callable[[Session], T]) -> T:
    """Sign ``user`` in to ``study`` and run ``call`` with the session; any refusal becomes
    one line on stderr and exit 1."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        return guarded(lambda: call(session))
