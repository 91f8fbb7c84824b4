"""Writing and verifying the audit trail (AUD-1, DATA-2).

Entries are buffered while a service works and chained at commit time, stream by stream in
sorted order: the head row of each stream is locked only for the last moment of the
transaction, and two transactions touching the same streams lock them in the same order.

Every entry written by one action (one unit of work) carries the action's single timestamp,
the earliest of its entries: a gap between two entries of one action would tell a reader how
long the work between them took, and that work can differ by arm (RAND-6).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from trialdesk.domain.audit import (
    GENESIS,
    ChainProblem,
    canonical_json,
    entry_hash,
    root_digest,
    verify_stream,
)
from trialdesk.domain.audit import (
    utc_iso as utc_iso,
)
from trialdesk.store.tables import AuditEntryRow, AuditHeadRow


@dataclass
class PendingEntry:
    stream: str
    at: dt.datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    study_id: int | None = None
    subject_id: int | None = None
    old: Any = None
    new: Any = None
    reason: str | None = None
    protocol_sha256: str | None = None


@dataclass
class AuditWriter:
    session: Session
    pending: list[PendingEntry] = field(default_factory=list)

    def record(self, entry: PendingEntry) -> None:
        self.pending.append(entry)

    def flush(self) -> list[AuditEntryRow]:
        """Chain and insert the buffered entries; called by the unit of work's commit."""
        if not self.pending:
            return []
        dialect = self.session.get_bind().dialect.name
        moment = utc_iso(min(entry.at for entry in self.pending))
        by_stream: dict[str, list[PendingEntry]] = {}
        for entry in self.pending:
            by_stream.setdefault(entry.stream, []).append(entry)
        rows: list[AuditEntryRow] = []
        for stream in sorted(by_stream):
            seq, prev = self._lock_head(stream, dialect)
            for entry in by_stream[stream]:
                seq += 1
                row_id = self._next_id(dialect)
                values: dict[str, Any] = {
                    "id": row_id,
                    "stream": stream,
                    "seq": seq,
                    "prev_hash": prev,
                    "at": moment,
                    "actor": entry.actor,
                    "action": entry.action,
                    "study_id": entry.study_id,
                    "subject_id": entry.subject_id,
                    "entity": entry.entity,
                    "entity_id": entry.entity_id,
                    "old": canonical_json(entry.old),
                    "new": canonical_json(entry.new),
                    "reason": entry.reason,
                    "protocol_sha256": entry.protocol_sha256,
                }
                values["hash"] = entry_hash(values)
                row = AuditEntryRow(**values)
                self.session.add(row)
                self.session.flush([row])
                rows.append(row)
                prev = values["hash"]
            self.session.execute(
                update(AuditHeadRow).where(AuditHeadRow.stream == stream).values(seq=seq, hash=prev)
            )
        self.pending.clear()
        return rows

    def _lock_head(self, stream: str, dialect: str) -> tuple[int, str]:
        ins = pg_insert if dialect == "postgresql" else sqlite_insert
        self.session.execute(
            ins(AuditHeadRow)
            .values(stream=stream, seq=0, hash=GENESIS)
            .on_conflict_do_nothing(index_elements=["stream"])
        )
        stmt = select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.stream == stream)
        if dialect == "postgresql":
            stmt = stmt.with_for_update()
        seq, head_hash = self.session.execute(stmt).one()
        return int(seq), str(head_hash)

    def _next_id(self, dialect: str) -> int:
        if dialect == "postgresql":
            value = self.session.execute(
                text("SELECT nextval(pg_get_serial_sequence('audit_entries', 'id'))")
            ).scalar_one()
        else:  # SQLite writers are serialized by BEGIN IMMEDIATE
            value = self.session.execute(
                select(func.coalesce(func.max(AuditEntryRow.id), 0) + 1)
            ).scalar_one()
        return int(value)


@dataclass(frozen=True)
class VerifyResult:
    entries: int
    streams: int
    root: str
    problem: ChainProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


_COLUMNS = [
    getattr(AuditEntryRow, name)
    for name in (
        "id",
        "stream",
        "seq",
        "prev_hash",
        "hash",
        "at",
        "actor",
        "action",
        "study_id",
        "subject_id",
        "entity",
        "entity_id",
        "old",
        "new",
        "reason",
        "protocol_sha256",
    )
]


def verify_chain(session: Session) -> VerifyResult:
    """Verify every stream; report the problem with the smallest entry id (the first bad one)."""
    heads = {
        stream: (int(seq), str(h))
        for stream, seq, h in session.execute(
            select(AuditHeadRow.stream, AuditHeadRow.seq, AuditHeadRow.hash)
        )
    }
    problems: list[ChainProblem] = []
    count = 0
    current: str | None = None
    batch: list[dict[str, Any]] = []
    seen: set[str] = set()

    def close(stream: str, entries: list[dict[str, Any]]) -> None:
        seen.add(stream)
        problem = verify_stream(stream, entries, heads.get(stream))
        if problem is not None:
            problems.append(problem)

    result = session.execute(
        select(*_COLUMNS).order_by(AuditEntryRow.stream, AuditEntryRow.seq, AuditEntryRow.id)
    )
    for row in result.mappings():
        count += 1
        if row["stream"] != current:
            if current is not None:
                close(current, batch)
            current, batch = row["stream"], []
        batch.append(dict(row))
    if current is not None:
        close(current, batch)
    for stream, (seq, _h) in heads.items():
        if stream not in seen and seq > 0:
            problems.append(
                ChainProblem(
                    None, stream, seq, "deleted", f"stream {stream} lost all {seq} of its entries"
                )
            )
    first = min(problems, key=lambda p: (p.entry_id is None, p.entry_id or 0), default=None)
    root = root_digest((s, q, h) for s, (q, h) in heads.items())
    return VerifyResult(entries=count, streams=len(heads), root=root, problem=first)
