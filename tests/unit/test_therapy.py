"""Additional therapies: early (within 6 months) or for endpoint evaluation (THER-1..THER-3)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.therapy import add_months, classify_therapy, months_between

D = dt.date


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (D(2027, 8, 31), 6, D(2028, 2, 29)),  # leap February
        (D(2026, 8, 31), 6, D(2027, 2, 28)),  # common February
        (D(2027, 1, 31), 1, D(2027, 2, 28)),
        (D(2027, 3, 31), 6, D(2027, 9, 30)),
        (D(2027, 12, 15), 1, D(2028, 1, 15)),  # year end
        (D(2028, 2, 29), 12, D(2029, 2, 28)),
        (D(2027, 3, 31), -1, D(2027, 2, 28)),
        (D(2027, 5, 17), 0, D(2027, 5, 17)),
    ],
)
def test_ther2_add_months_clamps_to_month_end(
    start: dt.date, months: int, expected: dt.date
) -> None:
    """THER-2: calendar months, clamped to the last day of a shorter month."""
    assert add_months(start, months) == expected


@pytest.mark.parametrize(
    ("therapy_on", "early", "review"),
    [
        (D(2027, 7, 14), True, "early_therapy"),  # 6 months minus one day
        (D(2027, 7, 15), True, "early_therapy"),  # exactly 6 months: not *more than* 6
        (D(2027, 7, 16), False, "endpoint_evaluation"),  # 6 months plus one day
    ],
)
def test_ther2_ther3_six_month_boundary(therapy_on: dt.date, early: bool, review: str) -> None:
    """THER-2/THER-3: more than 6 months means after the 6-month calendar anniversary."""
    result = classify_therapy(D(2027, 1, 15), therapy_on)
    assert result.early is early
    assert result.review == review
    assert result.cutoff == D(2027, 7, 15)


@pytest.mark.parametrize(
    ("randomized_on", "last_early"),
    [
        (D(2027, 8, 31), D(2028, 2, 29)),
        (D(2027, 8, 30), D(2028, 2, 29)),
        (D(2026, 8, 31), D(2027, 2, 28)),
        (D(2028, 2, 29), D(2028, 8, 29)),
        (D(2027, 12, 31), D(2028, 6, 30)),
    ],
)
def test_ther2_month_end_clamping_of_the_cutoff(
    randomized_on: dt.date, last_early: dt.date
) -> None:
    """THER-2: from a month end, the cutoff is the clamped month end six months on."""
    assert classify_therapy(randomized_on, last_early).early
    later = classify_therapy(randomized_on, last_early + dt.timedelta(days=1))
    assert not later.early
    assert later.review == "endpoint_evaluation"


def test_ther1_therapy_on_randomization_day_is_early() -> None:
    """THER-1: a therapy is recordable from day 0; on day 0 it is early, 0.0 months."""
    result = classify_therapy(D(2027, 1, 15), D(2027, 1, 15))
    assert (result.early, result.months_since) == (True, 0.0)


def test_ther1_therapy_before_randomization_is_refused() -> None:
    """THER-1: therapies are recorded after randomization; an earlier date is refused."""
    with pytest.raises(ValidationFailed) as err:
        classify_therapy(D(2027, 1, 15), D(2027, 1, 14))
    assert "2027-01-14" in err.value.message
    assert "2027-01-15" in err.value.message
    assert set(err.value.problems) == {"therapy_on"}


def test_ther2_threshold_comes_from_the_protocol() -> None:
    """THER-2: the threshold is protocol data (therapies.endpoint_review_after_months)."""
    assert not classify_therapy(D(2027, 1, 15), D(2027, 4, 16), threshold_months=3).early
    assert classify_therapy(D(2027, 1, 15), D(2027, 4, 16)).early
    with pytest.raises(ValidationFailed):
        classify_therapy(D(2027, 1, 15), D(2027, 4, 16), threshold_months=-1)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (D(2027, 1, 15), D(2027, 7, 15), 6.0),
        (D(2027, 8, 31), D(2028, 2, 29), 6.0),
        (D(2027, 1, 15), D(2027, 7, 14), 5 + 29 / 30),  # June 15 -> July 15 is 30 days
        (D(2027, 1, 15), D(2027, 7, 16), 6 + 1 / 31),  # July 15 -> August 15 is 31 days
        (D(2027, 1, 31), D(2027, 3, 1), 1 + 1 / 31),  # Feb 28 -> Mar 31 is 31 days
        (D(2027, 7, 15), D(2027, 1, 15), -6.0),
    ],
)
def test_ther2_months_between_for_display(start: dt.date, end: dt.date, expected: float) -> None:
    """THER-2: whole calendar months plus the fraction of the next month-step."""
    assert months_between(start, end) == pytest.approx(expected)


_dates = st.dates(min_value=D(1990, 1, 1), max_value=D(2090, 12, 31))


@given(randomized_on=_dates, days=st.integers(0, 800), threshold=st.integers(0, 24))
def test_ther2_property_early_iff_months_since_at_most_threshold(
    randomized_on: dt.date, days: int, threshold: int
) -> None:
    """THER-2/THER-3: the displayed months and the early flag never disagree."""
    result = classify_therapy(randomized_on, randomized_on + dt.timedelta(days=days), threshold)
    assert result.early == (result.months_since <= threshold)


@given(first=_dates, second=_dates, months=st.integers(-120, 120))
def test_ther2_property_add_months_is_monotone(
    first: dt.date, second: dt.date, months: int
) -> None:
    """THER-2: clamping never reorders dates, so the cutoff moves with randomization."""
    low, high = sorted((first, second))
    assert add_months(low, months) <= add_months(high, months)
    moved = add_months(low, months)
    assert (moved.year * 12 + moved.month) - (low.year * 12 + low.month) == months
