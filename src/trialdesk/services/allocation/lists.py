"""Allocation lists (RAND-3): generated from a recorded seed or imported, checked,
fingerprinted, concealed (RAND-6), extended instead of running out.

A study has at most one active list per mode: ``live`` lists serve live subjects, ``test``
lists serve test subjects, and randomization picks the list through :func:`active_list`, so
a live randomization can never draw from a test list. Nothing that leaves this module for a
caller (results, audit entries, notifications) carries an arm; only the statistician, who
wrote the file, sees an arm code quoted back in an import refusal.
"""

from __future__ import annotations

import json
import math
import random
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trialdesk.domain.allocation_csv import (
    CSV_COLUMNS,
    MAX_NUMBER,
    ListImportRefused,
    Problems,
    check_import,
    parse_csv,
)
from trialdesk.domain.errors import NotFound, PermissionDenied, PreconditionFailed, ValidationFailed
from trialdesk.domain.randomization import (
    ArmRatio,
    Slot,
    derive_seed,
    fingerprint,
    generate_blocks,
    validate_block_sizes,
)
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.models import Method
from trialdesk.reports.csv_cells import csv_text
from trialdesk.services.access import BLINDED_ROLES, Actor, require
from trialdesk.services.audit_trail import disclosure_entry
from trialdesk.services.common import loaded_protocol, version_in_force
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.records import (
    AllocationList,
    AllocationSlot,
    ProtocolVersion,
    StratumCursor,
    Study,
)
from trialdesk.store.uow import UnitOfWork

__all__ = ["CSV_COLUMNS", "ListImportRefused"]  # re-exported: callers import them from here

MODES = ("live", "test")
MAX_EXTENSION_BLOCKS = 500


@dataclass(frozen=True)
class ListInfo:
    """What a list (or one import into it) holds, without content: safe to show and log."""

    id: int
    mode: str
    method: str
    strata: int
    slots: int
    fingerprint: str
    source: str = "generated"
    active: bool = True


@dataclass(frozen=True)
class StratumStatus:
    """Use of one stratum of an active list, for the statistician (no arms, no blocks)."""

    list_id: int
    mode: str
    source: str
    stratum: str
    size: int
    used: int
    unused: int
    extensions: int
    low: bool
    """Fewer unused slots than the protocol's ``randomization.low_slots_warning``."""


# --- shared helpers -------------------------------------------------------------------------


def require_custodian(actor: Actor, study_id: int, action: str) -> None:
    """Lists are kept by the unblinded statistician: the role, and no blinded role beside it
    (ACC-2: a user who is also a coordinator, say, gets the blinded answer, and a list, its
    fingerprint or its content is allocation)."""
    require(actor, study_id, [Role.STATISTICIAN], action=action)
    if actor.roles(study_id) & BLINDED_ROLES:
        raise PermissionDenied(
            f"'{action}' is for the unblinded statistician; {actor.username} also holds a "
            "blinded role in this study, and the blinded role wins (ACC-2)"
        )


def arms_of(loaded: LoadedProtocol) -> list[tuple[str, int]]:
    return [(a.code, a.ratio) for a in loaded.protocol.arms]


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValidationFailed(f"mode must be live or test, not {mode!r}", {"mode": mode})
    return mode


def active_list(uow: UnitOfWork, study_id: int, mode: str) -> AllocationList | None:
    """The one active list of ``mode``; randomization draws only from this (RAND-3)."""
    return uow.lists.active(study_id, _check_mode(mode))


def _lock_study(uow: UnitOfWork, study_id: int) -> None:
    """Serialises list creation per study, so two statisticians cannot both create the
    mode's active list."""
    uow.lock_study(study_id)


def _study(uow: UnitOfWork, study_id: int) -> Study:
    study = uow.studies.get(study_id)
    if study is None:
        raise NotFound(f"study {study_id} not found")
    return study


