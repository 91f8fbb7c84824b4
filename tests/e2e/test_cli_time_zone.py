"""`trialdesk subject history` and `trialdesk me time-zone` (TIME-1): times shown in the
reader's zone with the zone named, UTC kept in the JSON, a bad zone refused."""

from __future__ import annotations

from tests.e2e.test_cli_journey import Shell, shell

__all__ = ["shell"]


def test_time1_cli_history_in_the_readers_zone(shell: Shell) -> None:
    """TIME-1: the manager (UTC by default) reads a 12:00 UTC registration as 12:00 UTC, then
    as 01:00 the next day in Auckland after choosing that zone; --tz overrides once."""
    sh = shell
    view = sh.json("subject", "register", "--site", "S101", user="coordinator", on="2027-01-25")
    number = view["number"]
    rows = sh.json("subject", "history", number, user="manager", on="2027-01-25")
    assert rows[0]["at"] == "2027-01-25T12:00:00.000000Z"
    assert rows[0]["shown"] == "2027-01-25 12:00 UTC"
    done = sh.run("me", "time-zone", "Pacific/Auckland", user="manager", on="2027-01-25")
    assert done.exit_code == 0, done.stderr
    assert "Pacific/Auckland" in done.stdout
    text = sh.run("subject", "history", number, user="manager", on="2027-01-25")
    assert "2027-01-26 01:00 NZDT (Pacific/Auckland)" in text.stdout
    assert "times in Pacific/Auckland" in text.stdout
    once = sh.json(
        "subject", "history", number, "--tz", "America/Toronto", user="manager", on="2027-01-25"
    )
    assert once[0]["shown"] == "2027-01-25 07:00 EST (America/Toronto)"


def test_time1_cli_refuses_an_unknown_zone(shell: Shell) -> None:
    """Bad input: one clear message, non-zero exit, nothing stored."""
    sh = shell
    bad = sh.run("me", "time-zone", "Moon/Base", user="manager", on="2027-01-25")
    assert bad.exit_code != 0
    assert "not an IANA time zone" in bad.stderr
    view = sh.json("subject", "register", "--site", "S101", user="coordinator", on="2027-01-25")
    rows = sh.json("subject", "history", view["number"], user="manager", on="2027-01-25")
    assert rows[0]["shown"].endswith("UTC")
    wrong = sh.run("subject", "history", view["number"], "--tz", "Nowhere", user="manager")
    assert wrong.exit_code != 0 and "Nowhere" in wrong.stderr
