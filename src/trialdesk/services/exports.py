"""Standard exports (EXP-1): CSV of every table, CDISC ODM 1.3.2, SDTM as SAS XPORT v5.

Blinding (RAND-6) is decided once, at the top of each export: a blinded export never decrypts
anything, drops every encrypted column and every hash, leaves the protocol text (it defines
the arms) and the arm-specific procedure forms out, and carries no arm code or label. Only the
unblinded statistician (holding no blinded role) may ask for ``unblinded=True``; anyone else is
refused with the ``blinded`` code. Monitors, study managers and statisticians may export
blinded.

SDTM, ADaM and their Define-XML are in :mod:`trialdesk.services.submission` (issue 16).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import LargeBinary, Table, select

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.models import FieldType, Form
from trialdesk.reports.csv_cells import write_csv
from trialdesk.reports.exports import (
    odm,
    odm_bytes,
    sub,
    translated,
)
from trialdesk.reports.odm_audit import seal_metadata_version
from trialdesk.services import audit_trail
from trialdesk.services.access import Actor, require
from trialdesk.services.audit_trail import AuditFilter
from trialdesk.services.blinding import may_see_arm_definitions
from trialdesk.services.common import current_protocol_row, protocol_of, study_by_id
from trialdesk.services.context import ServiceContext
from trialdesk.services.devices import DEVICE_USE_TABLES
from trialdesk.services.endpoints import ArmsBlinded
from trialdesk.services.forms import CONCEALED_PROCEDURE_FORM, concealed_procedure
from trialdesk.services.odm_audit import FILE_NAME as ODM_AUDIT_FILE
from trialdesk.services.odm_audit import build_transactional_odm
from trialdesk.store.tables import (
    AuditEntryRow,
    Base,
    FormRecordRow,
    ProtocolVersionRow,
    RandomizationRow,
    RoleGrantRow,
    SiteRow,
    StudyRow,
    SubjectRow,
    VisitRow,
)
from trialdesk.store.uow import UnitOfWork

EXPORT_ROLES = (Role.MONITOR, Role.MANAGER, Role.STATISTICIAN)
SECURITY_COLUMNS = frozenset({"password_hash", "token_hash", "csrf_token"})
BLINDED_NOTE = "withheld: blinded export"


@dataclass(frozen=True)
class ExportResult:
    kind: str
    out_dir: str
    blinded: bool
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "out_dir": self.out_dir,
            "blinded": self.blinded,
            "files": list(self.files),
            "notes": list(self.notes),
        }


def _authorize(actor: Actor, study_id: int, unblinded: bool, what: str) -> None:
    require(actor, study_id, EXPORT_ROLES, action=what)
    if unblinded and not (
        actor.has(study_id, [Role.STATISTICIAN]) and may_see_arm_definitions(actor, study_id)
    ):
        raise ArmsBlinded(
            f"an unblinded export is for the unblinded statistician only; {actor.username} "
            "may export blinded data"
        )


def _out(out_dir: Path) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValidationFailed(f"{out_dir} is not a directory", {"out": "not a directory"})
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValidationFailed(
            f"{out_dir} is not empty; export into a new or empty directory",
            {"out": "not empty"},
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _procedure_forms(loaded: LoadedProtocol) -> set[str]:
    return {a.procedure_form for a in loaded.protocol.arms if a.procedure_form}


# --------------------------------------------------------------------------- CSV


def _study_rows(uow: UnitOfWork, table: Table, study_id: int) -> list[dict[str, Any]] | None:
    """This study's rows of ``table``; None for a table this export does not know how to scope
    (it is then left out rather than risk another study's data)."""
    subjects = select(SubjectRow.id).where(SubjectRow.study_id == study_id)
    users = select(RoleGrantRow.user_id).where(RoleGrantRow.study_id == study_id)
    cols = table.c
    query = select(table)
    if table.name == "studies":
        query = query.where(cols.id == study_id)
    elif table.name == "users":
        query = query.where(cols.id.in_(users))
    elif table.name == "auth_tokens":
        query = query.where(cols.user_id.in_(users))
    elif table.name == "audit_heads":
        streams = select(AuditEntryRow.stream).where(AuditEntryRow.study_id == study_id)
        query = query.where(cols.stream.in_(streams))
    elif "study_id" in cols:
        query = query.where(cols.study_id == study_id)
    elif "subject_id" in cols:
        query = query.where(cols.subject_id.in_(subjects))
    elif "list_id" in cols:
        from trialdesk.store.tables import AllocationListRow

        lists = select(AllocationListRow.id).where(AllocationListRow.study_id == study_id)
        query = query.where(cols.list_id.in_(lists))
    else:
        return None
    return [dict(row) for row in uow.session.execute(query.order_by(*table.primary_key)).mappings()]


BLINDED_DROPPED_TABLES = frozenset({*DEVICE_USE_TABLES, "audit_heads", "audit_entries"})
"""Left out of a blinded CSV export as tables: per-device records (device use tells the arm),
the chain heads (hashes over values the export blanks); the audit trail is written from its
blinded projection instead (services/audit_trail.py)."""
BLINDED_DROPPED_COLUMNS = {
    "protocol_versions": {"text"},  # the protocol text defines the arms
    "allocation_lists": {"fingerprint"},  # a checkable digest of the concealed list
    "randomizations": {"idempotency_key"},  # a caller's retry key, scoped to its maker
}


def _blinded_value(value: object) -> object:
    """Times in whole seconds: sub-second gaps between the records of one action would tell
    how long the server worked on it, and that work differs by arm (RAND-6)."""
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0)
    return value


