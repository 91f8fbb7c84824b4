"""Death and withdrawal through the protocol's forms, the kinds of withdrawal, and what may
still be recorded after an exit (REC-9, LIFE-4).

An exit keeps everything collected so far (LIFE-4). Records dated on or before the exit date
may still be entered late; after it, a subject who died gets nothing new, a subject lost to
follow-up nothing until found, and a withdrawn subject only the contact forms their kind of
withdrawal allows (vital status by phone, for one who withdrew from visits but not from
contact). Pure, stdlib only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from trialdesk.domain.errors import PreconditionFailed, ValidationFailed


class ExitKind(StrEnum):
    DEATH = "death"
    WITHDRAWAL = "withdrawal"
    LOST = "lost_to_follow_up"


@dataclass(frozen=True)
class WithdrawalKindSpec:
    code: str
    label: str
    contact_allowed: bool
    contact_forms: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ExitFormSpec:
    """The form an exit is recorded on and the fields read from it."""

    form: str
    date_field: str
    reason_field: str | None = None
    kind_field: str | None = None


@dataclass(frozen=True)
class ExitFacts:
    kind: ExitKind
    on: dt.date
    withdrawal: WithdrawalKindSpec | None = None


def withdrawal_kind(kinds: Sequence[WithdrawalKindSpec], code: str | None) -> WithdrawalKindSpec:
    """The protocol's withdrawal kind named ``code``, or one clear refusal listing them."""
    for kind in kinds:
        if kind.code == code:
            return kind
    choices = "; ".join(f"{k.code} ({k.label})" for k in kinds)
    if not code:
        raise ValidationFailed(
            f"say what the subject withdraws from: {choices}", {"kind": "is required"}
        )
    raise ValidationFailed(
        f"unknown withdrawal kind {code!r}; one of: {choices}", {"kind": "unknown"}
    )


def read_exit(
    spec: ExitFormSpec,
    values: Mapping[str, object],
    *,
    kinds: Sequence[WithdrawalKindSpec] = (),
    kind: str | None = None,
) -> tuple[dt.date, str | None, WithdrawalKindSpec | None]:
    """The exit date, reason and (for a withdrawal) kind from the saved form's typed values;
    the kind comes from the form's kind field when the protocol names one, else ``kind``."""
    on = values.get(spec.date_field)
    if not isinstance(on, dt.date) or isinstance(on, dt.datetime):
        raise ValidationFailed(
            f"form {spec.form} needs {spec.date_field}, the exit date", {spec.date_field: "date"}
        )
    reason = values.get(spec.reason_field) if spec.reason_field else None
    chosen: WithdrawalKindSpec | None = None
    if kinds:
        if spec.kind_field is not None:
            from_form = values.get(spec.kind_field)
            if kind is not None and kind != from_form:
                raise ValidationFailed(
                    f"the withdrawal kind is {from_form!r} on the form, not {kind!r}",
                    {"kind": "conflicts with the form"},
                )
            kind = from_form if isinstance(from_form, str) else None
        chosen = withdrawal_kind(kinds, kind)
    return on, (str(reason) if reason is not None else None), chosen


def check_record_after_exit(
    exit: ExitFacts, form: str, on: dt.date | None, *, subject: str
) -> None:
    """May ``form`` dated ``on`` be recorded for a subject who exited? Late entries of what
    happened up to the exit always may; after it, only a withdrawal's contact forms."""
    if on is not None and on <= exit.on:
        return
    when = f" dated {on}" if on is not None else ""
    if exit.kind is ExitKind.DEATH:
        raise PreconditionFailed(
            f"{subject} died on {exit.on}: nothing{when} after that can be recorded",
            reason="subject-died",
        )
    if exit.kind is ExitKind.LOST:
        raise PreconditionFailed(
            f"{subject} was declared lost to follow-up on {exit.on}; record a contact only "
            "once the subject is found again",
            reason="subject-lost",
        )
    kind = exit.withdrawal
    if kind is None or not kind.contact_allowed:
        raise PreconditionFailed(
            f"{subject} withdrew on {exit.on} from any further contact: {form}{when} cannot be "
            "recorded",
            reason="withdrawn-no-contact",
        )
    if form not in kind.contact_forms:
        allowed = ", ".join(sorted(kind.contact_forms)) or "none"
        raise PreconditionFailed(
            f"{subject} withdrew on {exit.on} ({kind.label}); after that only follow-up "
            f"contacts are recorded ({allowed}), not {form}",
            reason="withdrawn-contact-only",
        )


def contact_visits(
    kind: WithdrawalKindSpec, visits: Sequence[tuple[str, Sequence[str]]]
) -> list[str]:
    """Scheduled visits a withdrawn subject's contacts still follow: those whose forms are
    all contact forms of the kind (the flagship's annual contacts Y3..Y5)."""
    if not kind.contact_allowed:
        return []
    return [code for code, forms in visits if forms and set(forms) <= kind.contact_forms]
