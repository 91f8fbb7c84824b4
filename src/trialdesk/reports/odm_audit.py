"""Transactional CDISC ODM 1.3.2 (issue 16, EXP-1): the audit trail as ODM transactions.

Every audited action on a subject becomes one transaction, in the order it was written:
``SubjectData`` > ``StudyEventData`` > ``FormData`` (with its ``AuditRecord``: who, where,
when, the reason for change; and its ``Signature`` when the action was e-signed) >
``ItemGroupData`` > ``ItemData`` with ``TransactionType`` ``Insert`` for a first value and
``Update`` for a later one. A correction's previous value is therefore the value of the
preceding transaction on the same item (ODM 1.3.2 has no "old value" slot; this is how a
transactional file carries history). Actions that are not form data map to forms of their own:
the subject's state and attributes (consent, eligibility, randomization date, discharge,
exits), per-visit status (done or missed, with reason), therapies, criterion confirmations,
the randomization record, CRC cases, data queries; any other kind of record with a subject
(locks, SDV, sign-off, ...) maps to a form named after its entity, so new e-signed actions
need no change here. E-signed actions without a subject (an amendment, a trial unblinding
request) are kept in ``ClinicalData``'s ``AuditRecords`` and ``Signatures``.

One ``MetaDataVersion`` per protocol version, its OID carrying the blinding of the file and a
digest of its content (distinct content, distinct OID); ``EffectiveDate`` is the date the
version took effect. Pure: the service decides what a reader may see (blinding) and passes it
in; nothing here reads the database or a key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trialdesk.reports.exports import odm, odm_bytes, sub, translated

COMMON_EVENT = "COMMON"
RAND_FORM = "randomization"
SUBJECT_FORM = "SUBJECT"
VISIT_FORM = "VISIT_STATUS"
THERAPY_FORM = "THERAPY"
SPONSOR_LOCATION = "LOC.SPONSOR"
LEGAL_REASON = (
    "Electronic signature under 21 CFR Part 11: the signer re-entered their password; "
    "name, time and meaning recorded with the action (SIG-1)"
)
SKIPPED_KEYS = frozenset({"signature", "signatures"})
"""Keys of an entry's values that are not data (the signature becomes a Signature)."""
SYNTHETIC_FORMS = {
    SUBJECT_FORM: "Subject status, consent, eligibility and exit",
    VISIT_FORM: "Visit status (done or missed)",
    THERAPY_FORM: "Therapy",
    "CRITERION": "Criterion confirmation (e-signed)",
    "CRC_CASE": "CRC case",
    "DATA_QUERY": "Data query",
}
ENTITY_FORMS = {"criterion": "CRITERION", "crc_case": "CRC_CASE", "data_query": "DATA_QUERY"}


def oid(*parts: str) -> str:
    return ".".join(re.sub(r"[^A-Za-z0-9_\-]", "_", p) for p in parts)


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class ItemSpec:
    code: str
    label: str
    data_type: str = "text"
    length: int | None = None
    choices: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FormSpec:
    code: str
    name: str
    repeating: bool
    items: tuple[ItemSpec, ...]


@dataclass(frozen=True)
class EventSpec:
    code: str
    name: str
    kind: str
    """``Common`` or ``Scheduled``."""
    forms: tuple[str, ...]


@dataclass(frozen=True)
class VersionSpec:
    """One protocol version as the file's reader may see it."""

    key: str
    """The version's SHA-256: entries name the version they were made under by it."""
    version: str
    name: str
    title: str
    effective: dt.date
    events: tuple[EventSpec, ...]
    forms: tuple[FormSpec, ...]


# --------------------------------------------------------------------------- transactions


@dataclass(frozen=True)
class Signed:
    username: str
    name: str
    meaning: str
    at: str


@dataclass(frozen=True)
class FormPlace:
    form_code: str
    visit_code: str
    seq: int
    repeating: bool


