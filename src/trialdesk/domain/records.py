"""What locks, SDV marks, signatures and data-quality rules point at: one form record of one
subject, and a fingerprint of its values that tells whether they changed since.

Pure and stdlib only; the services map their rows to these (issue 15, REC-1..REC-6).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class RecordRef:
    """One form record: ``visit`` is ``""`` outside visits, ``seq`` counts a repeating form's
    records from 1."""

    subject: str
    form: str
    visit: str = ""
    seq: int = 1

    def label(self) -> str:
        """``form follow_up at M24 of S101-0001``: what a refusal or a report names."""
        repeat = f" #{self.seq}" if self.seq != 1 else ""
        at = f" at {self.visit}" if self.visit else ""
        return f"form {self.form}{repeat}{at} of {self.subject}"

    @property
    def key(self) -> str:
        """A stable text key (``S101-0001|follow_up|M24|1``) for rows and exclusions."""
        return f"{self.subject}|{self.form}|{self.visit}|{self.seq}"


def canonical(value: object) -> object:
    """A value as JSON sees it: dates and times as ISO text, whole floats kept apart from
    integers only by value (``61`` and ``61.0`` are the same score)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def fingerprint(values: Mapping[str, object], fields: Iterable[str] | None = None) -> str:
    """SHA-256 of the named fields' values (all when ``fields`` is None), order-independent.

    A mark or signature keeps the fingerprint of what it covered; a different fingerprint
    later means a covered value changed, whatever path changed it.
    """
    names = sorted(values) if fields is None else sorted(set(fields))
    payload = {name: canonical(values.get(name)) for name in names}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ValueChange:
    """One saved change of one field (DATA-2): what SDV and sign-off show as the reason a mark
    or signature no longer holds."""

    ref: RecordRef
    field: str
    old: object
    new: object
    at: dt.datetime
    by: str
    reason: str

    def describe(self) -> str:
        old, new = canonical(self.old), canonical(self.new)
        return (
            f"{self.field} changed {old!r} -> {new!r} on {self.at:%Y-%m-%d %H:%M} UTC by "
            f"{self.by}: {self.reason}"
        )
