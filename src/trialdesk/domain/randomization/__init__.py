"""Randomization methods (RAND-1..3): pure functions; all randomness from a passed-in
``random.Random`` seeded via :func:`derive_seed`."""

from trialdesk.domain.randomization.arms import ArmRatio, ratio_sum, validate_arms
from trialdesk.domain.randomization.blocks import Slot, generate_blocks, validate_block_sizes
from trialdesk.domain.randomization.complete import complete_assign
from trialdesk.domain.randomization.lists import canonical_text, check_list, fingerprint
from trialdesk.domain.randomization.minimization import (
    Imbalance,
    MinimizationDecision,
    minimization_assign,
    minimization_scores,
)
from trialdesk.domain.randomization.seeds import derive_seed

__all__ = [
    "ArmRatio",
    "Imbalance",
    "MinimizationDecision",
    "Slot",
    "canonical_text",
    "check_list",
    "complete_assign",
    "derive_seed",
    "fingerprint",
    "generate_blocks",
    "minimization_assign",
    "minimization_scores",
    "ratio_sum",
    "validate_arms",
    "validate_block_sizes",
]
