"""At the site (SUP-1, SUP-2): site staff return and destroy devices; stock by site and the
re-supply warnings, shaped by who may see the site's arms (RAND-6)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from trialdesk.domain.errors import NotFound, PreconditionFailed, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.domain.supply import (
    HELD_AT_SITE,
    LEFT_STOCK,
    STATUSES,
    USED,
    DeviceEventKind,
    DeviceMove,
    DeviceState,
    may_move,
)
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.common import require_text, site_today
from trialdesk.services.context import ServiceContext
from trialdesk.services.supply.common import (
    READERS,
    SUPPLY,
    arms_visible,
    audit,
    device_of,
    log_event,
    move,
    reorder_level,
    study,
    supply_protocol,
    trial_unblinded,
)
from trialdesk.services.supply.views import (
    DevicePage,
    DeviceView,
    InventoryView,
    SiteStockView,
    StockWarning,
    UsedDeviceView,
    device_view,
)
from trialdesk.store.records import Site
from trialdesk.store.uow import UnitOfWork


def _removal(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    serial: str,
    reason: str,
    on: dt.date | None,
    *,
    kind: DeviceState,
) -> DeviceView:
    returning = kind == DeviceState.RETURNED
    action = "return a device" if returning else "destroy a device"
    with ctx.uow() as uow:
        study(uow, study_id)
        # a role that may never return or destroy a device learns nothing of it, not even
        # whether it exists: the role comes first
        require(actor, study_id, (Role.IMPLANTER, *SUPPLY), action=action)
        device = device_of(uow, study_id, serial)
        if device.site_id is not None:
            require_site_visible(actor, study_id, device.site_id, f"device {serial}")
        site = uow.sites.get(device.site_id) if device.site_id is not None else None
        if site is None and not actor.has(study_id, SUPPLY):
            # a device back at the depot is known only to the implanting team of the site it
            # left; to anyone else it is like another site's device (returned? never shipped?)
            left = uow.supply.last_return_site(device.id)
            if left is None or not actor.has(study_id, [Role.IMPLANTER], site_id=left):
                raise NotFound(f"device {serial} not found")
        text = require_text(reason, "reason", "a reason")
        if site is not None:
            # The site's shelf belongs to its implanting team, who may see the site's arms:
            # anyone else would learn from the answer whether the device was implanted (SUP-2).
            require(actor, study_id, [Role.IMPLANTER], site_id=site.id, action=action)
            step = DeviceMove.RETURN if returning else DeviceMove.DESTROY_AT_SITE
            if not may_move(step, device.status):
                raise PreconditionFailed(
                    f"device {serial} is {device.status.replace('_', ' ')}; only a device held "
                    f"at the site can be {kind}",
                    reason="device-unavailable",
                )
            today = site_today(site, ctx.now())
        elif not returning and may_move(DeviceMove.DESTROY_AT_DEPOT, device.status):
            require(actor, study_id, SUPPLY, action=action)
            today = ctx.now().date()
            step = DeviceMove.DESTROY_AT_DEPOT
        else:
            where = "at a site" if returning else "at a site or the depot"
            raise PreconditionFailed(
                f"device {serial} is {device.status.replace('_', ' ')}; only a device held "
                f"{where} can be {kind}",
                reason="device-unavailable",
            )
        when = on or today
        if when > today:
            raise ValidationFailed(f"date {when.isoformat()} is in the future", {"on": "future"})
        old = device.status
        values: dict[str, Any] = {"site_id": None} if returning else {}
        device = move(uow, ctx, device, step, **values)
        log_event(
            uow,
            ctx,
            actor,
            device,
            DeviceEventKind(kind.value),
            when,
            reason=text,
            site_id=site.id if site else None,
        )
        audit(
            uow,
            ctx,
            actor,
            study_id,
            "return_device" if returning else "destroy_device",
            "device",
            device.serial,
            old={"status": old, "site": site.code if site else None},
            new={"status": kind.value, "on": when.isoformat()},
            reason=text,
        )
        uow.commit()
        return device_view(uow, device, uow.supply.lot_by_id(device.lot_id))


def return_device(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    serial: str,
    reason: str,
    returned_on: dt.date | None = None,
) -> DeviceView:
    """Site staff send a device back to the sponsor (unused, quarantined or recaptured)."""
    return _removal(ctx, actor, study_id, serial, reason, returned_on, kind=DeviceState.RETURNED)


def destroy_device(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    serial: str,
    reason: str,
    destroyed_on: dt.date | None = None,
) -> DeviceView:
    """Site staff destroy a device held at their site; the study manager one at the depot."""
    return _removal(ctx, actor, study_id, serial, reason, destroyed_on, kind=DeviceState.DESTROYED)


def _stock(
    ctx: ServiceContext,
    uow: UnitOfWork,
    loaded: LoadedProtocol,
    site: Site,
    today: dt.date,
    *,
    arms_visible: bool,
) -> SiteStockView:
    rows = uow.supply.devices_at_site(site.id)
    received = uow.supply.count_events(site.id, DeviceEventKind.RECEIVED)
    returned = uow.supply.count_events(site.id, DeviceEventKind.RETURNED)
    by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
    on_hand = expired = 0
    devices: list[DeviceView] = []
    used: list[UsedDeviceView] = []
    for device, lot in rows:
        by_status[device.status] += 1
        if device.status == DeviceState.AT_SITE:
            if lot.expiry < today:
                expired += 1
            else:
                on_hand += 1
        if device.status in HELD_AT_SITE:
            devices.append(device_view(uow, device, lot))
        if arms_visible and device.status in USED and device.subject_enc:
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
    by_status[DeviceState.RETURNED] = returned
    level = reorder_level(loaded, site.code)
    if not arms_visible:
        # only what moves by shipment: received and in transit never change when a device
        # is used, on hand, quarantined and "left stock" do (SUP-2, RAND-6)
        return SiteStockView(
            site=site.code,
            name=site.name,
            on_hand=None,
            quarantined=None,
            expired=None,
            in_transit=by_status[DeviceState.IN_TRANSIT],
            received=received,
            left_stock=None,
            reorder_level=level,
            low_stock=None,
            devices=[d for d in devices if d.status == DeviceState.IN_TRANSIT],
        )
    left = sum(by_status[state] for state in LEFT_STOCK)
    return SiteStockView(
        site=site.code,
        name=site.name,
        on_hand=on_hand,
        quarantined=by_status[DeviceState.QUARANTINED],
        expired=expired,
        in_transit=by_status[DeviceState.IN_TRANSIT],
        received=received,
        left_stock=left,
        reorder_level=level,
        low_stock=loaded.protocol.supply is not None and on_hand <= level,
        devices=devices,
        by_status={state.value: by_status[state] for state in LEFT_STOCK},
        used=used,
    )


def visible_sites(
    uow: UnitOfWork, actor: Actor, study_id: int, site_code: str | None
) -> list[Site]:
    """The named site (refused when the caller may not see it), or every site the caller
    sees, by code."""
    if site_code is not None:
        site = uow.sites.by_code(study_id, site_code)
        if site is None:
            raise NotFound(f"site {site_code} not found")
        require_site_visible(actor, study_id, site.id, f"site {site_code}")
        return [site]
    return [s for s in uow.sites.of_study(study_id) if actor.sees_site(study_id, s.id)]


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
        study(uow, study_id)
        require(actor, study_id, READERS, action="read device inventory")
        loaded = supply_protocol(ctx, uow, study_id)
        unblinded = trial_unblinded(uow, study_id)
        sites = visible_sites(uow, actor, study_id, site_code)
        if site_code is None:
            stocked = uow.supply.stocked_sites(study_id)
            sites = [s for s in sites if s.id in stocked]
        views = []
        all_visible = True
        for site in sites:
            visible = arms_visible(actor, study_id, site.id, unblinded_trial=unblinded)
            all_visible = all_visible and visible
            today = site_today(site, ctx.now())
            views.append(_stock(ctx, uow, loaded, site, today, arms_visible=visible))
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
        study(uow, study_id)
        require(actor, study_id, READERS, action="read stock warnings")
        loaded = supply_protocol(ctx, uow, study_id)
        if loaded.protocol.supply is None:
            return []
        supplied = uow.supply.supplied_sites(study_id)
        unblinded = trial_unblinded(uow, study_id)
        out = []
        for site in visible_sites(uow, actor, study_id, None):
            if not site.active or site.id not in supplied:
                continue
            if not arms_visible(actor, study_id, site.id, unblinded_trial=unblinded):
                continue
            today = site_today(site, ctx.now())
            usable = uow.supply.count_at_site(site.id, DeviceState.AT_SITE, usable_on=today)
            transit = uow.supply.count_at_site(site.id, DeviceState.IN_TRANSIT)
            level = reorder_level(loaded, site.code)
            if usable <= level:
                out.append(
                    StockWarning(
                        site=site.code,
                        name=site.name,
                        on_hand=usable,
                        in_transit=transit,
                        reorder_level=level,
                    )
                )
        return out


# --------------------------------------------------------------------------- the device list

DEVICE_ORDERS = ("serial", "lot", "expiry", "site", "status")
"""How the device list may be sorted (issue 14); ties are broken by serial."""


def device_list(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    search: str | None = None,
    site: str | None = None,
    status: str | None = None,
    lot: str | None = None,
    order: str = "serial",
    descending: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> DevicePage:
    """The devices listed on the inventory page (issue 14, SUP-2), searched (part of the
    serial or lot number), filtered, sorted and paged in the repository. Exactly the devices
    :func:`site_inventory` lists: at a site whose arms the caller may see, those held there
    (in transit, at site, quarantined); elsewhere only those in transit. A state is offered
    and accepted as a filter only when the caller may see it at some site, and the repository
    counts and orders only the devices listed, so a filter, a count or an order never tells a
    blinded caller what was implanted (RAND-6)."""
    if limit < 1 or limit > 500 or offset < 0:
        raise ValidationFailed("limit must be 1-500 and offset ≥ 0", {"limit": "out of range"})
    if order not in DEVICE_ORDERS:
        raise ValidationFailed(
            f"unknown order {order!r}; one of {', '.join(DEVICE_ORDERS)}", {"order": "unknown"}
        )
    with ctx.uow(readonly=True) as uow:
        study(uow, study_id)
        require(actor, study_id, READERS, action="read device inventory")
        unblinded = trial_unblinded(uow, study_id)
        stocked = uow.supply.stocked_sites(study_id)
        sites = [s for s in visible_sites(uow, actor, study_id, None) if s.id in stocked]
        visible: dict[int, tuple[str, ...]] = {}
        for each in sites:
            held = arms_visible(actor, study_id, each.id, unblinded_trial=unblinded)
            states = HELD_AT_SITE if held else (DeviceState.IN_TRANSIT,)
            visible[each.id] = tuple(state.value for state in states)
        offered = [
            state.value
            for state in HELD_AT_SITE
            if any(state.value in states for states in visible.values())
        ]
        if status is not None and status not in offered:
            raise ValidationFailed(
                f"status must be one of {', '.join(offered) or 'none'}", {"status": "not offered"}
            )
        site_id = None
        if site is not None:
            chosen = next((s for s in sites if s.code == site), None)
            if chosen is None:
                raise ValidationFailed(f"site {site!r} is not in your list", {"site": "unknown"})
            site_id = chosen.id
        rows, total = uow.supply.device_page(
            study_id,
            visible=visible,
            search=(search or "").strip() or None,
            site_id=site_id,
            status=status,
            lot_number=lot or None,
            order=order,
            descending=descending,
            offset=offset,
            limit=limit,
        )
        return DevicePage(
            items=[device_view(uow, device, each_lot) for device, each_lot in rows],
            total=total,
            offset=offset,
            limit=limit,
            statuses=offered,
            sites=[s.code for s in sites],
            lots=_listed_lots(uow, study_id, visible),
        )


def _listed_lots(uow: UnitOfWork, study_id: int, visible: dict[int, tuple[str, ...]]) -> list[str]:
    """The lot filter's choices: lots of the devices the caller may list, so a site user is
    never offered another site's lots (ACC-1) nor a lot whose only devices it may not see."""
    rows, _total = uow.supply.device_page(
        study_id,
        visible=visible,
        search=None,
        site_id=None,
        status=None,
        lot_number=None,
        order="lot",
        descending=False,
        offset=0,
        limit=1_000_000,
    )
    return sorted({each_lot.lot_number for _device, each_lot in rows})
