"""Follow-up visit windows and due/overdue/missed lists (SCHED-1, SCHED-2).

Day 0 is the randomization date; a visit's window runs from ``target_day - window_before``
to ``target_day + window_after`` days after it, inclusive at both ends, in plain calendar
days (no month arithmetic, so leap days and month ends need no special case). Dates are
clinical dates local to the site; the caller passes ``as_of`` (never read from a clock).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from typing import Literal

from trialdesk.domain.errors import ValidationFailed

Timing = Literal["early", "on_time", "late"]


@dataclass(frozen=True)
class VisitSpec:
    """A scheduled visit as protocol data: ``kind`` is e.g. "clinic" or "phone"."""

    code: str
    name: str
    kind: str
    target_day: int
    window_before: int
    window_after: int


@dataclass(frozen=True)
class Window:
    """Inclusive date window around ``target``."""

    start: dt.date
    end: dt.date
    target: dt.date

    def contains(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


@dataclass(frozen=True)
class PlannedVisit:
    """One visit of one subject, dated from that subject's randomization."""

    code: str
    target_date: dt.date
    window_start: dt.date
    window_end: dt.date

    @property
    def window(self) -> Window:
        return Window(self.window_start, self.window_end, self.target_date)


class VisitState(StrEnum):
    UPCOMING = "upcoming"
    DUE = "due"
    OVERDUE = "overdue"
    DONE = "done"
    MISSED = "missed"


@dataclass(frozen=True)
class VisitStatus:
    """Where a planned visit stands on ``as_of``; ``timing`` is set for done visits only."""

    planned: PlannedVisit
    state: VisitState
    done_on: dt.date | None = None
    timing: Timing | None = None

    @property
    def code(self) -> str:
        return self.planned.code

    @property
    def deviation(self) -> bool:
        """Done outside its window: accepted, but a protocol deviation (SCHED-2)."""
        return self.timing is not None and self.timing != "on_time"


def window_for(randomized_on: dt.date, visit: VisitSpec) -> Window:
    """The visit's window for a subject randomized on ``randomized_on`` (day 0)."""
    if visit.window_before < 0 or visit.window_after < 0:
        raise ValidationFailed(
            f"visit {visit.code}: window days cannot be negative",
            {visit.code: "window days cannot be negative"},
        )
    target = randomized_on + dt.timedelta(days=visit.target_day)
    return Window(
        start=target - dt.timedelta(days=visit.window_before),
        end=target + dt.timedelta(days=visit.window_after),
        target=target,
    )


def plan_visits(randomized_on: dt.date, visits: Sequence[VisitSpec]) -> list[PlannedVisit]:
    """Every visit's target date and window, in protocol order (SCHED-1)."""
    planned: list[PlannedVisit] = []
    for visit in visits:
        window = window_for(randomized_on, visit)
        planned.append(PlannedVisit(visit.code, window.target, window.start, window.end))
    return planned


def classify(visit_date: dt.date, window: Window) -> Timing:
    """Whether a visit was done before, inside or after its window (SCHED-2)."""
    if visit_date < window.start:
        return "early"
    if visit_date > window.end:
        return "late"
    return "on_time"


def visit_status(
    planned: PlannedVisit, done_on: dt.date | None, missed: bool, as_of: dt.date
) -> VisitStatus:
    """One visit's state; a done visit stays done even if it had been marked missed."""
    if done_on is not None:
        return VisitStatus(planned, VisitState.DONE, done_on, classify(done_on, planned.window))
    if missed:
        return VisitStatus(planned, VisitState.MISSED)
    if as_of < planned.window_start:
        return VisitStatus(planned, VisitState.UPCOMING)
    if as_of <= planned.window_end:
        return VisitStatus(planned, VisitState.DUE)
    return VisitStatus(planned, VisitState.OVERDUE)


def visit_statuses(
    planned: Sequence[PlannedVisit],
    recorded: Mapping[str, tuple[dt.date | None, bool]],
    as_of: dt.date,
) -> list[VisitStatus]:
    """State of each planned visit on ``as_of``.

    ``recorded`` maps a visit code to ``(done_on, missed)``. Each visit is judged on its own
    window, so a missed (or overdue) visit never blocks a later one (SCHED-2). Recordings of
    codes that are not in ``planned`` are not listed.
    """
    statuses: list[VisitStatus] = []
    for visit in planned:
        done_on, missed = recorded.get(visit.code, (None, False))
        statuses.append(visit_status(visit, done_on, missed, as_of))
    return statuses


def check_schedule(visits: Sequence[VisitSpec]) -> list[str]:
    """Every problem of a visit table (empty when sound); protocol validators reuse this.

    A sound table lists visits by increasing target day, each target after day 0 and inside
    its own window, no window opening before randomization, no two windows sharing a day,
    and no duplicate codes, so a visit date can never belong to two visits.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for visit in visits:
        if visit.code in seen:
            problems.append(f"visit {visit.code}: code is used more than once")
        seen.add(visit.code)
        if visit.target_day < 1:
            problems.append(
                f"visit {visit.code}: target day {visit.target_day} must be at least 1 "
                "(day 0 is the randomization date)"
            )
        if visit.window_before < 0 or visit.window_after < 0:
            problems.append(
                f"visit {visit.code}: window -{visit.window_before}/+{visit.window_after} "
                "cannot be negative (the target must lie inside its window)"
            )
        elif visit.target_day - visit.window_before < 0:
            problems.append(
                f"visit {visit.code}: window opens on day "
                f"{visit.target_day - visit.window_before}, before randomization"
            )
    for prev, nxt in pairwise(visits):
        if nxt.target_day <= prev.target_day:
            problems.append(
                f"visit {nxt.code}: target day {nxt.target_day} is not after "
                f"{prev.code}'s target day {prev.target_day}"
            )
            continue
        prev_end = prev.target_day + prev.window_after
        next_start = nxt.target_day - nxt.window_before
        if next_start <= prev_end:
            problems.append(
                f"visit {nxt.code}: window opens on day {next_start}, overlapping "
                f"{prev.code}'s window which ends on day {prev_end}"
            )
    return problems
