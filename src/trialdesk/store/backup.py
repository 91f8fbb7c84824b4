"""The backup file: a SQLite database with trialdesk's schema, every row, and a manifest table.

One format for both backends, so a backup can be read with any SQLite tool and restored into
either backend. SQLite databases are copied with the sqlite3 online backup API (one step, so
one consistent snapshot while the server keeps writing). PostgreSQL databases are exported
table by table inside one ``REPEATABLE READ, READ ONLY`` transaction: every table is read from
the same snapshot, writers are not blocked, and no external ``pg_dump`` binary (which must
match the server's version) is needed. Timestamps are stored in UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, create_engine, func, inspect, select, text
from sqlalchemy.orm import Session

from trialdesk.store.audit import VerifyResult, verify_chain
from trialdesk.store.database import alembic_config
from trialdesk.store.tables import AllocationSlotRow, Base, RandomizationRow, StudyRow

FORMAT = "trialdesk-backup"
FORMAT_VERSION = 1
MANIFEST_TABLE = "trialdesk_backup"
SQLITE_MAGIC = b"SQLite format 3\x00"
BATCH = 1000


class BackupInvalid(Exception):
    """The file is not a usable trialdesk backup; the message says why in one line."""


@dataclass(frozen=True)
class Manifest:
    """What a backup holds, readable without restoring it."""

    schema_revision: str
    study_codes: list[str]
    audit_root: str
    audit_entries: int
    created_at: str
    source_backend: str
    method: str
    rows: dict[str, int]
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "schema_revision": self.schema_revision,
            "study_codes": self.study_codes,
            "audit_root": self.audit_root,
            "audit_entries": self.audit_entries,
            "created_at": self.created_at,
            "source_backend": self.source_backend,
            "method": self.method,
            "rows": self.rows,
        }


def head_revision() -> str:
    """The schema revision this trialdesk writes and restores."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _file_engine(path: Path, *, readonly: bool = False) -> Engine:
    if readonly:
        uri = f"file:{path.resolve()}?mode=ro"
        return create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
        )
    return create_engine(f"sqlite:///{path}")


def _tables() -> list[Table]:
    return list(Base.metadata.sorted_tables)


def _to_utc(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v.astimezone(dt.UTC) if isinstance(v, dt.datetime) and v.tzinfo else v)
        for k, v in row.items()
    }


def _with_utc(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v.replace(tzinfo=dt.UTC) if isinstance(v, dt.datetime) and v.tzinfo is None else v)
        for k, v in row.items()
    }


def snapshot(source: Engine, target: Path) -> str:
    """Write a consistent copy of ``source`` to the new file ``target``; returns the method."""
    if source.dialect.name == "sqlite":
        raw = source.raw_connection()
        try:
            with closing(sqlite3.connect(target)) as dst:
                raw.driver_connection.backup(dst)  # type: ignore[union-attr]
        finally:
            raw.close()
        return "sqlite3 online backup API"
    file_engine = _file_engine(target)
    try:
        with file_engine.begin() as out:
            cfg = alembic_config()
            cfg.attributes["connection"] = out
            command.upgrade(cfg, "head")
        with source.connect() as conn:
            conn = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            with conn.begin(), file_engine.begin() as out:
                for table in _tables():
                    result = conn.execution_options(yield_per=BATCH).execute(select(table))
                    for part in result.mappings().partitions():
                        out.execute(table.insert(), [_to_utc(dict(r)) for r in part])
    finally:
        file_engine.dispose()
    return "PostgreSQL REPEATABLE READ export"


def describe(path: Path, *, created_at: dt.datetime, source_backend: str, method: str) -> Manifest:
    """Read the copy back, verify its audit chain, and write the manifest into it."""
    engine = _file_engine(path)
    try:
        with Session(engine) as session:
            result = verify_chain(session)
            if not result.ok:
                assert result.problem is not None
                raise BackupInvalid(f"the audit chain is broken: {result.problem.message}")
            codes = sorted(session.scalars(select(StudyRow.code)))
            rows = {
                t.name: int(session.scalar(select(func.count()).select_from(t)) or 0)
                for t in _tables()
            }
            revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        manifest = Manifest(
            schema_revision=str(revision),
            study_codes=codes,
            audit_root=result.root,
            audit_entries=result.entries,
            created_at=created_at.astimezone(dt.UTC).isoformat(),
            source_backend=source_backend,
            method=method,
            rows=rows,
        )
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE {MANIFEST_TABLE} (key TEXT PRIMARY KEY, value TEXT)"))
            conn.execute(
                text(f"INSERT INTO {MANIFEST_TABLE} (key, value) VALUES (:k, :v)"),
                [{"k": k, "v": json.dumps(v)} for k, v in manifest.as_dict().items()],
            )
        with engine.connect() as conn:
            # one self-contained file: no -wal beside it
            conn.exec_driver_sql("PRAGMA journal_mode=DELETE")
    finally:
        engine.dispose()
    return manifest


