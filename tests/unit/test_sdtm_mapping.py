"""SDTM mapping on plain records (issue 16, EXP-1): no database, the rules one by one."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from trialdesk.protocol.loader import load_protocol
from trialdesk.reports.define import define_problems, define_xml, sdtm_define
from trialdesk.reports.sdtm import Reading, SdtmInput, build_sdtm, cut_words
from trialdesk.services.submission import read_coding
from trialdesk.store.submission import (
    StoredAllocation,
    StoredForm,
    StoredSubject,
    StoredVisit,
    StudySubmission,
)

D = dt.date(2027, 3, 1)
AT = dt.datetime(2027, 3, 1, 12, tzinfo=dt.UTC)


def _subject(sid: int, number: str, **over: object) -> StoredSubject:
    values: dict[str, object] = dict(
        id=sid,
        number=number,
        site_code="S101",
        site_name="Site",
        country="US",
        state="randomized",
        test_subject=False,
        registered_on=D,
        consent_date=D,
        consent_version="v1.0",
        screen_failure_reason=None,
        randomized_on=D,
        procedure_done=True,
        discharged_on=D + dt.timedelta(days=2),
        exit_date=None,
        exit_reason=None,
        allocation=StoredAllocation(f"R{sid}", D, b"x", False),
    )
    values.update(over)
    return StoredSubject(**values)  # type: ignore[arg-type]


def _form(code: str, values: dict[str, object], visit: str = "", seq: int = 1) -> StoredForm:
    return StoredForm(code, visit, seq, json.dumps(values), 1, AT)


def _build(subjects: list[StoredSubject], readings: dict[int, Reading], unblinded: bool):  # type: ignore[no-untyped-def]
    study = StudySubmission(1, "FLAGSHIP", "Flagship", [], subjects)
    protocol = load_protocol().protocol
    return {d.name: d for d in build_sdtm(SdtmInput(study, protocol, readings, unblinded))}


def test_dm_rules_deaths_consent_and_actual_arm() -> None:
    """EXP-1: a death carries DTHFL/DTHDTC from the death form and RFENDTC from the exit; an
    implant not released is UNPLAN with ACTARMUD; a sham subject is CTRL; a registration
    never consented is no DM subject; a randomized subject without procedure is ASSIGNED,
    NOT TREATED."""
    death = D + dt.timedelta(days=100)
    subjects = [
        _subject(
            1,
            "S101-001",
            state="died",
            exit_date=death,
            forms=[_form("death", {"death_date": death.isoformat(), "cause": "unknown"})],
        ),
        _subject(2, "S101-002"),
        _subject(3, "S101-003"),
        _subject(
            4,
            "S101-004",
            consent_date=None,
            allocation=None,
            randomized_on=None,
            procedure_done=False,
            state="registered",
        ),
        _subject(5, "S101-005", procedure_done=False),
    ]
    proc = {"procedure_date": D.isoformat(), "start_time": "09:00", "end_time": "10:10"}
    readings = {
        1: Reading("INT", "implant_procedure", {**proc, "implant_released": True}),
        2: Reading(
            "INT",
            "implant_procedure",
            {**proc, "implant_released": False, "device_udi": "(01)01234567890128(21)SN1"},
        ),
        3: Reading("CTRL", "sham_procedure", proc),
        5: Reading("INT"),
    }
    out = _build(subjects, readings, True)
    dm = {r["SUBJID"]: r for r in out["DM"].rows}
    assert set(dm) == {"S101-001", "S101-002", "S101-003", "S101-005"}
    assert (dm["S101-001"]["DTHFL"], dm["S101-001"]["DTHDTC"]) == ("Y", death.isoformat())
    assert dm["S101-001"]["RFENDTC"] == death.isoformat()
    assert dm["S101-001"]["ACTARMCD"] == "INT" and dm["S101-001"]["RFXSTDTC"] == D.isoformat()
    assert dm["S101-002"]["ACTARMCD"] == "UNPLAN" and dm["S101-002"]["ACTARMUD"]
    assert dm["S101-003"]["ACTARMCD"] == "CTRL"
    assert (dm["S101-005"]["ACTARMCD"], dm["S101-005"]["ARMNRS"]) == ("", "ASSIGNED, NOT TREATED")
    assert [r["DXOCCUR"] for r in out["DX"].rows] == ["N"]
    assert {r["PRDUR"] for r in out["PR"].rows} == {"PT70M"}
    assert {"TA", "DI", "SUPPPR"} <= set(out)


def test_a_completer_ends_at_the_completion_visit() -> None:
    """EXP-1: completion records no exit date; RFENDTC and the COMPLETED DS record take the
    date of the completion visit (Y5), never a record-update time."""
    y5 = D + dt.timedelta(days=1830)
    subject = _subject(
        1, "S101-001", state="completed", visits=[StoredVisit("Y5", "done", y5, None)]
    )
    out = _build([subject], {1: Reading("CTRL", "sham_procedure", {})}, True)
    assert out["DM"].rows[0]["RFENDTC"] == y5.isoformat()
    done = [r for r in out["DS"].rows if r["DSDECOD"] == "COMPLETED"]
    assert [r["DSSTDTC"] for r in done] == [y5.isoformat()]


def test_blinded_mapping_writes_no_arm_and_no_device() -> None:
    """RAND-6: blinded, DM's arm variables are empty, TA/DI/DX/SUPPPR absent, PR unnamed."""
    proc = {"procedure_date": D.isoformat()}
    out = _build([_subject(1, "S101-001")], {1: Reading(None, None, proc)}, False)
    row = out["DM"].rows[0]
    assert row["ARMCD"] == row["ACTARMCD"] == row["ARM"] == ""
    assert not {"TA", "DI", "DX", "SUPPPR"} & set(out)
    assert [r["PRTRT"] for r in out["PR"].rows] == ["INDEX PROCEDURE"]


