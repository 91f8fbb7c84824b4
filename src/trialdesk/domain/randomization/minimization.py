"""Pocock–Simon minimization with a random element (RAND-2).

For each candidate arm the subject is added hypothetically; for every factor the counts of
the subject's level are divided by each arm's ratio (so "balanced" means "in ratio", the
usual generalisation to unequal allocation) and their spread is measured as range
(max - min) or variance (population variance, i.e. divided by the number of arms). The
weighted sum over factors is the arm's score. The lowest-scoring arm is preferred and taken
with ``preferred_probability``; otherwise another arm is drawn, weighted by ratio. Scores
are computed with exact fractions so ties are exact, never artefacts of rounding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.randomization.arms import ArmRatio, validate_arms
from trialdesk.domain.randomization.complete import weighted_choice

Imbalance = Literal["range", "variance"]


@dataclass(frozen=True, slots=True)
class MinimizationDecision:
    """What was chosen and why, for the audit trail (the scores justify the preference)."""

    arm: str
    preferred_arm: str
    took_preferred: bool
    tied_arms: tuple[str, ...]
    scores: tuple[tuple[str, float], ...]
    imbalance: Imbalance
    preferred_probability: float
    draw: float = field(repr=False)

    def scores_by_arm(self) -> dict[str, float]:
        return dict(self.scores)

    def to_audit(self) -> dict[str, object]:
        """JSON-ready record; ``draw`` is the uniform number compared with the probability."""
        return {
            "arm": self.arm,
            "preferred_arm": self.preferred_arm,
            "took_preferred": self.took_preferred,
            "tied_arms": list(self.tied_arms),
            "scores": dict(self.scores),
            "imbalance": self.imbalance,
            "preferred_probability": self.preferred_probability,
            "draw": self.draw,
        }


def _spread(values: Sequence[Fraction], imbalance: Imbalance) -> Fraction:
    if imbalance == "range":
        return max(values) - min(values)
    mean = sum(values, Fraction(0)) / len(values)
    return sum(((value - mean) ** 2 for value in values), Fraction(0)) / len(values)


def _check_inputs(
    arms: tuple[ArmRatio, ...],
    factor_counts: Mapping[str, Mapping[str, Mapping[str, int]]],
    subject_levels: Mapping[str, str],
    weights: Mapping[str, float],
    imbalance: str,
    preferred_probability: float,
) -> None:
    if imbalance not in ("range", "variance"):
        raise ValidationFailed(
            f"imbalance must be 'range' or 'variance', not {imbalance!r}",
            {"imbalance": repr(imbalance)},
        )
    if not (isinstance(preferred_probability, int | float) and 0 < preferred_probability <= 1):
        raise ValidationFailed(
            f"the preferred-arm probability must be above 0 and at most 1, "
            f"not {preferred_probability!r}",
            {"preferred_probability": repr(preferred_probability)},
        )
    if not weights:
        raise ValidationFailed("minimization needs at least one factor", {"weights": "empty"})
    for factor, weight in weights.items():
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
            raise ValidationFailed(
                f"factor {factor!r} has weight {weight!r}; a weight is a positive number",
                {f"weights.{factor}": repr(weight)},
            )
        if factor not in subject_levels:
            raise ValidationFailed(
                f"the subject has no level for factor {factor!r}", {f"levels.{factor}": "missing"}
            )
    for factor in subject_levels:
        if factor not in weights:
            raise ValidationFailed(
                f"factor {factor!r} has no weight", {f"weights.{factor}": "missing"}
            )
    known = {code for code, _ in arms}
    for factor, levels in factor_counts.items():
        for level, counts in levels.items():
            for arm, count in counts.items():
                if arm not in known:
                    raise ValidationFailed(
                        f"counts for {factor}={level} name unknown arm {arm!r}",
                        {f"counts.{factor}.{level}": arm},
                    )
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise ValidationFailed(
                        f"count {count!r} for {factor}={level}, arm {arm} is not a count",
                        {f"counts.{factor}.{level}.{arm}": repr(count)},
                    )


def minimization_scores(
    arms: Sequence[ArmRatio],
    factor_counts: Mapping[str, Mapping[str, Mapping[str, int]]],
    subject_levels: Mapping[str, str],
    weights: Mapping[str, float],
    imbalance: Imbalance = "range",
) -> dict[str, Fraction]:
    """Total weighted imbalance per candidate arm if this subject were given that arm.

    ``factor_counts[factor][level][arm]`` counts subjects already assigned (missing keys
    count 0); the caller leaves out subjects randomized in error.
    """
    checked = validate_arms(arms)
    _check_inputs(checked, factor_counts, subject_levels, weights, imbalance, 1.0)
    return _scores(checked, factor_counts, subject_levels, weights, imbalance)


def _scores(
    checked: tuple[ArmRatio, ...],
    factor_counts: Mapping[str, Mapping[str, Mapping[str, int]]],
    subject_levels: Mapping[str, str],
    weights: Mapping[str, float],
    imbalance: Imbalance,
) -> dict[str, Fraction]:
    scores: dict[str, Fraction] = {}
    for candidate, _ in checked:
        total = Fraction(0)
        for factor in sorted(weights):
            counts = factor_counts.get(factor, {}).get(subject_levels[factor], {})
            adjusted = [
                Fraction(counts.get(code, 0) + (1 if code == candidate else 0), ratio)
                for code, ratio in checked
            ]
            total += Fraction(weights[factor]) * _spread(adjusted, imbalance)
        scores[candidate] = total
    return scores


def minimization_assign(
    arms: Sequence[ArmRatio],
    factor_counts: Mapping[str, Mapping[str, Mapping[str, int]]],
    subject_levels: Mapping[str, str],
    weights: Mapping[str, float],
    imbalance: Imbalance,
    preferred_probability: float,
    rng: random.Random,
) -> MinimizationDecision:
    """Choose an arm for one subject. Draw order (fixed, for reproducibility): one draw
    among the tied lowest-scoring arms (weighted by ratio; none when a single arm is
    lowest), one uniform draw against ``preferred_probability``, and, only when the
    preferred arm is not taken, one draw among the other arms weighted by ratio."""
    checked = validate_arms(arms)
    _check_inputs(checked, factor_counts, subject_levels, weights, imbalance, preferred_probability)
    scores = _scores(checked, factor_counts, subject_levels, weights, imbalance)
    lowest = min(scores.values())
    tied = [(code, ratio) for code, ratio in checked if scores[code] == lowest]
    preferred = tied[0][0] if len(tied) == 1 else weighted_choice(tied, rng)
    draw = rng.random()
    took_preferred = draw < preferred_probability
    if took_preferred:
        arm = preferred
    else:
        arm = weighted_choice([(c, r) for c, r in checked if c != preferred], rng)
    return MinimizationDecision(
        arm=arm,
        preferred_arm=preferred,
        took_preferred=took_preferred,
        tied_arms=tuple(code for code, _ in tied),
        scores=tuple((code, float(score)) for code, score in scores.items()),
        imbalance=imbalance,
        preferred_probability=float(preferred_probability),
        draw=draw,
    )
