"""SDTM datasets from the plain records of a study (issue 16, EXP-1): pure mapping.

Input: :class:`trialdesk.store.submission.StudySubmission` (what is stored) plus what the
service decided the reader may see: the decrypted arm of each randomized subject and the
index-procedure form and values (both only for an unblinded export; a blinded one gets the
procedure date alone, which both arms' forms carry alike). Output: :class:`Dataset` objects
with Define-XML metadata. Every choice that departs from SDTMIG 3.4 is listed in
docs/exports.md ("Known deviations").
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trialdesk.protocol.models import FieldType, Protocol
from trialdesk.reports.exports import Dataset, Variable
from trialdesk.store.submission import StoredSubject, StudySubmission

SDTMIG_VERSION = "3.4"
SDTM_VERSION = "2.0"
BLINDED_NOTE = "withheld: blinded export"
CONCEALED_FORM = "index_procedure"

ALPHA3 = {
    "US": "USA",
    "CA": "CAN",
    "DE": "DEU",
    "FR": "FRA",
    "NL": "NLD",
    "PL": "POL",
    "CZ": "CZE",
    "GB": "GBR",
    "IT": "ITA",
    "AU": "AUS",
    "ES": "ESP",
    "BE": "BEL",
    "AT": "AUT",
    "CH": "CHE",
    "SE": "SWE",
    "DK": "DNK",
    "NO": "NOR",
    "FI": "FIN",
    "IE": "IRL",
    "PT": "PRT",
    "NZ": "NZL",
}
SEX = {"female": "F", "male": "M"}
AESEV = {"mild": "MILD", "moderate": "MODERATE", "severe": "SEVERE"}
AEREL = {"not_related": "NOT RELATED", "possibly": "POSSIBLY RELATED", "related": "RELATED"}
AEOUT = {
    "recovered": "RECOVERED/RESOLVED",
    "recovering": "RECOVERING/RESOLVING",
    "not_recovered": "NOT RECOVERED/NOT RESOLVED",
    "fatal": "FATAL",
    "unknown": "UNKNOWN",
}
SCREEN_FAILURE_TERMS = {
    "criteria_not_met": "Eligibility criteria not met",
    "crc_rejected": "Rejected by the Central Review Committee",
    "anatomy_unsuitable": "Anatomy unsuitable for the implant",
    "declined": "Subject declined to participate",
    "other": "Other reason",
}
WITHDRAWAL_DECOD = {
    "subject_decision": "WITHDRAWAL BY SUBJECT",
    "investigator_decision": "PHYSICIAN DECISION",
    "other": "OTHER",
}
EXIT_DECOD = {
    "screen_failed": "SCREEN FAILURE",
    "completed": "COMPLETED",
    "withdrawn": "WITHDRAWAL BY SUBJECT",
    "lost_to_follow_up": "LOST TO FOLLOW-UP",
    "died": "DEATH",
}
HOSP_REASON = {
    "heart_failure": "HEART FAILURE",
    "other_cardiovascular": "OTHER CARDIOVASCULAR",
    "non_cardiovascular": "NON-CARDIOVASCULAR",
}
SCREENING_VISIT = (1, "SCREENING")
PROCEDURE_VISIT = (2, "INDEX PROCEDURE")
FIRST_PROTOCOL_VISITNUM = 3


def V(  # noqa: N802
    name: str,
    label: str,
    kind: str = "Char",
    *,
    role: str = "",
    core: str = "Perm",
    origin: str = "Collected",
    codelist: str = "",
    comment: str = "",
    method: str = "",
) -> Variable:
    """A variable with its Define-XML metadata (length is measured from the data)."""
    return Variable(
        name,
        label,
        "Num" if kind == "Num" else "Char",
        comment,
        role=role,
        core=core,
        origin=origin,
        codelist=codelist,
        method=method,
    )


def _ids(domain: str, seq: bool = True) -> list[Variable]:
    out = [
        V("STUDYID", "Study Identifier", role="Identifier", core="Req", origin="Assigned"),
        V("DOMAIN", "Domain Abbreviation", role="Identifier", core="Req", origin="Assigned"),
        V(
            "USUBJID",
            "Unique Subject Identifier",
            role="Identifier",
            core="Req",
            origin="Derived",
            method="STUDYID and the subject number, joined by a hyphen",
        ),
    ]
    if seq:
        out.append(
            V(
                f"{domain}SEQ",
                "Sequence Number",
                "Num",
                role="Identifier",
                core="Req",
                origin="Derived",
                method="Order of the subject's records in the domain",
            )
        )
    return out


def _visit_vars() -> list[Variable]:
    return [
        V("VISITNUM", "Visit Number", "Num", role="Timing", core="Exp", origin="Assigned"),
        V("VISIT", "Visit Name", role="Timing", core="Perm", origin="Assigned"),
    ]


def _d(value: dt.date | None) -> str:
    return value.isoformat() if value is not None else ""


def _s(value: object) -> str:
    return "" if value is None else str(value)


def _yn(value: object) -> str:
    return "Y" if value is True else "N" if value is False else ""


def study_day(days_after_randomization: int) -> int:
    """SDTM study day: day 1 is the reference start (randomization); there is no day 0, so
    the protocol's "day 30 after randomization" is study day 31."""
    return (
        days_after_randomization + 1
        if days_after_randomization >= 0
        else (days_after_randomization)
    )


def cut_words(text: str, limit: int = 200) -> str:
    """At most ``limit`` characters, cut at a word boundary (an SDTM text of 200 at most)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[: limit + 1].rsplit(" ", 1)[0]
    return head[:limit]


@dataclass(frozen=True)
class Reading:
    """What the service lets the mapping see of one subject beyond the stored record."""

    arm: str | None = None
    """The allocated arm code; None when blinded or not randomized."""
    procedure_form: str | None = None
    """The index procedure's real form code (unblinded), None when blinded or not done."""
    procedure: Mapping[str, Any] = field(default_factory=dict)
    """The procedure values (unblinded), or only ``procedure_date`` (blinded)."""


@dataclass
class SdtmInput:
    study: StudySubmission
    protocol: Protocol
    readings: Mapping[int, Reading]
    unblinded: bool
    coding: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """MedDRA import place: reported term (upper case) -> (AEDECOD, AEBODSYS)."""


