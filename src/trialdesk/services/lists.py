"""Allocation lists (RAND-3): generated from a recorded seed or imported, checked,
fingerprinted, concealed (RAND-6), extended instead of running out."""

from __future__ import annotations

import json
import math
import random
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select

from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.domain.randomization import (
    Slot,
    derive_seed,
    fingerprint,
    generate_blocks,
    validate_block_sizes,
)
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.models import Method
from trialdesk.services.access import Actor, require
from trialdesk.services.common import current_protocol_row, protocol_of, study_by_id
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import (
    AllocationListRow,
    AllocationSlotRow,
    SiteRow,
    StratumCursorRow,
)
from trialdesk.store.uow import UnitOfWork


@dataclass(frozen=True)
class ListInfo:
    id: int
    mode: str
    method: str
    strata: int
    slots: int
    fingerprint: str


def arms_of(loaded: LoadedProtocol) -> list[tuple[str, int]]:
    return [(a.code, a.ratio) for a in loaded.protocol.arms]


def _site_strata(uow: UnitOfWork, study_id: int, loaded: LoadedProtocol) -> list[str]:
    """Strata that can be listed ahead: only site-stratified designs (others: see docs)."""
    factors = loaded.protocol.randomization.strata
    if any(f != "site" for f in factors):
        raise PreconditionFailed(
            "pre-generated lists support stratification by site only in this version; "
            "strata " + ", ".join(factors) + " need minimization",
            reason="unsupported-strata",
        )
    if not factors:
        return ["all"]
    codes = uow.session.scalars(
        select(SiteRow.code).where(SiteRow.study_id == study_id).order_by(SiteRow.code)
    ).all()
    return [f"site={code}" for code in codes]


def default_stratum_size(loaded: LoadedProtocol, strata: int) -> int:
    r = loaded.protocol.randomization
    if r.list_size_per_stratum:
        return r.list_size_per_stratum
    per = loaded.protocol.enrolment.target_subjects / max(strata, 1)
    return max(math.ceil(per * (1 + r.reserve_fraction)), max(r.block_sizes or [2]))


def generate_list(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    mode: str = "live",
    seed: int | None = None,
    size_per_stratum: int | None = None,
) -> ListInfo:
    """Generate and store the concealed permuted-block list (RAND-3): seeded, reproducible,
    fingerprinted; the seed is stored encrypted because it *is* the list."""
    if mode not in {"live", "test"}:
        raise ValidationFailed("mode must be live or test", {"mode": mode})
    now = ctx.now()
    with ctx.uow() as uow:
        if not actor.operator:
            require(actor, study_id, [Role.STATISTICIAN], action="generate allocation list")
        study_by_id(uow, study_id)
        prow = current_protocol_row(uow, study_id)
        loaded = protocol_of(ctx, prow)
        design = loaded.protocol.randomization
        if design.method is not Method.PERMUTED_BLOCKS:
            raise PreconditionFailed(
                f"the protocol's method is {design.method.value}; it uses no pre-generated list",
                reason="no-list-method",
            )
        existing = uow.session.scalars(
            select(AllocationListRow).where(
                AllocationListRow.study_id == study_id,
                AllocationListRow.mode == mode,
                AllocationListRow.active.is_(True),
            )
        ).first()
        if existing is not None:
            raise PreconditionFailed(
                f"an active {mode} list exists (fingerprint {existing.fingerprint[:12]}); "
                "extend it instead of replacing it",
                reason="list-exists",
            )
        arms = arms_of(loaded)
        sizes = validate_block_sizes(arms, design.block_sizes)
        if seed is None:
            seed = (
                design.seed
                if design.seed_policy == "fixed" and design.seed is not None
                else secrets.randbits(62)
            )
        strata = _site_strata(uow, study_id, loaded)
        size = size_per_stratum or default_stratum_size(loaded, len(strata))
        all_slots: dict[str, list[Slot]] = {
            s: generate_blocks(arms, sizes, size, random.Random(derive_seed(seed, s)))
            for s in strata
        }
        lst = AllocationListRow(
            study_id=study_id,
            mode=mode,
            method=design.method.value,
            source="generated",
            seed_enc=ctx.cipher.encrypt(str(seed)),
            fingerprint=fingerprint(all_slots),
            created_at=now,
            created_by=actor.label,
            active=True,
        )
        uow.session.add(lst)
        uow.session.flush()
        total = 0
        for stratum, slots in all_slots.items():
            _store_slots(uow, ctx, lst.id, stratum, slots)
            uow.session.add(
                StratumCursorRow(
                    list_id=lst.id, stratum=stratum, next_sequence=1, size=len(slots), extensions=0
                )
            )
            total += len(slots)
        uow.record(
            PendingEntry(
                stream=f"list:{lst.id}",
                at=now,
                actor=actor.label,
                action="generate_list",
                entity="allocation_list",
                entity_id=str(lst.id),
                study_id=study_id,
                new={
                    "mode": mode,
                    "method": design.method.value,
                    "strata": len(strata),
                    "slots": total,
                    "fingerprint": lst.fingerprint,
                    "block_sizes": list(sizes),
                },
                protocol_sha256=prow.sha256,
            )
        )
        uow.commit()
        return ListInfo(lst.id, mode, lst.method, len(strata), total, lst.fingerprint)


