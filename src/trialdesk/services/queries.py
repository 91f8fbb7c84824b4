"""Read-only services: subjects in scope, as blinded views, and what may be done with them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.lifecycle import Action, SubjectState
from trialdesk.domain.permissions import Permission
from trialdesk.services.access import Actor, offered_actions, require
from trialdesk.services.common import loaded_protocol, site_today, subject_in_scope
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import concealed_form_codes
from trialdesk.services.views import SubjectView, subject_view
from trialdesk.store.records import SubjectRead
from trialdesk.store.uow import UnitOfWork

SUBJECT_ORDERS = ("number", "registered", "state", "site")
"""How the subject list may be sorted (issue 14); ties are broken by number."""


@dataclass(frozen=True)
class Page:
    items: list[SubjectView]
    total: int
    offset: int
    limit: int


def get_subject(ctx: ServiceContext, actor: Actor, study_id: int, number: str) -> SubjectView:
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        return subject_view(ctx, uow, actor, subject_in_scope(uow, actor, study_id, number))


def subject_actions(ctx: ServiceContext, actor: Actor, study_id: int, number: str) -> list[str]:
    """The actions this actor may take on the subject now: the lifecycle allows them in the
    subject's state, the actor's roles at its site hold the permission, and the facts the
    services check are in place (for pages and clients to offer exactly these)."""
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        view = subject_view(ctx, uow, actor, read)
        subject = read.subject
        offered = offered_actions(actor, study_id, subject.site_id, SubjectState(subject.state))
        facts = _OfferFacts(
            today=site_today(read.site, ctx.now()),
            missed=uow.visits.count_missed(subject.id)
            if Action.MARK_LOST_TO_FOLLOW_UP in offered
            else 0,
            lost_after=loaded_protocol(
                ctx, uow, read.version
            ).protocol.follow_up.lost_after_missed_contacts,
            final_visit=_final_visit(ctx, uow, read),
            saved_forms=Action.CORRECT_DATA in offered and _has_correctable_form(ctx, uow, read),
            unsaved_screening=_unsaved_screening(ctx, uow, read),
        )
    return [a.value for a in offered if _facts_allow(a, read, view, facts)]


@dataclass(frozen=True)
class _OfferFacts:
    """What the services check beyond state and role, read once for the offer."""

    today: dt.date
    missed: int
    lost_after: int
    final_visit: str
    saved_forms: bool
    unsaved_screening: bool


def _final_visit(ctx: ServiceContext, uow: UnitOfWork, read: SubjectRead) -> str:
    protocol = loaded_protocol(ctx, uow, read.version).protocol
    return protocol.follow_up.completion_visit or protocol.visits[-1].code


def _has_correctable_form(ctx: ServiceContext, uow: UnitOfWork, read: SubjectRead) -> bool:
    """A saved form the correction service accepts (not a concealed procedure record)."""
    concealed = concealed_form_codes(loaded_protocol(ctx, uow, read.version))
    codes = [""] + [v.visit_code for v in uow.visits.for_subject(read.subject.id)]
    return any(
        r.form_code not in concealed
        for code in codes
        for r in uow.forms.for_subject(read.subject.id, visit_code=code)
    )


def _unsaved_screening(ctx: ServiceContext, uow: UnitOfWork, read: SubjectRead) -> bool:
    """A screening form not saved yet (a saved one changes by correction only)."""
    wanted = loaded_protocol(ctx, uow, read.version).protocol.screening.forms
    saved = {r.form_code for r in uow.forms.for_subject(read.subject.id)}
    return any(code not in saved for code in wanted)


def _facts_allow(action: Action, read: SubjectRead, view: SubjectView, facts: _OfferFacts) -> bool:
    subject = read.subject
    if action in (Action.ANATOMY_SUITABLE, Action.ANATOMY_UNSUITABLE):
        return subject.anatomy_suitable is None
    if action is Action.RANDOMIZE:
        return bool(subject.anatomy_suitable) and subject.crc_approved
    if action is Action.RECORD_PROCEDURE:
        return not subject.procedure_done
    if action is Action.RECORD_DISCHARGE:
        return subject.procedure_done and subject.discharged_on is None
    if action is Action.UNBLIND:
        return view.unblinding_due
    if action is Action.RECORD_VISIT:
        return any(v.status == "planned" for v in view.visits)
    if action is Action.MISS_VISIT:  # only once a window has opened (issue 12)
        return any(
            v.status == "planned" and dt.date.fromisoformat(v.window_start) <= facts.today
            for v in view.visits
        )
    if action is Action.MARK_LOST_TO_FOLLOW_UP and subject.randomized_on is not None:
        return facts.missed >= facts.lost_after
    if action is Action.COMPLETE:
        return any(v.code == facts.final_visit and v.status != "planned" for v in view.visits)
    if action is Action.CORRECT_DATA:
        return facts.saved_forms
    if action is Action.RECORD_SCREENING_FORM:
        return facts.unsaved_screening
    return True


def list_subjects(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    site: str | None = None,
    state: str | None = None,
    offset: int = 0,
    limit: int = 50,
    search: str | None = None,
    order: str = "number",
    descending: bool = False,
) -> Page:
    """Subjects the actor may see (own site only for site-scoped roles, ACC-1), filtered,
    sorted and paged in the repository (issue 14: ``search`` is a part of the number,
    ``order`` one of SUBJECT_ORDERS; none of them depends on an arm)."""
    if limit < 1 or limit > 500 or offset < 0:
        raise ValidationFailed("limit must be 1-500 and offset ≥ 0", {"limit": "out of range"})
    if order not in SUBJECT_ORDERS:
        raise ValidationFailed(
            f"unknown order {order!r}; one of {', '.join(SUBJECT_ORDERS)}", {"order": "unknown"}
        )
    if state is not None and state not in {s.value for s in SubjectState}:
        raise ValidationFailed(f"unknown state {state!r}", {"state": "unknown"})
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        reads, total = uow.subjects.page(
            study_id,
            site_ids=actor.site_ids(study_id),
            site_code=site,
            state=state,
            offset=offset,
            limit=limit,
            search=(search or "").strip() or None,
            order=order,
            descending=descending,
        )
        visits = uow.visits.for_subjects(
            [r.subject.id for r in reads if r.subject.randomized_on is not None]
        )
        items = [
            subject_view(ctx, uow, actor, r, visits=visits.get(r.subject.id, [])) for r in reads
        ]
        return Page(items=items, total=total, offset=offset, limit=limit)


def subject_counts(ctx: ServiceContext, actor: Actor, study_id: int) -> dict[str, int]:
    """How many subjects the actor may see are in each state, in journey order (issue 14:
    the home page summarises instead of listing every subject)."""
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        counts = uow.subjects.state_counts(study_id, site_ids=actor.site_ids(study_id))
    return {s.value: counts[s.value] for s in SubjectState if counts.get(s.value)}
