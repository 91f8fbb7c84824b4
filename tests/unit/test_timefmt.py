"""Showing UTC moments in the reader's zone with the zone named (TIME-1)."""

from __future__ import annotations

import datetime as dt

import pytest

from trialdesk.domain.timefmt import format_moment, is_time_zone

MOMENT = dt.datetime(2027, 3, 1, 23, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        ("Australia/Sydney", "2027-03-02 10:30 AEDT (Australia/Sydney)"),
        ("Pacific/Honolulu", "2027-03-01 13:30 HST (Pacific/Honolulu)"),
        ("Europe/Paris", "2027-03-02 00:30 CET (Europe/Paris)"),
        ("UTC", "2027-03-01 23:30 UTC"),
    ],
)
def test_time1_a_moment_is_shown_in_the_readers_zone_named(zone: str, shown: str) -> None:
    """TIME-1: the same stored instant reads as a different local date in Sydney and Honolulu,
    and the zone is always named."""
    assert format_moment(MOMENT, zone) == shown


def test_time1_daylight_saving_changes_the_offset_not_the_instant() -> None:
    """TIME-1: 12:30 UTC is 23:30 AEDT before Sydney's DST ends on 4 April 2027 and 22:30 AEST
    the day after."""
    before = dt.datetime(2027, 4, 3, 12, 30, tzinfo=dt.UTC)
    after = dt.datetime(2027, 4, 4, 12, 30, tzinfo=dt.UTC)
    assert format_moment(before, "Australia/Sydney") == "2027-04-03 23:30 AEDT (Australia/Sydney)"
    assert format_moment(after, "Australia/Sydney") == "2027-04-04 22:30 AEST (Australia/Sydney)"


def test_time1_a_naive_timestamp_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        format_moment(dt.datetime(2027, 3, 1, 23, 30), "UTC")


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("Australia/Sydney", True),
        ("Pacific/Honolulu", True),
        ("UTC", True),
        ("Mars/Olympus", False),
        ("", False),
        (" Europe/Paris", False),
        ("../etc/passwd", False),
        ("/etc/localtime", False),
    ],
)
def test_time1_only_iana_zone_names_are_accepted(name: str, known: bool) -> None:
    assert is_time_zone(name) is known
