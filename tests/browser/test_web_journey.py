"""One subject's whole journey through the pages in Chromium, every role doing its part, to
the 60-month contact (issue 14 Must-show; LIFE-1, ELIG-1, SIG-1, RAND-4, RAND-6, RAND-7,
SCHED-2, DATA-2, THER-1): registration, consent, screening forms, signed confirmations
("does not apply" for the exclusion), the checklist, the CRC, anatomy, randomization with its
confirmation and reload-safe result, the index procedure, discharge, an adverse event, an
emergency unblinding, an additional therapy adjudicated by the CRC, a query raised by the
monitor, answered by the site and closed, every visit to Y5, the scheduled
unblinding and completion; a second subject withdraws. No CLI or API step in between: the
device stock is put on the shelf before the journey starts.

Screenshots for the user guide are saved under docs/img/ with stable names (guide_shot)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests import flagship_data as fd
from tests import journey
from tests.browser.conftest import SCREENS, guide_shot
from tests.conftest import PASSWORD, Trial

ARMS = ("Intervention (CARILLON implant)", "Control (sham procedure)")
VISIT_DATE_FIELDS = {"follow_up": "visit_date", "annual_contact": "contact_date"}
"""A visit form's own date field: the page fills it from the one visit date."""


class User:
    """One person at one browser (own cookies): signs in again when the session has lapsed."""

    def __init__(self, browser: Any, base: str, username: str) -> None:
        self.context = browser.new_context(viewport={"width": 1024, "height": 900})
        self.page = self.context.new_page()
        self.base = base
        self.username = username
        self.shots = 0

    def open(self, path: str) -> Any:
        self.page.goto(self.base + path)
        if "/signin" in self.page.url:
            self.page.fill("#username", self.username)
            self.page.fill("#password", PASSWORD)
            with self.page.expect_navigation():
                self.page.click("button:has-text('Sign in')")
        return self.page

    def shot(self, name: str) -> None:
        self.shots += 1
        self.page.screenshot(path=str(SCREENS / f"{self.username}-{self.shots:02d}-{name}.png"))


def fill_forms(page: Any, forms: dict[str, dict[str, Any]]) -> None:
    for code, values in forms.items():
        for name, value in values.items():
            if VISIT_DATE_FIELDS.get(code) == name:
                continue
            selector = f"#f-{code}-{name}"
            if isinstance(value, bool):
                page.select_option(selector, "yes" if value else "no")
            elif page.locator(selector).evaluate("e => e.tagName") == "SELECT":
                page.select_option(selector, str(value))
            else:
                page.fill(selector, "" if value is None else str(value))


def flash(page: Any) -> str:
    return str(page.inner_text("#flash"))


def decide(page: Any, number: str, decision: str | None, reason: str) -> None:
    """On the CRC queue: open the subject's open case dossier and sign a decision (the
    given one, or the first offered: nothing is preselected)."""
    page.locator(f"tr:has-text('{number}') a:has-text('Dossier')").first.click()
    choices = page.locator("input[name=decision]")
    assert choices.count() > 1 and not any(
        choices.nth(i).is_checked() for i in range(choices.count())
    )
    if decision is None:
        choices.first.check()
    else:
        page.check(f"input[name=decision][value={decision}]")
    page.fill("#reason", reason)
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign decision')")


def query_round_trip(browser: Any, server: str, number: str) -> None:
    """A query raised by the monitor on the M1 NYHA class, answered by the coordinator and
    closed by the monitor, all on the form's page (DATA-2)."""
    url = f"{server}/subjects/{number}/queries/follow_up?visit=M1"
    monitor = User(browser, server, "monitor")
    page = monitor.open("/home")  # sign-in returns to the path only: then the form
    page.goto(url)
    page.click("summary:has-text('Raise a query on NYHA class')")
    page.fill("#raise-nyha_class", "Source notes say NYHA III at this visit; please check.")
    page.locator("#field-nyha_class button:has-text('Raise query')").click()
    guide_shot(page, "query-raised")
    coordinator = User(browser, server, "coordinator")
    page = coordinator.open("/home")
    page.goto(url)
    page.locator(".query select[name=response]").first.select_option("confirmed")  # REC-7
    page.locator(".query textarea[name=text]").first.fill("Checked the chart: NYHA II is right.")
    page.click("button:has-text('Send answer')")
    guide_shot(page, "query-answered")
    page = monitor.open("/home")
    page.goto(url)
    page.click("button:has-text('Close query')")
    assert "closed" in page.locator(".query").first.inner_text()
    guide_shot(page, "query-closed")
    monitor.context.close()
    coordinator.context.close()


