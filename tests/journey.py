"""Walk flagship subjects through the service layer to any point of the journey."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from tests import flagship_data as fd
from tests.conftest import PASSWORD, Trial, flagship
from trialdesk.domain.roles import Role
from trialdesk.domain.schedule import plan_visits
from trialdesk.protocol.specs import visit_specs
from trialdesk.services import followup, screening, supply
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.allocation import randomization
from trialdesk.services.setup import create_user
from trialdesk.store.tables import DeviceLotRow, DeviceRow, SiteRow

SITE = "S101"
CONSENT = dt.date.fromisoformat(fd.CONSENT_DATE)
SCREENING = dt.date.fromisoformat(fd.SCREENING_DATE)
PROCEDURE = dt.date.fromisoformat(fd.PROCEDURE_DATE)
CONSENT_VERSION = "v1.0"
"""The flagship's consent version (REC-8); a test of another protocol monkeypatches it."""


def staff(t: Trial, role: str, site: str = SITE) -> Actor:
    """The demo user of ``role`` at S101, or a user made for another site on first use."""
    if site == SITE:
        return t.actor(role)
    username = f"{role}-{site.lower()}"
    if username not in t.actors:
        create_user(
            t.ctx,
            operator_actor(),
            t.study_id,
            username=username,
            full_name=f"{role.title()} {site}",
            password=PASSWORD,
            roles=[(Role(role), site)],
        )
    return t.actor(username)


def register(t: Trial, site: str = SITE, *, test: bool = False) -> str:
    t.clock.set_day(CONSENT)
    view = screening.register_subject(
        t.ctx,
        staff(t, "coordinator", site),
        t.study_id,
        site_code=site,
        registered_on=CONSENT,
        test=test,
    )
    return view.number


def _site(number: str) -> str:
    return number.split("-")[0]


def consented(t: Trial, site: str = SITE, *, test: bool = False) -> str:
    number = register(t, site, test=test)
    screening.record_consent(
        t.ctx,
        staff(t, "coordinator", site),
        t.study_id,
        number,
        consent_date=CONSENT,
        consent_version=CONSENT_VERSION,
    )
    return number


def enter_screening(
    t: Trial, number: str, forms: fd.FormValues | None = None, *, confirm: bool = True
) -> None:
    t.clock.set_day(SCREENING)
    coord = staff(t, "coordinator", _site(number))
    for code, values in (forms or fd.screening_forms()).items():
        screening.record_screening_form(
            t.ctx, coord, t.study_id, number, form_code=code, values=values
        )
    if confirm:
        for criterion in fd.INVESTIGATOR_CRITERIA:
            screening.confirm_criterion(
                t.ctx,
                coord,
                t.study_id,
                number,
                criterion_id=criterion,
                confirmed=True,
                password=PASSWORD,
            )


def echo_qualified(t: Trial, site: str = SITE, *, test: bool = False) -> str:
    number = consented(t, site, test=test)
    enter_screening(t, number)
    screening.complete_screening(t.ctx, staff(t, "coordinator", site), t.study_id, number)
    return number


def awaiting_procedure(t: Trial, site: str = SITE, *, test: bool = False) -> str:
    number = echo_qualified(t, site, test=test)
    screening.crc_eligibility_decision(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        number,
        decision="approve",
        reason="Suitable anatomy on echo; CS device appropriate",
        password=PASSWORD,
    )
    return number


def anatomy_suitable(t: Trial, site: str = SITE, *, test: bool = False) -> str:
    number = awaiting_procedure(t, site, test=test)
    t.clock.set_day(PROCEDURE)
    screening.record_anatomy(
        t.ctx, staff(t, "implanter", site), t.study_id, number, forms=fd.anatomy_forms()
    )
    return number


def randomized(t: Trial, site: str = SITE) -> tuple[str, str]:
    """A randomized subject and its arm as the implanter sees it."""
    number = anatomy_suitable(t, site)
    result = randomization.randomize(t.ctx, staff(t, "implanter", site), t.study_id, number)
    assert result.arm is not None
    return number, result.arm


