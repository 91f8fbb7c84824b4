"""Test doubles shared by the suites: a clock the test moves by hand."""

from __future__ import annotations

import datetime as dt


class FakeClock:
    """Returns a fixed UTC moment until the test moves it."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def set_day(self, day: dt.date | str, hour: int = 12) -> None:
        if isinstance(day, str):
            day = dt.date.fromisoformat(day)
        self.now = dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)

    def advance(self, **kwargs: float) -> None:
        self.now += dt.timedelta(**kwargs)
