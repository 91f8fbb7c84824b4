"""Locks from form record to database (REC-3), the blinded phase frozen at unblinding (REC-4)
and the database lock's soft and hard kinds (REC-5).

A lock covers a form record, a visit, a subject's casebook or the whole study. Every write a
service makes is described as a :class:`Write`; :func:`check_writable` refuses it when any
active lock covers it, naming the lock, so one guard in the unit of work refuses every write
path alike. What a lock lets through is one table (:data:`LOCK_REFUSES`):

* data changes (a form saved or corrected, a visit recorded or missed, the subject's own
  record: consent, exits, scheduled unblinding) are refused by every lock that covers them;
* registration and randomization only by the study lock;
* queries, SDV marks and signatures change no value and pass record locks and the soft
  lock (a frozen record can still be queried, verified and signed), not the hard lock;
* emergency unblinding is never refused: a patient's safety does not wait for a data lock.

Pure, stdlib only; times are passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from trialdesk.domain.errors import PreconditionFailed, TrialError, ValidationFailed
from trialdesk.domain.records import RecordRef


class LockLevel(StrEnum):
    FORM = "form"
    VISIT = "visit"
    CASEBOOK = "casebook"
    STUDY = "study"


class LockKind(StrEnum):
    """``manual``/``freeze`` lock records; ``soft``/``hard`` are the two database locks."""

    MANUAL = "manual"
    FREEZE = "freeze"
    SOFT = "soft"
    HARD = "hard"


RECORD_KINDS = frozenset({LockKind.MANUAL, LockKind.FREEZE})
STUDY_KINDS = frozenset({LockKind.SOFT, LockKind.HARD})
_PRECEDENCE = {LockLevel.STUDY: 0, LockLevel.CASEBOOK: 1, LockLevel.VISIT: 2, LockLevel.FORM: 3}


class WriteKind(StrEnum):
    """What a service write does, as far as locks care."""

    DATA = "data"
    """A form record saved or corrected."""
    VISIT = "visit"
    """A visit recorded (its date) or marked missed."""
    SUBJECT = "subject"
    """The subject's own record: consent, exits, scheduled unblinding, lifecycle changes."""
    ENROLMENT = "enrolment"
    """Registration and randomization."""
    QUERY = "query"
    """A query raised, assigned, answered without a change, verified, closed or reopened."""
    REVIEW = "review"
    """An SDV mark or an investigator signature: they change no value."""
    EMERGENCY_UNBLIND = "emergency_unblind"
    """Never refused by a lock."""


LOCK_REFUSES: dict[LockKind, frozenset[WriteKind]] = {
    LockKind.MANUAL: frozenset(
        {WriteKind.DATA, WriteKind.VISIT, WriteKind.SUBJECT, WriteKind.ENROLMENT}
    ),
    LockKind.FREEZE: frozenset(
        {WriteKind.DATA, WriteKind.VISIT, WriteKind.SUBJECT, WriteKind.ENROLMENT}
    ),
    LockKind.SOFT: frozenset(
        {WriteKind.DATA, WriteKind.VISIT, WriteKind.SUBJECT, WriteKind.ENROLMENT}
    ),
    LockKind.HARD: frozenset(set(WriteKind) - {WriteKind.EMERGENCY_UNBLIND}),
}
"""Which writes each kind of lock refuses, when it covers them."""


@dataclass(frozen=True)
class Write:
    """One write as the lock guard sees it. ``visit`` is the record's visit (``""`` outside
    visits); ``form``/``seq`` name the record for data writes; ``subject`` is None for study
    writes (registration has no subject yet)."""

    kind: WriteKind
    subject: str | None = None
    visit: str | None = None
    form: str | None = None
    seq: int | None = None

    @classmethod
    def data(cls, ref: RecordRef) -> Write:
        return cls(WriteKind.DATA, ref.subject, ref.visit, ref.form, ref.seq)

    def label(self) -> str:
        if self.form is not None and self.subject is not None:
            return RecordRef(self.subject, self.form, self.visit or "", self.seq or 1).label()
        if self.visit and self.subject is not None:
            return f"visit {self.visit} of {self.subject}"
        if self.subject is not None:
            return f"subject {self.subject}"
        return "the study"


