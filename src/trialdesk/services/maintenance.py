"""Maintenance run by the local operator (audited as such)."""

from __future__ import annotations

from trialdesk.domain.errors import PermissionDenied
from trialdesk.services.access import Actor
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry, VerifyResult, verify_chain


def verify_audit(ctx: ServiceContext, actor: Actor) -> VerifyResult:
    """Check every audit chain (AUD-1); the check itself is recorded when the chain is sound."""
    if not actor.operator:
        raise PermissionDenied("audit verification is run by the local operator")
    with ctx.uow(readonly=True) as uow:
        result = verify_chain(uow.session)
    if result.ok:
        with ctx.uow() as uow:
            uow.record(
                PendingEntry(
                    stream="maintenance",
                    at=ctx.now(),
                    actor=actor.label,
                    action="verify_audit",
                    entity="audit",
                    entity_id="all",
                    new={"entries": result.entries, "streams": result.streams, "root": result.root},
                )
            )
            uow.commit()
    return result
