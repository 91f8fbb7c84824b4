"""Source-data verification by the monitor (REC-1) and the investigator's sign-off of a form,
a visit or the casebook (REC-2, SIG-1). Neither changes a value, so record locks and the soft
database lock let them through; the hard lock does not (checked here, as their entries are
not in the guard's list of data writes). A later change clears a mark or invalidates a
signature (:mod:`trialdesk.services.records.changes`); the states shown here are also worked
out from the values' fingerprints, so a change by any path shows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from trialdesk.domain.errors import NotFound, ValidationFailed
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.locks import WriteKind
from trialdesk.domain.permissions import Permission
from trialdesk.domain.records import RecordRef, fingerprint
from trialdesk.domain.sdv import (
    SdvMark,
    SdvState,
    SdvStatus,
    mark,
    requirement,
    sdv_state,
    tally,
)
from trialdesk.domain.signoff import (
    DEFAULT_MEANING,
    RecordState,
    Signature,
    SignLevel,
    sign,
    signature_state,
    target,
)
from trialdesk.domain.write_guard import GuardedWrite
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.specs import sdv_policy_spec
from trialdesk.services.access import Actor, require
from trialdesk.services.auth import reauthenticate
from trialdesk.services.common import acting_with, loaded_protocol, subject_in_scope
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import CONCEALED_PROCEDURE_FORM, refuse_concealed
from trialdesk.store.holds import SdvMarkRecord, SignatureRecord
from trialdesk.store.ports import UnitOfWork
from trialdesk.store.records import FormRecord, Subject


def _values(record: FormRecord) -> dict[str, object]:
    """The stored values a mark or signature fingerprints (a concealed record's ciphertext)."""
    if record.form_code == CONCEALED_PROCEDURE_FORM:
        return {"concealed": record.data}
    data = json.loads(record.data)
    return dict(data) if isinstance(data, dict) else {}


def _ref(number: str, record: FormRecord) -> RecordRef:
    return RecordRef(number, record.form_code, record.visit_code, record.seq)


def _states(number: str, records: list[FormRecord]) -> list[RecordState]:
    return [RecordState(_ref(number, r), r.version, fingerprint(_values(r))) for r in records]


# --- SDV -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SdvView:
    """One record's SDV state for the monitor (REC-1)."""

    subject: str
    site: str
    form: str
    visit: str
    seq: int
    status: str
    required: bool
    why: str
    fields: list[str]
    missing: list[str]
    cleared_because: list[str]
    marked_by: str | None
    marked_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SdvSummary:
    """SDV by subject, site and visit: required, verified, pending, invalidated."""

    records: list[SdvView]
    by_subject: dict[str, dict[str, int]] = field(default_factory=dict)
    by_site: dict[str, dict[str, int]] = field(default_factory=dict)
    by_visit: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _site_ordinals(uow: UnitOfWork, study_id: int) -> dict[int, int]:
    """Each subject's place in its site's registration order (1 = first)."""
    subjects = uow.subjects.on_study(study_id, _ALL_STATES, site_ids=None, site_code=None)
    seen: dict[int, int] = {}
    out: dict[int, int] = {}
    for subject, _site in sorted(subjects, key=lambda pair: pair[0].id):
        seen[subject.site_id] = seen.get(subject.site_id, 0) + 1
        out[subject.id] = seen[subject.site_id]
    return out


def _mark_of(row: SdvMarkRecord, ref: RecordRef) -> SdvMark:
    return SdvMark(
        ref=ref,
        fields=tuple(json.loads(row.fields)),
        fingerprints=json.loads(row.fingerprints),
        by=row.marked_by,
        at=row.marked_at,
    )


def record_sdv_states(
    loaded: LoadedProtocol,
    subject: Subject,
    records: list[FormRecord],
    marks: list[SdvMarkRecord],
    ordinal: int,
) -> list[tuple[FormRecord, SdvState, SdvMarkRecord | None]]:
    """Each saved record's SDV state: the newest uncleared mark against the current values
    (a cleared mark shows as invalidated with its reason until a new mark replaces it)."""
    policy = sdv_policy_spec(loaded.protocol)
    out: list[tuple[FormRecord, SdvState, SdvMarkRecord | None]] = []
    for record in records:
        if record.form_code == CONCEALED_PROCEDURE_FORM:
            continue
        ref = _ref(subject.number, record)
        try:
            form_fields = [f.code for f in loaded.protocol.form(record.form_code).fields]
        except KeyError:
            form_fields = []
        need = requirement(
            policy, subject.number, record.form_code, form_fields, site_ordinal=ordinal
        )
        own = [m for m in marks if m.form_record_id == record.id]
        newest = own[-1] if own else None
        values = _values(record)
        if newest is None:
            state = sdv_state(ref, need, None, values)
        elif newest.cleared_at is not None:
            # the stored reason names the change, who made it and why (REC-1)
            state = SdvState(
                ref,
                SdvStatus.INVALIDATED,
                need.required,
                need.fields,
                (newest.cleared_reason or "cleared by a later change",),
                _mark_of(newest, ref),
            )
        else:
            state = sdv_state(ref, need, _mark_of(newest, ref), values)
        out.append((record, state, newest))
    return out


def _sdv_view(site: str, record: FormRecord, state: SdvState, row: SdvMarkRecord | None) -> SdvView:
    why = state.invalidated_by
    return SdvView(
        subject=state.ref.subject,
        site=site,
        form=record.form_code,
        visit=record.visit_code,
        seq=record.seq,
        status=state.status.value,
        required=state.required,
        why="; ".join(why) if why else "",
        fields=list(state.mark.fields) if state.mark else [],
        missing=list(state.missing),
        cleared_because=list(why),
        marked_by=row.marked_by if row else None,
        marked_at=row.marked_at.isoformat() if row else None,
    )


def mark_sdv(
    ctx: ServiceContext,
    actor: Actor,
    *,
    study_id: int,
    number: str,
    form: str,
    visit: str = "",
    seq: int = 1,
    fields: list[str] | None = None,
) -> SdvView:
    """The monitor marks a saved record, or chosen fields of it, verified against source
    (REC-1); audited in the subject's stream with each field's value fingerprint."""
    now = ctx.now()
    with ctx.uow() as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        require(actor, study_id, Permission.SDV_MARK, site_id=subject.site_id)
        act = acting_with(ctx, uow, actor, read, now)
        loaded = act.protocol()
        refuse_concealed(loaded, form, "source-data verification")
        uow.guard.check(study_id, subject.id, GuardedWrite(WriteKind.REVIEW, visit or None, form))
        record = uow.forms.latest(subject.id, form, visit, seq=seq)
        if record is None:
            raise NotFound(f"{RecordRef(number, form, visit, seq).label()} is not saved")
        record_loaded = loaded_protocol(ctx, uow, uow.protocols.get(record.protocol_version_id))
        ordinal = _site_ordinals(uow, study_id).get(subject.id, 1)
        form_fields = [f.code for f in record_loaded.protocol.form(form).fields]
        need = requirement(
            sdv_policy_spec(record_loaded.protocol), number, form, form_fields, site_ordinal=ordinal
        )
        ref = _ref(number, record)
        made = mark(ref, _values_with_blanks(record, form_fields), fields=fields, required=need,
                    by=actor.username, at=now)  # fmt: skip
        row = uow.holds.add_sdv_mark(
            study_id=study_id,
            subject_id=subject.id,
            form_record_id=record.id,
            fields=json.dumps(list(made.fields)),
            fingerprints=json.dumps(dict(made.fingerprints), sort_keys=True),
            marked_by=actor.username,
            marked_at=now,
        )
        act.audit(
            "sdv_mark",
            entity="sdv",
            entity_id=str(row.id),
            new={
                "form": form,
                "visit": visit or None,
                "seq": seq,
                "fields": list(made.fields),
                "fingerprints": dict(made.fingerprints),
            },
        )
        state = sdv_state(ref, need, made, _values(record))
        view = _sdv_view(read.site.code, record, state, row)
        uow.commit()
        return view


def _values_with_blanks(record: FormRecord, form_fields: list[str]) -> dict[str, object]:
    values = _values(record)
    return {name: values.get(name) for name in form_fields} | values


_ALL_STATES = [state.value for state in SubjectState]


def sdv_status(
    ctx: ServiceContext,
    actor: Actor,
    *,
    study_id: int,
    site: str | None = None,
    number: str | None = None,
    visit: str | None = None,
) -> SdvSummary:
    """SDV per record, with counts by subject, site and visit over what the protocol requires
    (REC-1); a site-scoped reader sees its own site only."""
    require(actor, study_id, Permission.SDV_READ)
    with ctx.uow(readonly=True) as uow:
        if number is not None:
            read = subject_in_scope(uow, actor, study_id, number)
            pairs = [(read.subject, read.site)]
        else:
            pairs = list(
                uow.subjects.on_study(
                    study_id, _ALL_STATES, site_ids=actor.site_ids(study_id), site_code=site
                )
            )
        ordinals = _site_ordinals(uow, study_id)
        marks = uow.holds.sdv_marks(study_id=study_id)
        views: list[SdvView] = []
        states_by: dict[str, dict[str, list[SdvState]]] = {"subject": {}, "site": {}, "visit": {}}
        for subject, site_row in pairs:
            loaded = loaded_protocol(ctx, uow, uow.protocols.get(subject.protocol_version_id))
            records = uow.holds.subject_forms(subject.id)
            if visit is not None:
                records = [r for r in records if r.visit_code == visit]
            own = [m for m in marks if m.subject_id == subject.id]
            for record, state, row in record_sdv_states(
                loaded, subject, records, own, ordinals.get(subject.id, 1)
            ):
                views.append(_sdv_view(site_row.code, record, state, row))
                states_by["subject"].setdefault(subject.number, []).append(state)
                states_by["site"].setdefault(site_row.code, []).append(state)
                states_by["visit"].setdefault(record.visit_code or "-", []).append(state)

        def counts(groups: dict[str, list[SdvState]]) -> dict[str, dict[str, int]]:
            out = {}
            for key, states in groups.items():
                c = tally(states)
                out[key] = {
                    "required": c.required,
                    "verified": c.verified,
                    "pending": c.pending,
                    "invalidated": c.invalidated,
                }
            return out

        return SdvSummary(
            records=views,
            by_subject=counts(states_by["subject"]),
            by_site=counts(states_by["site"]),
            by_visit=counts(states_by["visit"]),
        )


# --- investigator sign-off ---------------------------------------------------------------


@dataclass(frozen=True)
class SignatureView:
    id: int
    subject: str
    level: str
    visit: str | None
    form: str | None
    signed_by: str
    signed_name: str
    signed_at: str
    meaning: str
    valid: bool
    invalid_because: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _domain_signature(
    number: str, row: SignatureRecord, records: dict[int, FormRecord]
) -> Signature:
    covered = {
        RecordRef(number, form, visit, seq): (version, print_)
        for form, visit, seq, version, print_ in json.loads(row.covered)
    }
    ref = None
    if row.level == SignLevel.FORM.value and row.form_record_id in records:
        ref = _ref(number, records[row.form_record_id])
    return Signature(
        target=target(SignLevel(row.level), number, visit=row.visit_code, ref=ref),
        signer=row.signed_by,
        printed_name=row.signed_name,
        at=row.signed_at,
        meaning=row.meaning,
        covered=covered,
    )


def signature_views(
    number: str, rows: list[SignatureRecord], records: list[FormRecord]
) -> list[SignatureView]:
    by_id = {r.id: r for r in records}
    states = _states(number, records)
    out = []
    for row in rows:
        current = signature_state(_domain_signature(number, row, by_id), states)
        why = current.reasons()
        if row.invalidated_reason and row.invalidated_reason not in why:
            why = [row.invalidated_reason, *why]
        valid = current.valid and row.invalidated_at is None
        form = by_id[row.form_record_id].form_code if row.form_record_id in by_id else None
        out.append(
            SignatureView(
                id=row.id,
                subject=number,
                level=row.level,
                visit=row.visit_code,
                form=form,
                signed_by=row.signed_by,
                signed_name=row.signed_name,
                signed_at=row.signed_at.isoformat(),
                meaning=row.meaning,
                valid=valid,
                invalid_because=[] if valid else why,
            )
        )
    return out


def sign_records(
    ctx: ServiceContext,
    actor: Actor,
    *,
    study_id: int,
    number: str,
    level: str,
    password: str,
    visit: str | None = None,
    form: str | None = None,
    seq: int = 1,
) -> SignatureView:
    """The investigator e-signs a form record, a visit or the casebook (REC-2, SIG-1): the
    password again, the printed name, the time and the protocol's meaning; each covered
    record's version and fingerprint are kept so a later change shows. Scope and permission
    come before the input (ACC-1)."""
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        require(actor, study_id, Permission.RECORD_SIGN, site_id=read.subject.site_id)
        try:
            sign_level = SignLevel(level)
        except ValueError:
            raise ValidationFailed(
                f"unknown signature level {level!r}; one of form, visit, casebook",
                {"level": "unknown"},
            ) from None
        loaded = loaded_protocol(ctx, uow, read.version)
        meaning = loaded.protocol.sign_off.meaning if loaded.protocol.sign_off else DEFAULT_MEANING
    reauthenticate(ctx, actor, password, meaning=meaning)
    now = ctx.now()
    with ctx.uow() as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        act = acting_with(ctx, uow, actor, read, now)
        uow.guard.check(study_id, subject.id, GuardedWrite(WriteKind.REVIEW, visit, form))
        records = uow.holds.subject_forms(subject.id)
        ref = None
        record_id = None
        if sign_level is SignLevel.FORM:
            if not form:
                raise ValidationFailed("a form signature names the form", {"form": "required"})
            found = uow.forms.latest(subject.id, form, visit or "", seq=seq)
            if found is None:
                raise NotFound(f"{RecordRef(number, form, visit or '', seq).label()} is not saved")
            ref, record_id = _ref(number, found), found.id
        sign_target = target(
            sign_level, number, visit=visit if sign_level is SignLevel.VISIT else None, ref=ref
        )
        signed = sign(
            sign_target,
            _states(number, records),
            signer=actor.username,
            printed_name=actor.full_name,
            at=now,
            meaning=meaning,
        )
        covered = [
            [r.form, r.visit, r.seq, version, print_]
            for r, (version, print_) in signed.covered.items()
        ]
        row = uow.holds.add_signature(
            study_id=study_id,
            subject_id=subject.id,
            level=sign_level.value,
            visit_code=sign_target.visit,
            form_record_id=record_id,
            signed_by=actor.username,
            signed_name=actor.full_name,
            signed_at=now,
            meaning=meaning,
            covered=json.dumps(covered),
        )
        act.audit(
            "sign_records",
            entity="signature",
            entity_id=str(row.id),
            new={
                "level": sign_level.value,
                "target": sign_target.label(),
                "records": len(covered),
                "signature": {
                    "name": actor.full_name,
                    "username": actor.username,
                    "meaning": meaning,
                },
            },
        )
        view = signature_views(number, [row], records)[0]
        uow.commit()
        return view


def subject_signatures(
    ctx: ServiceContext, actor: Actor, *, study_id: int, number: str
) -> list[SignatureView]:
    """The subject's signatures, each valid or with what changed since (REC-2)."""
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        require(actor, study_id, Permission.SUBJECT_READ, site_id=read.subject.site_id)
        rows = uow.holds.signatures(subject_id=read.subject.id)
        return signature_views(number, rows, uow.holds.subject_forms(read.subject.id))
