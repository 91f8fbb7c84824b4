"""Design assessment simulator against closed forms and hard bounds (RAND-2)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.randomization import minimization_assign
from trialdesk.stats.design import assess, expected_abs_difference_complete

KEYS = {
    "method",
    "subjects",
    "simulations",
    "strata",
    "block_sizes",
    "selection_bias",
    "final_imbalance",
    "max_abs_imbalance_during",
    "seconds",
    "interpretation",
}


def _rate(result: dict[str, Any]) -> tuple[float, float]:
    bias = result["selection_bias"]
    return bias["convergence_correct_guess_rate"], bias["standard_error"]


@pytest.mark.parametrize("strata", [1, 4])
def test_rand_2_complete_randomization_cannot_be_guessed(strata: int) -> None:
    """RAND-2: a convergence guesser is right half the time under complete randomization."""
    result = assess("complete", strata=strata, subjects=40, simulations=3000, seed=1)
    rate, se = _rate(result)
    assert abs(rate - 0.5) <= 3 * se
    assert set(result) >= KEYS


def test_rand_2_complete_randomization_mean_gap_is_exact() -> None:
    """RAND-2: E|D_N| = N·C(N, N/2)/2^N for N subjects at 1:1 (N even)."""
    n, sims = 40, 4000
    exact = n * math.comb(n, n // 2) / 2**n
    assert expected_abs_difference_complete(n) == pytest.approx(exact)
    result = assess("complete", subjects=n, simulations=sims, seed=2)
    # Var|D| = E[D²] - (E|D|)² = N - exact²
    se = math.sqrt((n - exact**2) / sims)
    assert abs(result["final_imbalance"]["mean_abs"] - exact) <= 3 * se


def test_rand_2_odd_n_reference_gap_is_exact() -> None:
    """E|D_3| by enumeration: |D| is 3 with probability 1/4 and 1 with probability 3/4."""
    assert expected_abs_difference_complete(3) == pytest.approx(1.5)
    assert expected_abs_difference_complete(1) == pytest.approx(1.0)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_rand_2_fixed_blocks_match_blackwell_hodges(m: int) -> None:
    """RAND-2: blocks of 2m give m + 2^(2m-1)/C(2m, m) - 1/2 correct guesses per block."""
    size = 2 * m
    result = assess("blocks", block_sizes=[size], subjects=size * 10, simulations=3000, seed=3 + m)
    expected = (m + 2 ** (2 * m - 1) / math.comb(2 * m, m) - 0.5) / size
    rate, se = _rate(result)
    assert abs(rate - expected) <= 3 * se
    assert result["final_imbalance"]["max_abs"] == 0  # every block completed


def test_rand_2_open_blocks_bound_the_gap() -> None:
    """RAND-2: each stratum's unfinished block can add at most half its size to the gap."""
    strata, sizes = 6, [2, 4, 6]
    result = assess(
        "blocks", block_sizes=sizes, strata=strata, subjects=53, simulations=2000, seed=7
    )
    assert result["max_abs_imbalance_during"]["p95"] <= strata * max(sizes) / 2
    assert result["final_imbalance"]["max_abs"] <= strata * max(sizes) / 2
    assert result["block_sizes"] == sizes
    complete = assess("complete", strata=strata, subjects=53, simulations=2000, seed=7)
    assert result["final_imbalance"]["mean_abs"] < complete["final_imbalance"]["mean_abs"]


def test_rand_2_deterministic_minimization_keeps_each_stratum_within_one() -> None:
    """RAND-2: with preferred probability 1 each stratum is off by at most 1."""
    result = assess(
        "minimization", strata=3, subjects=60, simulations=1000, seed=8, preferred_probability=1.0
    )
    assert result["final_imbalance"]["max_abs"] <= 3
    one = assess(
        "minimization", strata=1, subjects=61, simulations=1000, seed=8, preferred_probability=1.0
    )
    assert one["max_abs_imbalance_during"]["p95"] == 1
    assert one["final_imbalance"]["max_abs"] == 1  # 61 is odd


def test_rand_2_minimization_random_element_trades_balance_for_guessing() -> None:
    """RAND-2: lowering p makes minimization less guessable and less balanced."""
    tight = assess(
        "minimization", strata=5, subjects=80, simulations=2000, seed=9, preferred_probability=0.95
    )
    loose = assess(
        "minimization", strata=5, subjects=80, simulations=2000, seed=9, preferred_probability=0.6
    )
    assert _rate(tight)[0] > _rate(loose)[0]
    assert tight["final_imbalance"]["mean_abs"] < loose["final_imbalance"]["mean_abs"]


