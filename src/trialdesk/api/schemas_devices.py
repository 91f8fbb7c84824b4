"""Request and response models of the device accountability routes (SUP-1, SUP-2).

The responses mirror the services' views field for field: ``on_hand``, ``quarantined``,
``expired``, ``left_stock``, ``low_stock``, ``by_status`` and ``used`` are null unless the
service filled them for a caller who may see the site's arms (SUP-2, RAND-6)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from trialdesk.api.schemas import Text, _In

Identifier = Field(min_length=1, max_length=20, description="GS1 (10)/(21): 1-20 characters")


class LotIn(_In):
    lot_number: str = Identifier
    model: str = Field(min_length=1, max_length=120)
    gtin: str = Field(min_length=14, max_length=14, description="GTIN-14, the UDI's (01)")
    manufacturer: str = Field(min_length=1, max_length=200)
    expiry: dt.date
    serials: list[str] = Field(default_factory=list, max_length=1000)
    udis: list[str] = Field(
        default_factory=list, max_length=1000, description="GS1 UDIs agreeing with the lot"
    )


class ShipIn(_In):
    site: str = Field(min_length=1, max_length=40)
    serials: list[str] = Field(min_length=1, max_length=1000)
    shipped_on: dt.date | None = None


class ReceiveIn(_In):
    received_on: dt.date | None = Field(default=None, description="default: today at the site")


class RemovalIn(_In):
    reason: str = Text
    on: dt.date | None = Field(default=None, description="default: today")


class RecallIn(_In):
    reason: str | None = Field(
        default=None, max_length=4000, description="study manager only: why the list is needed"
    )
    password: str | None = Field(
        default=None, max_length=1024, description="study manager only: e-signature (SIG-1)"
    )


class DevicePublic(BaseModel):
    serial: str
    udi: str
    lot: str
    expiry: str
    status: str
    site: str | None
    shipment: str | None


class LotPublic(BaseModel):
    lot_number: str
    model: str
    gtin: str
    manufacturer: str
    expiry: str
    status: str
    quarantine_reason: str | None
    counts: dict[str, int]
    devices: list[DevicePublic]


class ShipmentPublic(BaseModel):
    number: str
    site: str
    status: str
    shipped_on: str
    shipped_by: str
    received_on: str | None
    received_by: str | None
    serials: list[str]


class UsedDevicePublic(BaseModel):
    serial: str
    lot: str
    subject: str
    procedure_date: str
    released: bool


class SiteStockPublic(BaseModel):
    site: str
    name: str
    on_hand: int | None = Field(description="null for a caller who may not see the site's arms")
    quarantined: int | None
    expired: int | None
    in_transit: int
    received: int
    left_stock: int | None
    reorder_level: int
    low_stock: bool | None
    devices: list[DevicePublic] = Field(description="only those in transit when blinded")
    by_status: dict[str, int] | None = None
    used: list[UsedDevicePublic] | None = None


class InventoryPublic(BaseModel):
    as_of: str
    sites: list[SiteStockPublic]
    per_arm_usage_visible: bool


class StockWarningPublic(BaseModel):
    site: str
    name: str
    on_hand: int
    in_transit: int
    reorder_level: int


class RecallEntryPublic(BaseModel):
    subject: str
    site: str
    procedure_date: str
    serial: str
    released: bool


class RecallPublic(BaseModel):
    lot_number: str
    lot_status: str
    subjects: list[RecallEntryPublic]
    disclosed_by_signature: bool
