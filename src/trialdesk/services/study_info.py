"""Read services about the study itself: its protocol (as the caller may see it) and sites."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, require
from trialdesk.services.blinding import may_see_arm_definitions
from trialdesk.services.common import loaded_protocol, version_in_force
from trialdesk.services.context import ServiceContext

READERS = list(Role)


@dataclass(frozen=True)
class ProtocolSummary:
    name: str
    version: str
    sha256: str
    title: str
    target_subjects: int
    cap_total: int
    visits: list[dict[str, Any]]
    criteria: list[dict[str, Any]]
    forms: list[str]
    arms: list[dict[str, Any]] | None = None
    """Only for unblinded by-arm readers (see may_see_arm_definitions)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SiteInfo:
    code: str
    name: str
    country: str
    region: str
    timezone: str
    active: bool
    planned_activation: str | None = None
    cap: int | None = None


def protocol_summary(ctx: ServiceContext, actor: Actor, study_id: int) -> ProtocolSummary:
    """The protocol the study runs now: visits and windows, criteria, forms, caps."""
    require(actor, study_id, READERS, action="view protocol")
    with ctx.uow(readonly=True) as uow:
        version = version_in_force(uow, study_id)
        sha256 = version.sha256
        p = loaded_protocol(ctx, uow, version).protocol
    unblinded = may_see_arm_definitions(actor, study_id)
    arms = (
        [{"code": a.code, "label": a.label, "ratio": a.ratio} for a in p.arms]
        if unblinded
        else None
    )
    arm_forms = {a.procedure_form for a in p.arms if a.procedure_form}
    return ProtocolSummary(
        name=p.name,
        version=p.version,
        sha256=sha256,
        title=p.title,
        target_subjects=p.enrolment.target_subjects,
        cap_total=p.enrolment.total_cap,
        visits=[
            {
                "code": v.code,
                "name": v.name,
                "kind": v.kind.value,
                "target_day": v.target_day,
                "window_before": v.window_before,
                "window_after": v.window_after,
            }
            for v in p.visits
        ],
        criteria=[
            {
                "id": c.id,
                "kind": c.kind,
                "text": c.text,
                "gate": c.gate.value,
                "check": "rule" if c.rule is not None else "investigator",
            }
            for c in p.criteria
        ],
        forms=[f.code for f in p.forms if unblinded or f.code not in arm_forms],
        arms=arms,
    )


def list_sites(ctx: ServiceContext, actor: Actor, study_id: int) -> list[SiteInfo]:
    """Sites of the study; a site-scoped user sees only its own (ACC-1)."""
    require(actor, study_id, READERS, action="list sites")
    with ctx.uow(readonly=True) as uow:
        allowed = actor.site_ids(study_id)
        return [
            SiteInfo(
                code=s.code,
                name=s.name,
                country=s.country,
                region=s.region,
                timezone=s.timezone,
                active=s.active,
                planned_activation=s.planned_activation.isoformat()
                if s.planned_activation
                else None,
                cap=s.cap,
            )
            for s in uow.sites.of_study(study_id)
            if allowed is None or s.id in allowed
        ]
