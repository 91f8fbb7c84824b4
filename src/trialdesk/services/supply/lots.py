"""Lots (SUP-1): the study manager registers a lot and its devices at the depot, and
quarantines a lot on a recall or a quality hold."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.domain.supply import (
    DeviceEventKind,
    DeviceMove,
    DeviceState,
    LotStatus,
    may_move,
    sources,
)
from trialdesk.domain.udi import check_gtin, format_udi, parse_udi
from trialdesk.services.access import Actor, require
from trialdesk.services.common import require_text
from trialdesk.services.context import ServiceContext
from trialdesk.services.supply.common import (
    SUPPLY,
    arms_visible,
    audit,
    check_pi,
    log_event,
    lot_of,
    move,
    study,
    trial_unblinded,
)
from trialdesk.services.supply.views import LotView, lot_view, site_code
from trialdesk.store.records import DeviceLot
from trialdesk.store.uow import UnitOfWork


def _sees_all(uow: UnitOfWork, actor: Actor, study_id: int) -> bool:
    """Whether the caller may see every site's arms (decides the shape of the lot counts)."""
    unblinded = trial_unblinded(uow, study_id)
    return all(
        arms_visible(actor, study_id, s.id, unblinded_trial=unblinded)
        for s in uow.sites.of_study(study_id)
    )


def _view(uow: UnitOfWork, actor: Actor, lot: DeviceLot, *, with_devices: bool) -> LotView:
    see_all = _sees_all(uow, actor, lot.study_id)
    return lot_view(uow, lot, see_all=see_all, with_devices=with_devices)


def _entries(
    number: str,
    gtin: str,
    expiry: dt.date,
    serials: Sequence[str],
    udis: Sequence[str],
) -> list[tuple[str, str]]:
    """(serial, UDI) of each device named: a serial gets its UDI composed from the lot; a UDI
    must parse and agree with the lot (same GTIN, lot number and expiry)."""
    entries: list[tuple[str, str]] = []
    for index, serial in enumerate(serials):
        sn = check_pi(serial, f"serials[{index}]", "serial number")
        entries.append((sn, format_udi(gtin, lot=number, serial=sn, expiry=expiry)))
    for index, text in enumerate(udis):
        at = f"udis[{index}]"
        udi = parse_udi(text, at)
        mismatch = [
            f"{what} {got} (lot {want})"
            for what, got, want in (
                ("GTIN", udi.gtin, gtin),
                ("lot", udi.lot, number),
                ("expiry", udi.expiry, expiry),
            )
            if got is not None and got != want
        ]
        if udi.lot is None:
            mismatch.append("no (10) lot")
        if udi.serial is None:
            raise ValidationFailed(f"UDI {text} has no (21) serial number", {at: "no serial"})
        if mismatch:
            raise ValidationFailed(
                f"UDI {text} does not agree with lot {number}: " + ", ".join(mismatch),
                {at: "disagrees with the lot"},
            )
        entries.append((udi.serial, udi.text))
    return entries


