"""Form values for a flagship subject, as the flagship protocol's forms expect them.

Each function returns ``{form_code: {field_code: value}}`` with JSON values (dates as ISO
strings, times as "HH:MM"), a fresh dict every call so a test may change it freely. The
default dates follow one subject: consent 2027-01-25, screening 2027-02-01, procedure and
randomization 2027-02-15 (day 0), M1 on day 30, Y3 on day 1095.
``tests/unit/test_protocol_checks.py`` proves that these values fit the forms and that the
eligible subject is eligible and each ``failing_*`` helper fails exactly one criterion.
"""

from __future__ import annotations

from typing import Any

FormValues = dict[str, dict[str, Any]]

CONSENT_DATE = "2027-01-25"
SCREENING_DATE = "2027-02-01"
PROCEDURE_DATE = "2027-02-15"
DISCHARGE_DATE = "2027-02-16"
M1_DATE = "2027-03-17"
Y3_DATE = "2030-02-14"

# criterion id -> (form, field, value that makes the criterion fail)
_SCREENING_FAILURES: dict[str, tuple[str, str, Any]] = {
    "INC-1": ("demographics", "age_years", 17),
    "INC-2": ("medical_history", "cardiomyopathy_etiology", "other"),
    "INC-3": ("tte", "mr_grade", "0"),
    "INC-4": ("nyha", "nyha_class", "IVb"),
    "INC-5": ("six_minute_walk", "distance_m", 140),
    "INC-6": ("tte", "lvef_pct", 55.0),
    "INC-7": ("tte", "lvedd_mm", 55.0),
    "EXC-1": ("medical_history", "mi_within_3_months", True),
    "EXC-2": ("medical_history", "pci_within_30_days", True),
    "EXC-3": ("heart_team", "cardiac_surgery_expected_within_1y", True),
    "EXC-4": ("tte", "mitral_annular_calcification", "severe"),
    "EXC-5": ("tte", "organic_mitral_disease", True),
}
_ANATOMY_FAILURES: dict[str, tuple[str, str, Any]] = {
    "ANAT-1": ("angiogram", "coronary_anatomy_suitable", False),
    "ANAT-2": ("venogram", "cs_gcv_suitable", False),
    "ANAT-3": ("angiogram", "stent_under_target_zone", True),
}
INVESTIGATOR_CRITERIA = ("INC-8", "INC-9", "EXC-6")
"""Flagship criteria without a rule: the investigator confirms them (ELIG-1)."""


def web_answer(criterion: str, *, satisfied: bool = True) -> str:
    """The pages' answer to a criterion (issue 14): an exclusion "applies" or "does not
    apply", an inclusion is "met" or "not met"; ``satisfied`` is the eligible answer."""
    if criterion.startswith("EXC"):
        return "does_not_apply" if satisfied else "applies"
    return "met" if satisfied else "not_met"


SCREENING_RULE_CRITERIA = tuple(_SCREENING_FAILURES)
ANATOMY_RULE_CRITERIA = tuple(_ANATOMY_FAILURES)


def screening_forms(on: str = SCREENING_DATE) -> FormValues:
    """The screening forms of a subject who meets every rule criterion at gate echo."""
    return {
        "demographics": {
            "assessment_date": on,
            "age_years": 68,
            "sex": "male",
            "height_cm": 176.0,
            "weight_kg": 82.5,
        },
        "medical_history": {
            "assessment_date": on,
            "cardiomyopathy_etiology": "ischemic",
            "mi_within_3_months": False,
            "cabg_within_3_months": False,
            "unstable_angina_within_3_months": False,
            "pci_within_30_days": False,
            "hf_hospitalizations_12_months": 1,
            "atrial_fibrillation": True,
            "diabetes": False,
            "crt_device": False,
        },
        "heart_team": {
            "review_date": on,
            "surgeon_present": True,
            "mitral_surgery_needed_within_1y": False,
            "cardiac_surgery_expected_within_1y": False,
            "notes": None,
        },
        "nyha": {"assessment_date": on, "nyha_class": "III"},
        "kccq": {"assessment_date": on, "overall_score": 48.5},
        "six_minute_walk": {"test_date": on, "distance_m": 320},
        "tte": {
            "exam_date": on,
            "mr_grade": "3",
            "regurgitant_volume_ml": 45.0,
            "eroa_cm2": 0.3,
            "lvef_pct": 35.0,
            "lvedd_mm": 64.0,
            "lvesd_mm": 52.0,
            "mitral_annular_calcification": "mild",
            "organic_mitral_disease": False,
        },
    }


def anatomy_forms(on: str = PROCEDURE_DATE) -> FormValues:
    """Procedure-day angiogram and venogram with suitable anatomy (ELIG-4)."""
    return {
        "angiogram": {
            "procedure_date": on,
            "coronary_anatomy_suitable": True,
            "stent_under_target_zone": False,
            "notes": None,
        },
        "venogram": {"procedure_date": on, "cs_gcv_suitable": True, "notes": None},
    }


