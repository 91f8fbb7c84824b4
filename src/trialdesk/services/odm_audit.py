"""The transactional ODM file of the ODM export (issue 16, EXP-1, AUD-1, SIG-1): the study's
audit trail with previous values, reasons and e-signatures, as the reader may see it.

Blinding (RAND-6) is the blinded audit projection's (:mod:`trialdesk.services.audit_trail`):
a blinded file has no per-device or supply entry, no digest, no concealed procedure record
and no arm-specific procedure form, times in whole seconds, and no entry id (gaps would count
what was left out). The unblinded file adds the concealed procedure records (decrypted) and
the arm at allocation. :func:`export_odm <trialdesk.services.exports.export_odm>` authorizes
the reader and writes the file; this module only reads and maps.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from trialdesk.domain.errors import NotFound
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.models import FieldType
from trialdesk.reports.odm_audit import (
    COMMON_EVENT,
    AuditedAction,
    EventSpec,
    FormPlace,
    FormSpec,
    ItemSpec,
    OdmFile,
    VersionSpec,
    oid,
    transactions,
    write_transactional_odm,
)
from trialdesk.services.audit_trail import (
    ARM_REVEALING_ENTITIES,
    DIGEST_KEYS,
    VALUELESS_STREAM_PREFIXES,
)
from trialdesk.services.common import loaded_protocol
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import CONCEALED_PROCEDURE_FORM, concealed_procedure
from trialdesk.store.ports import UnitOfWork
from trialdesk.store.records import HistoryEntry, HistoryVersion, StudyHistory

ODM_TYPES = {
    FieldType.INTEGER: "integer",
    FieldType.DECIMAL: "float",
    FieldType.TEXT: "text",
    FieldType.DATE: "date",
    FieldType.TIME: "time",
    FieldType.DATETIME: "datetime",
    FieldType.CHOICE: "text",
    FieldType.BOOLEAN: "boolean",
}
FILE_NAME = "odm_audit.xml"


def hidden_forms(loaded: LoadedProtocol, *, unblinded: bool) -> set[str]:
    """Forms whose very name tells an arm (each arm's procedure form): blinded files leave
    them out."""
    if unblinded:
        return set()
    return {a.procedure_form for a in loaded.protocol.arms if a.procedure_form}


def version_spec(loaded: LoadedProtocol, effective: dt.date, *, unblinded: bool) -> VersionSpec:
    """A protocol version's events and forms as the file's reader may see them."""
    protocol = loaded.protocol
    hidden = hidden_forms(loaded, unblinded=unblinded)
    visit_forms = {code for v in protocol.visits for code in v.forms}
    forms = tuple(
        FormSpec(
            f.code,
            f.name,
            f.repeating,
            tuple(
                ItemSpec(
                    x.code,
                    x.label,
                    ODM_TYPES[x.type],
                    x.max_length if x.type is FieldType.TEXT else None,
                    tuple((c.code, c.label) for c in (x.choices or ()))
                    if x.type is FieldType.CHOICE
                    else (),
                )
                for x in f.fields
            ),
        )
        for f in protocol.forms
        if f.code not in hidden
    )
    events = (
        EventSpec(
            COMMON_EVENT,
            "Subject-level forms",
            "Common",
            tuple(f.code for f in forms if f.code not in visit_forms),
        ),
        *(
            EventSpec(v.code, v.name, "Scheduled", tuple(c for c in v.forms if c not in hidden))
            for v in protocol.visits
        ),
    )
    return VersionSpec(
        loaded.sha256, protocol.version, protocol.name, protocol.title, effective, events, forms
    )


def effective_dates(history: StudyHistory) -> dict[str, dt.date]:
    """The date each signed version took effect: its ``effective_from`` when it has one; the
    first version from the study's first recorded action (or its loading, if earlier)."""
    out: dict[str, dt.date] = {}
    first_entry = min((dt.date.fromisoformat(e.at[:10]) for e in history.entries), default=None)
    for n, v in enumerate(v for v in history.versions if v.status == "signed"):
        if v.effective_from is not None:
            out[v.sha256] = v.effective_from
        elif n == 0 and first_entry is not None:
            out[v.sha256] = min(v.loaded_on, first_entry)
        else:
            out[v.sha256] = v.loaded_on
    return out


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _without_digests(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_digests(v) for k, v in value.items() if k not in DIGEST_KEYS}
    if isinstance(value, list):
        return [_without_digests(v) for v in value]
    return value


def whole_seconds(at: str) -> str:
    """A time to the whole second, its zone kept (the blinded projection's resolution)."""
    head, dot, rest = at.partition(".")
    return head + rest.lstrip("0123456789") if dot else at


def _blinded_times(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("signature"), dict):
        sig = dict(value["signature"])
        if isinstance(sig.get("at"), str):
            sig["at"] = whole_seconds(sig["at"])
        return {**value, "signature": sig}
    return value


def _shown(entry: HistoryEntry, unblinded: bool) -> bool:
    if unblinded:
        return True
    return entry.entity not in ARM_REVEALING_ENTITIES and not entry.stream.startswith(
        VALUELESS_STREAM_PREFIXES
    )


def build_transactional_odm(
    ctx: ServiceContext, uow: UnitOfWork, study_id: int, *, unblinded: bool
) -> bytes:
    """The study's audit trail as a transactional ODM 1.3.2 document (the caller has
    authorized the reader for ``unblinded``)."""
    history = uow.odm_history.study_history(study_id, concealed_form=CONCEALED_PROCEDURE_FORM)
    if history is None:
        raise NotFound(f"study {study_id} not found")
    signed = [v for v in history.versions if v.status == "signed"]
    loaded = {v.sha256: _loaded(ctx, uow, v) for v in signed}
    effective = effective_dates(history)
    specs = [
        version_spec(loaded[v.sha256], effective[v.sha256], unblinded=unblinded) for v in signed
    ]
    by_id = {v.id: v.sha256 for v in history.versions}
    first = signed[0].sha256 if signed else ""
    current: dict[int, str] = {}
    actions: list[AuditedAction] = []
    for entry in history.entries:
        if not _shown(entry, unblinded):
            continue
        subject = history.subjects.get(entry.subject_id) if entry.subject_id else None
        fallback = (
            current.get(subject.id, by_id.get(subject.protocol_version_id, first))
            if subject
            else first
        )
        version = entry.protocol_sha256 if entry.protocol_sha256 in loaded else fallback
        if subject is not None:
            current[subject.id] = version
        old, new = _parsed(entry.old), _parsed(entry.new)
        place: FormPlace | None = None
        if entry.entity == "form":
            place, new = _form_place(ctx, history, entry, new, loaded[version], unblinded)
        if entry.entity == "randomization" and entry.action == "allocate" and unblinded:
            allocation = uow.allocations.for_subject(subject.id) if subject else None
            if allocation is not None and isinstance(new, dict):
                new = {**new, "armcd": ctx.cipher.decrypt(allocation.arm_enc)}
        at = entry.at
        if not unblinded:
            old, new = _without_digests(old), _blinded_times(_without_digests(new))
            at = whole_seconds(at)
        actions.append(
            AuditedAction(
                at=at,
                actor=entry.actor,
                action=entry.action,
                entity=entry.entity,
                entity_id=entry.entity_id,
                subject=subject.number if subject else None,
                site=subject.site_code if subject else None,
                old=old,
                new=new,
                reason=entry.reason,
                version=version,
                place=place,
            )
        )
    now = ctx.now()
    document = OdmFile(
        study_code=history.study_code,
        study_name=history.study_name,
        created=now.isoformat(),
        file_oid=oid("AUDIT", history.study_code, now.strftime("%Y%m%dT%H%M%S")),
        blinded=not unblinded,
        versions=specs,
        sites=history.sites,
        users=history.users,
    )
    return write_transactional_odm(document, transactions(actions, history.users))


def _loaded(ctx: ServiceContext, uow: UnitOfWork, v: HistoryVersion) -> LoadedProtocol:
    return loaded_protocol(ctx, uow, uow.protocols.get(v.id))


@dataclass(frozen=True)
class _Stored:
    data: str


def _form_place(
    ctx: ServiceContext,
    history: StudyHistory,
    entry: HistoryEntry,
    new: Any,
    loaded: LoadedProtocol,
    unblinded: bool,
) -> tuple[FormPlace | None, Any]:
    """Where a form entry's record sits, and its values; a concealed record only for
    unblinded readers (decrypted), an arm's procedure form never for blinded ones."""
    _code, _hash, record_id = entry.entity_id.rpartition("#")
    record = history.forms.get(int(record_id)) if record_id.isdigit() else None
    if record is None:
        return None, new
    code = record.form_code
    if code == CONCEALED_PROCEDURE_FORM:
        if not unblinded or record.data is None:
            return None, new
        code, values = concealed_procedure(ctx, _Stored(record.data))
        new = {"form": code, "values": values, "visit": record.visit_code or None}
    if code in hidden_forms(loaded, unblinded=unblinded):
        return None, new
    form = next((f for f in loaded.protocol.forms if f.code == code), None)
    repeating = bool(form and form.repeating)
    return FormPlace(code, record.visit_code, record.seq, repeating), new
