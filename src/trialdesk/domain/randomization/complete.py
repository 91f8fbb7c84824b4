"""Complete (simple) randomization: each subject independently, weighted by ratio (RAND-2).

Kept for comparison in design assessment; it is unpredictable but can drift out of balance.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from trialdesk.domain.randomization.arms import ArmRatio, ratio_sum, validate_arms


def weighted_choice(arms: Sequence[ArmRatio], rng: random.Random) -> str:
    """One arm with probability ratio / ratio sum, from a single integer draw (exact)."""
    draw = rng.randrange(ratio_sum(arms))
    for code, ratio in arms:
        if draw < ratio:
            return code
        draw -= ratio
    raise AssertionError("unreachable: draw below the ratio sum")  # pragma: no cover


def complete_assign(arms: Sequence[ArmRatio], rng: random.Random) -> str:
    return weighted_choice(validate_arms(arms), rng)