def register_lot(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    lot_number: str,
    model: str,
    gtin: str,
    manufacturer: str,
    expiry: dt.date,
    serials: Sequence[str] = (),
    udis: Sequence[str] = (),
) -> LotView:
    """The study manager registers a lot and its devices at the depot (SUP-1). Devices are
    named by serial number (their UDI is composed from the lot) or by UDI, which must parse
    and agree with the lot: same GTIN, lot number and expiry."""
    with ctx.uow() as uow:
        study(uow, study_id)
        require(actor, study_id, SUPPLY, action="register a device lot")
        uow.lock_study(study_id)  # numbering per study: the next insert waits, not collides
        number = check_pi(lot_number, "lot_number", "lot number")
        model_text = require_text(model, "model", "the device model")
        maker = require_text(manufacturer, "manufacturer", "the manufacturer")
        gtin = check_gtin((gtin or "").strip(), "gtin")
        if not serials and not udis:
            raise ValidationFailed("a lot needs at least one device", {"serials": "required"})
        entries = _entries(number, gtin, expiry, serials, udis)
        seen: set[str] = set()
        for serial, _udi in entries:
            if serial in seen:
                raise ValidationFailed(f"serial {serial} is listed twice", {"serials": serial})
            seen.add(serial)
        exists = uow.supply.registered(study_id, seen)
        if exists:
            raise ValidationFailed(
                "already registered: " + ", ".join(sorted(exists)),
                {"serials": "already registered"},
            )
        if uow.supply.lot(study_id, number) is not None:
            raise PreconditionFailed(f"lot {number} is already registered", reason="lot-exists")
        now = ctx.now()
        lot = uow.supply.add_lot(
            study_id=study_id,
            lot_number=number,
            model=model_text,
            gtin=gtin,
            manufacturer=maker,
            expiry=expiry,
            status=LotStatus.RELEASED.value,
            created_at=now,
            created_by=actor.label,
        )
        audit(
            uow,
            ctx,
            actor,
            study_id,
            "register_device_lot",
            "device_lot",
            number,
            new={
                "model": model_text,
                "gtin": gtin,
                "manufacturer": maker,
                "expiry": expiry.isoformat(),
                "devices": len(entries),
            },
        )
        today = now.date()
        for serial, udi_text in entries:
            device = uow.supply.add_device(
                study_id=study_id,
                lot_id=lot.id,
                serial=serial,
                udi=udi_text,
                status=DeviceState.AT_DEPOT.value,
                version=1,
                updated_at=now,
            )
            log_event(uow, ctx, actor, device, DeviceEventKind.REGISTERED, today)
            audit(
                uow,
                ctx,
                actor,
                study_id,
                "register_device",
                "device",
                serial,
                new={"lot": number, "udi": udi_text, "status": DeviceState.AT_DEPOT.value},
            )
        uow.commit()
        return _view(uow, actor, lot, with_devices=True)


def list_lots(ctx: ServiceContext, actor: Actor, study_id: int) -> list[LotView]:
    """Lots with device counts: by status for callers who may see every site's arms, by
    place (depot, in transit, at sites) for everyone else."""
    with ctx.uow(readonly=True) as uow:
        study(uow, study_id)
        require(
            actor,
            study_id,
            [Role.MANAGER, Role.ADMIN, Role.MONITOR, Role.STATISTICIAN, Role.DSMB],
            action="list device lots",
        )
        see_all = _sees_all(uow, actor, study_id)
        return [
            lot_view(uow, lot, see_all=see_all, with_devices=False)
            for lot in uow.supply.lots(study_id)
        ]


def quarantine_lot(
    ctx: ServiceContext, actor: Actor, study_id: int, lot_number: str, reason: str
) -> LotView:
    """A field recall or a quality hold: every device of the lot not yet implanted, returned
    or destroyed is quarantined wherever it is, and can no longer be shipped or implanted."""
    with ctx.uow() as uow:
        study(uow, study_id)
        require(actor, study_id, SUPPLY, action="quarantine a device lot")
        text = require_text(reason, "reason", "a reason")
        lot = lot_of(uow, study_id, lot_number)
        if lot.status == LotStatus.QUARANTINED:
            raise PreconditionFailed(
                f"lot {lot.lot_number} is already quarantined", reason="already-quarantined"
            )
        lot = uow.supply.update_lot(
            lot, {"status": LotStatus.QUARANTINED.value, "quarantine_reason": text}
        )
        audit(
            uow,
            ctx,
            actor,
            study_id,
            "quarantine_device_lot",
            "device_lot",
            lot.lot_number,
            old={"status": LotStatus.RELEASED.value},
            new={"status": LotStatus.QUARANTINED.value},
            reason=text,
        )
        today = ctx.now().date()
        for device in uow.supply.devices_of_lot(lot.id, sources(DeviceMove.QUARANTINE)):
            old = device.status
            assert may_move(DeviceMove.QUARANTINE, old)
            held = move(uow, ctx, device, DeviceMove.QUARANTINE)
            log_event(uow, ctx, actor, held, DeviceEventKind.QUARANTINED, today, reason=text)
            audit(
                uow,
                ctx,
                actor,
                study_id,
                "quarantine_device",
                "device",
                held.serial,
                old={"status": old},
                new={"status": held.status, "site": site_code(uow, held.site_id)},
                reason=text,
            )
        uow.commit()
        return _view(uow, actor, lot, with_devices=True)
