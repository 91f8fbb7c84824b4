"""The subject's actions on the pages (issue 14, x14a), through the ASGI app on SQLite:

- the page offers exactly the actions the service allows: for every role and a subject in
  every lifecycle state, the actions the subject page offers (``data-action`` on its forms
  and links) equal ``services.queries.subject_actions`` (LIFE-1, ACC-1);
- an exclusion confirmed as "applies" makes the subject a screen failure, and the signature
  says so in words (ELIG-1, SIG-1);
- the eligibility checklist, saved values with correction and reason (DATA-2), visit entry
  with an out-of-window confirmation (SCHED-2), randomization confirmed and re-read by GET
  (RAND-4, RAND-6), refusals that keep what was typed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import DEMO_USERS, PASSWORD, Trial
from tests.e2e import sweep_support as sw
from tests.e2e.test_web_pages import ARM_TEXT, csrf_of, signed_in, web_values
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.services import data_queries, followup, screening
from trialdesk.services.queries import get_subject, subject_actions

ROLES = tuple(username for username, _name, _role in DEMO_USERS)
OFFER = re.compile(r'data-action="([^"]+)"')


def offered_on_page(page: str) -> set[str]:
    """The actions a page offers: every ``data-action`` of its forms and links."""
    return {action for found in OFFER.findall(page) for action in found.split()}


@dataclass
class States:
    trial: Trial
    numbers: dict[str, str]


def _lost(t: Trial) -> str:
    number, _arm = j.procedure_done(t)
    coordinator = t.actor("coordinator")
    dates = j.visit_dates()
    for code in ("M1", "M6"):
        t.clock.set_day(dates[code])
        followup.miss_visit(
            t.ctx, coordinator, t.study_id, number, visit_code=code, reason="no answer"
        )
    followup.mark_lost_to_follow_up(
        t.ctx, coordinator, t.study_id, number, on=dates["M6"], reason="three calls, a letter"
    )
    return number


def _exit(t: Trial, how: str) -> str:
    number, _arm = j.procedure_done(t)
    coordinator = t.actor("coordinator")
    on = dt.date.fromisoformat(fd.DISCHARGE_DATE)
    if how == "withdrawn":
        followup.withdraw(
            t.ctx,
            coordinator,
            t.study_id,
            number,
            withdrawn_on=on,
            reason="moves abroad",
            follow_up_contact_allowed=True,
        )
    else:
        followup.record_death(t.ctx, coordinator, t.study_id, number, death_date=on, cause="stroke")
    return number


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> Iterator[States]:
    """One subject in every lifecycle state (two on study: before and inside M1's window)."""
    t = sw.sqlite_trial(tmp_path_factory.mktemp("offers"))
    numbers = {
        "completed": j.completed(t)[0],
        "unblinded": j.unblinded(t)[0],
        "unblinded_final_contact_done": j.all_contacts_done(t)[0],
        "lost_to_follow_up": _lost(t),
        "withdrawn": _exit(t, "withdrawn"),
        "died": _exit(t, "died"),
        "randomized": j.procedure_done(t)[0],
        "randomized_no_procedure": j.randomized(t)[0],
        "awaiting_procedure": j.awaiting_procedure(t),
        "anatomy_suitable": j.anatomy_suitable(t),
        "echo_qualified": j.echo_qualified(t),
        "registered": j.register(t),
        "screening": j.consented(t),
    }
    failed = j.consented(t)
    j.enter_screening(t, failed, fd.failing_screening_forms("INC-5"))
    screening.complete_screening(t.ctx, t.actor("coordinator"), t.study_id, failed)
    numbers["screen_failed"] = failed
    t.clock.set_day(j.visit_dates()["M1"])  # M1's window is open for the on-study subjects
    yield States(t, numbers)
    t.runtime.close()


def test_life1_acc1_each_page_offers_exactly_what_the_service_allows(states: States) -> None:
    """For every role and a subject in every state, the actions offered on the subject page
    are exactly the service's allowed actions for that user and subject."""
    t = states.trial
    seen_states = {
        get_subject(t.ctx, t.actor("manager"), t.study_id, n).state for n in states.numbers.values()
    }
    assert seen_states == {s.value for s in SubjectState}
    problems = []
    offered_somewhere: set[str] = set()
    for role in ROLES:
        browser = signed_in(t, role)
        for label, number in states.numbers.items():
            page = browser.get(f"/subjects/{number}")
            assert page.status_code == 200, (role, label, page.status_code)
            allowed = set(subject_actions(t.ctx, t.actor(role), t.study_id, number))
            shown = offered_on_page(page.text)
            offered_somewhere |= shown
            if shown != allowed:
                problems.append(
                    f"{role} on {label}: page {sorted(shown)} service {sorted(allowed)}"
                )
    assert not problems, "\n".join(problems)
    # the comparison means something: most actions appear for someone
    assert {"record_consent", "randomize", "record_visit", "miss_visit", "complete"} <= (
        offered_somewhere
    )
    assert {"emergency_unblind", "withdraw", "record_death", "correct_data"} <= offered_somewhere


def test_life1_an_offer_that_the_page_drops_is_caught() -> None:
    """The parse finds an offer whatever the element; a page missing one differs."""
    page = '<form data-action="withdraw"></form><a data-action="crc_approve crc_reject">x</a>'
    assert offered_on_page(page) == {"withdraw", "crc_approve", "crc_reject"}
    assert offered_on_page(page.replace("withdraw", "")) != {
        "withdraw",
        "crc_approve",
        "crc_reject",
    }


# --------------------------------------------------------------------------- screening


def _screened(t: Trial) -> tuple[str, TestClient, str]:
    number = j.consented(t)
    j.enter_screening(t, number, confirm=False)
    browser = signed_in(t, "coordinator")
    return number, browser, csrf_of(browser)


def _sign(browser: TestClient, token: str, number: str, criterion: str, answer: str) -> Any:
    return browser.post(
        f"/subjects/{number}/confirm",
        data={"criterion": criterion, "answer": answer, "password": PASSWORD, "csrf_token": token},
    )


def test_elig1_sig1_exclusion_that_applies_makes_a_screen_failure(trial: Trial) -> None:
    """Issue 14 (patient safety): EXC-6 is offered as "applies / does not apply", never
    "met / not met"; choosing "applies" is signed with that meaning in words, the checklist
    shows it not met, and completing screening makes the subject a screen failure."""
    number, browser, token = _screened(trial)
    page = browser.get(f"/subjects/{number}").text
    exc6 = page[page.index('value="EXC-6"') : page.index("Sign EXC-6")]
    assert 'value="applies"' in exc6 and 'value="does_not_apply"' in exc6
    assert 'value="met"' not in exc6 and 'value="yes"' not in exc6
    wrong = _sign(browser, token, number, "EXC-6", "met")  # an inclusion's word: refused
    assert wrong.status_code == 422 and "applies or does not apply" in wrong.text
    for criterion in ("INC-8", "INC-9"):
        assert _sign(browser, token, number, criterion, "met").status_code == 303
    response = _sign(browser, token, number, "EXC-6", "applies")
    assert response.status_code == 303
    page = browser.get(f"/subjects/{number}").text
    assert 'id="flash"' in page
    row = page[page.index('id="crit-EXC-6"') :].split("</tr>")[0]
    assert "not met" in row and "applies to this subject" in row and "excluded" in row
    history = browser.get(f"/subjects/{number}").text  # the flash is shown once
    assert 'id="flash"' not in history
    response = browser.post(f"/subjects/{number}/complete-screening", data={"csrf_token": token})
    assert response.status_code == 303
    page = browser.get(f"/subjects/{number}").text
    assert "not eligible (EXC-6)" in page  # the success message names the criterion
    view = get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert view.state == "screen_failed" and view.screen_failure_detail == "EXC-6"


def test_elig1_does_not_apply_passes_and_meaning_is_signed(trial: Trial) -> None:
    """ "Does not apply" keeps the subject eligible; the stored signature spells it out."""
    number, browser, token = _screened(trial)
    for criterion in fd.INVESTIGATOR_CRITERIA:
        assert _sign(browser, token, number, criterion, fd.web_answer(criterion)).status_code == 303
    with trial.ctx.uow(readonly=True) as uow:
        subject = uow.subjects.find_any_site(trial.study_id, number)
        assert subject is not None
        signed = uow.confirmations.get(subject.id, "EXC-6")
    assert signed is not None and signed.confirmed
    assert "does not apply to this subject" in signed.meaning
    assert "not excluded" in signed.meaning
    response = browser.post(f"/subjects/{number}/complete-screening", data={"csrf_token": token})
    assert response.status_code == 303
    assert get_subject(trial.ctx, trial.actor("crc"), trial.study_id, number).state == (
        "echo_qualified"
    )


def test_elig1_checklist_and_early_complete_speak_in_form_words(trial: Trial) -> None:
    """Before the irreversible step: each criterion with outcome, deciding value and form;
    pressing it early re-renders the subject page with a message in the forms' words."""
    number = j.consented(trial)
    trial.clock.set_day(j.SCREENING)
    forms = fd.screening_forms()
    browser = signed_in(trial, "coordinator")
    token = csrf_of(browser)
    response = browser.post(
        f"/subjects/{number}/forms/demographics",
        data={**web_values({"demographics": forms["demographics"]}), "csrf_token": token},
    )
    assert response.status_code == 303
    page = browser.get(f"/subjects/{number}").text
    inc1 = page[page.index('id="crit-INC-1"') :].split("</tr>")[0]
    assert "met" in inc1 and "Demographics" in inc1
    assert str(forms["demographics"]["age_years"]) in inc1
    inc5 = page[page.index('id="crit-INC-5"') :].split("</tr>")[0]
    assert "missing" in inc5 and "Six-minute walk" in inc5
    response = browser.post(f"/subjects/{number}/complete-screening", data={"csrf_token": token})
    assert response.status_code == 409
    assert "not complete" in response.text and 'id="checklist"' in response.text
    assert "six_minute_walk." not in response.text and "tte.lvef_pct" not in response.text
    assert get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number).state == (
        "screening"
    )