def _current(ctx: ServiceContext, uow: UnitOfWork, study_id: int) -> LoadedProtocol:
    return loaded_protocol(ctx, uow, version_in_force(uow, study_id))


def _list_design(
    ctx: ServiceContext, uow: UnitOfWork, study_id: int
) -> tuple[ProtocolVersion, LoadedProtocol]:
    prow = version_in_force(uow, study_id)
    loaded = loaded_protocol(ctx, uow, prow)
    method = loaded.protocol.randomization.method
    if method is not Method.PERMUTED_BLOCKS:
        raise PreconditionFailed(
            f"the protocol's method is {method.value}; it uses no pre-generated list",
            reason="no-list-method",
        )
    return prow, loaded


def _site_codes(uow: UnitOfWork, study_id: int) -> list[str]:
    return uow.lists.site_codes(study_id)


def _site_strata(uow: UnitOfWork, study_id: int, loaded: LoadedProtocol) -> list[str]:
    """Every stratum of the design, listed ahead: the product of the factors' levels, each
    factor being the site or a choice / yes-no field of a screening form (RAND-2). Names are
    ``factor=level`` joined by ``|``, exactly as randomization computes a subject's stratum."""
    factors = loaded.protocol.randomization.strata
    if not factors:
        return ["all"]
    strata = [""]
    for factor in factors:
        levels = _factor_levels(uow, study_id, loaded, factor)
        strata = [f"{s}|{factor}={lv}" if s else f"{factor}={lv}" for s in strata for lv in levels]
    return strata


def _factor_levels(
    uow: UnitOfWork, study_id: int, loaded: LoadedProtocol, factor: str
) -> list[str]:
    if factor == "site":
        return list(_site_codes(uow, study_id))
    form_code, field_code = factor.split(".", 1)
    spec = next(f for f in loaded.protocol.form(form_code).fields if f.code == field_code)
    if spec.choices:
        return [c.code for c in spec.choices]
    if spec.type.value == "boolean":
        return ["false", "true"]
    raise PreconditionFailed(  # the protocol checks refuse such a factor; kept for safety
        f"stratification factor {factor} has no finite set of levels",
        reason="unsupported-strata",
    )


def default_stratum_size(loaded: LoadedProtocol, strata: int) -> int:
    r = loaded.protocol.randomization
    if r.list_size_per_stratum:
        return r.list_size_per_stratum
    per = loaded.protocol.enrolment.target_subjects / max(strata, 1)
    return max(math.ceil(per * (1 + r.reserve_fraction)), max(r.block_sizes or [2]))


def _store_slots(
    uow: UnitOfWork, ctx: ServiceContext, list_id: int, stratum: str, slots: Sequence[Slot]
) -> None:
    rows = []
    for slot in slots:
        payload = json.dumps(
            {"arm": slot.arm, "block": slot.block_number, "block_size": slot.block_size}
        )
        rows.append((slot.sequence, ctx.cipher.encrypt(payload)))
    uow.lists.add_slots(list_id, stratum, rows)


def decode_slot(ctx: ServiceContext, row: AllocationSlot) -> Slot:
    data = json.loads(ctx.cipher.decrypt(row.payload_enc))
    return Slot(
        sequence=row.sequence,
        block_number=int(data["block"]),
        block_size=int(data["block_size"]),
        arm=str(data["arm"]),
    )


def _list_entry(
    ctx: ServiceContext,
    actor: Actor,
    lst: AllocationList,
    action: str,
    new: dict[str, object],
    protocol_sha256: str | None = None,
) -> PendingEntry:
    return PendingEntry(
        stream=f"list:{lst.id}",
        at=ctx.now(),
        actor=actor.label,
        action=action,
        entity="allocation_list",
        entity_id=str(lst.id),
        study_id=lst.study_id,
        new=new,
        protocol_sha256=protocol_sha256,
    )


