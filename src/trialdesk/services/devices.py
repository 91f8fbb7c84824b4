"""Device accountability (SUP-1, SUP-2): lots and serialised devices from the sponsor's depot
to a site, to an implant, a return or destruction; recalls and re-supply warnings.

Who does what: the study manager (the sponsor's supply role) registers lots, ships and
quarantines; the site coordinator of the receiving site receives; site staff return and
destroy; the implanting team uses a device at the index procedure (followup.record_procedure
calls :func:`use_for_procedure`).

Blinding (RAND-6): only implant-arm subjects get devices, so which subject got which device,
how many devices were implanted and when are arm information. The link is stored encrypted;
a caller who may not see a site's arms sees of its stock only what moves by shipment (received,
in transit), nothing that changes when a device is used (SUP-2: no per-arm usage); lot counts
for such callers merge everything delivered to sites; re-supply warnings go to callers who may
see the site's arms; the recall list is for roles that may see arms (or the study manager
through an e-signed, audited disclosure); and the audit entry of a procedure's device use is
written for every index procedure, of either arm, with no content. docs/devices.md explains
the choices.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from trialdesk.domain.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.roles import Role
from trialdesk.domain.udi import check_gtin, format_udi, parse_udi
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, Grant, require, require_site_visible
from trialdesk.services.allocation.unblinding import trial_unblinded
from trialdesk.services.audit_trail import disclosure_entry
from trialdesk.services.auth import reauthenticate
from trialdesk.services.blinding import may_see_arm
from trialdesk.services.common import (
    current_protocol_row,
    protocol_of,
    require_text,
    site_by_code,
    site_today,
    study_by_id,
)
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.records import Subject
from trialdesk.store.tables import (
    DeviceEventRow,
    DeviceLotRow,
    DeviceRow,
    DeviceShipmentRow,
    SiteRow,
    StudyRow,
    SubjectRow,
)
from trialdesk.store.uow import UnitOfWork

SUPPLY = (Role.MANAGER,)
READERS = (
    Role.MANAGER,
    Role.ADMIN,
    Role.MONITOR,
    Role.COORDINATOR,
    Role.IMPLANTER,
    Role.STATISTICIAN,
    Role.DSMB,
)
STATUSES = (
    "at_depot",
    "in_transit",
    "at_site",
    "implanted",
    "returned",
    "destroyed",
    "quarantined",
)
LEFT_STOCK = ("implanted", "returned", "destroyed")
"""Ways a device leaves a site's stock (shown apart to callers who may see the site's arms)."""
AT_SITES = "at_sites"
"""Blinded lot count: every device delivered to a site, whatever happened to it since."""
_DEPOT_PLACES = {
    "at_depot": "at_depot",
    "quarantined": "quarantined_at_depot",
    "destroyed": "destroyed_at_depot",
}
"""Blinded lot counts of devices never shipped (none of them can have been used)."""
DEVICE_USE_TABLES = ("devices", "device_events")
"""Tables whose rows tell when a device was used; a blinded export leaves them out."""
_PI = re.compile(r"^[!-~]{1,20}$")
_PROCEDURE_RECORD = "index_procedure_device"


# --------------------------------------------------------------------------- read models


@dataclass(frozen=True)
class DeviceView:
    serial: str
    udi: str
    lot: str
    expiry: str
    status: str
    site: str | None
    shipment: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LotView:
    lot_number: str
    model: str
    gtin: str
    manufacturer: str
    expiry: str
    status: str
    quarantine_reason: str | None
    counts: dict[str, int]
    """By status for callers who may see every site's arms; for others by place only:
    at_depot, quarantined_at_depot, destroyed_at_depot (never shipped), in_transit, at_sites."""
    devices: list[DeviceView] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShipmentView:
    number: str
    site: str
    status: str
    shipped_on: str
    shipped_by: str
    received_on: str | None
    received_by: str | None
    serials: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UsedDeviceView:
    serial: str
    lot: str
    subject: str
    procedure_date: str
    released: bool


@dataclass(frozen=True)
class SiteStockView:
    site: str
    name: str
    on_hand: int | None
    """Usable devices at the site: received, not quarantined, not expired. None (like
    quarantined, expired, left_stock and low_stock) for a caller who may not see the site's
    arms: it drops when a device is implanted (SUP-2, RAND-6)."""
    quarantined: int | None
    expired: int | None
    in_transit: int
    received: int
    left_stock: int | None
    """Implanted + returned + destroyed."""
    reorder_level: int
    low_stock: bool | None
    devices: list[DeviceView]
    """Devices at the site or on their way to it; only those in transit for a caller who may
    not see the site's arms (what they receive)."""
    by_status: dict[str, int] | None = None
    """Implanted, returned and destroyed apart: callers who may see this site's arms only."""
    used: list[UsedDeviceView] | None = None
    """Which subject got which device: callers who may see this site's arms only."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InventoryView:
    as_of: str
    sites: list[SiteStockView]
    per_arm_usage_visible: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StockWarning:
    site: str
    name: str
    on_hand: int
    in_transit: int
    reorder_level: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RecallEntry:
    subject: str
    site: str
    procedure_date: str
    serial: str
    released: bool


@dataclass(frozen=True)
class RecallView:
    lot_number: str
    lot_status: str
    subjects: list[RecallEntry]
    disclosed_by_signature: bool
    """True when a blinded study manager e-signed a safety disclosure to read the list."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def _audit(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    action: str,
    entity: str,
    entity_id: str,
    *,
    old: Any = None,
    new: Any = None,
    reason: str | None = None,
) -> None:
    """Supply entries chain in one stream per study ("supply:<id>"), in the order they happen."""
    uow.record(
        PendingEntry(
            stream=f"supply:{study_id}",
            at=ctx.now(),
            actor=actor.label,
            action=action,
            entity=entity,
            entity_id=entity_id,
            study_id=study_id,
            old=old,
            new=new,
            reason=reason,
        )
    )