# --------------------------------------------------------------------------- forms


def test_data1_data2_saved_form_shows_values_and_is_corrected_with_a_reason(
    trial: Trial,
) -> None:
    number = j.consented(trial)
    j.enter_screening(trial, number, confirm=False)
    browser = signed_in(trial, "coordinator")
    token = csrf_of(browser)
    page = browser.get(f"/subjects/{number}/forms/tte").text
    saved = fd.screening_forms()["tte"]
    assert f'id="saved-lvef_pct">{saved["lvef_pct"]}' in page
    assert 'name="reason"' in page
    monitor = signed_in(trial, "monitor").get(f"/subjects/{number}/forms/tte").text
    assert f'id="saved-lvef_pct">{saved["lvef_pct"]}' in monitor and 'name="reason"' not in monitor
    changed = {**web_values({"tte": saved}), "tte.lvef_pct": "33", "csrf_token": token}
    response = browser.post(f"/subjects/{number}/forms/tte/correct", data=changed)
    assert response.status_code == 422 and "reason" in response.text
    assert 'value="33"' in response.text  # what was typed stays
    response = browser.post(
        f"/subjects/{number}/forms/tte/correct", data={**changed, "reason": "core lab re-read"}
    )
    assert response.status_code == 303
    page = browser.get(f"/subjects/{number}").text
    assert "Correction to" in page  # the success message
    row = page[page.index('id="form-tte"') :].split("</tr>")[0]
    assert "corrected" in row
    assert 'id="saved-lvef_pct">33' in browser.get(f"/subjects/{number}/forms/tte").text


