"""A subject's journey through the pages in Chromium (LIFE-1, DATA-1, SIG-1, RAND-6):
each page is saved as a screenshot under test-artifacts/screens/."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests import flagship_data as fd
from tests import journey
from tests.browser.conftest import SCREENS
from tests.conftest import PASSWORD, Trial

ARMS = ("Intervention (CARILLON implant)", "Control (sham procedure)")


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
            selector = f"#f-{code}-{name}"
            if isinstance(value, bool):
                page.select_option(selector, "yes" if value else "no")
            elif page.locator(selector).evaluate("e => e.tagName") == "SELECT":
                page.select_option(selector, str(value))
            else:
                page.fill(selector, "" if value is None else str(value))


def test_life1_coordinator_crc_implanter_journey_in_chromium(
    web_trial: Trial, server: str, browser: Any
) -> None:
    t = web_trial
    t.clock.set_day(journey.CONSENT)
    coord = User(browser, server, "coordinator")
    page = coord.open("/home")
    coord.shot("home")
    page.click("button:has-text('Register subject')")
    number = page.url.rsplit("/", 1)[1]
    page.fill("#consent_date", fd.CONSENT_DATE)
    page.fill("#consent_version", "v1.0")
    page.click("button:has-text('Record consent')")
    assert page.inner_text("#state") == "screening"
    coord.shot("consented")

    t.clock.set_day(journey.SCREENING)  # a week on: the coordinator signs in again
    for code, values in fd.screening_forms().items():
        page = coord.open(f"/subjects/{number}/forms/{code}")
        fill_forms(page, {code: values})
        coord.shot(f"form-{code}")
        page.click("button:has-text('Save')")
        assert page.url.endswith(f"/subjects/{number}#screening"), page.url
    for criterion in fd.INVESTIGATOR_CRITERIA:
        form = page.locator("form.confirm", has=page.locator(f"input[value='{criterion}']"))
        form.locator("input[value='yes']").check()
        form.locator("input[type=password]").fill(PASSWORD)
        coord.shot(f"sign-{criterion}")
        form.locator("button").click()
    page.click("button:has-text('Complete screening')")
    assert page.inner_text("#state") == "echo qualified"
    coord.shot("echo-qualified")

    crc = User(browser, server, "crc")  # signs in with the keyboard alone
    page = crc.page
    page.goto(server + "/crc")
    page.focus("#username")
    page.keyboard.type("crc")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/crc")
    case = page.locator("section.card", has_text=number)
    case.locator("select").select_option("approve")
    case.locator("textarea").fill("Suitable on echo")
    case.locator("input[type=password]").fill(PASSWORD)
    crc.shot("crc-queue")
    case.locator("button").click()
    assert number not in page.inner_text("main")
    crc.shot("crc-done")

    t.clock.set_day(journey.PROCEDURE)
    implanter = User(browser, server, "implanter")
    page = implanter.open(f"/subjects/{number}/anatomy")
    fill_forms(page, fd.anatomy_forms())
    implanter.shot("anatomy")
    page.click("button:has-text('Save')")
    page.click("button:has-text('Randomize')")
    arm = page.inner_text("#arm")
    assert any(label in arm for label in ARMS)
    implanter.shot("randomized-with-arm")

    page = coord.open(f"/subjects/{number}")
    assert "number S101-R" in page.inner_text("#randomization")
    assert page.locator("#arm").count() == 0
    assert not any(label in page.content() for label in ARMS)
    coord.shot("randomized-blinded")
    page.set_viewport_size({"width": 768, "height": 1024})  # tablet: no sideways scrolling
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    coord.shot("subject-tablet")
    page.set_viewport_size({"width": 1024, "height": 900})

    t.clock.set_day(dt.date.fromisoformat(fd.M1_DATE))
    page = coord.open(f"/subjects/{number}/visits/M1")
    page.fill("#visit_date", fd.M1_DATE)
    fill_forms(page, fd.follow_up_forms())
    page.fill("#f-follow_up-kccq_overall_score", "61,0")  # a decimal comma: one field error
    page.click("button:has-text('Save')")
    error = page.inner_text("#f-follow_up-kccq_overall_score-err")
    assert "use '.' as the decimal point" in error
    coord.shot("visit-error")
    page.fill("#f-follow_up-kccq_overall_score", "61.0")
    page.click("button:has-text('Save')")
    row = page.locator("#visit-M1")
    assert "done on " + fd.M1_DATE in row.inner_text()
    coord.shot("visit-done")

    page.click("button:has-text('Sign out')")
    assert "/signin" in page.url
    page.goto(server + "/home")
    assert "/signin" in page.url
