"""Reading a subject's audit entries back (issue 14): the thread of a data query and the
history of each saved value, for the pages that show them beside the data. Read-only; the
chain is written by :mod:`trialdesk.store.audit`."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trialdesk.store.records import AuditRecord
from trialdesk.store.sql import Sql
from trialdesk.store.tables import AuditEntryRow

_A = AuditEntryRow.__table__


def _json(text: str | None) -> Any:
    return None if not text else json.loads(text)


class SqlAuditReads:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def for_subject(
        self, subject_id: int, *, entities: Collection[str] | None = None
    ) -> list[AuditRecord]:
        """The subject's entries in chain order, of ``entities`` only when given."""
        c = _A.c
        stmt = (
            select(c.seq, c.at, c.actor, c.action, c.entity, c.entity_id, c.old, c.new, c.reason)
            .where(c.stream == f"subject:{subject_id}")
            .order_by(c.seq)
        )
        if entities is not None:
            stmt = stmt.where(c.entity.in_(list(entities)))
        return [
            AuditRecord(
                seq=row[0],
                at=row[1],
                actor=row[2],
                action=row[3],
                entity=row[4],
                entity_id=row[5],
                old=_json(row[6]),
                new=_json(row[7]),
                reason=row[8],
            )
            for row in self._run(stmt)
        ]
