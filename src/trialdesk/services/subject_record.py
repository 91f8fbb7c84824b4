"""What the subject page shows about a record beyond its state (issue 14): the eligibility
checklist (every criterion with its outcome, the value that decided it and the form it came
from) and the status of each form (not started, incomplete, complete, has open query,
corrected). Read-only; permissions and site scope as for reading the subject."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace

from trialdesk.domain.eligibility import CriterionStatus
from trialdesk.domain.errors import NotFound
from trialdesk.domain.permissions import Permission
from trialdesk.protocol.models import Gate, Protocol
from trialdesk.services.access import Actor, require
from trialdesk.services.blinding import may_see_arm
from trialdesk.services.common import loaded_protocol, site_today, subject_in_scope
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import (
    CONCEALED_PROCEDURE_FORM,
    concealed_form_codes,
    refuse_concealed,
    subject_form_values,
)
from trialdesk.services.screening import eligibility, field_label
from trialdesk.store.records import DataQuery, FormRecord


@dataclass(frozen=True)
class Evidence:
    """One value a criterion read: its label, the value as entered, the form's name."""

    label: str
    value: str
    form: str
    form_code: str


@dataclass(frozen=True)
class ChecklistRow:
    id: str
    kind: str
    text: str
    gate: str
    outcome: str
    """met | not met | missing | awaiting signature"""
    evidence: list[Evidence] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Human labels ("Age (years), form Demographics") of values not entered yet."""
    signature: str | None = None
    """The investigator's signed meaning, for a signed criterion."""
    signed_by: str | None = None
    signed_at: dt.datetime | None = None


OUTCOME_WORDS = {
    CriterionStatus.MET: "met",
    CriterionStatus.NOT_MET: "not met",
    CriterionStatus.AWAITING_DATA: "missing",
    CriterionStatus.AWAITING_CONFIRMATION: "awaiting signature",
}


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def eligibility_checklist(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, *, gate: Gate = Gate.ECHO
) -> list[ChecklistRow]:
    """Every criterion of ``gate`` with its outcome now, the values that decided it and the
    forms they came from (ELIG-1), for the investigator to read before completing screening."""
    with ctx.uow(readonly=True) as uow:
        subject = subject_in_scope(uow, actor, study_id, number).subject
        require(actor, study_id, Permission.ELIGIBILITY_READ, site_id=subject.site_id)
        loaded = loaded_protocol(ctx, uow, uow.protocols.get(subject.protocol_version_id))
        result = eligibility(ctx, uow, subject, gate)
        values = subject_form_values(uow, ctx, subject.id)
        signed = {
            cid: row
            for cid in uow.confirmations.for_subject(subject.id)
            if (row := uow.confirmations.get(subject.id, cid)) is not None
        }
    rows: list[ChecklistRow] = []
    for outcome in result.outcomes:
        evidence = []
        for dotted in outcome.fields:
            form_code, _, name = dotted.partition(".")
            value = values.get(form_code, {}).get(name)
            if value is None:
                continue
            form = loaded.protocol.form(form_code)
            label = next((f.label for f in form.fields if f.code == name), name)
            evidence.append(Evidence(label, _shown(value), form.name, form_code))
        confirmation = signed.get(outcome.id)
        rows.append(
            ChecklistRow(
                id=outcome.id,
                kind=outcome.kind,
                text=outcome.text,
                gate=outcome.gate,
                outcome=OUTCOME_WORDS[outcome.status],
                evidence=evidence,
                missing=[field_label(loaded, f) for f in outcome.missing],
                signature=confirmation.meaning if confirmation else None,
                signed_by=confirmation.signed_name if confirmation else None,
                signed_at=confirmation.signed_at if confirmation else None,
            )
        )
    return rows


@dataclass(frozen=True)
class FormStatus:
    """One form instance of the subject: where it is entered and what state it is in."""

    form_code: str
    name: str
    visit_code: str
    """"" for screening and procedure-day forms."""
    status: str
    """not started | incomplete | complete | has open query | corrected"""
    seq: int = 1
    open_queries: int = 0
    stage: str = ""
    """Where the form is entered: screening, procedure day or the visit's code."""