@dataclass(frozen=True)
class AuditedAction:
    """One audit entry as the reader may see it, with the keys that place it."""

    at: str
    actor: str
    action: str
    entity: str
    entity_id: str
    subject: str | None
    site: str | None
    old: Any
    new: Any
    reason: str | None
    version: str
    place: FormPlace | None = None
    """For entries on a saved form: where the form sits."""


@dataclass
class Transaction:
    version: str
    user: str
    at: str
    action: str
    reason: str | None
    source: str
    subject: str | None
    site: str | None
    event: str = COMMON_EVENT
    form: str = SUBJECT_FORM
    repeat: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    """Item code -> new value (None: set to null)."""
    previous: dict[str, Any] = field(default_factory=dict)
    """Item code -> the value before, where the entry recorded it (corrections)."""
    signature: Signed | None = None


def signature_of(new: Any, actor: str, at: str, names: Mapping[str, str]) -> Signed | None:
    """The e-signature an entry records, if any (``new["signature"]``: name, meaning and
    sometimes username and time)."""
    if not isinstance(new, dict) or not isinstance(new.get("signature"), dict):
        return None
    sig = new["signature"]
    username = str(sig.get("username") or actor)
    return Signed(
        username=username,
        name=str(sig.get("name") or names.get(username, username)),
        meaning=str(sig.get("meaning") or ""),
        at=str(sig.get("at") or at),
    )


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not prefix and key in SKIPPED_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        elif isinstance(value, list):
            out[name] = "/".join(str(v) for v in value)
        else:
            out[name] = value
    return out


def to_transaction(a: AuditedAction, names: Mapping[str, str]) -> Transaction | None:
    """The ODM transaction of one audited action; None when it has no place in ODM (no
    subject and no signature, or a form entry whose record is not shown)."""
    signed = signature_of(a.new, a.actor, a.at, names)
    source = f"{a.action} {a.entity} {a.entity_id}"
    t = Transaction(a.version, a.actor, a.at, a.action, a.reason, source, a.subject, a.site)
    t.signature = signed
    new = a.new if isinstance(a.new, dict) else {}
    old = a.old if isinstance(a.old, dict) else {}
    if a.subject is None:
        return t if signed is not None else None
    if a.entity == "form":
        if a.place is None:
            return None
        t.event = a.place.visit_code or COMMON_EVENT
        t.form = a.place.form_code
        t.repeat = str(a.place.seq) if a.place.repeating else None
        if a.action == "correct_data":
            t.values = dict(new)
            t.previous = dict(old)
        else:
            values = new.get("values")
            t.values = {k: v for k, v in (values or {}).items() if v is not None}
        return t
    flat_new, flat_old = _flat(new), _flat(old)
    changed = {k: v for k, v in flat_new.items() if k not in flat_old or flat_old[k] != v}
    t.previous = {k: flat_old[k] for k in changed if k in flat_old}
    if a.entity == "subject" and "visit" in new:
        t.event = str(new["visit"])
        t.form = VISIT_FORM
        changed.pop("visit", None)
    elif a.entity == "subject" and "therapy" in new:
        t.form = THERAPY_FORM
        t.repeat = str(new["therapy"])
        changed.pop("therapy", None)
    elif a.entity == "subject":
        t.form = SUBJECT_FORM
    elif a.entity == "randomization":
        t.form = RAND_FORM
    else:
        t.form = ENTITY_FORMS.get(a.entity, oid(a.entity.upper()))
        t.repeat = a.entity_id
    t.values = changed
    return t


def transactions(actions: Iterable[AuditedAction], names: Mapping[str, str]) -> list[Transaction]:
    return [t for a in actions if (t := to_transaction(a, names)) is not None]


# --------------------------------------------------------------------------- writing


def odm_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _data_type(values: Sequence[Any]) -> str:
    seen = [v for v in values if v is not None]
    if seen and all(isinstance(v, bool) for v in seen):
        return "boolean"
    if seen and all(isinstance(v, int) and not isinstance(v, bool) for v in seen):
        return "integer"
    if seen and all(isinstance(v, int | float) and not isinstance(v, bool) for v in seen):
        return "float"
    if seen and all(isinstance(v, str) and DATE_RE.match(v) for v in seen):
        return "date"
    return "text"


