"""Pocock–Simon minimization and complete randomization (RAND-1, RAND-2)."""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.randomization import (
    Imbalance,
    complete_assign,
    minimization_assign,
    minimization_scores,
)

ONE_ONE = [("INT", 1), ("CTRL", 1)]
Counts = dict[str, dict[str, dict[str, int]]]


def _run(
    arms: list[tuple[str, int]],
    levels: list[dict[str, str]],
    weights: dict[str, float],
    probability: float,
    seed: int,
    imbalance: Imbalance = "range",
) -> tuple[Counts, list[Counts]]:
    """Randomize subjects one after another, keeping the counts a service would keep."""
    rng = random.Random(seed)
    counts: Counts = {}
    history: list[Counts] = []
    for subject in levels:
        decision = minimization_assign(
            arms,
            counts,
            subject,
            weights,
            imbalance,
            probability,
            rng,
        )
        for factor, level in subject.items():
            cell = counts.setdefault(factor, {}).setdefault(level, {})
            cell[decision.arm] = cell.get(decision.arm, 0) + 1
        history.append({f: {lv: dict(c) for lv, c in v.items()} for f, v in counts.items()})
    return counts, history


@given(
    st.lists(st.sampled_from(["S01", "S02", "S03", "S04"]), min_size=1, max_size=80),
    st.integers(0, 2**32),
    st.sampled_from(["range", "variance"]),
)
def test_rand_2_minimization_p1_keeps_every_level_within_one(
    sites: list[str], seed: int, imbalance: Imbalance
) -> None:
    """RAND-2: deterministic minimization on one factor never lets a site drift past 1."""
    _, history = _run(ONE_ONE, [{"site": s} for s in sites], {"site": 1.0}, 1.0, seed, imbalance)
    for counts in history:
        for cell in counts["site"].values():
            assert abs(cell.get("INT", 0) - cell.get("CTRL", 0)) <= 1


@given(
    st.lists(st.integers(1, 4), min_size=2, max_size=4),
    st.lists(st.sampled_from(["S01", "S02"]), min_size=1, max_size=60),
    st.integers(0, 2**32),
)
def test_rand_1_minimization_p1_keeps_unequal_ratios(
    ratios: list[int], sites: list[str], seed: int
) -> None:
    """RAND-1: with ratios, counts divided by ratio stay within 1 of each other per level."""
    arms = [(f"A{index}", ratio) for index, ratio in enumerate(ratios)]
    _, history = _run(arms, [{"site": s} for s in sites], {"site": 1.0}, 1.0, seed)
    for counts in history:
        for cell in counts["site"].values():
            adjusted = [Fraction(cell.get(code, 0), ratio) for code, ratio in arms]
            assert max(adjusted) - min(adjusted) <= 1


def test_rand_2_scores_are_weighted_sums_of_range_and_variance() -> None:
    """RAND-2: the Pocock–Simon total for a hand-worked case (two factors, weights 2 and 1)."""
    counts = {"sex": {"M": {"INT": 3, "CTRL": 2}}, "age": {"old": {"INT": 1, "CTRL": 3}}}
    subject = {"sex": "M", "age": "old"}
    weights = {"sex": 2.0, "age": 1.0}
    # INT: sex (4,2) range 2, age (2,3) range 1 -> 2*2 + 1 = 5; CTRL: (3,3) 0, (1,4) 3 -> 3
    assert minimization_scores(ONE_ONE, counts, subject, weights, "range") == {
        "INT": 5,
        "CTRL": 3,
    }
    # variance over arms: (4,2) -> 1, (2,3) -> 1/4; (3,3) -> 0, (1,4) -> 9/4
    assert minimization_scores(ONE_ONE, counts, subject, weights, "variance") == {
        "INT": Fraction(9, 4),
        "CTRL": Fraction(9, 4),
    }
    decision = minimization_assign(
        ONE_ONE, counts, subject, weights, "range", 1.0, random.Random(0)
    )
    assert decision.preferred_arm == "CTRL"
    assert decision.arm == "CTRL"
    assert decision.took_preferred
    assert decision.scores_by_arm() == {"INT": 5.0, "CTRL": 3.0}
    assert decision.to_audit()["tied_arms"] == ["CTRL"]


def test_rand_1_counts_are_divided_by_ratio() -> None:
    """RAND-1: at 2:1 an empty trial prefers the arm of weight 2 (1/2 apart, not 1)."""
    scores = minimization_scores([("INT", 2), ("CTRL", 1)], {}, {"site": "S"}, {"site": 1.0})
    assert scores == {"INT": Fraction(1, 2), "CTRL": 1}


