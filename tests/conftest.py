"""Fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL tests read TRIALDESK_TEST_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test). Where the server is unreachable they skip
with one line, except under CI=true, where that is a failure.

Speed (issue 13): a trial (migrated schema, the flagship study in demo mode, the demo users,
the demo stock and the 1,800-slot live list with its allocation key) is built once per test
process and protocol as a *template*, and each test gets its own copy: on SQLite a copy of the
database file, on PostgreSQL ``CREATE DATABASE ... TEMPLATE`` (about 30 ms instead of a
second). Each test still has a database of its own, dropped afterwards. An empty database
(``database``) is a fresh file or a fresh schema, as before. Tests run in parallel under
pytest-xdist; every name a test creates on the shared server carries the run's and the
worker's id.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.fakes import FakeClock
from trialdesk.bootstrap import Runtime, bootstrap
from trialdesk.config import Settings
from trialdesk.protocol.loader import LoadedProtocol, load_protocol
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.allocation.lists import generate_list
from trialdesk.services.auth import authenticate
from trialdesk.services.context import ServiceContext
from trialdesk.services.crypto import create_key_file
from trialdesk.services.setup import DEMO_USERS, create_demo_users, initialize_study
from trialdesk.services.supply import stock_demo_site
from trialdesk.store.database import make_engine

POSTGRES_URL = os.environ.get(
    "TRIALDESK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PASSWORD = "correct horse battery"
START = dt.datetime(2027, 1, 25, 12, tzinfo=dt.UTC)
T = TypeVar("T")
RUN = uuid.uuid4().hex[:8]
"""This test process's id in every database name it creates on the shared server."""


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the tests of a module that shares a module- or class-scoped fixture on one xdist
    worker (``--dist loadgroup``), so the fixture is built once; all others are balanced."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = any(
            fixturedef.scope in ("module", "class", "package")
            for fixturedefs in info.name2fixturedefs.values()
            for fixturedef in fixturedefs
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@dataclass
class Database:
    backend: str
    url: str
    engine: Engine


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend of this test; PostgreSQL skips (or fails under CI=true) when unreachable."""
    if request.param == "postgres":
        require_postgres()
    return str(request.param)


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[Database]:
    """A fresh, empty database on each backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'trial.db'}"
        engine = make_engine(url)
        yield Database("sqlite", url, engine)
        engine.dispose()
        return
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
    return settings_with_key(db, key)


def settings_with_key(db: Database, key: Path) -> Settings:
    """Settings for ``db`` with cheap argon2 (tests only) and the allocation key ``key``."""
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
    clones: Clones | None = None
    """Where this trial was copied from (None when built in a database of the test's own)."""

    @property
    def ctx(self) -> ServiceContext:
        return self.runtime.context

    def prepared(self, build: Callable[[Trial], T]) -> T:
        """The trial as ``build`` leaves it, and what ``build`` returned. ``build`` runs once
        per test process and backend, on a template; this trial then becomes a copy of it
        (same database contents, clock and key). ``build`` must depend on nothing but the
        trial it is given."""
        if self.clones is None:
            return build(self)
        return self.clones.prepare(self, build)

    def actor(self, username: str) -> Actor:
        if username not in self.actors:
            self.actors[username] = authenticate(self.ctx, username, PASSWORD)
        return self.actors[username]


def build_trial(
    database: Database, tmp_path: Path, loaded: LoadedProtocol, *, with_list: bool = True
) -> Trial:
    """A demo study of ``loaded`` with one user per role (site roles at the first site),
    built through the services (for tests that need it in a database of their own making)."""
    clock = FakeClock(START)
    runtime = bootstrap(test_settings(database, tmp_path), clock=clock, engine=database.engine)
    runtime.context.remember_protocol(loaded)
    operator = operator_actor()
    info = initialize_study(runtime.context, operator, loaded, code="FLAGSHIP", mode="demo")
    create_demo_users(runtime.context, operator, info.id, PASSWORD)
    stock_demo_site(runtime.context, operator, info.id)  # as 'init --demo' does (SUP-1)
    if with_list:
        generate_list(runtime.context, operator, info.id, mode="live", seed=20270125)
    return Trial(runtime=runtime, clock=clock, study_id=info.id, backend=database.backend)


# --- templates -------------------------------------------------------------------------------


def _admin() -> Engine:
    return create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


def _database_url(name: str) -> str:
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


@dataclass(frozen=True)
class Template:
    """A built trial to copy: a SQLite file or a PostgreSQL database, its allocation key."""

    backend: str
    location: str  # file path (SQLite) or database name (PostgreSQL)
    key: Path
    study_id: int
    loaded: LoadedProtocol
    now: dt.datetime = START
    """The trial's clock when the template was taken."""
    result: Any = None
    """What the template's ``build`` returned (copied for each test)."""
    actors: dict[str, Actor] = field(default_factory=dict)
    """The users the template's ``build`` signed in (or created), as its trial knew them."""


