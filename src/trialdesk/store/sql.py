"""Small pieces every SQL repository uses: records from rows, the guarded update, row locks.

Repositories run SQLAlchemy Core statements on the unit of work's session (so statements of
services not yet on repositories, still using the ORM, are flushed first and share the
transaction) and hand back frozen records (:mod:`trialdesk.store.records`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, CursorResult, Executable, Row, Select, Table, select, update
from sqlalchemy.orm import Session

R = TypeVar("R")


def table_of(mapped: type[Any]) -> Table:
    """The Core table of a mapped class of :mod:`trialdesk.store.tables`."""
    return cast(Table, mapped.__table__)


class Columns(Generic[R]):
    """The columns of ``table`` that make up record type ``R``, in the record's field order."""

    def __init__(self, table: Table, record: type[R]) -> None:
        self.table = table
        self.record = record
        self.names = [f.name for f in fields(record)]  # type: ignore[arg-type]
        self.columns = [table.c[name] for name in self.names]
        self.width = len(self.columns)

    def select(self) -> Select[Any]:
        return select(*self.columns)

    def of(self, row: Row[Any] | Sequence[Any], start: int = 0) -> R:
        """The record from ``row[start:start + width]``."""
        if start == 0 and len(row) == self.width:
            return self.record(*row)
        return self.record(*row[start : start + self.width])

    def maybe(self, row: Row[Any] | Sequence[Any] | None, start: int = 0) -> R | None:
        return None if row is None else self.of(row, start)


class Sql:
    """Runs Core statements on the unit of work's connection, in its transaction, without the
    ORM session's per-statement work (statements built once at import with bind parameters
    also keep their compiled form and cache key)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    def __call__(
        self,
        stmt: Executable,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> CursorResult[Any]:
        return self.session.connection().execute(stmt, params)


def guarded_update(
    session: Session | Sql,
    cols: Columns[R],
    row_id: int,
    expect: Mapping[str, Any],
    values: Mapping[str, Any],
) -> R | None:
    """The one guarded update: write ``values`` to row ``row_id`` only while the columns in
    ``expect`` still hold the values read earlier, and return the new record (None when the
    row changed meanwhile, so two users acting at once cannot both win)."""
    table = cols.table
    conditions: list[ColumnElement[bool]] = [table.c.id == row_id]
    conditions.extend(table.c[name] == value for name, value in expect.items())
    stmt = update(table).where(*conditions).values(**values).returning(*cols.columns)
    run = session if isinstance(session, Sql) else session.execute
    return cols.maybe(run(stmt).first())


def plain_update(
    session: Session | Sql, cols: Columns[R], row_id: int, values: Mapping[str, Any]
) -> R:
    """Update a row the caller holds a lock on (or that no one else changes) and return it."""
    stmt = (
        update(cols.table)
        .where(cols.table.c.id == row_id)
        .values(**values)
        .returning(*cols.columns)
    )
    run = session if isinstance(session, Sql) else session.execute
    return cols.of(run(stmt).one())


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def for_update(session: Session | Sql, stmt: Select[Any], *, shared: bool = False) -> Select[Any]:
    """Add a row lock on PostgreSQL (SQLite's writers are serialized by BEGIN IMMEDIATE).
    ``shared``: ``FOR KEY SHARE``, which does not wait for other key-share holders."""
    postgres = session.postgres if isinstance(session, Sql) else is_postgres(session)
    if not postgres:
        return stmt
    if shared:
        return stmt.with_for_update(read=True, key_share=True)
    return stmt.with_for_update()
