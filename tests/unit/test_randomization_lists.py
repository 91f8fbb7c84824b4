"""Checking imported allocation lists (RAND-3): each defect is caught and named."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.randomization import Slot, check_list, generate_blocks

ARMS = [("INT", 1), ("CTRL", 1)]


def _list() -> list[Slot]:
    """Blocks 1..3 of sizes 2, 4, 2: INT CTRL | CTRL INT INT CTRL | CTRL INT."""
    arms = ["INT", "CTRL", "CTRL", "INT", "INT", "CTRL", "CTRL", "INT"]
    blocks = [(1, 2), (1, 2), (2, 4), (2, 4), (2, 4), (2, 4), (3, 2), (3, 2)]
    return [
        Slot(index + 1, number, size, arm)
        for index, ((number, size), arm) in enumerate(zip(blocks, arms, strict=True))
    ]


def test_rand_3_valid_list_has_no_problems() -> None:
    assert check_list(_list(), ARMS) == []


def test_rand_3_truncated_last_block_is_accepted() -> None:
    """RAND-3: a list may end mid-block (the last block need not be used up)."""
    assert check_list(_list()[:-1], ARMS) == []


def _with(slots: list[Slot], index: int, **changes: object) -> list[Slot]:
    changed = list(slots)
    changed[index] = replace(changed[index], **changes)  # type: ignore[arg-type]
    return changed


@pytest.mark.parametrize(
    ("slots", "expected"),
    [
        pytest.param(
            [*_list(), Slot(8, 4, 2, "INT")],
            ["sequence 8 appears 2 times"],
            id="duplicate-sequence",
        ),
        pytest.param(
            [s for s in _list() if s.sequence not in (3, 4)] + [Slot(9, 3, 2, "CTRL")],
            None,
            id="gap",
        ),
        pytest.param(_with(_list(), 0, arm="PLACEBO"), None, id="unknown-arm"),
        pytest.param(_with(_list(), 2, arm="INT"), None, id="ratio-broken"),
        pytest.param(_with(_list(), 3, block_size=6), None, id="sizes-disagree"),
        pytest.param(
            [replace(s, block_size=3) if s.block_number == 1 else s for s in _list()],
            None,
            id="size-not-multiple",
        ),
        pytest.param(
            [Slot(1, 1, 2, "INT"), Slot(2, 1, 2, "CTRL"), Slot(3, 1, 2, "INT")],
            ["block 1: 3 slots in a block of size 2"],
            id="overfull",
        ),
        pytest.param([s for s in _list() if s.sequence != 3], None, id="short-block-inside"),
        pytest.param(_with(_list(), 4, block_number=3), None, id="block-scattered"),
        pytest.param(_with(_list(), 0, sequence=0), None, id="sequence-below-one"),
        pytest.param([], ["the list has no slots"], id="empty"),
    ],
)
def test_rand_3_each_defect_is_caught(slots: list[Slot], expected: list[str] | None) -> None:
    """RAND-3: an imported list with any one defect is not usable."""
    problems = check_list(slots, ARMS)
    assert problems
    if expected is not None:
        assert problems == expected


def test_rand_3_problems_name_the_defect() -> None:
    """RAND-3: the message says what and where, so the statistician can fix the file."""
    assert check_list(_with(_list(), 0, arm="PLACEBO"), ARMS) == [
        "unknown arm 'PLACEBO' at sequence 1",
        "block 1: arm counts INT 0, CTRL 1 break the ratio 1:1",
    ]
    assert check_list(_with(_list(), 2, arm="INT"), ARMS) == [
        "block 2: arm counts INT 3, CTRL 1 break the ratio 1:1"
    ]
    gap = [s for s in _list() if s.sequence not in (3, 4, 6)]
    assert "sequence numbers missing: 3-4, 6" in check_list(gap, ARMS)
    assert check_list(_with(_list(), 3, block_size=6), ARMS) == [
        "block 2: its slots disagree on the block size (4, 6)"
    ]
    assert check_list([s for s in _list() if s.sequence != 3], ARMS) == [
        "sequence numbers missing: 3",
        "block 2: 3 of 4 slots, but only the last block may be incomplete",
    ]
    assert check_list(_with(_list(), 4, block_number=3), ARMS) == [
        "block 2: its slots are not together in sequence order",
        "block 3: its slots are not together in sequence order",
        "block 2: 3 of 4 slots, but only the last block may be incomplete",
        "block 3: its slots disagree on the block size (2, 4)",
    ]


@given(
    st.sampled_from([[("A", 1), ("B", 1)], [("A", 2), ("B", 1)], [("A", 1), ("B", 2), ("C", 3)]]),
    st.integers(2, 40),
    st.integers(0, 2**32),
    st.data(),
)
def test_rand_3_any_changed_arm_in_a_complete_block_is_caught(
    arms: list[tuple[str, int]], n_slots: int, seed: int, data: st.DataObject
) -> None:
    """RAND-3: changing one allocation of a generated list always breaks its check."""
    total = sum(ratio for _, ratio in arms)
    slots = generate_blocks(arms, [total, 2 * total], n_slots, random.Random(seed))
    index = data.draw(st.integers(0, len(slots) - 1))
    other = data.draw(st.sampled_from([code for code, _ in arms if code != slots[index].arm]))
    problems = check_list(_with(slots, index, arm=other), arms)
    assert any("break the ratio" in problem for problem in problems)


def test_rand_3_bad_arms_are_refused_not_reported() -> None:
    """The arms come from the protocol, so a wrong arm list is the caller's error."""
    with pytest.raises(ValidationFailed):
        check_list(_list(), [("INT", 1)])
