"""Device pages (SUP-1, SUP-2): the site's inventory (receive a shipment, return or destroy a
device) and the study manager's supply page (lots, shipments, quarantine, re-supply warnings,
the recall list). Each handler calls one service; what a blinded reader sees is the service's
decision (RAND-6)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from trialdesk.domain.errors import (
    AuthenticationFailed,
    PermissionDenied,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.roles import Role
from trialdesk.services import supply
from trialdesk.web.forms import field_date, field_text, or_refusal
from trialdesk.web.list_pages import DIRECTIONS, sort_links
from trialdesk.web.listing import choice, pager, paging, text
from trialdesk.web.render import render
from trialdesk.web.session import Web, post_form, redirect, web_session

router = APIRouter()

Refusal = (ValidationFailed, PreconditionFailed)
SignedRefusal = (ValidationFailed, PreconditionFailed, AuthenticationFailed)
"""A wrong e-signature password is shown on the page, not treated as a lost session."""


def _device_list(request: Request, web: Web) -> dict[str, Any]:
    """The device list's page (issue 14): search, filters, sort and page are the service's;
    the page passes the choices on (a state the role may not see is neither offered nor
    accepted)."""
    order = choice(request, "order", supply.DEVICE_ORDERS, "serial")
    direction = choice(request, "dir", DIRECTIONS, "asc")
    filters = {
        "q": text(request, "q", 40),
        "site": text(request, "site", 20),
        "status": text(request, "status", 20),
        "lot": text(request, "lot", 40),
        "order": order,
        "dir": direction,
    }
    at = paging(request)
    found = supply.device_list(
        web.ctx,
        web.actor,
        web.study_id,
        search=filters["q"] or None,
        site=filters["site"] or None,
        status=filters["status"] or None,
        lot=filters["lot"] or None,
        order=order,
        descending=direction == "desc",
        offset=at.offset,
        limit=at.per_page,
    )
    return {
        "found": found,
        "filters": filters,
        "sorts": sort_links("/devices", filters, supply.DEVICE_ORDERS),
        "p": pager("/devices", filters, at, found.total),
    }


def _inventory_page(request: Request, web: Web, status: int = 200, **extra: Any) -> Response:
    inventory = supply.site_inventory(web.ctx, web.actor, web.study_id)
    listing = _device_list(request, web)
    shipments, _refused = or_refusal(
        lambda: supply.list_shipments(web.ctx, web.actor, web.study_id)
    )
    warnings = supply.stock_warnings(web.ctx, web.actor, web.study_id)
    return render(
        request,
        "devices.html",
        web,
        status=status,
        inventory=inventory,
        shipments=[s for s in shipments or [] if s.status == "in_transit"],
        warnings=warnings,
        may_receive=web.actor.has(web.study_id, [Role.COORDINATOR]),
        may_remove=web.actor.has(web.study_id, [Role.IMPLANTER]),
        **listing,
        **extra,
    )


@router.get("/devices", include_in_schema=False)
def inventory_page(request: Request) -> Response:
    return _inventory_page(request, web_session(request))


async def _site_action(request: Request, call: Any) -> Response:
    web, form = await post_form(request)
    try:
        call(web, form)
    except Refusal as exc:
        return _inventory_page(request, web, status=422, message=exc.message)
    return redirect("/devices", flash="Done: the inventory below shows the change.")


def _optional_date(form: Any, name: str) -> Any:
    return field_date(form, name) if field_text(form, name) else None


@router.post("/devices/receive", include_in_schema=False)
async def receive(request: Request) -> Response:
    return await _site_action(
        request,
        lambda web, form: supply.receive_shipment(
            web.ctx,
            web.actor,
            web.study_id,
            field_text(form, "shipment"),
            _optional_date(form, "on"),
        ),
    )


@router.post("/devices/return", include_in_schema=False)
async def return_device(request: Request) -> Response:
    return await _site_action(
        request,
        lambda web, form: supply.return_device(
            web.ctx, web.actor, web.study_id, field_text(form, "serial"), field_text(form, "reason")
        ),
    )


@router.post("/devices/destroy", include_in_schema=False)
async def destroy_device(request: Request) -> Response:
    return await _site_action(
        request,
        lambda web, form: supply.destroy_device(
            web.ctx, web.actor, web.study_id, field_text(form, "serial"), field_text(form, "reason")
        ),
    )


# --------------------------------------------------------------------------- the manager


def _require_supply_page(web: Web) -> None:
    if not web.actor.has(web.study_id, [Role.MANAGER]):
        raise PermissionDenied("the supply page is the study manager's")


def _supply_page(request: Request, web: Web, status: int = 200, **extra: Any) -> Response:
    _require_supply_page(web)
    return render(
        request,
        "supply.html",
        web,
        status=status,
        lots=supply.list_lots(web.ctx, web.actor, web.study_id),
        shipments=supply.list_shipments(web.ctx, web.actor, web.study_id),
        warnings=supply.stock_warnings(web.ctx, web.actor, web.study_id),
        inventory=supply.site_inventory(web.ctx, web.actor, web.study_id),
        **extra,
    )


@router.get("/supply", include_in_schema=False)
def supply_page(request: Request) -> Response:
    return _supply_page(request, web_session(request))


def _lines(text: str) -> list[str]:
    return [p.strip() for p in text.replace(",", "\n").splitlines() if p.strip()]


async def _supply_action(request: Request, call: Any) -> Response:
    web, form = await post_form(request)
    _require_supply_page(web)  # before the action: a recall read is audited as a disclosure
    try:
        result = call(web, form)
    except SignedRefusal as exc:
        return _supply_page(request, web, status=422, message=exc.message)
    if isinstance(result, supply.RecallView):
        return _supply_page(request, web, recall=result)
    return redirect("/supply", flash="Done: the supply page below shows the change.")


@router.post("/supply/lots", include_in_schema=False)
async def add_lot(request: Request) -> Response:
    return await _supply_action(
        request,
        lambda web, form: supply.register_lot(
            web.ctx,
            web.actor,
            web.study_id,
            lot_number=field_text(form, "lot_number"),
            model=field_text(form, "model"),
            gtin=field_text(form, "gtin"),
            manufacturer=field_text(form, "manufacturer"),
            expiry=field_date(form, "expiry"),
            serials=_lines(field_text(form, "serials")),
        ),
    )


@router.post("/supply/ship", include_in_schema=False)
async def ship(request: Request) -> Response:
    return await _supply_action(
        request,
        lambda web, form: supply.ship_devices(
            web.ctx,
            web.actor,
            web.study_id,
            field_text(form, "site"),
            _lines(field_text(form, "serials")),
        ),
    )


@router.post("/supply/quarantine", include_in_schema=False)
async def quarantine(request: Request) -> Response:
    return await _supply_action(
        request,
        lambda web, form: supply.quarantine_lot(
            web.ctx,
            web.actor,
            web.study_id,
            field_text(form, "lot_number"),
            field_text(form, "reason"),
        ),
    )


@router.post("/supply/recall", include_in_schema=False)
async def recall(request: Request) -> Response:
    return await _supply_action(
        request,
        lambda web, form: supply.recall_subjects(
            web.ctx,
            web.actor,
            web.study_id,
            field_text(form, "lot_number"),
            reason=field_text(form, "reason"),
            password=str(form.get("password") or ""),
        ),
    )
