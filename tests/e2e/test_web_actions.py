"""The index procedure, discharge and missed-visit pages through the ASGI app (TestClient), on
SQLite and PostgreSQL (PROC-1, PROC-2, SCHED-2, RAND-6)."""

from __future__ import annotations

from tests import flagship_data as fd
from tests import journey
from tests.conftest import Trial
from tests.e2e.test_web_pages import ARM_TEXT, csrf_of, signed_in, web_values
from trialdesk.services import followup
from trialdesk.services.queries import get_subject

PROCEDURE_FORMS = ("implant_procedure", "sham_procedure")


def _forms_for(arm: str) -> dict[str, dict[str, object]]:
    return fd.implant_procedure_forms() if arm == "INT" else fd.sham_procedure_forms()


def test_proc1_proc2_implanter_records_the_arms_procedure_form(trial: Trial) -> None:
    """The implanter gets its arm's procedure form (and not the other arm's); a bad value is
    shown inline with nothing saved; then the procedure is recorded."""
    number, arm = journey.randomized(trial)
    forms = _forms_for(arm)
    (code,) = forms
    other = next(c for c in PROCEDURE_FORMS if c != code)
    c = signed_in(trial, "implanter")
    assert 'href="/subjects/' + number + '/procedure"' in c.get(f"/subjects/{number}").text
    page = c.get(f"/subjects/{number}/procedure")
    assert page.status_code == 200
    assert f'name="{code}.start_time"' in page.text and f"{other}." not in page.text
    token = csrf_of(c)
    bad = web_values({code: {**forms[code], "procedure_date": "yesterday"}})
    response = c.post(f"/subjects/{number}/procedure", data={**bad, "csrf_token": token})
    assert response.status_code == 422
    assert f'id="f-{code}-procedure_date-err"' in response.text
    coordinator = trial.actor("coordinator")
    assert not get_subject(trial.ctx, coordinator, trial.study_id, number).procedure_done
    response = c.post(
        f"/subjects/{number}/procedure", data={**web_values(forms), "csrf_token": token}
    )
    assert response.status_code == 303
    assert get_subject(trial.ctx, coordinator, trial.study_id, number).procedure_done


def test_rand6_procedure_page_refuses_blinded_roles_without_naming_the_arm(trial: Trial) -> None:
    """The coordinator is told the implanting team records the procedure: no arm, no arm's
    form name, and a POST is refused by the service."""
    number, _arm = journey.randomized(trial)
    c = signed_in(trial, "coordinator")
    page = c.get(f"/subjects/{number}/procedure")
    assert page.status_code == 403
    assert "implanting team" in page.text
    assert not ARM_TEXT.search(page.text)
    assert not any(code in page.text for code in PROCEDURE_FORMS)
    response = c.post(f"/subjects/{number}/procedure", data={"csrf_token": csrf_of(c)})
    assert response.status_code == 403 and not ARM_TEXT.search(response.text)
    assert not get_subject(
        trial.ctx, trial.actor("coordinator"), trial.study_id, number
    ).procedure_done


def test_proc2_coordinator_records_discharge(trial: Trial) -> None:
    number, arm = journey.randomized(trial)
    (values,) = _forms_for(arm).values()
    followup.record_procedure(
        trial.ctx, trial.actor("implanter"), trial.study_id, number, values=values
    )
    trial.clock.set_day(fd.DISCHARGE_DATE)
    c = signed_in(trial, "coordinator")
    assert 'name="discharged_on"' in c.get(f"/subjects/{number}").text
    token = csrf_of(c)
    response = c.post(
        f"/subjects/{number}/discharge", data={"discharged_on": "soon", "csrf_token": token}
    )
    assert response.status_code == 422 and "not a date" in response.text
    response = c.post(
        f"/subjects/{number}/discharge",
        data={"discharged_on": fd.DISCHARGE_DATE, "csrf_token": token},
    )
    assert response.status_code == 303
    view = get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert view.discharged_on == fd.DISCHARGE_DATE


def test_sched2_missed_visit_needs_a_reason_and_never_blocks_the_next(trial: Trial) -> None:
    number, _arm = journey.procedure_done(trial)
    trial.clock.set_day(journey.visit_dates()["M1"])  # a visit is missed once its window opens
    c = signed_in(trial, "coordinator")
    token = csrf_of(c)
    response = c.post(f"/subjects/{number}/visits/M1/missed", data={"csrf_token": token})
    assert response.status_code == 422
    view = get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert next(v for v in view.visits if v.code == "M1").status == "planned"
    response = c.post(
        f"/subjects/{number}/visits/M1/missed",
        data={"reason": "subject travelling", "csrf_token": token},
    )
    assert response.status_code == 303
    page = c.get(f"/subjects/{number}")
    assert f'href="/subjects/{number}/visits/M6"' in page.text  # later visits stay open
    view = get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert next(v for v in view.visits if v.code == "M1").status == "missed"