def _new_list(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    mode: str,
    source: str,
    seed: int | None,
    stratum_slots: Mapping[str, Sequence[Slot]],
) -> AllocationList:
    lst = uow.lists.add(
        study_id=study_id,
        mode=mode,
        method=Method.PERMUTED_BLOCKS.value,
        source=source,
        seed_enc=ctx.cipher.encrypt(str(seed)) if seed is not None else None,
        fingerprint=fingerprint(stratum_slots),
        at=ctx.now(),
        by=actor.label,
    )
    for stratum, slots in stratum_slots.items():
        _store_slots(uow, ctx, lst.id, stratum, slots)
        uow.lists.add_cursor(lst.id, stratum, len(slots))
    return lst


def _refuse_if_active(uow: UnitOfWork, study_id: int, mode: str) -> None:
    existing = active_list(uow, study_id, mode)
    if existing is not None:
        how = (
            "extend it ('trialdesk lists extend')"
            if existing.seed_enc is not None
            else "import more slots into it ('trialdesk lists import FILE --append')"
        )
        raise PreconditionFailed(
            f"an active {mode} list exists (fingerprint {existing.fingerprint[:12]}); "
            f"{how} instead of replacing it",
            reason="list-exists",
        )


MIN_MATCH_SLOTS = 8
"""Shared slots from which two lists with equal arm sequences count as one list (below it,
equal sequences are as likely as not by chance)."""


def _list_slots(ctx: ServiceContext, uow: UnitOfWork, list_id: int) -> dict[str, list[Slot]]:
    out: dict[str, list[Slot]] = defaultdict(list)
    for row in uow.lists.slots(list_id):
        out[row.stratum].append(decode_slot(ctx, row))
    return dict(out)


def _same_sequence(a: Mapping[str, Sequence[Slot]], b: Mapping[str, Sequence[Slot]]) -> bool:
    """True when every stratum the lists share draws the same arms in the same order (up to
    the shorter one's end), over at least :data:`MIN_MATCH_SLOTS` slots: the same list,
    whatever its block numbering, stratum order or length."""
    shared = 0
    for stratum in set(a) & set(b):
        left = [s.arm for s in sorted(a[stratum], key=lambda s: s.sequence)]
        right = [s.arm for s in sorted(b[stratum], key=lambda s: s.sequence)]
        n = min(len(left), len(right))
        if left[:n] != right[:n]:
            return False
        shared += n
    return shared >= MIN_MATCH_SLOTS


def _refuse_shared_custody(
    ctx: ServiceContext,
    uow: UnitOfWork,
    study_id: int,
    mode: str,
    stratum_slots: Mapping[str, Sequence[Slot]],
) -> None:
    """RAND-3 custody: a list whose fingerprint or arm sequence matches a list the study has
    (or had) in the other mode is refused, so whoever tested the system with the test list
    does not know the live sequence (and a live list never becomes a test list). Discarded
    lists count: their content was seen."""
    other = "test" if mode == "live" else "live"
    new_fp = fingerprint(stratum_slots)
    for lst in uow.lists.of_study(study_id, other):
        if lst.fingerprint == new_fp or _same_sequence(
            stratum_slots, _list_slots(ctx, uow, lst.id)
        ):
            raise PreconditionFailed(
                f"this list repeats the study's {other} list {lst.id} (same "
                f"{'fingerprint' if lst.fingerprint == new_fp else 'arm sequence'}): test and "
                "live lists must be made apart, so testing never shows the live sequence",
                reason="list-custody",
            )


def _refuse_known_seed(study: Study, mode: str, seed: int | None, fixed: bool) -> None:
    """RAND-3: in a live study the live list comes from a seed trialdesk draws and never
    shows; a seed someone typed, or the protocol's fixed seed (readable by every role), would
    let whoever knows it rebuild the live sequence. Demo and sandbox studies keep
    reproducible seeds."""
    if mode != "live" or study.mode != "live":
        return
    if seed is not None or fixed:
        raise ValidationFailed(
            "the live list of a live study is generated from a seed trialdesk draws and never "
            "shows; leave the seed out"
            + (
                " (the protocol's fixed seed is for demo and sandbox studies)"
                if fixed and seed is None
                else ""
            ),
            {"seed": "not allowed for a live list"},
        )


