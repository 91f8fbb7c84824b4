"""Stratified permuted blocks with randomly varying block sizes (RAND-2).

A list is made per stratum before enrolment and kept concealed; each block holds every arm
in exact proportion to its ratio, in random order, and its size is drawn from the protocol's
set so that a site cannot tell where one block ends (the reason for varying sizes).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.randomization.arms import ArmRatio, ratio_sum, validate_arms


@dataclass(frozen=True, slots=True)
class Slot:
    """One position of a stratum's list; ``sequence`` is 1-based within the stratum."""

    sequence: int
    block_number: int
    block_size: int
    arm: str


def validate_block_sizes(arms: Sequence[ArmRatio], block_sizes: Iterable[int]) -> tuple[int, ...]:
    """Sorted distinct sizes, each a positive multiple of the ratio sum, else a refusal.

    Sorting makes ``[4, 2]`` and ``[2, 4]`` the same design, so the same seed gives the
    same list whichever order the protocol lists the sizes in.
    """
    total = ratio_sum(arms)
    sizes = sorted(set(block_sizes))
    if not sizes:
        raise ValidationFailed("at least one block size is needed", {"block_sizes": "empty"})
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValidationFailed(
                f"block size {size!r} is not a positive integer", {"block_sizes": repr(size)}
            )
        if size % total:
            ratio_text = ":".join(str(ratio) for _, ratio in arms)
            raise ValidationFailed(
                f"block size {size} is not a multiple of {total}, the sum of the ratio "
                f"{ratio_text}",
                {"block_sizes": str(size)},
            )
    return tuple(sizes)


def generate_blocks(
    arms: Sequence[ArmRatio],
    block_sizes: Iterable[int],
    n_slots: int,
    rng: random.Random,
    *,
    after: Sequence[Slot] = (),
) -> list[Slot]:
    """Whole blocks totalling at least ``n_slots`` slots for one stratum.

    ``after`` is the stratum's existing list when extending it: numbering continues from
    its last sequence and block number, and only the new slots are returned. The caller
    seeds ``rng`` with :func:`~trialdesk.domain.randomization.seeds.derive_seed`.
    """
    checked = validate_arms(arms)
    sizes = validate_block_sizes(checked, block_sizes)
    if isinstance(n_slots, bool) or not isinstance(n_slots, int) or n_slots < 0:
        raise ValidationFailed(
            "the number of slots must be an integer of at least 0", {"n_slots": repr(n_slots)}
        )
    total = ratio_sum(checked)
    sequence = max((slot.sequence for slot in after), default=0)
    block_number = max((slot.block_number for slot in after), default=0)
    slots: list[Slot] = []
    while len(slots) < n_slots:
        size = rng.choice(sizes)
        copies = size // total
        content = [code for code, ratio in checked for _ in range(ratio * copies)]
        rng.shuffle(content)
        block_number += 1
        for arm in content:
            sequence += 1
            slots.append(Slot(sequence, block_number, size, arm))
    return slots
