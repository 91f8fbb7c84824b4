"""Arms as the randomization code sees them: ``(code, integer ratio)`` pairs (RAND-1)."""

from __future__ import annotations

from collections.abc import Sequence

from trialdesk.domain.errors import ValidationFailed

ArmRatio = tuple[str, int]


def validate_arms(arms: Sequence[ArmRatio]) -> tuple[ArmRatio, ...]:
    """Refuse arm lists no method could honour, so every method can trust its input.

    The ratio is taken literally (2:2 is not reduced to 1:1), because block sizes are
    checked against the ratio sum the protocol states.
    """
    checked = tuple(arms)
    if len(checked) < 2:
        raise ValidationFailed(
            "randomization needs at least two arms", {"arms": f"{len(checked)} given"}
        )
    seen: set[str] = set()
    for code, ratio in checked:
        if not isinstance(code, str) or not code:
            raise ValidationFailed("an arm code is empty", {"arms": repr(code)})
        if code in seen:
            raise ValidationFailed(f"arm {code!r} is listed twice", {"arms": code})
        seen.add(code)
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
            raise ValidationFailed(
                f"arm {code!r} has ratio {ratio!r}; a ratio is an integer of at least 1",
                {"arms": code},
            )
    return checked


def ratio_sum(arms: Sequence[ArmRatio]) -> int:
    return sum(ratio for _, ratio in arms)
