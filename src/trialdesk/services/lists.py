"""Allocation lists (RAND-3): generated from a recorded seed or imported, checked,
fingerprinted, concealed (RAND-6), extended instead of running out.

A study has at most one active list per mode: ``live`` lists serve live subjects, ``test``
lists serve test subjects, and randomization picks the list through :func:`active_list`, so
a live randomization can never draw from a test list. Nothing that leaves this module for a
caller (results, audit entries, notifications) carries an arm; only the statistician, who
wrote the file, sees an arm code quoted back in an import refusal.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select

from trialdesk.domain.errors import NotFound, PermissionDenied, PreconditionFailed, ValidationFailed
from trialdesk.domain.randomization import (
    ArmRatio,
    Slot,
    check_list,
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
from trialdesk.services.common import current_protocol_row, protocol_of, study_by_id
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import (
    AllocationListRow,
    AllocationSlotRow,
    NotificationRow,
    ProtocolVersionRow,
    SiteRow,
    StratumCursorRow,
    StudyRow,
)
from trialdesk.store.uow import UnitOfWork

MODES = ("live", "test")
CSV_COLUMNS = ("stratum", "sequence", "block", "block_size", "arm")
MAX_NUMBER = 1_000_000
"""Largest sequence, block number or block size an imported row may carry."""
MAX_STRATUM_LENGTH = 120  # the width of the stratum columns
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


class ListImportRefused(ValidationFailed):
    """An imported list with problems; ``lines`` holds every one of them, located by row."""

    def __init__(self, source_name: str, problems: Sequence[tuple[str, str]]) -> None:
        self.lines = [f"{where}: {what}" for where, what in problems]
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        merged: dict[str, str] = {}
        for where, what in problems:
            merged[where] = f"{merged[where]}; {what}" if where in merged else what
        super().__init__(
            f"{source_name}: allocation list not imported, {count}: " + "; ".join(self.lines),
            merged,
        )


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


def active_list(uow: UnitOfWork, study_id: int, mode: str) -> AllocationListRow | None:
    """The one active list of ``mode``; randomization draws only from this (RAND-3)."""
    return uow.session.scalars(
        select(AllocationListRow)
        .where(
            AllocationListRow.study_id == study_id,
            AllocationListRow.mode == _check_mode(mode),
            AllocationListRow.active.is_(True),
        )
        .order_by(AllocationListRow.id.desc())
    ).first()


def _is_postgres(uow: UnitOfWork) -> bool:
    return uow.session.get_bind().dialect.name == "postgresql"


def _lock_study(uow: UnitOfWork, study_id: int) -> None:
    """Serialises list creation per study on PostgreSQL (SQLite writers are serial anyway),
    so two statisticians cannot both create the mode's active list."""
    stmt = select(StudyRow.id).where(StudyRow.id == study_id)
    if _is_postgres(uow):
        stmt = stmt.with_for_update()
    uow.session.execute(stmt)


def _cursor(uow: UnitOfWork, list_id: int, stratum: str, *, lock: bool) -> StratumCursorRow | None:
    stmt = select(StratumCursorRow).where(
        StratumCursorRow.list_id == list_id, StratumCursorRow.stratum == stratum
    )
    if lock and _is_postgres(uow):
        stmt = stmt.with_for_update()
    return uow.session.scalars(stmt).one_or_none()


def _list_design(
    ctx: ServiceContext, uow: UnitOfWork, study_id: int
) -> tuple[ProtocolVersionRow, LoadedProtocol]:
    prow = current_protocol_row(uow, study_id)
    loaded = protocol_of(ctx, prow)
    method = loaded.protocol.randomization.method
    if method is not Method.PERMUTED_BLOCKS:
        raise PreconditionFailed(
            f"the protocol's method is {method.value}; it uses no pre-generated list",
            reason="no-list-method",
        )
    return prow, loaded


def _site_codes(uow: UnitOfWork, study_id: int) -> list[str]:
    return list(
        uow.session.scalars(
            select(SiteRow.code).where(SiteRow.study_id == study_id).order_by(SiteRow.code)
        ).all()
    )


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