def synthetic_forms(
    txns: Sequence[Transaction], protocol_forms: Iterable[str]
) -> tuple[FormSpec, ...]:
    """Forms for the actions that are not protocol forms, their items as the data has them;
    items of protocol forms the protocol does not define (none expected) are added too."""
    known = set(protocol_forms)
    items: dict[str, dict[str, list[Any]]] = {}
    repeating: dict[str, bool] = {}
    for t in txns:
        if t.form in known:
            continue
        bucket = items.setdefault(t.form, {})
        repeating[t.form] = repeating.get(t.form, False) or t.repeat is not None
        for key, value in t.values.items():
            bucket.setdefault(key, []).append(value)
        for key, value in t.previous.items():
            bucket.setdefault(key, []).append(value)
    return tuple(
        FormSpec(
            code,
            SYNTHETIC_FORMS.get(code, f"{code.replace('_', ' ').capitalize()} record"),
            repeating[code],
            tuple(
                ItemSpec(key, key.replace("_", " "), _data_type(vals))
                for key, vals in sorted(items[code].items())
            ),
        )
        for code in sorted(items)
    )


def metadata_version(
    study: ET.Element, spec: VersionSpec, extra: Sequence[FormSpec], *, blinded: bool
) -> str:
    """Write the MetaDataVersion of one protocol version; returns its OID, which names the
    version, the blinding and a digest of the content."""
    mdv = sub(study, "MetaDataVersion", OID="", Name=f"protocol {spec.version}")
    forms = list(spec.forms) + [f for f in extra if f.code not in {g.code for g in spec.forms}]
    extra_codes = [f.code for f in extra]
    events: list[EventSpec] = []
    for ev in spec.events:
        codes = list(ev.forms)
        if ev.code == COMMON_EVENT:
            codes += [c for c in extra_codes if c != VISIT_FORM and c not in codes]
        elif VISIT_FORM in extra_codes:
            codes.append(VISIT_FORM)
        events.append(EventSpec(ev.code, ev.name, ev.kind, tuple(codes)))
    prot = sub(mdv, "Protocol")
    for order, ev in enumerate(events, start=1):
        sub(
            prot,
            "StudyEventRef",
            StudyEventOID=oid("SE", ev.code),
            OrderNumber=str(order),
            Mandatory="No",
        )
    for ev in events:
        e = sub(mdv, "StudyEventDef", OID=oid("SE", ev.code), Name=ev.name, Repeating="No")
        e.set("Type", ev.kind)
        for order, code in enumerate(ev.forms, start=1):
            sub(e, "FormRef", FormOID=oid("F", code), OrderNumber=str(order), Mandatory="No")
    for f in forms:
        fd = sub(mdv, "FormDef", OID=oid("F", f.code), Name=f.name)
        fd.set("Repeating", "Yes" if f.repeating else "No")
        sub(fd, "ItemGroupRef", ItemGroupOID=oid("IG", f.code), Mandatory="Yes")
    for f in forms:
        ig = sub(mdv, "ItemGroupDef", OID=oid("IG", f.code), Name=f.name, Repeating="No")
        for order, item in enumerate(f.items, start=1):
            sub(
                ig,
                "ItemRef",
                ItemOID=oid("I", f.code, item.code),
                OrderNumber=str(order),
                Mandatory="No",
            )
    for f in forms:
        for item in f.items:
            attrs = {"OID": oid("I", f.code, item.code), "Name": item.label[:200] or item.code}
            attrs["DataType"] = item.data_type
            if item.length:
                attrs["Length"] = str(item.length)
            idef = sub(mdv, "ItemDef", **attrs)
            translated(idef, "Question", item.label or item.code)
            if item.choices:
                sub(idef, "CodeListRef", CodeListOID=oid("CL", f.code, item.code))
    for f in forms:
        for item in f.items:
            if not item.choices:
                continue
            cl = sub(
                mdv, "CodeList", OID=oid("CL", f.code, item.code), Name=item.label, DataType="text"
            )
            for code, label in item.choices:
                translated(sub(cl, "CodeListItem", CodedValue=code), "Decode", label)
    return seal_metadata_version(mdv, spec.version, spec.key, blinded=blinded)


