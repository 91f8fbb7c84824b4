"""Device accountability: moved to the :mod:`trialdesk.services.supply` package (issue 13).
This name stays importable for callers not yet moved (``from trialdesk.services import
devices`` and ``devices.register_lot(...)`` keep working)."""

from __future__ import annotations

from trialdesk.services.supply import *  # noqa: F403
from trialdesk.services.supply import __all__ as __all__
