"""Clinical dates are the site's local dates (TIME-1): Sydney is a day ahead of UTC in the
evening UTC, Honolulu a day behind in the morning UTC, and daylight saving moves the offset."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.errors import ValidationFailed
from trialdesk.services import screening
from trialdesk.services.allocation import randomization
from trialdesk.services.common import site_today
from trialdesk.store.tables import SiteRow

SYDNEY, HONOLULU = "S401", "S135"


def _at(trial: Trial, iso: str) -> None:
    trial.clock.now = dt.datetime.fromisoformat(iso)


def test_time1_registration_date_is_the_sites_local_date(trial: Trial) -> None:
    """At 2027-03-01 23:30 UTC it is already 2 March in Sydney but still 1 March in Honolulu:
    a Sydney registration dated 2 March is today, the same date in Honolulu is the future."""
    sydney = j.staff(trial, "coordinator", SYDNEY)
    honolulu = j.staff(trial, "coordinator", HONOLULU)
    _at(trial, "2027-03-01T23:30:00+00:00")
    march2 = dt.date(2027, 3, 2)
    view = screening.register_subject(
        trial.ctx, sydney, trial.study_id, site_code=SYDNEY, registered_on=march2
    )
    assert view.registered_on == "2027-03-02"
    with pytest.raises(ValidationFailed, match="in the future"):
        screening.register_subject(
            trial.ctx, honolulu, trial.study_id, site_code=HONOLULU, registered_on=march2
        )
    # without a date, each site's today is used
    assert screening.register_subject(
        trial.ctx, honolulu, trial.study_id, site_code=HONOLULU
    ).registered_on == ("2027-03-01")
    assert screening.register_subject(
        trial.ctx, sydney, trial.study_id, site_code=SYDNEY
    ).registered_on == ("2027-03-02")


def test_time1_randomization_date_is_local_to_the_site(trial: Trial) -> None:
    """Randomized at 2027-02-15 20:00 UTC, a Sydney subject's day 0 is 16 February (the
    visit windows count from it); a subject at a UTC-5 site randomized then keeps 15 February."""
    sydney = j.anatomy_suitable(trial, SYDNEY)
    boston = j.anatomy_suitable(trial, "S101")
    _at(trial, "2027-02-15T20:00:00+00:00")
    first = randomization.randomize(
        trial.ctx, j.staff(trial, "implanter", SYDNEY), trial.study_id, sydney
    )
    second = randomization.randomize(trial.ctx, trial.actor("implanter"), trial.study_id, boston)
    assert (first.randomized_on, second.randomized_on) == ("2027-02-16", "2027-02-15")


@pytest.mark.parametrize(
    ("moment", "sydney_day"),
    [
        ("2027-04-03T12:59:00+00:00", "2027-04-03"),  # 23:59 AEDT (UTC+11)
        ("2027-04-03T13:00:00+00:00", "2027-04-04"),  # 00:00 AEDT, the morning DST ends
        ("2027-04-04T13:59:00+00:00", "2027-04-04"),  # 23:59 AEST (UTC+10) after the change
        ("2027-04-04T14:00:00+00:00", "2027-04-05"),  # midnight AEST
    ],
)
def test_time1_site_today_follows_daylight_saving(
    trial: Trial, moment: str, sydney_day: str
) -> None:
    with trial.ctx.uow(readonly=True) as uow:
        site = uow.session.scalars(select(SiteRow).where(SiteRow.code == SYDNEY)).one()
        assert site_today(site, dt.datetime.fromisoformat(moment)).isoformat() == sydney_day
