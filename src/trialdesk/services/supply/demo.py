"""Demo stock: a lot shipped to and received at the first site of a demo or test study, so
the implant path works out of the box."""

from __future__ import annotations

import datetime as dt

from trialdesk.domain.errors import PermissionDenied, PreconditionFailed
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, Grant
from trialdesk.services.context import ServiceContext
from trialdesk.services.supply.common import study, supply_protocol
from trialdesk.services.supply.lots import register_lot
from trialdesk.services.supply.shipments import receive_shipment, ship_devices

DEMO_LOT = "LOT2701"
DEMO_GTIN = "00812345000016"
DEMO_EXPIRY = dt.date(2029, 1, 31)
DEMO_SERIALS = tuple(f"SN{n:06d}" for n in range(123, 133))


def stock_demo_site(ctx: ServiceContext, actor: Actor, study_id: int) -> int:
    """Demo and test studies: lot LOT2701 of 10 devices shipped to and received at the first
    site, so the implant path works out of the box (the demo UDI of the first device is
    (01)00812345000016(17)290131(10)LOT2701(21)SN000123). Skipped when the lot exists or the
    protocol tracks no devices; returns the number of devices stocked."""
    if not actor.operator:
        raise PermissionDenied("demo stock is set up by the local operator ('trialdesk init')")
    with ctx.uow() as uow:
        found = study(uow, study_id)
        if found.mode == "live":
            raise PreconditionFailed("demo stock is for demo and sandbox studies only")
        loaded = supply_protocol(ctx, uow, study_id)
        if loaded.protocol.supply is None:
            return 0
        if uow.supply.lot(study_id, DEMO_LOT) is not None:
            return 0
        sites = uow.sites.of_study(study_id)
        if not sites:
            return 0
        site_code = min(sites, key=lambda s: s.id).code  # the first site created
    # the operator holds no study role: act as the study's supply manager and the site's
    # coordinator for these three set-up steps only, under the operator's own name
    supply = Actor(
        username=actor.username,
        full_name=actor.full_name,
        grants=frozenset({Grant(Role.MANAGER, study_id), Grant(Role.COORDINATOR, study_id, None)}),
    )
    register_lot(
        ctx,
        supply,
        study_id,
        lot_number=DEMO_LOT,
        model="Demo coronary-sinus implant",
        gtin=DEMO_GTIN,
        manufacturer="Demo Devices Inc.",
        expiry=DEMO_EXPIRY,
        serials=DEMO_SERIALS,
    )
    shipment = ship_devices(ctx, supply, study_id, site_code, DEMO_SERIALS)
    receive_shipment(ctx, supply, study_id, shipment.number)
    return len(DEMO_SERIALS)