# --- generate -------------------------------------------------------------------------------


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
    _check_mode(mode)
    if size_per_stratum is not None and not 1 <= size_per_stratum <= MAX_NUMBER:
        raise ValidationFailed(
            f"slots per stratum must be 1 to {MAX_NUMBER}", {"size": str(size_per_stratum)}
        )
    if seed is not None and not 0 <= seed < 2**63:
        raise ValidationFailed("the seed must be an integer from 0 to 2^63-1", {"seed": "range"})
    with ctx.uow() as uow:
        if not actor.operator:
            require_custodian(actor, study_id, "generate allocation list")
        study = _study(uow, study_id)
        prow, loaded = _list_design(ctx, uow, study_id)
        design = loaded.protocol.randomization
        _lock_study(uow, study_id)
        _refuse_if_active(uow, study_id, mode)
        fixed = design.seed_policy == "fixed" and design.seed is not None
        _refuse_known_seed(study, mode, seed, fixed)
        arms = arms_of(loaded)
        sizes = validate_block_sizes(arms, design.block_sizes)
        if seed is None:
            seed = design.seed if fixed and design.seed is not None else secrets.randbits(62)
        strata = _site_strata(uow, study_id, loaded)
        size = size_per_stratum or default_stratum_size(loaded, len(strata))
        all_slots: dict[str, list[Slot]] = {
            s: generate_blocks(arms, sizes, size, random.Random(derive_seed(seed, s)))
            for s in strata
        }
        _refuse_shared_custody(ctx, uow, study_id, mode, all_slots)
        lst = _new_list(
            uow,
            ctx,
            actor,
            study_id,
            mode=mode,
            source="generated",
            seed=seed,
            stratum_slots=all_slots,
        )
        total = sum(len(slots) for slots in all_slots.values())
        uow.audit.record(
            _list_entry(
                ctx,
                actor,
                lst,
                "generate_list",
                {
                    "mode": mode,
                    "method": lst.method,
                    "strata": len(strata),
                    "slots": total,
                    "slots_per_stratum": size,
                    "fingerprint": lst.fingerprint,
                    "block_sizes": list(sizes),
                },
                prow.sha256,
            )
        )
        uow.commit()
        return ListInfo(lst.id, mode, lst.method, len(strata), total, lst.fingerprint)


# --- import ---------------------------------------------------------------------------------