class Templates:
    """Templates of this test process, built on first use and dropped at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.built: dict[tuple[str, str, bool, str], Template] = {}
        self.dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-databases")
        """Drops the tests' copies while the next tests run (a drop can take a second)."""
        self.drops: list[Future[None]] = []

    def get(
        self,
        backend: str,
        loaded: LoadedProtocol,
        *,
        with_list: bool,
        build: Callable[[Trial], Any] | None = None,
    ) -> Template:
        name = "" if build is None else f"{build.__module__}.{build.__qualname__}"
        key = (backend, loaded.sha256, with_list, name)
        if key not in self.built:
            self.built[key] = self._build(backend, loaded, with_list=with_list, build=build)
        return self.built[key]

    def _build(
        self,
        backend: str,
        loaded: LoadedProtocol,
        *,
        with_list: bool,
        build: Callable[[Trial], Any] | None,
    ) -> Template:
        tag = f"{len(self.built)}_{'list' if with_list else 'nolist'}"
        folder = self.folder / f"{backend}_{tag}"
        folder.mkdir()
        if backend == "sqlite":
            path = folder / "template.db"
            url = f"sqlite:///{path}"
            location = str(path)
        else:
            location = f"td_tpl_{RUN}_{_worker()}_{tag}"
            with _admin().connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{location}"'))
            url = _database_url(location)
        engine = make_engine(url)
        trial = build_trial(Database(backend, url, engine), folder, loaded, with_list=with_list)
        result = None if build is None else build(trial)
        trial.runtime.close()
        engine.dispose()
        if backend == "sqlite":  # everything into the main file before copying it
            with contextlib.closing(sqlite3.connect(location)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        key = folder / "allocation.key"
        return Template(
            backend, location, key, trial.study_id, loaded, trial.clock.now, result, trial.actors
        )

    def drop(self) -> None:
        self.dropper.shutdown(wait=True)
        _drop_databases([t.location for t in self.built.values() if t.backend == "postgres"])
        for done in self.drops:
            done.result()  # a copy that could not be dropped is an error of the run


def _drop_databases(names: list[str]) -> None:
    if not names:
        return
    admin = _admin()
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw")


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    made = Templates(tmp_path_factory.mktemp("templates"))
    yield made
    made.drop()


class Clones:
    """Copies of templates for one test; each is dropped when the test ends."""

    def __init__(self, templates: Templates, tmp_path: Path) -> None:
        self.templates = templates
        self.tmp_path = tmp_path
        self.trials: list[Trial] = []
        self.runtimes: list[Runtime] = []
        self.databases: list[str] = []
        self.origin: dict[int, tuple[LoadedProtocol, bool]] = {}

    def trial(self, backend: str, loaded: LoadedProtocol, *, with_list: bool = True) -> Trial:
        made = self._copy(self.templates.get(backend, loaded, with_list=with_list))
        made.clones = self
        self.origin[id(made)] = (loaded, with_list)
        self.trials.append(made)
        return made

    def prepare(self, trial: Trial, build: Callable[[Trial], T]) -> T:
        """Turn ``trial`` (one of this test's copies) into a copy of the template ``build``
        makes, and give back a copy of what ``build`` returned."""
        loaded, with_list = self.origin[id(trial)]
        template = self.templates.get(trial.backend, loaded, with_list=with_list, build=build)
        fresh = self._copy(template)
        trial.runtime, trial.study_id = fresh.runtime, fresh.study_id
        trial.clock.now = template.now
        fresh.runtime.context.clock = trial.clock
        trial.actors = dict(template.actors)
        result: T = copy.deepcopy(template.result)
        return result

    def _copy(self, template: Template) -> Trial:
        backend, n = template.backend, len(self.runtimes)
        key = self.tmp_path / f"allocation{n or ''}.key"
        shutil.copyfile(template.key, key)
        if backend == "sqlite":
            path = self.tmp_path / f"trial{n or ''}.db"
            shutil.copyfile(template.location, path)
            url = f"sqlite:///{path}"
            engine = make_engine(url)
        else:
            name = f"td_{RUN}_{_worker()}_{uuid.uuid4().hex[:10]}"
            admin = _admin()
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template.location}"'))
            admin.dispose()
            self.databases.append(name)
            url = _database_url(name)
            engine = make_engine(url, pool_size=30, max_overflow=20)
        clock = FakeClock(template.now)
        settings = settings_with_key(Database(backend, url, engine), key)
        runtime = bootstrap(settings, clock=clock, engine=engine, run_migrations=False)
        runtime.context.remember_protocol(template.loaded)
        self.runtimes.append(runtime)
        return Trial(runtime=runtime, clock=clock, study_id=template.study_id, backend=backend)

    def close(self) -> None:
        for runtime in self.runtimes:
            runtime.close()
        if self.databases:
            self.templates.drops.append(
                self.templates.dropper.submit(_drop_databases, list(self.databases))
            )


@pytest.fixture
def clones(templates: Templates, tmp_path: Path) -> Iterator[Clones]:
    made = Clones(templates, tmp_path)
    yield made
    made.close()


@pytest.fixture
def trial(backend: str, clones: Clones) -> Trial:
    """The flagship trial (see :func:`build_trial`), copied from this process's template."""
    return clones.trial(backend, flagship())


@pytest.fixture
def make_trial(backend: str, clones: Clones) -> Callable[..., Trial]:
    """Build a trial from another protocol (e.g. a variant of the flagship text)."""

    def make(loaded: LoadedProtocol, *, with_list: bool = True) -> Trial:
        assert not clones.trials, "one trial per test database"
        return clones.trial(backend, loaded, with_list=with_list)

    return make


__all__ = ["DEMO_USERS", "PASSWORD", "Trial"]