def _event(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    device: DeviceRow,
    kind: str,
    on: dt.date,
    *,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    site_id: int | None = None,
) -> None:
    """One row of the device's log; ``site_id`` names the site a device left (a return)."""
    uow.session.add(
        DeviceEventRow(
            study_id=device.study_id,
            device_id=device.id,
            kind=kind,
            status=device.status,
            site_id=site_id if site_id is not None else device.site_id,
            shipment_id=device.shipment_id,
            on_date=on,
            at=ctx.now(),
            actor=actor.label,
            reason=reason,
            detail_enc=ctx.cipher.encrypt(json.dumps(detail, sort_keys=True))
            if detail is not None
            else None,
        )
    )


def _move(
    uow: UnitOfWork,
    ctx: ServiceContext,
    device: DeviceRow,
    allowed: Sequence[str],
    **values: Any,
) -> None:
    """Guarded status change: two users moving the same device at once cannot both win."""
    result = uow.session.execute(
        update(DeviceRow)
        .where(
            DeviceRow.id == device.id,
            DeviceRow.version == device.version,
            DeviceRow.status.in_(list(allowed)),
        )
        .values(version=device.version + 1, updated_at=ctx.now(), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"device {device.serial} was changed by someone else; reload and try again")
    uow.session.refresh(device)


def _lock_study(uow: UnitOfWork, study_id: int) -> None:
    """Serialize numbering (shipments, lots) per study: concurrent inserts would otherwise
    collide on the unique number instead of getting the next one."""
    uow.session.execute(select(StudyRow.id).where(StudyRow.id == study_id).with_for_update())


def _lot(uow: UnitOfWork, study_id: int, lot_number: str) -> DeviceLotRow:
    lot = uow.session.scalars(
        select(DeviceLotRow).where(
            DeviceLotRow.study_id == study_id, DeviceLotRow.lot_number == lot_number
        )
    ).one_or_none()
    if lot is None:
        raise NotFound(f"device lot {lot_number} not found")
    return lot


def _device(uow: UnitOfWork, study_id: int, serial: str) -> DeviceRow:
    device = uow.session.scalars(
        select(DeviceRow).where(DeviceRow.study_id == study_id, DeviceRow.serial == serial)
    ).one_or_none()
    if device is None:
        raise NotFound(f"device {serial} not found")
    return device


def _site_code(uow: UnitOfWork, site_id: int | None) -> str | None:
    if site_id is None:
        return None
    site = uow.session.get(SiteRow, site_id)
    return site.code if site else None


def _device_view(uow: UnitOfWork, device: DeviceRow, lot: DeviceLotRow) -> DeviceView:
    shipment = (
        uow.session.get(DeviceShipmentRow, device.shipment_id) if device.shipment_id else None
    )
    return DeviceView(
        serial=device.serial,
        udi=device.udi,
        lot=lot.lot_number,
        expiry=lot.expiry.isoformat(),
        status=device.status,
        site=_site_code(uow, device.site_id),
        shipment=shipment.number if shipment else None,
    )


def _check_pi(value: str, field: str, what: str) -> str:
    text = (value or "").strip()
    if not _PI.fullmatch(text):
        raise ValidationFailed(
            f"{what} {value!r} must be 1 to 20 printable characters without spaces (GS1)",
            {field: "1-20 printable characters"},
        )
    return text


def _supply_protocol(ctx: ServiceContext, uow: UnitOfWork, study_id: int) -> LoadedProtocol:
    return protocol_of(ctx, current_protocol_row(uow, study_id))


def _reorder_level(loaded: LoadedProtocol, site_code: str) -> int:
    supply = loaded.protocol.supply
    return supply.reorder_level_for(site_code) if supply is not None else 0


def _arms_visible(actor: Actor, study_id: int, site_id: int, *, unblinded_trial: bool) -> bool:
    return may_see_arm(
        actor, study_id, site_id, subject_unblinded=False, trial_unblinded=unblinded_trial
    )


# --------------------------------------------------------------------------- lots


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
        study_by_id(uow, study_id)
        require(actor, study_id, SUPPLY, action="register a device lot")
        _lock_study(uow, study_id)
        number = _check_pi(lot_number, "lot_number", "lot number")
        model_text = require_text(model, "model", "the device model")
        maker = require_text(manufacturer, "manufacturer", "the manufacturer")
        gtin = check_gtin((gtin or "").strip(), "gtin")
        if not serials and not udis:
            raise ValidationFailed("a lot needs at least one device", {"serials": "required"})
        entries: list[tuple[str, str]] = []
        for index, serial in enumerate(serials):
            sn = _check_pi(serial, f"serials[{index}]", "serial number")
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
        seen: set[str] = set()
        for serial, _udi in entries:
            if serial in seen:
                raise ValidationFailed(f"serial {serial} is listed twice", {"serials": serial})
            seen.add(serial)
        exists = uow.session.scalars(
            select(DeviceRow.serial).where(
                DeviceRow.study_id == study_id, DeviceRow.serial.in_(sorted(seen))
            )
        ).all()
        if exists:
            raise ValidationFailed(
                "already registered: " + ", ".join(sorted(exists)),
                {"serials": "already registered"},
            )
        if uow.session.scalars(
            select(DeviceLotRow.id).where(
                DeviceLotRow.study_id == study_id, DeviceLotRow.lot_number == number
            )
        ).first():
            raise PreconditionFailed(f"lot {number} is already registered", reason="lot-exists")
        now = ctx.now()
        lot = DeviceLotRow(
            study_id=study_id,
            lot_number=number,
            model=model_text,
            gtin=gtin,
            manufacturer=maker,
            expiry=expiry,
            status="released",
            created_at=now,
            created_by=actor.label,
        )
        uow.session.add(lot)
        uow.session.flush()
        _audit(
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
            device = DeviceRow(
                study_id=study_id,
                lot_id=lot.id,
                serial=serial,
                udi=udi_text,
                status="at_depot",
                version=1,
                updated_at=now,
            )
            uow.session.add(device)
            uow.session.flush()
            _event(uow, ctx, actor, device, "registered", today)
            _audit(
                uow,
                ctx,
                actor,
                study_id,
                "register_device",
                "device",
                serial,
                new={"lot": number, "udi": udi_text, "status": "at_depot"},
            )
        uow.commit()
        return _lot_view(uow, actor, study_id, lot, with_devices=True)


def _lot_view(
    uow: UnitOfWork, actor: Actor, study_id: int, lot: DeviceLotRow, *, with_devices: bool
) -> LotView:
    devices = uow.session.scalars(
        select(DeviceRow).where(DeviceRow.lot_id == lot.id).order_by(DeviceRow.serial)
    ).all()
    unblinded = trial_unblinded(uow, study_id)
    site_ids = uow.session.scalars(select(SiteRow.id).where(SiteRow.study_id == study_id)).all()
    # decided by the caller, not by where the devices are, so the shape never changes
    see_all = all(_arms_visible(actor, study_id, s, unblinded_trial=unblinded) for s in site_ids)
    in_transit = set(
        uow.session.scalars(
            select(DeviceShipmentRow.id).where(
                DeviceShipmentRow.study_id == study_id, DeviceShipmentRow.status == "in_transit"
            )
        ).all()
    )
    counts: dict[str, int] = {}
    shown = []
    for device in devices:
        key = device.status if see_all else _place(device, in_transit)
        counts[key] = counts.get(key, 0) + 1
        if with_devices and key != AT_SITES:
            shown.append(_device_view(uow, device, lot))
    return LotView(
        lot_number=lot.lot_number,
        model=lot.model,
        gtin=lot.gtin,
        manufacturer=lot.manufacturer,
        expiry=lot.expiry.isoformat(),
        status=lot.status,
        quarantine_reason=lot.quarantine_reason,
        counts=dict(sorted(counts.items())),
        devices=shown,
    )


def _place(device: DeviceRow, in_transit: set[int]) -> str:
    """Where a device is, for a caller who may not see every site's arms (SUP-2, RAND-6).
    A device never shipped cannot have been used, so the depot's counts stay apart; one on a
    shipment not yet received is in transit; everything delivered is one count, at_sites,
    because at a site use (implanted, or used and quarantined) and non-use (on the shelf,
    returned, destroyed) would otherwise tell implants apart."""
    if device.shipment_id is None:
        return _DEPOT_PLACES.get(device.status, AT_SITES)
    return "in_transit" if device.shipment_id in in_transit else AT_SITES


def list_lots(ctx: ServiceContext, actor: Actor, study_id: int) -> list[LotView]:
    """Lots with device counts: by status for callers who may see every site's arms, by
    place (depot, in transit, at sites) for everyone else."""
    with ctx.uow(readonly=True) as uow:
        study_by_id(uow, study_id)
        require(
            actor,
            study_id,
            [Role.MANAGER, Role.ADMIN, Role.MONITOR, Role.STATISTICIAN, Role.DSMB],
            action="list device lots",
        )
        lots = uow.session.scalars(
            select(DeviceLotRow)
            .where(DeviceLotRow.study_id == study_id)
            .order_by(DeviceLotRow.lot_number)
        ).all()
        return [_lot_view(uow, actor, study_id, lot, with_devices=False) for lot in lots]


def quarantine_lot(
    ctx: ServiceContext, actor: Actor, study_id: int, lot_number: str, reason: str
) -> LotView:
    """A field recall or a quality hold: every device of the lot not yet implanted, returned
    or destroyed is quarantined wherever it is, and can no longer be shipped or implanted."""
    with ctx.uow() as uow:
        study_by_id(uow, study_id)
        require(actor, study_id, SUPPLY, action="quarantine a device lot")
        text = require_text(reason, "reason", "a reason")
        lot = _lot(uow, study_id, lot_number)
        if lot.status == "quarantined":
            raise PreconditionFailed(
                f"lot {lot.lot_number} is already quarantined", reason="already-quarantined"
            )
        lot.status = "quarantined"
        lot.quarantine_reason = text
        _audit(
            uow,
            ctx,
            actor,
            study_id,
            "quarantine_device_lot",
            "device_lot",
            lot.lot_number,
            old={"status": "released"},
            new={"status": "quarantined"},
            reason=text,
        )
        today = ctx.now().date()
        held = uow.session.scalars(
            select(DeviceRow)
            .where(
                DeviceRow.lot_id == lot.id,
                DeviceRow.status.in_(["at_depot", "in_transit", "at_site"]),
            )
            .order_by(DeviceRow.serial)
        ).all()
        for device in held:
            old = device.status
            _move(uow, ctx, device, [old], status="quarantined")
            _event(uow, ctx, actor, device, "quarantined", today, reason=text)
            _audit(
                uow,
                ctx,
                actor,
                study_id,
                "quarantine_device",
                "device",
                device.serial,
                old={"status": old},
                new={"status": "quarantined", "site": _site_code(uow, device.site_id)},
                reason=text,
            )
        uow.commit()
        return _lot_view(uow, actor, study_id, lot, with_devices=True)


# --------------------------------------------------------------------------- shipments


def _shipment_view(uow: UnitOfWork, shipment: DeviceShipmentRow) -> ShipmentView:
    serials = uow.session.scalars(
        select(DeviceRow.serial)
        .join(DeviceEventRow, DeviceEventRow.device_id == DeviceRow.id)
        .where(DeviceEventRow.shipment_id == shipment.id, DeviceEventRow.kind == "shipped")
        .order_by(DeviceRow.serial)
    ).all()
    return ShipmentView(
        number=shipment.number,
        site=_site_code(uow, shipment.site_id) or "",
        status=shipment.status,
        shipped_on=shipment.shipped_on.isoformat(),
        shipped_by=shipment.shipped_by,
        received_on=shipment.received_on.isoformat() if shipment.received_on else None,
        received_by=shipment.received_by,
        serials=list(serials),
    )


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
        study_by_id(uow, study_id)
        require(actor, study_id, SUPPLY, action="ship devices")
        _lock_study(uow, study_id)
        site = site_by_code(uow, study_id, site_code)
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
        devices = [_device(uow, study_id, serial) for serial in wanted]
        problems: dict[str, str] = {}
        for device in devices:
            lot = uow.session.get(DeviceLotRow, device.lot_id)
            assert lot is not None
            if device.status != "at_depot":
                problems[device.serial] = _not_shippable(device)
            elif lot.status != "released":
                problems[device.serial] = f"lot {lot.lot_number} is quarantined"
            elif lot.expiry < on:
                problems[device.serial] = f"expired on {lot.expiry.isoformat()}"
        if problems:
            raise PreconditionFailed(
                "cannot ship: " + "; ".join(f"{k} {v}" for k, v in problems.items()),
                reason="device-unavailable",
            )
        count = uow.session.scalar(
            select(func.count())
            .select_from(DeviceShipmentRow)
            .where(DeviceShipmentRow.study_id == study_id)
        )
        shipment = DeviceShipmentRow(
            study_id=study_id,
            number=f"SHP-{(count or 0) + 1:04d}",
            site_id=site.id,
            status="in_transit",
            shipped_on=on,
            shipped_by=actor.label,
        )
        uow.session.add(shipment)
        uow.session.flush()
        _audit(
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
            _move(
                uow,
                ctx,
                device,
                ["at_depot"],
                status="in_transit",
                site_id=site.id,
                shipment_id=shipment.id,
            )
            _event(uow, ctx, actor, device, "shipped", on)
            _audit(
                uow,
                ctx,
                actor,
                study_id,
                "ship_device",
                "device",
                device.serial,
                old={"status": "at_depot"},
                new={"status": "in_transit", "site": site.code, "shipment": shipment.number},
            )
        uow.commit()
        return _shipment_view(uow, shipment)


def _not_shippable(device: DeviceRow) -> str:
    """Why a device not at the depot cannot ship, from what the depot knows of it alone.

    Once a device has left the depot, whether it sits on a shelf, was implanted, used and
    quarantined, returned or destroyed at a site is usage, and usage is the arm (SUP-2,
    RAND-6): the refusal names none of it, for every caller (the supply role is blinded).
    A device never shipped cannot have been used, so the depot's own states are named."""
    if device.shipment_id is None:
        return f"is {device.status.replace('_', ' ')} at the depot"
    return "is not in depot stock (it was shipped)"


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
        study_by_id(uow, study_id)
        shipment = uow.session.scalars(
            select(DeviceShipmentRow).where(
                DeviceShipmentRow.study_id == study_id,
                DeviceShipmentRow.number == shipment_number,
            )
        ).one_or_none()
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
        if shipment.status != "in_transit":
            raise PreconditionFailed(
                f"shipment {shipment.number} was already received on "
                f"{shipment.received_on.isoformat() if shipment.received_on else '?'}",
                reason="already-received",
            )
        site = uow.session.get(SiteRow, shipment.site_id)
        assert site is not None
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
        shipment.status = "received"
        shipment.received_on = on
        shipment.received_by = actor.label
        _audit(
            uow,
            ctx,
            actor,
            study_id,
            "receive_shipment",
            "device_shipment",
            shipment.number,
            old={"status": "in_transit"},
            new={"status": "received", "received_on": on.isoformat(), "site": site.code},
        )
        devices = uow.session.scalars(
            select(DeviceRow).where(DeviceRow.shipment_id == shipment.id).order_by(DeviceRow.serial)
        ).all()
        for device in devices:
            old = device.status
            if old == "in_transit":
                _move(uow, ctx, device, ["in_transit"], status="at_site")
            _event(uow, ctx, actor, device, "received", on)
            _audit(
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
        return _shipment_view(uow, shipment)


def list_shipments(ctx: ServiceContext, actor: Actor, study_id: int) -> list[ShipmentView]:
    """Shipments the caller may see: every site for study roles, its own for site staff."""
    with ctx.uow(readonly=True) as uow:
        study_by_id(uow, study_id)
        require(actor, study_id, READERS, action="list shipments")
        rows = uow.session.scalars(
            select(DeviceShipmentRow)
            .where(DeviceShipmentRow.study_id == study_id)
            .order_by(DeviceShipmentRow.id)
        ).all()
        return [_shipment_view(uow, s) for s in rows if actor.sees_site(study_id, s.site_id)]


# --------------------------------------------------------------------------- at the site


def _site_device(
    uow: UnitOfWork, actor: Actor, study_id: int, serial: str
) -> tuple[DeviceRow, SiteRow | None]:
    device = _device(uow, study_id, serial)
    if device.site_id is not None:
        require_site_visible(actor, study_id, device.site_id, f"device {serial}")
    site = uow.session.get(SiteRow, device.site_id) if device.site_id else None
    return device, site


def _removal(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    serial: str,
    reason: str,
    on: dt.date | None,
    *,
    kind: str,
) -> DeviceView:
    action = "return a device" if kind == "returned" else "destroy a device"
    with ctx.uow() as uow:
        study_by_id(uow, study_id)
        # a role that may never return or destroy a device learns nothing of it, not even
        # whether it exists: the role comes first
        require(actor, study_id, (Role.IMPLANTER, *SUPPLY), action=action)
        device, site = _site_device(uow, actor, study_id, serial)
        if site is None and not actor.has(study_id, SUPPLY):
            # a device back at the depot is known only to the implanting team of the site it
            # left; to anyone else it is like another site's device (returned? never shipped?)
            left = uow.session.scalars(
                select(DeviceEventRow.site_id)
                .where(DeviceEventRow.device_id == device.id, DeviceEventRow.kind == "returned")
                .order_by(DeviceEventRow.id.desc())
            ).first()
            if left is None or not actor.has(study_id, [Role.IMPLANTER], site_id=left):
                raise NotFound(f"device {serial} not found")
        text = require_text(reason, "reason", "a reason")
        if site is not None:
            # The site's shelf belongs to its implanting team, who may see the site's arms:
            # anyone else would learn from the answer whether the device was implanted (SUP-2).
            require(actor, study_id, [Role.IMPLANTER], site_id=site.id, action=action)
            if device.status not in ("at_site", "quarantined"):
                raise PreconditionFailed(
                    f"device {serial} is {device.status.replace('_', ' ')}; only a device held "
                    f"at the site can be {kind}",
                    reason="device-unavailable",
                )
            today = site_today(site, ctx.now())
            allowed = ["at_site", "quarantined"]
        elif kind == "destroyed" and device.status in ("at_depot", "quarantined", "returned"):
            require(actor, study_id, SUPPLY, action=action)
            today = ctx.now().date()
            allowed = ["at_depot", "quarantined", "returned"]
        else:
            where = "at a site" if kind == "returned" else "at a site or the depot"
            raise PreconditionFailed(
                f"device {serial} is {device.status.replace('_', ' ')}; only a device held "
                f"{where} can be {kind}",
                reason="device-unavailable",
            )
        when = on or today
        if when > today:
            raise ValidationFailed(f"date {when.isoformat()} is in the future", {"on": "future"})
        old = device.status
        values: dict[str, Any] = {"status": kind}
        if kind == "returned":
            values["site_id"] = None
        _move(uow, ctx, device, allowed, **values)
        _event(uow, ctx, actor, device, kind, when, reason=text, site_id=site.id if site else None)
        _audit(
            uow,
            ctx,
            actor,
            study_id,
            "return_device" if kind == "returned" else "destroy_device",
            "device",
            device.serial,
            old={"status": old, "site": site.code if site else None},
            new={"status": kind, "on": when.isoformat()},
            reason=text,
        )
        uow.commit()
        lot = uow.session.get(DeviceLotRow, device.lot_id)
        assert lot is not None
        return _device_view(uow, device, lot)


def return_device(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    serial: str,
    reason: str,
    returned_on: dt.date | None = None,
) -> DeviceView:
    """Site staff send a device back to the sponsor (unused, quarantined or recaptured)."""
    return _removal(ctx, actor, study_id, serial, reason, returned_on, kind="returned")


def destroy_device(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    serial: str,
    reason: str,
    destroyed_on: dt.date | None = None,
) -> DeviceView:
    """Site staff destroy a device held at their site; the study manager one at the depot."""
    return _removal(ctx, actor, study_id, serial, reason, destroyed_on, kind="destroyed")


def _stock(
    ctx: ServiceContext,
    uow: UnitOfWork,
    study_id: int,
    loaded: LoadedProtocol,
    site: SiteRow,
    today: dt.date,
    *,
    arms_visible: bool,
) -> SiteStockView:
    rows = uow.session.execute(
        select(DeviceRow, DeviceLotRow)
        .join(DeviceLotRow, DeviceLotRow.id == DeviceRow.lot_id)
        .where(DeviceRow.site_id == site.id)
        .order_by(DeviceRow.serial)
    ).all()
    received = uow.session.scalar(
        select(func.count())
        .select_from(DeviceEventRow)
        .where(DeviceEventRow.site_id == site.id, DeviceEventRow.kind == "received")
    )
    returned = uow.session.scalar(
        select(func.count())
        .select_from(DeviceEventRow)
        .where(DeviceEventRow.site_id == site.id, DeviceEventRow.kind == "returned")
    )
    by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
    on_hand = expired = 0
    devices: list[DeviceView] = []
    used: list[UsedDeviceView] = []
    for device, lot in rows:
        by_status[device.status] += 1
        if device.status == "at_site":
            if lot.expiry < today:
                expired += 1
            else:
                on_hand += 1
        if device.status in ("in_transit", "at_site", "quarantined"):
            devices.append(_device_view(uow, device, lot))
        if arms_visible and device.status in ("implanted", "quarantined") and device.subject_enc:
            link = json.loads(ctx.cipher.decrypt(device.subject_enc))
            used.append(
                UsedDeviceView(
                    serial=device.serial,
                    lot=lot.lot_number,
                    subject=str(link["subject"]),
                    procedure_date=str(link["procedure_date"]),
                    released=bool(link["released"]),
                )
            )
    by_status["returned"] = returned or 0
    level = _reorder_level(loaded, site.code)
    if not arms_visible:
        # only what moves by shipment: received and in transit never change when a device
        # is used, on hand, quarantined and "left stock" do (SUP-2, RAND-6)
        return SiteStockView(
            site=site.code,
            name=site.name,
            on_hand=None,
            quarantined=None,
            expired=None,
            in_transit=by_status["in_transit"],
            received=received or 0,
            left_stock=None,
            reorder_level=level,
            low_stock=None,
            devices=[d for d in devices if d.status == "in_transit"],
        )
    left = by_status["implanted"] + by_status["returned"] + by_status["destroyed"]
    return SiteStockView(
        site=site.code,
        name=site.name,
        on_hand=on_hand,
        quarantined=by_status["quarantined"],
        expired=expired,
        in_transit=by_status["in_transit"],
        received=received or 0,
        left_stock=left,
        reorder_level=level,
        low_stock=loaded.protocol.supply is not None and on_hand <= level,
        devices=devices,
        by_status={k: by_status[k] for k in LEFT_STOCK},
        used=used,
    )


def _visible_sites(
    uow: UnitOfWork, actor: Actor, study_id: int, site_code: str | None
) -> list[SiteRow]:
    if site_code is not None:
        site = site_by_code(uow, study_id, site_code)
        require_site_visible(actor, study_id, site.id, f"site {site_code}")
        return [site]
    sites = uow.session.scalars(
        select(SiteRow).where(SiteRow.study_id == study_id).order_by(SiteRow.code)
    ).all()
    return [s for s in sites if actor.sees_site(study_id, s.id)]


def site_inventory(
    ctx: ServiceContext, actor: Actor, study_id: int, site_code: str | None = None
) -> InventoryView:
    """Stock by site (SUP-2). Callers who may see a site's arms (its implanting team, the
    statistician and DSMB) see on hand, quarantined, expired, what left stock and which
    subject got which device. Everyone else sees only what moves by shipment (received, in
    transit, the devices on their way) and the reorder level: every other count changes when
    a device is implanted, and only implant-arm subjects get one (RAND-6). Without a site,
    study-wide roles get every site that has had devices, site staff their own."""
    with ctx.uow(readonly=True) as uow:
        study_by_id(uow, study_id)
        require(actor, study_id, READERS, action="read device inventory")
        loaded = _supply_protocol(ctx, uow, study_id)
        unblinded = trial_unblinded(uow, study_id)
        sites = _visible_sites(uow, actor, study_id, site_code)
        if site_code is None:
            stocked = set(
                uow.session.scalars(
                    select(DeviceRow.site_id).where(DeviceRow.study_id == study_id).distinct()
                ).all()
            )
            stocked |= set(
                uow.session.scalars(
                    select(DeviceEventRow.site_id)
                    .where(DeviceEventRow.study_id == study_id)
                    .distinct()
                ).all()
            )
            sites = [s for s in sites if s.id in stocked]
        views = []
        all_visible = True
        for site in sites:
            visible = _arms_visible(actor, study_id, site.id, unblinded_trial=unblinded)
            all_visible = all_visible and visible
            today = site_today(site, ctx.now())
            views.append(_stock(ctx, uow, study_id, loaded, site, today, arms_visible=visible))
        return InventoryView(
            as_of=ctx.now().isoformat(),
            sites=views,
            per_arm_usage_visible=bool(views) and all_visible,
        )


def stock_warnings(ctx: ServiceContext, actor: Actor, study_id: int) -> list[StockWarning]:
    """Active, supplied sites whose usable stock is at or below the protocol's reorder level
    (SUP-2), in transit shown so nobody ships twice. Usable stock drops with each implant, so
    a site is listed only for callers who may see its arms (its implanting team, who keep the
    device shelf, and the statistician and DSMB); blinded callers get an empty list and the
    study manager ships on the implanting team's request. A site never shipped to is not yet
    in supply and gets no re-supply warning."""
    with ctx.uow(readonly=True) as uow:
        study_by_id(uow, study_id)
        require(actor, study_id, READERS, action="read stock warnings")
        loaded = _supply_protocol(ctx, uow, study_id)
        if loaded.protocol.supply is None:
            return []
        supplied = set(
            uow.session.scalars(
                select(DeviceShipmentRow.site_id).where(DeviceShipmentRow.study_id == study_id)
            ).all()
        )
        unblinded = trial_unblinded(uow, study_id)
        out = []
        for site in _visible_sites(uow, actor, study_id, None):
            if not site.active or site.id not in supplied:
                continue
            if not _arms_visible(actor, study_id, site.id, unblinded_trial=unblinded):
                continue
            today = site_today(site, ctx.now())
            usable = uow.session.scalar(
                select(func.count())
                .select_from(DeviceRow)
                .join(DeviceLotRow, DeviceLotRow.id == DeviceRow.lot_id)
                .where(
                    DeviceRow.site_id == site.id,
                    DeviceRow.status == "at_site",
                    DeviceLotRow.expiry >= today,
                )
            )
            transit = uow.session.scalar(
                select(func.count())
                .select_from(DeviceRow)
                .where(DeviceRow.site_id == site.id, DeviceRow.status == "in_transit")
            )
            level = _reorder_level(loaded, site.code)
            if (usable or 0) <= level:
                out.append(
                    StockWarning(
                        site=site.code,
                        name=site.name,
                        on_hand=usable or 0,
                        in_transit=transit or 0,
                        reorder_level=level,
                    )
                )
        return out


# --------------------------------------------------------------------------- the procedure


def use_for_procedure(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    subject: SubjectRow | Subject,
    loaded: LoadedProtocol,
    arm: str,
    values: dict[str, Any],
    procedure_date: dt.date | None,
) -> None:
    """Called inside record_procedure's unit of work after the form validated: a device arm
    must name a device in stock at the subject's site, which becomes implanted (or, when the
    form says it was not released, quarantined for return), linked to the subject only in
    encrypted form. Every index procedure of either arm writes the same contentless supply
    audit entry, so the trail does not tell which procedures used a device (RAND-6)."""
    supply = loaded.protocol.supply
    if supply is None:
        return
    _audit(
        uow,
        ctx,
        actor,
        subject.study_id,
        _PROCEDURE_RECORD,
        "procedure",
        "concealed",
        new={"concealed": True},
    )
    if arm not in supply.device_arms:
        return
    field = supply.device_field
    named = str(values.get(field) or "").strip()
    if not named:
        raise ValidationFailed(
            "name the device used: its UDI or serial number", {field: "required"}
        )
    if "(" in named:
        udi = parse_udi(named, field)
        if udi.serial is None:
            raise ValidationFailed(f"UDI {named} has no (21) serial number", {field: "no serial"})
        device = uow.session.scalars(
            select(DeviceRow).where(
                DeviceRow.study_id == subject.study_id, DeviceRow.serial == udi.serial
            )
        ).one_or_none()
        if device is None:
            raise ValidationFailed(f"no device with serial {udi.serial}", {field: "unknown device"})
        lot = uow.session.get(DeviceLotRow, device.lot_id)
        assert lot is not None
        mismatch = [
            f"{what} {got} (recorded {want})"
            for what, got, want in (
                ("GTIN", udi.gtin, lot.gtin),
                ("lot", udi.lot, lot.lot_number),
                ("expiry", udi.expiry, lot.expiry),
            )
            if got is not None and got != want
        ]
        if mismatch:
            raise ValidationFailed(
                f"UDI {named} does not match device {device.serial}: " + ", ".join(mismatch),
                {field: "does not match the device record"},
            )
    else:
        device = uow.session.scalars(
            select(DeviceRow).where(
                DeviceRow.study_id == subject.study_id, DeviceRow.serial == named
            )
        ).one_or_none()
        if device is None:
            raise ValidationFailed(
                f"no device with serial number {named} (give its UDI or serial number)",
                {field: "unknown device"},
            )
        lot = uow.session.get(DeviceLotRow, device.lot_id)
        assert lot is not None
    site = uow.session.get(SiteRow, subject.site_id)
    assert site is not None
    if procedure_date is None:
        procedure_date = site_today(site, ctx.now())
    if device.site_id != subject.site_id or device.status not in ("at_site",):
        if device.site_id != subject.site_id:
            why = f"is not in stock at site {site.code}"
        elif device.status == "in_transit":
            why = "is in transit: the shipment has not been received"
        elif device.status == "quarantined":
            why = "is quarantined"
        else:
            why = f"is {device.status}"
        raise PreconditionFailed(
            f"device {device.serial} {why}; name a device in stock at {site.code}",
            reason="device-unavailable",
        )
    if lot.status != "released":
        raise PreconditionFailed(
            f"device {device.serial}: lot {lot.lot_number} is quarantined",
            reason="device-unavailable",
        )
    if lot.expiry < procedure_date:
        raise PreconditionFailed(
            f"device {device.serial} expired on {lot.expiry.isoformat()}",
            reason="device-expired",
        )
    released = True
    if supply.released_field is not None:
        released = values.get(supply.released_field) is not False
    link = {
        "subject": subject.number,
        "subject_id": subject.id,
        "procedure_date": procedure_date.isoformat(),
        "released": released,
    }
    status = "implanted" if released else "quarantined"
    _move(
        uow,
        ctx,
        device,
        ["at_site"],
        status=status,
        subject_enc=ctx.cipher.encrypt(json.dumps(link, sort_keys=True)),
    )
    _event(
        uow,
        ctx,
        actor,
        device,
        "implanted" if released else "used_not_released",
        procedure_date,
        detail=link,
    )


def recall_subjects(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    lot_number: str,
    *,
    reason: str | None = None,
    password: str | None = None,
) -> RecallView:
    """Every subject who received a device of the lot, with site and procedure date (SUP-1).

    Only implant-arm subjects get devices, so the list tells arms: it is for roles that may
    see arms (the statistician and DSMB for every site, an implanting team for its own site).
    A field recall is a safety action, so the blinded study manager may read it too, with a
    reason and an e-signature (SIG-1). Every reading is an audited disclosure
    (``disclose_recall_list``: who, which lot, the reason and signature; not the list, nor
    how many subjects it names)."""
    signed = False
    with ctx.uow(readonly=True) as uow:
        study_by_id(uow, study_id)
        require(
            actor,
            study_id,
            [Role.STATISTICIAN, Role.DSMB, Role.IMPLANTER, Role.MANAGER],
            action="recall query",
        )
        lot = _lot(uow, study_id, lot_number)
        unblinded = trial_unblinded(uow, study_id)
        site_ids = [s.id for s in _visible_sites(uow, actor, study_id, None)]
        visible = [
            sid
            for sid in site_ids
            if _arms_visible(actor, study_id, sid, unblinded_trial=unblinded)
        ]
        needs_signature = not visible or len(visible) < len(site_ids)
    if needs_signature:
        if not actor.has(study_id, [Role.MANAGER]):
            raise PermissionDenied(
                "the recall list tells which subjects received an implant; it is read by roles "
                "that may see arms, or by the study manager with a reason and e-signature"
            )
        text = require_text(reason, "reason", "a reason for the recall disclosure")
        if not password:
            raise ValidationFailed(
                "the recall list discloses arms to a blinded role: re-enter your password to "
                "sign the disclosure",
                {"password": "required"},
            )
        meaning = f"Recall disclosure of subjects implanted from lot {lot_number}"
        reauthenticate(ctx, actor, password, meaning=meaning)
        signed = True
        with ctx.uow() as uow:
            lot = _lot(uow, study_id, lot_number)
            entries = _recall_entries(ctx, uow, lot, None)
            entry = disclosure_entry(
                ctx,
                actor,
                study_id,
                "recall_list",
                what=lot.lot_number,
                detail={"signature": {"name": actor.full_name, "meaning": meaning}},
            )
            entry.reason = text
            uow.record(entry)
            uow.commit()
            return RecallView(lot.lot_number, lot.status, entries, signed)
    with ctx.uow() as uow:
        lot = _lot(uow, study_id, lot_number)
        entries = _recall_entries(ctx, uow, lot, set(visible))
        # who read which lot's list, never how many subjects it named (AUD-1, RAND-6)
        uow.record(disclosure_entry(ctx, actor, study_id, "recall_list", what=lot.lot_number))
        uow.commit()
        return RecallView(lot.lot_number, lot.status, entries, signed)


def _recall_entries(
    ctx: ServiceContext, uow: UnitOfWork, lot: DeviceLotRow, site_ids: set[int] | None
) -> list[RecallEntry]:
    events = uow.session.execute(
        select(DeviceEventRow, DeviceRow.serial)
        .join(DeviceRow, DeviceRow.id == DeviceEventRow.device_id)
        .where(
            DeviceRow.lot_id == lot.id,
            DeviceEventRow.kind.in_(["implanted", "used_not_released"]),
        )
        .order_by(DeviceEventRow.id)
    ).all()
    out = []
    for event, serial in events:
        if site_ids is not None and event.site_id not in site_ids:
            continue
        assert event.detail_enc is not None
        link = json.loads(ctx.cipher.decrypt(event.detail_enc))
        out.append(
            RecallEntry(
                subject=str(link["subject"]),
                site=_site_code(uow, event.site_id) or "",
                procedure_date=str(link["procedure_date"]),
                serial=serial,
                released=bool(link["released"]),
            )
        )
    return sorted(out, key=lambda e: (e.site, e.subject))


# --------------------------------------------------------------------------- demo stock

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
        study = study_by_id(uow, study_id)
        if study.mode == "live":
            raise PreconditionFailed("demo stock is for demo and sandbox studies only")
        loaded = _supply_protocol(ctx, uow, study_id)
        if loaded.protocol.supply is None:
            return 0
        if uow.session.scalars(
            select(DeviceLotRow.id).where(
                DeviceLotRow.study_id == study_id, DeviceLotRow.lot_number == DEMO_LOT
            )
        ).first():
            return 0
        site = uow.session.scalars(
            select(SiteRow).where(SiteRow.study_id == study_id).order_by(SiteRow.id)
        ).first()
        if site is None:
            return 0
        site_code = site.code
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
