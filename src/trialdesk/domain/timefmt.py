"""Showing a stored UTC moment to a person (TIME-1).

Timestamps are stored in UTC; a reader sees them in their own zone with the zone named, so
"23:30" is never ambiguous between a Sydney monitor and a Honolulu coordinator. The IANA name
is printed beside the abbreviation because abbreviations repeat (CST is three zones).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

UTC_ZONE = "UTC"


def is_time_zone(name: str) -> bool:
    """True for an IANA zone name this machine's tz database knows."""
    if not name or name != name.strip() or name.startswith("/") or ".." in name:
        return False
    if name in available_timezones():
        return True
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return name == UTC_ZONE


def local_moment(moment: dt.datetime, zone: str) -> dt.datetime:
    """The same instant on the clock of ``zone``; a naive moment is refused, never guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a stored timestamp must carry its UTC offset")
    return moment.astimezone(ZoneInfo(zone))


def format_moment(moment: dt.datetime, zone: str) -> str:
    """'2027-03-02 10:30 AEDT (Australia/Sydney)': minutes, the abbreviation and the zone."""
    local = local_moment(moment, zone)
    abbreviation = local.tzname() or ""
    stamp = local.strftime("%Y-%m-%d %H:%M")
    if zone == UTC_ZONE:
        return f"{stamp} UTC"
    return f"{stamp} {abbreviation} ({zone})"