def export_csv(
    ctx: ServiceContext, actor: Actor, study_id: int, out_dir: Path, *, unblinded: bool = False
) -> ExportResult:
    """One CSV per table (EXP-1), every cell through the formula-safe writer. Blinded: no
    encrypted column, no hash or digest, no protocol text, no concealed procedure record, no
    per-device record, the audit trail as its blinded projection, times in whole seconds.
    Unblinded: randomizations gain the decrypted ``arm``, the concealed procedure records
    their real form and values; the export itself is an audited disclosure."""
    _authorize(actor, study_id, unblinded, "export csv")
    out = _out(out_dir)
    files: list[str] = []
    skipped: list[str] = []
    with ctx.uow(readonly=True) as uow:
        for table in Base.metadata.sorted_tables:
            if not unblinded and table.name in BLINDED_DROPPED_TABLES:
                continue
            if table.name == "audit_entries":
                continue  # written below from the projection, with the users' security log
            rows = _study_rows(uow, table, study_id)
            if rows is None:
                skipped.append(table.name)
                continue
            drop = {
                c.name
                for c in table.columns
                if isinstance(c.type, LargeBinary) or c.name in SECURITY_COLUMNS
            }
            if not unblinded:
                drop |= BLINDED_DROPPED_COLUMNS.get(table.name, set())
            names = [c.name for c in table.columns if c.name not in drop]
            if unblinded and table.name == "randomizations":
                names.append("arm")
            for row in rows:
                if table.name == "randomizations" and unblinded:
                    row["arm"] = ctx.cipher.decrypt(row["arm_enc"])
                if table.name == "form_records" and row["form_code"] == CONCEALED_PROCEDURE_FORM:
                    if unblinded:
                        record = uow.session.get(FormRecordRow, row["id"])
                        assert record is not None
                        form, values = concealed_procedure(ctx, record)
                        row["form_code"] = form
                        row["data"] = json.dumps(values, sort_keys=True)
                    else:
                        row["data"] = ""
            shown = (
                ([row.get(n) for n in names] for row in rows)
                if unblinded
                else ([_blinded_value(row.get(n)) for n in names] for row in rows)
            )
            write_csv(out / f"{table.name}.csv", names, shown)
            files.append(f"{table.name}.csv")
        entries = list(
            audit_trail.study_entries(uow, study_id, AuditFilter(), blinded=not unblinded)
        )
        header, audit_rows = audit_trail.csv_rows(entries, blinded=not unblinded)
        write_csv(out / "audit_entries.csv", header, audit_rows)
        files.append("audit_entries.csv")
    files.sort()
    if unblinded:
        audit_trail.record_disclosure(
            ctx, actor, study_id, "export_csv", what="csv", detail={"files": len(files)}
        )
    notes = (
        []
        if unblinded
        else [
            "blinded export: no arm, no encrypted column, no hash or digest, no protocol "
            "text, no per-device records (" + ", ".join(DEVICE_USE_TABLES) + ": device use "
            "tells the arm); the audit trail without per-device entries, supply values or "
            "chain values; times in whole seconds"
        ]
    )
    if skipped:
        notes.append(f"tables not scoped to a study, left out: {', '.join(skipped)}")
    return ExportResult("csv", str(out), not unblinded, files, notes)