@dataclass
class _Subj:
    rec: StoredSubject
    uid: str
    reading: Reading
    visitnum: dict[str, int]

    def forms(self, code: str, visit: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        out = []
        for f in self.rec.forms:
            if f.form_code == code and (visit is None or f.visit_code == visit):
                out.append((f.seq, f.values()))
        return out

    def latest(self, code: str, visit: str = "") -> dict[str, Any]:
        found = self.forms(code, visit)
        return found[-1][1] if found else {}


def population(study: StudySubmission) -> list[StoredSubject]:
    """SDTM subjects: consented, not test subjects (a subject never consented is no subject)."""
    return [s for s in study.subjects if s.consent_date is not None and not s.test_subject]


def death_date(s: StoredSubject, death_values: Mapping[str, Any]) -> str:
    """The death form's date, else the exit date of a subject who died."""
    if death_values.get("death_date"):
        return str(death_values["death_date"])
    if s.state == "died" and s.exit_date is not None:
        return s.exit_date.isoformat()
    return ""


def exit_date(protocol: Protocol, s: StoredSubject) -> dt.date | None:
    """The day the subject left the study: the recorded exit date, or for a completer whose
    completion recorded none, the date of the completion visit (the final contact)."""
    if s.exit_date is not None or s.state != "completed":
        return s.exit_date
    final = protocol.follow_up.completion_visit or (
        protocol.visits[-1].code if protocol.visits else ""
    )
    done = [v.visit_date for v in s.visits if v.visit_code == final and v.status == "done"]
    return done[0] if done else None


def procedure_date(reading: Reading) -> str:
    return _s(reading.procedure.get("procedure_date"))


def _all_dates(subj: _Subj) -> list[str]:
    """Every clinical date of the subject (for RFPENDTC, the end of participation)."""
    rec = subj.rec
    out = [_d(x) for x in (rec.consent_date, rec.randomized_on, rec.discharged_on, rec.exit_date)]
    out += [_d(v.visit_date) for v in rec.visits if v.status == "done"]
    out += [_d(t.therapy_date) for t in rec.therapies]
    out.append(procedure_date(subj.reading))
    for f in rec.forms:
        if f.form_code == CONCEALED_FORM:
            continue
        for value in f.values().values():
            if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                out.append(value)
    return [d for d in out if d]


def actual_arm(protocol: Protocol, rec: StoredSubject, reading: Reading) -> tuple[str, str, str]:
    """ACTARMCD, ACTARM, ACTARMUD from what was received: the planned arm only when its
    procedure was done and, for a device arm, the implant released; an attempted implant not
    released is UNPLAN (the subject received no implant), CONSORT's "did not receive"."""
    if reading.arm is None or not rec.procedure_done:
        return "", "", ""
    if reading.procedure.get("implant_released") is False:
        return "UNPLAN", "Unplanned Treatment", "Implant procedure attempted; implant not released"
    return reading.arm, protocol.arm(reading.arm).label, ""


def build_sdtm(data: SdtmInput) -> list[Dataset]:
    """Every SDTM dataset of the study, in define order (trial design last)."""
    protocol = data.protocol
    studyid = data.study.code
    visitnum = {v.code: i for i, v in enumerate(protocol.visits, start=FIRST_PROTOCOL_VISITNUM)}
    subjects = [
        _Subj(s, f"{studyid}-{s.number}", data.readings.get(s.id, Reading()), visitnum)
        for s in population(data.study)
    ]
    out = [
        _dm(data, subjects),
        _ds(data, subjects),
        _sv(data, subjects),
        _ae(data, subjects),
        _ho(data, subjects),
        _mh(data, subjects),
        _qs(data, subjects),
        _cv(data, subjects),
        _vs(data, subjects),
        _pr(data, subjects),
    ]
    if data.unblinded:
        out += _devices(data, subjects)
    out += _trial_design(data, subjects)
    out += supplemental(out)
    # no empty dataset is submitted (SDTMIG 3.4 section 4.1.1); DM always is
    out = [ds for ds in out if ds.rows or ds.name == "DM"]
    for ds in out:
        names = {v.name for v in ds.variables}
        for row in ds.rows:
            row.setdefault("STUDYID", studyid)
            if "DOMAIN" in names:
                row.setdefault("DOMAIN", ds.name)
    return out


# --------------------------------------------------------------------------- DM


def dm_variables(unblinded: bool) -> list[Variable]:
    arm_note = "" if unblinded else BLINDED_NOTE
    return [
        *_ids("DM", seq=False),
        V("SUBJID", "Subject Identifier for the Study", role="Topic", core="Req"),
        V(
            "RFSTDTC",
            "Subject Reference Start Date/Time",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            method="Date of randomization",
        ),
        V(
            "RFENDTC",
            "Subject Reference End Date/Time",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            method="Date of the exit (completion, withdrawal, loss, death); empty while on study",
        ),
        V(
            "RFXSTDTC",
            "Date/Time of First Study Treatment",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            method="Date of the index procedure",
        ),
        V(
            "RFXENDTC",
            "Date/Time of Last Study Treatment",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            method="Date of the index procedure (a single treatment)",
        ),
        V("RFICDTC", "Date/Time of Informed Consent", role="Record Qualifier", core="Exp"),
        V(
            "RFPENDTC",
            "Date/Time of End of Participation",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            method="Latest clinical date recorded for the subject",
        ),
        V(
            "DTHDTC",
            "Date/Time of Death",
            role="Record Qualifier",
            core="Exp",
            method="Death form date, else the exit date of a death",
        ),
        V(
            "DTHFL",
            "Subject Death Flag",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            codelist="NY",
            method="Y when the subject died",
        ),
        V(
            "SITEID",
            "Study Site Identifier",
            role="Record Qualifier",
            core="Req",
            origin="Assigned",
        ),
        V("AGE", "Age", "Num", role="Record Qualifier", core="Exp"),
        V(
            "AGEU",
            "Age Units",
            role="Variable Qualifier",
            core="Exp",
            origin="Assigned",
            codelist="AGEU",
        ),
        V("SEX", "Sex", role="Record Qualifier", core="Req", codelist="SEX"),
        V(
            "RACE",
            "Race",
            role="Record Qualifier",
            core="Exp",
            origin="Assigned",
            codelist="RACE",
            comment="Not collected by the flagship CRF: NOT REPORTED",
        ),
        V(
            "ETHNIC",
            "Ethnicity",
            role="Record Qualifier",
            core="Perm",
            origin="Assigned",
            codelist="ETHNIC",
            comment="Not collected by the flagship CRF: NOT REPORTED",
        ),
        V(
            "ARMCD",
            "Planned Arm Code",
            role="Record Qualifier",
            core="Exp",
            origin="Assigned",
            codelist="ARMCD",
            comment=arm_note,
        ),
        V(
            "ARM",
            "Description of Planned Arm",
            role="Synonym Qualifier",
            core="Exp",
            origin="Assigned",
            comment=arm_note,
        ),
        V(
            "ACTARMCD",
            "Actual Arm Code",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            codelist="ARMCD",
            comment=arm_note,
            method="Planned arm when its procedure was done "
            "(implant released for the device arm); UNPLAN for an implant not released",
        ),
        V(
            "ACTARM",
            "Description of Actual Arm",
            role="Synonym Qualifier",
            core="Exp",
            origin="Derived",
            comment=arm_note,
        ),
        V(
            "ARMNRS",
            "Reason Arm and/or Actual Arm is Null",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            codelist="ARMNRS",
        ),
        V(
            "ACTARMUD",
            "Description of Unplanned Actual Arm",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            comment=arm_note,
        ),
        V(
            "COUNTRY",
            "Country",
            role="Record Qualifier",
            core="Req",
            origin="Assigned",
            codelist="COUNTRY",
        ),
        V("DMDTC", "Date/Time of Collection", role="Timing", core="Perm"),
    ]


def _dm(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    dm = Dataset("DM", "Demographics", dm_variables(data.unblinded))
    dm.klass, dm.structure, dm.keys = (
        "SPECIAL PURPOSE",
        "One record per subject",
        ("STUDYID", "USUBJID"),
    )
    for subj in subjects:
        rec, reading = subj.rec, subj.reading
        demo = subj.latest("demographics")
        dth = death_date(rec, subj.latest("death"))
        proc = procedure_date(reading) if rec.procedure_done else ""
        armcd = arm = ""
        actcd, act, actud = actual_arm(data.protocol, rec, reading)
        if reading.arm is not None:
            armcd, arm = reading.arm, data.protocol.arm(reading.arm).label
        nrs = ""
        if rec.allocation is None:
            nrs = "SCREEN FAILURE" if rec.state == "screen_failed" else "NOT ASSIGNED"
        elif not rec.procedure_done:
            nrs = "ASSIGNED, NOT TREATED"
        age = demo.get("age_years")
        dates = _all_dates(subj)
        dm.rows.append(
            {
                "USUBJID": subj.uid,
                "SUBJID": rec.number,
                "RFSTDTC": _d(rec.randomized_on),
                "RFENDTC": _d(exit_date(data.protocol, rec)) if rec.randomized_on else "",
                "RFXSTDTC": proc,
                "RFXENDTC": proc,
                "RFICDTC": _d(rec.consent_date),
                "RFPENDTC": max(dates) if dates else "",
                "DTHDTC": dth,
                "DTHFL": "Y" if dth else "",
                "SITEID": rec.site_code,
                "AGE": age,
                "AGEU": "YEARS" if age is not None else "",
                "SEX": SEX.get(str(demo.get("sex")), "U"),
                "RACE": "NOT REPORTED",
                "ETHNIC": "NOT REPORTED",
                "ARMCD": armcd,
                "ARM": arm,
                "ACTARMCD": actcd,
                "ACTARM": act,
                "ARMNRS": nrs,
                "ACTARMUD": actud,
                "COUNTRY": ALPHA3.get(rec.country, rec.country),
                "DMDTC": _s(demo.get("assessment_date")),
            }
        )
    if not data.unblinded:
        dm.comment = "ARMCD, ARM, ACTARMCD, ACTARM and ACTARMUD written empty: blinded export"
    return dm


# --------------------------------------------------------------------------- DS


DS_VARIABLES = [
    *_ids("DS"),
    V("DSTERM", "Reported Term for the Disposition Event", role="Topic", core="Req"),
    V(
        "DSDECOD",
        "Standardized Disposition Term",
        role="Synonym Qualifier",
        core="Req",
        origin="Assigned",
        codelist="NCOMPLT",
    ),
    V(
        "DSCAT",
        "Category for Disposition Event",
        role="Grouping Qualifier",
        core="Exp",
        origin="Assigned",
        codelist="DSCAT",
    ),
    V("EPOCH", "Epoch", role="Timing", core="Perm", origin="Assigned", codelist="EPOCH"),
    V("DSSTDTC", "Start Date/Time of Disposition Event", role="Timing", core="Exp"),
]


def _ds(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    ds = Dataset("DS", "Disposition", DS_VARIABLES)
    ds.klass, ds.structure = "EVENTS", "One record per disposition event per subject"
    ds.keys = ("STUDYID", "USUBJID", "DSDECOD", "DSSTDTC")
    for subj in subjects:
        rec = subj.rec
        events: list[tuple[str, str, str, str, str]] = [
            (
                "INFORMED CONSENT OBTAINED",
                "INFORMED CONSENT OBTAINED",
                "PROTOCOL MILESTONE",
                "SCREENING",
                _d(rec.consent_date),
            ),
        ]
        if rec.allocation is not None:
            events.append(
                (
                    "RANDOMIZED",
                    "RANDOMIZED",
                    "PROTOCOL MILESTONE",
                    "SCREENING",
                    _d(rec.randomized_on),
                )
            )
        if rec.state in EXIT_DECOD:
            decod = EXIT_DECOD[rec.state]
            epoch = "SCREENING" if rec.state == "screen_failed" else "FOLLOW-UP"
            if rec.state == "screen_failed":
                code = rec.screen_failure_reason or "other"
                term = SCREEN_FAILURE_TERMS.get(code, SCREEN_FAILURE_TERMS["other"])
            elif rec.state == "withdrawn":
                reason = str(subj.latest("withdrawal").get("reason") or "subject_decision")
                decod = WITHDRAWAL_DECOD.get(reason, "OTHER")
                term = rec.exit_reason or decod.capitalize()
            elif rec.state == "died":
                term = "Death"
            else:
                term = rec.exit_reason or decod.capitalize()
            when = exit_date(data.protocol, rec)
            events.append((cut_words(term), decod, "DISPOSITION EVENT", epoch, _d(when)))
        for seq, (term, decod, cat, epoch, on) in enumerate(events, start=1):
            ds.rows.append(
                {
                    "USUBJID": subj.uid,
                    "DSSEQ": seq,
                    "DSTERM": term,
                    "DSDECOD": decod,
                    "DSCAT": cat,
                    "EPOCH": epoch,
                    "DSSTDTC": on,
                }
            )
    return ds


# --------------------------------------------------------------------------- SV


SV_VARIABLES = [
    *_ids("SV", seq=False),
    *_visit_vars(),
    V(
        "SVPRESP",
        "Pre-specified",
        role="Variable Qualifier",
        core="Perm",
        origin="Assigned",
        codelist="NY",
    ),
    V("SVOCCUR", "Occurrence", role="Record Qualifier", core="Perm", codelist="NY"),
    V("SVREASOC", "Reason for Occur Value", role="Record Qualifier", core="Perm"),
    V(
        "VISITDY",
        "Planned Study Day of Visit",
        "Num",
        role="Timing",
        core="Perm",
        origin="Protocol",
    ),
    V("EPOCH", "Epoch", role="Timing", core="Perm", origin="Assigned", codelist="EPOCH"),
    V("SVSTDTC", "Start Date/Time of Observation", role="Timing", core="Exp"),
    V("SVENDTC", "End Date/Time of Observation", role="Timing", core="Exp"),
]


def _screening_dates(subj: _Subj, codes: Sequence[str]) -> list[str]:
    out: list[str] = []
    for f in subj.rec.forms:
        if f.form_code in codes and not f.visit_code:
            for value in f.values().values():
                if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                    out.append(value)
    return out


def _sv(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    sv = Dataset("SV", "Subject Visits", SV_VARIABLES)
    sv.klass, sv.structure = "SPECIAL PURPOSE", "One record per subject per actual visit"
    sv.keys = ("STUDYID", "USUBJID", "VISITNUM")
    protocol = data.protocol
    screening = list(protocol.screening.forms) if protocol.screening else []
    for subj in subjects:
        rec = subj.rec
        dates = [_d(rec.consent_date), *_screening_dates(subj, screening)]
        dates = [d for d in dates if d]
        sv.rows.append(
            {
                "USUBJID": subj.uid,
                "VISITNUM": SCREENING_VISIT[0],
                "VISIT": SCREENING_VISIT[1],
                "SVPRESP": "Y",
                "SVOCCUR": "Y",
                "SVREASOC": "",
                "VISITDY": None,
                "EPOCH": "SCREENING",
                "SVSTDTC": min(dates),
                "SVENDTC": max(dates),
            }
        )
        if rec.allocation is not None:
            day = procedure_date(subj.reading) or _d(rec.randomized_on)
            sv.rows.append(
                {
                    "USUBJID": subj.uid,
                    "VISITNUM": PROCEDURE_VISIT[0],
                    "VISIT": PROCEDURE_VISIT[1],
                    "SVPRESP": "Y",
                    "SVOCCUR": "Y",
                    "SVREASOC": "",
                    "VISITDY": 1,
                    "EPOCH": "TREATMENT",
                    "SVSTDTC": _d(rec.randomized_on),
                    "SVENDTC": _d(rec.discharged_on) or day,
                }
            )
        for visit in sorted(rec.visits, key=lambda v: subj.visitnum.get(v.visit_code, 0)):
            if visit.visit_code not in subj.visitnum:
                continue
            spec = protocol.visit(visit.visit_code)
            done = visit.status == "done"
            sv.rows.append(
                {
                    "USUBJID": subj.uid,
                    "VISITNUM": subj.visitnum[visit.visit_code],
                    "VISIT": spec.name.upper(),
                    "SVPRESP": "Y",
                    "SVOCCUR": "Y" if done else "N",
                    "SVREASOC": "" if done else cut_words(visit.missed_reason or ""),
                    "VISITDY": study_day(spec.target_day),
                    "EPOCH": "FOLLOW-UP",
                    "SVSTDTC": _d(visit.visit_date) if done else "",
                    "SVENDTC": _d(visit.visit_date) if done else "",
                }
            )
    return sv


# --------------------------------------------------------------------------- AE, HO


AE_VARIABLES = [
    *_ids("AE"),
    V(
        "AESPID",
        "Sponsor-Defined Identifier",
        role="Identifier",
        core="Perm",
        origin="Assigned",
        comment="The adverse-event form's sequence number; HO.HOSPID links",
    ),
    V("AETERM", "Reported Term for the Adverse Event", role="Topic", core="Req"),
    V(
        "AEDECOD",
        "Dictionary-Derived Term",
        role="Synonym Qualifier",
        core="Req",
        origin="Derived",
        comment="MedDRA coding is not done in trialdesk: the reported term "
        "in upper case until codes are imported (docs/exports.md)",
        method="MedDRA preferred term from the imported coding, else upper-case AETERM",
    ),
    V(
        "AECAT",
        "Category for Adverse Event",
        role="Grouping Qualifier",
        core="Perm",
        origin="Derived",
        method="MAJOR ADVERSE EVENT when the MAE category is not none",
    ),
    V(
        "AESCAT",
        "Subcategory for Adverse Event",
        role="Grouping Qualifier",
        core="Perm",
        origin="Collected",
        comment="The END-1 major adverse event category",
    ),
    V(
        "AEBODSYS",
        "Body System or Organ Class",
        role="Result Qualifier",
        core="Exp",
        origin="Derived",
        comment="MedDRA SOC from the imported coding; empty until imported",
    ),
    V("AESEV", "Severity/Intensity", role="Record Qualifier", core="Perm", codelist="AESEV"),
    V("AESER", "Serious Event", role="Record Qualifier", core="Exp", codelist="NY"),
    V(
        "AEREL",
        "Causality",
        role="Record Qualifier",
        core="Exp",
        codelist="AEREL",
        comment="Relationship to the index procedure",
    ),
    V("AEOUT", "Outcome of Adverse Event", role="Record Qualifier", core="Perm", codelist="OUT"),
    V(
        "AESDTH",
        "Results in Death",
        role="Record Qualifier",
        core="Perm",
        origin="Derived",
        codelist="NY",
        method="Y when the outcome is fatal",
    ),
    V(
        "AESHOSP",
        "Requires or Prolongs Hospitalization",
        role="Record Qualifier",
        core="Perm",
        codelist="NY",
        comment="Collected from protocol 2.0 (amendment 1); empty under 1.0",
    ),
    V("EPOCH", "Epoch", role="Timing", core="Perm", origin="Assigned", codelist="EPOCH"),
    V("AESTDTC", "Start Date/Time of Adverse Event", role="Timing", core="Exp"),
    V("AEENDTC", "End Date/Time of Adverse Event", role="Timing", core="Exp"),
]


def _ae(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    ae = Dataset("AE", "Adverse Events", AE_VARIABLES)
    ae.klass, ae.structure = "EVENTS", "One record per adverse event per subject"
    ae.keys = ("STUDYID", "USUBJID", "AEDECOD", "AESTDTC")
    labels = _choice_labels(data.protocol, "adverse_event", "mae_category")
    for subj in subjects:
        aes = subj.forms("adverse_event")
        aes.sort(key=lambda item: (str(item[1].get("onset_date", "")), item[0]))
        for seq, (spid, values) in enumerate(aes, start=1):
            term = cut_words(str(values.get("term", "")))
            decod, bodsys = data.coding.get(term.upper(), (term.upper(), ""))
            category = str(values.get("mae_category") or "none")
            ae.rows.append(
                {
                    "USUBJID": subj.uid,
                    "AESEQ": seq,
                    "AESPID": str(spid),
                    "AETERM": term,
                    "AEDECOD": decod,
                    "AECAT": "" if category == "none" else "MAJOR ADVERSE EVENT",
                    "AESCAT": "" if category == "none" else labels.get(category, "").upper(),
                    "AEBODSYS": bodsys,
                    "AESEV": AESEV.get(str(values.get("severity")), ""),
                    "AESER": _yn(values.get("serious")),
                    "AEREL": AEREL.get(str(values.get("procedure_related")), ""),
                    "AEOUT": AEOUT.get(str(values.get("outcome")), ""),
                    "AESDTH": "Y" if values.get("outcome") == "fatal" else "",
                    "AESHOSP": _yn(values.get("hospitalized")),
                    "EPOCH": "FOLLOW-UP",
                    "AESTDTC": _s(values.get("onset_date")),
                    "AEENDTC": _s(values.get("resolved_date")),
                }
            )
    return ae


HO_VARIABLES = [
    *_ids("HO"),
    V(
        "HOSPID",
        "Sponsor-Defined Identifier",
        role="Identifier",
        core="Perm",
        origin="Assigned",
        comment="AESPID of the adverse event (2.0) or the visit (1.0 counts)",
    ),
    V("HOTERM", "Healthcare Encounter Term", role="Topic", core="Req", origin="Assigned"),
    V(
        "HODECOD",
        "Dictionary-Derived Term",
        role="Synonym Qualifier",
        core="Perm",
        origin="Assigned",
    ),
    V("HOCAT", "Category for Healthcare Encounter", role="Grouping Qualifier", core="Perm"),
    V(
        "HOPRESP",
        "Pre-specified",
        role="Variable Qualifier",
        core="Perm",
        origin="Assigned",
        codelist="NY",
    ),
    V("HOOCCUR", "Occurrence", role="Record Qualifier", core="Perm", codelist="NY"),
    V("VISITNUM", "Visit Number", "Num", role="Timing", core="Perm", origin="Assigned"),
    V("HODTC", "Date/Time of Event Collection", role="Timing", core="Perm"),
    V(
        "HOSTDTC",
        "Start Date/Time of Healthcare Encounter",
        role="Timing",
        core="Exp",
        comment="Admission date (2.0); empty for a hospitalization counted at a 1.0 visit",
    ),
    V("HOENDTC", "End Date/Time of Healthcare Encounter", role="Timing", core="Perm"),
]


def _ho(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    """Hospitalizations: each dated one (2.0 adverse-event form), and each one counted at a
    1.0 visit (no event date: HODTC is the visit's date)."""
    ho = Dataset("HO", "Healthcare Encounters", HO_VARIABLES)
    ho.klass, ho.structure = "EVENTS", "One record per hospitalization per subject"
    ho.keys = ("STUDYID", "USUBJID", "HOTERM", "HOSTDTC", "HOSPID")
    for subj in subjects:
        rows: list[dict[str, object]] = []
        for spid, values in subj.forms("adverse_event"):
            if values.get("hospitalized") is not True:
                continue
            rows.append(
                {
                    "HOSPID": str(spid),
                    "HOCAT": HOSP_REASON.get(str(values.get("hospitalization_reason")), ""),
                    "VISITNUM": None,
                    "HODTC": "",
                    "HOSTDTC": _s(values.get("admission_date") or values.get("onset_date")),
                    "HOENDTC": _s(values.get("hospital_discharge_date")),
                }
            )
        done = {v.visit_code: v.visit_date for v in subj.rec.visits if v.status == "done"}
        for f in subj.rec.forms:
            if not f.visit_code:
                continue
            count = f.values().get("hf_hospitalizations")
            if not isinstance(count, int) or count <= 0:
                continue
            for i in range(count):
                rows.append(
                    {
                        "HOSPID": f"{f.visit_code}-{i + 1}",
                        "HOCAT": "HEART FAILURE",
                        "VISITNUM": subj.visitnum.get(f.visit_code),
                        "HODTC": _d(done.get(f.visit_code)),
                        "HOSTDTC": "",
                        "HOENDTC": "",
                    }
                )
        rows.sort(key=lambda r: (str(r["HOSTDTC"] or r["HODTC"]), str(r["HOSPID"])))
        for seq, row in enumerate(rows, start=1):
            ho.rows.append(
                {
                    "USUBJID": subj.uid,
                    "HOSEQ": seq,
                    "HOTERM": "HOSPITAL",
                    "HODECOD": "HOSPITAL",
                    "HOPRESP": "Y",
                    "HOOCCUR": "Y",
                    **row,
                }
            )
    return ho


# --------------------------------------------------------------------------- MH


MH_VARIABLES = [
    *_ids("MH"),
    V(
        "MHTERM",
        "Reported Term for the Medical History",
        role="Topic",
        core="Req",
        origin="Assigned",
        comment="The CRF question's label",
    ),
    V(
        "MHCAT",
        "Category for Medical History",
        role="Grouping Qualifier",
        core="Perm",
        origin="Assigned",
    ),
    V(
        "MHPRESP",
        "Medical History Event Pre-Specified",
        role="Variable Qualifier",
        core="Perm",
        origin="Assigned",
        codelist="NY",
    ),
    V("MHOCCUR", "Medical History Occurrence", role="Record Qualifier", core="Perm", codelist="NY"),
    V("MHDTC", "Date/Time of History Collection", role="Timing", core="Perm"),
]


def _mh(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    mh = Dataset("MH", "Medical History", MH_VARIABLES)
    mh.klass, mh.structure = "EVENTS", "One record per medical history question per subject"
    mh.keys = ("STUDYID", "USUBJID", "MHTERM")
    form = _form(data.protocol, "medical_history")
    for subj in subjects:
        values = subj.latest("medical_history")
        if not values or form is None:
            continue
        seq = 0
        for f in form.fields:
            value = values.get(f.code)
            if f.type is FieldType.BOOLEAN and isinstance(value, bool):
                term, occur = f.label, _yn(value)
            elif f.type is FieldType.CHOICE and value:
                choice = {c.code: c.label for c in f.choices or []}.get(str(value), str(value))
                term, occur = f"{f.label}: {choice}", "Y"
            else:
                continue
            seq += 1
            mh.rows.append(
                {
                    "USUBJID": subj.uid,
                    "MHSEQ": seq,
                    "MHTERM": cut_words(term.upper()),
                    "MHCAT": "CARDIOVASCULAR HISTORY",
                    "MHPRESP": "Y",
                    "MHOCCUR": occur,
                    "MHDTC": _s(values.get("assessment_date")),
                }
            )
    return mh


# --------------------------------------------------------------------------- findings


def _findings_vars(d: str, testcd_list: str, extra: Sequence[Variable] = ()) -> list[Variable]:
    return [
        *_ids(d),
        V(
            f"{d}TESTCD",
            "Short Name of Test"[:40],
            role="Topic",
            core="Req",
            origin="Assigned",
            codelist=testcd_list,
        ),
        V(f"{d}TEST", "Name of Test", role="Synonym Qualifier", core="Req", origin="Assigned"),
        V(f"{d}CAT", "Category", role="Grouping Qualifier", core="Perm", origin="Assigned"),
        V(f"{d}ORRES", "Result or Finding in Original Units", role="Result Qualifier", core="Exp"),
        V(f"{d}ORRESU", "Original Units", role="Variable Qualifier", core="Exp", origin="Assigned"),
        V(
            f"{d}STRESC",
            "Result in Standard Format",
            role="Result Qualifier",
            core="Exp",
            origin="Derived",
            method="ORRES as text (units unchanged)",
        ),
        V(
            f"{d}STRESN",
            "Numeric Result in Standard Units",
            "Num",
            role="Result Qualifier",
            core="Exp",
            origin="Derived",
            method="ORRES as a number when numeric",
        ),
        V(f"{d}STRESU", "Standard Units", role="Variable Qualifier", core="Exp", origin="Assigned"),
        *extra,
        V(
            f"{d}BLFL",
            "Baseline Flag",
            role="Record Qualifier",
            core="Exp",
            origin="Derived",
            codelist="NY",
            method="Y for the screening assessment",
        ),
        *_visit_vars(),
        V(f"{d}DTC", "Date/Time of Collection", role="Timing", core="Exp"),
    ]


@dataclass(frozen=True)
class _Test:
    form: str
    field: str
    testcd: str
    test: str
    unit: str = ""


def _findings(
    name: str,
    label: str,
    variables: list[Variable],
    tests: Sequence[_Test],
    subjects: Sequence[_Subj],
    cat: str,
    date_fields: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> Dataset:
    ds = Dataset(name, label, variables)
    ds.klass, ds.structure = "FINDINGS", "One record per test per visit per subject"
    ds.keys = ("STUDYID", "USUBJID", f"{name}TESTCD", "VISITNUM")
    for subj in subjects:
        rows: list[dict[str, object]] = []
        for f in subj.rec.forms:
            for test in (t for t in _tests_of(f.form_code, name)):
                values = f.values()
                value = values.get(test.field)
                if value is None:
                    continue
                visitnum, visit, baseline = (
                    (subj.visitnum.get(f.visit_code), f.visit_code, "")
                    if f.visit_code
                    else (SCREENING_VISIT[0], SCREENING_VISIT[1], "Y")
                )
                number = (
                    value
                    if isinstance(value, int | float) and not isinstance(value, bool)
                    else None
                )
                text = _yn(value) if isinstance(value, bool) else str(value)
                rows.append(
                    {
                        f"{name}TESTCD": test.testcd,
                        f"{name}TEST": test.test,
                        f"{name}CAT": cat,
                        f"{name}ORRES": text,
                        f"{name}ORRESU": test.unit,
                        f"{name}STRESC": text,
                        f"{name}STRESN": number,
                        f"{name}STRESU": test.unit,
                        f"{name}BLFL": baseline,
                        "VISITNUM": visitnum,
                        "VISIT": visit.upper() if f.visit_code else visit,
                        f"{name}DTC": _s(values.get(date_fields.get(f.form_code, ""))),
                        **(extra or {}),
                    }
                )
        rows.sort(key=lambda r: (r["VISITNUM"] or 0, str(r[f"{name}TESTCD"])))
        for seq, row in enumerate(rows, start=1):
            ds.rows.append({"USUBJID": subj.uid, f"{name}SEQ": seq, **row})
    return ds


_T: tuple[_Test, ...] = (
    # QS: the KCCQ overall summary score, screening and each follow-up visit
    _Test("kccq", "overall_score", "KCCQOSS", "KCCQ Overall Summary Score"),
    _Test("follow_up", "kccq_overall_score", "KCCQOSS", "KCCQ Overall Summary Score"),
    # CV: the core laboratory's transthoracic echocardiogram
    _Test("tte", "mr_grade", "MRGRADE", "Mitral Regurgitation Grade"),
    _Test("tte", "regurgitant_volume_ml", "MRRVOL", "Mitral Regurgitant Volume", "mL"),
    _Test("tte", "eroa_cm2", "MREROA", "Mitral Effective Regurgitant Orifice Area", "cm2"),
    _Test("tte", "lvef_pct", "LVEF", "Left Ventricular Ejection Fraction", "%"),
    _Test("tte", "lvedd_mm", "LVEDD", "LV End-Diastolic Diameter", "mm"),
    _Test("tte", "lvesd_mm", "LVESD", "LV End-Systolic Diameter", "mm"),
    _Test("tte", "mitral_annular_calcification", "MACSEV", "Mitral Annular Calcification"),
    _Test("tte", "organic_mitral_disease", "MVORGDIS", "Organic Mitral Valve Disease"),
    _Test("follow_up", "mr_grade", "MRGRADE", "Mitral Regurgitation Grade"),
    _Test("follow_up", "regurgitant_volume_ml", "MRRVOL", "Mitral Regurgitant Volume", "mL"),
    _Test("follow_up", "eroa_cm2", "MREROA", "Mitral Effective Regurgitant Orifice Area", "cm2"),
    _Test("follow_up", "lvef_pct", "LVEF", "Left Ventricular Ejection Fraction", "%"),
    _Test("follow_up", "lvedd_mm", "LVEDD", "LV End-Diastolic Diameter", "mm"),
    _Test("follow_up", "lvesd_mm", "LVESD", "LV End-Systolic Diameter", "mm"),
    # VS
    _Test("demographics", "height_cm", "HEIGHT", "Height", "cm"),
    _Test("demographics", "weight_kg", "WEIGHT", "Weight", "kg"),
)
_DOMAIN_OF = {"KCCQOSS": "QS", "HEIGHT": "VS", "WEIGHT": "VS"}
DATE_FIELDS = {
    "kccq": "assessment_date",
    "follow_up": "visit_date",
    "tte": "exam_date",
    "demographics": "assessment_date",
}


def _tests_for(form_code: str) -> list[_Test]:
    return [t for t in _T if t.form == form_code]


def _tests_of(form_code: str, domain: str) -> list[_Test]:
    return [t for t in _tests_for(form_code) if _DOMAIN_OF.get(t.testcd, "CV") == domain]


def test_codes(domain: str) -> list[tuple[str, str]]:
    """(TESTCD, TEST) of a findings domain, for its Define-XML codelist."""
    seen: dict[str, str] = {}
    for t in _T:
        if _DOMAIN_OF.get(t.testcd, "CV") == domain:
            seen.setdefault(t.testcd, t.test)
    return sorted(seen.items())


def _qs(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    return _findings(
        "QS",
        "Questionnaires",
        _findings_vars("QS", "QSTESTCD"),
        _T,
        subjects,
        "KANSAS CITY CARDIOMYOPATHY QUESTIONNAIRE",
        DATE_FIELDS,
    )


def _cv(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    extra = [
        V(
            "CVMETHOD",
            "Method of Test or Examination",
            role="Record Qualifier",
            core="Perm",
            origin="Assigned",
        ),
        V("CVEVAL", "Evaluator", role="Record Qualifier", core="Perm", origin="Assigned"),
    ]
    return _findings(
        "CV",
        "Cardiovascular System Findings",
        _findings_vars("CV", "CVTESTCD", extra),
        _T,
        subjects,
        "ECHOCARDIOGRAPHY",
        DATE_FIELDS,
        {"CVMETHOD": "TRANSTHORACIC ECHOCARDIOGRAPHY", "CVEVAL": "CORE LABORATORY"},
    )


def _vs(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    return _findings(
        "VS",
        "Vital Signs",
        _findings_vars("VS", "VSTESTCD"),
        _T,
        subjects,
        "BODY MEASUREMENTS",
        DATE_FIELDS,
    )


# --------------------------------------------------------------------------- PR, devices


PR_VARIABLES = [
    *_ids("PR"),
    V("PRTRT", "Reported Name of Procedure", role="Topic", core="Req", origin="Assigned"),
    V("PRCAT", "Category", role="Grouping Qualifier", core="Perm", origin="Assigned"),
    V(
        "PRPRESP",
        "Pre-specified",
        role="Variable Qualifier",
        core="Perm",
        origin="Assigned",
        codelist="NY",
    ),
    V("PROCCUR", "Occurrence", role="Record Qualifier", core="Perm", codelist="NY"),
    V("EPOCH", "Epoch", role="Timing", core="Perm", origin="Assigned", codelist="EPOCH"),
    V("PRSTDTC", "Start Date/Time of Procedure", role="Timing", core="Exp"),
    V("PRENDTC", "End Date/Time of Procedure", role="Timing", core="Perm"),
    V(
        "PRDUR",
        "Duration of Procedure",
        role="Timing",
        core="Perm",
        origin="Derived",
        method="End time minus start time, ISO 8601 duration",
    ),
]
STEP_FIELDS = (
    ("distal_anchor_deployed", "DISTANCH", "Distal anchor deployed"),
    ("tension_applied", "TENSION", "Incremental tension applied"),
    ("proximal_anchor_locked", "PROXLOCK", "Proximal anchor locked"),
    ("safety_efficacy_reconfirmed", "RECONF", "Safety and efficacy reconfirmed"),
    ("implant_released", "RELEASED", "Implant released from delivery system"),
)


def _minutes(start: str, end: str) -> int:
    a = dt.datetime.strptime(start[:5], "%H:%M")
    b = dt.datetime.strptime(end[:5], "%H:%M")
    return int((b - a).total_seconds() // 60) % (24 * 60)


def _pr(data: SdtmInput, subjects: Sequence[_Subj]) -> Dataset:
    """Angiogram and venogram (screening, procedure day) and the index procedure with its
    times; the index procedure is named, and its steps written (SUPPPR), only unblinded."""
    pr = Dataset("PR", "Procedures", PR_VARIABLES)
    pr.klass, pr.structure = "INTERVENTIONS", "One record per procedure per subject"
    pr.keys = ("STUDYID", "USUBJID", "PRTRT", "PRSTDTC")
    supp: list[dict[str, object]] = []
    for subj in subjects:
        rows: list[dict[str, object]] = []
        for code, name in (
            ("angiogram", "CORONARY ANGIOGRAM"),
            ("venogram", "CORONARY SINUS VENOGRAM"),
        ):
            values = subj.latest(code)
            if values:
                rows.append(
                    {
                        "PRTRT": name,
                        "PRCAT": "SCREENING",
                        "EPOCH": "SCREENING",
                        "PRSTDTC": _s(values.get("procedure_date")),
                        "PRENDTC": "",
                        "PRDUR": "",
                        "_steps": {},
                    }
                )
        reading = subj.reading
        if subj.rec.procedure_done:
            values = dict(reading.procedure)
            day = _s(values.get("procedure_date"))
            start, end = values.get("start_time"), values.get("end_time")
            name = "INDEX PROCEDURE"
            if reading.procedure_form is not None:
                form = _form(data.protocol, reading.procedure_form)
                name = (form.name if form else reading.procedure_form).upper()
            dur = ""
            if isinstance(start, str) and isinstance(end, str) and data.unblinded:
                dur = f"PT{_minutes(start, end)}M"
            rows.append(
                {
                    "PRTRT": cut_words(name),
                    "PRCAT": "INDEX PROCEDURE",
                    "EPOCH": "TREATMENT",
                    "PRSTDTC": f"{day}T{start[:5]}"
                    if day and isinstance(start, str) and data.unblinded
                    else day,
                    "PRENDTC": f"{day}T{end[:5]}"
                    if day and isinstance(end, str) and data.unblinded
                    else "",
                    "PRDUR": dur,
                    "_steps": values if data.unblinded else {},
                }
            )
        for seq, row in enumerate(rows, start=1):
            steps = row.pop("_steps")
            assert isinstance(steps, dict)
            pr.rows.append(
                {"USUBJID": subj.uid, "PRSEQ": seq, "PRPRESP": "Y", "PROCCUR": "Y", **row}
            )
            for fcode, qnam, qlabel in STEP_FIELDS:
                if isinstance(steps.get(fcode), bool):
                    supp.append(
                        _supp("PR", subj.uid, "PRSEQ", seq, qnam, qlabel, _yn(steps[fcode]))
                    )
    pr.supp = supp
    return pr


def _supp(
    rdomain: str, uid: str, idvar: str, idval: int, qnam: str, qlabel: str, qval: str
) -> dict[str, object]:
    return {
        "RDOMAIN": rdomain,
        "USUBJID": uid,
        "IDVAR": idvar,
        "IDVARVAL": str(idval),
        "QNAM": qnam,
        "QLABEL": qlabel,
        "QVAL": qval,
        "QORIG": "CRF",
        "QEVAL": "",
    }


SUPP_VARIABLES = [
    V("STUDYID", "Study Identifier", role="Identifier", core="Req", origin="Assigned"),
    V("RDOMAIN", "Related Domain Abbreviation", role="Identifier", core="Req", origin="Assigned"),
    V("USUBJID", "Unique Subject Identifier", role="Identifier", core="Req", origin="Derived"),
    V("IDVAR", "Identifying Variable", role="Identifier", core="Exp", origin="Assigned"),
    V("IDVARVAL", "Identifying Variable Value", role="Identifier", core="Exp", origin="Assigned"),
    V("QNAM", "Qualifier Variable Name", role="Topic", core="Req", origin="Assigned"),
    V(
        "QLABEL",
        "Qualifier Variable Label",
        role="Synonym Qualifier",
        core="Req",
        origin="Assigned",
    ),
    V("QVAL", "Data Value", role="Result Qualifier", core="Req"),
    V("QORIG", "Origin", role="Record Qualifier", core="Req", origin="Assigned"),
    V("QEVAL", "Evaluator", role="Record Qualifier", core="Exp", origin="Assigned"),
]

DI_VARIABLES = [
    V("STUDYID", "Study Identifier", role="Identifier", core="Req", origin="Assigned"),
    V("DOMAIN", "Domain Abbreviation", role="Identifier", core="Req", origin="Assigned"),
    V(
        "SPDEVID",
        "Sponsor Device Identifier",
        role="Identifier",
        core="Req",
        comment="The device's GS1 UDI as scanned at the procedure",
    ),
    V("DISEQ", "Sequence Number", "Num", role="Identifier", core="Req", origin="Derived"),
    V("DIPARMCD", "Device Characteristic Short Name", role="Topic", core="Req", origin="Assigned"),
    V("DIPARM", "Device Characteristic", role="Synonym Qualifier", core="Req", origin="Assigned"),
    V("DIVAL", "Device Characteristic Value", role="Result Qualifier", core="Exp"),
]
DX_VARIABLES = [
    *_ids("DX"),
    V("SPDEVID", "Sponsor Device Identifier", role="Identifier", core="Exp"),
    V("DXTRT", "Name of Device Exposure", role="Topic", core="Req", origin="Assigned"),
    V(
        "DXOCCUR",
        "Device Exposure Occurrence",
        role="Record Qualifier",
        core="Perm",
        codelist="NY",
        comment="N when the implant was not released (attempted)",
    ),
    V("EPOCH", "Epoch", role="Timing", core="Perm", origin="Assigned", codelist="EPOCH"),
    V("DXSTDTC", "Start Date/Time of Device Exposure", role="Timing", core="Exp"),
]


def _devices(data: SdtmInput, subjects: Sequence[_Subj]) -> list[Dataset]:
    """DI (the device, by UDI) and DX (device exposure) from the implant procedure form:
    unblinded only, since who received a device tells the arm."""
    di = Dataset("DI", "Device Identifiers", DI_VARIABLES, standard="SDTMIG-MD")
    di.klass, di.structure = "SPECIAL PURPOSE", "One record per device characteristic"
    di.keys = ("STUDYID", "SPDEVID", "DIPARMCD")
    dx = Dataset("DX", "Device Exposure", DX_VARIABLES, standard="SDTMIG-MD")
    dx.klass, dx.structure = "INTERVENTIONS", "One record per device exposure per subject"
    dx.keys = ("STUDYID", "USUBJID", "SPDEVID", "DXSTDTC")
    seen: set[str] = set()
    for subj in subjects:
        udi = subj.reading.procedure.get("device_udi")
        if not subj.rec.procedure_done or not udi:
            continue
        released = subj.reading.procedure.get("implant_released")
        dx.rows.append(
            {
                "USUBJID": subj.uid,
                "DXSEQ": 1,
                "SPDEVID": str(udi),
                "DXTRT": "CORONARY SINUS MITRAL ANNULOPLASTY IMPLANT",
                "DXOCCUR": "N" if released is False else "Y",
                "EPOCH": "TREATMENT",
                "DXSTDTC": procedure_date(subj.reading),
            }
        )
        if str(udi) in seen:
            continue
        seen.add(str(udi))
        gtin = re.search(r"\(01\)(\d{14})", str(udi))
        params = [
            ("DEVTYPE", "Device Type", "CORONARY SINUS MITRAL ANNULOPLASTY IMPLANT"),
            ("UDI", "Unique Device Identifier", str(udi)),
        ]
        if gtin:
            params.append(("UDIDI", "UDI Device Identifier", gtin.group(1)))
        for seq, (cd, label, value) in enumerate(params, start=1):
            di.rows.append(
                {
                    "DOMAIN": "DI",
                    "SPDEVID": str(udi),
                    "DISEQ": seq,
                    "DIPARMCD": cd,
                    "DIPARM": label,
                    "DIVAL": cut_words(value),
                }
            )
    return [di, dx]


# --------------------------------------------------------------------------- trial design


TA_VARIABLES = [
    V("STUDYID", "Study Identifier", role="Identifier", core="Req", origin="Assigned"),
    V("DOMAIN", "Domain Abbreviation", role="Identifier", core="Req", origin="Assigned"),
    V("ARMCD", "Planned Arm Code", role="Topic", core="Req", origin="Protocol", codelist="ARMCD"),
    V("ARM", "Description of Planned Arm", role="Synonym Qualifier", core="Req", origin="Protocol"),
    V(
        "TAETORD",
        "Planned Order of Element within Arm",
        "Num",
        role="Timing",
        core="Req",
        origin="Protocol",
    ),
    V("ETCD", "Element Code", role="Record Qualifier", core="Req", origin="Protocol"),
    V(
        "ELEMENT",
        "Description of Element",
        role="Synonym Qualifier",
        core="Perm",
        origin="Protocol",
    ),
    V("TABRANCH", "Branch", role="Rule", core="Exp", origin="Protocol"),
    V("TATRANS", "Transition Rule", role="Rule", core="Exp", origin="Protocol"),
    V("EPOCH", "Epoch", role="Timing", core="Req", origin="Protocol", codelist="EPOCH"),
]
TE_VARIABLES = [
    V("STUDYID", "Study Identifier", role="Identifier", core="Req", origin="Assigned"),
    V("DOMAIN", "Domain Abbreviation", role="Identifier", core="Req", origin="Assigned"),
    V("ETCD", "Element Code", role="Topic", core="Req", origin="Protocol"),
    V("ELEMENT", "Description of Element", role="Synonym Qualifier", core="Req", origin="Protocol"),
    V("TESTRL", "Rule for Start of Element", role="Rule", core="Req", origin="Protocol"),
    V("TEENRL", "Rule for End of Element", role="Rule", core="Perm", origin="Protocol"),
    V("TEDUR", "Planned Duration of Element", role="Timing", core="Perm", origin="Protocol"),
]
TV_VARIABLES = [
    V("STUDYID", "Study Identifier", role="Identifier", core="Req", origin="Assigned"),
    V("DOMAIN", "Domain Abbreviation", role="Identifier", core="Req", origin="Assigned"),
    V("VISITNUM", "Visit Number", "Num", role="Topic", core="Req", origin="Protocol"),
    V("VISIT", "Visit Name", role="Synonym Qualifier", core="Perm", origin="Protocol"),
    V(
        "VISITDY",
        "Planned Study Day of Visit",
        "Num",
        role="Timing",
        core="Perm",
        origin="Protocol",
    ),
    V(
        "ARMCD",
        "Planned Arm Code",
        role="Record Qualifier",
        core="Exp",
        origin="Protocol",
        comment="Empty: every visit applies to both arms",
    ),
    V("TVSTRL", "Visit Start Rule", role="Rule", core="Req", origin="Protocol"),
    V("TVENRL", "Visit End Rule", role="Rule", core="Perm", origin="Protocol"),
]
TI_VARIABLES = [
    V("STUDYID", "Study Identifier", role="Identifier", core="Req", origin="Assigned"),
    V("DOMAIN", "Domain Abbreviation", role="Identifier", core="Req", origin="Assigned"),
    V("IETESTCD", "Incl/Excl Criterion Short Name", role="Topic", core="Req", origin="Protocol"),
    V(
        "IETEST",
        "Inclusion/Exclusion Criterion",
        role="Synonym Qualifier",
        core="Req",
        origin="Protocol",
        comment="Cut at a word boundary at 200 characters; the full text is in the protocol",
    ),
    V(
        "IECAT",
        "Inclusion/Exclusion Category",
        role="Grouping Qualifier",
        core="Req",
        origin="Protocol",
        codelist="IECAT",
    ),
    V(
        "TIVERS",
        "Protocol Criteria Versions",
        role="Record Qualifier",
        core="Perm",
        origin="Protocol",
    ),
]
TS_VARIABLES = [
    V("STUDYID", "Study Identifier", role="Identifier", core="Req", origin="Assigned"),
    V("DOMAIN", "Domain Abbreviation", role="Identifier", core="Req", origin="Assigned"),
    V("TSSEQ", "Sequence Number", "Num", role="Identifier", core="Req", origin="Derived"),
    V(
        "TSPARMCD",
        "Trial Summary Parameter Short Name",
        role="Topic",
        core="Req",
        origin="Assigned",
        codelist="TSPARMCD",
    ),
    V("TSPARM", "Trial Summary Parameter", role="Synonym Qualifier", core="Req", origin="Assigned"),
    V("TSVAL", "Parameter Value", role="Result Qualifier", core="Exp", origin="Protocol"),
    V("TSVALNF", "Parameter Null Flavor", role="Result Qualifier", core="Perm", origin="Assigned"),
]

TS_PARAMETERS = (
    "ACTSUB",
    "ADAPT",
    "ADDON",
    "AGEMIN",
    "AGEMAX",
    "COMPTRT",
    "CURTRT",
    "DCUTDTC",
    "FCNTRY",
    "HLTSUBJI",
    "INDIC",
    "INTMODEL",
    "INTTYPE",
    "LENGTH",
    "NARMS",
    "OBJPRIM",
    "OUTMSPRI",
    "PLANSUB",
    "RANDOM",
    "RANDQT",
    "REGID",
    "SDTIGVER",
    "SDTMVER",
    "SENDTC",
    "SEXPOP",
    "SPONSOR",
    "SSTDTC",
    "STOPRULE",
    "STYPE",
    "TBLIND",
    "TCNTRL",
    "TDIGRP",
    "TINDTP",
    "TITLE",
    "TPHASE",
    "TTYPE",
)
"""Every TSPARMCD the export writes (docs/exports.md lists them; a test checks both)."""


def _trial_design(data: SdtmInput, subjects: Sequence[_Subj]) -> list[Dataset]:
    protocol = data.protocol
    te = Dataset("TE", "Trial Elements", TE_VARIABLES)
    te.klass, te.structure, te.keys = (
        "TRIAL DESIGN",
        "One record per planned Element",
        ("STUDYID", "ETCD"),
    )
    elements: list[tuple[str, str, str, str, str]] = [
        ("SCRN", "Screening", "Informed consent", "Randomization", ""),
    ]
    codes: dict[str, str] = {}
    if data.unblinded:
        for i, a in enumerate(protocol.arms, start=1):
            form = _form(protocol, a.procedure_form) if a.procedure_form else None
            codes[a.code] = f"PROC{i}"
            elements.append(
                (
                    f"PROC{i}",
                    cut_words(form.name if form else a.label),
                    "Index procedure after randomization",
                    "Discharge",
                    "",
                )
            )
    else:
        elements.append(
            (
                "PROC",
                "Index procedure (concealed)",
                "Index procedure after randomization",
                "Discharge",
                "",
            )
        )
    last = protocol.visits[-1].target_day if protocol.visits else 0
    elements.append(("FU", "Follow-up", "Discharge", "End of follow-up", f"P{last}D"))
    for etcd, name, start, end, dur in elements:
        te.rows.append(
            {"ETCD": etcd, "ELEMENT": name, "TESTRL": start, "TEENRL": end, "TEDUR": dur}
        )
    out: list[Dataset] = []
    if data.unblinded:
        ta = Dataset("TA", "Trial Arms", TA_VARIABLES)
        ta.klass, ta.structure = "TRIAL DESIGN", "One record per planned Element per Arm"
        ta.keys = ("STUDYID", "ARMCD", "TAETORD")
        names = {e[0]: e[1] for e in elements}
        for a in protocol.arms:
            path = [
                ("SCRN", "SCREENING", f"Randomized to {a.code}", ""),
                (codes[a.code], "TREATMENT", "", ""),
                ("FU", "FOLLOW-UP", "", ""),
            ]
            for order, (etcd, epoch, branch, trans) in enumerate(path, start=1):
                ta.rows.append(
                    {
                        "ARMCD": a.code,
                        "ARM": a.label,
                        "TAETORD": order,
                        "ETCD": etcd,
                        "ELEMENT": names[etcd],
                        "TABRANCH": branch,
                        "TATRANS": trans,
                        "EPOCH": epoch,
                    }
                )
        out.append(ta)
    out.append(te)
    tv = Dataset("TV", "Trial Visits", TV_VARIABLES)
    tv.klass, tv.structure = "TRIAL DESIGN", "One record per planned Visit per Arm"
    tv.keys = ("STUDYID", "VISITNUM", "ARMCD")
    tv.rows.append(
        {
            "VISITNUM": SCREENING_VISIT[0],
            "VISIT": SCREENING_VISIT[1],
            "VISITDY": None,
            "ARMCD": "",
            "TVSTRL": "Informed consent",
            "TVENRL": "Central Review Committee decision and anatomy on the procedure day",
        }
    )
    tv.rows.append(
        {
            "VISITNUM": PROCEDURE_VISIT[0],
            "VISIT": PROCEDURE_VISIT[1],
            "VISITDY": 1,
            "ARMCD": "",
            "TVSTRL": "Randomization",
            "TVENRL": "Discharge",
        }
    )
    for i, v in enumerate(protocol.visits, start=FIRST_PROTOCOL_VISITNUM):
        tv.rows.append(
            {
                "VISITNUM": i,
                "VISIT": v.name.upper(),
                "VISITDY": study_day(v.target_day),
                "ARMCD": "",
                "TVSTRL": f"Day {v.target_day} after randomization, from {v.window_before} days "
                "before",
                "TVENRL": f"{v.window_after} days after the target day",
            }
        )
    ti = Dataset("TI", "Trial Inclusion/Exclusion Criteria", TI_VARIABLES)
    ti.klass, ti.structure = "TRIAL DESIGN", "One record per I/E criterion"
    ti.keys = ("STUDYID", "IETESTCD")
    for c in protocol.criteria:
        ti.rows.append(
            {
                "IETESTCD": ietestcd(c.id),
                "IETEST": cut_words(c.text),
                "IECAT": "INCLUSION" if c.kind == "inclusion" else "EXCLUSION",
                "TIVERS": protocol.version,
            }
        )
    ts = Dataset("TS", "Trial Summary", TS_VARIABLES)
    ts.klass, ts.structure = "TRIAL DESIGN", "One record per trial summary parameter value"
    ts.keys = ("STUDYID", "TSPARMCD", "TSSEQ")
    for code, label, value in ts_parameters(data, subjects):
        seq = 1 + sum(1 for r in ts.rows if r["TSPARMCD"] == code)
        ts.rows.append(
            {
                "TSSEQ": seq,
                "TSPARMCD": code,
                "TSPARM": label,
                "TSVAL": cut_words(value),
                "TSVALNF": "" if value else "NA",
            }
        )
    return [*out, tv, ti, ts]


def ts_parameters(data: SdtmInput, subjects: Sequence[_Subj]) -> list[tuple[str, str, str]]:
    """(TSPARMCD, TSPARM, TSVAL): SSTDTC is the first informed consent (FDA's study start)."""
    p = data.protocol
    consents = [s.rec.consent_date for s in subjects if s.rec.consent_date]
    exits = [s.rec.exit_date for s in subjects if s.rec.exit_date]
    on_study = any(s.rec.exit_date is None and s.rec.allocation for s in subjects)
    last_visit = p.visits[-1] if p.visits else None
    countries = sorted({ALPHA3.get(s.rec.country, s.rec.country) for s in subjects})
    rows: list[tuple[str, str, str]] = [
        ("TITLE", "Trial Title", p.title),
        ("SPONSOR", "Clinical Study Sponsor", "NOT APPLICABLE (demonstration system)"),
        ("REGID", "Registry Identifier", ""),
        ("SDTIGVER", "SDTM IG Version", SDTMIG_VERSION),
        ("SDTMVER", "SDTM Version", SDTM_VERSION),
        ("STYPE", "Study Type", "INTERVENTIONAL"),
        ("INTTYPE", "Intervention Type", "DEVICE"),
        ("INTMODEL", "Intervention Model", "PARALLEL"),
        ("TPHASE", "Trial Phase Classification", "NOT APPLICABLE"),
        ("TTYPE", "Trial Type", "EFFICACY"),
        ("TTYPE", "Trial Type", "SAFETY"),
        ("TINDTP", "Trial Intent Type", "TREATMENT"),
        (
            "INDIC",
            "Trial Disease/Condition Indication",
            "Functional mitral regurgitation in heart failure",
        ),
        ("TDIGRP", "Diagnosis Group", "Heart failure with functional mitral regurgitation"),
        (
            "OBJPRIM",
            "Trial Primary Objective",
            "Safety: freedom from major adverse events at 12 months in the intervention arm; "
            "efficacy: hierarchical composite at 24 months analysed as a win ratio",
        ),
        (
            "OUTMSPRI",
            "Primary Outcome Measure",
            "Freedom from major adverse events at 12 months (END-1)",
        ),
        (
            "OUTMSPRI",
            "Primary Outcome Measure",
            "Win ratio of death, transplant or LVAD, mitral intervention, heart-failure "
            "hospitalization and KCCQ improvement at 24 months (END-2)",
        ),
        ("RANDOM", "Trial is Randomized", "Y"),
        (
            "RANDQT",
            "Randomization Quotient",
            str(round(p.arms[0].ratio / sum(a.ratio for a in p.arms), 4)),
        ),
        ("TBLIND", "Trial Blinding Schema", "DOUBLE BLIND"),
        ("TCNTRL", "Control Type", "PLACEBO"),
        ("COMPTRT", "Comparative Treatment Name", "SHAM PROCEDURE"),
        ("CURTRT", "Current Therapy or Treatment", "Guideline-directed medical therapy"),
        ("ADDON", "Added on to Existing Treatments", "Y"),
        ("ADAPT", "Adaptive Design", "N"),
        ("NARMS", "Planned Number of Arms", str(len(p.arms))),
        ("PLANSUB", "Planned Number of Subjects", str(p.enrolment.target_subjects)),
        (
            "ACTSUB",
            "Actual Number of Subjects",
            str(sum(1 for s in subjects if s.rec.allocation is not None)),
        ),
        ("SEXPOP", "Sex of Participants", "BOTH"),
        ("AGEMIN", "Planned Minimum Age of Subjects", "P18Y"),
        ("AGEMAX", "Planned Maximum Age of Subjects", ""),
        ("HLTSUBJI", "Healthy Subject Indicator", "N"),
        ("LENGTH", "Trial Length", f"P{last_visit.target_day}D" if last_visit else ""),
        (
            "STOPRULE",
            "Study Stop Rules",
            "Interim look when half the randomized subjects are past 12 months (END-3)",
        ),
        ("SSTDTC", "Study Start Date", _d(min(consents)) if consents else ""),
        ("SENDTC", "Study End Date", _d(max(exits)) if exits and not on_study else ""),
        ("DCUTDTC", "Data Cutoff Date", ""),
    ]
    rows += [("FCNTRY", "Planned Country of Investigational Sites", c) for c in countries]
    return rows


def ietestcd(criterion_id: str) -> str:
    code = re.sub(r"[^A-Z0-9]", "", criterion_id.upper())
    return code[:8] if code and code[0].isalpha() else ("C" + code)[:8]


# --------------------------------------------------------------------------- helpers


def _form(protocol: Protocol, code: str) -> Any:
    for f in protocol.forms:
        if f.code == code:
            return f
    return None


def _choice_labels(protocol: Protocol, form: str, field_code: str) -> dict[str, str]:
    f = _form(protocol, form)
    if f is None:
        return {}
    for fld in f.fields:
        if fld.code == field_code:
            return {c.code: c.label for c in fld.choices or []}
    return {}


def supplemental(datasets: Sequence[Dataset]) -> list[Dataset]:
    """SUPP-- datasets for the parents that carry supplemental qualifiers."""
    out: list[Dataset] = []
    for ds in datasets:
        rows = ds.supp
        if rows:
            supp = Dataset(
                f"SUPP{ds.name}", f"Supplemental Qualifiers for {ds.name}", SUPP_VARIABLES
            )
            supp.klass, supp.structure = "RELATIONSHIP", "One record per supplemental qualifier"
            supp.keys = ("STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM")
            supp.rows = [dict(r) for r in rows]
            out.append(supp)
    return out
