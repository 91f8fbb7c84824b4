"""The transactional ODM writer on its own (issue 16, EXP-1, AUD-1, SIG-1): how audit entries
map to transactions, Insert then Update per item, signatures and their definitions, a valid
document; no database."""

from __future__ import annotations

import datetime as dt

from lxml import etree

from trialdesk.reports.exports import odm_schema_path
from trialdesk.reports.odm_audit import (
    AuditedAction,
    EventSpec,
    FormPlace,
    FormSpec,
    ItemSpec,
    OdmFile,
    VersionSpec,
    to_transaction,
    transactions,
    write_transactional_odm,
)

Q = "{http://www.cdisc.org/ns/odm/v1.3}"
SHA = "a" * 64
SPEC = VersionSpec(
    key=SHA,
    version="1.0",
    name="Trial",
    title="A trial",
    effective=dt.date(2027, 1, 4),
    events=(
        EventSpec("COMMON", "Subject-level forms", "Common", ()),
        EventSpec("M1", "Month 1", "Scheduled", ("follow_up",)),
    ),
    forms=(FormSpec("follow_up", "Follow-up", False, (ItemSpec("kccq", "KCCQ", "float"),)),),
)
PLACE = FormPlace("follow_up", "M1", 1, False)


def action(**kw: object) -> AuditedAction:
    base: dict[str, object] = {
        "at": "2027-02-01T12:00:00Z",
        "actor": "coordinator",
        "action": "record_visit_form",
        "entity": "form",
        "entity_id": "follow_up#7",
        "subject": "S101-0001",
        "site": "S101",
        "old": None,
        "new": {"form": "follow_up", "values": {"kccq": 61.0}, "visit": "M1"},
        "reason": None,
        "version": SHA,
        "place": PLACE,
    }
    base.update(kw)
    return AuditedAction(**base)  # type: ignore[arg-type]


HISTORY = [
    action(
        action="register",
        entity="subject",
        entity_id="S101-0001",
        new={"state": "registered"},
        place=None,
    ),
    action(),
    action(
        action="correct_data",
        old={"kccq": 61.0},
        new={"kccq": 61.5},
        reason="transcription error",
        at="2027-02-02T12:00:00Z",
    ),
    action(
        action="withdraw",
        entity="subject",
        entity_id="S101-0001",
        old={"state": "registered"},
        new={"state": "withdrawn", "exit_reason": "moved"},
        reason="moved",
        place=None,
    ),
    action(
        action="crc_approve",
        entity="subject",
        entity_id="S101-0001",
        old={"state": "withdrawn"},
        new={
            "state": "withdrawn",
            "signature": {"name": "Riley Reviewer", "meaning": "CRC approval", "username": "crc"},
        },
        place=None,
    ),
    action(
        action="request_trial_unblinding",
        entity="study",
        entity_id="FLAGSHIP",
        subject=None,
        site=None,
        new={"signature": {"name": "Morgan Manager", "meaning": "Trial unblinding"}},
        actor="manager",
        place=None,
    ),
    action(
        action="create_site", entity="site", entity_id="S101", subject=None, site=None, place=None
    ),
]


def test_mapping_of_entries_to_transactions() -> None:
    """AUD-1: a form entry maps to its form; a correction keeps the previous values; subject
    entries carry only what changed; unsigned study-level entries are left out."""
    names = {"crc": "Riley Reviewer"}
    correction = to_transaction(HISTORY[2], names)
    assert correction is not None
    assert (correction.event, correction.form, correction.values) == (
        "M1",
        "follow_up",
        {"kccq": 61.5},
    )
    assert correction.previous == {"kccq": 61.0} and correction.reason == "transcription error"
    withdraw = to_transaction(HISTORY[3], names)
    assert withdraw is not None and withdraw.form == "SUBJECT"
    assert withdraw.values == {"state": "withdrawn", "exit_reason": "moved"}
    signed = to_transaction(HISTORY[4], names)
    assert signed is not None and signed.values == {}  # state unchanged
    assert signed.signature is not None and signed.signature.username == "crc"
    assert to_transaction(HISTORY[6], names) is None
    assert len(transactions(HISTORY, names)) == 6


def test_document_is_valid_with_insert_then_update_and_signatures() -> None:
    """EXP-1, SIG-1: schema-valid; the corrected item is an Insert then an Update; each
    signature refers to a SignatureDef with its meaning; the study-level one is listed in
    ClinicalData's Signatures."""
    doc = write_transactional_odm(
        OdmFile(
            "FLAGSHIP",
            "Trial",
            "2027-03-01T00:00:00Z",
            "AUDIT.1",
            True,
            [SPEC],
            {"S101": "Boston"},
            {"coordinator": "Casey"},
        ),
        transactions(HISTORY, {}),
    )
    schema = etree.XMLSchema(etree.parse(str(odm_schema_path())))
    root = etree.fromstring(doc)
    assert schema.validate(root), schema.error_log
    kccq = [
        (i.get("TransactionType"), i.get("Value"))
        for i in root.iter(f"{Q}ItemData")
        if i.get("ItemOID") == "I.follow_up.kccq"
    ]
    assert kccq == [("Insert", "61.0"), ("Update", "61.5")]
    state = [
        (i.get("TransactionType"), i.get("Value"))
        for i in root.iter(f"{Q}ItemData")
        if i.get("ItemOID") == "I.SUBJECT.state"
    ]
    assert state == [("Insert", "registered"), ("Update", "withdrawn")]
    defs = {d.get("OID"): d.findtext(f"{Q}Meaning") for d in root.iter(f"{Q}SignatureDef")}
    refs = [s.find(f"{Q}SignatureRef").get("SignatureOID") for s in root.iter(f"{Q}Signature")]
    assert sorted(defs[r] for r in refs) == ["CRC approval", "Trial unblinding"]
    assert len(list(root.iter(f"{Q}Signatures"))) == 1
    (mdv,) = root.iter(f"{Q}MetaDataVersion")
    assert mdv.get("OID").startswith("MDV.1_0.aaaaaaaaaaaa.blinded.")
    assert {r.get("EffectiveDate") for r in root.iter(f"{Q}MetaDataVersionRef")} == {"2027-01-04"}