def _list_entry(
    ctx: ServiceContext,
    actor: Actor,
    lst: AllocationListRow,
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
) -> AllocationListRow:
    lst = AllocationListRow(
        study_id=study_id,
        mode=mode,
        method=Method.PERMUTED_BLOCKS.value,
        source=source,
        seed_enc=ctx.cipher.encrypt(str(seed)) if seed is not None else None,
        fingerprint=fingerprint(stratum_slots),
        created_at=ctx.now(),
        created_by=actor.label,
        active=True,
    )
    uow.session.add(lst)
    uow.session.flush()
    for stratum, slots in stratum_slots.items():
        _store_slots(uow, ctx, lst.id, stratum, slots)
        uow.session.add(
            StratumCursorRow(
                list_id=lst.id, stratum=stratum, next_sequence=1, size=len(slots), extensions=0
            )
        )
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
    for row in uow.session.scalars(
        select(AllocationSlotRow)
        .where(AllocationSlotRow.list_id == list_id)
        .order_by(AllocationSlotRow.stratum, AllocationSlotRow.sequence)
    ):
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
    for lst in uow.session.scalars(
        select(AllocationListRow).where(
            AllocationListRow.study_id == study_id, AllocationListRow.mode == other
        )
    ):
        if lst.fingerprint == new_fp or _same_sequence(
            stratum_slots, _list_slots(ctx, uow, lst.id)
        ):
            raise PreconditionFailed(
                f"this list repeats the study's {other} list {lst.id} (same "
                f"{'fingerprint' if lst.fingerprint == new_fp else 'arm sequence'}): test and "
                "live lists must be made apart, so testing never shows the live sequence",
                reason="list-custody",
            )