def seal_metadata_version(mdv: ET.Element, version: str, sha256: str, *, blinded: bool) -> str:
    """Give ``mdv`` its OID: protocol version, fingerprint, blinding and a digest of the
    element's content, so two files share an OID only when their metadata is the same."""
    mdv.set("OID", "")
    digest = hashlib.sha256(_canonical(mdv).encode("utf-8")).hexdigest()[:10]
    value = oid("MDV", version, sha256[:12], "blinded" if blinded else "unblinded", digest)
    mdv.set("OID", value)
    return value


def _canonical(el: ET.Element) -> str:
    """The element's content independent of namespace prefixes (ElementTree's prefixes
    depend on what was registered before)."""
    attrs = json.dumps(sorted(el.attrib.items()))
    inner = "".join(_canonical(child) for child in el)
    return f"<{el.tag} {attrs}>{el.text or ''}{inner}</{el.tag}>"


def _audit_record(parent: ET.Element, t: Transaction, loc: str, ident: str | None = None) -> None:
    record = sub(parent, "AuditRecord")
    if ident:
        record.set("ID", ident)
    sub(record, "UserRef", UserOID=oid("USR", t.user))
    sub(record, "LocationRef", LocationOID=loc)
    sub(record, "DateTimeStamp").text = t.at
    if t.reason:
        sub(record, "ReasonForChange").text = t.reason
    sub(record, "SourceID").text = t.source


def signature_def_oid(meaning: str) -> str:
    return "SD." + hashlib.sha256(meaning.encode("utf-8")).hexdigest()[:12]


def _signature(parent: ET.Element, s: Signed, loc: str, ident: str | None = None) -> None:
    el = sub(parent, "Signature")
    if ident:
        el.set("ID", ident)
    sub(el, "UserRef", UserOID=oid("USR", s.username))
    sub(el, "LocationRef", LocationOID=loc)
    sub(el, "SignatureRef", SignatureOID=signature_def_oid(s.meaning))
    sub(el, "DateTimeStamp").text = s.at


@dataclass(frozen=True)
class OdmFile:
    study_code: str
    study_name: str
    created: str
    file_oid: str
    blinded: bool
    versions: Sequence[VersionSpec]
    sites: Mapping[str, str]
    users: Mapping[str, str]