def _store_slots(
    uow: UnitOfWork, ctx: ServiceContext, list_id: int, stratum: str, slots: list[Slot]
) -> None:
    for slot in slots:
        payload = json.dumps(
            {"arm": slot.arm, "block": slot.block_number, "block_size": slot.block_size}
        )
        uow.session.add(
            AllocationSlotRow(
                list_id=list_id,
                stratum=stratum,
                sequence=slot.sequence,
                payload_enc=ctx.cipher.encrypt(payload),
            )
        )


def decode_slot(ctx: ServiceContext, row: AllocationSlotRow) -> Slot:
    data = json.loads(ctx.cipher.decrypt(row.payload_enc))
    return Slot(
        sequence=row.sequence,
        block_number=int(data["block"]),
        block_size=int(data["block_size"]),
        arm=str(data["arm"]),
    )


def extend_stratum(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    lst: AllocationListRow,
    cursor: StratumCursorRow,
    loaded: LoadedProtocol,
) -> None:
    """Append seeded blocks to a stratum instead of running out (audited)."""
    if lst.seed_enc is None:
        raise PreconditionFailed(
            f"stratum {cursor.stratum} of an imported list ran out; import more slots",
            reason="list-exhausted",
        )
    seed = int(ctx.cipher.decrypt(lst.seed_enc))
    last = uow.session.scalars(
        select(AllocationSlotRow)
        .where(
            AllocationSlotRow.list_id == lst.id,
            AllocationSlotRow.stratum == cursor.stratum,
        )
        .order_by(AllocationSlotRow.sequence.desc())
    ).first()
    previous = [decode_slot(ctx, last)] if last is not None else []
    arms = arms_of(loaded)
    sizes = validate_block_sizes(arms, loaded.protocol.randomization.block_sizes)
    extension = cursor.extensions + 1
    rng = random.Random(derive_seed(seed, cursor.stratum, extension))
    more = generate_blocks(arms, sizes, max(sizes) * 2, rng, after=previous)
    _store_slots(uow, ctx, lst.id, cursor.stratum, more)
    cursor.size += len(more)
    cursor.extensions = extension
    uow.record(
        PendingEntry(
            stream=f"list:{lst.id}",
            at=ctx.now(),
            actor=actor.label,
            action="extend_stratum",
            entity="allocation_list",
            entity_id=str(lst.id),
            study_id=lst.study_id,
            new={"stratum": cursor.stratum, "extension": extension, "slots_added": len(more)},
        )
    )


def list_info(ctx: ServiceContext, actor: Actor, study_id: int) -> list[ListInfo]:
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, [Role.STATISTICIAN], action="view allocation lists")
        out = []
        for lst in uow.session.scalars(
            select(AllocationListRow).where(AllocationListRow.study_id == study_id)
        ):
            strata = (
                uow.session.scalar(
                    select(func.count())
                    .select_from(StratumCursorRow)
                    .where(StratumCursorRow.list_id == lst.id)
                )
                or 0
            )
            slots = (
                uow.session.scalar(
                    select(func.count())
                    .select_from(AllocationSlotRow)
                    .where(AllocationSlotRow.list_id == lst.id)
                )
                or 0
            )
            out.append(ListInfo(lst.id, lst.mode, lst.method, strata, slots, lst.fingerprint))
        return out
