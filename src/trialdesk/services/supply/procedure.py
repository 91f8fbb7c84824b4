"""The index procedure's device (SUP-1, RAND-6) and the recall list built from it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from trialdesk.domain.errors import PermissionDenied, PreconditionFailed, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.domain.supply import (
    DeviceEventKind,
    DeviceMove,
    DeviceState,
    LotStatus,
    may_move,
)
from trialdesk.domain.udi import parse_udi
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require
from trialdesk.services.audit_trail import disclosure_entry
from trialdesk.services.auth import reauthenticate
from trialdesk.services.common import require_text, site_today
from trialdesk.services.context import ServiceContext
from trialdesk.services.supply.common import (
    PROCEDURE_RECORD,
    arms_visible,
    audit,
    log_event,
    lot_of,
    move,
    study,
    trial_unblinded,
)
from trialdesk.services.supply.site_stock import visible_sites
from trialdesk.services.supply.views import RecallEntry, RecallView, site_code
from trialdesk.store.records import Device, DeviceLot, Subject
from trialdesk.store.uow import UnitOfWork


def _named_device(
    uow: UnitOfWork, study_id: int, named: str, field: str
) -> tuple[Device, DeviceLot]:
    """The device the procedure form names by UDI (which must match the device's record) or
    by serial number; a refusal names the form's field."""
    if "(" in named:
        udi = parse_udi(named, field)
        if udi.serial is None:
            raise ValidationFailed(f"UDI {named} has no (21) serial number", {field: "no serial"})
        device = uow.supply.device(study_id, udi.serial)
        if device is None:
            raise ValidationFailed(f"no device with serial {udi.serial}", {field: "unknown device"})
        lot = uow.supply.lot_by_id(device.lot_id)
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
        return device, lot
    device = uow.supply.device(study_id, named)
    if device is None:
        raise ValidationFailed(
            f"no device with serial number {named} (give its UDI or serial number)",
            {field: "unknown device"},
        )
    return device, uow.supply.lot_by_id(device.lot_id)


def use_for_procedure(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    subject: Subject,
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
    audit(
        uow,
        ctx,
        actor,
        subject.study_id,
        PROCEDURE_RECORD,
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
    device, lot = _named_device(uow, subject.study_id, named, field)
    site = uow.sites.get(subject.site_id)
    if procedure_date is None:
        procedure_date = site_today(site, ctx.now())
    if device.site_id != subject.site_id or not may_move(DeviceMove.IMPLANT, device.status):
        if device.site_id != subject.site_id:
            why = f"is not in stock at site {site.code}"
        elif device.status == DeviceState.IN_TRANSIT:
            why = "is in transit: the shipment has not been received"
        elif device.status == DeviceState.QUARANTINED:
            why = "is quarantined"
        else:
            why = f"is {device.status}"
        raise PreconditionFailed(
            f"device {device.serial} {why}; name a device in stock at {site.code}",
            reason="device-unavailable",
        )
    if lot.status != LotStatus.RELEASED:
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
    used = move(
        uow,
        ctx,
        device,
        DeviceMove.IMPLANT if released else DeviceMove.USE_NOT_RELEASED,
        subject_enc=ctx.cipher.encrypt(json.dumps(link, sort_keys=True)),
    )
    log_event(
        uow,
        ctx,
        actor,
        used,
        DeviceEventKind.IMPLANTED if released else DeviceEventKind.USED_NOT_RELEASED,
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
        study(uow, study_id)
        require(
            actor,
            study_id,
            [Role.STATISTICIAN, Role.DSMB, Role.IMPLANTER, Role.MANAGER],
            action="recall query",
        )
        lot = lot_of(uow, study_id, lot_number)
        unblinded = trial_unblinded(uow, study_id)
        site_ids = [s.id for s in visible_sites(uow, actor, study_id, None)]
        visible = [
            sid for sid in site_ids if arms_visible(actor, study_id, sid, unblinded_trial=unblinded)
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
            lot = lot_of(uow, study_id, lot_number)
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
        lot = lot_of(uow, study_id, lot_number)
        entries = _recall_entries(ctx, uow, lot, set(visible))
        # who read which lot's list, never how many subjects it named (AUD-1, RAND-6)
        uow.record(disclosure_entry(ctx, actor, study_id, "recall_list", what=lot.lot_number))
        uow.commit()
        return RecallView(lot.lot_number, lot.status, entries, signed)


def _recall_entries(
    ctx: ServiceContext, uow: UnitOfWork, lot: DeviceLot, site_ids: set[int] | None
) -> list[RecallEntry]:
    out = []
    for use in uow.supply.uses(lot.id):
        if site_ids is not None and use.site_id not in site_ids:
            continue
        link = json.loads(ctx.cipher.decrypt(use.detail_enc))
        out.append(
            RecallEntry(
                subject=str(link["subject"]),
                site=site_code(uow, use.site_id) or "",
                procedure_date=str(link["procedure_date"]),
                serial=use.serial,
                released=bool(link["released"]),
            )
        )
    return sorted(out, key=lambda e: (e.site, e.subject))