@dataclass(frozen=True)
class Lock:
    """A lock as stored. Record locks name their target: a form record (``seq`` None covers
    every record of that form at that visit), a visit, a casebook. ``unlocked_at`` set means
    lifted (kept for the record: the unlock is shown on the record, REC-3)."""

    id: int
    level: LockLevel
    kind: LockKind
    reason: str
    locked_by: str
    locked_at: dt.datetime
    subject: str | None = None
    visit: str | None = None
    form: str | None = None
    seq: int | None = None
    unlocked_at: dt.datetime | None = None
    unlocked_by: str | None = None
    unlock_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.unlocked_at is None

    def describe(self) -> str:
        """``the hard database lock`` / ``the freeze at unblinding of visit M24 of S101-0001``."""
        if self.level is LockLevel.STUDY:
            return f"the {self.kind.value} database lock"
        how = "the freeze at unblinding" if self.kind is LockKind.FREEZE else "a lock"
        if self.level is LockLevel.CASEBOOK:
            return f"{how} of the casebook of {self.subject}"
        if self.level is LockLevel.VISIT:
            return f"{how} of visit {self.visit} of {self.subject}"
        seq = f" #{self.seq}" if self.seq is not None and self.seq != 1 else ""
        at = f" at {self.visit}" if self.visit else ""
        return f"{how} of form {self.form}{seq}{at} of {self.subject}"


class RecordLocked(TrialError):
    """A lock covers what the caller tried to change (REC-3); ``locks`` names each."""

    code = "record-locked"

    def __init__(self, message: str, locks: Sequence[Lock]) -> None:
        super().__init__(message)
        self.locks = tuple(locks)


def validate_target(
    level: LockLevel,
    kind: LockKind,
    *,
    subject: str | None = None,
    visit: str | None = None,
    form: str | None = None,
    seq: int | None = None,
) -> None:
    """A lock names exactly what its level needs; a database lock is soft or hard, a record
    lock manual or a freeze."""
    problems: dict[str, str] = {}
    if level is LockLevel.STUDY:
        if kind not in STUDY_KINDS:
            problems["kind"] = "a database lock is soft or hard"
        given = {"subject": subject, "visit": visit, "form": form, "seq": seq}
        problems |= {k: "a database lock covers the whole study" for k, v in given.items() if v}
    else:
        if kind not in RECORD_KINDS:
            problems["kind"] = f"a {level.value} lock is manual or a freeze, not {kind.value}"
        if not subject:
            problems["subject"] = f"a {level.value} lock names the subject"
        if level is LockLevel.VISIT and not visit:
            problems["visit"] = "a visit lock names the visit"
        if level is LockLevel.FORM and not form:
            problems["form"] = "a form lock names the form"
        if level is not LockLevel.FORM and (form or seq is not None):
            problems["form"] = f"a {level.value} lock covers every form"
        if level is LockLevel.CASEBOOK and visit:
            problems["visit"] = "a casebook lock covers every visit"
        if seq is not None and seq < 1:
            problems["seq"] = "record numbers start at 1"
    if problems:
        lines = "; ".join(f"{k}: {v}" for k, v in problems.items())
        raise ValidationFailed(f"lock: {lines}", problems)


def covers(lock: Lock, write: Write) -> bool:
    """Does this active lock refuse this write?"""
    if not lock.active or write.kind not in LOCK_REFUSES[lock.kind]:
        return False
    if lock.level is LockLevel.STUDY:
        return True
    if write.subject is None or write.subject != lock.subject:
        return False  # a record lock never covers registration (no subject yet)
    if lock.level is LockLevel.CASEBOOK:
        return True
    if write.kind not in (WriteKind.DATA, WriteKind.VISIT, WriteKind.QUERY, WriteKind.REVIEW):
        return False  # the subject's own record is not part of one visit or form
    if lock.level is LockLevel.VISIT:
        return write.visit == lock.visit
    if write.kind is WriteKind.VISIT or write.form != lock.form:
        return False
    if (write.visit or "") != (lock.visit or ""):
        return False
    return lock.seq is None or write.seq is None or write.seq == lock.seq


