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
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text, update
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


_ENTRY_COLUMNS = (
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
_ENTRIES = cast(Table, AuditEntryRow.__table__)
_HEADS = cast(Table, AuditHeadRow.__table__)

# PostgreSQL: lock the stream's head (made if new) and draw the entries' ids, one statement
_LOCK_HEAD_PG = text(
    "INSERT INTO audit_heads AS h (stream, seq, hash) VALUES (:stream, 0, :genesis) "
    "ON CONFLICT (stream) DO UPDATE SET seq = h.seq "
    "RETURNING h.seq, h.hash, ARRAY(SELECT nextval(pg_get_serial_sequence('audit_entries', "
    "'id')) FROM generate_series(1, :n))"
)


def _append_pg(count: int) -> Any:
    """PostgreSQL: insert ``count`` entries and move the stream's head, one statement."""
    rows = ", ".join(
        "(" + ", ".join(f":{name}_{i}" for name in _ENTRY_COLUMNS) + ")" for i in range(count)
    )
    return text(
        f"WITH added AS (INSERT INTO audit_entries ({', '.join(_ENTRY_COLUMNS)}) "
        f"VALUES {rows} RETURNING 1) "
        "UPDATE audit_heads SET seq = :head_seq, hash = :head_hash WHERE stream = :stream"
    )


_APPEND_PG: dict[int, Any] = {}

# SQLite: the head, made if new, in one statement (an upsert that returns the row)
_LOCK_HEAD_SQLITE = text(
    "INSERT INTO audit_heads (stream, seq, hash) VALUES (:stream, 0, '" + GENESIS + "') "
    "ON CONFLICT (stream) DO UPDATE SET seq = audit_heads.seq RETURNING seq, hash"
)


@dataclass
class AuditWriter:
    session: Session
    pending: list[PendingEntry] = field(default_factory=list)

    def record(self, entry: PendingEntry) -> None:
        self.pending.append(entry)

    def flush(self) -> list[dict[str, Any]]:
        """Chain and insert the buffered entries; called by the unit of work's commit. On
        PostgreSQL two statements per stream: the head locked with the ids drawn, then the
        entries inserted with the head moved."""
        if not self.pending:
            return []
        conn = self.session.connection()
        postgres = conn.dialect.name == "postgresql"
        moment = utc_iso(min(entry.at for entry in self.pending))
        by_stream: dict[str, list[PendingEntry]] = {}
        for entry in self.pending:
            by_stream.setdefault(entry.stream, []).append(entry)
        written: list[dict[str, Any]] = []
        next_id: int | None = None  # SQLite: the first free id, read once per flush
        for stream in sorted(by_stream):
            entries = by_stream[stream]
            if postgres:
                seq, prev, ids = conn.execute(
                    _LOCK_HEAD_PG, {"stream": stream, "genesis": GENESIS, "n": len(entries)}
                ).one()
                seq, prev, ids = int(seq), str(prev), [int(i) for i in ids]
            else:
                seq, prev = self._lock_head(stream)
                if next_id is None:
                    next_id = self._next_id()
                ids = list(range(next_id, next_id + len(entries)))
                next_id += len(entries)
            rows: list[dict[str, Any]] = []
            for entry, row_id in zip(entries, ids, strict=True):
                seq += 1
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
                values["hash"] = prev = entry_hash(values)
                rows.append(values)
            if postgres:
                stmt = _APPEND_PG.get(len(rows))
                if stmt is None:
                    stmt = _APPEND_PG.setdefault(len(rows), _append_pg(len(rows)))
                params = {f"{k}_{i}": v for i, row in enumerate(rows) for k, v in row.items()}
                params.update(head_seq=seq, head_hash=prev, stream=stream)
                conn.execute(stmt, params)
            else:
                conn.execute(insert(_ENTRIES), rows)
                conn.execute(
                    update(_HEADS).where(_HEADS.c.stream == stream).values(seq=seq, hash=prev)
                )
            written.extend(rows)
        self.pending.clear()
        return written

    def _lock_head(self, stream: str) -> tuple[int, str]:
        """SQLite (writers serialized by BEGIN IMMEDIATE): the head, made if new."""
        seq, head_hash = (
            self.session.connection().execute(_LOCK_HEAD_SQLITE, {"stream": stream}).one()
        )
        return int(seq), str(head_hash)

    def _next_id(self) -> int:
        value = (
            self.session.connection()
            .execute(select(func.coalesce(func.max(_ENTRIES.c.id), 0) + 1))
            .scalar_one()
        )
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
