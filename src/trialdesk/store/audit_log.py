"""``uow.audit``: the one way services add audit entries (AUD-1), a thin layer over
:class:`trialdesk.store.audit.AuditWriter`, which chains them at commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from trialdesk.store.audit import AuditWriter, PendingEntry
from trialdesk.store.records import ProtocolVersion, Subject


class _Versions(Protocol):
    def get(self, version_id: int) -> ProtocolVersion: ...


class _Writer(Protocol):
    def record(self, entry: PendingEntry) -> None: ...


class AuditLog:
    """Builds entries from what the service knows; the writer decides ids, chains and hashes."""

    def __init__(
        self,
        writer: AuditWriter | _Writer,
        versions: _Versions,
        guard: Callable[[PendingEntry], None] | None = None,
    ) -> None:
        self.writer = writer
        self._versions = versions
        self.guard = guard
        """Called with each entry before it is kept: the lock guard (issue 15,
        :mod:`trialdesk.store.lock_guard`) refuses the write the entry records."""
        self.unwritten = 0
        """Entries recorded since the unit of work last committed."""

    def record(self, entry: PendingEntry) -> None:
        if self.guard is not None:
            self.guard(entry)
        self.unwritten += 1
        self.writer.record(entry)

    def subject(
        self,
        actor: str,
        subject: Subject,
        action: str,
        *,
        at: dt.datetime,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        entity: str = "subject",
        entity_id: str | None = None,
        protocol_sha256: str | None = None,
    ) -> None:
        if protocol_sha256 is None:
            protocol_sha256 = self._versions.get(subject.protocol_version_id).sha256
        self.record(
            PendingEntry(
                stream=f"subject:{subject.id}",
                at=at,
                actor=actor,
                action=action,
                entity=entity,
                entity_id=entity_id or subject.number,
                study_id=subject.study_id,
                subject_id=subject.id,
                old=old,
                new=new,
                reason=reason,
                protocol_sha256=protocol_sha256,
            )
        )

    def stream(
        self,
        stream: str,
        actor: str,
        action: str,
        *,
        at: dt.datetime,
        entity: str,
        entity_id: str,
        study_id: int | None = None,
        subject_id: int | None = None,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        protocol_sha256: str | None = None,
    ) -> None:
        self.record(
            PendingEntry(
                stream=stream,
                at=at,
                actor=actor,
                action=action,
                entity=entity,
                entity_id=entity_id,
                study_id=study_id,
                subject_id=subject_id,
                old=old,
                new=new,
                reason=reason,
                protocol_sha256=protocol_sha256,
            )
        )