def _refuse_known_seed(study: StudyRow, mode: str, seed: int | None, fixed: bool) -> None:
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
        study = study_by_id(uow, study_id)
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
        uow.record(
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


@dataclass
class _Row:
    row: int
    stratum: str
    sequence: int
    block: int
    block_size: int
    arm: str
    arm_known: bool = True


@dataclass
class _Problems:
    """Problems with a sort key, so the refusal reads top to bottom like the file."""

    items: list[tuple[tuple[int, int, int], str, str]] = field(default_factory=list)

    def add(self, key: tuple[int, int, int], where: str, what: str) -> None:
        self.items.append((key, where, what))

    def sorted(self) -> list[tuple[str, str]]:
        return [(where, what) for _, where, what in sorted(self.items, key=lambda i: i[0])]


def _ranges(numbers: Sequence[int]) -> str:
    """``[3, 7, 8, 9]`` -> ``"3, 7-9"``."""
    ordered = sorted(set(numbers))
    parts: list[str] = []
    start = prev = ordered[0]
    for number in [*ordered[1:], None]:
        if number is not None and number == prev + 1:
            prev = number
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if number is not None:
            start = prev = number
    return ", ".join(parts)


def _rows_text(rows: Sequence[int]) -> str:
    return ("row " if len(rows) == 1 else "rows ") + _ranges(rows)


_NUMBER = re.compile(r"[0-9]+")


def _number(value: str, name: str) -> tuple[int | None, str | None]:
    if not _NUMBER.fullmatch(value):
        return None, f"{name} {value!r} is not a whole number"
    number = int(value)
    if not 1 <= number <= MAX_NUMBER:
        return None, f"{name} {number} is outside 1-{MAX_NUMBER}"
    return number, None


def _parse_csv(
    csv_text: str, arm_codes: Sequence[str], problems: _Problems
) -> tuple[list[_Row], set[str]]:
    """Rows that parsed, and the strata with a row that did not (their blocks cannot be
    checked until it is fixed). Row N is line N of a file without quoted line breaks."""
    rows: list[_Row] = []
    dirty: set[str] = set()
    text = csv_text.removeprefix("\ufeff")
    expected = ",".join(CSV_COLUMNS)
    if not text.strip():
        problems.add((0, 0, 0), "file", f"the file is empty; expected the header {expected}")
        return rows, dirty
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header: list[str] = []
        while not any(cell.strip() for cell in header):
            header = next(reader)
        header_row = reader.line_num
        names = [cell.strip().lower() for cell in header]
        missing = [c for c in CSV_COLUMNS if c not in names]
        extra = [n or "(blank)" for n in names if n not in CSV_COLUMNS]
        repeated = sorted({n for n in names if n in CSV_COLUMNS and names.count(n) > 1})
        if missing or extra or repeated:
            detail = [
                *([f"missing {', '.join(missing)}"] if missing else []),
                *([f"unexpected {', '.join(extra)}"] if extra else []),
                *([f"repeated {', '.join(repeated)}"] if repeated else []),
            ]
            problems.add(
                (0, header_row, 0),
                f"row {header_row}",
                f"the header must name the columns {expected} ({'; '.join(detail)})",
            )
            return rows, dirty
        col = {name: names.index(name) for name in CSV_COLUMNS}
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            where = f"row {line}"
            if len(record) != len(names):
                problems.add(
                    (0, line, 0), where, f"{len(record)} values, the header has {len(names)}"
                )
                stratum_guess = (
                    record[col["stratum"]].strip() if len(record) > col["stratum"] else ""
                )
                dirty.add(stratum_guess)
                continue
            cells = {name: record[i].strip() for name, i in col.items()}
            wrong: list[str] = []
            stratum = cells["stratum"]
            if not stratum:
                wrong.append("the stratum is empty")
            elif len(stratum) > MAX_STRATUM_LENGTH:
                wrong.append(f"the stratum is longer than {MAX_STRATUM_LENGTH} characters")
            numbers: dict[str, int] = {}
            for name in ("sequence", "block", "block_size"):
                number, why = _number(cells[name], name)
                if why is not None:
                    wrong.append(why)
                elif number is not None:
                    numbers[name] = number
            arm = cells["arm"]
            arm_known = arm in arm_codes
            if not arm_known:
                shown = repr(arm) if arm else "(empty)"
                wrong.append(f"arm {shown} is not an arm of the protocol ({', '.join(arm_codes)})")
            if len(numbers) == 3 and stratum and len(stratum) <= MAX_STRATUM_LENGTH:
                rows.append(
                    _Row(
                        line,
                        stratum,
                        numbers["sequence"],
                        numbers["block"],
                        numbers["block_size"],
                        arm,
                        arm_known,
                    )
                )
            if wrong:
                problems.add((0, line, 0), where, "; ".join(wrong))
                if len(numbers) < 3:
                    dirty.add(stratum)
    except StopIteration:
        problems.add((0, 0, 0), "file", f"the file is empty; expected the header {expected}")
    except csv.Error as exc:
        # the rest of the file is unread, so stratum-level checks would only mislead
        where = f"row {reader.line_num}"
        problems.add((0, reader.line_num, 1), where, f"unreadable CSV ({exc}); reading stopped")
        return [], dirty
    return rows, dirty


def _stratum_format(factors: Sequence[str]) -> str:
    if not factors:
        return "all"
    return "|".join(f"{f}=<site code>" if f == "site" else f"{f}=<value>" for f in factors)


def _stratum_problem(stratum: str, factors: Sequence[str], site_codes: set[str]) -> str | None:
    """Why ``stratum`` can never be drawn from, or None. Names follow randomization's
    ``factor=level`` joined by ``|`` in the protocol's factor order."""
    fmt = _stratum_format(factors)
    if not factors:
        return None if stratum == "all" else f"the protocol has no strata; use {fmt!r}"
    parts = stratum.split("|")
    if len(parts) != len(factors):
        return f"stratum {stratum!r} does not have the form {fmt!r}"
    for part, factor in zip(parts, factors, strict=True):
        name, sep, level = part.partition("=")
        if name != factor or not sep or not level:
            return f"stratum {stratum!r} does not have the form {fmt!r}"
        if factor == "site" and level not in site_codes:
            return f"stratum {stratum!r}: site {level} is not a site of this study"
    return None


def _check_import(
    rows: Sequence[_Row],
    dirty: set[str],
    problems: _Problems,
    *,
    arms: Sequence[ArmRatio],
    factors: Sequence[str],
    site_codes: set[str],
    existing: Mapping[str, Sequence[Slot]],
    appending: bool,
) -> dict[str, list[Slot]]:
    """Every problem of the parsed rows; the slots per stratum (meaningful when none)."""
    by_stratum: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        by_stratum[row.stratum].append(row)
    out: dict[str, list[Slot]] = {}
    for stratum, members in by_stratum.items():
        first = members[0].row
        key_row = [r.row for r in members]
        why = _stratum_problem(stratum, factors, site_codes)
        if why is not None:
            problems.add((1, first, 0), _rows_text(key_row), why)
            continue
        held = existing.get(stratum, ())
        start = max((s.sequence for s in held), default=0) + 1
        seen: dict[int, list[int]] = defaultdict(list)
        for r in members:
            seen[r.sequence].append(r.row)
        for sequence in sorted(seen):
            if len(seen[sequence]) > 1:
                problems.add(
                    (1, seen[sequence][0], 1),
                    _rows_text(seen[sequence]),
                    f"stratum {stratum}: sequence {sequence} appears {len(seen[sequence])} times",
                )
        early = sorted(s for s in seen if s < start)
        if early:
            problems.add(
                (1, seen[early[0]][0], 2),
                _rows_text([n for s in early for n in seen[s]]),
                f"stratum {stratum}: sequence {_ranges(early)} already in the list, which "
                f"holds 1-{start - 1}; added slots continue at {start}",
            )
        if stratum not in dirty:
            missing = sorted(set(range(start, max(seen) + 1)) - set(seen))
            if missing:
                problems.add(
                    (1, first, 3),
                    f"stratum {stratum}",
                    f"sequence numbers missing: {_ranges(missing)} "
                    f"(each stratum runs {start}, {start + 1}, ... without gaps)",
                )
        slots = [Slot(r.sequence, r.block, r.block_size, r.arm) for r in members]
        out[stratum] = slots
        if stratum in dirty:
            continue
        rows_of_block: dict[int, list[int]] = defaultdict(list)
        for r in members:
            rows_of_block[r.block].append(r.row)
        # a block with an unknown arm already has its row's problem; its ratio follows
        unknown_arm_blocks = {r.block for r in members if not r.arm_known}
        for message in check_list([*held, *slots], arms):
            # sequence and arm defects are reported above with their rows; the domain check
            # adds what only it knows: block composition and the ratio within each block
            head, sep, rest = message.partition(": ")
            if not (sep and head.startswith("block ")):
                continue
            number = int(head.removeprefix("block "))
            if number in unknown_arm_blocks:
                continue
            block_rows = rows_of_block.get(number)
            where = _rows_text(block_rows) if block_rows else f"stratum {stratum}"
            held_note = "" if block_rows else " (a block already in the list)"
            problems.add(
                (1, block_rows[0] if block_rows else first, 4),
                where,
                f"stratum {stratum}, block {number}{held_note}: {rest}",
            )
    if not rows and not problems.items:
        problems.add((0, 0, 0), "file", "the file has a header but no slots")
    if not appending and factors == ["site"]:
        uncovered = sorted(site_codes - {s.removeprefix("site=") for s in by_stratum})
        if uncovered and rows:
            problems.add(
                (2, 0, 0),
                "strata",
                f"no rows for site{'s' if len(uncovered) > 1 else ''} {', '.join(uncovered)}; "
                "every site of the study needs a stratum (site=<code>)",
            )
    return out


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
        study_by_id(uow, study_id)
        prow, loaded = _list_design(ctx, uow, study_id)
        arms = arms_of(loaded)
        factors = list(loaded.protocol.randomization.strata)
        site_codes = set(_site_codes(uow, study_id))
        target: AllocationListRow | None = None
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
        problems = _Problems()
        rows, dirty = _parse_csv(csv_text, [code for code, _ in arms], problems)
        cursors: dict[str, StratumCursorRow] = {}
        existing: dict[str, list[Slot]] = {}
        if target is not None:
            for stratum in sorted({r.stratum for r in rows}):
                cursor = _cursor(uow, target.id, stratum, lock=True)
                if cursor is None:
                    continue
                cursors[stratum] = cursor
                existing[stratum] = [
                    decode_slot(ctx, slot)
                    for slot in uow.session.scalars(
                        select(AllocationSlotRow)
                        .where(
                            AllocationSlotRow.list_id == target.id,
                            AllocationSlotRow.stratum == stratum,
                        )
                        .order_by(AllocationSlotRow.sequence)
                    )
                ]
        slots = _check_import(
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
                    uow.session.add(
                        StratumCursorRow(
                            list_id=lst.id,
                            stratum=stratum,
                            next_sequence=1,
                            size=len(added),
                            extensions=0,
                        )
                    )
                else:
                    cursor.size += len(added)
                    cursor.extensions += 1
            action = "import_slots"
        uow.record(
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
    lst: AllocationListRow,
    cursor: StratumCursorRow,
    loaded: LoadedProtocol,
    *,
    blocks: int | None,
    trigger: str,
) -> int:
    if lst.seed_enc is None:
        raise PreconditionFailed(
            f"stratum {cursor.stratum} of the imported {lst.mode} allocation list cannot be "
            "extended (an imported list has no seed); the unblinded statistician must import "
            "more slots ('trialdesk lists import FILE --append')",
            reason="list-exhausted" if trigger == "randomization" else "imported-list",
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
    more = _more_blocks(arms, sizes, rng, previous, blocks)
    _store_slots(uow, ctx, lst.id, cursor.stratum, more)
    cursor.size += len(more)
    cursor.extensions = extension
    uow.record(
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
    return len(more)


def extend_stratum(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    lst: AllocationListRow,
    cursor: StratumCursorRow,
    loaded: LoadedProtocol,
) -> None:
    """Append seeded blocks to an exhausted stratum instead of running out (audited); called
    by randomization under the cursor's lock."""
    _append_blocks(uow, ctx, actor, lst, cursor, loaded, blocks=None, trigger="randomization")


def _status(lst: AllocationListRow, cursor: StratumCursorRow, threshold: int) -> StratumStatus:
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
        study_by_id(uow, study_id)
        prow, loaded = _list_design(ctx, uow, study_id)
        lst = active_list(uow, study_id, mode)
        if lst is None:
            raise PreconditionFailed(
                f"there is no active {mode} allocation list", reason="no-allocation-list"
            )
        cursor = _cursor(uow, lst.id, stratum, lock=True)
        if cursor is None:
            cursor = _add_stratum(uow, ctx, actor, lst, stratum, loaded, blocks, prow.sha256)
        else:
            _append_blocks(
                uow, ctx, actor, lst, cursor, loaded, blocks=blocks, trigger="statistician"
            )
        uow.session.flush()
        status = _status(lst, cursor, loaded.protocol.randomization.low_slots_warning)
        uow.commit()
        return status


def _add_stratum(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    lst: AllocationListRow,
    stratum: str,
    loaded: LoadedProtocol,
    blocks: int | None,
    protocol_sha256: str,
) -> StratumCursorRow:
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
    cursor = StratumCursorRow(
        list_id=lst.id, stratum=stratum, next_sequence=1, size=len(slots), extensions=0
    )
    uow.session.add(cursor)
    uow.record(
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
    uow: UnitOfWork, ctx: ServiceContext, lst: AllocationListRow, cursor: StratumCursorRow
) -> NotificationRow | None:
    """Tell the study manager when a stratum's unused slots fall below the protocol's
    ``randomization.low_slots_warning``: once per crossing, no arm, no list content.

    Call after taking a slot (``cursor.next_sequence`` already advanced), under the cursor's
    lock. Slots are taken one at a time, so a crossing is the draw that leaves exactly
    ``threshold - 1``; a stratum that starts below the threshold is reported at its first
    draw. Extensions raise the count, so a later fall is a new crossing.
    """
    loaded = protocol_of(ctx, current_protocol_row(uow, lst.study_id))
    threshold = loaded.protocol.randomization.low_slots_warning
    used = cursor.next_sequence - 1
    unused = max(cursor.size - used, 0)
    if unused >= threshold or not (unused == threshold - 1 or used == 1):
        return None
    note = NotificationRow(
        study_id=lst.study_id,
        recipient_role=Role.MANAGER.value,
        subject_id=None,
        text=(
            f"Allocation list ({lst.mode}), stratum {cursor.stratum}: {unused} unused "
            f"slot{'s' if unused != 1 else ''} left (warning level {threshold}). "
            "Ask the unblinded statistician to extend the stratum "
            + (
                "('trialdesk lists extend')."
                if lst.seed_enc is not None
                else "by importing more slots; an imported list is not extended automatically."
            )
        ),
        created_at=ctx.now(),
    )
    uow.session.add(note)
    return note


def stratum_status(
    ctx: ServiceContext, actor: Actor, study_id: int, *, mode: str | None = None
) -> list[StratumStatus]:
    """Per stratum of each active list (or of ``mode``): used, unused, extensions; no arms."""
    if mode is not None:
        _check_mode(mode)
    with ctx.uow(readonly=True) as uow:
        require_custodian(actor, study_id, "view allocation list status")
        study_by_id(uow, study_id)
        loaded = protocol_of(ctx, current_protocol_row(uow, study_id))
        threshold = loaded.protocol.randomization.low_slots_warning
        out: list[StratumStatus] = []
        for m in MODES if mode is None else (mode,):
            lst = active_list(uow, study_id, m)
            if lst is None:
                continue
            for cursor in uow.session.scalars(
                select(StratumCursorRow)
                .where(StratumCursorRow.list_id == lst.id)
                .order_by(StratumCursorRow.stratum)
            ):
                out.append(_status(lst, cursor, threshold))
        return out


def list_info(ctx: ServiceContext, actor: Actor, study_id: int) -> list[ListInfo]:
    """Every list of the study with its fingerprint, never its content."""
    with ctx.uow(readonly=True) as uow:
        require_custodian(actor, study_id, "view allocation lists")
        out = []
        for lst in uow.session.scalars(
            select(AllocationListRow)
            .where(AllocationListRow.study_id == study_id)
            .order_by(AllocationListRow.id)
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


def _list_row(uow: UnitOfWork, study_id: int, list_id: int) -> AllocationListRow:
    lst = uow.session.get(AllocationListRow, list_id)
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
        study_by_id(uow, study_id)
        _lock_study(uow, study_id)
        lst = _list_row(uow, study_id, list_id)
        if not lst.active:
            raise PreconditionFailed(
                f"allocation list {lst.id} is already out of use", reason="list-inactive"
            )
        used = uow.session.scalar(
            select(func.count())
            .select_from(AllocationSlotRow)
            .where(
                AllocationSlotRow.list_id == lst.id,
                AllocationSlotRow.used_by_subject_id.is_not(None),
            )
        )
        if lst.mode == "live" and used:
            raise PreconditionFailed(
                f"live allocation list {lst.id} has allocated subjects; a live list in use is "
                "extended, never replaced",
                reason="list-in-use",
            )
        lst.active = False
        uow.record(_list_entry(ctx, actor, lst, "discard_list", {"mode": lst.mode, "reason": text}))
        strata, slots = _sizes(uow, lst.id)
        uow.commit()
        return ListInfo(
            lst.id, lst.mode, lst.method, strata, slots, lst.fingerprint, lst.source, False
        )


def _sizes(uow: UnitOfWork, list_id: int) -> tuple[int, int]:
    strata = uow.session.scalar(
        select(func.count())
        .select_from(StratumCursorRow)
        .where(StratumCursorRow.list_id == list_id)
    )
    slots = uow.session.scalar(
        select(func.count())
        .select_from(AllocationSlotRow)
        .where(AllocationSlotRow.list_id == list_id)
    )
    return int(strata or 0), int(slots or 0)


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
        study = study_by_id(uow, study_id)
        lst = _list_row(uow, study_id, list_id)
        slots = _list_slots(ctx, uow, lst.id)
        rows = [
            [stratum, s.sequence, s.block_number, s.block_size, s.arm]
            for stratum in sorted(slots)
            for s in slots[stratum]
        ]
        uow.record(
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
