"""Visit windows and due/overdue/missed lists (SCHED-1, SCHED-2)."""

from __future__ import annotations

import datetime as dt
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.schedule import (
    PlannedVisit,
    VisitSpec,
    VisitState,
    Window,
    check_schedule,
    classify,
    plan_visits,
    visit_statuses,
    window_for,
)

D = dt.date
ONE = dt.timedelta(days=1)

FLAGSHIP = [
    VisitSpec("M1", "1 month", "clinic", 30, 7, 7),
    VisitSpec("M6", "6 months", "clinic", 180, 30, 30),
    VisitSpec("M12", "12 months", "clinic", 365, 30, 30),
    VisitSpec("M18", "18 months", "clinic", 545, 30, 30),
    VisitSpec("M24", "24 months", "clinic", 730, 30, 30),
    VisitSpec("Y3", "year 3", "phone", 1095, 60, 60),
    VisitSpec("Y4", "year 4", "phone", 1460, 60, 60),
    VisitSpec("Y5", "year 5", "phone", 1825, 60, 60),
]

# (randomized_on, code, window start, target, window end); a few worked by hand:
# 2028-02-29 + 30 days = 2028-03-30; 2028-02-29 + 365 days = 2029-02-28 (no leap day in 2029).
GOLDEN = [
    (D(2027, 1, 1), "M1", D(2027, 1, 24), D(2027, 1, 31), D(2027, 2, 7)),
    (D(2027, 1, 1), "M6", D(2027, 5, 31), D(2027, 6, 30), D(2027, 7, 30)),
    (D(2027, 1, 1), "M12", D(2027, 12, 2), D(2028, 1, 1), D(2028, 1, 31)),
    (D(2027, 1, 1), "M18", D(2028, 5, 30), D(2028, 6, 29), D(2028, 7, 29)),
    (D(2027, 1, 1), "M24", D(2028, 12, 1), D(2028, 12, 31), D(2029, 1, 30)),
    (D(2027, 1, 1), "Y3", D(2029, 11, 1), D(2029, 12, 31), D(2030, 3, 1)),
    (D(2027, 1, 1), "Y4", D(2030, 11, 1), D(2030, 12, 31), D(2031, 3, 1)),
    (D(2027, 1, 1), "Y5", D(2031, 11, 1), D(2031, 12, 31), D(2032, 2, 29)),
    (D(2028, 2, 29), "M1", D(2028, 3, 23), D(2028, 3, 30), D(2028, 4, 6)),
    (D(2028, 2, 29), "M6", D(2028, 7, 28), D(2028, 8, 27), D(2028, 9, 26)),
    (D(2028, 2, 29), "M12", D(2029, 1, 29), D(2029, 2, 28), D(2029, 3, 30)),
    (D(2028, 2, 29), "M18", D(2029, 7, 28), D(2029, 8, 27), D(2029, 9, 26)),
    (D(2028, 2, 29), "M24", D(2030, 1, 29), D(2030, 2, 28), D(2030, 3, 30)),
    (D(2028, 2, 29), "Y3", D(2030, 12, 30), D(2031, 2, 28), D(2031, 4, 29)),
    (D(2028, 2, 29), "Y4", D(2031, 12, 30), D(2032, 2, 28), D(2032, 4, 28)),
    (D(2028, 2, 29), "Y5", D(2032, 12, 29), D(2033, 2, 27), D(2033, 4, 28)),
    (D(2027, 12, 31), "M1", D(2028, 1, 23), D(2028, 1, 30), D(2028, 2, 6)),
    (D(2027, 12, 31), "M6", D(2028, 5, 29), D(2028, 6, 28), D(2028, 7, 28)),
    (D(2027, 12, 31), "M12", D(2028, 11, 30), D(2028, 12, 30), D(2029, 1, 29)),
    (D(2027, 12, 31), "M18", D(2029, 5, 29), D(2029, 6, 28), D(2029, 7, 28)),
    (D(2027, 12, 31), "M24", D(2029, 11, 30), D(2029, 12, 30), D(2030, 1, 29)),
    (D(2027, 12, 31), "Y3", D(2030, 10, 31), D(2030, 12, 30), D(2031, 2, 28)),
    (D(2027, 12, 31), "Y4", D(2031, 10, 31), D(2031, 12, 30), D(2032, 2, 28)),
    (D(2027, 12, 31), "Y5", D(2032, 10, 30), D(2032, 12, 29), D(2033, 2, 27)),
]


def _planned(randomized_on: dt.date, code: str) -> PlannedVisit:
    return next(p for p in plan_visits(randomized_on, FLAGSHIP) if p.code == code)