def failing_screening_forms(criterion_id: str, on: str = SCREENING_DATE) -> FormValues:
    """Screening forms on which exactly ``criterion_id`` (a rule criterion at gate echo) fails."""
    return _failing(screening_forms(on), _SCREENING_FAILURES, criterion_id)


def failing_anatomy_forms(criterion_id: str, on: str = PROCEDURE_DATE) -> FormValues:
    """Anatomy forms on which exactly ``criterion_id`` (ANAT-1..3) fails: a screen failure."""
    return _failing(anatomy_forms(on), _ANATOMY_FAILURES, criterion_id)


def _failing(
    forms: FormValues, failures: dict[str, tuple[str, str, Any]], criterion_id: str
) -> FormValues:
    if criterion_id not in failures:
        raise KeyError(f"no failing data for {criterion_id}; known: {', '.join(failures)}")
    form, field, value = failures[criterion_id]
    forms[form][field] = value
    return forms


def mr_grade_4_screening_forms(*, surgery_needed: bool, on: str = SCREENING_DATE) -> FormValues:
    """MR 4+: eligible only when the heart team (with a surgeon) says no surgery within 1 year."""
    forms = screening_forms(on)
    forms["tte"]["mr_grade"] = "4"
    forms["heart_team"]["mitral_surgery_needed_within_1y"] = surgery_needed
    return forms


DEMO_UDI = "(01)00812345000016(17)290131(10)LOT2701(21)SN000123"
"""The first device of the demo lot that ``init --demo`` and the test studies stock at the
first site (SUP-1); tests implanting more than once take fresh ones from tests.journey."""


def implant_procedure_forms(
    on: str = PROCEDURE_DATE, *, released: bool = True, udi: str = DEMO_UDI
) -> FormValues:
    """PROC-1 steps; ``released=False`` is "attempted, not implanted" (device recaptured)."""
    return {
        "implant_procedure": {
            "procedure_date": on,
            "start_time": "08:30",
            "end_time": "09:45",
            "distal_anchor_deployed": True,
            "tension_applied": True,
            "proximal_anchor_locked": True,
            "safety_efficacy_reconfirmed": True,
            "implant_released": released,
            "device_udi": udi,
            "not_released_reason": None if released else "recaptured: coronary compromise",
        }
    }


def sham_procedure_forms(on: str = PROCEDURE_DATE) -> FormValues:
    """PROC-2: the control arm's index procedure with its duration (RAND-8)."""
    return {"sham_procedure": {"procedure_date": on, "start_time": "08:30", "end_time": "09:35"}}


def discharge_forms(on: str = DISCHARGE_DATE) -> FormValues:
    return {"discharge": {"discharge_date": on}}


def follow_up_forms(on: str = M1_DATE) -> FormValues:
    """A complete clinic follow-up visit (M1..M24) with every END-3 value."""
    return {
        "follow_up": {
            "visit_date": on,
            "nyha_class": "II",
            "kccq_overall_score": 61.0,
            "six_minute_walk_m": 365,
            "mr_grade": "2",
            "regurgitant_volume_ml": 30.0,
            "eroa_cm2": 0.2,
            "lvef_pct": 37.0,
            "lvedd_mm": 62.0,
            "lvesd_mm": 50.0,
            "hf_hospitalizations": 0,
        }
    }


def annual_contact_forms(on: str = Y3_DATE) -> FormValues:
    """An abbreviated annual phone contact (Y3..Y5)."""
    return {
        "annual_contact": {
            "contact_date": on,
            "vital_status": "alive",
            "hf_hospitalizations": 0,
            "additional_therapies": False,
        }
    }


def adverse_event_forms(on: str = M1_DATE, *, mae_category: str = "none") -> FormValues:
    """One adverse event; ``mae_category`` names an END-1 major adverse event or ``none``."""
    return {
        "adverse_event": {
            "onset_date": on,
            "term": "Groin haematoma",
            "serious": mae_category != "none",
            "severity": "mild" if mae_category == "none" else "severe",
            "procedure_related": "related",
            "mae_category": mae_category,
            "resolved_date": None,
            "outcome": "recovering",
        }
    }


def additional_therapy_forms(on: str, therapy_type: str = "crt") -> FormValues:
    """THER-1: one additional therapy; ``therapy_type`` is a code of therapies.types."""
    return {
        "additional_therapy": {"therapy_date": on, "therapy_type": therapy_type, "details": None}
    }


def death_forms(on: str, cause: str = "cardiovascular") -> FormValues:
    return {"death": {"death_date": on, "cause": cause, "details": None}}


def withdrawal_forms(on: str, reason: str = "subject_decision") -> FormValues:
    return {"withdrawal": {"withdrawal_date": on, "reason": reason, "details": None}}
