"""Composition root: the one place an engine and an application are made.

The adapters (api, web, cli) never build either themselves and never import the store: the
CLI opens its database through :func:`open_engine` / :func:`schema_revision`, ``serve`` and
the tests get the whole application (API + web pages) from :func:`create_app`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from trialdesk.config import Settings
from trialdesk.services.context import ServiceContext
from trialdesk.services.crypto import AllocationCipher
from trialdesk.store.database import make_engine, migrate
from trialdesk.store.database import schema_revision as _schema_revision
from trialdesk.store.uow import SqlUnitOfWorkFactory

if TYPE_CHECKING:
    from fastapi import FastAPI


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Runtime:
    engine: Engine
    context: ServiceContext

    def close(self) -> None:
        from trialdesk.services.mail import MailDispatcher

        if isinstance(self.context.mail, MailDispatcher):
            self.context.mail.close()  # mails written by this process are tried first
        self.engine.dispose()


def bootstrap(
    settings: Settings,
    *,
    clock: Callable[[], dt.datetime] | None = None,
    engine: Engine | None = None,
    run_migrations: bool = True,
) -> Runtime:
    """Build the engine, migrate if asked, and wire the services' context."""
    engine = engine or make_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    write = sessionmaker(engine, expire_on_commit=False)
    read = sessionmaker(engine.execution_options(trialdesk_readonly=True), expire_on_commit=False)
    if clock is None:
        fixed = settings.fixed_now
        clock = (lambda: fixed) if fixed is not None else utc_now
    cipher = AllocationCipher.from_file(settings.allocation_key_file)
    ctx = ServiceContext(
        uow=SqlUnitOfWorkFactory(write, read), clock=clock, cipher=cipher, settings=settings
    )
    if settings.smtp_url is not None:
        from trialdesk.services.mail import MailDispatcher

        ctx.mail = MailDispatcher(ctx)
    return Runtime(engine=engine, context=ctx)


def open_engine(database_url: str) -> Engine:
    """An engine on the database at ``database_url`` (nothing migrated)."""
    return make_engine(database_url)


def schema_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at; None when it was never initialised."""
    return _schema_revision(engine)


def create_app(runtime: Runtime) -> FastAPI:
    """The whole ASGI application: the API (api/) and the web pages (web/) on one app, so
    neither adapter imports the other."""
    from trialdesk.api.app import build_api
    from trialdesk.web.render import error_page
    from trialdesk.web.routes import install_pages

    app = build_api(runtime, page_errors=error_page)
    install_pages(app)
    return app
