"""Read models returned by services. Blinding is decided here, once (RAND-6): a view carries
an arm only when :func:`trialdesk.services.blinding.may_see_arm` says so."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from trialdesk.domain.lifecycle import SubjectState, allowed_actions
from trialdesk.domain.schedule import plan_visits
from trialdesk.protocol.specs import visit_specs
from trialdesk.services.access import Actor
from trialdesk.services.blinding import may_see_arm
from trialdesk.services.common import Acting, loaded_protocol, schedule_version, site_today
from trialdesk.services.context import ServiceContext
from trialdesk.store.records import SubjectRead, Visit
from trialdesk.store.uow import UnitOfWork


@dataclass(frozen=True)
class ArmView:
    code: str
    label: str


@dataclass(frozen=True)
class VisitView:
    code: str
    name: str
    kind: str
    target_date: str
    window_start: str
    window_end: str
    status: str  # planned | done | missed
    visit_date: str | None = None
    timing: str | None = None
    protocol_version: str | None = None
    """Version a done or missed visit was recorded under, or whose window a planned one
    follows (PROT-2)."""


@dataclass(frozen=True)
class SubjectView:
    number: str
    site: str
    state: str
    registered_on: str
    protocol_version: str
    test_subject: bool
    protocol_sha256: str
    consent_date: str | None = None
    consent_version: str | None = None
    screen_failure_reason: str | None = None
    screen_failure_detail: str | None = None
    anatomy_suitable: bool | None = None
    crc_approved: bool = False
    randomized: bool = False
    randomization_number: str | None = None
    randomized_on: str | None = None
    arm: ArmView | None = None
    procedure_done: bool = False
    discharged_on: str | None = None
    unblinded_on: str | None = None
    emergency_unblinded: bool = False
    unblinding_due: bool = False
    """The scheduled unblinding is offered: the protocol's unblinding visit is done (RAND-7)."""
    exit_date: str | None = None
    exit_reason: str | None = None
    allowed_actions: list[str] = field(default_factory=list)
    visits: list[VisitView] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def subject_view(
    ctx: ServiceContext,
    uow: UnitOfWork,
    actor: Actor,
    read: SubjectRead,
    *,
    visits: list[Visit] | None = None,
    for_procedure: bool = False,
) -> SubjectView:
    """The subject as ``actor`` may see it. ``visits``: the subject's recorded visits when the
    caller has them already (a write that just recorded one), else they are read."""
    subject, site, version = read.subject, read.site, read.version
    loaded = loaded_protocol(ctx, uow, version)
    rand = read.allocation
    arm = None
    if rand is not None and may_see_arm(
        actor,
        subject.study_id,
        subject.site_id,
        subject_unblinded=subject.unblinded_on is not None,
        for_procedure=for_procedure,
        trial_unblinded=read.trial_unblinded,
    ):
        code = ctx.cipher.decrypt(rand.arm_enc)
        arm = ArmView(code=code, label=loaded.protocol.arm(code).label)
    views: list[VisitView] = []
    if subject.randomized_on is not None:
        if visits is None:
            visits = uow.visits.for_subject(subject.id)
        recorded = {v.visit_code: v for v in visits}
        # not-done visits follow the version in force today at the site (PROT-2)
        today = site_today(site, ctx.now())
        schedule_row, schedule = schedule_version(ctx, uow, subject, version, today)
        labels = {version.id: version.version, schedule_row.id: schedule_row.version}
        specs = {v.code: v for v in schedule.protocol.visits}
        for planned in plan_visits(subject.randomized_on, visit_specs(schedule.protocol)):
            row = recorded.get(planned.code)
            spec = specs[planned.code]
            if row is not None and row.protocol_version_id not in labels:
                labels[row.protocol_version_id] = uow.protocols.get(row.protocol_version_id).version
            views.append(
                VisitView(
                    code=planned.code,
                    name=spec.name,
                    kind=spec.kind.value,
                    target_date=planned.target_date.isoformat(),
                    window_start=(row.window_start if row else planned.window_start).isoformat(),
                    window_end=(row.window_end if row else planned.window_end).isoformat(),
                    status=row.status if row else "planned",
                    visit_date=_iso(row.visit_date) if row else None,
                    timing=row.timing if row else None,
                    protocol_version=labels[row.protocol_version_id if row else schedule_row.id],
                )
            )
    state = SubjectState(subject.state)
    after = loaded.protocol.blinding.unblind_after_visit
    unblinding_due = (
        state is SubjectState.RANDOMIZED
        and after is not None
        and any(v.code == after and v.status == "done" for v in views)
    )
    return SubjectView(
        number=subject.number,
        site=site.code,
        state=subject.state,
        registered_on=subject.registered_on.isoformat(),
        test_subject=subject.test_subject,
        protocol_version=version.version,
        protocol_sha256=version.sha256,
        consent_date=_iso(subject.consent_date),
        consent_version=subject.consent_version,
        screen_failure_reason=subject.screen_failure_reason,
        screen_failure_detail=subject.screen_failure_detail,
        anatomy_suitable=subject.anatomy_suitable,
        crc_approved=subject.crc_approved,
        randomized=rand is not None,
        randomization_number=rand.number if rand else None,
        randomized_on=_iso(subject.randomized_on),
        arm=arm,
        procedure_done=subject.procedure_done,
        discharged_on=_iso(subject.discharged_on),
        unblinded_on=_iso(subject.unblinded_on),
        emergency_unblinded=subject.emergency_unblinded,
        unblinding_due=unblinding_due,
        exit_date=_iso(subject.exit_date),
        exit_reason=subject.exit_reason,
        allowed_actions=[a.value for a in allowed_actions(state)],
        visits=views,
    )


def committed_view(
    act: Acting, *, visits: list[Visit] | None = None, for_procedure: bool = False
) -> SubjectView:
    """Commit the action and show the subject as it now is. The view is built inside the
    action's transaction from what it holds, so no second transaction follows the commit."""
    if visits is None and act.subject.randomized_on is None:
        visits = []
    view = subject_view(
        act.ctx, act.uow, act.actor, act.read, visits=visits, for_procedure=for_procedure
    )
    act.uow.commit()
    return view
