"""Device accountability (SUP-1, SUP-2): lots, shipments, site stock, returns, destruction,
recalls and re-supply warnings. Each route calls one service; the services decide access and
what a blinded caller sees."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from trialdesk.api.deps import ActorDep, CtxDep, StudyDep
from trialdesk.api.schemas import ReasonIn, plain
from trialdesk.api.schemas_devices import (
    DevicePublic,
    InventoryPublic,
    LotIn,
    LotPublic,
    RecallIn,
    RecallPublic,
    ReceiveIn,
    RemovalIn,
    ShipIn,
    ShipmentPublic,
    StockWarningPublic,
)
from trialdesk.services import supply

router = APIRouter(prefix="/studies/{study}/devices", tags=["devices"])

Lot = Annotated[str, Path(min_length=1, max_length=20, description="lot number")]
Serial = Annotated[str, Path(min_length=1, max_length=20, description="serial number")]
Shipment = Annotated[str, Path(min_length=1, max_length=40, description="shipment number")]


@router.get("/inventory", response_model=InventoryPublic)
def inventory(
    ctx: CtxDep,
    actor: ActorDep,
    study: StudyDep,
    site: Annotated[str | None, Query(min_length=1, max_length=40)] = None,
) -> dict[str, Any]:
    """Stock by site; implants apart and subject links only for callers who may see arms."""
    return plain(supply.site_inventory(ctx, actor, study.id, site))


@router.get("/stock-warnings", response_model=list[StockWarningPublic])
def stock_warnings(ctx: CtxDep, actor: ActorDep, study: StudyDep) -> list[dict[str, Any]]:
    """Supplied sites at or below the protocol's reorder level (SUP-2)."""
    return [plain(w) for w in supply.stock_warnings(ctx, actor, study.id)]


@router.get("/lots", response_model=list[LotPublic])
def lots(ctx: CtxDep, actor: ActorDep, study: StudyDep) -> list[dict[str, Any]]:
    return [plain(v) for v in supply.list_lots(ctx, actor, study.id)]


@router.post("/lots", response_model=LotPublic, status_code=201)
def register_lot(ctx: CtxDep, actor: ActorDep, study: StudyDep, body: LotIn) -> dict[str, Any]:
    """The study manager registers a lot and its devices at the depot (SUP-1)."""
    view = supply.register_lot(
        ctx,
        actor,
        study.id,
        lot_number=body.lot_number,
        model=body.model,
        gtin=body.gtin,
        manufacturer=body.manufacturer,
        expiry=body.expiry,
        serials=body.serials,
        udis=body.udis,
    )
    return plain(view)


@router.post("/lots/{lot}/quarantine", response_model=LotPublic)
def quarantine(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, lot: Lot, body: ReasonIn
) -> dict[str, Any]:
    """A recall or quality hold: the lot's devices can no longer be shipped or implanted."""
    return plain(supply.quarantine_lot(ctx, actor, study.id, lot, body.reason))


@router.post("/lots/{lot}/recall", response_model=RecallPublic)
def recall(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, lot: Lot, body: RecallIn
) -> dict[str, Any]:
    """Every subject implanted from the lot, with site and date. Roles that may see arms; the
    study manager with a reason and password (an audited, e-signed disclosure)."""
    view = supply.recall_subjects(
        ctx, actor, study.id, lot, reason=body.reason, password=body.password
    )
    return plain(view)


@router.get("/shipments", response_model=list[ShipmentPublic])
def shipments(ctx: CtxDep, actor: ActorDep, study: StudyDep) -> list[dict[str, Any]]:
    return [plain(s) for s in supply.list_shipments(ctx, actor, study.id)]


@router.post("/shipments", response_model=ShipmentPublic, status_code=201)
def ship(ctx: CtxDep, actor: ActorDep, study: StudyDep, body: ShipIn) -> dict[str, Any]:
    view = supply.ship_devices(ctx, actor, study.id, body.site, body.serials, body.shipped_on)
    return plain(view)


@router.post("/shipments/{shipment}/receive", response_model=ShipmentPublic)
def receive(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, shipment: Shipment, body: ReceiveIn
) -> dict[str, Any]:
    """The receiving site's coordinator confirms receipt."""
    return plain(supply.receive_shipment(ctx, actor, study.id, shipment, body.received_on))


@router.post("/{serial}/return", response_model=DevicePublic)
def return_device(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, serial: Serial, body: RemovalIn
) -> dict[str, Any]:
    return plain(supply.return_device(ctx, actor, study.id, serial, body.reason, body.on))


@router.post("/{serial}/destroy", response_model=DevicePublic)
def destroy_device(
    ctx: CtxDep, actor: ActorDep, study: StudyDep, serial: Serial, body: RemovalIn
) -> dict[str, Any]:
    return plain(supply.destroy_device(ctx, actor, study.id, serial, body.reason, body.on))
