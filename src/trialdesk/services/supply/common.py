"""Helpers the supply services share: roles, the supply audit stream, the guarded move, the
device log, look-ups that refuse with "not found"."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from trialdesk.domain.errors import Conflict, NotFound, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.domain.supply import DeviceMove, sources, target
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor
from trialdesk.services.blinding import may_see_arm
from trialdesk.services.common import loaded_protocol, version_in_force
from trialdesk.services.context import ServiceContext
from trialdesk.store.records import Device, DeviceLot, Study
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
DEVICE_USE_TABLES = ("devices", "device_events")
"""Tables whose rows tell when a device was used; a blinded export leaves them out."""
PROCEDURE_RECORD = "index_procedure_device"
_PI = re.compile(r"^[!-~]{1,20}$")


def study(uow: UnitOfWork, study_id: int) -> Study:
    found = uow.studies.get(study_id)
    if found is None:
        raise NotFound(f"study {study_id} not found")
    return found


def audit(
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
    uow.audit.stream(
        f"supply:{study_id}",
        actor.label,
        action,
        at=ctx.now(),
        entity=entity,
        entity_id=entity_id,
        study_id=study_id,
        old=old,
        new=new,
        reason=reason,
    )


def log_event(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    device: Device,
    kind: str,
    on: dt.date,
    *,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
    site_id: int | None = None,
) -> None:
    """One row of the device's log; ``site_id`` names the site a device left (a return)."""
    uow.supply.add_event(
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


def move(
    uow: UnitOfWork,
    ctx: ServiceContext,
    device: Device,
    step: DeviceMove,
    **values: Any,
) -> Device:
    """The device's move by the domain's table (its sources and target state), as a guarded
    update: two users moving the same device at once cannot both win."""
    moved = uow.supply.move(
        device, sources(step), {"status": target(step).value, "updated_at": ctx.now(), **values}
    )
    if moved is None:
        raise Conflict(f"device {device.serial} was changed by someone else; reload and try again")
    return moved


def lot_of(uow: UnitOfWork, study_id: int, lot_number: str) -> DeviceLot:
    lot = uow.supply.lot(study_id, lot_number)
    if lot is None:
        raise NotFound(f"device lot {lot_number} not found")
    return lot


def device_of(uow: UnitOfWork, study_id: int, serial: str) -> Device:
    device = uow.supply.device(study_id, serial)
    if device is None:
        raise NotFound(f"device {serial} not found")
    return device


def check_pi(value: str, field: str, what: str) -> str:
    """A GS1 production identifier (lot or serial): 1-20 printable characters, no spaces."""
    text = (value or "").strip()
    if not _PI.fullmatch(text):
        raise ValidationFailed(
            f"{what} {value!r} must be 1 to 20 printable characters without spaces (GS1)",
            {field: "1-20 printable characters"},
        )
    return text


def supply_protocol(ctx: ServiceContext, uow: UnitOfWork, study_id: int) -> LoadedProtocol:
    return loaded_protocol(ctx, uow, version_in_force(uow, study_id))


def reorder_level(loaded: LoadedProtocol, site_code: str) -> int:
    supply = loaded.protocol.supply
    return supply.reorder_level_for(site_code) if supply is not None else 0


def trial_unblinded(uow: UnitOfWork, study_id: int) -> bool:
    found = uow.studies.get(study_id)
    return found is not None and found.trial_unblinded_at is not None


def arms_visible(actor: Actor, study_id: int, site_id: int, *, unblinded_trial: bool) -> bool:
    return may_see_arm(
        actor, study_id, site_id, subject_unblinded=False, trial_unblinded=unblinded_trial
    )
