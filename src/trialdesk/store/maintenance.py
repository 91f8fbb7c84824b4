"""The database as a whole, for the local operator's maintenance (issue 13, lane x13b):
the audit chain verified, the schema revision, a consistent snapshot, a restore."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from trialdesk.store.audit import VerifyResult, verify_chain
from trialdesk.store.backup import holds_data, replace_contents, snapshot


class SqlDatabase:
    def __init__(self, session: Session) -> None:
        self._session = session

    def verify_audit(self) -> VerifyResult:
        """Every audit chain checked (AUD-1) in this unit of work's transaction."""
        return verify_chain(self._session)

    def schema_revision(self) -> str | None:
        return self._session.execute(text("SELECT version_num FROM alembic_version")).scalar()

    @property
    def backend(self) -> str:
        return self._session.get_bind().dialect.name

    def snapshot(self, target: Path) -> str:
        """A consistent copy of the whole database in the new file ``target``; the method."""
        engine = self._session.get_bind()
        assert isinstance(engine, Engine)
        return snapshot(engine, target)

    def holds_data(self) -> bool:
        return holds_data(self._session.connection())

    def replace_contents(self, source: Path) -> None:
        """Every table replaced by the backup's rows, in this unit of work's transaction."""
        replace_contents(self._session.connection(), source)
