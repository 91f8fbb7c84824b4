"""Audit hashing (AUD-1), pure: canonical form of an entry and the chain rule.

The trail is a set of chains ("streams"), one per subject and one per other thing changed
(study set-up, a user, a list). Each entry holds the hash of the previous entry of its
stream, its own global id and a per-stream sequence number. Writers to different subjects
therefore never wait for each other, while any edit, deletion, insertion or reordering inside
a stream breaks the chain, and a deleted last entry no longer matches the stream's head.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64

HASHED_FIELDS = (
    "id",
    "stream",
    "seq",
    "prev_hash",
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


def utc_iso(moment: dt.datetime) -> str:
    """The audit trail's timestamp text: UTC, microseconds, a trailing Z; naive refused."""
    if moment.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    """Stable JSON (sorted keys, no spaces): the same values always give the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical form of the hashed fields of one entry."""
    payload = canonical_json({name: fields.get(name) for name in HASHED_FIELDS})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainProblem:
    entry_id: int | None
    stream: str
    seq: int | None
    kind: str  # edited | deleted | moved | inserted | head
    message: str


def verify_stream(
    stream: str, entries: Iterable[Mapping[str, Any]], head: tuple[int, str] | None
) -> ChainProblem | None:
    """Check one stream, entries ordered by ``seq``; return its first problem or None.

    ``head`` is the stored (seq, hash) of the stream's last entry.
    """
    expected_seq = 1
    prev = GENESIS
    last: Mapping[str, Any] | None = None
    for entry in entries:
        eid = int(entry["id"])
        seq = int(entry["seq"])
        if entry_hash(entry) != entry["hash"]:
            return ChainProblem(
                eid,
                stream,
                seq,
                "edited",
                f"entry {eid} ({stream} #{seq}) does not match its hash: edited",
            )
        if seq != expected_seq:
            kind = "deleted" if seq > expected_seq else "inserted"
            return ChainProblem(
                eid,
                stream,
                seq,
                kind,
                f"entry {eid} ({stream} #{seq}): expected #{expected_seq} before it; "
                f"an entry was {'deleted' if kind == 'deleted' else 'inserted or duplicated'}",
            )
        if entry["prev_hash"] != prev:
            return ChainProblem(
                eid,
                stream,
                seq,
                "moved",
                f"entry {eid} ({stream} #{seq}) does not follow the entry "
                "before it: moved, replaced or an earlier one deleted",
            )
        prev = str(entry["hash"])
        last = entry
        expected_seq += 1
    if head is None:
        if last is not None:
            return ChainProblem(
                int(last["id"]),
                stream,
                int(last["seq"]),
                "head",
                f"stream {stream} has entries but no head record",
            )
        return None
    head_seq, head_hash = head
    if last is not None and int(last["seq"]) > head_seq:
        return ChainProblem(
            int(last["id"]),
            stream,
            int(last["seq"]),
            "inserted",
            f"stream {stream} runs past its head (#{head_seq}) to entry {last['id']} "
            f"(#{last['seq']}): entries appended outside trialdesk or the head rewound",
        )
    if last is None or int(last["seq"]) != head_seq or last["hash"] != head_hash:
        at = f"after entry {last['id']} ({stream} #{last['seq']})" if last else "(no entries)"
        return ChainProblem(
            int(last["id"]) if last else None,
            stream,
            head_seq,
            "deleted",
            f"stream {stream} ends {at} but its head says #{head_seq}: last entries deleted",
        )
    return None


def root_digest(heads: Iterable[tuple[str, int, str]]) -> str:
    """One digest over every stream head, to be written down outside the database."""
    h = hashlib.sha256()
    for stream, seq, head_hash in sorted(heads):
        h.update(f"{stream}\x1f{seq}\x1f{head_hash}\n".encode())
    return h.hexdigest()
