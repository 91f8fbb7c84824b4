"""ADaM datasets behind the two primary endpoints (issue 16): pure mapping.

- ADSL: one record per randomized subject (SDTM DM plus populations, arms, dates, flags).
- ADMAE (END-1, BDS): one record per intervention subject, PARAMCD MAEFR12 "free of major
  adverse events at 12 months" (AVAL 1 free, 0 not), ANL01FL Y for the analysed subjects.
- ADHCE (END-2, BDS): one record per subject and component of the hierarchical composite:
  FUDAYS (days of follow-up, the pair rule's common horizon), DEATH, TXLVAD, MITRAL, HFHOSP
  (AVAL the day of the first event, CNSR 0; else AVAL the follow-up days, CNSR 1) and KCCQCHG
  (AVAL the change from baseline at 24 months, empty when not available).

The derivations are trialdesk's own (services/endpoints.py, docs/endpoints.md); the records
here are what a statistician reruns them from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trialdesk.domain.endpoints import SubjectOutcome
from trialdesk.protocol.models import Protocol
from trialdesk.reports.exports import Dataset, Variable
from trialdesk.reports.sdtm import V

EPOCH_DAY = "1960-01-01"


@dataclass(frozen=True)
class SafetyFacts:
    """END-1 as the system derived it: intervention subjects analysed and with an event."""

    arm: str
    horizon_days: int
    analysed: tuple[str, ...]
    with_event: tuple[str, ...]


def _core(ds_name: str) -> list[Variable]:
    return [
        V("STUDYID", "Study Identifier", core="Req", origin="Predecessor"),
        V("USUBJID", "Unique Subject Identifier", core="Req", origin="Predecessor"),
    ]


ADSL_VARIABLES = [
    *_core("ADSL"),
    V("SUBJID", "Subject Identifier for the Study", core="Req", origin="Predecessor"),
    V("SITEID", "Study Site Identifier", core="Req", origin="Predecessor"),
    V("AGE", "Age", "Num", core="Req", origin="Predecessor"),
    V("AGEU", "Age Units", core="Req", origin="Predecessor"),
    V("SEX", "Sex", core="Req", origin="Predecessor"),
    V("RACE", "Race", core="Req", origin="Predecessor"),
    V("ARMCD", "Planned Arm Code", core="Req", origin="Predecessor"),
    V("ARM", "Description of Planned Arm", core="Req", origin="Predecessor"),
    V("ACTARMCD", "Actual Arm Code", core="Req", origin="Predecessor"),
    V("ACTARM", "Description of Actual Arm", core="Req", origin="Predecessor"),
    V("TRT01P", "Planned Treatment for Period 01", core="Req", origin="Derived", method="ARM"),
    V(
        "TRT01A",
        "Actual Treatment for Period 01",
        core="Cond",
        origin="Derived",
        method="ACTARM; empty when not treated",
    ),
    V(
        "ITTFL",
        "Intent-To-Treat Population Flag",
        core="Cond",
        origin="Derived",
        method="Y when randomized and the randomization not marked in error",
    ),
    V(
        "SAFFL",
        "Safety Population Flag",
        core="Cond",
        origin="Derived",
        method="Y when the index procedure was done",
    ),
    V(
        "RANDDTC",
        "Date of Randomization (ISO 8601)",
        core="Perm",
        origin="Predecessor",
        method="DM.RFSTDTC",
    ),
    V(
        "TRTSDTC",
        "Date of Index Procedure (ISO 8601)",
        core="Perm",
        origin="Predecessor",
        method="DM.RFXSTDTC",
    ),
    V(
        "EOSDTC",
        "End of Study Date (ISO 8601)",
        core="Perm",
        origin="Predecessor",
        method="DM.RFENDTC",
    ),
    V("DTHFL", "Subject Death Flag", core="Perm", origin="Predecessor"),
    V("DTHDTC", "Date of Death (ISO 8601)", core="Perm", origin="Predecessor"),
    V(
        "EOSSTT",
        "End of Study Status",
        core="Perm",
        origin="Derived",
        method="COMPLETED, DISCONTINUED or ONGOING from DS",
    ),
]

BDS_VARIABLES = [
    *_core("BDS"),
    V("ARMCD", "Planned Arm Code", core="Req", origin="Predecessor"),
    V("TRT01P", "Planned Treatment for Period 01", core="Req", origin="Predecessor"),
    V("ITTFL", "Intent-To-Treat Population Flag", core="Cond", origin="Predecessor"),
    V("PARAMCD", "Parameter Code", core="Req", origin="Assigned"),
    V("PARAM", "Parameter", core="Req", origin="Assigned"),
    V(
        "AVAL",
        "Analysis Value",
        "Num",
        core="Cond",
        origin="Derived",
        method="docs/endpoints.md: from recorded data to the endpoints",
    ),
    V(
        "CNSR",
        "Censor",
        "Num",
        core="Cond",
        origin="Derived",
        method="0 when the event happened within follow-up, 1 when censored",
    ),
    V(
        "ANL01FL",
        "Analysis Flag 01",
        core="Cond",
        origin="Derived",
        method="Y when the record is analysed for the primary endpoint",
    ),
]

END2_PARAMS = (
    ("FUDAYS", "Days of follow-up (END-2)", None),
    ("DEATH", "Days to death (END-2)", "death_day"),
    ("TXLVAD", "Days to heart transplant or LVAD (END-2)", "transplant_or_lvad_day"),
    ("MITRAL", "Days to mitral intervention (END-2)", "mitral_intervention_day"),
    ("HFHOSP", "Days to first HF hospitalization (END-2)", "hf_hospitalization_day"),
    ("KCCQCHG", "KCCQ change from baseline at 24 months", "kccq_change"),
)


def build_adam(
    sdtm: Sequence[Dataset],
    protocol: Protocol,
    *,
    outcomes: Sequence[SubjectOutcome],
    safety: SafetyFacts,
    in_error: Sequence[str] = (),
) -> list[Dataset]:
    """ADSL, ADMAE (END-1) and ADHCE (END-2) from SDTM DM/DS and the endpoint derivations."""
    dm = next(ds for ds in sdtm if ds.name == "DM")
    ds_rows = next((ds.rows for ds in sdtm if ds.name == "DS"), [])
    exits = {
        str(r["USUBJID"]): str(r["DSDECOD"])
        for r in ds_rows
        if r.get("DSCAT") == "DISPOSITION EVENT"
    }
    studyid = str(dm.rows[0]["STUDYID"]) if dm.rows else ""
    errors = set(in_error)
    adsl = Dataset("ADSL", "Subject-Level Analysis Dataset", ADSL_VARIABLES, standard="ADaMIG")
    adsl.klass, adsl.structure = "SUBJECT LEVEL ANALYSIS DATASET", "One record per subject"
    adsl.keys = ("STUDYID", "USUBJID")
    arms: dict[str, tuple[str, str]] = {}
    subjid: dict[str, str] = {}
    for row in dm.rows:
        if not row.get("ARMCD"):
            continue  # ADSL is the randomized subjects
        uid = str(row["USUBJID"])
        arms[uid] = (str(row["ARMCD"]), str(row["ARM"]))
        subjid[str(row["SUBJID"])] = uid
        status = exits.get(uid, "")
        adsl.rows.append(
            {
                "STUDYID": row["STUDYID"],
                "USUBJID": uid,
                "SUBJID": row["SUBJID"],
                "SITEID": row["SITEID"],
                "AGE": row["AGE"],
                "AGEU": row["AGEU"],
                "SEX": row["SEX"],
                "RACE": row["RACE"],
                "ARMCD": row["ARMCD"],
                "ARM": row["ARM"],
                "ACTARMCD": row["ACTARMCD"],
                "ACTARM": row["ACTARM"],
                "TRT01P": row["ARM"],
                "TRT01A": row["ACTARM"],
                "ITTFL": "N" if row["SUBJID"] in errors else "Y",
                "SAFFL": "Y" if row["RFXSTDTC"] else "N",
                "RANDDTC": row["RFSTDTC"],
                "TRTSDTC": row["RFXSTDTC"],
                "EOSDTC": row["RFENDTC"],
                "DTHFL": row["DTHFL"],
                "DTHDTC": row["DTHDTC"],
                "EOSSTT": "COMPLETED"
                if status == "COMPLETED"
                else "DISCONTINUED"
                if status
                else "ONGOING",
            }
        )

    def base(uid: str) -> dict[str, object]:
        armcd, arm = arms[uid]
        return {"STUDYID": studyid, "USUBJID": uid, "ARMCD": armcd, "TRT01P": arm, "ITTFL": "Y"}

    admae = Dataset(
        "ADMAE", "Major Adverse Events Analysis (END-1)", BDS_VARIABLES, standard="ADaMIG"
    )
    admae.klass, admae.structure = "BASIC DATA STRUCTURE", "One record per subject per parameter"
    admae.keys = ("STUDYID", "USUBJID", "PARAMCD")
    analysed, events = set(safety.analysed), set(safety.with_event)
    for row in adsl.rows:
        uid = str(row["USUBJID"])
        if row["ARMCD"] != safety.arm or row["ITTFL"] != "Y":
            continue
        number = str(row["SUBJID"])
        admae.rows.append(
            {
                **base(uid),
                "PARAMCD": "MAEFR12",
                "PARAM": f"Free of major adverse events at day {safety.horizon_days}",
                "AVAL": 0 if number in events else 1,
                "CNSR": None,
                "ANL01FL": "Y" if number in analysed else "",
            }
        )

    adhce = Dataset(
        "ADHCE", "Hierarchical Composite Analysis (END-2)", BDS_VARIABLES, standard="ADaMIG"
    )
    adhce.klass, adhce.structure = "BASIC DATA STRUCTURE", "One record per subject per parameter"
    adhce.keys = ("STUDYID", "USUBJID", "PARAMCD")
    for o in outcomes:
        found = subjid.get(o.subject_id)
        if found is None:
            continue
        for code, label, attr in END2_PARAMS:
            value = None if attr is None else getattr(o, attr)
            aval: float | None
            cnsr: int | None
            if code == "FUDAYS":
                aval, cnsr = float(o.follow_up_days), None
            elif code == "KCCQCHG":
                aval, cnsr = value, None
            elif value is None:
                aval, cnsr = float(o.follow_up_days), 1
            else:
                aval, cnsr = float(value), 0
            adhce.rows.append(
                {
                    **base(found),
                    "PARAMCD": code,
                    "PARAM": label,
                    "AVAL": aval,
                    "CNSR": cnsr,
                    "ANL01FL": "Y",
                }
            )
    return [adsl, admae, adhce]