def blocking(locks: Iterable[Lock], write: Write) -> list[Lock]:
    """Every active lock refusing ``write``, the widest first (study, casebook, visit, form)."""
    found = [lock for lock in locks if covers(lock, write)]
    return sorted(found, key=lambda lock: (_PRECEDENCE[lock.level], lock.locked_at, lock.id))


def _how_to_lift(lock: Lock) -> str:
    if lock.kind is LockKind.HARD:
        return "the hard database lock is final"
    if lock.kind is LockKind.SOFT:
        return "the data manager may lift the soft lock with a reason and a signature"
    return "the data manager may unlock it with a reason and a signature"


def check_writable(locks: Iterable[Lock], write: Write) -> None:
    """Refuse ``write`` when a lock covers it: one message naming the lock, who set it, when
    and why, and how it can be lifted; nothing is written (REC-3)."""
    found = blocking(locks, write)
    if not found:
        return
    first = found[0]
    others = len(found) - 1
    more = (
        f"; {others} more lock{'s' if others > 1 else ''} cover{'s' if others == 1 else ''} it"
        if others
        else ""
    )
    raise RecordLocked(
        f"{write.label()} is locked by {first.describe()}, set by {first.locked_by} on "
        f"{first.locked_at:%Y-%m-%d} ({first.reason}){more}; {_how_to_lift(first)}",
        found,
    )


def check_can_lock(active: Iterable[Lock], proposed: Lock) -> list[Lock]:
    """Whether ``proposed`` may be set beside the active locks; returns the locks it ends.

    The same target is not locked twice; a soft database lock is not set over a hard one; a
    hard lock ends an active soft lock (it becomes final)."""
    validate_target(
        proposed.level,
        proposed.kind,
        subject=proposed.subject,
        visit=proposed.visit,
        form=proposed.form,
        seq=proposed.seq,
    )
    if not proposed.reason.strip():
        raise ValidationFailed("a lock needs a reason", {"reason": "is required"})
    ends: list[Lock] = []
    for lock in active:
        if not lock.active:
            continue
        if proposed.level is LockLevel.STUDY and lock.level is LockLevel.STUDY:
            if lock.kind is LockKind.HARD:
                raise PreconditionFailed(
                    "the study is under the hard database lock, which is final",
                    reason="database-locked",
                )
            if proposed.kind is LockKind.SOFT:
                raise PreconditionFailed(
                    "the study is already under the soft database lock", reason="already-locked"
                )
            ends.append(lock)
        elif _same_target(lock, proposed):
            raise PreconditionFailed(
                f"{proposed.describe()} already exists (set by {lock.locked_by} on "
                f"{lock.locked_at:%Y-%m-%d})",
                reason="already-locked",
            )
    return ends


def _same_target(a: Lock, b: Lock) -> bool:
    return (a.level, a.subject, a.visit or "", a.form, a.seq) == (
        b.level,
        b.subject,
        b.visit or "",
        b.form,
        b.seq,
    )


def check_can_unlock(lock: Lock, reason: str) -> str:
    """An unlock needs a reason; a hard database lock is never lifted. Returns the reason."""
    if not lock.active:
        raise PreconditionFailed(
            f"{lock.describe()} was already lifted on {lock.unlocked_at:%Y-%m-%d}",
            reason="not-locked",
        )
    if lock.kind is LockKind.HARD:
        raise PreconditionFailed("the hard database lock is final", reason="database-locked")
    text = reason.strip()
    if not text:
        raise ValidationFailed("an unlock needs a reason", {"reason": "is required"})
    return text


# --- the blinded phase frozen at unblinding (REC-4) ----------------------------------------


class UnblindingFlag(StrEnum):
    """How a record relates to its subject's unblinding, for the audit, the endpoint outputs
    and the DSMB report."""

    CHANGED_AFTER_UNBLINDING = "changed_after_unblinding"
    """A frozen record changed after the data manager unlocked it."""
    ENTERED_AFTER_UNBLINDING = "entered_after_unblinding"
    """A record of the blinded phase (dated on or before the unblinding) first saved after."""
    ASSESSED_UNBLINDED = "assessed_unblinded"
    """A record within the frozen scope dated after the unblinding (after an emergency
    unblinding, the later blinded-phase visits are assessed by people who know the arm)."""


