"""CLI composition: settings -> runtime -> authenticated actor. Built per command, never at
import."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from trialdesk.bootstrap import Runtime, bootstrap, open_engine, schema_revision
from trialdesk.cli.common import fail, fail_from
from trialdesk.config import Settings, load_settings
from trialdesk.domain.errors import TrialError
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.auth import CODE_REQUIRED, SignedIn
from trialdesk.services.auth import sign_in as sign_in_service
from trialdesk.services.setup import StudyInfo, list_studies, resolve_study

T = TypeVar("T")


@dataclass
class Session:
    runtime: Runtime
    actor: Actor
    study: StudyInfo


def shown_url(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


@contextmanager
def open_runtime(
    settings: Settings | None = None, *, migrate: bool = False, demo: bool = False
) -> Iterator[Runtime]:
    """The runtime for one command. A fixed clock (TRIALDESK_CLOCK) is refused before anything
    else happens when the database holds a live study (or ``init`` would create one)."""
    if settings is None:
        try:
            settings = load_settings()
        except ValueError as exc:
            fail(str(exc))
    where = shown_url(settings.database_url)
    if settings.fixed_now is not None and migrate and not demo:
        fail("TRIALDESK_CLOCK (a fixed clock) is only allowed for demo and sandbox studies")
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        fail(f"TRIALDESK_DATABASE_URL is not a database URL: {settings.database_url!r}")
    if (
        not migrate
        and url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not Path(str(url.database)).exists()
    ):
        fail(f"the database {where} does not exist; run 'trialdesk init' first")
    try:
        engine = open_engine(settings.database_url)
        if not migrate:
            try:
                revision = schema_revision(engine)
            except OperationalError as exc:
                fail(f"cannot open the database {where}: {_first_line(exc)}")
            if revision is None:
                fail(f"the database {where} is not initialised; run 'trialdesk init' first")
        runtime = bootstrap(settings, engine=engine, run_migrations=migrate)
    except SQLAlchemyError as exc:
        fail(f"database error at {where}: {_first_line(exc)}")
    try:
        if settings.fixed_now is not None:
            live = [
                s.code for s in list_studies(runtime.context, operator_actor()) if s.mode == "live"
            ]
            if live:
                fail(
                    "TRIALDESK_CLOCK (a fixed clock) is only allowed for demo and sandbox "
                    f"studies; this database holds the live study {live[0]}"
                )
        yield runtime
    finally:
        runtime.close()


def local_operator() -> Actor:
    """The person at this terminal, named by OS account and host in the audit trail."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return operator_actor(f"operator:{who}@{socket.gethostname()}"[:80])


def guarded(fn: Callable[[], T]) -> T:
    """Run a service call; any refusal becomes one line on stderr and exit 1."""
    try:
        return fn()
    except TrialError as exc:
        fail_from(exc)
    except SQLAlchemyError as exc:
        fail(f"database error: {_first_line(exc)}")


def cli_client() -> str:
    """The client a CLI sign-in comes from, for throttling: this OS account on this host."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return f"cli:{who}@{socket.gethostname()}"[:100]


def signed_in(runtime: Runtime, user: str | None) -> SignedIn:
    """Password (TRIALDESK_PASSWORD or a prompt) and, when enrolled, the TOTP code
    (TRIALDESK_TOTP or a prompt). Also a user who must still enrol a second factor."""
    settings = runtime.context.settings
    username = user or settings.user
    if not username:
        fail("name the user with --user or TRIALDESK_USER")
    password = settings.password
    if password is None:
        password = typer.prompt(f"Password for {username}", hide_input=True)
    code = settings.totp_code
    try:
        return sign_in_service(runtime.context, username, password, client=cli_client(), totp=code)
    except TrialError as exc:
        if exc.message != CODE_REQUIRED or code is not None:
            fail_from(exc)
    code = str(typer.prompt("Code from your authenticator app (TOTP)"))
    return guarded(
        lambda: sign_in_service(runtime.context, username, password, client=cli_client(), totp=code)
    )


def sign_in(runtime: Runtime, user: str | None, study_code: str | None) -> Session:
    signed = signed_in(runtime, user)
    if signed.must_enrol_totp:
        fail(
            "your roles need a second factor (TOTP): enrol one first with "
            "'trialdesk me totp-enrol' and 'trialdesk me totp-confirm CODE'"
        )
    actor = signed.actor
    study = guarded(lambda: resolve_study(runtime.context, actor, study_code))
    return Session(runtime=runtime, actor=actor, study=study)


def signature_password(settings: Settings) -> str:
    """The password re-entered for an e-signature (SIG-1)."""
    if settings.password is not None:
        return settings.password
    return str(typer.prompt("Re-enter your password to sign", hide_input=True))


def parse_date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{name}: {value!r} is not a date (YYYY-MM-DD)")


def require_date(value: str, name: str) -> dt.date:
    parsed = parse_date(value, name)
    assert parsed is not None
    return parsed


def parse_values(text: str | None, name: str = "--values") -> dict[str, Any]:
    """JSON object given inline or as @FILE."""
    if text is None:
        return {}
    try:
        if text.startswith("@"):
            text = Path(text[1:]).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{name}: cannot read {text[1:]}: {exc}")
    except json.JSONDecodeError as exc:
        fail(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    if not isinstance(data, dict):
        fail(f"{name}: expected a JSON object")
    return data