# --------------------------------------------------------------------------- shared reads


@dataclass
class _Subject:
    row: SubjectRow
    site: SiteRow
    rand: RandomizationRow | None
    forms: list[FormRecordRow]
    visits: list[VisitRow]


@dataclass
class _Snapshot:
    study: StudyRow
    loaded: LoadedProtocol
    protocol_row: ProtocolVersionRow
    subjects: list[_Subject]
    audits: list[AuditEntryRow]


def _snapshot(ctx: ServiceContext, uow: UnitOfWork, study_id: int) -> _Snapshot:
    study = study_by_id(uow, study_id)
    row = current_protocol_row(uow, study_id)
    loaded = protocol_of(ctx, row)
    subjects: list[_Subject] = []
    for subject in uow.session.scalars(
        select(SubjectRow).where(SubjectRow.study_id == study_id).order_by(SubjectRow.number)
    ):
        site = uow.session.get(SiteRow, subject.site_id)
        assert site is not None
        rand = uow.session.scalars(
            select(RandomizationRow).where(RandomizationRow.subject_id == subject.id)
        ).one_or_none()
        forms = list(
            uow.session.scalars(
                select(FormRecordRow)
                .where(FormRecordRow.subject_id == subject.id)
                .order_by(FormRecordRow.visit_code, FormRecordRow.form_code, FormRecordRow.seq)
            )
        )
        visits = list(
            uow.session.scalars(select(VisitRow).where(VisitRow.subject_id == subject.id))
        )
        subjects.append(_Subject(subject, site, rand, forms, visits))
    audits = list(
        uow.session.scalars(
            select(AuditEntryRow)
            .where(AuditEntryRow.study_id == study_id, AuditEntryRow.entity == "form")
            .order_by(AuditEntryRow.id)
        )
    )
    return _Snapshot(study, loaded, row, subjects, audits)


def _form_values(
    ctx: ServiceContext, record: FormRecordRow, unblinded: bool
) -> tuple[str, dict[str, Any]] | None:
    """The form code and values of a record; concealed records only when unblinded."""
    if record.form_code == CONCEALED_PROCEDURE_FORM:
        if not unblinded:
            return None
        return concealed_procedure(ctx, record)
    return record.form_code, dict(json.loads(record.data))


# --------------------------------------------------------------------------- ODM

COMMON_EVENT = "COMMON"
RAND_FORM = "randomization"


def _oid(*parts: str) -> str:
    return ".".join(re.sub(r"[^A-Za-z0-9_\-]", "_", p) for p in parts)


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


