"""Permuted blocks, seeds and fingerprints (RAND-1, RAND-2, RAND-3)."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.randomization import (
    Slot,
    check_list,
    derive_seed,
    fingerprint,
    generate_blocks,
)


@st.composite
def designs(draw: st.DrawFn) -> tuple[list[tuple[str, int]], list[int]]:
    """Any number of arms with random integer ratios, and block sizes fitting them."""
    ratios = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    arms = [(f"ARM{index}", ratio) for index, ratio in enumerate(ratios)]
    multiples = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    return arms, [k * sum(ratios) for k in multiples]


def _blocks(slots: list[Slot]) -> dict[int, list[Slot]]:
    blocks: dict[int, list[Slot]] = {}
    for slot in slots:
        blocks.setdefault(slot.block_number, []).append(slot)
    return blocks


@given(designs(), st.integers(0, 80), st.integers(0, 2**64))
@example(([("INT", 1), ("CTRL", 1)], [2, 4]), 352, 1)
@example(([("A", 2), ("B", 1)], [3, 6]), 50, 7)
@example(([("A", 1), ("B", 2), ("C", 3)], [6, 12]), 40, 11)
def test_rand_1_ratio_holds_in_every_block(
    design: tuple[list[tuple[str, int]], list[int]], n_slots: int, seed: int
) -> None:
    """RAND-1/RAND-2: whole blocks, each holding every arm exactly in ratio."""
    arms, sizes = design
    slots = generate_blocks(arms, sizes, n_slots, random.Random(seed))
    total = sum(ratio for _, ratio in arms)
    assert len(slots) >= n_slots
    assert len(slots) - n_slots < max(sizes)  # no whole block more than needed
    assert [slot.sequence for slot in slots] == list(range(1, len(slots) + 1))
    blocks = _blocks(slots)
    assert list(blocks) == list(range(1, len(blocks) + 1))
    for members in blocks.values():
        size = members[0].block_size
        assert size in sizes
        assert len(members) == size
        counts = Counter(slot.arm for slot in members)
        assert counts == {code: ratio * size // total for code, ratio in arms}
    assert check_list(slots, arms) == ([] if n_slots else ["the list has no slots"])


@given(designs(), st.integers(1, 60), st.integers(0, 2**64), st.text(max_size=12))
def test_rand_3_same_seed_gives_same_list_and_fingerprint(
    design: tuple[list[tuple[str, int]], list[int]], n_slots: int, master: int, stratum: str
) -> None:
    """RAND-3: the list is regenerated exactly from the recorded master seed."""
    arms, sizes = design
    first = generate_blocks(arms, sizes, n_slots, random.Random(derive_seed(master, stratum)))
    again = generate_blocks(arms, sizes, n_slots, random.Random(derive_seed(master, stratum)))
    assert first == again
    assert fingerprint({stratum: first}) == fingerprint({stratum: again})


@given(st.integers(0, 2**64), st.text(max_size=12), st.text(max_size=12))
def test_rand_3_different_strata_get_different_seeds(master: int, one: str, other: str) -> None:
    """RAND-3: each stratum's list has its own derived seed (64-bit, collisions ~2^-64)."""
    if one != other:
        assert derive_seed(master, one) != derive_seed(master, other)
    assert derive_seed(master, one) != derive_seed(master + 1, one)
    assert derive_seed(master, one, 1) != derive_seed(master, one, 2)
    assert derive_seed(master, one) == derive_seed(master, one, 0)
    assert 0 <= derive_seed(master, one) < 2**64


def test_rand_3_derived_seed_follows_the_documented_formula() -> None:
    """RAND-3: the seed is recomputable outside trialdesk, so it must never drift."""
    text = "trialdesk.randomization.seed.v1\x1f20240517\x1f2\x1fSITE-07"
    expected = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    assert derive_seed(20240517, "SITE-07", 2) == expected


def test_rand_3_strata_lists_differ_for_different_strata() -> None:
    """RAND-3: two sites under one master seed do not share one allocation sequence."""
    arms = [("INT", 1), ("CTRL", 1)]
    lists = {
        site: generate_blocks(arms, [2, 4], 40, random.Random(derive_seed(99, site)))
        for site in ("S01", "S02", "S03")
    }
    sequences = {tuple(slot.arm for slot in slots) for slots in lists.values()}
    assert len(sequences) == 3


def test_rand_3_extension_continues_numbering_reproducibly() -> None:
    """RAND-3: blocks appended later (extension 1) continue the stratum and regenerate."""
    arms = [("INT", 1), ("CTRL", 1)]
    first = generate_blocks(arms, [2, 4], 10, random.Random(derive_seed(5, "S01", 0)))
    more = generate_blocks(arms, [2, 4], 8, random.Random(derive_seed(5, "S01", 1)), after=first)
    again = generate_blocks(arms, [2, 4], 8, random.Random(derive_seed(5, "S01", 1)), after=first)
    assert more == again
    assert more[0].sequence == first[-1].sequence + 1
    assert more[0].block_number == first[-1].block_number + 1
    assert check_list([*first, *more], arms) == []


