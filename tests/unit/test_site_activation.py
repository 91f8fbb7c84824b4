"""REP-1 (issue 16 deliver 7): when a site opened for the forecast, from its recorded
activations, on plain facts (no database)."""

from __future__ import annotations

import datetime as dt

from trialdesk.reports.enrolment import SiteFacts, opened_on, site_events, site_state

D = dt.date


def facts(
    events: list[tuple[str, bool]], *, first: dt.date | None = None, planned: dt.date | None = None
) -> SiteFacts:
    return SiteFacts(
        code="S1",
        active=True,
        planned_activation=planned,
        first_registration=first,
        randomized=0,
        activity=site_events(events, "America/New_York", first),
    )


def test_recorded_activation_not_the_plan() -> None:
    """REP-1: created, closed before opening, opened late: open since the activation."""
    f = facts(
        [
            ("2027-01-25T12:00:00Z", True),
            ("2027-02-01T12:00:00Z", False),
            ("2027-03-15T12:00:00Z", True),
        ],
        planned=D(2027, 2, 8),
    )
    assert opened_on(f, D(2027, 3, 31)) == D(2027, 3, 15)
    assert opened_on(f, D(2027, 3, 1)) is None
    assert site_state(f, D(2027, 3, 1)) is None  # its plan passed without opening


def test_a_plan_counts_only_while_the_site_is_not_active() -> None:
    """REP-1: closed before opening and planned ahead: joins at the plan."""
    f = facts(
        [("2027-01-25T12:00:00Z", True), ("2027-02-01T12:00:00Z", False)], planned=D(2027, 4, 12)
    )
    state = site_state(f, D(2027, 3, 31))
    assert state is not None and state[1] == D(2027, 4, 12) and state[0].opens_in_months > 0


def test_the_local_date_of_the_activation() -> None:
    """TIME-1, REP-1: an activation at 02:00 UTC is the evening before in New York."""
    f = facts([("2027-01-25T12:00:00Z", True), ("2027-03-15T02:00:00Z", False)])
    assert f.activity[-1] == (D(2027, 3, 14), False)


def test_a_demo_made_after_the_fact_opens_at_its_simulated_dates() -> None:
    """REP-1: the study created today, its trial simulated two years back: the creation is
    taken at the earliest recorded date, so later activations and registrations count."""
    late = facts(
        [
            ("2026-12-05T09:00:00Z", True),
            ("2024-12-01T12:00:00Z", False),
            ("2025-03-01T12:00:00Z", True),
        ]
    )
    assert opened_on(late, D(2025, 6, 30)) == D(2025, 3, 1)
    first = facts([("2026-12-05T09:00:00Z", True)], first=D(2024, 12, 10))
    assert opened_on(first, D(2025, 6, 30)) == D(2024, 12, 10)
