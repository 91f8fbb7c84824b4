"""The transactional ODM export (issue 16 deliver 4; EXP-1, AUD-1, SIG-1, RAND-6) on both
backends, read back with lxml against odmlib's ODM 1.3.2 XSD: every correction in the database
is an ``Update`` whose preceding transaction on the same item holds the previous value, with
the reason for change; every e-signature in the database is a ``Signature`` whose
``SignatureDef`` carries the meaning; state changes and exits end in the database's state;
blinded and unblinded metadata have distinct OIDs; effective dates are not after the data."""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from sqlalchemy import select

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.integration.test_blinding_sweep import Population, arm_leaks, arm_proxies, populate
from trialdesk.demo.trial import SimulationConfig, simulate_trial
from trialdesk.reports.exports import odm_schema_path
from trialdesk.reports.odm_audit import odm_value, oid
from trialdesk.services import exports, followup
from trialdesk.services.audit_trail import ARM_REVEALING_ENTITIES
from trialdesk.services.odm_audit import whole_seconds
from trialdesk.services.records import locks, review
from trialdesk.store.tables import AuditEntryRow, SubjectRow

NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
Q = "{http://www.cdisc.org/ns/odm/v1.3}"


@lru_cache(maxsize=1)
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(odm_schema_path())))


@pytest.fixture
def population(trial: Trial) -> Population:
    return trial.prepared(populate)


def export(trial: Trial, tmp: Path, *, unblinded: bool) -> tuple[Any, Any]:
    user = "statistician" if unblinded else "monitor"
    out = tmp / f"odm-{user}"
    result = exports.export_odm(
        trial.ctx, trial.actor(user), trial.study_id, out, unblinded=unblinded
    )
    assert result.files == ["odm.xml", "odm_audit.xml"]
    return etree.parse(str(out / "odm.xml")), etree.parse(str(out / "odm_audit.xml"))


def entries(trial: Trial) -> list[AuditEntryRow]:
    with trial.ctx.uow(readonly=True) as uow:
        rows = uow.session.scalars(
            select(AuditEntryRow)
            .where(AuditEntryRow.study_id == trial.study_id)
            .order_by(AuditEntryRow.id)
        ).all()
        uow.session.expunge_all()
        return list(rows)


def subject_states(trial: Trial) -> dict[str, str]:
    with trial.ctx.uow(readonly=True) as uow:
        rows = uow.session.execute(
            select(SubjectRow.number, SubjectRow.state).where(SubjectRow.study_id == trial.study_id)
        )
        return {number: state for number, state in rows.tuples().all()}


def visible(entry: AuditEntryRow, unblinded: bool) -> bool:
    """What the blinded audit projection shows (services/audit_trail.py)."""
    return unblinded or (
        entry.entity not in ARM_REVEALING_ENTITIES and not entry.stream.startswith("supply:")
    )


def transactions(doc: Any) -> list[dict[str, Any]]:
    """Every FormData transaction in document order, flattened: keys, audit, signature,
    items (OID -> (TransactionType, Value or None))."""
    out: list[dict[str, Any]] = []
    for fd in doc.iter(f"{Q}FormData"):
        ev = fd.getparent()
        sd = ev.getparent()
        items = {
            i.get("ItemOID"): (i.get("TransactionType"), i.get("Value"))
            for i in fd.iter(f"{Q}ItemData")
        }
        sig = fd.find(f"{Q}Signature")
        out.append(
            {
                "key": (
                    sd.get("SubjectKey"),
                    ev.get("StudyEventOID"),
                    fd.get("FormOID"),
                    fd.get("FormRepeatKey"),
                ),
                "source": fd.findtext(f"{Q}AuditRecord/{Q}SourceID"),
                "reason": fd.findtext(f"{Q}AuditRecord/{Q}ReasonForChange"),
                "user": fd.find(f"{Q}AuditRecord/{Q}UserRef").get("UserOID"),
                "items": items,
                "signature": sig,
            }
        )
    return out


def meanings(doc: Any) -> dict[str, str]:
    return {
        d.get("OID"): d.findtext(f"{Q}Meaning")
        for d in doc.iterfind("odm:AdminData/odm:SignatureDef", NS)
    }


