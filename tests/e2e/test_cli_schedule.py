"""`trialdesk schedule`: the planned calendar a coordinator books visits from (SCHED-1)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from trialdesk.cli.main import build_app

# SYSTEM.md SCHED-1 table: code, target day, window before/after
FLAGSHIP = [
    ("M1", 30, 7, 7),
    ("M6", 180, 30, 30),
    ("M12", 365, 30, 30),
    ("M18", 545, 30, 30),
    ("M24", 730, 30, 30),
    ("Y3", 1095, 60, 60),
    ("Y4", 1460, 60, 60),
    ("Y5", 1825, 60, 60),
]


def test_sched1_schedule_json_matches_the_system_table() -> None:
    import datetime as dt

    result = CliRunner().invoke(build_app(), ["schedule", "--randomized", "2028-02-29", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    day0 = dt.date(2028, 2, 29)
    assert [r["code"] for r in rows] == [c for c, *_ in FLAGSHIP]
    for row, (_code, target, before, after) in zip(rows, FLAGSHIP, strict=True):
        t = day0 + dt.timedelta(days=target)
        assert row["target_date"] == t.isoformat()
        assert row["window_start"] == (t - dt.timedelta(days=before)).isoformat()
        assert row["window_end"] == (t + dt.timedelta(days=after)).isoformat()
    # SCHED-1's own example: M1 for day 0 runs from day 23 to day 37 inclusive
    assert rows[0]["window_start"] == (day0 + dt.timedelta(days=23)).isoformat()
    assert rows[0]["window_end"] == (day0 + dt.timedelta(days=37)).isoformat()


def test_sched1_schedule_refuses_a_bad_date_in_one_line() -> None:
    result = CliRunner().invoke(build_app(), ["schedule", "--randomized", "2027-02-30"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "not a date" in result.stderr
