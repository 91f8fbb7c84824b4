"""Design assessment for the statistician's page (RAND-2): the simulation of
:mod:`trialdesk.stats.design`, limited in size so a web request stays short, for the unblinded
statistician only (the person who weighs and generates allocation lists)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, require
from trialdesk.services.common import current_protocol_row, protocol_of, study_by_id
from trialdesk.services.context import ServiceContext

MAX_SIMULATIONS = 2_000
"""A page runs the simulation inside the request; the CLI has no such limit."""

PROTOCOL_METHODS = {
    "complete": "complete",
    "permuted_blocks": "blocks",
    "minimization": "minimization",
}


@dataclass(frozen=True)
class DesignDefaults:
    """The protocol's own design, as the form's starting values."""

    method: str
    block_sizes: tuple[int, ...]
    strata: int
    subjects: int
    arms_ratio: tuple[int, ...]
    simulations: int = 1_000
    seed: int = 1


def design_defaults(ctx: ServiceContext, actor: Actor, study_id: int) -> DesignDefaults:
    """Method, block sizes, strata (one per site when stratified) and target of the protocol."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, [Role.STATISTICIAN], action="design assessment")
        study_by_id(uow, study_id)
        p = protocol_of(ctx, current_protocol_row(uow, study_id)).protocol
    method = str(p.randomization.method.value)
    strata = len(p.sites) if "site" in p.randomization.strata else 1
    return DesignDefaults(
        method=PROTOCOL_METHODS.get(method, "blocks"),
        block_sizes=tuple(p.randomization.block_sizes) or (4, 6),
        strata=max(1, strata),
        subjects=p.enrolment.target_subjects,
        arms_ratio=tuple(a.ratio for a in p.arms),
    )


def assess_design(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    method: str,
    block_sizes: Sequence[int] = (),
    strata: int = 1,
    subjects: int,
    simulations: int,
    seed: int,
    arms_ratio: Sequence[int] = (1, 1),
) -> dict[str, Any]:
    """Run :func:`trialdesk.stats.design.assess` (at most MAX_SIMULATIONS trials); its figures
    and interpretation as JSON-ready data. Bad values are refused with one message each."""
    require(actor, study_id, [Role.STATISTICIAN], action="design assessment")
    if simulations > MAX_SIMULATIONS:
        raise ValidationFailed(
            f"at most {MAX_SIMULATIONS:,} simulations here; use 'trialdesk design assess' for more",
            {"simulations": f"at most {MAX_SIMULATIONS}"},
        )
    from trialdesk.stats.design import assess  # lazy: numpy only when a design is assessed

    return assess(
        method,
        block_sizes=block_sizes,
        strata=strata,
        subjects=subjects,
        simulations=simulations,
        seed=seed,
        arms_ratio=arms_ratio,
    )