# --------------------------------------------------------------------------- visits, randomization


def test_sched2_out_of_window_visit_is_confirmed_as_a_deviation_first(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    early = j.visit_dates()["M1"] - dt.timedelta(days=23)
    trial.clock.set_day(early)
    browser = signed_in(trial, "coordinator")
    token = csrf_of(browser)
    form = browser.get(f"/subjects/{number}/visits/M1").text
    assert 'id="window"' in form and "Target date" in form
    assert form.count('type="date"') == 1  # the visit date once; the form's own date is filled
    data = {
        **web_values(fd.follow_up_forms(early.isoformat())),
        "visit_date": early.isoformat(),
        "csrf_token": token,
    }
    response = browser.post(f"/subjects/{number}/visits/M1", data=data)
    assert response.status_code == 409 and "days before its window" in response.text
    view = get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert next(v for v in view.visits if v.code == "M1").status == "planned"
    response = browser.post(
        f"/subjects/{number}/visits/M1", data={**data, "confirm_deviation": "yes"}
    )
    assert response.status_code == 303
    view = get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    m1 = next(v for v in view.visits if v.code == "M1")
    assert m1.status == "done" and m1.timing == "early"


def test_sched2_missed_only_once_the_window_opened(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    browser = signed_in(trial, "coordinator")
    page = browser.get(f"/subjects/{number}").text
    assert "/visits/Y5/missed" not in page and "/visits/M1/missed" not in page
    trial.clock.set_day(j.visit_dates()["M1"])
    browser = signed_in(trial, "coordinator")
    page = browser.get(f"/subjects/{number}").text
    assert "/visits/M1/missed" in page and "/visits/Y5/missed" not in page
    confirm = browser.get(f"/subjects/{number}/visits/M1/missed")
    assert confirm.status_code == 200 and "cannot be recorded later" in confirm.text


def test_rand4_rand6_randomize_confirmed_then_result_is_a_reload_safe_get(trial: Trial) -> None:
    number = j.anatomy_suitable(trial)
    implanter = signed_in(trial, "implanter")
    token = csrf_of(implanter)
    confirm = implanter.get(f"/subjects/{number}/randomize")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    assert get_subject(trial.ctx, trial.actor("manager"), trial.study_id, number).state == (
        "awaiting_procedure"
    )  # the confirmation page changes nothing
    response = implanter.post(f"/subjects/{number}/randomize", data={"csrf_token": token})
    assert response.status_code == 303
    result = response.headers["location"]
    first = implanter.get(result)
    again = implanter.get(result)
    assert first.status_code == again.status_code == 200
    assert ARM_TEXT.search(first.text) and "randomized" in first.text
    assert re.sub(r'<div class="flash"[^>]*>.*?</div>\n?', "", first.text, flags=re.S) == again.text
    blinded = signed_in(trial, "coordinator").get(result)
    assert blinded.status_code == 200 and "Randomized, number" in blinded.text
    assert not ARM_TEXT.search(blinded.text)


def test_life1_a_refused_action_keeps_what_was_typed(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    browser = signed_in(trial, "coordinator")
    token = csrf_of(browser)
    response = browser.post(
        f"/subjects/{number}/withdraw",
        data={"withdrawn_on": fd.DISCHARGE_DATE, "reason": "", "csrf_token": token},
    )
    assert response.status_code == 422
    assert f'value="{fd.DISCHARGE_DATE}"' in response.text and 'role="alert"' in response.text
    assert get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number).state == (
        "randomized"
    )
    response = browser.post(
        f"/subjects/{number}/withdraw",
        data={"withdrawn_on": fd.DISCHARGE_DATE, "reason": "moves abroad", "csrf_token": token},
    )
    assert response.status_code == 303
    assert "Withdrawal recorded" in browser.get(f"/subjects/{number}").text


def test_life1_home_shows_no_refusal_to_any_role(states: States) -> None:
    """A role that does not follow visits or queries gets no such panel, never a red
    refusal (issue 14: the DSMB saw refusals on its home page)."""
    for role in ROLES:
        page = signed_in(states.trial, role).get("/home")
        assert page.status_code == 200, role
        assert 'class="refusal"' not in page.text, role


def test_life1_success_message_shows_once_after_an_action(states: States) -> None:
    """Feedback (issue 14): the page after an action says what was done, once."""
    browser = signed_in(states.trial, "coordinator")
    response = browser.post(
        "/me/time-zone", data={"timezone": "Europe/Berlin", "csrf_token": csrf_of(browser)}
    )
    assert response.status_code == 303
    first = browser.get(response.headers["location"]).text
    assert 'id="flash"' in first and "Time zone saved" in first
    assert 'id="flash"' not in browser.get(response.headers["location"]).text


def test_data2_form_status_shows_an_open_query(states: States) -> None:
    """Per-form status (issue 14): a form with an open query says so on the subject page;
    the others of the subject stay complete, and a form not entered is not started."""
    t = states.trial
    number = states.numbers["echo_qualified"]
    data_queries.raise_query(
        t.ctx,
        t.actor("monitor"),
        t.study_id,
        number,
        form_code="tte",
        field="lvef_pct",
        text="Source says 35 %",
    )
    page = signed_in(t, "coordinator").get(f"/subjects/{number}").text
    row = page[page.index('id="form-tte"') :].split("</tr>")[0]
    assert "has open query" in row
    nyha = page[page.index('id="form-nyha"') :].split("</tr>")[0]
    assert "complete" in nyha
    angiogram = page[page.index('id="form-angiogram"') :].split("</tr>")[0]
    assert "not started" in angiogram
