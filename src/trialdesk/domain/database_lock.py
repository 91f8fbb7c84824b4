"""What a subject's casebook should hold, the missing-data report (REC-10), and the checklist
that blocks the database lock (REC-5).

The hard (final) database lock needs: no unresolved query, every expected form complete or
marked missing, every casebook that needs it signed (and the signature still valid), and SDV
done wherever the protocol requires it; and, as a final lock implies, no subject still in
screening or follow-up. :func:`lock_blockers` lists each thing in the way, so
the checklist is a report before it is a refusal; trial-level unblinding then requires the
hard lock (:func:`check_trial_unblinding`). A soft lock (a freeze for an interim look) is
allowed with blockers: it is reversible, and the report shows them.

Expected forms are worked out from the subject's state without an arm: the caller names the
arm-neutral forms after randomization (the index procedure record, discharge), so a missing
form never tells which procedure form a subject has. Pure, stdlib only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from trialdesk.domain.errors import PreconditionFailed
from trialdesk.domain.lifecycle import ON_STUDY, PRE_RANDOMIZATION, SubjectState
from trialdesk.domain.queries import UNRESOLVED, QueryStatus
from trialdesk.domain.records import RecordRef
from trialdesk.domain.sdv import SdvState, SdvStatus


class SlotStatus(StrEnum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    """Saved with a required value blank (saved under an older version, or marked missing
    field by field)."""
    NOT_SAVED = "not_saved"
    MARKED_MISSING = "marked_missing"


@dataclass(frozen=True)
class Slot:
    """One expected form record of one subject at one site, and where it stands."""

    ref: RecordRef
    site: str
    status: SlotStatus = SlotStatus.NOT_SAVED
    reason: str | None = None
    """Why it is marked missing."""


PAST_ECHO: frozenset[SubjectState] = frozenset(
    {SubjectState.ECHO_QUALIFIED, SubjectState.AWAITING_PROCEDURE}
)


def expected_slots(
    subject: str,
    site: str,
    *,
    state: SubjectState,
    randomized: bool,
    screening_forms: Sequence[str],
    anatomy_forms: Sequence[str],
    after_randomization: Sequence[str],
    visits_done: Mapping[str, Sequence[str]],
) -> list[Slot]:
    """The form records a subject's casebook should hold now.

    Screening forms once the subject passed screening (echo-qualified and beyond, or ever
    randomized); the anatomy forms and the arm-neutral records after randomization (e.g.
    ``index_procedure``, ``discharge``) once randomized; each done visit's forms. A screen
    failure's casebook expects nothing more than was saved; a missed visit expects nothing.
    """
    refs: list[RecordRef] = []
    passed = randomized or state in PAST_ECHO
    if passed:
        refs += [RecordRef(subject, form) for form in screening_forms]
    if randomized:
        refs += [RecordRef(subject, form) for form in anatomy_forms]
        refs += [RecordRef(subject, form) for form in after_randomization]
        for visit, forms in visits_done.items():
            refs += [RecordRef(subject, form, visit) for form in forms]
    return [Slot(ref, site) for ref in dict.fromkeys(refs)]


def fill(
    slots: Iterable[Slot],
    saved: Mapping[RecordRef, bool],
    marked_missing: Mapping[RecordRef, str],
) -> list[Slot]:
    """Each expected slot with its status: ``saved`` maps a saved record to whether every
    required value is there; ``marked_missing`` a record confirmed unobtainable to the reason
    (a coded query answer such as "not available", or the data manager's mark)."""
    out: list[Slot] = []
    for slot in slots:
        if slot.ref in marked_missing:
            status, reason = SlotStatus.MARKED_MISSING, marked_missing[slot.ref]
        elif slot.ref not in saved:
            status, reason = SlotStatus.NOT_SAVED, None
        else:
            status = SlotStatus.COMPLETE if saved[slot.ref] else SlotStatus.INCOMPLETE
            reason = None
        out.append(Slot(slot.ref, slot.site, status, reason))
    return out


@dataclass
class SlotCounts:
    expected: int = 0
    complete: int = 0
    incomplete: int = 0
    not_saved: int = 0
    marked_missing: int = 0


def missing_report(slots: Iterable[Slot]) -> dict[tuple[str, str], SlotCounts]:
    """The missing-data report per visit and form (``""`` for forms outside visits), in the
    order slots come: what a data manager works through before the lock (REC-10)."""
    report: dict[tuple[str, str], SlotCounts] = {}
    for slot in slots:
        counts = report.setdefault((slot.ref.visit, slot.ref.form), SlotCounts())
        counts.expected += 1
        setattr(counts, slot.status.value, getattr(counts, slot.status.value) + 1)
    return report


# --- the database-lock checklist (REC-5) --------------------------------------------------


class BlockerKind(StrEnum):
    OPEN_QUERY = "open_query"
    FORM_NOT_SAVED = "form_not_saved"
    FORM_INCOMPLETE = "form_incomplete"
    CASEBOOK_UNSIGNED = "casebook_unsigned"
    SIGNATURE_INVALIDATED = "signature_invalidated"
    SDV_PENDING = "sdv_pending"
    SDV_INVALIDATED = "sdv_invalidated"
    SUBJECT_ON_STUDY = "subject_on_study"


@dataclass(frozen=True)
class Blocker:
    kind: BlockerKind
    site: str
    subject: str
    text: str
    ref: RecordRef | None = None
    query_id: int | None = None


@dataclass(frozen=True)
class QueryFacts:
    id: int
    subject: str
    site: str
    ref: RecordRef
    field: str
    status: QueryStatus
    raised_on: dt.date


@dataclass(frozen=True)
class CasebookFacts:
    """One subject's casebook as the checklist needs it."""

    subject: str
    site: str
    state: SubjectState
    needs_signature: bool
    signed: bool = False
    signature_valid: bool = False
    invalid_because: tuple[str, ...] = field(default_factory=tuple)


def lock_blockers(
    *,
    queries: Iterable[QueryFacts],
    slots: Iterable[Slot],
    casebooks: Iterable[CasebookFacts],
    sdv: Iterable[tuple[str, SdvState]],
    today: dt.date,
) -> list[Blocker]:
    """Everything in the way of the hard database lock, sorted by site and subject: the
    checklist is this report; an empty list means the lock may go ahead. ``casebooks`` holds
    every subject of the study (those still on study block the lock too), ``slots`` every
    expected record with its status, ``sdv`` each record's state with its site."""
    out: list[Blocker] = []
    for q in queries:
        if q.status in UNRESOLVED:
            age = max(0, (today - q.raised_on).days)
            out.append(
                Blocker(
                    BlockerKind.OPEN_QUERY,
                    q.site,
                    q.subject,
                    f"query {q.id} on {q.field} of {q.ref.label()} is {q.status.value} "
                    f"({age} days)",
                    q.ref,
                    q.id,
                )
            )
    for slot in slots:
        if slot.status is SlotStatus.NOT_SAVED:
            text = f"{slot.ref.label()} is not saved and not marked missing"
            out.append(
                Blocker(BlockerKind.FORM_NOT_SAVED, slot.site, slot.ref.subject, text, slot.ref)
            )
        elif slot.status is SlotStatus.INCOMPLETE:
            text = f"{slot.ref.label()} has required values blank"
            out.append(
                Blocker(BlockerKind.FORM_INCOMPLETE, slot.site, slot.ref.subject, text, slot.ref)
            )
    for book in casebooks:
        if book.state in PRE_RANDOMIZATION or book.state in ON_STUDY:
            out.append(
                Blocker(
                    BlockerKind.SUBJECT_ON_STUDY,
                    book.site,
                    book.subject,
                    f"{book.subject} is still {book.state.value}: complete or end the subject's "
                    "participation first",
                )
            )
        if not book.needs_signature:
            continue
        if not book.signed:
            out.append(
                Blocker(
                    BlockerKind.CASEBOOK_UNSIGNED,
                    book.site,
                    book.subject,
                    f"the casebook of {book.subject} is not signed by the investigator",
                )
            )
        elif not book.signature_valid:
            why = "; ".join(book.invalid_because) or "data changed after signing"
            out.append(
                Blocker(
                    BlockerKind.SIGNATURE_INVALIDATED,
                    book.site,
                    book.subject,
                    f"the casebook signature of {book.subject} no longer holds: {why}",
                )
            )
    for site, state in sdv:
        if not state.required:
            continue
        if state.status is SdvStatus.PENDING:
            missing = f" ({', '.join(state.missing)})" if state.missing else ""
            out.append(
                Blocker(
                    BlockerKind.SDV_PENDING,
                    site,
                    state.ref.subject,
                    f"{state.ref.label()} awaits SDV{missing}",
                    state.ref,
                )
            )
        elif state.status is SdvStatus.INVALIDATED:
            why = "; ".join(state.invalidated_by)
            out.append(
                Blocker(
                    BlockerKind.SDV_INVALIDATED,
                    site,
                    state.ref.subject,
                    f"{state.ref.label()}: SDV cleared by a later change ({why})",
                    state.ref,
                )
            )
    order = {kind: i for i, kind in enumerate(BlockerKind)}
    return sorted(out, key=lambda b: (b.site, b.subject, order[b.kind], b.text))


def casebook_needs_signature(*, randomized: bool, consented: bool, scope: str) -> bool:
    """Whose casebook the investigator must sign before the lock: the protocol's
    ``sign_off.casebooks_for``, ``randomized`` subjects or everyone ``consented``."""
    return randomized if scope == "randomized" else consented


def check_database_lock(kind: str, blockers: Sequence[Blocker]) -> None:
    """A hard lock is refused while anything blocks it, naming how many and the first few; a
    soft lock goes ahead (REC-5)."""
    if kind != "hard" or not blockers:
        return
    shown = "; ".join(b.text for b in blockers[:3])
    more = f"; and {len(blockers) - 3} more" if len(blockers) > 3 else ""
    raise PreconditionFailed(
        f"the database cannot be locked: {len(blockers)} blocker"
        f"{'s' if len(blockers) != 1 else ''} remain ({shown}{more}); see the lock checklist",
        reason="database-lock-blocked",
    )


def check_trial_unblinding(hard_locked: bool) -> None:
    """Trial-level unblinding needs the hard database lock first (REC-5, RAND-7)."""
    if not hard_locked:
        raise PreconditionFailed(
            "trial-level unblinding needs the hard database lock first: clear the lock "
            "checklist and lock the database",
            reason="database-not-locked",
        )
