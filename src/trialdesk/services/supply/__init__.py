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

The package, by part: :mod:`.views` (read models), :mod:`.lots`, :mod:`.shipments`,
:mod:`.site_stock` (returns, destruction, inventory, re-supply warnings), :mod:`.procedure`
(the index procedure's device, recalls), :mod:`.demo` (demo stock). States and moves are the
domain's (:mod:`trialdesk.domain.supply`); the SQL is in :mod:`trialdesk.store.supply`.
"""

from __future__ import annotations

from trialdesk.domain.supply import AT_SITES, LEFT_STOCK, STATUSES
from trialdesk.services.supply.common import DEVICE_USE_TABLES, READERS, SUPPLY
from trialdesk.services.supply.demo import (
    DEMO_EXPIRY,
    DEMO_GTIN,
    DEMO_LOT,
    DEMO_SERIALS,
    stock_demo_site,
)
from trialdesk.services.supply.lots import list_lots, quarantine_lot, register_lot
from trialdesk.services.supply.procedure import recall_subjects, use_for_procedure
from trialdesk.services.supply.shipments import list_shipments, receive_shipment, ship_devices
from trialdesk.services.supply.site_stock import (
    DEVICE_ORDERS,
    destroy_device,
    device_list,
    return_device,
    site_inventory,
    stock_warnings,
)
from trialdesk.services.supply.views import (
    DevicePage,
    DeviceView,
    InventoryView,
    LotView,
    RecallEntry,
    RecallView,
    ShipmentView,
    SiteStockView,
    StockWarning,
    UsedDeviceView,
)

__all__ = [
    "AT_SITES",
    "DEMO_EXPIRY",
    "DEMO_GTIN",
    "DEMO_LOT",
    "DEMO_SERIALS",
    "DEVICE_ORDERS",
    "DEVICE_USE_TABLES",
    "LEFT_STOCK",
    "READERS",
    "STATUSES",
    "SUPPLY",
    "DevicePage",
    "DeviceView",
    "InventoryView",
    "LotView",
    "RecallEntry",
    "RecallView",
    "ShipmentView",
    "SiteStockView",
    "StockWarning",
    "UsedDeviceView",
    "destroy_device",
    "device_list",
    "list_lots",
    "list_shipments",
    "quarantine_lot",
    "recall_subjects",
    "receive_shipment",
    "register_lot",
    "return_device",
    "ship_devices",
    "site_inventory",
    "stock_demo_site",
    "stock_warnings",
    "use_for_procedure",
]