def test_a_long_text_is_cut_at_a_word() -> None:
    """EXP-1: TI/TS texts are at most 200 characters and end on a whole word."""
    text = "word " * 60
    cut = cut_words(text)
    assert len(cut) <= 200 and cut.endswith("word")


def test_the_define_of_the_mapping_validates_and_breaks_when_broken() -> None:
    """EXP-1: the define of a small export validates; without a required attribute it fails."""
    out = _build([_subject(1, "S101-001")], {1: Reading("INT", None, {})}, True)
    protocol = load_protocol().protocol
    doc = sdtm_define(list(out.values()), protocol, "FLAGSHIP", unblinded=True, now=AT)
    xml = define_xml(doc)
    assert define_problems(xml) == []
    assert define_problems(xml.replace(b' DataType="text"', b"", 1))


def test_imported_meddra_coding_fills_aedecod_and_aebodsys(tmp_path: Path) -> None:
    """EXP-1: the MedDRA import place: a CSV (AETERM, AEDECOD, AEBODSYS) read by the service
    codes the matching reported term; an uncoded term keeps its upper-case reported term."""
    csv_file = tmp_path / "meddra.csv"
    csv_file.write_text(
        "AETERM,AEDECOD,AEBODSYS\nGroin haematoma,Haematoma,Vascular disorders\n",
        encoding="utf-8",
    )
    coding = read_coding(csv_file)
    ae = [
        _form(
            "adverse_event", {"onset_date": D.isoformat(), "term": t, "mae_category": "none"}, seq=i
        )
        for i, t in enumerate(("Groin haematoma", "Syncope"), start=1)
    ]
    study = StudySubmission(1, "FLAGSHIP", "Flagship", [], [_subject(1, "S101-001", forms=ae)])
    data = SdtmInput(study, load_protocol().protocol, {1: Reading("INT")}, True, coding)
    rows = {r["AETERM"]: r for r in next(d for d in build_sdtm(data) if d.name == "AE").rows}
    assert (rows["Groin haematoma"]["AEDECOD"], rows["Groin haematoma"]["AEBODSYS"]) == (
        "Haematoma",
        "Vascular disorders",
    )
    assert (rows["Syncope"]["AEDECOD"], rows["Syncope"]["AEBODSYS"]) == ("SYNCOPE", "")
