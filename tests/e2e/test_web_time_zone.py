"""Timestamps on pages and in the API (TIME-1): stored in UTC, the API answers in UTC, pages
show the reader's zone with the zone named, and the reader may choose that zone."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_api_support import Api
from tests.e2e.test_web_pages import csrf_of, signed_in
from trialdesk.services import screening
from trialdesk.store.tables import UserRow

SYDNEY = "S401"
AT_SYDNEY = "2027-03-02 10:30 AEDT (Australia/Sydney)"
AT_HONOLULU = "2027-03-01 13:30 HST (Pacific/Honolulu)"


def _registered_late_utc(trial: Trial) -> str:
    trial.clock.now = dt.datetime(2027, 3, 1, 23, 30, tzinfo=dt.UTC)
    coordinator = j.staff(trial, "coordinator", SYDNEY)
    return screening.register_subject(
        trial.ctx, coordinator, trial.study_id, site_code=SYDNEY
    ).number


def _zone_of(trial: Trial, username: str) -> str | None:
    with trial.ctx.uow(readonly=True) as uow:
        return uow.session.scalars(
            select(UserRow.timezone).where(UserRow.username == username)
        ).one()


def test_time1_subject_history_page_shows_the_readers_zone(trial: Trial) -> None:
    """TIME-1: the Sydney coordinator reads the 23:30 UTC registration as 2 March 10:30 AEDT;
    the header names the zone; the UTC instant is in the markup for machines."""
    number = _registered_late_utc(trial)
    page = signed_in(trial, "coordinator-s401").get(f"/subjects/{number}")
    assert page.status_code == 200
    assert "Times in Australia/Sydney" in page.text
    assert AT_SYDNEY in page.text
    assert 'datetime="2027-03-01T23:30:00+00:00"' in page.text


def test_time1_reader_chooses_a_zone_and_a_bad_zone_changes_nothing(trial: Trial) -> None:
    """TIME-1: the manager (all sites, so UTC by default) picks Honolulu and then reads the
    same entry as 1 March 13:30 HST; an unknown zone or a missing CSRF token changes nothing."""
    number = _registered_late_utc(trial)
    c = signed_in(trial, "manager")
    assert "2027-03-01 23:30 UTC" in c.get(f"/subjects/{number}").text
    token = csrf_of(c, "/me/time-zone")
    refused = c.post("/me/time-zone", data={"timezone": "Hawaii/Aloha", "csrf_token": token})
    assert refused.status_code == 422 and "not an IANA time zone" in refused.text
    forged = c.post("/me/time-zone", data={"timezone": "Pacific/Honolulu"})
    assert forged.status_code == 403
    assert _zone_of(trial, "manager") is None
    saved = c.post("/me/time-zone", data={"timezone": "Pacific/Honolulu", "csrf_token": token})
    assert saved.status_code == 303
    assert _zone_of(trial, "manager") == "Pacific/Honolulu"
    assert AT_HONOLULU in c.get(f"/subjects/{number}").text


def test_time1_api_history_is_in_utc(trial: Trial) -> None:
    """TIME-1: the API gives instants in UTC whatever the reader's zone; clients convert."""
    number = _registered_late_utc(trial)
    response = Api(trial).get("coordinator-s401", f"/subjects/{number}/history")
    assert response.status_code == 200, response.text
    first = response.json()[0]
    assert first["action"] == "register"
    assert dt.datetime.fromisoformat(first["at"]) == dt.datetime(2027, 3, 1, 23, 30, tzinfo=dt.UTC)