@pytest.mark.parametrize("method", ["complete", "blocks", "minimization"])
@pytest.mark.parametrize("ratio", [(1, 1, 1), (2, 1)])
def test_rand_1_three_arms_and_unequal_ratios(method: str, ratio: tuple[int, ...]) -> None:
    """RAND-1: any ratio, any number of arms; imbalance counts subjects per ratio unit."""
    result = assess(
        method,
        block_sizes=[3],
        subjects=60,
        simulations=1500,
        seed=10,
        arms_ratio=ratio,
        preferred_probability=1.0,
    )
    if method == "complete" and ratio == (1, 1, 1):
        rate, se = _rate(result)
        assert abs(rate - 1 / 3) <= 3 * se  # chance level for three equal arms
    elif method == "blocks":
        assert result["final_imbalance"]["max_abs"] == 0  # 20 complete blocks of 3
    elif method == "minimization":
        assert result["max_abs_imbalance_during"]["p95"] <= 1
        assert result["final_imbalance"]["max_abs"] <= 1
    assert result["arms_ratio"] == list(ratio)


def test_rand_2_strata_weights_are_honoured() -> None:
    """All subjects in one stratum: blocks of 2 and an even total end exactly balanced."""
    result = assess(
        "blocks",
        block_sizes=[2],
        strata=3,
        strata_weights=[1, 0, 0],
        subjects=40,
        simulations=500,
        seed=11,
    )
    assert result["final_imbalance"]["max_abs"] == 0
    spread = assess(
        "blocks",
        block_sizes=[2],
        strata=3,
        strata_weights=[1, 1, 1],
        subjects=40,
        simulations=500,
        seed=11,
    )
    assert spread["final_imbalance"]["max_abs"] > 0


def test_rand_3_same_seed_same_figures() -> None:
    """Same seed, same figures (except timing); another seed gives other figures."""
    args: dict[str, Any] = {"block_sizes": [2, 4], "strata": 5, "subjects": 50, "simulations": 500}
    first = assess("blocks", seed=12, **args)
    again = assess("blocks", seed=12, **args)
    other = assess("blocks", seed=13, **args)
    for result in (first, again, other):
        result.pop("seconds")
    assert first == again
    assert first["selection_bias"] != other["selection_bias"]


def test_rand_2_interpretation_quotes_the_figures() -> None:
    result = assess("blocks", block_sizes=[2, 4], strata=75, subjects=352, simulations=200, seed=14)
    text = result["interpretation"]
    rate = result["selection_bias"]["convergence_correct_guess_rate"]
    assert f"{100 * rate:.1f}%" in text
    assert "stop mid-block" in text  # 352 subjects over 75 sites leave many blocks open


@pytest.mark.parametrize(
    ("method", "kwargs", "fragment"),
    [
        ("random", {}, "unknown method"),
        ("blocks", {"block_sizes": [3]}, "not a multiple of 2"),
        ("blocks", {"block_sizes": []}, "at least one block size"),
        ("complete", {"simulations": 1}, "simulations"),
        ("complete", {"subjects": 0}, "subjects"),
        ("complete", {"strata": 0}, "strata"),
        ("complete", {"arms_ratio": (1,)}, "two arms"),
        ("complete", {"arms_ratio": (1, 0)}, "arms_ratio"),
        ("complete", {"strata": 2, "strata_weights": [1]}, "1 strata weights given for 2"),
        ("complete", {"strata": 2, "strata_weights": [0, 0]}, "positive sum"),
        ("minimization", {"preferred_probability": 0}, "preferred probability"),
        ("complete", {"seed": -1}, "seed"),
    ],
)
def test_rand_2_bad_design_is_refused(method: str, kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"subjects": 10, "simulations": 10, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValidationFailed, match=fragment):
        assess(method, **args)


def test_rand_2_simulated_minimization_is_the_domain_method() -> None:
    """The simulator's minimization matches the domain's (same rule, same random element)."""
    n, runs, arms = 15, 1500, [("INT", 1), ("CTRL", 1)]
    rng = random.Random(15)
    gaps = []
    for _ in range(runs):
        cell: dict[str, int] = {}
        for _ in range(n):
            counts = {"site": {"S": dict(cell)}}
            decision = minimization_assign(
                arms, counts, {"site": "S"}, {"site": 1.0}, "range", 0.7, rng
            )
            cell[decision.arm] = cell.get(decision.arm, 0) + 1
        gaps.append(abs(cell.get("INT", 0) - cell.get("CTRL", 0)))
    domain_mean = sum(gaps) / runs
    domain_var = sum((gap - domain_mean) ** 2 for gap in gaps) / (runs - 1)
    sims = 20_000
    result = assess(
        "minimization", subjects=n, simulations=sims, seed=15, preferred_probability=0.7
    )
    se = math.sqrt(domain_var / runs + domain_var / sims)
    assert abs(result["final_imbalance"]["mean_abs"] - domain_mean) <= 4 * se
