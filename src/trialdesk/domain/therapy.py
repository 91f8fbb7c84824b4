"""Additional therapies: early or not, and which CRC review they need (THER-1..THER-3).

"More than 6 months after randomization" is counted in calendar months:
``therapy_on > add_months(randomized_on, 6)``. A therapy on exactly the same day of the
month six months later (or on the clamped month end, e.g. 2027-08-31 -> 2028-02-29) is *not*
more than 6 months and so is early. Both kinds go to the CRC; this module only classifies,
the system never withdraws a subject on its own (THER-3).
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Literal

from trialdesk.domain.errors import ValidationFailed

Review = Literal["endpoint_evaluation", "early_therapy"]


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved by whole calendar months, clamped to the month's last day."""
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    if not dt.MINYEAR <= year <= dt.MAXYEAR:
        raise ValidationFailed(
            f"{day.isoformat()} + {months} months is outside the calendar",
            {"months": "out of range"},
        )
    last = calendar.monthrange(year, month0 + 1)[1]
    return dt.date(year, month0 + 1, min(day.day, last))


def months_between(start: dt.date, end: dt.date) -> float:
    """Calendar months from ``start`` to ``end``, for display.

    Whole months ``m`` are the most with ``add_months(start, m) <= end``; the fraction is the
    days past that anniversary over the length of the following month-step, so the result
    agrees with :func:`add_months` (2027-08-31 to 2028-02-29 is exactly 6.0). Negative when
    ``end`` is before ``start``.
    """
    if end < start:
        return -months_between(end, start)
    whole = (end.year - start.year) * 12 + (end.month - start.month)
    if add_months(start, whole) > end:
        whole -= 1
    anchor = add_months(start, whole)
    step = (add_months(start, whole + 1) - anchor).days
    return whole + (end - anchor).days / step


@dataclass(frozen=True)
class TherapyClass:
    """How a therapy counts: ``cutoff`` is the last date that is still early."""

    early: bool
    months_since: float
    cutoff: dt.date

    @property
    def review(self) -> Review:
        """The CRC review it goes to (THER-2 endpoint evaluation, THER-3 early therapy)."""
        return "early_therapy" if self.early else "endpoint_evaluation"


def classify_therapy(
    randomized_on: dt.date, therapy_on: dt.date, threshold_months: int = 6
) -> TherapyClass:
    """Classify an additional therapy (THER-1..3); a therapy before randomization is refused."""
    if threshold_months < 0:
        raise ValidationFailed(
            f"threshold of {threshold_months} months cannot be negative",
            {"threshold_months": "cannot be negative"},
        )
    if therapy_on < randomized_on:
        message = (
            f"therapy date {therapy_on.isoformat()} is before the randomization date "
            f"{randomized_on.isoformat()}"
        )
        raise ValidationFailed(message, {"therapy_on": message})
    cutoff = add_months(randomized_on, threshold_months)
    return TherapyClass(
        early=therapy_on <= cutoff,
        months_since=months_between(randomized_on, therapy_on),
        cutoff=cutoff,
    )