def test_rand_2_block_sizes_vary_and_orders_are_uniform() -> None:
    """RAND-2: sizes are drawn from the set and each arrangement of a block is equally likely."""
    arms = [("INT", 1), ("CTRL", 1)]
    slots = generate_blocks(arms, [2, 4], 6000 * 3, random.Random(2024))
    blocks = _blocks(slots)
    sizes = Counter(members[0].block_size for members in blocks.values())
    n_blocks = len(blocks)
    assert abs(sizes[2] - n_blocks / 2) < 5 * (n_blocks / 4) ** 0.5
    patterns = Counter(
        tuple(slot.arm for slot in members)
        for members in blocks.values()
        if members[0].block_size == 4
    )
    assert len(patterns) == 6  # C(4, 2) arrangements of INT,INT,CTRL,CTRL
    expected = sizes[4] / 6
    for count in patterns.values():
        assert abs(count - expected) < 5 * (expected * 5 / 6) ** 0.5


def test_rand_2_block_size_order_in_the_set_does_not_matter() -> None:
    """RAND-3: [4, 2] and [2, 4] are one design, so one seed gives one list."""
    arms = [("INT", 1), ("CTRL", 1)]
    assert generate_blocks(arms, [4, 2], 30, random.Random(1)) == generate_blocks(
        arms, [2, 4, 4], 30, random.Random(1)
    )


@pytest.mark.parametrize(
    ("arms", "sizes", "n_slots", "fragment"),
    [
        ([("INT", 1), ("CTRL", 1)], [3], 10, "not a multiple of 2"),
        ([("A", 1), ("B", 2), ("C", 3)], [6, 9], 10, "block size 9 is not a multiple of 6"),
        ([("INT", 1), ("CTRL", 1)], [], 10, "at least one block size"),
        ([("INT", 1), ("CTRL", 1)], [0], 10, "not a positive integer"),
        ([("INT", 1)], [2], 10, "at least two arms"),
        ([("INT", 1), ("INT", 1)], [2], 10, "listed twice"),
        ([("INT", 0), ("CTRL", 1)], [2], 10, "ratio 0"),
        ([("INT", 1), ("CTRL", 1)], [2], -1, "number of slots"),
    ],
)
def test_rand_2_bad_design_is_refused(
    arms: list[tuple[str, int]], sizes: list[int], n_slots: int, fragment: str
) -> None:
    """RAND-2: a design that cannot keep the ratio is refused with a clear reason."""
    with pytest.raises(ValidationFailed, match=fragment):
        generate_blocks(arms, sizes, n_slots, random.Random(0))


def test_rand_3_fingerprint_is_sha256_of_the_documented_text() -> None:
    """RAND-3: anyone can recompute the fingerprint from the list; order of storage is moot."""
    s01 = [Slot(1, 1, 2, "CTRL"), Slot(2, 1, 2, "INT")]
    s02 = [Slot(2, 1, 2, "CTRL"), Slot(1, 1, 2, "INT")]
    text = (
        "trialdesk-allocation-list/1\n"
        '["S01",1,1,2,"CTRL"]\n["S01",2,1,2,"INT"]\n'
        '["S02",1,1,2,"INT"]\n["S02",2,1,2,"CTRL"]\n'
    )
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert fingerprint({"S02": s02, "S01": s01}) == expected
    assert fingerprint({"S01": list(reversed(s01)), "S02": s02}) == expected


def test_rand_3_fingerprint_changes_with_any_slot() -> None:
    """RAND-3: a swapped arm, a moved stratum or a renumbered block changes the fingerprint."""
    slots = generate_blocks([("INT", 1), ("CTRL", 1)], [2, 4], 12, random.Random(3))
    base = fingerprint({"S01": slots})
    swapped = [
        Slot(s.sequence, s.block_number, s.block_size, "CTRL" if s.arm == "INT" else "INT")
        for s in slots
    ]
    renumbered = [Slot(s.sequence, s.block_number + 1, s.block_size, s.arm) for s in slots]
    variants = [
        fingerprint({"S01": swapped}),
        fingerprint({"S02": slots}),
        fingerprint({"S01": renumbered}),
        fingerprint({"S01": slots[:-1]}),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_rand_3_fingerprint_keeps_odd_names_apart() -> None:
    """RAND-3: names with separators cannot make two different lists read the same."""
    one = {"a,1": [Slot(1, 1, 2, "X")]}
    other = {"a": [Slot(1, 1, 2, "X")]}
    assert fingerprint(one) != fingerprint(other)
