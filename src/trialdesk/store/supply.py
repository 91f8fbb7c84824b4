"""Device supply (SUP-1, SUP-2): lots, shipments, serialised devices and their log.

The services of :mod:`trialdesk.services.supply` use these through ``uow.supply``; states and
moves are the domain's (:mod:`trialdesk.domain.supply`). A device's state changes only through
:meth:`SqlSupply.move`, the guarded update: two users moving the same device at once cannot
both win.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import and_, false, func, insert, or_, select, update
from sqlalchemy.orm import Session

from trialdesk.store.records import Device, DeviceLot, DeviceShipment, DeviceUse
from trialdesk.store.sites import SITE
from trialdesk.store.sql import Columns, Sql, plain_update, table_of
from trialdesk.store.tables import DeviceEventRow, DeviceLotRow, DeviceRow, DeviceShipmentRow

LOT = Columns(table_of(DeviceLotRow), DeviceLot)
SHIPMENT = Columns(table_of(DeviceShipmentRow), DeviceShipment)
DEVICE = Columns(table_of(DeviceRow), Device)
_L = LOT.table
_P = SHIPMENT.table
_D = DEVICE.table
_E = table_of(DeviceEventRow)

_S = SITE.table

_DEVICE_KEYS = {
    "serial": _D.c.serial,
    "lot": _L.c.lot_number,
    "expiry": _L.c.expiry,
    "site": _S.c.code,
    "status": _D.c.status,
}
"""How the device list may be sorted (issue 14); ties are broken by serial."""

USE_KINDS = ("implanted", "used_not_released")
"""Log kinds written when a procedure used a device."""


class SqlSupply:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    # --- lots

    def lot(self, study_id: int, lot_number: str) -> DeviceLot | None:
        stmt = LOT.select().where(_L.c.study_id == study_id, _L.c.lot_number == lot_number)
        return LOT.maybe(self._run(stmt).first())

    def lot_by_id(self, lot_id: int) -> DeviceLot:
        return LOT.of(self._run(LOT.select().where(_L.c.id == lot_id)).one())

    def lots(self, study_id: int) -> list[DeviceLot]:
        stmt = LOT.select().where(_L.c.study_id == study_id).order_by(_L.c.lot_number)
        return [LOT.of(row) for row in self._run(stmt)]

    def add_lot(self, **values: Any) -> DeviceLot:
        return LOT.of(self._run(insert(_L).values(**values).returning(*LOT.columns)).one())

    def update_lot(self, lot: DeviceLot, values: Mapping[str, Any]) -> DeviceLot:
        return plain_update(self._run, LOT, lot.id, values)

    # --- devices

    def device(self, study_id: int, serial: str) -> Device | None:
        stmt = DEVICE.select().where(_D.c.study_id == study_id, _D.c.serial == serial)
        return DEVICE.maybe(self._run(stmt).first())

    def registered(self, study_id: int, serials: Collection[str]) -> list[str]:
        """Which of ``serials`` the study already has."""
        stmt = select(_D.c.serial).where(
            _D.c.study_id == study_id, _D.c.serial.in_(sorted(serials))
        )
        return list(self._run(stmt).scalars())

    def add_device(self, **values: Any) -> Device:
        return DEVICE.of(self._run(insert(_D).values(**values).returning(*DEVICE.columns)).one())

    def devices_of_lot(self, lot_id: int, statuses: Collection[str] | None = None) -> list[Device]:
        stmt = DEVICE.select().where(_D.c.lot_id == lot_id)
        if statuses is not None:
            stmt = stmt.where(_D.c.status.in_(sorted(statuses)))
        return [DEVICE.of(row) for row in self._run(stmt.order_by(_D.c.serial))]

    def devices_of_shipment(self, shipment_id: int) -> list[Device]:
        stmt = DEVICE.select().where(_D.c.shipment_id == shipment_id).order_by(_D.c.serial)
        return [DEVICE.of(row) for row in self._run(stmt)]

    def devices_at_site(self, site_id: int) -> list[tuple[Device, DeviceLot]]:
        """Devices assigned to the site (any state), each with its lot, by serial."""
        stmt = (
            select(*DEVICE.columns, *LOT.columns)
            .select_from(_D)
            .join(_L, _L.c.id == _D.c.lot_id)
            .where(_D.c.site_id == site_id)
            .order_by(_D.c.serial)
        )
        return [(DEVICE.of(row), LOT.of(row, DEVICE.width)) for row in self._run(stmt)]

    def device_page(
        self,
        study_id: int,
        *,
        visible: Mapping[int, Collection[str]],
        search: str | None,
        site_id: int | None,
        status: str | None,
        lot_number: str | None,
        order: str,
        descending: bool,
        offset: int,
        limit: int,
    ) -> tuple[list[tuple[Device, DeviceLot]], int]:
        """One page of the devices the caller may see (issue 14): ``visible`` maps each site
        to the states listed there, so nothing else is counted, filtered or ordered; ``search``
        is a part of the serial or lot number. With the total before paging."""
        shown = [
            and_(_D.c.site_id == site, _D.c.status.in_(sorted(states)))
            for site, states in sorted(visible.items())
            if states
        ]
        where = [_D.c.study_id == study_id, or_(*shown) if shown else false()]
        if search:
            where.append(
                or_(
                    _D.c.serial.contains(search, autoescape=True),
                    _L.c.lot_number.contains(search, autoescape=True),
                )
            )
        if site_id is not None:
            where.append(_D.c.site_id == site_id)
        if status is not None:
            where.append(_D.c.status == status)
        if lot_number is not None:
            where.append(_L.c.lot_number == lot_number)
        joined = _D.join(_L, _L.c.id == _D.c.lot_id).join(_S, _S.c.id == _D.c.site_id)
        total = self._run(select(func.count()).select_from(joined).where(*where)).scalar()
        key = _DEVICE_KEYS[order]
        serial = _D.c.serial.desc() if descending else _D.c.serial
        keys = [serial] if key is _D.c.serial else [key.desc() if descending else key, serial]
        stmt = (
            select(*DEVICE.columns, *LOT.columns)
            .select_from(joined)
            .where(*where)
            .order_by(*keys)
            .offset(offset)
            .limit(limit)
        )
        rows = [(DEVICE.of(row), LOT.of(row, DEVICE.width)) for row in self._run(stmt)]
        return rows, int(total or 0)

    def count_at_site(self, site_id: int, status: str, *, usable_on: dt.date | None = None) -> int:
        """Devices of the site in ``status``; with ``usable_on``, only lots not expired then."""
        stmt = (
            select(func.count())
            .select_from(_D)
            .join(_L, _L.c.id == _D.c.lot_id)
            .where(_D.c.site_id == site_id, _D.c.status == status)
        )
        if usable_on is not None:
            stmt = stmt.where(_L.c.expiry >= usable_on)
        return int(self._run(stmt).scalar_one())

    def move(
        self, device: Device, sources: Collection[str], values: Mapping[str, Any]
    ) -> Device | None:
        """The guarded status change: only while the device is at the version read and in
        one of ``sources``; None when someone else changed it meanwhile."""
        stmt = (
            update(_D)
            .where(
                _D.c.id == device.id,
                _D.c.version == device.version,
                _D.c.status.in_(sorted(sources)),
            )
            .values(version=device.version + 1, **values)
            .returning(*DEVICE.columns)
        )
        return DEVICE.maybe(self._run(stmt).first())

    # --- the device log

    def add_event(self, **values: Any) -> None:
        self._run(insert(_E).values(**values))

    def count_events(self, site_id: int, kind: str) -> int:
        stmt = (
            select(func.count()).select_from(_E).where(_E.c.site_id == site_id, _E.c.kind == kind)
        )
        return int(self._run(stmt).scalar_one())

    def last_return_site(self, device_id: int) -> int | None:
        """The site the device was last returned from (None: never returned)."""
        stmt = (
            select(_E.c.site_id)
            .where(_E.c.device_id == device_id, _E.c.kind == "returned")
            .order_by(_E.c.id.desc())
        )
        return self._run(stmt).scalars().first()

    def stocked_sites(self, study_id: int) -> set[int]:
        """Sites that hold or have held a device of the study."""
        held = select(_D.c.site_id).where(_D.c.study_id == study_id).distinct()
        logged = select(_E.c.site_id).where(_E.c.study_id == study_id).distinct()
        ids = set(self._run(held).scalars()) | set(self._run(logged).scalars())
        return {i for i in ids if i is not None}

    def uses(self, lot_id: int) -> list[DeviceUse]:
        """Every procedure use of a device of the lot, in the order recorded."""
        stmt = (
            select(_D.c.serial, _E.c.site_id, _E.c.detail_enc)
            .select_from(_E)
            .join(_D, _D.c.id == _E.c.device_id)
            .where(_D.c.lot_id == lot_id, _E.c.kind.in_(USE_KINDS))
            .order_by(_E.c.id)
        )
        return [DeviceUse(serial, site_id, detail) for serial, site_id, detail in self._run(stmt)]

    # --- shipments

    def shipment(self, study_id: int, number: str) -> DeviceShipment | None:
        stmt = SHIPMENT.select().where(_P.c.study_id == study_id, _P.c.number == number)
        return SHIPMENT.maybe(self._run(stmt).first())

    def shipment_by_id(self, shipment_id: int) -> DeviceShipment:
        return SHIPMENT.of(self._run(SHIPMENT.select().where(_P.c.id == shipment_id)).one())

    def shipments(self, study_id: int) -> list[DeviceShipment]:
        stmt = SHIPMENT.select().where(_P.c.study_id == study_id).order_by(_P.c.id)
        return [SHIPMENT.of(row) for row in self._run(stmt)]

    def count_shipments(self, study_id: int) -> int:
        stmt = select(func.count()).select_from(_P).where(_P.c.study_id == study_id)
        return int(self._run(stmt).scalar_one())

    def add_shipment(self, **values: Any) -> DeviceShipment:
        stmt = insert(_P).values(**values).returning(*SHIPMENT.columns)
        return SHIPMENT.of(self._run(stmt).one())

    def update_shipment(
        self, shipment: DeviceShipment, values: Mapping[str, Any]
    ) -> DeviceShipment:
        return plain_update(self._run, SHIPMENT, shipment.id, values)

    def in_transit_shipments(self, study_id: int) -> set[int]:
        stmt = select(_P.c.id).where(_P.c.study_id == study_id, _P.c.status == "in_transit")
        return set(self._run(stmt).scalars())

    def supplied_sites(self, study_id: int) -> set[int]:
        """Sites ever shipped to."""
        return set(self._run(select(_P.c.site_id).where(_P.c.study_id == study_id)).scalars())

    def shipped_serials(self, shipment_id: int) -> list[str]:
        """Serials that left on the shipment (from the log: a device returned since counts)."""
        stmt = (
            select(_D.c.serial)
            .join(_E, _E.c.device_id == _D.c.id)
            .where(_E.c.shipment_id == shipment_id, _E.c.kind == "shipped")
            .order_by(_D.c.serial)
        )
        return list(self._run(stmt).scalars())