def test_sched1_m1_window_is_days_23_to_37_inclusive() -> None:
    """SCHED-1: the worked example of the spec, randomized 2027-01-01 (day 0)."""
    m1 = plan_visits(D(2027, 1, 1), FLAGSHIP)[0]
    assert (m1.window_start, m1.target_date, m1.window_end) == (
        D(2027, 1, 24),
        D(2027, 1, 31),
        D(2027, 2, 7),
    )
    assert (m1.window_start - D(2027, 1, 1)).days == 23
    assert (m1.window_end - D(2027, 1, 1)).days == 37


@pytest.mark.parametrize(("randomized_on", "code", "start", "target", "end"), GOLDEN)
def test_sched1_flagship_windows_across_month_ends_and_leap_years(
    randomized_on: dt.date, code: str, start: dt.date, target: dt.date, end: dt.date
) -> None:
    """SCHED-1: windows are plain day offsets from day 0, through Feb 29 and year ends."""
    planned = _planned(randomized_on, code)
    assert (planned.window_start, planned.target_date, planned.window_end) == (start, target, end)


@pytest.mark.parametrize(("randomized_on", "code", "start", "target", "end"), GOLDEN)
def test_sched2_timing_at_every_window_boundary(
    randomized_on: dt.date, code: str, start: dt.date, target: dt.date, end: dt.date
) -> None:
    """SCHED-1/SCHED-2: inclusive at both ends; a day outside is early or late (deviation)."""
    window = _planned(randomized_on, code).window
    assert classify(start - ONE, window) == "early"
    assert classify(start, window) == "on_time"
    assert classify(target, window) == "on_time"
    assert classify(end, window) == "on_time"
    assert classify(end + ONE, window) == "late"
    assert not window.contains(start - ONE)
    assert window.contains(start)
    assert window.contains(end)
    assert not window.contains(end + ONE)


@pytest.mark.parametrize(("randomized_on", "code", "start", "target", "end"), GOLDEN)
def test_sched2_status_at_every_window_boundary(
    randomized_on: dt.date, code: str, start: dt.date, target: dt.date, end: dt.date
) -> None:
    """SCHED-2: upcoming before the window, due inside it, overdue the day after it closes."""
    planned = [_planned(randomized_on, code)]
    expected = [
        (start - ONE, VisitState.UPCOMING),
        (start, VisitState.DUE),
        (end, VisitState.DUE),
        (end + ONE, VisitState.OVERDUE),
    ]
    for as_of, state in expected:
        assert visit_statuses(planned, {}, as_of)[0].state is state, as_of


def test_sched2_done_visit_outside_window_is_accepted_but_flagged() -> None:
    """SCHED-2: a late visit is done (accepted) and flagged as a protocol deviation."""
    planned = plan_visits(D(2027, 1, 1), FLAGSHIP)[:2]
    recorded = {"M1": (D(2027, 2, 8), False), "M6": (D(2027, 6, 30), False)}
    m1, m6 = visit_statuses(planned, recorded, as_of=D(2027, 7, 1))
    assert (m1.state, m1.done_on, m1.timing, m1.deviation) == (
        VisitState.DONE,
        D(2027, 2, 8),
        "late",
        True,
    )
    assert (m6.state, m6.timing, m6.deviation) == (VisitState.DONE, "on_time", False)


def test_sched2_missed_visit_never_blocks_later_visits() -> None:
    """SCHED-2: M1 missed or overdue; M6 is still due in its own window, then overdue."""
    planned = plan_visits(D(2027, 1, 1), FLAGSHIP)
    in_m6 = D(2027, 6, 1)
    statuses = visit_statuses(planned, {"M1": (None, True)}, in_m6)
    assert [s.state for s in statuses[:3]] == [
        VisitState.MISSED,
        VisitState.DUE,
        VisitState.UPCOMING,
    ]
    overdue_m1 = visit_statuses(planned, {}, in_m6)
    assert [s.state for s in overdue_m1[:2]] == [VisitState.OVERDUE, VisitState.DUE]
    after_m6 = visit_statuses(planned, {"M1": (None, True)}, D(2027, 7, 31))
    assert after_m6[1].state is VisitState.OVERDUE
    assert after_m6[2].state is VisitState.UPCOMING


def test_sched2_done_wins_over_an_earlier_missed_mark() -> None:
    """SCHED-2: a visit marked missed and then done late is done (a deviation), not missed."""
    planned = plan_visits(D(2027, 1, 1), FLAGSHIP)[:1]
    (m1,) = visit_statuses(planned, {"M1": (D(2027, 2, 20), True)}, D(2027, 3, 1))
    assert m1.state is VisitState.DONE
    assert m1.deviation


