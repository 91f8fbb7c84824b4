"""The review pages in Chromium (issue 14): a data query raised, answered and closed through
the pages only, the CRC signing from the case dossier, the lists, the record status grid and
the casebook; each page saved for the user guide (docs/img/, tests/browser/screenshots.py).
DATA-2, ELIG-3, SIG-1."""

from __future__ import annotations

from typing import Any

from tests import flagship_data as fd
from tests import journey
from tests.browser.screenshots import guide_shot
from tests.browser.test_web_journey import User
from tests.conftest import PASSWORD, Trial
from trialdesk.services import data_queries, followup


def test_data2_elig3_query_and_crc_dossier_through_the_pages_in_chromium(
    web_trial: Trial, server: str, browser: Any
) -> None:
    t = web_trial
    number, _arm = journey.procedure_done(t)
    on = journey.visit_dates()["M1"]
    t.clock.set_day(on)
    followup.record_visit(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        visit_code="M1",
        visit_date=on,
        forms=fd.follow_up_forms(on.isoformat()),
    )
    candidate = journey.echo_qualified(t)
    t.clock.set_day(on)

    monitor = User(browser, server, "monitor")
    monitor.open("/home")  # sign in first: the sign-in page returns to the path only
    page = monitor.open(f"/subjects/{number}/queries/follow_up?visit=M1")
    page.click("#field-nyha_class summary")
    page.fill("#raise-nyha_class", "The clinic letter says NYHA III; please check the source")
    with page.expect_navigation():
        page.click("#field-nyha_class button:has-text('Raise query')")
    assert "Query raised." in page.content()

    coordinator = User(browser, server, "coordinator")
    page = coordinator.open("/queries")
    assert "please check the source" in page.content()
    guide_shot(page, "queries-list")
    with page.expect_navigation():
        page.click("td a:has-text('#')")
    page.select_option("select[name=response]", "corrected")  # REC-7 coded response
    page.fill("textarea[name=text]", "Transcription error: the letter says III")
    page.click("summary:has-text('correct it')")
    page.fill("input[name=new_value]", "III")
    page.fill("input[name=reason]", "clinic letter of the M1 visit")
    with page.expect_navigation():
        page.click("button:has-text('Send answer')")
    assert "Answer sent to the monitor." in page.content()

    page = monitor.open(f"/subjects/{number}/queries/follow_up?visit=M1")
    assert "Transcription error" in page.content()
    with page.expect_navigation():
        page.click("button:has-text('Close query')")
    assert "Query closed." in page.content()
    guide_shot(page, "query-thread", full_page=True)
    (closed,) = data_queries.open_queries(t.ctx, t.actor("monitor"), t.study_id, status="closed")
    assert closed.answer == "Transcription error: the letter says III"

    crc = User(browser, server, "crc")
    page = crc.open("/crc")
    with page.expect_navigation():
        page.click("a:has-text('Dossier of case')")
    assert page.locator("input[name=decision]:checked").count() == 0  # nothing preselected
    guide_shot(page, "crc-dossier", full_page=True)
    page.check("input[name=decision][value=approve]")
    page.fill("#reason", "Functional MR grade 3 on the core-lab echo")
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("button:has-text('Sign decision')")
    content = page.content()
    assert "Your signed decision is recorded." in content and candidate in content
    assert "CRC approval for the implant procedure" in content
    guide_shot(page, "crc-signed")

    page = monitor.open("/subjects")
    guide_shot(page, "subjects-list")
    page = monitor.open("/grid")
    assert number in page.content()
    guide_shot(page, "record-status-grid")
    page = monitor.open(f"/subjects/{number}/casebook")
    assert "Changed from II to III" in page.content()
    guide_shot(page, "casebook", full_page=True)