def import_list(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    csv_text: str,
    *,
    mode: str,
    source_name: str,
    append: bool = False,
) -> ListInfo:
    """Load a list made elsewhere (RAND-3) after checking all of it; nothing is stored when
    anything is wrong, and the refusal lists every problem with its row.

    The CSV has a header naming the columns ``stratum,sequence,block,block_size,arm`` (any
    order) and one row per slot: ``stratum`` is ``site=<site code>`` for a site-stratified
    protocol (every site needs one), ``all`` for an unstratified one, otherwise the factors
    in protocol order as ``factor=level`` joined by ``|``; ``sequence`` runs 1..n without gaps
    within each stratum; ``block`` numbers the permuted blocks; ``block_size`` is the size of
    the row's block; ``arm`` is a protocol arm code. Every complete block must hold the arms
    in the protocol's ratio; only a stratum's last block may be incomplete.

    Imported lists have no seed, so they are never extended automatically: with
    ``append=True`` the file adds slots to the active imported list of ``mode`` instead,
    each stratum continuing after its last sequence (and a new site starting at 1). The
    result describes what this call loaded; its fingerprint is the domain SHA-256 of the
    file's slots, so the sender can check it against their own.
    """
    _check_mode(mode)
    source_name = (source_name or "").strip()[:200] or "(unnamed)"
    with ctx.uow() as uow:
        require_custodian(actor, study_id, "import allocation list")
        _study(uow, study_id)
        prow, loaded = _list_design(ctx, uow, study_id)
        arms = arms_of(loaded)
        factors = list(loaded.protocol.randomization.strata)
        site_codes = set(_site_codes(uow, study_id))
        target: AllocationList | None = None
        if append:
            target = active_list(uow, study_id, mode)
            if target is None:
                raise PreconditionFailed(
                    f"there is no active {mode} list to add slots to; import without --append",
                    reason="no-allocation-list",
                )
            if target.seed_enc is not None:
                raise PreconditionFailed(
                    f"the active {mode} list was generated from a seed; extend it "
                    "('trialdesk lists extend') instead of importing slots into it",
                    reason="generated-list",
                )
        else:
            _lock_study(uow, study_id)
            _refuse_if_active(uow, study_id, mode)
        problems = Problems()
        rows, dirty = parse_csv(csv_text, [code for code, _ in arms], problems)
        cursors: dict[str, StratumCursor] = {}
        existing: dict[str, list[Slot]] = {}
        if target is not None:
            for stratum in sorted({r.stratum for r in rows}):
                cursor = uow.lists.cursor(target.id, stratum, lock=True)
                if cursor is None:
                    continue
                cursors[stratum] = cursor
                existing[stratum] = [
                    decode_slot(ctx, slot) for slot in uow.lists.slots(target.id, stratum)
                ]
        slots = check_import(
            rows,
            dirty,
            problems,
            arms=arms,
            factors=factors,
            site_codes=site_codes,
            existing=existing,
            appending=append,
        )
        if problems.items:
            raise ListImportRefused(source_name, problems.sorted())
        total = sum(len(s) for s in slots.values())
        loaded_fp = fingerprint(slots)
        whole = slots
        if target is not None:
            whole = {k: [*existing.get(k, []), *v] for k, v in slots.items()}
        _refuse_shared_custody(ctx, uow, study_id, mode, whole)
        if target is None:
            lst = _new_list(
                uow,
                ctx,
                actor,
                study_id,
                mode=mode,
                source="imported",
                seed=None,
                stratum_slots=slots,
            )
            action = "import_list"
        else:
            lst = target
            for stratum, added in slots.items():
                _store_slots(uow, ctx, lst.id, stratum, added)
                cursor = cursors.get(stratum)
                if cursor is None:
                    uow.lists.add_cursor(lst.id, stratum, len(added))
                else:
                    uow.lists.update_cursor(
                        cursor,
                        {"size": cursor.size + len(added), "extensions": cursor.extensions + 1},
                    )
            action = "import_slots"
        uow.audit.record(
            _list_entry(
                ctx,
                actor,
                lst,
                action,
                {
                    "mode": mode,
                    "source_name": source_name,
                    "strata": len(slots),
                    "slots": total,
                    "fingerprint": loaded_fp,
                },
                prow.sha256,
            )
        )
        uow.commit()
        return ListInfo(lst.id, mode, lst.method, len(slots), total, loaded_fp, "imported")


# --- extension ------------------------------------------------------------------------------


def _more_blocks(
    arms: Sequence[ArmRatio],
    sizes: Sequence[int],
    rng: random.Random,
    after: Sequence[Slot],
    blocks: int | None,
) -> list[Slot]:
    """``blocks`` whole blocks, or (None) whole blocks totalling two of the largest size.

    One block per call draws the same numbers from ``rng`` as one call for all of them, so
    the result depends only on the seed, the stratum, the extension number and the count.
    """
    if blocks is None:
        return generate_blocks(arms, sizes, max(sizes) * 2, rng, after=after)
    more: list[Slot] = []
    for _ in range(blocks):
        more += generate_blocks(arms, sizes, 1, rng, after=[*after[-1:], *more[-1:]])
    return more


