"""Operational reports and the DSMB report (REP-3), unblinding events (RAND-7), on SQLite and
PostgreSQL, over the dataset of :mod:`tests.integration.test_consort` (built through the
services; see its docstring)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests import journey as j
from tests.conftest import Trial
from tests.integration.test_consort import Dataset, build_dataset, day
from trialdesk.domain.errors import PermissionDenied
from trialdesk.services import dashboard, data_queries
from trialdesk.services.endpoints import ArmsBlinded
from trialdesk.services.report_views import (
    crc_workload,
    deviations,
    dsmb_report_html,
    unblinding_events,
    visit_compliance,
)


@pytest.fixture
def dataset(trial: Trial) -> Dataset:
    return trial.prepared(build_dataset)


def test_rep3_visit_compliance_per_visit_and_site(trial: Trial, dataset: Dataset) -> None:
    """REP-3, SCHED-2: M1 has two on time (S101), one early (S102), one missed; M6 one late
    and one missed; a site coordinator sees only their own site."""
    report = visit_compliance(trial.ctx, trial.actor("manager"), trial.study_id)
    m1 = report.row("M1")
    assert (m1.on_time, m1.early, m1.late, m1.missed) == (2, 1, 0, 1)
    m6 = report.row("M6")
    assert (m6.on_time, m6.early, m6.late, m6.missed) == (0, 0, 1, 1)
    s101 = report.row("M1", "S101")
    assert (s101.on_time, s101.early, s101.missed) == (2, 0, 1)
    s102 = report.row("M1", "S102")
    assert (s102.on_time, s102.early, s102.missed) == (0, 1, 0)
    assert [r.visit for r in report.totals] == ["M1", "M6"]  # protocol order

    own = visit_compliance(trial.ctx, trial.actor("coordinator"), trial.study_id)
    assert {r.site for r in own.rows} == {"S101"}
    assert own.row("M1").early == 0


def test_rep3_protocol_deviations_from_the_data(trial: Trial, dataset: Dataset) -> None:
    """REP-3: out-of-window and missed visits and the randomization in error are listed."""
    found = {
        (d.subject, d.kind, d.visit)
        for d in deviations(trial.ctx, trial.actor("monitor"), trial.study_id)
    }
    roles = dataset.roles
    assert found == {
        (roles["s102"], "visit_early", "M1"),
        (roles["visits"], "visit_late", "M6"),
        (roles["lost"], "visit_missed", "M1"),
        (roles["lost"], "visit_missed", "M6"),
        (roles["in_error"], "randomized_in_error", None),
    }


def test_rep3_crc_workload_and_turnaround(trial: Trial, dataset: Dataset) -> None:
    """REP-3: every eligibility case is decided; one took 48 hours, the rest none; decisions
    by outcome and reviewer."""
    report = crc_workload(trial.ctx, trial.actor("manager"), trial.study_id)
    eligibility = report.kind("eligibility")
    assert eligibility is not None
    decided = dataset.quick_crc + 1
    assert (eligibility.opened, eligibility.decided, eligibility.pending) == (decided, decided, 0)
    assert eligibility.max_turnaround_hours == 48.0
    assert eligibility.median_turnaround_hours == 0.0
    assert report.decisions == {"approve": decided - 1, "reject": 1}
    assert report.by_reviewer == {"crc": decided}
    with pytest.raises(PermissionDenied):
        crc_workload(trial.ctx, trial.actor("coordinator"), trial.study_id)


def test_rep3_screening_log_and_open_queries_cover_the_dataset(
    trial: Trial, dataset: Dataset
) -> None:
    """REP-3: the screening log lists every assessed subject with its failure reason; the open
    query is listed (both reused from their services)."""
    log = dashboard.screening_log(trial.ctx, trial.actor("manager"), trial.study_id)
    assert len(log) == 14
    reasons = sorted(r.screen_failure_reason for r in log if r.screen_failure_reason)
    assert reasons == sorted(
        ["criteria_not_met", "crc_rejected", "anatomy_unsuitable", "declined", "other"]
    )
    (query,) = data_queries.open_queries(trial.ctx, trial.actor("monitor"), trial.study_id)
    assert (query.subject, query.visit, query.field) == (
        dataset.roles["visits"],
        "M1",
        "nyha_class",
    )


def test_rand7_unblinding_events_report(trial: Trial, dataset: Dataset) -> None:
    """RAND-7, REP-3: the emergency unblinding (who, when, why) and the trial-level request
    are reported; no arm is named."""
    events = unblinding_events(trial.ctx, trial.actor("monitor"), trial.study_id)
    assert [(e.kind, e.subject, e.by) for e in events] == [
        ("emergency", dataset.roles["visits"], "coordinator"),
        ("trial_requested", None, "manager"),
    ]
    assert events[0].reason == "acute deterioration"
    assert events[0].at.startswith(day(230).isoformat())
    assert "INT" not in repr(events) and "CTRL" not in repr(events)
    with pytest.raises(PermissionDenied):
        unblinding_events(trial.ctx, trial.actor("coordinator"), trial.study_id)


@pytest.mark.parametrize("role", ["manager", "monitor", "admin", "coordinator", "crc"])
def test_rep3_rand6_dsmb_report_refused_for_blinded_roles(
    trial: Trial, dataset: Dataset, role: str
) -> None:
    """REP-3, RAND-6: the by-arm DSMB report is refused (``blinded``) for every blinded role."""
    with pytest.raises(ArmsBlinded, match="DSMB report"):
        dsmb_report_html(trial.ctx, trial.actor(role), trial.study_id)


@pytest.mark.parametrize("role", ["statistician", "dsmb"])
def test_rep3_dsmb_report_by_arm(trial: Trial, dataset: Dataset, role: str) -> None:
    """REP-3: one HTML document with by-arm enrolment, exposure, adverse events and deaths,
    and the endpoint summaries."""
    page = dsmb_report_html(trial.ctx, trial.actor(role), trial.study_id)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Intervention (CARILLON implant) (INT)" in page
    assert "Control (sham procedure) (CTRL)" in page
    for section in ("Enrolment by arm", "Exposure", "Adverse events and deaths", "END-1", "END-2"):
        assert section in page
    arms = dataset.arms
    died = arms[dataset.roles["died"]]
    counts = {a: sum(v == a for v in arms.values()) for a in ("INT", "CTRL")}
    row = "<tr><td>Randomized</td>" + "".join(f"<td>{counts[a]}</td>" for a in ("INT", "CTRL"))
    assert row in page
    deaths = "".join(f"<td>{int(a == died)}</td>" for a in ("INT", "CTRL"))
    assert f"<tr><td>Deaths</td>{deaths}</tr>" in page
    assert "<script" not in page


def test_rep3_reports_as_of_a_date_show_what_was_known_then(trial: Trial, dataset: Dataset) -> None:
    """REP-3: with an as-of date, compliance and deviations count only visits done (or marked
    missed) by then, the CRC workload shows a case signed later as pending, and the screening
    log lists subjects registered by then."""
    manager = trial.actor("manager")
    report = visit_compliance(trial.ctx, manager, trial.study_id, as_of=day(25))
    m1 = report.row("M1")
    assert (m1.on_time, m1.early, m1.late, m1.missed) == (0, 1, 0, 0)
    assert [r.visit for r in report.totals] == ["M1"]
    found = {
        (d.subject, d.kind)
        for d in deviations(trial.ctx, trial.actor("monitor"), trial.study_id, as_of=day(25))
    }
    assert found == {
        (dataset.roles["s102"], "visit_early"),
        (dataset.roles["in_error"], "randomized_in_error"),
    }
    then = crc_workload(
        trial.ctx, manager, trial.study_id, as_of=j.SCREENING + dt.timedelta(days=1)
    ).kind("eligibility")
    now = crc_workload(trial.ctx, manager, trial.study_id).kind("eligibility")
    assert then is not None and now is not None
    assert then.pending == 1 and now.pending == 0
    assert then.decided == now.decided - 1
    log = dashboard.screening_log
    assert log(trial.ctx, manager, trial.study_id, as_of=j.CONSENT - dt.timedelta(days=1)) == []
    assert len(log(trial.ctx, manager, trial.study_id, as_of=j.CONSENT)) == len(
        log(trial.ctx, manager, trial.study_id)
    )