def test_sched2_statuses_keep_protocol_order_and_ignore_unknown_codes() -> None:
    """SCHED-2: one status per planned visit, in protocol order."""
    planned = plan_visits(D(2027, 1, 1), FLAGSHIP)
    statuses = visit_statuses(planned, {"X9": (D(2027, 2, 1), False)}, D(2027, 1, 2))
    assert [s.code for s in statuses] == [v.code for v in FLAGSHIP]
    assert {s.state for s in statuses} == {VisitState.UPCOMING}


def test_sched1_flagship_table_is_sound() -> None:
    """SCHED-1: the flagship table passes the schedule check used by protocol validation."""
    assert check_schedule(FLAGSHIP) == []


@pytest.mark.parametrize(
    ("visits", "fragment"),
    [
        (
            [VisitSpec("A", "a", "clinic", 30, 7, 10), VisitSpec("B", "b", "clinic", 45, 5, 5)],
            "visit B: window opens on day 40, overlapping A's window which ends on day 40",
        ),
        (
            [VisitSpec("A", "a", "clinic", 60, 7, 7), VisitSpec("B", "b", "clinic", 30, 7, 7)],
            "visit B: target day 30 is not after A's target day 60",
        ),
        ([VisitSpec("A", "a", "clinic", 30, -1, 7)], "cannot be negative"),
        ([VisitSpec("A", "a", "clinic", 5, 7, 7)], "window opens on day -2, before randomization"),
        ([VisitSpec("A", "a", "clinic", 0, 0, 7)], "target day 0 must be at least 1"),
        (
            [VisitSpec("A", "a", "clinic", 30, 0, 0), VisitSpec("A", "a", "clinic", 60, 0, 0)],
            "visit A: code is used more than once",
        ),
    ],
)
def test_sched1_check_schedule_names_each_problem(visits: list[VisitSpec], fragment: str) -> None:
    """SCHED-1: an unsound visit table is reported with the visit and the days involved."""
    problems = check_schedule(visits)
    assert any(fragment in p for p in problems), problems


def test_sched1_negative_window_is_refused_when_planning() -> None:
    """SCHED-1: a window with the target outside it is refused with a clear message."""
    with pytest.raises(ValidationFailed) as err:
        window_for(D(2027, 1, 1), VisitSpec("A", "a", "clinic", 30, 7, -1))
    assert err.value.problems == {"A": "window days cannot be negative"}


_tables = st.lists(
    st.tuples(st.integers(1, 2000), st.integers(0, 120), st.integers(0, 120)),
    min_size=1,
    max_size=8,
    unique_by=lambda row: row[0],
).map(
    lambda rows: [
        VisitSpec(f"V{i}", f"visit {i}", "clinic", day, before, after)
        for i, (day, before, after) in enumerate(sorted(rows))
    ]
)
_dates = st.dates(min_value=D(1990, 1, 1), max_value=D(2090, 12, 31))


@given(visits=_tables, randomized_on=_dates)
def test_sched1_property_window_shape(visits: list[VisitSpec], randomized_on: dt.date) -> None:
    """SCHED-1: target inside its window; window length is before + after + 1 days."""
    for spec, planned in zip(visits, plan_visits(randomized_on, visits), strict=True):
        assert planned.window_start <= planned.target_date <= planned.window_end
        length = (planned.window_end - planned.window_start).days + 1
        assert length == spec.window_before + spec.window_after + 1
        assert (planned.target_date - randomized_on).days == spec.target_day


@given(visits=_tables, randomized_on=_dates)
def test_sched1_property_accepted_tables_never_overlap(
    visits: list[VisitSpec], randomized_on: dt.date
) -> None:
    """SCHED-1: check_schedule accepts a table exactly when its dated windows are ordered,
    disjoint and after randomization, for any randomization date."""
    planned = plan_visits(randomized_on, visits)
    disjoint = all(a.window_end < b.window_start for a, b in pairwise(planned))
    after_day0 = all(p.window_start >= randomized_on for p in planned)
    assert (check_schedule(visits) == []) == (disjoint and after_day0)
    if check_schedule(visits) == []:
        for p in planned:
            for edge in (p.window_start, p.window_end):
                assert [q.code for q in planned if q.window.contains(edge)] == [p.code]


def test_sched1_window_value_object() -> None:
    """SCHED-1: a planned visit exposes its inclusive Window."""
    planned = _planned(D(2027, 1, 1), "M1")
    assert planned.window == Window(D(2027, 1, 24), D(2027, 2, 7), D(2027, 1, 31))
