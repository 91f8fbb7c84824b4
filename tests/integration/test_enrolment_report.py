"""REP-1: the enrolment report and the forecast from the database, on data made through the
services (several sites and regions, randomized and screen-failed subjects, a test subject)."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests import journey as j
from tests.conftest import Trial, flagship
from trialdesk.domain.errors import PermissionDenied, ValidationFailed
from trialdesk.reports.enrolment import FORECAST_LABEL, CountRow, MonthRow, write_plots
from trialdesk.services import admin, reports, screening
from trialdesk.stats.forecast import DAYS_PER_MONTH, SiteState, fit_prior

pytestmark = pytest.mark.req("REP-1")

AS_OF = dt.date(2027, 3, 31)
LATE = dt.date(2027, 3, 8)


def _screen_fail(t: Trial, site: str, on: dt.date) -> str:
    t.clock.set_day(on)
    coord = j.staff(t, "coordinator", site)
    number = screening.register_subject(
        t.ctx, coord, t.study_id, site_code=site, registered_on=on
    ).number
    screening.decline_consent(t.ctx, coord, t.study_id, number, reason="Declined to take part")
    return number


@pytest.fixture
def enrolled(trial: Trial) -> Trial:
    """S101 (US): 2 randomized + 1 test subject; S102 (US): 1 screen failure in January;
    S301 (DE): 1 randomized; S201 (CA): 1 screen failure in March. Randomized on 2027-02-15,
    other registrations on 2027-01-25 unless said."""
    j.randomized(trial)
    j.randomized(trial)
    j.randomized(trial, "S301")
    j.register(trial, test=True)
    _screen_fail(trial, "S102", j.CONSENT)
    _screen_fail(trial, "S201", LATE)
    trial.clock.set_day(AS_OF)
    return trial


def test_rep1_counts_by_site_country_region_and_month(enrolled: Trial) -> None:
    t = enrolled
    report = reports.enrolment_report(t.ctx, t.actor("manager"), t.study_id, simulations=200)
    assert report.as_of == AS_OF
    assert (report.target, report.registered, report.randomized) == (
        flagship().protocol.enrolment.total_cap,
        5,
        3,
    )
    sites = {r.key: r for r in report.by_site}
    assert sites["S101"] == CountRow("S101", 2, 2)  # the test subject is not counted
    assert sites["S102"] == CountRow("S102", 1, 0)
    assert sites["S201"] == CountRow("S201", 1, 0)
    assert sites["S301"] == CountRow("S301", 1, 1)
    assert sites["S401"] == CountRow("S401", 0, 0)
    assert {r.key: (r.registered, r.randomized) for r in report.by_country} == {
        "US": (3, 2),
        "CA": (1, 0),
        "DE": (1, 1),
        **{c: (0, 0) for c in {r.key for r in report.by_country} - {"US", "CA", "DE"}},
    }
    assert [(r.key, r.registered, r.randomized) for r in report.by_region] == [
        ("AU", 0, 0),
        ("CA", 1, 0),
        ("EU", 1, 1),
        ("US", 3, 2),
    ]
    assert report.by_month == [
        MonthRow("2027-01", 4, 0, 4, 0),
        MonthRow("2027-02", 0, 3, 4, 3),
        MonthRow("2027-03", 1, 0, 5, 3),
    ]


def test_rep1_as_of_cuts_off_later_subjects(enrolled: Trial) -> None:
    t = enrolled
    report = reports.enrolment_report(
        t.ctx, t.actor("statistician"), t.study_id, as_of=dt.date(2027, 2, 10), simulations=100
    )
    assert (report.registered, report.randomized) == (4, 0)
    assert [m.month for m in report.by_month] == ["2027-01", "2027-02"]
    assert report.forecast is not None and report.forecast.randomized == 0


CREATED = dt.date(2027, 1, 25)
"""The trial's sites are created (so activated, by the record) on the study's first day."""


def _expected_states(as_of: dt.date) -> list[SiteState]:
    """The opening rule written out from the record of ``enrolled``: every site active since
    its creation (no later registration is earlier)."""
    recruited = {"S101": 2, "S301": 1}
    months = (as_of - CREATED).days / DAYS_PER_MONTH
    return [
        SiteState(site.code, recruited.get(site.code, 0), months)
        for site in flagship().protocol.sites
    ]


def test_rep1_slow_site_posterior_mean_is_where_the_model_says(enrolled: Trial) -> None:
    """S102 opened at its recorded activation (its creation, 2027-01-25, not its plan of
    2027-01-18) and randomized nobody: its rate is (α + 0) / (β + τ); S101 (2 randomized) is
    faster."""
    t = enrolled
    fc = reports.forecast_from_database(t.ctx, t.actor("dsmb"), t.study_id, seed=7)
    alpha, beta = fit_prior(_expected_states(AS_OF))
    assert (fc.alpha, fc.beta) == pytest.approx((alpha, beta))
    slow = fc.site("S102")
    tau = (AS_OF - CREATED).days / DAYS_PER_MONTH
    assert slow.opened_on == CREATED
    assert slow.months_open == pytest.approx(tau)
    assert slow.posterior_mean == pytest.approx(alpha / (beta + tau))
    fast = fc.site("S101")
    assert fast.posterior_mean == pytest.approx((alpha + 2) / (beta + tau))
    assert fast.posterior_mean > slow.posterior_mean
    # S201 was planned for 2027-01-25 and registered in March: open since its activation
    assert fc.site("S201").opened_on == CREATED


def test_rep1_future_sites_join_at_their_planned_activation(enrolled: Trial) -> None:
    """REP-1 (issue 16): a site not active yet, which has registered nobody, joins at its
    planned activation."""
    t = enrolled
    admin.deactivate_site(t.ctx, t.actor("admin"), t.study_id, "S302")
    fc = reports.forecast_from_database(t.ctx, t.actor("monitor"), t.study_id, seed=1)
    later = fc.site("S302")  # planned 2027-04-12
    assert later.opens_on == dt.date(2027, 4, 12) and later.opened_on is None
    assert later.opens_in_months == pytest.approx(12 / DAYS_PER_MONTH)
    assert later.posterior_mean == pytest.approx(fc.alpha / fc.beta)
    f = fc.forecast
    assert (f.target, f.already, f.remaining) == (fc.target, 3, fc.target - 3)
    assert 0 < f.p05 < f.p50 < f.p95
    assert f.date_p50 == AS_OF + dt.timedelta(days=round(f.p50 * DAYS_PER_MONTH))
    again = reports.forecast_from_database(t.ctx, t.actor("monitor"), t.study_id, seed=1)
    assert again.forecast == f


def test_rep1_forecast_reads_recorded_activations_that_differ_from_plans(
    enrolled: Trial,
) -> None:
    """REP-1 (issue 16 deliver 7): S103 (planned 2027-02-08) opened late and S302 (planned
    2027-04-12) early, both on 2027-03-15 by the record; S104 (planned 2027-03-08) never
    opened. The forecast reads the record: S103 and S302 open since 2027-03-15, S104 left
    out; on 2027-03-01 the plans count for sites not active yet (S302 and S104 at their plans
    still ahead, S103 past its plan without opening: left out)."""
    t = enrolled
    administrator = t.actor("admin")
    t.clock.set_day(dt.date(2027, 2, 1))
    for code in ("S103", "S104", "S302"):
        admin.deactivate_site(t.ctx, administrator, t.study_id, code)
    opened = dt.date(2027, 3, 15)
    t.clock.set_day(opened)
    for code in ("S103", "S302"):
        admin.activate_site(t.ctx, administrator, t.study_id, code)
    t.clock.set_day(AS_OF)
    fc = reports.forecast_from_database(t.ctx, t.actor("manager"), t.study_id, seed=3)
    plans = {s.code: s.planned_activation for s in flagship().protocol.sites}
    for code in ("S103", "S302"):
        row = fc.site(code)
        assert row.opened_on == opened != plans[code]
        assert row.opens_on is None and row.opens_in_months == 0
        assert row.months_open == pytest.approx((AS_OF - opened).days / DAYS_PER_MONTH)
    assert "S104" in fc.excluded_sites
    assert fc.site("S101").opened_on == CREATED
    # under its plan S103 would have been open since 2027-02-08: longer than by the record
    planned = plans["S103"]
    assert planned is not None
    assert fc.site("S103").months_open < (AS_OF - planned).days / DAYS_PER_MONTH

    earlier = dt.date(2027, 3, 1)
    before = reports.forecast_from_database(
        t.ctx, t.actor("manager"), t.study_id, as_of=earlier, seed=3
    )
    assert before.site("S302").opens_on == plans["S302"]
    assert before.site("S302").opened_on is None
    assert before.site("S104").opens_on == plans["S104"]  # 2027-03-08, still ahead
    assert "S103" in before.excluded_sites  # its plan passed without opening
    assert before.site("S101").opened_on == CREATED


def test_rep1_deactivated_site_counts_but_recruits_no_more(enrolled: Trial) -> None:
    t = enrolled
    admin.deactivate_site(t.ctx, t.actor("admin"), t.study_id, "S301")
    fc = reports.forecast_from_database(t.ctx, t.actor("manager"), t.study_id, seed=1)
    assert fc.excluded_sites == ["S301"]
    assert "S301" not in {s.code for s in fc.sites}
    assert fc.randomized == 3


def test_rep1_plot_is_png_and_svg_with_the_forecast(enrolled: Trial, tmp_path: Path) -> None:
    t = enrolled
    report = reports.enrolment_report(t.ctx, t.actor("manager"), t.study_id, simulations=200)
    png, svg = write_plots(report, tmp_path / "out")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = "".join(el.text or "" for el in root.iter("{http://www.w3.org/2000/svg}text"))
    assert FORECAST_LABEL in texts
    assert root.find(".//*[@id='forecast-line']") is not None


def test_rep1_report_is_for_study_wide_roles_and_refuses_bad_input(enrolled: Trial) -> None:
    t = enrolled
    for role in ("coordinator", "implanter", "crc"):
        with pytest.raises(PermissionDenied):
            reports.enrolment_report(t.ctx, t.actor(role), t.study_id)
        with pytest.raises(PermissionDenied):
            reports.forecast_from_database(t.ctx, t.actor(role), t.study_id)
    manager = t.actor("manager")
    with pytest.raises(ValidationFailed, match="simulations"):
        reports.forecast_from_database(t.ctx, manager, t.study_id, simulations=0)
    with pytest.raises(ValidationFailed, match="in the future"):
        reports.enrolment_report(t.ctx, manager, t.study_id, as_of=dt.date(2027, 6, 1))