def test_rand_2_ties_are_broken_at_random() -> None:
    """RAND-2: with nothing to balance, either arm may be preferred."""
    preferred = Counter(
        minimization_assign(
            ONE_ONE, {}, {"site": "S"}, {"site": 1.0}, "range", 1.0, random.Random(seed)
        ).preferred_arm
        for seed in range(400)
    )
    assert set(preferred) == {"INT", "CTRL"}
    assert abs(preferred["INT"] - 200) < 5 * 10  # 5 standard deviations


def test_rand_2_preferred_arm_is_taken_with_the_stated_probability() -> None:
    """RAND-2: the random element: the other arm is given with probability 1 - p."""
    counts = {"site": {"S": {"INT": 3, "CTRL": 0}}}
    rng = random.Random(11)
    decisions = [
        minimization_assign(ONE_ONE, counts, {"site": "S"}, {"site": 1.0}, "range", 0.7, rng)
        for _ in range(4000)
    ]
    taken = sum(decision.took_preferred for decision in decisions)
    assert abs(taken - 2800) < 5 * (4000 * 0.7 * 0.3) ** 0.5
    for decision in decisions:
        assert decision.preferred_arm == "CTRL"
        assert (decision.arm == "CTRL") == decision.took_preferred
        assert (decision.draw < 0.7) == decision.took_preferred


def test_rand_3_minimization_is_reproducible_from_the_seed() -> None:
    """RAND-3: the same seed and counts give the same decision sequence."""
    sites = [{"site": f"S{i % 3}"} for i in range(50)]
    assert _run(ONE_ONE, sites, {"site": 1.0}, 0.8, 5) == _run(
        ONE_ONE, sites, {"site": 1.0}, 0.8, 5
    )


@pytest.mark.parametrize(
    ("counts", "levels", "weights", "imbalance", "probability", "fragment"),
    [
        ({}, {"site": "S"}, {"site": 1.0}, "max", 0.8, "imbalance must be"),
        ({}, {"site": "S"}, {"site": 1.0}, "range", 0.0, "probability"),
        ({}, {"site": "S"}, {"site": 1.0}, "range", 1.5, "probability"),
        ({}, {}, {"site": 1.0}, "range", 0.8, "no level for factor 'site'"),
        ({}, {"site": "S", "sex": "F"}, {"site": 1.0}, "range", 0.8, "'sex' has no weight"),
        ({}, {"site": "S"}, {"site": 0.0}, "range", 0.8, "positive number"),
        ({}, {}, {}, "range", 0.8, "at least one factor"),
        ({"site": {"S": {"PLACEBO": 1}}}, {"site": "S"}, {"site": 1.0}, "range", 0.8, "unknown"),
        ({"site": {"S": {"INT": -1}}}, {"site": "S"}, {"site": 1.0}, "range", 0.8, "not a count"),
    ],
)
def test_rand_2_bad_minimization_input_is_refused(
    counts: Counts,
    levels: dict[str, str],
    weights: dict[str, float],
    imbalance: str,
    probability: float,
    fragment: str,
) -> None:
    with pytest.raises(ValidationFailed, match=fragment):
        minimization_assign(
            ONE_ONE,
            counts,
            levels,
            weights,
            imbalance,  # type: ignore[arg-type]
            probability,
            random.Random(0),
        )


def test_rand_1_complete_randomization_follows_the_ratio() -> None:
    """RAND-1/RAND-2: complete randomization at 1:2:3 gives each arm its share."""
    arms = [("A", 1), ("B", 2), ("C", 3)]
    rng = random.Random(8)
    counts = Counter(complete_assign(arms, rng) for _ in range(6000))
    for code, ratio in arms:
        share = ratio / 6
        assert abs(counts[code] - 6000 * share) < 5 * (6000 * share * (1 - share)) ** 0.5


def test_rand_3_complete_randomization_is_reproducible() -> None:
    rng_a, rng_b = random.Random(4), random.Random(4)
    sequence = [complete_assign(ONE_ONE, rng_a) for _ in range(30)]
    assert sequence == [complete_assign(ONE_ONE, rng_b) for _ in range(30)]
    assert set(sequence) == {"INT", "CTRL"}


def test_rand_1_complete_randomization_needs_two_arms() -> None:
    with pytest.raises(ValidationFailed, match="at least two arms"):
        complete_assign([("A", 1)], random.Random(0))
