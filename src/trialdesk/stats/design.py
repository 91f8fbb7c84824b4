"""Design assessment: how predictable and how balanced a randomization method is (RAND-2).

Simulates many trials at once (numpy arrays over simulations; subjects one after another)
and reports two things a statistician weighs when choosing block sizes:

* selection bias, as the Blackwell–Hodges *convergence strategy*: before each assignment
  someone who knows all earlier assignments in the subject's stratum guesses the arm that
  is behind (fewest subjects relative to its ratio; a fair coin among ties). The share of
  correct guesses over all subjects is 0.5 for unpredictable methods (1:1).
* imbalance between the arms over the whole trial. Counts are divided by each arm's ratio
  and the imbalance is max - min of those; for two arms at 1:1 this is |#arm1 - #arm2|
  and for more arms at equal ratios it is the largest count minus the smallest.

Subjects fall into strata at random (uniformly, or by ``strata_weights``). Permuted blocks
are simulated without building lists: within the open block of a stratum the next arm is
drawn with probability remaining-in-block / block-remainder, which is exactly a uniform
random permutation of the block, and a new block size is drawn when a block is used up.
Minimization uses one factor (the stratum), range imbalance and the same tie and
non-preferred rules as :mod:`trialdesk.domain.randomization.minimization`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.randomization import validate_block_sizes

METHODS = ("complete", "blocks", "minimization")

# Cells of the (simulation, stratum, arm) count arrays held at once; bounds memory
# (~ 4 bytes per cell and array) whatever the number of strata or simulations.
_CELLS_PER_CHUNK = 4_000_000
_MAX_CHUNK = 50_000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class _Design:
    method: str
    ratio: tuple[int, ...]
    block_sizes: tuple[int, ...]
    strata: int
    strata_cum: FloatArray | None
    subjects: int
    preferred_probability: float


@dataclass
class _Outcome:
    correct: IntArray
    final_imbalance: FloatArray
    max_imbalance: FloatArray


def expected_abs_difference_complete(subjects: int) -> float:
    """Exact E|#arm1 - #arm2| for complete 1:1 randomization of ``subjects`` subjects.

    n·C(n, n/2)/2^n for even n and n·C(n-1, (n-1)/2)/2^(n-1) for odd n (the walk's
    mean distance from 0); used to put simulated imbalance in context.
    """
    even = subjects - subjects % 2
    return subjects * math.comb(even, even // 2) / (1 << even)


def _pick(weights: npt.NDArray[Any], rng: np.random.Generator) -> IntArray:
    """Row-wise random column index with probability proportional to ``weights``."""
    cum = np.cumsum(weights, axis=1, dtype=np.float64)
    target = rng.random(cum.shape[0]) * cum[:, -1]
    return np.asarray((cum > target[:, None]).argmax(axis=1), dtype=np.int64)


def _draw_strata(design: _Design, sims: int, rng: np.random.Generator) -> IntArray:
    if design.strata_cum is None:
        return rng.integers(0, design.strata, sims)
    stratum = np.searchsorted(design.strata_cum, rng.random(sims), side="right")
    return np.asarray(np.minimum(stratum, design.strata - 1), dtype=np.int64)


def _simulate_two_arms(design: _Design, sims: int, rng: np.random.Generator) -> _Outcome:
    """Two-arm fast path: each stratum's state is one signed number, not a count per arm.

    ``diff`` is #arm1/r1 - #arm2/r2 in units of 1/lcm(r1, r2); 1-D gathers on it are
    several times faster than the general per-arm arrays.
    """
    r0, r1 = design.ratio
    lcm = math.lcm(r0, r1)
    s0, s1 = lcm // r0, lcm // r1
    p_arm1 = r1 / (r0 + r1)
    rows = np.arange(sims, dtype=np.int64)
    base = rows * design.strata
    diff = np.zeros(sims * design.strata, dtype=np.int32)
    gap = np.zeros(sims, dtype=np.int64)
    correct = np.zeros(sims, dtype=np.int64)
    running_max = np.zeros(sims, dtype=np.int64)
    blocks = design.method == "blocks"
    # Open block per stratum: slots of arm 1 left, and slots left in all.
    left0 = np.zeros(diff.size if blocks else 0, dtype=np.int32)
    left = np.zeros(diff.size if blocks else 0, dtype=np.int32)
    sizes = np.asarray(design.block_sizes, dtype=np.int32)

    for _ in range(design.subjects):
        flat = base + _draw_strata(design, sims, rng)
        local = diff[flat]
        guess1 = (local > 0) | ((local == 0) & (rng.random(sims) < 0.5))

        if design.method == "complete":
            arm1 = rng.random(sims) < p_arm1
        elif blocks:
            a0 = left0[flat]
            total = left[flat]
            used_up = total == 0
            n_new = int(used_up.sum())
            if n_new:
                new_sizes = sizes[rng.integers(0, len(sizes), n_new)]
                a0[used_up] = new_sizes // (r0 + r1) * r0
                total[used_up] = new_sizes
            arm1 = rng.random(sims) * total >= a0
            a0 -= ~arm1
            left0[flat] = a0
            left[flat] = total - 1
        else:
            score0 = np.abs(local + s0)
            score1 = np.abs(local - s1)
            preferred1 = np.where(score0 == score1, rng.random(sims) < p_arm1, score1 < score0)
            take = rng.random(sims) < design.preferred_probability
            arm1 = preferred1 == take

        correct += guess1 == arm1
        step = np.where(arm1, -s1, s0).astype(np.int32)
        diff[flat] = local + step
        gap += step
        np.maximum(running_max, np.abs(gap), out=running_max)

    return _Outcome(correct, np.abs(gap) / lcm, running_max / lcm)


def _simulate_chunk(design: _Design, sims: int, rng: np.random.Generator) -> _Outcome:
    n_arms = len(design.ratio)
    ratio = np.asarray(design.ratio, dtype=np.int64)
    lcm = math.lcm(*design.ratio)
    scale = lcm // ratio  # count * scale = count / ratio, in units of 1/lcm
    strata = design.strata
    rows = np.arange(sims, dtype=np.int64)
    base = rows * strata
    counts = np.zeros((sims * strata, n_arms), dtype=np.int32)
    overall = np.zeros((sims, n_arms), dtype=np.int64)
    correct = np.zeros(sims, dtype=np.int64)
    running_max = np.zeros(sims, dtype=np.int64)
    remaining = np.zeros_like(counts) if design.method == "blocks" else None
    sizes = np.asarray(design.block_sizes, dtype=np.int64)
    ratio_sum = int(ratio.sum())
    ratio_rows = np.broadcast_to(ratio, (sims, n_arms))
    eye = np.eye(n_arms, dtype=np.int64) * scale  # candidate a adds scale[a] to column a

    for _ in range(design.subjects):
        flat = base + _draw_strata(design, sims, rng)
        local = counts[flat].astype(np.int64) * scale

        behind = local == local.min(axis=1, keepdims=True)
        guess = _pick(behind, rng)

        if design.method == "complete":
            arm = _pick(ratio_rows, rng)
        elif design.method == "blocks":
            assert remaining is not None
            left = remaining[flat]
            used_up = left.sum(axis=1) == 0
            n_new = int(used_up.sum())
            if n_new:
                new_sizes = sizes[rng.integers(0, len(sizes), n_new)]
                left[used_up] = (new_sizes // ratio_sum)[:, None] * ratio[None, :]
            arm = _pick(left, rng)
            left[rows, arm] -= 1
            remaining[flat] = left
        else:
            scores = np.empty((sims, n_arms), dtype=np.int64)
            for candidate in range(n_arms):
                trial = local + eye[candidate]
                scores[:, candidate] = trial.max(axis=1) - trial.min(axis=1)
            lowest = scores == scores.min(axis=1, keepdims=True)
            preferred = _pick(lowest * ratio_rows, rng)
            take = rng.random(sims) < design.preferred_probability
            others = ratio_rows.copy()
            others[rows, preferred] = 0
            arm = np.where(take, preferred, _pick(others, rng))

        correct += guess == arm
        counts[flat, arm] += 1
        overall[rows, arm] += 1
        weighted = overall * scale
        gap = weighted.max(axis=1) - weighted.min(axis=1)
        np.maximum(running_max, gap, out=running_max)

    weighted = overall * scale
    final = (weighted.max(axis=1) - weighted.min(axis=1)) / lcm
    return _Outcome(correct, final.astype(np.float64), running_max / lcm)


def _validate(
    method: str,
    block_sizes: Sequence[int],
    strata: int,
    strata_weights: Sequence[float] | None,
    subjects: int,
    simulations: int,
    seed: int,
    arms_ratio: Sequence[int],
    preferred_probability: float,
) -> _Design:
    def positive_int(name: str, value: object, least: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValidationFailed(
                f"{name} must be an integer of at least {least}, not {value!r}", {name: repr(value)}
            )
        return value

    if method not in METHODS:
        raise ValidationFailed(
            f"unknown method {method!r}; choose one of {', '.join(METHODS)}",
            {"method": repr(method)},
        )
    ratio = tuple(arms_ratio)
    if len(ratio) < 2:
        raise ValidationFailed("at least two arms are needed", {"arms_ratio": repr(ratio)})
    for value in ratio:
        positive_int("arms_ratio", value, 1)
    positive_int("strata", strata, 1)
    positive_int("subjects", subjects, 1)
    positive_int("simulations", simulations, 2)
    positive_int("seed", seed, 0)
    if not (isinstance(preferred_probability, int | float) and 0 < preferred_probability <= 1):
        raise ValidationFailed(
            f"preferred probability must be above 0 and at most 1, not {preferred_probability!r}",
            {"preferred_probability": repr(preferred_probability)},
        )
    sizes: tuple[int, ...] = ()
    if method == "blocks":
        arms = [(f"arm{index + 1}", value) for index, value in enumerate(ratio)]
        sizes = validate_block_sizes(arms, block_sizes)
    strata_cum: FloatArray | None = None
    if strata_weights is not None:
        weights = np.asarray(list(strata_weights), dtype=np.float64)
        if weights.shape != (strata,):
            raise ValidationFailed(
                f"{len(weights)} strata weights given for {strata} strata",
                {"strata_weights": "wrong length"},
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValidationFailed(
                "strata weights must be non-negative numbers with a positive sum",
                {"strata_weights": "invalid"},
            )
        strata_cum = np.cumsum(weights / weights.sum())
    return _Design(
        method=method,
        ratio=ratio,
        block_sizes=sizes,
        strata=strata,
        strata_cum=strata_cum,
        subjects=subjects,
        preferred_probability=float(preferred_probability),
    )


def assess(
    method: str,
    *,
    block_sizes: Sequence[int] = (),
    strata: int = 1,
    strata_weights: Sequence[float] | None = None,
    subjects: int,
    simulations: int,
    seed: int,
    arms_ratio: Sequence[int] = (1, 1),
    preferred_probability: float = 0.8,
) -> dict[str, Any]:
    """Simulate ``simulations`` trials of ``subjects`` subjects; JSON-ready figures.

    Same arguments and seed give the same figures (except ``seconds``). ``block_sizes``
    is used by ``blocks`` only, ``preferred_probability`` by ``minimization`` only.
    """
    design = _validate(
        method,
        block_sizes,
        strata,
        strata_weights,
        subjects,
        simulations,
        seed,
        arms_ratio,
        preferred_probability,
    )
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_arms = len(design.ratio)
    chunk = max(1, min(_MAX_CHUNK, _CELLS_PER_CHUNK // (design.strata * n_arms)))
    outcomes: list[_Outcome] = []
    done = 0
    while done < simulations:
        size = min(chunk, simulations - done)
        simulate = _simulate_two_arms if n_arms == 2 else _simulate_chunk
        outcomes.append(simulate(design, size, rng))
        done += size
    correct = np.concatenate([outcome.correct for outcome in outcomes])
    final = np.concatenate([outcome.final_imbalance for outcome in outcomes])
    during = np.concatenate([outcome.max_imbalance for outcome in outcomes])
    seconds = time.perf_counter() - started

    rates = correct / subjects
    result: dict[str, Any] = {
        "method": method,
        "subjects": subjects,
        "simulations": simulations,
        "strata": strata,
        "block_sizes": list(design.block_sizes),
        "arms_ratio": list(design.ratio),
        "preferred_probability": (
            design.preferred_probability if method == "minimization" else None
        ),
        "seed": seed,
        "selection_bias": {
            "convergence_correct_guess_rate": round(float(rates.mean()), 6),
            "standard_error": round(float(rates.std(ddof=1) / math.sqrt(simulations)), 6),
        },
        "final_imbalance": {
            "mean_abs": round(float(final.mean()), 4),
            "p95_abs": round(float(np.percentile(final, 95)), 4),
            "max_abs": round(float(final.max()), 4),
        },
        "max_abs_imbalance_during": {
            "mean": round(float(during.mean()), 4),
            "p95": round(float(np.percentile(during, 95)), 4),
        },
        "seconds": round(seconds, 3),
    }
    result["interpretation"] = interpret(result)
    return result


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def interpret(result: dict[str, Any]) -> str:
    """A paragraph in plain words for someone choosing a design, built from the figures."""
    method = result["method"]
    subjects = result["subjects"]
    strata = result["strata"]
    ratio = result["arms_ratio"]
    rate = result["selection_bias"]["convergence_correct_guess_rate"]
    final = result["final_imbalance"]
    during = result["max_abs_imbalance_during"]
    equal = len(set(ratio)) == 1
    unit = "subjects" if equal else "subjects per ratio unit"
    chance = (
        f"pure chance is {_percent(1 / len(ratio))}"
        if equal
        else "with unequal ratios chance is the rate complete randomization gets"
    )
    parts = [
        f"Someone who knew every earlier assignment in a subject's stratum and always "
        f"guessed the arm that was behind would be right {_percent(rate)} of the time; "
        f"{chance}, and each point above it is predictability that could let a site steer "
        f"which patients are enrolled next.",
        f"At the end of {subjects} subjects the arms differ by {final['mean_abs']:.2f} {unit} "
        f"on average (95% of simulated trials within {final['p95_abs']:g}, worst "
        f"{final['max_abs']:g}); during enrolment the largest gap averaged "
        f"{during['mean']:.2f} (95%: {during['p95']:g}).",
    ]
    if len(ratio) == 2 and equal:
        reference = expected_abs_difference_complete(subjects)
        parts.append(f"(Exact mean gap under complete randomization: {reference:.2f}.)")
    per_stratum = subjects / strata
    if method == "blocks":
        sizes = result["block_sizes"]
        largest = max(sizes)
        parts.append(
            f"Permuted blocks of sizes {', '.join(map(str, sizes))} keep each of the "
            f"{strata} strata in ratio at the end of every block, so the overall gap comes "
            f"from blocks left unfinished when enrolment stops (about "
            f"{per_stratum:.1f} subjects per stratum here)."
        )
        if per_stratum < 2 * largest:
            parts.append(
                "With this few subjects per stratum many strata stop mid-block, so larger "
                "blocks cost balance quickly; fewer strata or smaller blocks help."
            )
        parts.append(
            "Smaller blocks balance more tightly but are easier to guess; mixing in larger "
            "sizes lowers the guess rate at some cost in balance. Compare a few block sets "
            "and complete randomization with the same seed before choosing."
        )
    elif method == "complete":
        parts.append(
            "Complete randomization cannot be predicted, but balance is left to chance; "
            "permuted blocks or minimization trade a little predictability for a smaller gap."
        )
    else:
        parts.append(
            f"Minimization on the stratum takes the arm that reduces imbalance with "
            f"probability {result['preferred_probability']:g}; raising it tightens balance "
            f"and makes the next assignment easier to guess, lowering it does the reverse."
        )
    return " ".join(parts)