def _odm_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def build_odm(ctx: ServiceContext, snap: _Snapshot, *, unblinded: bool) -> bytes:
    """The ODM 1.3.2 snapshot: metadata from the protocol, clinical data with audit records."""
    protocol = snap.loaded.protocol
    hidden = set() if unblinded else _procedure_forms(snap.loaded)
    forms = [f for f in protocol.forms if f.code not in hidden]
    visit_forms = {code for v in protocol.visits for code in v.forms}
    study_oid = _oid("ST", snap.study.code)
    now = ctx.now().isoformat()
    stamp = _stamp_for(unblinded)
    root = ET.Element(
        odm("ODM"),
        {
            "FileType": "Snapshot",
            "FileOID": _oid("EXPORT", snap.study.code, ctx.now().strftime("%Y%m%dT%H%M%S")),
            "CreationDateTime": now,
            "ODMVersion": "1.3.2",
            "Originator": "trialdesk",
            "Description": "blinded export" if not unblinded else "unblinded export",
        },
    )
    study = sub(root, "Study", OID=study_oid)
    glob = sub(study, "GlobalVariables")
    sub(glob, "StudyName").text = snap.study.code
    sub(glob, "StudyDescription").text = protocol.title
    sub(glob, "ProtocolName").text = f"{protocol.name} {protocol.version}"
    mdv = sub(study, "MetaDataVersion", OID="", Name=f"protocol {protocol.version}")
    events: list[tuple[str, str, str, list[str]]] = [
        (
            COMMON_EVENT,
            "Subject-level forms",
            "Common",
            [RAND_FORM] + [f.code for f in forms if f.code not in visit_forms],
        )
    ]
    events += [(v.code, v.name, "Scheduled", list(v.forms)) for v in protocol.visits]
    prot = sub(mdv, "Protocol")
    for order, (code, _name, _kind, _forms) in enumerate(events, start=1):
        sub(
            prot,
            "StudyEventRef",
            StudyEventOID=_oid("SE", code),
            OrderNumber=str(order),
            Mandatory="No",
        )
    for code, name, kind, codes in events:
        ev = sub(
            mdv,
            "StudyEventDef",
            OID=_oid("SE", code),
            Name=name,
            Repeating="No",
            Type=kind,
        )
        for order, fc in enumerate(codes, start=1):
            sub(ev, "FormRef", FormOID=_oid("F", fc), OrderNumber=str(order), Mandatory="No")
    rand_items = [("number", "Randomization number", "text"), ("date", "Randomized on", "date")]
    if unblinded:
        rand_items.append(("armcd", "Arm code", "text"))
    all_forms: list[tuple[str, str, bool]] = [(RAND_FORM, "Randomization", False)]
    all_forms += [(f.code, f.name, f.repeating) for f in forms]
    for code, name, repeating in all_forms:
        fd = sub(mdv, "FormDef", OID=_oid("F", code), Name=name, Repeating=_yes(repeating))
        sub(fd, "ItemGroupRef", ItemGroupOID=_oid("IG", code), Mandatory="Yes")
    by_code = {f.code: f for f in forms}
    for code, name, _rep in all_forms:
        ig = sub(mdv, "ItemGroupDef", OID=_oid("IG", code), Name=name, Repeating="No")
        fields = (
            [(c, lbl) for c, lbl, _t in rand_items]
            if code == RAND_FORM
            else [(f.code, f.label) for f in by_code[code].fields]
        )
        for order, (fc, _lbl) in enumerate(fields, start=1):
            sub(ig, "ItemRef", ItemOID=_oid("I", code, fc), OrderNumber=str(order), Mandatory="No")
    for c, lbl, kind in rand_items:
        item = sub(mdv, "ItemDef", OID=_oid("I", RAND_FORM, c), Name=lbl, DataType=kind)
        translated(item, "Question", lbl)
        if c == "armcd":
            sub(item, "CodeListRef", CodeListOID=_oid("CL", RAND_FORM, c))
    for form in forms:
        _item_defs(mdv, form)
    if unblinded:
        cl = sub(mdv, "CodeList", OID=_oid("CL", RAND_FORM, "armcd"), Name="Arm", DataType="text")
        for arm in protocol.arms:
            translated(sub(cl, "CodeListItem", CodedValue=arm.code), "Decode", arm.label)
    for form in forms:
        for f in form.fields:
            if f.type is FieldType.CHOICE and f.choices:
                cl = sub(
                    mdv,
                    "CodeList",
                    OID=_oid("CL", form.code, f.code),
                    Name=f.label,
                    DataType="text",
                )
                for choice in f.choices:
                    item = sub(cl, "CodeListItem", CodedValue=choice.code)
                    translated(item, "Decode", choice.label)

    # issue 16 (x16b): distinct content, distinct OID (blinding and a digest of the content)
    mdv_oid = seal_metadata_version(
        mdv, protocol.version, snap.loaded.sha256, blinded=not unblinded
    )
    admin = sub(root, "AdminData", StudyOID=study_oid)
    users = sorted(
        {a.actor for a in snap.audits} | {f.created_by for s in snap.subjects for f in s.forms}
    )
    for user in users:
        u = sub(admin, "User", OID=_oid("USR", user))
        sub(u, "LoginName").text = user
    sites = sorted({s.site.code: s.site for s in snap.subjects}.items())
    for code, site in sites:
        location = sub(
            admin, "Location", OID=_oid("LOC", code), Name=site.name, LocationType="Site"
        )
        sub(
            location,
            "MetaDataVersionRef",
            StudyOID=study_oid,
            MetaDataVersionOID=mdv_oid,
            EffectiveDate=_effective_date(snap).isoformat(),
        )

    audits_by_entity: dict[str, list[AuditEntryRow]] = {}
    for entry in snap.audits:
        audits_by_entity.setdefault(entry.entity_id, []).append(entry)
    clinical = sub(root, "ClinicalData", StudyOID=study_oid, MetaDataVersionOID=mdv_oid)
    for subj in snap.subjects:
        sd = sub(clinical, "SubjectData", SubjectKey=subj.row.number)
        sub(sd, "SiteRef", LocationOID=_oid("LOC", subj.site.code))
        loc = _oid("LOC", subj.site.code)
        grouped: dict[str, list[tuple[FormRecordRow, str, dict[str, Any]]]] = {}
        for record in subj.forms:
            got = _form_values(ctx, record, unblinded)
            if got is None or got[0] in hidden or got[0] not in by_code:
                continue
            event = record.visit_code or COMMON_EVENT
            grouped.setdefault(event, []).append((record, got[0], got[1]))
        if subj.rand is not None:
            ev = sub(sd, "StudyEventData", StudyEventOID=_oid("SE", COMMON_EVENT))
            fdata = sub(ev, "FormData", FormOID=_oid("F", RAND_FORM))
            _audit(
                fdata,
                subj.rand.randomized_by,
                loc,
                stamp(subj.rand.randomized_at.isoformat()),
                None,
            )
            ig = sub(fdata, "ItemGroupData", ItemGroupOID=_oid("IG", RAND_FORM))
            values = {"number": subj.rand.number, "date": subj.rand.randomized_on.isoformat()}
            if unblinded:
                values["armcd"] = ctx.cipher.decrypt(subj.rand.arm_enc)
            for key, value in values.items():
                sub(ig, "ItemData", ItemOID=_oid("I", RAND_FORM, key), Value=value)
            common = ev
        else:
            common = None
        for event in [COMMON_EVENT] + [v.code for v in protocol.visits]:
            records = grouped.get(event)
            if not records:
                continue
            if event == COMMON_EVENT and common is not None:
                ev = common
            else:
                ev = sub(sd, "StudyEventData", StudyEventOID=_oid("SE", event))
            for record, code, values in records:
                attrs = {"FormOID": _oid("F", code)}
                if by_code[code].repeating:
                    attrs["FormRepeatKey"] = str(record.seq)
                fdata = sub(ev, "FormData", **attrs)
                entries = audits_by_entity.get(f"{record.form_code}#{record.id}", [])
                created = entries[0] if entries else None
                _audit(
                    fdata,
                    created.actor if created else record.created_by,
                    loc,
                    stamp(created.at if created else record.created_at.isoformat()),
                    None,
                )
                ig = sub(fdata, "ItemGroupData", ItemGroupOID=_oid("IG", code))
                for f in by_code[code].fields:
                    if values.get(f.code) is None:
                        continue
                    item = sub(
                        ig,
                        "ItemData",
                        ItemOID=_oid("I", code, f.code),
                        Value=_odm_value(values[f.code]),
                    )
                    change = _last_change(entries, f.code)
                    if change is not None:
                        _audit(item, change.actor, loc, stamp(change.at), change.reason)
    return odm_bytes(root)


