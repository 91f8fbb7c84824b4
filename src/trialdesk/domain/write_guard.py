"""Which writes the lock guard sees, read from the audit entry every write makes (REC-3).

Every change to a subject's data is audited in the subject's stream (AUD-1), so the audit
entry is where one guard can see every write path, including the services not yet on
repositories: :func:`write_of` turns an entry into the :class:`~trialdesk.domain.locks.Write`
the lock rules judge, or None for entries that change nothing a lock protects (refusals and
failed signatures, disclosures, other streams, and the lock, SDV and signature entries whose
services check the locks themselves). Pure, stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trialdesk.domain.locks import WriteKind

OWN_ACTIONS = frozenset(
    {
        "lock_record",
        "unlock_record",
        "lock_freeze",
        "lock_database",
        "unlock_database",
        "sdv_mark",
        "sdv_cleared",
        "sign_records",
        "signature_invalidated",
        "changed_after_unblinding",
    }
)
"""Entries of lane x15a's services, which check the locks themselves (REVIEW writes) or
record a consequence of a write the guard has already let through."""

ENROLMENT_ACTIONS = frozenset({"register", "randomize"})
VISIT_ACTIONS = frozenset({"record_visit", "miss_visit"})


@dataclass(frozen=True)
class GuardedWrite:
    """A write as read from its audit entry; ``record_id`` names the form record when the
    entry is about one (its form, visit and number are looked up by the guard)."""

    kind: WriteKind
    visit: str | None = None
    form: str | None = None
    record_id: int | None = None


def write_of(
    *, stream: str, action: str, entity: str, entity_id: str, new: Any
) -> GuardedWrite | None:
    """The write an audit entry records, or None when no lock concerns it."""
    if not stream.startswith("subject:"):
        return None
    if action in OWN_ACTIONS or action.endswith(("_refused", "_failed")):
        return None
    if action.startswith("disclose_"):
        return None
    values: Mapping[str, Any] = new if isinstance(new, Mapping) else {}
    if action == "emergency_unblind":
        return GuardedWrite(WriteKind.EMERGENCY_UNBLIND)
    if action in ENROLMENT_ACTIONS:
        return GuardedWrite(WriteKind.ENROLMENT)
    if "query" in action or entity == "data_query":
        return GuardedWrite(WriteKind.QUERY)
    if entity == "form":
        form, _, number = entity_id.partition("#")
        record_id = int(number) if number.isdigit() else None
        visit = values.get("visit")
        return GuardedWrite(
            WriteKind.DATA,
            visit=str(visit) if visit else None,
            form=form,
            record_id=record_id,
        )
    if action in VISIT_ACTIONS and values.get("visit"):
        return GuardedWrite(WriteKind.VISIT, visit=str(values["visit"]))
    return GuardedWrite(WriteKind.SUBJECT)
