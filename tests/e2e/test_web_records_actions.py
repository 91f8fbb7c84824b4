"""Lane x15b's service actions on the pages (issue 14 deliver 1), through the ASGI app:
death and withdrawal on the protocol's forms and the contacts after a withdrawal that allows
them (REC-9), query assignment and coded responses (REC-7), re-consent (REC-8). Each is
offered only when the service allows it; a refusal re-renders what was typed with one
message; a saved action says so once."""

from __future__ import annotations

import datetime as dt
import re

from fastapi.testclient import TestClient

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_web_pages import csrf_of, signed_in, web_values
from tests.integration.test_consent_versions_live import _amend
from trialdesk.services import data_queries, exits, followup
from trialdesk.services.queries import get_subject

WITHDRAWN_ON = dt.date(2027, 8, 20)  # after M6
Y3 = j.visit_dates()["Y3"]
CONTACT = re.compile(r'data-contact="([^"]+)"')


def _flash(browser: TestClient, location: str) -> str:
    return str(browser.get(location).text)


def test_rec9_withdrawal_on_its_form_then_the_annual_contact(trial: Trial) -> None:
    """REC-9: the coordinator finds the withdrawal form from the subject page (the monitor
    does not), a withdrawal without its kind is refused keeping what was typed, then saved;
    the Y3 contact is offered exactly as the service allows it and recorded."""
    number, _arm = j.procedure_done(trial)
    trial.clock.set_day(WITHDRAWN_ON)
    monitor = signed_in(trial, "monitor")
    assert "/exit-form/withdrawal" not in monitor.get(f"/subjects/{number}").text
    assert monitor.get(f"/subjects/{number}/exit-form/withdrawal").status_code == 403
    site = signed_in(trial, "coordinator")
    assert f'href="/subjects/{number}/exit-form/withdrawal"' in site.get(f"/subjects/{number}").text
    form = site.get(f"/subjects/{number}/exit-form/withdrawal")
    assert form.status_code == 200 and "What the subject withdraws from" in form.text
    typed = {
        "csrf_token": csrf_of(site),
        "exit": "withdrawal",
        "withdrawal.withdrawal_date": WITHDRAWN_ON.isoformat(),
        "withdrawal.reason": "subject_decision",
        "withdrawal.details": "moves abroad, phone contact fine",
    }
    refused = site.post(f"/subjects/{number}/exit-form", data=typed)
    assert refused.status_code == 422 and "withdraws from" in refused.text
    assert refused.text.count('role="alert"') <= 1
    assert "moves abroad, phone contact fine" in refused.text
    assert get_subject(trial.ctx, trial.actor("manager"), trial.study_id, number).state != (
        "withdrawn"
    )
    saved = site.post(f"/subjects/{number}/exit-form", data={**typed, "kind": "further_data"})
    assert saved.status_code == 303
    assert "Withdrawal recorded on its form." in _flash(site, saved.headers["location"])
    assert get_subject(trial.ctx, trial.actor("manager"), trial.study_id, number).state == (
        "withdrawn"
    )

    trial.clock.set_day(Y3)
    site, monitor = signed_in(trial, "coordinator"), signed_in(trial, "monitor")  # years later
    offered = exits.contacts_offered(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert offered and offered[0] == "Y3"
    assert CONTACT.findall(site.get(f"/subjects/{number}").text) == offered
    assert CONTACT.findall(monitor.get(f"/subjects/{number}").text) == []
    assert monitor.get(f"/subjects/{number}/contacts/Y3").status_code == 403
    page = site.get(f"/subjects/{number}/contacts/Y3")
    assert page.status_code == 200 and "Contact date" in page.text
    values = web_values(fd.annual_contact_forms(Y3.isoformat()))
    bad = site.post(
        f"/subjects/{number}/contacts",
        data={**values, "visit": "Y3", "visit_date": "not a date", "csrf_token": csrf_of(site)},
    )
    assert bad.status_code == 422 and "not a date" in bad.text
    done = site.post(
        f"/subjects/{number}/contacts",
        data={**values, "visit": "Y3", "visit_date": Y3.isoformat(), "csrf_token": csrf_of(site)},
    )
    assert done.status_code == 303
    assert "Contact Y3 recorded." in _flash(site, done.headers["location"])
    assert "Y3" not in CONTACT.findall(site.get(f"/subjects/{number}").text)


def test_rec9_death_on_its_form(trial: Trial) -> None:
    """REC-9: the death form, a bad cause refused with the typed date kept, then saved."""
    number, _arm = j.procedure_done(trial)
    on = dt.date(2027, 5, 2)
    trial.clock.set_day(on)
    site = signed_in(trial, "coordinator")
    assert f'href="/subjects/{number}/exit-form/death"' in site.get(f"/subjects/{number}").text
    assert site.get(f"/subjects/{number}/exit-form/death").status_code == 200
    typed = {
        "csrf_token": csrf_of(site),
        "exit": "death",
        "death.death_date": on.isoformat(),
        "death.cause": "no-such-cause",
    }
    refused = site.post(f"/subjects/{number}/exit-form", data=typed)
    assert refused.status_code == 422 and f'value="{on.isoformat()}"' in refused.text
    saved = site.post(f"/subjects/{number}/exit-form", data={**typed, "death.cause": "unknown"})
    assert saved.status_code == 303
    assert "Death recorded." in _flash(site, saved.headers["location"])
    assert get_subject(trial.ctx, trial.actor("manager"), trial.study_id, number).state == "died"
    assert site.get(f"/subjects/{number}/exit-form/death").status_code == 403


def _query(trial: Trial) -> tuple[str, int, str]:
    number, _arm = j.procedure_done(trial)
    on = j.visit_dates()["M1"]
    trial.clock.set_day(on)
    followup.record_visit(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        visit_code="M1",
        visit_date=on,
        forms=fd.follow_up_forms(on.isoformat()),
    )
    q = data_queries.raise_query(
        trial.ctx,
        trial.actor("monitor"),
        trial.study_id,
        number,
        form_code="follow_up",
        field="nyha_class",
        text="Confirm NYHA",
        visit_code="M1",
    )
    return number, q.id, f"/subjects/{number}/queries/follow_up?visit=M1"


def test_rec7_query_assigned_and_answered_with_a_coded_response(trial: Trial) -> None:
    """REC-7: the monitor (not the site) is offered the assignment; a person who cannot
    answer is refused keeping the name typed; the assignment shows; the site answers with
    one of the protocol's coded responses, a code that needs a correction is refused."""
    number, qid, page = _query(trial)
    back = {"subject": number, "form": "follow_up", "visit": "M1"}
    site = signed_in(trial, "coordinator")
    assert f'action="/queries/{qid}/assign"' not in site.get(page).text
    monitor = signed_in(trial, "monitor")
    assert f'action="/queries/{qid}/assign"' in monitor.get(page).text
    refused = monitor.post(
        f"/queries/{qid}/assign",
        data={**back, "assignee": "monitor", "csrf_token": csrf_of(monitor, page)},
    )
    assert refused.status_code == 422 and "cannot answer queries" in refused.text
    assert 'value="monitor"' in refused.text
    assigned = monitor.post(
        f"/queries/{qid}/assign",
        data={**back, "assignee": "coordinator", "csrf_token": csrf_of(monitor, page)},
    )
    assert assigned.status_code == 303
    shown = monitor.get(assigned.headers["location"]).text
    assert "Query assigned." in shown and "Assigned to coordinator." in shown

    form = site.get(page).text
    assert 'name="response"' in form and "Confirmed as is (source checked)" in form
    wrong = site.post(
        f"/queries/{qid}/answer",
        data={**back, "response": "corrected", "text": "", "csrf_token": csrf_of(site, page)},
    )
    assert wrong.status_code == 422 and 'value="corrected" selected' in wrong.text
    answered = site.post(
        f"/queries/{qid}/answer",
        data={**back, "response": "confirmed", "text": "", "csrf_token": csrf_of(site, page)},
    )
    assert answered.status_code == 303
    seen = monitor.get(page).text
    assert "status-answered" in seen and "Confirmed as is (source checked)" in seen


def test_rec8_reconsent_on_the_page_keeps_typed_values_and_says_saved(trial: Trial) -> None:
    """REC-8: the subject page links its consents; with v2.0 in force, a re-consent dated in
    the future is refused keeping the date typed, then recorded with a success message."""
    number, _arm = j.procedure_done(trial)
    _amend(trial)
    trial.clock.set_day("2027-03-05")
    site = signed_in(trial, "coordinator")
    assert f'href="/subjects/{number}/consents"' in site.get(f"/subjects/{number}").text
    consents = f"/subjects/{number}/consents"
    assert "Record re-consent" in site.get(consents).text
    future = site.post(
        f"/subjects/{number}/reconsent",
        data={"signed_on": "2027-04-01", "version": "v2.0", "csrf_token": csrf_of(site, consents)},
    )
    assert future.status_code == 422 and 'value="2027-04-01"' in future.text
    saved = site.post(
        f"/subjects/{number}/reconsent",
        data={"signed_on": "2027-03-05", "version": "v2.0", "csrf_token": csrf_of(site, consents)},
    )
    assert saved.status_code == 303
    assert "Re-consent recorded." in site.get(saved.headers["location"]).text
