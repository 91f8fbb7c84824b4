"""Checking and fingerprinting allocation lists (RAND-3).

Lists made elsewhere (imported from CSV) get the same checks as our own before any slot is
used, and every list is fingerprinted at load so later reads can prove it is unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from itertools import pairwise

from trialdesk.domain.randomization.arms import ArmRatio, ratio_sum, validate_arms
from trialdesk.domain.randomization.blocks import Slot

FINGERPRINT_HEADER = "trialdesk-allocation-list/1"


def _ranges(numbers: Sequence[int]) -> str:
    """``[3, 7, 8, 9]`` -> ``"3, 7-9"``: short enough for one line of a refusal."""
    parts: list[str] = []
    start = prev = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == prev + 1:
            prev = number
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if number is not None:
            start = prev = number
    return ", ".join(parts)


def check_list(slots: Sequence[Slot], arms: Sequence[ArmRatio]) -> list[str]:
    """Every defect of one stratum's list, in a stable order; an empty result means usable.

    Checks: sequences are 1..n with no duplicate or gap; every arm is known; each block's
    slots agree on one size that is a multiple of the ratio sum, sit together in sequence
    order, are not more than the size, and only the last block may be incomplete; every
    complete block holds the arms exactly in ratio.
    """
    checked = validate_arms(arms)
    if not slots:
        return ["the list has no slots"]
    problems: list[str] = []
    known = {code for code, _ in checked}
    total = ratio_sum(checked)
    ratio_text = ":".join(str(ratio) for _, ratio in checked)

    sequences = Counter(slot.sequence for slot in slots)
    below = sorted(number for number in sequences if number < 1)
    if below:
        problems.append(f"sequence numbers below 1: {', '.join(map(str, below))}")
    for number in sorted(sequences):
        if sequences[number] > 1:
            problems.append(f"sequence {number} appears {sequences[number]} times")
    missing = sorted(set(range(1, max(sequences) + 1)) - set(sequences))
    if missing:
        problems.append(f"sequence numbers missing: {_ranges(missing)}")

    unknown: dict[str, list[int]] = defaultdict(list)
    for slot in slots:
        if slot.arm not in known:
            unknown[slot.arm].append(slot.sequence)
    for arm in sorted(unknown):
        where = ", ".join(map(str, sorted(unknown[arm])))
        problems.append(f"unknown arm {arm!r} at sequence {where}")

    ordered = sorted(slots, key=lambda slot: (slot.sequence, slot.block_number))
    runs: list[int] = []
    for slot in ordered:
        if not runs or runs[-1] != slot.block_number:
            runs.append(slot.block_number)
    scattered = sorted(
        {number for index, number in enumerate(runs) if number in runs[:index]}
        | {number for prev, number in pairwise(runs) if number < prev}
    )
    for number in scattered:
        problems.append(f"block {number}: its slots are not together in sequence order")

    blocks: dict[int, list[Slot]] = defaultdict(list)
    for slot in ordered:
        blocks[slot.block_number].append(slot)
    last_block = max(blocks)
    for number in sorted(blocks):
        members = blocks[number]
        if number < 1:
            problems.append(f"block {number}: block numbers start at 1")
        sizes = sorted({slot.block_size for slot in members})
        if len(sizes) > 1:
            problems.append(
                f"block {number}: its slots disagree on the block size "
                f"({', '.join(map(str, sizes))})"
            )
            continue
        size = sizes[0]
        if size < 1 or size % total:
            problems.append(
                f"block {number}: size {size} is not a multiple of {total}, "
                f"the sum of the ratio {ratio_text}"
            )
            continue
        if len(members) > size:
            problems.append(f"block {number}: {len(members)} slots in a block of size {size}")
            continue
        if len(members) < size:
            if number != last_block:
                problems.append(
                    f"block {number}: {len(members)} of {size} slots, "
                    "but only the last block may be incomplete"
                )
            continue
        counts = Counter(slot.arm for slot in members)
        expected = {code: ratio * size // total for code, ratio in checked}
        if any(counts.get(code, 0) != want for code, want in expected.items()):
            found = ", ".join(f"{code} {counts.get(code, 0)}" for code, _ in checked)
            problems.append(f"block {number}: arm counts {found} break the ratio {ratio_text}")
    return problems


def canonical_text(stratum_slots: Mapping[str, Sequence[Slot]]) -> str:
    """The text a fingerprint is taken over, so anyone can recompute it from a list file.

    First line ``trialdesk-allocation-list/1``; then one line per slot, strata in Unicode
    code-point order of their names and slots by (sequence, block number, block size, arm);
    each line is the compact JSON array ``["<stratum>",<sequence>,<block_number>,
    <block_size>,"<arm>"]`` (no spaces, non-ASCII kept as is); every line ends with
    ``\\n``. JSON quoting keeps names with commas, tabs or newlines unambiguous. A stratum
    with no slots adds no line.
    """
    lines = [FINGERPRINT_HEADER]
    for stratum in sorted(stratum_slots):
        ordered = sorted(
            stratum_slots[stratum],
            key=lambda s: (s.sequence, s.block_number, s.block_size, s.arm),
        )
        for slot in ordered:
            row = [stratum, slot.sequence, slot.block_number, slot.block_size, slot.arm]
            lines.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
    return "".join(line + "\n" for line in lines)


def fingerprint(stratum_slots: Mapping[str, Sequence[Slot]]) -> str:
    """Lower-case hex SHA-256 of the UTF-8 :func:`canonical_text` of the list."""
    return hashlib.sha256(canonical_text(stratum_slots).encode("utf-8")).hexdigest()
