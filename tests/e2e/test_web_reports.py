"""Reports on the web dashboard, on SQLite and PostgreSQL: the CONSORT diagram as an <img>
served as SVG from our own origin (REP-2; the CSP allows images from self), and the report
downloads as CSV and JSON (REP-1, REP-3), with no arm for a blinded user (RAND-6)."""

from __future__ import annotations

import csv
import io
import re

from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_api_blinding import leaks
from tests.e2e.test_web_pages import BLINDED, client, signed_in
from tests.integration.test_consort import build_dataset
from trialdesk.services import screening
from trialdesk.web.report_pages import REPORT_DOWNLOADS

IMG = re.compile(r'<img src="(/reports/consort\.svg)" alt="([^"]*)"')


def test_rep2_dashboard_shows_the_consort_diagram_as_an_image(trial: Trial) -> None:
    trial.prepared(build_dataset)
    web = signed_in(trial, "manager")
    page = web.get("/dashboard")
    assert page.status_code == 200
    found = IMG.search(page.text)
    assert found is not None, page.text
    assert "14 assessed for eligibility, 5 excluded, 7 randomized" in found.group(2)
    assert "img-src 'self'" in page.headers["content-security-policy"]
    figure = web.get(found.group(1))
    assert figure.status_code == 200
    assert figure.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in figure.content and b"Assessed for eligibility (n=14)" in figure.content
    assert "script-src" not in figure.headers["content-security-policy"]  # default 'none'
    assert not leaks(figure.text)
    by_arm = signed_in(trial, "statistician").get("/reports/consort.svg")
    assert leaks(by_arm.text)  # the arm boxes are there for whom they are due


def test_rep3_dashboard_links_to_csv_and_json_downloads(trial: Trial) -> None:
    data = trial.prepared(build_dataset)
    web = signed_in(trial, "manager")
    page = web.get("/dashboard").text
    for name in REPORT_DOWNLOADS:
        assert f'href="/reports/{name}.csv"' in page and f'href="/reports/{name}.json"' in page
    log = web.get("/reports/screening-log.csv")
    assert log.status_code == 200
    assert log.headers["content-type"].startswith("text/csv")
    assert "attachment" in log.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(log.text)))
    assert len(rows) == 14 and {r["number"] for r in rows} >= set(data.arms)
    assert sum(1 for r in rows if r["screen_failure_reason"]) == 5
    as_json = web.get("/reports/screening-log.json").json()
    assert [r["number"] for r in as_json] == [r["number"] for r in rows]
    enrolment = web.get("/reports/enrolment.json").json()
    assert {"level": "site", "key": "S101", "registered": 13, "randomized": 6} in enrolment
    (query,) = web.get("/reports/queries.json").json()
    assert query["subject"] == data.roles["visits"]


def test_rep3_downloads_refuse_as_the_services_do(trial: Trial) -> None:
    trial.prepared(build_dataset)
    coordinator = signed_in(trial, "coordinator")
    refused = coordinator.get("/reports/screening-log.csv")
    assert refused.status_code == 403 and "screening log" in refused.text
    assert coordinator.get("/reports/nothing.csv").status_code == 404
    assert coordinator.get("/reports/compliance.xml").status_code == 404
    anonymous = client(trial).get("/reports/consort.svg")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/signin")


def test_rep3_csv_cells_cannot_start_a_spreadsheet_formula(trial: Trial) -> None:
    """A free-text value such as a screen-failure detail is written as text, not a formula."""
    number = j.consented(trial)
    coordinator = trial.actor("coordinator")
    screening.screen_fail_other(trial.ctx, coordinator, trial.study_id, number, reason="=1+1")
    text = signed_in(trial, "manager").get("/reports/screening-log.csv").text
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["screen_failure_detail"] == "'=1+1"


def test_rand6_no_download_or_figure_shows_an_arm_to_a_blinded_user(trial: Trial) -> None:
    trial.prepared(build_dataset)
    served = 0
    for user in BLINDED:
        web = signed_in(trial, user)
        paths = ["/dashboard", "/reports/consort.svg"]
        paths += [f"/reports/{n}.{ext}" for n in REPORT_DOWNLOADS for ext in ("csv", "json")]
        for path in paths:
            response = web.get(path)
            assert response.status_code in (200, 403), (user, path, response.status_code)
            assert not leaks(response.text), (user, path, leaks(response.text))
            served += response.status_code == 200
    assert served >= 30


def test_rep1_dashboard_shows_the_enrolment_plot_with_the_forecast(trial: Trial) -> None:
    """REP-1: the manager's dashboard embeds the enrolment plot, an SVG with the forecast
    legend, served with its own strict policy; counts only, no arm."""
    from trialdesk.reports.enrolment import FORECAST_LABEL

    j.randomized(trial)
    client = signed_in(trial, "manager")
    page = client.get("/dashboard")
    assert 'src="/reports/enrolment.svg"' in page.text
    figure = client.get("/reports/enrolment.svg")
    assert figure.status_code == 200
    assert figure.headers["content-type"].startswith("image/svg+xml")
    assert FORECAST_LABEL in figure.text
    assert not any(word in figure.text for word in ("INT", "CTRL", "Intervention", "sham"))