def test_life1_whole_journey_to_the_60_month_contact_in_chromium(
    web_trial: Trial, server: str, browser: Any
) -> None:
    t = web_trial
    udi = journey.device_udi(t)  # stock on the shelf before the journey (SUP-1)
    t.clock.set_day(journey.CONSENT)
    coord = User(browser, server, "coordinator")
    page = coord.open("/home")
    page.click("button:has-text('Register subject')")
    number = page.url.rsplit("/", 1)[1]
    assert "registered" in flash(page)
    page.fill("#consent_date", fd.CONSENT_DATE)
    page.fill("#consent_version", "v1.0")
    page.click("button:has-text('Record consent')")
    assert page.inner_text("#state") == "screening" and "Consent recorded" in flash(page)
    guide_shot(page, "subject-consented")

    t.clock.set_day(journey.SCREENING)
    for code, values in fd.screening_forms().items():
        page = coord.open(f"/subjects/{number}/forms/{code}")
        fill_forms(page, {code: values})
        if code == "tte":
            guide_shot(page, "screening-form")
        page.click("button:has-text('Save')")
        assert "saved" in flash(page), code
    page = coord.open(f"/subjects/{number}/forms/tte")  # saved values read back
    assert page.inner_text("#saved-lvef_pct") == str(fd.screening_forms()["tte"]["lvef_pct"])
    guide_shot(page, "saved-form")
    page = coord.open(f"/subjects/{number}")
    for criterion in fd.INVESTIGATOR_CRITERIA:
        form = page.locator("form.confirm", has=page.locator(f"input[value='{criterion}']"))
        form.locator(f"input[value='{fd.web_answer(criterion)}']").check()
        form.locator("input[type=password]").fill(PASSWORD)
        if criterion == "EXC-6":
            guide_shot(page, "confirm-exclusion")
        form.locator("button").click()
        assert "Signed" in flash(page)
    assert "does not apply" in page.inner_text("#crit-EXC-6")
    page.locator("#checklist").scroll_into_view_if_needed()
    guide_shot(page, "eligibility-checklist")
    page.click("button:has-text('Complete screening')")
    assert page.inner_text("#state") == "echo qualified" and "CRC" in flash(page)

    crc = User(browser, server, "crc")  # signs in with the keyboard alone
    page = crc.page
    page.goto(server + "/crc")
    page.focus("#username")
    page.keyboard.type("crc")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    guide_shot(page, "crc-queue")
    decide(page, number, "approve", "Suitable on echo; CS device appropriate")
    guide_shot(page, "crc-decided")
    assert crc.open(f"/subjects/{number}").inner_text("#state") == "awaiting procedure"

    t.clock.set_day(journey.PROCEDURE)
    implanter = User(browser, server, "implanter")
    page = implanter.open(f"/subjects/{number}/anatomy")
    fill_forms(page, fd.anatomy_forms())
    page.click("button:has-text('Save')")
    assert "suitable" in flash(page)
    page.click("a:has-text('Randomize')")
    guide_shot(page, "randomize-confirm")
    page.click("button:has-text('Yes, randomize')")
    arm = page.inner_text("#arm")
    assert any(label in arm for label in ARMS)
    guide_shot(page, "randomization-result")
    page.reload()  # reload-safe: the stored result again, not a refusal
    assert page.inner_text("#arm") == arm
    code = "INT" if "CARILLON" in arm else "CTRL"
    forms = fd.implant_procedure_forms(udi=udi) if code == "INT" else fd.sham_procedure_forms()
    page = implanter.open(f"/subjects/{number}/procedure")
    fill_forms(page, forms)
    page.click("button:has-text('Save')")
    assert "Index procedure recorded" in flash(page)

    page = coord.open(f"/subjects/{number}")
    assert "number S101-R" in page.inner_text("#randomization")
    assert not any(label in page.content() for label in ARMS)  # the coordinator stays blind
    t.clock.set_day(dt.date.fromisoformat(fd.DISCHARGE_DATE))
    page = coord.open(f"/subjects/{number}")
    page.fill("#discharged_on", fd.DISCHARGE_DATE)
    page.click("button:has-text('Record discharge')")
    assert "Discharge recorded" in flash(page)

    dates = journey.visit_dates()
    for visit in ("M1", "M6", "M12", "M18", "M24", "Y3", "Y4", "Y5"):
        on = dates[visit]
        t.clock.set_day(on)
        page = coord.open(f"/subjects/{number}/visits/{visit}")
        assert on.isoformat() >= page.inner_text("#window").split("window ")[1][:10]
        page.fill("#visit_date", on.isoformat())
        visit_forms = (
            fd.annual_contact_forms(on.isoformat())
            if visit.startswith("Y")
            else fd.follow_up_forms(on.isoformat())
        )
        fill_forms(page, visit_forms)
        if visit == "M1":
            guide_shot(page, "visit-entry")
        page.click("button:has-text('Save')")
        assert f"Visit {visit} saved" in flash(page), visit
        if visit == "M1":  # the monitor queries a value, the site answers, the monitor closes
            query_round_trip(browser, server, number)
            page = coord.open(f"/subjects/{number}")
        if visit == "M1":  # an adverse event reported at the 1-month visit
            page.click("a:has-text('Record an adverse event')")
            fill_forms(page, fd.adverse_event_forms(on.isoformat()))
            guide_shot(page, "adverse-event")
            page.click("button:has-text('Save')")
            assert "Adverse event recorded" in flash(page)
        if visit == "M6":  # deterioration: the investigator breaks the code
            page.click("a:has-text('Emergency unblinding')")
            page.fill("#reason", "acute decompensation; treatment decision needs the arm")
            page.fill("#password", PASSWORD)
            guide_shot(page, "emergency-unblinding")
            page.click("button:has-text('Break the code')")
            assert any(label in page.inner_text("#arm") for label in ARMS)
            page = coord.open(f"/subjects/{number}")
            page.fill("#therapy_date", on.isoformat())  # an additional therapy, to the CRC
            page.select_option("#therapy_type", "crt")
            page.click("button:has-text('Record therapy')")
            assert "sent to the CRC" in flash(page)
            page = crc.open("/crc")  # the CRC adjudicates the therapy (THER-2)
            decide(page, number, None, "CRT for worsening heart failure; follow-up continues")
            guide_shot(page, "crc-therapy-decided")
        if visit == "M24":  # the scheduled unblinding after the 24-month evaluation
            page.fill("#unblind-pw", PASSWORD)
            page.click("button:has-text('Unblind (signed)')")
            assert page.inner_text("#state") == "unblinded"
    page = coord.open(f"/subjects/{number}")
    page.click("button:has-text('Complete follow-up')")
    assert page.inner_text("#state") == "completed" and "finished" in flash(page)
    guide_shot(page, "subject-completed")

    monitor = User(browser, server, "monitor")  # reads every saved value, changes none
    page = monitor.open(f"/subjects/{number}")  # sign-in returns to the path, not the query
    page.goto(f"{server}/subjects/{number}/forms/follow_up?visit=M1&seq=1")
    assert page.locator("#saved-nyha_class").inner_text() == "II"
    assert page.locator("input[name=reason]").count() == 0

    page = coord.open("/home")  # a second subject withdraws consent during screening
    page.click("button:has-text('Register subject')")
    other = page.url.rsplit("/", 1)[1]
    page.fill("#consent_date", dates["Y5"].isoformat())
    page.fill("#consent_version", "v1.0")
    page.click("button:has-text('Record consent')")
    page.click("summary:has-text('Withdrawal of consent')")
    page.fill("#withdrawn_on", dates["Y5"].isoformat())
    page.fill("#withdraw-reason", "changed her mind")
    guide_shot(page, "withdrawal")
    page.click("button:has-text('Record withdrawal')")
    assert page.inner_text("#state") == "withdrawn" and "Withdrawal recorded" in flash(page)
    assert other != number

    page.set_viewport_size({"width": 768, "height": 1024})  # tablet: no sideways scrolling
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.click("button:has-text('Sign out')")
    assert "/signin" in page.url