@dataclass(frozen=True)
class FreezeSpec:
    """The protocol's ``freeze`` section: which unblindings freeze, which visits (in protocol
    order, up to and including ``visits_through``) and which further forms."""

    unblinding: frozenset[str]
    visits: tuple[str, ...]
    forms: frozenset[str]
    late_records: str = "flag"

    def freezes(self, unblinding_kind: str) -> bool:
        return unblinding_kind in self.unblinding

    def in_scope(self, ref: RecordRef) -> bool:
        return (ref.visit != "" and ref.visit in self.visits) or ref.form in self.forms


def frozen_visits(visit_order: Sequence[str], through: str) -> tuple[str, ...]:
    """The visits up to and including ``through``, in protocol order."""
    if through not in visit_order:
        raise ValidationFailed(f"unknown visit {through!r}", {"visits_through": "unknown"})
    return tuple(visit_order[: list(visit_order).index(through) + 1])


@dataclass(frozen=True)
class DatedRecord:
    """A saved record and its clinical date (the form's date field, or the visit date)."""

    ref: RecordRef
    on: dt.date | None


@dataclass(frozen=True)
class LockRequest:
    """A lock the freeze asks the store to create (its id, time and author come from there)."""

    level: LockLevel
    subject: str
    visit: str | None = None
    form: str | None = None
    seq: int | None = None
    reason: str = ""


def freeze_requests(
    spec: FreezeSpec,
    unblinding_kind: str,
    subject: str,
    unblinded_on: dt.date,
    visits_recorded: Iterable[str],
    records: Iterable[DatedRecord],
) -> list[LockRequest]:
    """The locks that freeze one subject's blinded phase at unblinding (REC-4): a visit lock
    for each frozen visit already recorded (done or missed), and a form lock for each record of
    a frozen form outside visits dated on or before the unblinding (undated ones too).
    Nothing when this kind of unblinding does not freeze. Created before the arm is shown."""
    if not spec.freezes(unblinding_kind):
        return []
    reason = f"{unblinding_kind} unblinding of {subject} on {unblinded_on}: blinded phase frozen"
    out: list[LockRequest] = []
    recorded = set(visits_recorded)
    for visit in spec.visits:
        if visit in recorded:
            out.append(LockRequest(LockLevel.VISIT, subject, visit=visit, reason=reason))
    for record in sorted(records, key=lambda r: r.ref):
        ref = record.ref
        if ref.subject != subject or ref.visit or ref.form not in spec.forms:
            continue
        if record.on is None or record.on <= unblinded_on:
            out.append(
                LockRequest(LockLevel.FORM, subject, form=ref.form, seq=ref.seq, reason=reason)
            )
    return out


def unblinding_flag(
    spec: FreezeSpec | None,
    unblinded_on: dt.date | None,
    ref: RecordRef,
    on: dt.date | None,
    *,
    new_record: bool,
) -> UnblindingFlag | None:
    """The flag a write of ``ref`` (clinical date ``on``) after its subject's unblinding
    carries; None before unblinding, outside the frozen scope or without a freeze."""
    if spec is None or unblinded_on is None or not spec.in_scope(ref):
        return None
    if on is not None and on > unblinded_on:
        return UnblindingFlag.ASSESSED_UNBLINDED
    if new_record:
        return UnblindingFlag.ENTERED_AFTER_UNBLINDING
    return UnblindingFlag.CHANGED_AFTER_UNBLINDING


def check_late_record(spec: FreezeSpec | None, flag: UnblindingFlag | None, ref: RecordRef) -> None:
    """Refuse a blinded-phase record first saved after unblinding when the protocol says
    ``late_records: refuse``; a record dated after the unblinding is always accepted."""
    late = flag is UnblindingFlag.ENTERED_AFTER_UNBLINDING
    if spec is not None and late and spec.late_records == "refuse":
        raise PreconditionFailed(
            f"{ref.label()} belongs to the blinded phase, which was frozen when "
            f"{ref.subject} was unblinded; the protocol refuses records entered after",
            reason="blinded-phase-frozen",
        )
