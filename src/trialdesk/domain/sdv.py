"""Source-data verification (REC-1): what needs verifying, which subjects are in the sample,
a monitor's mark, and when a later change clears it.

The sample is drawn from the protocol's seed and the subject number alone: the same subjects
on every run, never dependent on enrolment order or on the arm, and nested (a subject in the
sample at 20 % is in it at 30 %, so raising the rate mid-trial never drops anyone).

Pure, stdlib only; times are passed in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.records import RecordRef, ValueChange, canonical, fingerprint


class SdvLevel(StrEnum):
    FULL = "full"
    SAMPLE = "sample"
    NONE = "none"


@dataclass(frozen=True)
class FormSdvSpec:
    form: str
    level: SdvLevel
    fields: tuple[str, ...] | None = None
    rate: float | None = None


@dataclass(frozen=True)
class SdvPolicySpec:
    """The protocol's ``sdv`` section."""

    default_level: SdvLevel = SdvLevel.NONE
    sample_rate: float = 0.2
    seed: int = 0
    first_subjects_full: int = 0
    forms: tuple[FormSdvSpec, ...] = ()

    def for_form(self, form: str) -> FormSdvSpec:
        for spec in self.forms:
            if spec.form == form:
                return spec
        return FormSdvSpec(form, self.default_level)


def sample_draw(seed: int, subject: str) -> float:
    """The subject's uniform draw in [0, 1) from SHA-256 of the seed and the subject number."""
    digest = hashlib.sha256(f"trialdesk-sdv\x1f{seed}\x1f{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class SdvRequirement:
    """What must be verified of one record, and why (shown to the monitor)."""

    required: bool
    fields: tuple[str, ...]
    why: str


def requirement(
    policy: SdvPolicySpec | None,
    subject: str,
    form: str,
    form_fields: Sequence[str],
    *,
    site_ordinal: int,
) -> SdvRequirement:
    """Whether ``subject``'s records of ``form`` need SDV; ``site_ordinal`` is the subject's
    place in its site's registration order (1 = first), for ``first_subjects_full``."""
    if policy is None:
        return SdvRequirement(False, (), "no SDV policy in the protocol")
    spec = policy.for_form(form)
    fields = tuple(spec.fields) if spec.fields is not None else tuple(form_fields)
    if spec.level is SdvLevel.NONE:
        return SdvRequirement(False, (), f"{form} needs no SDV")
    if spec.level is SdvLevel.FULL:
        return SdvRequirement(True, fields, f"{form}: 100 % SDV")
    if site_ordinal <= policy.first_subjects_full:
        why = f"{form}: one of the site's first {policy.first_subjects_full} subjects"
        return SdvRequirement(True, fields, why)
    rate = spec.rate if spec.rate is not None else policy.sample_rate
    draw = sample_draw(policy.seed, subject)
    if draw < rate:
        return SdvRequirement(True, fields, f"{form}: in the {rate:.0%} sample")
    return SdvRequirement(False, (), f"{form}: not in the {rate:.0%} sample")


class SdvStatus(StrEnum):
    NOT_REQUIRED = "not_required"
    PENDING = "pending"
    VERIFIED = "verified"
    INVALIDATED = "invalidated"


@dataclass(frozen=True)
class SdvMark:
    """A monitor's mark on a record: the fields verified and each one's value fingerprint."""

    ref: RecordRef
    fields: tuple[str, ...]
    fingerprints: Mapping[str, str]
    by: str
    at: dt.datetime


def mark(
    ref: RecordRef,
    values: Mapping[str, object],
    *,
    fields: Sequence[str] | None,
    required: SdvRequirement,
    by: str,
    at: dt.datetime,
) -> SdvMark:
    """Mark ``fields`` of a saved record verified (the required ones when None, else every
    field with a value); a field the form does not have is refused."""
    entered = tuple(name for name, value in values.items() if value is not None)
    chosen = tuple(fields) if fields is not None else required.fields or entered
    unknown = [name for name in chosen if name not in values]
    if unknown:
        raise ValidationFailed(
            f"{ref.label()} has no field {', '.join(unknown)}", dict.fromkeys(unknown, "unknown")
        )
    if not chosen:
        raise ValidationFailed(f"{ref.label()}: name the fields verified", {"fields": "empty"})
    ordered = tuple(dict.fromkeys(chosen))
    prints = {name: fingerprint(values, [name]) for name in ordered}
    return SdvMark(ref=ref, fields=ordered, fingerprints=prints, by=by, at=at)


@dataclass(frozen=True)
class SdvState:
    """A record's SDV state and, when invalidated, the changes that cleared the mark."""

    ref: RecordRef
    status: SdvStatus
    required: bool = False
    """The policy requires SDV of this record (only those block the database lock)."""
    missing: tuple[str, ...] = ()
    """Required fields not (or no longer) verified."""
    invalidated_by: tuple[str, ...] = ()
    """Why the mark no longer holds, one line per changed field."""
    mark: SdvMark | None = None


def sdv_state(
    ref: RecordRef,
    required: SdvRequirement,
    current: SdvMark | None,
    values: Mapping[str, object],
    changes: Iterable[ValueChange] = (),
) -> SdvState:
    """Where a record stands: a change after the mark to a marked field clears it (with the
    change as the reason), and so does a value that differs from what was verified even when no
    change was logged; unmarked required fields leave it pending."""
    if current is None:
        if not required.required:
            return SdvState(ref, SdvStatus.NOT_REQUIRED)
        return SdvState(ref, SdvStatus.PENDING, True, missing=required.fields)
    why: list[str] = []
    changed: set[str] = set()
    for change in changes:
        relevant = change.ref == ref and change.field in current.fields
        if relevant and change.at > current.at and canonical(change.old) != canonical(change.new):
            why.append(change.describe())
            changed.add(change.field)
    for name in current.fields:
        if name not in changed and fingerprint(values, [name]) != current.fingerprints.get(name):
            why.append(f"{name} differs from the value verified on {current.at:%Y-%m-%d}")
            changed.add(name)
    if why:
        missing = required.fields if required.required else tuple(sorted(changed))
        return SdvState(ref, SdvStatus.INVALIDATED, required.required, missing, tuple(why), current)
    missing = tuple(name for name in required.fields if name not in current.fields)
    if required.required and missing:
        return SdvState(ref, SdvStatus.PENDING, True, missing, (), current)
    return SdvState(ref, SdvStatus.VERIFIED, required.required, (), (), current)


@dataclass
class SdvCounts:
    """SDV per subject, site or visit: what the monitor's worklist and the lock report read."""

    required: int = 0
    verified: int = 0
    pending: int = 0
    invalidated: int = 0
    refs: list[RecordRef] = field(default_factory=list)
    """Records still to verify (pending or invalidated)."""

    @property
    def done(self) -> bool:
        return self.pending == 0 and self.invalidated == 0


def tally(states: Iterable[SdvState]) -> SdvCounts:
    """Counts over the records the policy requires; a record verified beyond the policy is
    not counted (nor does its invalidation block anything)."""
    counts = SdvCounts()
    for state in states:
        if not state.required:
            continue
        counts.required += 1
        if state.status is SdvStatus.VERIFIED:
            counts.verified += 1
        elif state.status is SdvStatus.PENDING:
            counts.pending += 1
            counts.refs.append(state.ref)
        else:
            counts.invalidated += 1
            counts.refs.append(state.ref)
    return counts