def _append_blocks(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    lst: AllocationList,
    cursor: StratumCursor,
    loaded: LoadedProtocol,
    *,
    blocks: int | None,
    trigger: str,
) -> StratumCursor:
    if lst.seed_enc is None:
        raise PreconditionFailed(
            f"stratum {cursor.stratum} of the imported {lst.mode} allocation list cannot be "
            "extended (an imported list has no seed); the unblinded statistician must import "
            "more slots ('trialdesk lists import FILE --append')",
            reason="list-exhausted" if trigger == "randomization" else "imported-list",
        )
    seed = int(ctx.cipher.decrypt(lst.seed_enc))
    last = uow.lists.last_slot(lst.id, cursor.stratum)
    previous = [decode_slot(ctx, last)] if last is not None else []
    arms = arms_of(loaded)
    sizes = validate_block_sizes(arms, loaded.protocol.randomization.block_sizes)
    extension = cursor.extensions + 1
    rng = random.Random(derive_seed(seed, cursor.stratum, extension))
    more = _more_blocks(arms, sizes, rng, previous, blocks)
    _store_slots(uow, ctx, lst.id, cursor.stratum, more)
    cursor = uow.lists.update_cursor(
        cursor, {"size": cursor.size + len(more), "extensions": extension}
    )
    uow.audit.record(
        _list_entry(
            ctx,
            actor,
            lst,
            "extend_stratum",
            {
                "stratum": cursor.stratum,
                "extension": extension,
                "trigger": trigger,
            },
        )
    )
    return cursor


def extend_stratum(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    lst: AllocationList,
    cursor: StratumCursor,
    loaded: LoadedProtocol,
) -> StratumCursor:
    """Append seeded blocks to an exhausted stratum instead of running out (audited); called
    by randomization under the cursor's lock. The cursor after the extension."""
    return _append_blocks(
        uow, ctx, actor, lst, cursor, loaded, blocks=None, trigger="randomization"
    )


def _status(lst: AllocationList, cursor: StratumCursor, threshold: int) -> StratumStatus:
    used = cursor.next_sequence - 1
    unused = max(cursor.size - used, 0)
    return StratumStatus(
        list_id=lst.id,
        mode=lst.mode,
        source=lst.source,
        stratum=cursor.stratum,
        size=cursor.size,
        used=used,
        unused=unused,
        extensions=cursor.extensions,
        low=unused < threshold,
    )


def extend(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    stratum: str,
    *,
    blocks: int | None = None,
    mode: str = "live",
) -> StratumStatus:
    """The statistician adds seeded blocks to a stratum ahead of need (RAND-3), reproducibly:
    extension k of a stratum is drawn from ``derive_seed(seed, stratum, k)``. A site with no
    stratum yet (added by an amendment) gets the stratum the original seed gives it.
    ``blocks`` None adds whole blocks totalling two of the largest block size."""
    _check_mode(mode)
    if blocks is not None and (isinstance(blocks, bool) or not 1 <= blocks <= MAX_EXTENSION_BLOCKS):
        raise ValidationFailed(
            f"blocks must be a whole number from 1 to {MAX_EXTENSION_BLOCKS}",
            {"blocks": str(blocks)},
        )
    stratum = stratum.strip()
    with ctx.uow() as uow:
        require_custodian(actor, study_id, "extend allocation list")
        _study(uow, study_id)
        prow, loaded = _list_design(ctx, uow, study_id)
        lst = active_list(uow, study_id, mode)
        if lst is None:
            raise PreconditionFailed(
                f"there is no active {mode} allocation list", reason="no-allocation-list"
            )
        cursor = uow.lists.cursor(lst.id, stratum, lock=True)
        if cursor is None:
            cursor = _add_stratum(uow, ctx, actor, lst, stratum, loaded, blocks, prow.sha256)
        else:
            cursor = _append_blocks(
                uow, ctx, actor, lst, cursor, loaded, blocks=blocks, trigger="statistician"
            )
        status = _status(lst, cursor, loaded.protocol.randomization.low_slots_warning)
        uow.commit()
        return status


