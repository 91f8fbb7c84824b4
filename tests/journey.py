"""Walk flagship subjects through the service layer to any point of the journey."""

from __future__ import annotations

import datetime as dt

from tests import flagship_data as fd
from tests.conftest import PASSWORD, Trial, flagship
from trialdesk.domain.schedule import plan_visits
from trialdesk.protocol.specs import visit_specs
from trialdesk.services import followup, randomization, screening

SITE = "S101"
CONSENT = dt.date.fromisoformat(fd.CONSENT_DATE)
SCREENING = dt.date.fromisoformat(fd.SCREENING_DATE)
PROCEDURE = dt.date.fromisoformat(fd.PROCEDURE_DATE)


def register(t: Trial, site: str = SITE) -> str:
    t.clock.set_day(CONSENT)
    view = screening.register_subject(t.ctx, t.actor("coordinator"), t.study_id, site, CONSENT)
    return view.number


def consented(t: Trial) -> str:
    number = register(t)
    screening.record_consent(t.ctx, t.actor("coordinator"), t.study_id, number, CONSENT, "v1.0")
    return number


def enter_screening(
    t: Trial, number: str, forms: fd.FormValues | None = None, *, confirm: bool = True
) -> None:
    t.clock.set_day(SCREENING)
    coord = t.actor("coordinator")
    for code, values in (forms or fd.screening_forms()).items():
        screening.record_screening_form(t.ctx, coord, t.study_id, number, code, values)
    if confirm:
        for criterion in fd.INVESTIGATOR_CRITERIA:
            screening.confirm_criterion(t.ctx, coord, t.study_id, number, criterion, True, PASSWORD)


def echo_qualified(t: Trial) -> str:
    number = consented(t)
    enter_screening(t, number)
    screening.complete_screening(t.ctx, t.actor("coordinator"), t.study_id, number)
    return number


def awaiting_procedure(t: Trial) -> str:
    number = echo_qualified(t)
    screening.crc_eligibility_decision(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        number,
        "approve",
        "Suitable anatomy on echo; CS device appropriate",
        PASSWORD,
    )
    return number


def anatomy_suitable(t: Trial) -> str:
    number = awaiting_procedure(t)
    t.clock.set_day(PROCEDURE)
    screening.record_anatomy(t.ctx, t.actor("implanter"), t.study_id, number, fd.anatomy_forms())
    return number


def randomized(t: Trial) -> tuple[str, str]:
    """A randomized subject and its arm as the implanter sees it."""
    number = anatomy_suitable(t)
    result = randomization.randomize(t.ctx, t.actor("implanter"), t.study_id, number)
    assert result.arm is not None
    return number, result.arm


def procedure_done(t: Trial) -> tuple[str, str]:
    number, arm = randomized(t)
    forms = fd.implant_procedure_forms() if arm == "INT" else fd.sham_procedure_forms()
    (values,) = forms.values()
    followup.record_procedure(t.ctx, t.actor("implanter"), t.study_id, number, values)
    t.clock.set_day(fd.DISCHARGE_DATE)
    followup.record_discharge(
        t.ctx, t.actor("coordinator"), t.study_id, number, dt.date.fromisoformat(fd.DISCHARGE_DATE)
    )
    return number, arm


def visit_dates(randomized_on: dt.date = PROCEDURE) -> dict[str, dt.date]:
    return {
        p.code: p.target_date for p in plan_visits(randomized_on, visit_specs(flagship().protocol))
    }


def record_visit(t: Trial, number: str, code: str, on: dt.date) -> None:
    t.clock.set_day(on)
    if code.startswith("Y"):
        forms = fd.annual_contact_forms(on.isoformat())
    else:
        forms = fd.follow_up_forms(on.isoformat())
    followup.record_visit(t.ctx, t.actor("coordinator"), t.study_id, number, code, on, forms)


def blinded_visits_done(t: Trial) -> tuple[str, str]:
    number, arm = procedure_done(t)
    for code in ("M1", "M6", "M12", "M18", "M24"):
        record_visit(t, number, code, visit_dates()[code])
    return number, arm


def unblinded(t: Trial) -> tuple[str, str]:
    number, arm = blinded_visits_done(t)
    followup.unblind_subject(t.ctx, t.actor("coordinator"), t.study_id, number, PASSWORD)
    return number, arm


def all_contacts_done(t: Trial) -> tuple[str, str]:
    number, arm = unblinded(t)
    for code in ("Y3", "Y4", "Y5"):
        record_visit(t, number, code, visit_dates()[code])
    return number, arm


def completed(t: Trial) -> tuple[str, str]:
    number, arm = all_contacts_done(t)
    followup.complete_subject(t.ctx, t.actor("coordinator"), t.study_id, number)
    return number, arm