ROLE_PAGES = {
    "coordinator": "/home",
    "implanter": "/home",
    "crc": "/crc",
    "monitor": "/home",
    "manager": "/dashboard",
    "statistician": "/statistician",
    "dsmb": "/statistician",
    "admin": "/admin/users",
}
"""Where each role of the flagship starts its work (SYSTEM.md §1)."""


def test_life1_each_role_sees_its_work_without_refusals_in_chromium(
    web_trial: Trial, server: str, browser: Any
) -> None:
    """Every demo role signs in, opens its working page and a randomized subject: nothing
    refused on either, the subject page offers only that role's actions, and the blinded
    roles see no arm (RAND-6). Screenshots home-<role> and subject-<role> for the guide."""
    t = web_trial
    number, _arm = journey.procedure_done(t)
    t.clock.set_day(journey.visit_dates()["M1"])
    for role, start in ROLE_PAGES.items():
        user = User(browser, server, role)
        page = user.open(start)
        assert page.locator(".refusal").count() == 0, role
        guide_shot(page, f"home-{role}")
        page = user.open(f"/subjects/{number}")
        assert page.locator(".refusal").count() == 0, role
        offers = {
            token
            for found in page.locator("[data-action]").evaluate_all(
                "els => els.map(e => e.dataset.action)"
            )
            for token in found.split()
        }
        if role == "coordinator":
            assert {"record_visit", "record_adverse_event", "emergency_unblind"} <= offers
        else:
            assert not offers & {"record_visit", "withdraw", "record_adverse_event"}, role
        if role not in ("implanter", "statistician", "dsmb"):
            assert not any(label in page.content() for label in ARMS), role
        guide_shot(page, f"subject-{role}")
        user.context.close()