def test_odm_audit_round_trips_corrections_signatures_and_states(
    trial: Trial, population: Population, tmp_path: Path
) -> None:
    """EXP-1, AUD-1, SIG-1: both files schema-valid (lxml, ODM 1.3.2 XSD); every correction
    and every e-signature of the database found in the transactional file, blinded and
    unblinded; each subject's last exported state is its state in the database."""
    txns = assert_round_trip(trial, tmp_path)
    # exits and state changes carry their data and reasons
    withdraw = next(t for t in txns if t["source"].startswith("withdraw subject"))
    assert withdraw["reason"] == "moved"
    assert withdraw["items"]["I.SUBJECT.exit_reason"] == ("Insert", "moved")
    assert withdraw["items"]["I.SUBJECT.state"] == ("Update", "withdrawn")
    therapy = next(t for t in txns if t["source"].startswith("record_therapy"))
    assert therapy["key"][2] == "F.THERAPY" and "I.THERAPY.therapy_type" in therapy["items"]


def test_odm_audit_round_trips_a_simulated_trial(trial: Trial, tmp_path: Path) -> None:
    """EXP-1, AUD-1, SIG-1: the same round trip on a trial made by the demo simulator
    (corrections from data queries, CRC signatures, visits, exits, missed visits)."""
    config = SimulationConfig(
        subjects=24, sites=3, seed=11, as_of=dt.date(2027, 9, 30), query_probability=1.0
    )
    simulate_trial(trial.ctx, "FLAGSHIP", config)
    txns = assert_round_trip(trial, tmp_path)
    assert any(t["key"][2] == "F.VISIT_STATUS" for t in txns)


def test_odm_audit_carries_sdv_sign_off_and_locks(trial: Trial, tmp_path: Path) -> None:
    """EXP-1, SIG-1, REC-1..3 (issue 15's records in issue 16's audit trail): an SDV mark, an
    investigator's casebook signature, the correction that invalidates it and a record lock
    are transactions of the file; the signature and the lock carry their e-signatures."""
    number, _arm = j.procedure_done(trial)
    j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    study = trial.study_id
    review.mark_sdv(
        trial.ctx, trial.actor("monitor"), study_id=study, number=number, form="follow_up",
        visit="M1",
    )  # fmt: skip
    coordinator = trial.actor("coordinator")
    review.sign_records(
        trial.ctx, coordinator, study_id=study, number=number, level="casebook",
        password=PASSWORD,
    )  # fmt: skip
    followup.correct_form_data(
        trial.ctx,
        coordinator,
        trial.study_id,
        number,
        form_code="follow_up",
        visit_code="M1",
        changes={"kccq_overall_score": 55.5},
        reason="transcription error against the source",
    )
    locks.lock_record(
        trial.ctx,
        trial.actor("monitor"),
        study_id=study,
        number=number,
        level="casebook",
        reason="interim review",
        password=PASSWORD,
    )
    txns = assert_round_trip(trial, tmp_path)
    mine = [t for t in txns if t["key"][0] == number]
    sources = [t["source"].split(" ")[0] for t in mine]
    for action in ("sdv_mark", "sign_records", "correct_data", "signature_invalidated"):
        assert action in sources, (action, sources)
    assert any(s.startswith("lock") for s in sources), sources
    signed = {t["source"].split(" ")[0] for t in mine if t["signature"] is not None}
    assert "sign_records" in signed and any(s.startswith("lock") for s in signed)


