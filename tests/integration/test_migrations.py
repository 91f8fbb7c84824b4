"""Alembic migrations build exactly the schema the code expects, with the audit guard (AUD-1),
on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from tests.conftest import Database
from trialdesk.store.database import alembic_config, migrate, schema_revision
from trialdesk.store.tables import Base

GUARD_TRIGGERS = {
    "sqlite": {"audit_entries_no_update", "audit_entries_no_delete"},
    "postgres": {"audit_entries_append_only", "audit_entries_no_truncate"},
}


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _triggers(db: Database) -> set[str]:
    if db.backend == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_entries'"
    else:
        sql = (
            "SELECT tgname FROM pg_trigger "
            "WHERE tgrelid = 'audit_entries'::regclass AND NOT tgisinternal"
        )
    with db.engine.connect() as conn:
        return set(conn.execute(text(sql)).scalars())


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def test_aud1_empty_database_migrates_to_exactly_the_metadata(database: Database) -> None:
    """AUD-1: the migrated schema equals the SQLAlchemy tables (no autogenerate diff)."""
    assert schema_revision(database.engine) is None
    migrate(database.engine)
    assert schema_revision(database.engine) == _head()
    assert _diff(database.engine) == []
    tables = set(inspect(database.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_aud1_migration_installs_the_append_only_triggers(database: Database) -> None:
    """AUD-1: the guard triggers come with the migration, not only with create_all."""
    migrate(database.engine)
    assert _triggers(database) == GUARD_TRIGGERS[database.backend]


def test_aud1_migrating_twice_is_a_no_op(database: Database) -> None:
    """A second upgrade to head changes nothing: same revision, schema, triggers and data."""
    migrate(database.engine)
    with database.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO audit_heads (stream, seq, hash) VALUES ('probe', 0, :h)"),
            {"h": "0" * 64},
        )
    triggers = _triggers(database)
    migrate(database.engine)
    assert schema_revision(database.engine) == _head()
    assert _diff(database.engine) == []
    assert _triggers(database) == triggers
    with database.engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        probe = conn.execute(text("SELECT stream FROM audit_heads")).scalars().all()
    assert versions == [_head()]
    assert probe == ["probe"]