def _effective_date(snap: _Snapshot) -> dt.date:
    """The date the exported protocol version took effect (issue 16): its ``effective_from``,
    else (the first version) the earlier of its loading and the study's first data."""
    row = snap.protocol_row
    if row.effective_from is not None:
        return row.effective_from
    firsts = [s.row.registered_on for s in snap.subjects]
    firsts += [dt.date.fromisoformat(a.at[:10]) for a in snap.audits]
    return min([row.loaded_at.date(), *firsts])


def _stamp_for(unblinded: bool) -> Callable[[str], str]:
    """ODM audit times: as stored for the unblinded, whole seconds for blinded readers (the
    blinded audit projection's resolution, services/audit_trail.py)."""
    if unblinded:
        return lambda at: at
    return _whole_seconds


def _whole_seconds(at: str) -> str:
    head, dot, rest = at.partition(".")
    if not dot:
        return at
    zone = rest.lstrip("0123456789")
    return head + zone


def _yes(flag: bool) -> str:
    return "Yes" if flag else "No"


def _item_defs(mdv: ET.Element, form: Form) -> None:
    for f in form.fields:
        attrs = {
            "OID": _oid("I", form.code, f.code),
            "Name": f.label,
            "DataType": ODM_TYPES[f.type],
        }
        if f.type is FieldType.TEXT and f.max_length:
            attrs["Length"] = str(f.max_length)
        item = sub(mdv, "ItemDef", **attrs)
        translated(item, "Question", f.label)
        if f.type is FieldType.CHOICE and f.choices:
            sub(item, "CodeListRef", CodeListOID=_oid("CL", form.code, f.code))