def form_statuses(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str
) -> list[FormStatus]:
    """The status of each screening, procedure-day and visit form of the subject (DATA-1,
    DATA-2): not started, incomplete (a required value empty), complete, has open query (an
    open or answered query on it), corrected (changed after saving, with a reason)."""
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        loaded = loaded_protocol(ctx, uow, read.version)
        concealed = concealed_form_codes(loaded) | {CONCEALED_PROCEDURE_FORM}
        visits = {v.visit_code: v for v in uow.visits.for_subject(subject.id)}
        queries = [
            q
            for q, s, _site in uow.queries.listing(
                study_id,
                statuses=("open", "answered"),
                site_id=subject.site_id,
                site_ids=None,
            )
            if s.id == subject.id
        ]
        saved = {
            (r.form_code, r.visit_code, r.seq): r
            for code in ["", *visits]
            for r in uow.forms.for_subject(subject.id, visit_code=code)
        }
    protocol = loaded.protocol
    procedure_day = set(protocol.screening.anatomy_forms)
    slots: list[tuple[str, str]] = [(c, "") for c in protocol.screening.forms]
    slots += [(c, "") for c in protocol.screening.anatomy_forms]
    for visit in protocol.visits:
        row = visits.get(visit.code)
        if row is not None and row.status == "done":
            slots += [(c, visit.code) for c in visit.forms]
    out: list[FormStatus] = []
    seen: set[tuple[str, str, int]] = set()
    for form_code, visit_code in slots:
        out += _statuses(protocol, saved, queries, form_code, visit_code, seen)
    for (form_code, visit_code, seq), _record in sorted(saved.items()):
        if (form_code, visit_code, seq) not in seen and form_code not in concealed:
            out += _statuses(protocol, saved, queries, form_code, visit_code, seen, seq=seq)
    return [replace(f, stage=_stage(f, protocol, procedure_day)) for f in out]


def _stage(status: FormStatus, protocol: Protocol, procedure_day: set[str]) -> str:
    if status.visit_code:
        return status.visit_code
    if status.form_code in procedure_day:
        return "procedure day"
    if status.form_code in protocol.screening.forms:
        return "screening"
    return "any time"


def _statuses(
    protocol: Protocol,
    saved: dict[tuple[str, str, int], FormRecord],
    queries: list[DataQuery],
    form_code: str,
    visit_code: str,
    seen: set[tuple[str, str, int]],
    *,
    seq: int | None = None,
) -> list[FormStatus]:
    form = protocol.form(form_code)
    keys = [k for k in saved if k[0] == form_code and k[1] == visit_code]
    if seq is not None:
        keys = [k for k in keys if k[2] == seq]
    if not keys:
        return [FormStatus(form_code, form.name, visit_code, "not started")]
    out = []
    for key in sorted(keys):
        seen.add(key)
        record = saved[key]
        data = json.loads(record.data)
        open_count = sum(1 for q in queries if q.form_record_id == record.id)
        if open_count:
            status = "has open query"
        elif record.version > 1:
            status = "corrected"
        elif any(f.required and data.get(f.code) in (None, "") for f in form.fields):
            status = "incomplete"
        else:
            status = "complete"
        out.append(FormStatus(form_code, form.name, visit_code, status, key[2], open_count))
    return out


@dataclass(frozen=True)
class SavedForm:
    """A saved form instance as entered (raw values, as the entry form shows them)."""

    form_code: str
    name: str
    visit_code: str
    seq: int
    values: dict[str, object]
    saved_at: str
    saved_by: str
    corrected: bool


def saved_form(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    form_code: str,
    visit_code: str = "",
    seq: int | None = None,
) -> SavedForm | None:
    """The latest saved values of one form of the subject, or None when not saved (DATA-1).
    An index procedure form is never read here: its name and values would tell the arm
    (RAND-6), so it is refused the same way whether saved or not."""
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        refuse_concealed(loaded_protocol(ctx, uow, read.version), form_code, "reading it")
        record = uow.forms.latest(read.subject.id, form_code, visit_code, seq=seq)
        if record is None:
            return None
        loaded = loaded_protocol(ctx, uow, uow.protocols.get(record.protocol_version_id))
    return SavedForm(
        form_code=form_code,
        name=loaded.protocol.form(form_code).name,
        visit_code=visit_code,
        seq=record.seq,
        values=dict(json.loads(record.data)),
        saved_at=record.created_at.isoformat(timespec="minutes"),
        saved_by=record.created_by,
        corrected=record.version > 1,
    )


@dataclass(frozen=True)
class StoredRandomization:
    """The stored randomization of a subject, re-read (reload-safe); the arm only when the
    blinding rule allows it (RAND-6: the implanting team of the site, for the procedure)."""

    subject: str
    randomization_number: str
    randomized_on: str
    arm: str | None = None
    arm_label: str | None = None


def stored_randomization(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str
) -> StoredRandomization:
    """The result page of a randomization, as a GET of what is stored (issue 14)."""
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        rand = read.allocation
        if rand is None:
            raise NotFound(f"subject {number} is not randomized")
        subject = read.subject
        arm = label = None
        if may_see_arm(
            actor,
            study_id,
            subject.site_id,
            subject_unblinded=subject.unblinded_on is not None,
            for_procedure=True,
            trial_unblinded=read.trial_unblinded,
        ):
            arm = ctx.cipher.decrypt(rand.arm_enc)
            label = loaded_protocol(ctx, uow, read.version).protocol.arm(arm).label
    return StoredRandomization(
        subject=subject.number,
        randomization_number=rand.number,
        randomized_on=rand.randomized_on.isoformat(),
        arm=arm,
        arm_label=label,
    )


def subject_today(ctx: ServiceContext, actor: Actor, study_id: int, number: str) -> dt.date:
    """Today at the subject's site (its time zone): windows open and close by it."""
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        return site_today(read.site, ctx.now())
