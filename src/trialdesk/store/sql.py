"""Small pieces every SQL repository uses: records from rows, the guarded update, row locks.

Repositories run SQLAlchemy Core statements on the unit of work's session (so statements of
services not yet on repositories, still using the ORM, are flushed first and share the
transaction) and hand back frozen records (:mod:`trialdesk.store.records`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Executable,
    Row,
    Select,
    Table,
    bindparam,
    select,
    update,
)
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

    __slots__ = ("_conn", "_postgres", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self._conn: Connection | None = None
        self._postgres: bool | None = None

    @property
    def postgres(self) -> bool:
        """Asked the first time it matters: a unit of work makes a score of repositories and
        most of them run nothing."""
        if self._postgres is None:
            self._postgres = self.session.get_bind().dialect.name == "postgresql"
        return self._postgres

    def __call__(
        self,
        stmt: Executable,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> CursorResult[Any]:
        # the session's connection, asked for once per transaction (the ORM's look-up costs
        # more than many a statement); a commit closes it, and the next call asks again
        conn = self._conn
        if conn is None or conn.closed or not conn.in_transaction():
            conn = self._conn = self.session.connection()
        return conn.execute(stmt, params)


_GUARDED: dict[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], Executable] = {}


def _guarded(
    cols: Columns[Any], expect: Sequence[str], null: Sequence[str], names: Sequence[str]
) -> Executable:
    """The guarded update of these columns, built and compiled once per shape (bind
    parameters ``w_<column>`` for the guard, ``v_<column>`` for the values; the columns in
    ``null`` are expected to be NULL)."""
    key = (cols.table.name, tuple(expect), tuple(null), tuple(names))
    stmt = _GUARDED.get(key)
    if stmt is None:
        table = cols.table
        conditions: list[ColumnElement[bool]] = [table.c.id == bindparam("w_id")]
        conditions.extend(table.c[name] == bindparam(f"w_{name}") for name in expect)
        conditions.extend(table.c[name].is_(None) for name in null)
        stmt = _GUARDED.setdefault(
            key,
            update(table)
            .where(*conditions)
            .values({name: bindparam(f"v_{name}") for name in names})
            .returning(*cols.columns),
        )
    return stmt


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
    null = sorted(k for k, v in expect.items() if v is None)
    stmt = _guarded(
        cols, sorted(k for k, v in expect.items() if v is not None), null, sorted(values)
    )
    params = {"w_id": row_id}
    params.update({f"w_{k}": v for k, v in expect.items() if v is not None})
    params.update({f"v_{k}": v for k, v in values.items()})
    run = session if isinstance(session, Sql) else session.execute
    return cols.maybe(run(stmt, params).first())


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