def _last_change(entries: Sequence[AuditEntryRow], field_code: str) -> AuditEntryRow | None:
    for entry in reversed(entries):
        if entry.action == "correct_data" and field_code in json.loads(entry.new or "{}"):
            return entry
    return None


def _audit(parent: ET.Element, user: str, loc: str, at: str, reason: str | None) -> None:
    record = sub(parent, "AuditRecord")
    sub(record, "UserRef", UserOID=_oid("USR", user))
    sub(record, "LocationRef", LocationOID=loc)
    sub(record, "DateTimeStamp").text = at
    if reason:
        sub(record, "ReasonForChange").text = reason


def export_odm(
    ctx: ServiceContext, actor: Actor, study_id: int, out_dir: Path, *, unblinded: bool = False
) -> ExportResult:
    """The study as one CDISC ODM 1.3.2 snapshot, ``odm.xml`` (EXP-1)."""
    _authorize(actor, study_id, unblinded, "export odm")
    out = _out(out_dir)
    with ctx.uow(readonly=True) as uow:
        document = build_odm(ctx, _snapshot(ctx, uow, study_id), unblinded=unblinded)
        # issue 16 (x16b): the audit trail as a transactional ODM file beside the snapshot
        transactional = build_transactional_odm(ctx, uow, study_id, unblinded=unblinded)
    (out / "odm.xml").write_bytes(document)
    (out / ODM_AUDIT_FILE).write_bytes(transactional)
    if unblinded:
        audit_trail.record_disclosure(ctx, actor, study_id, "export_odm", what="odm")
    notes = (
        []
        if unblinded
        else [
            "blinded export: no arm, no arm-specific procedure form; the audit trail "
            f"({ODM_AUDIT_FILE}) as the blinded audit projection"
        ]
    )
    return ExportResult("odm", str(out), not unblinded, ["odm.xml", ODM_AUDIT_FILE], notes)


# --------------------------------------------------------------------------- SDTM


def export_sdtm(
    ctx: ServiceContext, actor: Actor, study_id: int, out_dir: Path, *, unblinded: bool = False
) -> ExportResult:
    """SDTM with Define-XML 2.1: :func:`trialdesk.services.submission.export_sdtm` (issue 16)."""
    from trialdesk.services.submission import export_sdtm as submission_sdtm

    return submission_sdtm(ctx, actor, study_id, out_dir, unblinded=unblinded)
