"""What the supply services answer (SUP-1, SUP-2): read models and how they are built from
the repositories' records. Who may see what is decided by the callers (see the package
docstring); these builders only shape."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from trialdesk.domain.supply import AT_SITES, blinded_place
from trialdesk.store.records import Device, DeviceLot, DeviceShipment
from trialdesk.store.uow import UnitOfWork


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
class DevicePage:
    """One page of the device list (issue 14) and the choices its filters may offer: only
    states the caller may see at some site, only sites and lots the caller's list holds."""

    items: list[DeviceView]
    total: int
    offset: int
    limit: int
    statuses: list[str]
    sites: list[str]
    lots: list[str]


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


def site_code(uow: UnitOfWork, site_id: int | None) -> str | None:
    return uow.sites.get(site_id).code if site_id is not None else None


def device_view(uow: UnitOfWork, device: Device, lot: DeviceLot) -> DeviceView:
    shipment = uow.supply.shipment_by_id(device.shipment_id) if device.shipment_id else None
    return DeviceView(
        serial=device.serial,
        udi=device.udi,
        lot=lot.lot_number,
        expiry=lot.expiry.isoformat(),
        status=device.status,
        site=site_code(uow, device.site_id),
        shipment=shipment.number if shipment else None,
    )


def lot_view(uow: UnitOfWork, lot: DeviceLot, *, see_all: bool, with_devices: bool) -> LotView:
    """The lot with its counts: by status when ``see_all`` (the caller may see every site's
    arms: decided by the caller, not by where the devices are, so the shape never changes),
    else by place (:func:`~trialdesk.domain.supply.blinded_place`)."""
    devices = uow.supply.devices_of_lot(lot.id)
    in_transit = uow.supply.in_transit_shipments(lot.study_id)
    counts: dict[str, int] = {}
    shown = []
    for device in devices:
        key = (
            device.status
            if see_all
            else blinded_place(
                device.status,
                shipped=device.shipment_id is not None,
                in_transit=device.shipment_id in in_transit,
            )
        )
        counts[key] = counts.get(key, 0) + 1
        if with_devices and key != AT_SITES:
            shown.append(device_view(uow, device, lot))
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


def shipment_view(uow: UnitOfWork, shipment: DeviceShipment) -> ShipmentView:
    return ShipmentView(
        number=shipment.number,
        site=site_code(uow, shipment.site_id) or "",
        status=shipment.status,
        shipped_on=shipment.shipped_on.isoformat(),
        shipped_by=shipment.shipped_by,
        received_on=shipment.received_on.isoformat() if shipment.received_on else None,
        received_by=shipment.received_by,
        serials=uow.supply.shipped_serials(shipment.id),
    )