def write_transactional_odm(f: OdmFile, txns: Sequence[Transaction]) -> bytes:
    """The transactional document (see the module docstring)."""
    root = ET.Element(
        odm("ODM"),
        {
            "FileType": "Transactional",
            "Granularity": "All",
            "FileOID": f.file_oid,
            "CreationDateTime": f.created,
            "ODMVersion": "1.3.2",
            "Originator": "trialdesk",
            "Description": (
                "audit trail, blinded export" if f.blinded else "audit trail, unblinded export"
            ),
        },
    )
    study_oid = oid("ST", f.study_code)
    study = sub(root, "Study", OID=study_oid)
    glob = sub(study, "GlobalVariables")
    sub(glob, "StudyName").text = f.study_code
    sub(glob, "StudyDescription").text = f.versions[-1].title if f.versions else f.study_name
    sub(glob, "ProtocolName").text = (
        f"{f.versions[-1].name} {f.versions[-1].version}" if f.versions else f.study_code
    )
    mdv_oids: dict[str, str] = {}
    for spec in f.versions:
        mine = [t for t in txns if t.version == spec.key]
        extra = synthetic_forms(mine, (g.code for g in spec.forms))
        mdv_oids[spec.key] = metadata_version(study, spec, extra, blinded=f.blinded)

    admin = sub(root, "AdminData", StudyOID=study_oid)
    usernames = sorted({t.user for t in txns} | {t.signature.username for t in txns if t.signature})
    signer_names = {t.signature.username: t.signature.name for t in txns if t.signature}
    for username in usernames:
        user = sub(admin, "User", OID=oid("USR", username))
        sub(user, "LoginName").text = username
        full = f.users.get(username) or signer_names.get(username)
        if full:
            sub(user, "FullName").text = full
    locations = [(oid("LOC", code), name, "Site") for code, name in sorted(f.sites.items())]
    locations.append((SPONSOR_LOCATION, f"{f.study_code} sponsor", "Sponsor"))
    for loc_oid, name, loc_kind in locations:
        location = sub(admin, "Location", OID=loc_oid, Name=name, LocationType=loc_kind)
        for spec in f.versions:
            sub(
                location,
                "MetaDataVersionRef",
                StudyOID=study_oid,
                MetaDataVersionOID=mdv_oids[spec.key],
                EffectiveDate=spec.effective.isoformat(),
            )
    meanings = sorted({t.signature.meaning for t in txns if t.signature})
    for meaning in meanings:
        sdef = sub(admin, "SignatureDef", OID=signature_def_oid(meaning), Methodology="Electronic")
        sub(sdef, "Meaning").text = meaning
        sub(sdef, "LegalReason").text = LEGAL_REASON

    seen: set[tuple[str, ...]] = set()
    counter = 0
    run: list[Transaction] = []

    def kind(*key: str) -> str:
        if key in seen:
            return "Update"
        seen.add(key)
        return "Insert"

    def flush() -> None:
        nonlocal counter
        if not run:
            return
        clinical = sub(
            root,
            "ClinicalData",
            StudyOID=study_oid,
            MetaDataVersionOID=mdv_oids[run[0].version],
        )
        study_level = [t for t in run if t.subject is None]
        for t in run:
            if t.subject is None:
                continue
            loc = oid("LOC", t.site or "")
            sd = sub(clinical, "SubjectData", SubjectKey=t.subject)
            sd.set("TransactionType", kind("S", t.subject))
            sub(sd, "SiteRef", LocationOID=loc)
            ev = sub(sd, "StudyEventData", StudyEventOID=oid("SE", t.event))
            ev.set("TransactionType", kind("E", t.subject, t.event))
            form_key = ("F", t.subject, t.event, t.form, t.repeat or "")
            attrs = {"FormOID": oid("F", t.form)}
            if t.repeat is not None:
                attrs["FormRepeatKey"] = t.repeat
            fd = sub(ev, "FormData", **attrs)
            fd.set("TransactionType", kind(*form_key))
            _audit_record(fd, t, loc)
            if t.signature is not None:
                _signature(fd, t.signature, loc)
            items = [
                (k, v)
                for k, v in sorted(t.values.items())
                if v is not None or (*form_key, k) in seen
            ]
            if not items:
                continue
            ig = sub(fd, "ItemGroupData", ItemGroupOID=oid("IG", t.form))
            ig.set("TransactionType", kind("G", *form_key[1:]))
            for key, value in items:
                item = sub(ig, "ItemData", ItemOID=oid("I", t.form, key))
                item.set("TransactionType", kind(*form_key, key))
                if value is None:
                    item.set("IsNull", "Yes")
                else:
                    item.set("Value", odm_value(value))
        if study_level:
            records = sub(clinical, "AuditRecords")
            idents = []
            for t in study_level:
                counter += 1
                idents.append(counter)
                _audit_record(records, t, SPONSOR_LOCATION, f"AR.{counter}")
            signatures = sub(clinical, "Signatures")
            for t, n in zip(study_level, idents, strict=True):
                if t.signature is not None:
                    _signature(signatures, t.signature, SPONSOR_LOCATION, f"SG.{n}")
        run.clear()

    for t in txns:
        if run and run[-1].version != t.version:
            flush()
        run.append(t)
    flush()
    return odm_bytes(root)
