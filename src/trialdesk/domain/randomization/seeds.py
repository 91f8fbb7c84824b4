"""Per-stratum seeds derived from one recorded master seed (RAND-3).

Only the master seed is recorded; every stratum's list, and every later extension of it,
is regenerated from ``derive_seed(master, stratum, extension)``. Python's ``hash()`` is
salted per process, so the derivation uses SHA-256 and is stable across runs and versions.
"""

from __future__ import annotations

import hashlib

from trialdesk.domain.errors import ValidationFailed

_DOMAIN_TAG = "trialdesk.randomization.seed.v1"


def derive_seed(master_seed: int, stratum: str, extension: int = 0) -> int:
    """A 64-bit seed for ``random.Random``: first 8 bytes (big-endian) of SHA-256 over
    ``"trialdesk.randomization.seed.v1\\x1f<master>\\x1f<extension>\\x1f<stratum>"`` (UTF-8).

    ``extension`` 0 is the stratum's first list; extension k (k >= 1) seeds the blocks
    appended the k-th time the stratum runs low, so extending is reproducible too.
    """
    if isinstance(master_seed, bool) or not isinstance(master_seed, int):
        raise ValidationFailed("the master seed must be an integer", {"seed": repr(master_seed)})
    if isinstance(extension, bool) or not isinstance(extension, int) or extension < 0:
        raise ValidationFailed(
            "the extension number must be an integer of at least 0",
            {"extension": repr(extension)},
        )
    if not isinstance(stratum, str):
        raise ValidationFailed("the stratum must be text", {"stratum": repr(stratum)})
    text = f"{_DOMAIN_TAG}\x1f{master_seed}\x1f{extension}\x1f{stratum}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")
