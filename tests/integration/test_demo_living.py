"""Demo data that shows a living trial (issue 14): a slow-enrolling simulation runs to its
end (demo stock is resupplied before it expires), and a simulated trial stopped on a date has
open, answered and closed queries with varied texts. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from tests.conftest import Trial
from trialdesk.demo.trial import SimulationConfig, check_consistency, simulate_trial
from trialdesk.services import devices, query_pages


def test_sup1_slow_enrolment_resupplies_before_devices_expire(trial: Trial) -> None:
    """SUP-1: one site screening 0.3 subjects a month from 2019 keeps its first lot past the
    three-year expiry; the run no longer stops with "device ... expired": the manager ships
    fresh stock and no expired device is implanted."""
    config = SimulationConfig(
        subjects=14, sites=1, seed=3, start=dt.date(2019, 1, 1), screened_per_site_month=0.3
    )
    summary = simulate_trial(trial.ctx, "FLAGSHIP", config)
    assert summary.randomized == 14
    manager = trial.actor("manager")
    lots = devices.list_lots(trial.ctx, manager, trial.study_id)
    assert len(lots) >= 2  # resupplied at least once
    assert check_consistency(trial.ctx, trial.actor("monitor"), trial.study_id) == []


def test_rep_simulated_trial_has_queries_in_every_status_with_varied_texts(trial: Trial) -> None:
    """Issue 14: stopped on a date, the demo has open, answered and closed queries, asked in
    more than one way (not one text for all)."""
    config = SimulationConfig(
        subjects=24,
        sites=2,
        seed=5,
        start=dt.date(2025, 1, 1),
        as_of=dt.date(2026, 2, 10),
        screened_per_site_month=6.0,
        query_probability=0.5,
    )
    simulate_trial(trial.ctx, "FLAGSHIP", config)
    monitor = trial.actor("monitor")
    every = query_pages.query_list(trial.ctx, monitor, trial.study_id, status="all", limit=200)
    statuses = {line.query.status for line in every.items}
    assert statuses == {"open", "answered", "closed"}, statuses
    assert len({line.query.text for line in every.items}) >= 3
