"""Fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL tests read TRIALDESK_TEST_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test) and work in a schema of their own that is
dropped afterwards. Where the server is unreachable they skip with one line, except under
CI=true, where that is a failure.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.fakes import FakeClock
from trialdesk.bootstrap import Runtime, bootstrap
from trialdesk.config import Settings
from trialdesk.protocol.loader import LoadedProtocol, load_protocol
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.auth import authenticate
from trialdesk.services.context import ServiceContext
from trialdesk.services.crypto import create_key_file
from trialdesk.services.devices import stock_demo_site
from trialdesk.services.lists import generate_list
from trialdesk.services.setup import DEMO_USERS, create_demo_users, initialize_study
from trialdesk.store.database import make_engine

POSTGRES_URL = os.environ.get(
    "TRIALDESK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PASSWORD = "correct horse battery"
START = dt.datetime(2027, 1, 25, 12, tzinfo=dt.UTC)


@lru_cache(maxsize=1)
def _postgres_problem() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means "unreachable"
        return f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}"
    return None


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    message = f"PostgreSQL unreachable at {POSTGRES_URL} ({problem})"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " - required under CI=true")
    pytest.skip(message)


@dataclass
class Database:
    backend: str
    url: str
    engine: Engine


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'trial.db'}"
        engine = make_engine(url)
        yield Database("sqlite", url, engine)
        engine.dispose()
        return
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(
        POSTGRES_URL,
        connect_args={"options": f"-csearch_path={schema}"},
        pool_size=30,
        max_overflow=20,
    )
    try:
        yield Database("postgres", POSTGRES_URL, engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@lru_cache(maxsize=1)
def flagship() -> LoadedProtocol:
    return load_protocol(None)


def test_settings(db: Database, tmp_path: Path) -> Settings:
    key = tmp_path / "allocation.key"
    create_key_file(key)
    return Settings(
        database_url=db.url, allocation_key_file=key, argon2_time_cost=1, argon2_memory_kib=1024
    )


@dataclass
class Trial:
    """A flagship study in demo mode with one user per role and a live list."""

    runtime: Runtime
    clock: FakeClock
    study_id: int
    backend: str
    actors: dict[str, Actor] = field(default_factory=dict)

    @property
    def ctx(self) -> ServiceContext:
        return self.runtime.context

    def actor(self, username: str) -> Actor:
        if username not in self.actors:
            self.actors[username] = authenticate(self.ctx, username, PASSWORD)
        return self.actors[username]


def build_trial(
    database: Database, tmp_path: Path, loaded: LoadedProtocol, *, with_list: bool = True
) -> Trial:
    """A demo study of ``loaded`` with one user per role (site roles at the first site)."""
    clock = FakeClock(START)
    runtime = bootstrap(test_settings(database, tmp_path), clock=clock, engine=database.engine)
    operator = operator_actor()
    info = initialize_study(runtime.context, operator, loaded, code="FLAGSHIP", mode="demo")
    create_demo_users(runtime.context, operator, info.id, PASSWORD)
    stock_demo_site(runtime.context, operator, info.id)  # as 'init --demo' does (SUP-1)
    if with_list:
        generate_list(runtime.context, operator, info.id, mode="live", seed=20270125)
    return Trial(runtime=runtime, clock=clock, study_id=info.id, backend=database.backend)


@pytest.fixture
def trial(database: Database, tmp_path: Path) -> Iterator[Trial]:
    built = build_trial(database, tmp_path, flagship())
    yield built
    built.runtime.close()


@pytest.fixture
def make_trial(database: Database, tmp_path: Path) -> Iterator[Callable[..., Trial]]:
    """Build a trial from another protocol (e.g. a variant of the flagship text)."""
    made: list[Trial] = []

    def make(loaded: LoadedProtocol, *, with_list: bool = True) -> Trial:
        assert not made, "one trial per test database"
        made.append(build_trial(database, tmp_path, loaded, with_list=with_list))
        return made[0]

    yield make
    for t in made:
        t.runtime.close()


__all__ = ["DEMO_USERS", "PASSWORD", "Trial"]