def _add_stratum(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    lst: AllocationList,
    stratum: str,
    loaded: LoadedProtocol,
    blocks: int | None,
    protocol_sha256: str,
) -> StratumCursor:
    """The stratum a generated list would have had, from the same seed (extension 0)."""
    if lst.seed_enc is None:
        raise PreconditionFailed(
            f"the imported {lst.mode} allocation list has no stratum {stratum!r}; add it by "
            "importing its slots ('trialdesk lists import FILE --append')",
            reason="imported-list",
        )
    known = _site_strata(uow, lst.study_id, loaded)
    if stratum not in known:
        raise NotFound(
            f"the {lst.mode} allocation list has no stratum {stratum!r} "
            "(see 'trialdesk lists status')"
        )
    seed = int(ctx.cipher.decrypt(lst.seed_enc))
    arms = arms_of(loaded)
    sizes = validate_block_sizes(arms, loaded.protocol.randomization.block_sizes)
    rng = random.Random(derive_seed(seed, stratum))
    if blocks is None:
        size = default_stratum_size(loaded, len(known))
        slots = generate_blocks(arms, sizes, size, rng)
    else:
        slots = _more_blocks(arms, sizes, rng, [], blocks)
    _store_slots(uow, ctx, lst.id, stratum, slots)
    cursor = uow.lists.add_cursor(lst.id, stratum, len(slots))
    uow.audit.record(
        _list_entry(
            ctx,
            actor,
            lst,
            "add_stratum",
            {"stratum": stratum},
            protocol_sha256,
        )
    )
    return cursor


# --- watching the slots ---------------------------------------------------------------------


def check_low_slots(
    uow: UnitOfWork, ctx: ServiceContext, cursor: StratumCursor, loaded: LoadedProtocol
) -> str | None:
    """Tell the study manager when a stratum's unused slots fall below the protocol's
    ``randomization.low_slots_warning``: once per crossing, no arm, no list content. The
    text of the notification, when one is made.

    Call after taking a slot (``cursor`` as advanced), under the cursor's lock. Slots are
    taken one at a time, so a crossing is the draw that leaves exactly ``threshold - 1``; a
    stratum that starts below the threshold is reported at its first draw. Extensions raise
    the count, so a later fall is a new crossing.
    """
    threshold = loaded.protocol.randomization.low_slots_warning
    used = cursor.next_sequence - 1
    unused = max(cursor.size - used, 0)
    if unused >= threshold or not (unused == threshold - 1 or used == 1):
        return None
    lst = uow.lists.get(cursor.list_id)
    assert lst is not None  # the cursor's list
    text = (
        f"Allocation list ({lst.mode}), stratum {cursor.stratum}: {unused} unused "
        f"slot{'s' if unused != 1 else ''} left (warning level {threshold}). "
        "Ask the unblinded statistician to extend the stratum "
        + (
            "('trialdesk lists extend')."
            if lst.seed_enc is not None
            else "by importing more slots; an imported list is not extended automatically."
        )
    )
    uow.notifications.add(
        study_id=lst.study_id,
        recipient_role=Role.MANAGER.value,
        subject_id=None,
        text=text,
        at=ctx.now(),
    )
    return text


def stratum_status(
    ctx: ServiceContext, actor: Actor, study_id: int, *, mode: str | None = None
) -> list[StratumStatus]:
    """Per stratum of each active list (or of ``mode``): used, unused, extensions; no arms."""
    if mode is not None:
        _check_mode(mode)
    with ctx.uow(readonly=True) as uow:
        require_custodian(actor, study_id, "view allocation list status")
        _study(uow, study_id)
        loaded = _current(ctx, uow, study_id)
        threshold = loaded.protocol.randomization.low_slots_warning
        out: list[StratumStatus] = []
        for m in MODES if mode is None else (mode,):
            lst = active_list(uow, study_id, m)
            if lst is None:
                continue
            for cursor in uow.lists.cursors(lst.id):
                out.append(_status(lst, cursor, threshold))
        return out


