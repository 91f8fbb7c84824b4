"""Investigator sign-off of a form, a visit or a casebook (REC-2, SIG-1).

A signature covers a set of records and keeps each one's version and value fingerprint at the
moment of signing. It holds while the set is unchanged; a record changed, added to or removed
from what it covers invalidates it, visibly, with what changed. Re-authentication and the
printed name are the service's part (SIG-1); what a signature covers and when it stops holding
is decided here, pure and stdlib only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.domain.records import RecordRef

DEFAULT_MEANING = "I attest the data are accurate and complete."


class SignLevel(StrEnum):
    FORM = "form"
    VISIT = "visit"
    CASEBOOK = "casebook"


@dataclass(frozen=True)
class RecordState:
    """A saved record as a signature sees it: its version and its values' fingerprint."""

    ref: RecordRef
    version: int
    fingerprint: str


@dataclass(frozen=True)
class SignTarget:
    """What is signed: a form record, a visit or a casebook of one subject."""

    level: SignLevel
    subject: str
    visit: str | None = None
    ref: RecordRef | None = None

    def label(self) -> str:
        if self.level is SignLevel.FORM and self.ref is not None:
            return self.ref.label()
        if self.level is SignLevel.VISIT:
            return f"visit {self.visit} of {self.subject}"
        return f"the casebook of {self.subject}"

    def covers(self, ref: RecordRef) -> bool:
        if ref.subject != self.subject:
            return False
        if self.level is SignLevel.CASEBOOK:
            return True
        if self.level is SignLevel.VISIT:
            return ref.visit == self.visit
        return ref == self.ref


def target(
    level: SignLevel, subject: str, *, visit: str | None = None, ref: RecordRef | None = None
) -> SignTarget:
    """A target that names what its level needs, or ValidationFailed."""
    problems: dict[str, str] = {}
    if level is SignLevel.FORM and (ref is None or ref.subject != subject):
        problems["form"] = "a form signature names one record of the subject"
    if level is SignLevel.VISIT and not visit:
        problems["visit"] = "a visit signature names the visit"
    if level is not SignLevel.FORM and ref is not None:
        problems["form"] = f"a {level.value} signature covers every form"
    if level is SignLevel.CASEBOOK and visit:
        problems["visit"] = "a casebook signature covers every visit"
    if problems:
        lines = "; ".join(f"{k}: {v}" for k, v in problems.items())
        raise ValidationFailed(f"signature: {lines}", problems)
    return SignTarget(level, subject, visit, ref)


@dataclass(frozen=True)
class Signature:
    """An investigator's signature (SIG-1): who, printed name, when, meaning, and what it
    covered then."""

    target: SignTarget
    signer: str
    printed_name: str
    at: dt.datetime
    meaning: str
    covered: Mapping[RecordRef, tuple[int, str]]
    """Each covered record's version and value fingerprint at signing."""


def sign(
    sign_target: SignTarget,
    records: Iterable[RecordState],
    *,
    signer: str,
    printed_name: str,
    at: dt.datetime,
    meaning: str = DEFAULT_MEANING,
) -> Signature:
    """Sign what ``sign_target`` covers among ``records`` (the subject's saved records); an
    empty scope has nothing to sign."""
    if not printed_name.strip():
        raise ValidationFailed("a signature needs the signer's printed name", {"name": "empty"})
    covered = {r.ref: (r.version, r.fingerprint) for r in records if sign_target.covers(r.ref)}
    if not covered:
        raise PreconditionFailed(
            f"{sign_target.label()} has no saved data to sign", reason="nothing-to-sign"
        )
    return Signature(
        target=sign_target,
        signer=signer,
        printed_name=printed_name.strip(),
        at=at,
        meaning=meaning,
        covered=dict(sorted(covered.items())),
    )


@dataclass(frozen=True)
class SignatureState:
    """Whether a signature still holds and, if not, what changed since."""

    valid: bool
    changed: tuple[RecordRef, ...] = ()
    added: tuple[RecordRef, ...] = ()
    removed: tuple[RecordRef, ...] = ()

    def reasons(self) -> list[str]:
        """One line per record, for the record page and the audit entry."""
        out = [f"{ref.label()} changed after signing" for ref in self.changed]
        out += [f"{ref.label()} was added after signing" for ref in self.added]
        out += [f"{ref.label()} is no longer there" for ref in self.removed]
        return out


def signature_state(signature: Signature, records: Iterable[RecordState]) -> SignatureState:
    """Compare what the signature covered with the records it covers now."""
    now = {r.ref: (r.version, r.fingerprint) for r in records if signature.target.covers(r.ref)}
    then = signature.covered
    changed = tuple(sorted(ref for ref in then if ref in now and now[ref] != then[ref]))
    added = tuple(sorted(ref for ref in now if ref not in then))
    removed = tuple(sorted(ref for ref in then if ref not in now))
    return SignatureState(not (changed or added or removed), changed, added, removed)


def invalidated_by(signatures: Iterable[Signature], ref: RecordRef) -> list[Signature]:
    """The signatures a change to ``ref`` invalidates: every one whose target covers it (the
    form's own, its visit's, the casebook's). A service calls it on each write to mark them."""
    return [s for s in signatures if s.target.covers(ref)]