def read_manifest(path: Path) -> Manifest:
    """The manifest of a backup file, or :class:`BackupInvalid` naming what is wrong."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise BackupInvalid(f"cannot read {path}: {exc.strerror or exc}") from exc
    if magic != SQLITE_MAGIC:
        raise BackupInvalid(f"{path} is not a trialdesk backup (not a SQLite file)")
    engine = _file_engine(path, readonly=True)
    try:
        with engine.connect() as conn:
            pairs = dict(
                conn.execute(text(f"SELECT key, value FROM {MANIFEST_TABLE}")).tuples().all()
            )
        values = {k: json.loads(v) for k, v in pairs.items()}
        if values.get("format") != FORMAT:
            raise BackupInvalid(f"{path} is not a trialdesk backup (no trialdesk manifest)")
        return Manifest(
            schema_revision=str(values["schema_revision"]),
            study_codes=list(values["study_codes"]),
            audit_root=str(values["audit_root"]),
            audit_entries=int(values["audit_entries"]),
            created_at=str(values["created_at"]),
            source_backend=str(values["source_backend"]),
            method=str(values["method"]),
            rows={str(k): int(v) for k, v in values["rows"].items()},
            format_version=int(values["format_version"]),
        )
    except BackupInvalid:
        raise
    except Exception as exc:  # any unreadable or foreign file: one message, nothing changed
        raise BackupInvalid(f"{path} is not a trialdesk backup (no readable manifest)") from exc
    finally:
        engine.dispose()


@contextmanager
def open_backup(path: Path) -> Iterator[Session]:
    """A read-only session on the backup file (for checks before restoring it)."""
    engine = _file_engine(path, readonly=True)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def verify_backup(path: Path) -> VerifyResult:
    with open_backup(path) as session:
        return verify_chain(session)


def first_allocation(path: Path) -> bytes | None:
    """One encrypted allocation (an arm, or else a list slot) from the backup, to check the
    allocation key before restoring."""
    with open_backup(path) as session:
        value = session.scalar(select(RandomizationRow.arm_enc).limit(1))
        if value is None:
            value = session.scalar(select(AllocationSlotRow.payload_enc).limit(1))
        return bytes(value) if value is not None else None


def holds_data(conn: Connection) -> bool:
    """Whether any trialdesk table in the target has a row."""
    present = set(inspect(conn).get_table_names())
    for table in _tables():
        if table.name in present and conn.scalar(select(table).limit(1)) is not None:
            return True
    return False


def replace_contents(conn: Connection, path: Path) -> None:
    """Drop trialdesk's tables in the target, recreate them at the head revision, and copy
    every row of the backup in; the caller's transaction makes this all-or-nothing."""
    Base.metadata.drop_all(conn)
    conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    postgres = conn.dialect.name == "postgresql"
    source = _file_engine(path, readonly=True)
    try:
        with source.connect() as src:
            for table in _tables():
                result = src.execution_options(yield_per=BATCH).execute(select(table))
                for part in result.mappings().partitions():
                    batch = [_with_utc(dict(r)) if postgres else dict(r) for r in part]
                    conn.execute(table.insert(), batch)
    finally:
        source.dispose()
    if postgres:
        for table in _tables():
            pk = list(table.primary_key.columns)
            if len(pk) != 1 or not pk[0].autoincrement or pk[0].type.python_type is not int:
                continue
            seq = conn.scalar(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk[0].name}
            )
            if seq is None:
                continue
            conn.execute(
                text(
                    f'SELECT setval(:s, COALESCE((SELECT MAX("{pk[0].name}") FROM '
                    f'"{table.name}"), 0) + 1, false)'
                ),
                {"s": seq},
            )