def assert_round_trip(trial: Trial, tmp_path: Path) -> list[dict[str, Any]]:
    """Export blinded and unblinded; check both files against the database (see the tests'
    docstrings); the unblinded file's transactions."""
    rows = entries(trial)
    corrections = [e for e in rows if e.action == "correct_data"]
    signed = [
        e
        for e in rows
        if isinstance(json.loads(e.new or "null"), dict) and "signature" in json.loads(e.new)
    ]
    assert corrections and len(signed) >= 5  # every trial tested has both
    states = subject_states(trial)
    for unblinded in (False, True):
        snapshot, doc = export(trial, tmp_path, unblinded=unblinded)
        for d in (snapshot, doc):
            assert schema().validate(d), schema().error_log
        assert doc.getroot().get("FileType") == "Transactional"
        txns = transactions(doc)
        by_source: dict[str, list[dict[str, Any]]] = {}
        for t in txns:
            by_source.setdefault(t["source"], []).append(t)

        for e in corrections:
            (t,) = by_source[f"correct_data form {e.entity_id}"]
            assert t["reason"] == e.reason
            old, new = json.loads(e.old), json.loads(e.new)
            index = txns.index(t)
            for field, value in new.items():
                item = oid("I", t["key"][2][2:], field)
                assert t["items"][item] == ("Update", odm_value(value))
                earlier = [
                    p["items"][item]
                    for p in txns[:index]
                    if p["key"] == t["key"] and item in p["items"]
                ]
                assert earlier and earlier[-1][1] == odm_value(old[field]), (field, earlier)

        defs = meanings(doc)
        shown = [e for e in signed if visible(e, unblinded)]
        in_file = list(doc.iter(f"{Q}Signature"))
        assert len(in_file) == len(shown)
        study_level = {
            r.get("ID"): r.findtext(f"{Q}SourceID")
            for r in doc.iterfind("odm:ClinicalData/odm:AuditRecords/odm:AuditRecord", NS)
        }
        for e in shown:
            sig = json.loads(e.new)["signature"]
            source = f"{e.action} {e.entity} {e.entity_id}"
            if e.subject_id is not None:
                found = [t["signature"] for t in by_source[source] if t["signature"] is not None]
            else:
                found = [
                    s
                    for s in doc.iterfind("odm:ClinicalData/odm:Signatures/odm:Signature", NS)
                    if study_level["AR." + s.get("ID").split(".")[1]] == source
                ]
            assert found, source
            matching = [
                s
                for s in found
                if defs[s.find(f"{Q}SignatureRef").get("SignatureOID")] == sig["meaning"]
                and s.find(f"{Q}UserRef").get("UserOID")
                == oid("USR", sig.get("username") or e.actor)
            ]
            assert matching, (source, sig)
            expected = sig.get("at") or e.at
            stamps = [s.findtext(f"{Q}DateTimeStamp") for s in matching]
            assert (expected if unblinded else whole_seconds(expected)) in stamps

        last_state: dict[str, str] = {}
        for t in txns:
            value = t["items"].get("I.SUBJECT.state")
            if t["key"][2] == "F.SUBJECT" and value is not None:
                last_state[t["key"][0]] = value[1]
        assert last_state == states

    return txns


def test_odm_metadata_oids_differ_by_content_and_dates_are_true(
    trial: Trial, population: Population, tmp_path: Path
) -> None:
    """EXP-1: blinded and unblinded files never share a MetaDataVersion OID (their content
    differs); the effective date is the day the version took effect, not after the data."""
    blinded = export(trial, tmp_path / "b", unblinded=False)
    unblinded = export(trial, tmp_path / "u", unblinded=True)
    again = export(trial, tmp_path / "again", unblinded=False)

    def mdv(doc: Any) -> set[str]:
        return {m.get("OID") for m in doc.iterfind("odm:Study/odm:MetaDataVersion", NS)}

    for b, u, a in zip(blinded, unblinded, again, strict=True):
        assert mdv(b) and not mdv(b) & mdv(u)
        assert mdv(a) == mdv(b)  # same content, same OID
        assert all("blinded" in o for o in mdv(b)) and all("unblinded" in o for o in mdv(u))
        first_data = min(r.text[:10] for r in b.iter(f"{Q}DateTimeStamp"))
        dates = {r.get("EffectiveDate") for r in b.iter(f"{Q}MetaDataVersionRef")}
        assert dates and all(d <= first_data for d in dates), (dates, first_data)
        clinical = {c.get("MetaDataVersionOID") for c in b.iterfind("odm:ClinicalData", NS)}
        assert clinical <= mdv(b)


def test_blinded_odm_audit_names_no_arm(
    trial: Trial, population: Population, tmp_path: Path
) -> None:
    """RAND-6: the blinded transactional file has no arm code or label, no arm's procedure
    form, no device entry; the unblinded one has the arms (so the check can fail)."""
    _snap, doc = export(trial, tmp_path / "b", unblinded=False)
    text = etree.tostring(doc).decode()
    assert arm_leaks(text) == []
    assert not [p for p in arm_proxies() if p in text]
    assert "SN000" not in text  # no per-device entry
    _snap, doc = export(trial, tmp_path / "u", unblinded=True)
    text = etree.tostring(doc).decode()
    assert set(population.arms.values()) <= set(arm_leaks(text))
    assert any(p in text for p in arm_proxies())


def test_a_broken_odm_audit_fails_the_schema(
    trial: Trial, population: Population, tmp_path: Path
) -> None:
    """EXP-1: the XSD check in these tests can fail: a Signature without its SignatureRef."""
    _snap, doc = export(trial, tmp_path, unblinded=False)
    sig = next(doc.iter(f"{Q}SignatureRef"))
    sig.getparent().remove(sig)
    assert not schema().validate(doc)