def device_udi(t: Trial, site: str = SITE) -> str:
    """The UDI of a device in stock at ``site`` (SUP-1): the lowest serial on hand, or one of
    five devices shipped to the site and received there when it has none."""
    with t.ctx.uow(readonly=True) as uow:
        udi = uow.session.scalars(
            select(DeviceRow.udi)
            .join(SiteRow, SiteRow.id == DeviceRow.site_id)
            .where(
                DeviceRow.study_id == t.study_id,
                SiteRow.code == site,
                DeviceRow.status == "at_site",
            )
            .order_by(DeviceRow.serial)
        ).first()
        lots = uow.session.scalar(
            select(func.count())
            .select_from(DeviceLotRow)
            .where(DeviceLotRow.study_id == t.study_id)
        )
    if udi is not None:
        return udi
    # the site in the lot number: processes preparing different sites at once (bench/load.py)
    # count the same lots and must not register the same number
    lot = f"LOT{9000 + (lots or 0)}{site}"
    serials = [f"{lot}-{n}" for n in range(1, 6)]
    manager = t.actor("manager")
    supply.register_lot(
        t.ctx,
        manager,
        t.study_id,
        lot_number=lot,
        model="Test implant",
        gtin=supply.DEMO_GTIN,
        manufacturer="Test Devices Inc.",
        expiry=dt.date(2031, 12, 31),
        serials=serials,
    )
    shipment = supply.ship_devices(t.ctx, manager, t.study_id, site, serials)
    supply.receive_shipment(t.ctx, staff(t, "coordinator", site), t.study_id, shipment.number)
    return device_udi(t, site)


def procedure_values(t: Trial, arm: str, site: str = SITE) -> dict[str, object]:
    """The arm's index procedure form; an implant names a device in stock at the site."""
    if arm == "INT":
        (values,) = fd.implant_procedure_forms(udi=device_udi(t, site)).values()
    else:
        (values,) = fd.sham_procedure_forms().values()
    return values


def procedure_done(t: Trial, site: str = SITE) -> tuple[str, str]:
    number, arm = randomized(t, site)
    values = procedure_values(t, arm, site)
    followup.record_procedure(t.ctx, staff(t, "implanter", site), t.study_id, number, values=values)
    t.clock.set_day(fd.DISCHARGE_DATE)
    followup.record_discharge(
        t.ctx,
        staff(t, "coordinator", site),
        t.study_id,
        number,
        discharged_on=dt.date.fromisoformat(fd.DISCHARGE_DATE),
    )
    return number, arm


def procedure_done_at(t: Trial, site: str) -> str:
    return procedure_done(t, site)[0]


def visit_dates(randomized_on: dt.date = PROCEDURE) -> dict[str, dt.date]:
    return {
        p.code: p.target_date for p in plan_visits(randomized_on, visit_specs(flagship().protocol))
    }


def record_visit(t: Trial, number: str, code: str, on: dt.date) -> None:
    t.clock.set_day(on)
    if code.startswith("Y"):
        forms = fd.annual_contact_forms(on.isoformat())
    else:
        forms = fd.follow_up_forms(on.isoformat())
    followup.record_visit(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        visit_code=code,
        visit_date=on,
        forms=forms,
    )


def blinded_visits_done(t: Trial) -> tuple[str, str]:
    number, arm = procedure_done(t)
    for code in ("M1", "M6", "M12", "M18", "M24"):
        record_visit(t, number, code, visit_dates()[code])
    return number, arm


def unblinded(t: Trial) -> tuple[str, str]:
    number, arm = blinded_visits_done(t)
    followup.unblind_subject(t.ctx, t.actor("coordinator"), t.study_id, number, password=PASSWORD)
    return number, arm


def all_contacts_done(t: Trial) -> tuple[str, str]:
    number, arm = unblinded(t)
    for code in ("Y3", "Y4", "Y5"):
        record_visit(t, number, code, visit_dates()[code])
    return number, arm


def completed(t: Trial) -> tuple[str, str]:
    number, arm = all_contacts_done(t)
    followup.complete_subject(t.ctx, t.actor("coordinator"), t.study_id, number)
    return number, arm
