"""Moved to :mod:`trialdesk.services.allocation.randomization` (issue 13); this name stays
for branches in flight during wave 3 and goes after it."""

from trialdesk.services.allocation.randomization import RANDOMIZERS as RANDOMIZERS
from trialdesk.services.allocation.randomization import (
    RandomizationResult as RandomizationResult,
)
from trialdesk.services.allocation.randomization import randomize as randomize
from trialdesk.services.allocation.randomization import scoped_key as scoped_key