def list_info(ctx: ServiceContext, actor: Actor, study_id: int) -> list[ListInfo]:
    """Every list of the study with its fingerprint, never its content."""
    with ctx.uow(readonly=True) as uow:
        require_custodian(actor, study_id, "view allocation lists")
        out = []
        for lst in uow.lists.of_study(study_id):
            strata, slots = uow.lists.sizes(lst.id)
            out.append(
                ListInfo(
                    lst.id,
                    lst.mode,
                    lst.method,
                    strata,
                    slots,
                    lst.fingerprint,
                    lst.source,
                    lst.active,
                )
            )
        return out


# --- custody: discarding and downloading ----------------------------------------------------


def _list_row(uow: UnitOfWork, study_id: int, list_id: int) -> AllocationList:
    lst = uow.lists.get(list_id)
    if lst is None or lst.study_id != study_id:
        raise NotFound(f"allocation list {list_id} not found")
    return lst


def discard_list(
    ctx: ServiceContext, actor: Actor, study_id: int, list_id: int, reason: str
) -> ListInfo:
    """Take a list out of use (RAND-3) so another can be loaded in its mode: a test list at
    any time (its test randomizations keep their records), a live list only while no live
    subject has drawn from it (before go-live). The list is kept, inactive, and still counts
    for custody: a later list of the other mode may not repeat it."""
    text = (reason or "").strip()
    if not text:
        raise ValidationFailed("a reason is required", {"reason": "required"})
    with ctx.uow() as uow:
        require_custodian(actor, study_id, "discard allocation list")
        _study(uow, study_id)
        _lock_study(uow, study_id)
        lst = _list_row(uow, study_id, list_id)
        if not lst.active:
            raise PreconditionFailed(
                f"allocation list {lst.id} is already out of use", reason="list-inactive"
            )
        used = uow.lists.used(lst.id)
        if lst.mode == "live" and used:
            raise PreconditionFailed(
                f"live allocation list {lst.id} has allocated subjects; a live list in use is "
                "extended, never replaced",
                reason="list-in-use",
            )
        lst = uow.lists.deactivate(lst)
        uow.audit.record(
            _list_entry(ctx, actor, lst, "discard_list", {"mode": lst.mode, "reason": text})
        )
        strata, slots = uow.lists.sizes(lst.id)
        uow.commit()
        return ListInfo(
            lst.id, lst.mode, lst.method, strata, slots, lst.fingerprint, lst.source, False
        )


@dataclass(frozen=True)
class ListDownload:
    filename: str
    csv: str
    """The list in the import format (``stratum,sequence,block,block_size,arm``)."""


def download_list(ctx: ServiceContext, actor: Actor, study_id: int, list_id: int) -> ListDownload:
    """The whole list as a CSV file in the import format, for the unblinded statistician's
    reconciliation (RAND-3). Every download is an audited disclosure (who, which list, when;
    not its content)."""
    with ctx.uow() as uow:
        require_custodian(actor, study_id, "download allocation list")
        study = _study(uow, study_id)
        lst = _list_row(uow, study_id, list_id)
        slots = _list_slots(ctx, uow, lst.id)
        rows = [
            [stratum, s.sequence, s.block_number, s.block_size, s.arm]
            for stratum in sorted(slots)
            for s in slots[stratum]
        ]
        uow.audit.record(
            disclosure_entry(
                ctx,
                actor,
                study_id,
                "list_download",
                what=f"list {lst.id}",
                detail={"list": lst.id, "mode": lst.mode, "slots": len(rows)},
            )
        )
        uow.commit()
    return ListDownload(f"{study.code}-{lst.mode}-list-{lst.id}.csv", csv_text(CSV_COLUMNS, rows))
