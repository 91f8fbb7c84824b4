"""CLI composition: settings -> runtime -> authenticated actor. Built per command, never at
import."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from trialdesk.bootstrap import Runtime, bootstrap
from trialdesk.cli.common import fail, fail_from
from trialdesk.config import Settings, load_settings
from trialdesk.domain.errors import TrialError
from trialdesk.services.access import Actor
from trialdesk.services.auth import authenticate
from trialdesk.services.setup import StudyInfo, resolve_study
from trialdesk.store.database import make_engine, schema_revision

T = TypeVar("T")


@dataclass
class Session:
    runtime: Runtime
    actor: Actor
    study: StudyInfo


@contextmanager
def open_runtime(settings: Settings | None = None, *, migrate: bool = False) -> Iterator[Runtime]:
    if settings is None:
        try:
            settings = load_settings()
        except ValueError as exc:
            fail(str(exc))
    try:
        engine = make_engine(settings.database_url)
        if not migrate:
            try:
                revision = schema_revision(engine)
            except OperationalError as exc:
                fail(f"cannot open the database {settings.database_url}: {exc.orig}")
            if revision is None:
                fail(
                    f"the database {settings.database_url} is not initialised; "
                    "run 'trialdesk init' first"
                )
        runtime = bootstrap(settings, engine=engine, run_migrations=migrate)
    except SQLAlchemyError as exc:
        fail(f"database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    try:
        yield runtime
    finally:
        runtime.close()


def guarded(fn: Callable[[], T]) -> T:
    """Run a service call; any refusal becomes one line on stderr and exit 1."""
    try:
        return fn()
    except TrialError as exc:
        fail_from(exc)
    except SQLAlchemyError as exc:
        fail(f"database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")


def sign_in(runtime: Runtime, user: str | None, study_code: str | None) -> Session:
    settings = runtime.context.settings
    username = user or settings.user
    if not username:
        fail("name the user with --user or TRIALDESK_USER")
    password = settings.password
    if password is None:
        password = typer.prompt(f"Password for {username}", hide_input=True)
    actor = guarded(lambda: authenticate(runtime.context, username, password))
    study = guarded(lambda: resolve_study(runtime.context, actor, study_code))
    if settings.fixed_now is not None and study.mode == "live":
        fail("TRIALDESK_CLOCK (a fixed clock) is only allowed for demo and sandbox studies")
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
