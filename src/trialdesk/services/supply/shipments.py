"""Shipments (SUP-1): the study manager ships devices from the depot to a site; the site's
coordinator receives them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from trialdesk.domain.errors import NotFound, PreconditionFailed, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.domain.supply import (
    DeviceEventKind,
    DeviceMove,
    DeviceState,
    LotStatus,
    ShipmentStatus,
    may_move,
    not_shippable,
)
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.common import site_today
from trialdesk.services.context import ServiceContext
from trialdesk.services.supply.common import (
    READERS,
    SUPPLY,
    audit,
    device_of,
    log_event,
    move,
    study,
)
from trialdesk.services.supply.views import ShipmentView, shipment_view


def ship_devices(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    site_code: str,
    serials: Sequence[str],
    shipped_on: dt.date | None = None,
) -> ShipmentView:
    """The study manager ships devices from the depot to a site (SUP-1). Every device must
    be at the depot, of a released lot and not expired; otherwise nothing ships."""
    with ctx.uow() as uow:
        study(uow, study_id)
        require(actor, study_id, SUPPLY, action="ship devices")
        uow.lock_study(study_id)  # shipment numbers per study: the next waits, not collides
        site = uow.sites.by_code(study_id, site_code)
        if site is None:
            raise NotFound(f"site {site_code} not found")
        if not site.active:
            raise PreconditionFailed(f"site {site.code} is not active", reason="site-inactive")
        latest = max(ctx.now().date(), site_today(site, ctx.now()))
        on = shipped_on or site_today(site, ctx.now())
        if on > latest:
            raise ValidationFailed(
                f"shipping date {on.isoformat()} is in the future", {"shipped_on": "in the future"}
            )
        wanted = [s.strip() for s in serials if s and s.strip()]
        if not wanted:
            raise ValidationFailed("name at least one device to ship", {"serials": "required"})
        if len(set(wanted)) != len(wanted):
            raise ValidationFailed("a serial number is listed twice", {"serials": "duplicate"})
        devices = [device_of(uow, study_id, serial) for serial in wanted]
        problems: dict[str, str] = {}
        for device in devices:
            lot = uow.supply.lot_by_id(device.lot_id)
            if not may_move(DeviceMove.SHIP, device.status):
                problems[device.serial] = not_shippable(
                    device.status, shipped=device.shipment_id is not None
                )
            elif lot.status != LotStatus.RELEASED:
                problems[device.serial] = f"lot {lot.lot_number} is quarantined"
            elif lot.expiry < on:
                problems[device.serial] = f"expired on {lot.expiry.isoformat()}"
        if problems:
            raise PreconditionFailed(
                "cannot ship: " + "; ".join(f"{k} {v}" for k, v in problems.items()),
                reason="device-unavailable",
            )
        shipment = uow.supply.add_shipment(
            study_id=study_id,
            number=f"SHP-{uow.supply.count_shipments(study_id) + 1:04d}",
            site_id=site.id,
            status=ShipmentStatus.IN_TRANSIT.value,
            shipped_on=on,
            shipped_by=actor.label,
        )
        audit(
            uow,
            ctx,
            actor,
            study_id,
            "ship_devices",
            "device_shipment",
            shipment.number,
            new={"site": site.code, "shipped_on": on.isoformat(), "serials": wanted},
        )
        for device in devices:
            old = device.status
            sent = move(uow, ctx, device, DeviceMove.SHIP, site_id=site.id, shipment_id=shipment.id)
            log_event(uow, ctx, actor, sent, DeviceEventKind.SHIPPED, on)
            audit(
                uow,
                ctx,
                actor,
                study_id,
                "ship_device",
                "device",
                sent.serial,
                old={"status": old},
                new={"status": sent.status, "site": site.code, "shipment": shipment.number},
            )
        uow.commit()
        return shipment_view(uow, shipment)


def receive_shipment(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    shipment_number: str,
    received_on: dt.date | None = None,
) -> ShipmentView:
    """The site coordinator of the receiving site confirms receipt (SUP-1); devices become
    site stock (a device quarantined on the way stays quarantined)."""
    with ctx.uow() as uow:
        study(uow, study_id)
        shipment = uow.supply.shipment(study_id, shipment_number)
        if shipment is None:
            raise NotFound(f"shipment {shipment_number} not found")
        require_site_visible(actor, study_id, shipment.site_id, f"shipment {shipment_number}")
        require(
            actor,
            study_id,
            [Role.COORDINATOR],
            site_id=shipment.site_id,
            action="receive a shipment",
        )
        if shipment.status != ShipmentStatus.IN_TRANSIT:
            raise PreconditionFailed(
                f"shipment {shipment.number} was already received on "
                f"{shipment.received_on.isoformat() if shipment.received_on else '?'}",
                reason="already-received",
            )
        site = uow.sites.get(shipment.site_id)
        today = site_today(site, ctx.now())
        on = received_on or today
        if on > today:
            raise ValidationFailed(
                f"receipt date {on.isoformat()} is in the future (today at the site is "
                f"{today.isoformat()})",
                {"received_on": "in the future"},
            )
        if on < shipment.shipped_on:
            raise ValidationFailed(
                f"receipt date {on.isoformat()} is before the shipping date "
                f"{shipment.shipped_on.isoformat()}",
                {"received_on": "before shipping"},
            )
        shipment = uow.supply.update_shipment(
            shipment,
            {
                "status": ShipmentStatus.RECEIVED.value,
                "received_on": on,
                "received_by": actor.label,
            },
        )
        audit(
            uow,
            ctx,
            actor,
            study_id,
            "receive_shipment",
            "device_shipment",
            shipment.number,
            old={"status": ShipmentStatus.IN_TRANSIT.value},
            new={
                "status": ShipmentStatus.RECEIVED.value,
                "received_on": on.isoformat(),
                "site": site.code,
            },
        )
        for device in uow.supply.devices_of_shipment(shipment.id):
            old = device.status
            if old == DeviceState.IN_TRANSIT:
                device = move(uow, ctx, device, DeviceMove.RECEIVE)
            log_event(uow, ctx, actor, device, DeviceEventKind.RECEIVED, on)
            audit(
                uow,
                ctx,
                actor,
                study_id,
                "receive_device",
                "device",
                device.serial,
                old={"status": old},
                new={"status": device.status, "site": site.code, "shipment": shipment.number},
            )
        uow.commit()
        return shipment_view(uow, shipment)


def list_shipments(ctx: ServiceContext, actor: Actor, study_id: int) -> list[ShipmentView]:
    """Shipments the caller may see: every site for study roles, its own for site staff."""
    with ctx.uow(readonly=True) as uow:
        study(uow, study_id)
        require(actor, study_id, READERS, action="list shipments")
        return [
            shipment_view(uow, s)
            for s in uow.supply.shipments(study_id)
            if actor.sees_site(study_id, s.site_id)
        ]
