"""The unit of work: one transaction per user action. Rolls back unless ``commit()`` is called,
and the audit entries join the same transaction (written by ``commit``)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.orm import Session, sessionmaker

from trialdesk.store.audit import AuditWriter, PendingEntry


class UnitOfWork:
    session: Session
    audit: AuditWriter

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def __enter__(self) -> Self:
        self.session = self._factory()
        self.audit = AuditWriter(self.session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.session.rollback()
        finally:
            self.session.close()

    def record(self, entry: PendingEntry) -> None:
        self.audit.record(entry)

    def commit(self) -> None:
        self.audit.flush()
        self.session.commit()


class UnitOfWorkFactory:
    """Makes units of work; read-only ones skip SQLite's write lock."""

    def __init__(self, write: sessionmaker[Session], read: sessionmaker[Session]) -> None:
        self._write = write
        self._read = read

    def __call__(self, *, readonly: bool = False) -> UnitOfWork:
        return UnitOfWork(self._read if readonly else self._write)
