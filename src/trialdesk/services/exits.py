"""Death and withdrawal through the protocol's forms, the kind of withdrawal, and follow-up
contacts after a withdrawal that allows them (REC-9, LIFE-4).

The exit date and reason come from the saved form (the protocol's ``exits`` section names the
form and fields); a withdrawal says what the subject withdraws from, one of the protocol's
kinds, read from the form's kind field when the protocol has one. A subject who withdrew from
further visits but not from contact still has the contact forms of that kind recorded (the
flagship's annual vital-status contacts); nothing else is recorded after the exit date.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from trialdesk.domain.errors import NotFound, PreconditionFailed, Refusal, ValidationFailed
from trialdesk.domain.exits import (
    ExitFacts,
    ExitKind,
    WithdrawalKindSpec,
    check_record_after_exit,
    contact_visits,
    read_exit,
)
from trialdesk.domain.lifecycle import Action, SubjectState
from trialdesk.domain.permissions import Permission
from trialdesk.domain.schedule import classify, window_for
from trialdesk.protocol.specs import exit_form_specs, visit_spec, withdrawal_kind_specs
from trialdesk.services.access import Actor, require
from trialdesk.services.common import Acting, acting_on, acting_with, subject_in_scope
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import save_form, typed_values
from trialdesk.services.views import SubjectView, committed_view

EXITS = {"death": Action.RECORD_DEATH, "withdrawal": Action.WITHDRAW}


def record_exit(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    exit: str,
    values: dict[str, Any],
    kind: str | None = None,
) -> SubjectView:
    """Record a death or a withdrawal on the protocol's form (REC-9): the form is saved and
    audited like any form, the subject exits on the form's date with its reason, and a
    withdrawal keeps its kind (what the subject withdraws from)."""
    action = EXITS.get(exit)
    # scope and permission first (both exits need SUBJECT_EXIT), then what was asked
    with acting_on(ctx, actor, study_id, number, action or Action.WITHDRAW) as act:
        if action is None:
            raise ValidationFailed(
                f"unknown exit {exit!r}; one of: death, withdrawal", {"exit": "unknown"}
            )
        loaded = act.protocol()
        spec = exit_form_specs(loaded.protocol).get(exit)
        if spec is None:
            raise ValidationFailed(
                f"this protocol names no {exit} form (its exits section)", {"exit": "no form"}
            )
        kinds = withdrawal_kind_specs(loaded.protocol) if exit == "withdrawal" else []
        typed = typed_values(loaded, spec.form, values)
        on, reason, chosen = read_exit(spec, typed, kinds=kinds, kind=kind)
        act.check_date(on, exit, field=spec.date_field)
        record = save_form(
            act, loaded, act.version.id, spec.form, values, action=f"record_{exit}_form"
        )
        text = reason or exit
        changes: dict[str, Any] = {"exit_date": on, "exit_reason": text}
        audit_new: dict[str, Any] = {"form": spec.form, "form_record": record.id}
        if chosen is not None:
            changes["follow_up_contact_allowed"] = chosen.contact_allowed
            audit_new["withdrawal_kind"] = chosen.code
            _keep_kind(act, chosen, record.id, on)
        act.transition(action, changes=changes, reason=text, audit_new=audit_new)
        return committed_view(act)


def _keep_kind(act: Acting, kind: WithdrawalKindSpec, record_id: int | None, on: dt.date) -> None:
    act.uow.consents.add_withdrawal(
        subject_id=act.subject.id,
        kind=kind.code,
        contact_allowed=kind.contact_allowed,
        form_record_id=record_id,
        withdrawn_on=on,
        recorded_by=act.actor.label,
        recorded_at=act.now,
    )


def keep_withdrawal_kind(act: Acting, contact_allowed: bool, on: dt.date) -> None:
    """A withdrawal recorded without the form (the older path): the protocol's first kind
    that allows contact, or not, as said."""
    kinds = withdrawal_kind_specs(act.protocol().protocol)
    chosen = next((k for k in kinds if k.contact_allowed == contact_allowed), None)
    if chosen is None:
        code = "contact_allowed" if contact_allowed else "no_contact"
        chosen = WithdrawalKindSpec(code, code, contact_allowed)
    _keep_kind(act, chosen, None, on)


def _exit_facts(act: Acting) -> ExitFacts:
    subject = act.subject
    state = SubjectState(subject.state)
    assert subject.exit_date is not None
    if state is SubjectState.DIED:
        return ExitFacts(ExitKind.DEATH, subject.exit_date)
    if state is SubjectState.LOST_TO_FOLLOW_UP:
        return ExitFacts(ExitKind.LOST, subject.exit_date)
    kinds = {k.code: k for k in withdrawal_kind_specs(act.protocol().protocol)}
    row = act.uow.consents.withdrawal(subject.id)
    kind: WithdrawalKindSpec | None = None
    if row is not None:
        kind = kinds.get(row.kind) or WithdrawalKindSpec(row.kind, row.kind, row.contact_allowed)
    elif subject.follow_up_contact_allowed:
        kind = next((k for k in kinds.values() if k.contact_allowed), None)
    return ExitFacts(ExitKind.WITHDRAWAL, subject.exit_date, kind)


def record_contact(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    visit_code: str,
    contact_date: dt.date,
    forms: dict[str, dict[str, Any]],
) -> SubjectView:
    """A follow-up contact of a subject who withdrew from further visits but not from contact
    (REC-9): only the contact forms the withdrawal kind allows, at a scheduled visit not yet
    recorded; the subject stays withdrawn."""
    now = ctx.now()
    with ctx.uow() as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        require(actor, study_id, Permission.VISIT_RECORD, site_id=read.subject.site_id)
        act = acting_with(ctx, uow, actor, read, now)
        state = SubjectState(read.subject.state)
        if state not in (SubjectState.WITHDRAWN, SubjectState.DIED, SubjectState.LOST_TO_FOLLOW_UP):
            raise PreconditionFailed(
                f"{number} is {state.value}: record its visits as visits; contacts after a "
                "withdrawal are for withdrawn subjects",
                Refusal.NOT_WITHDRAWN_WITH_CONTACT,
            )
        loaded = act.protocol()
        try:
            visit = loaded.protocol.visit(visit_code)
        except KeyError:
            codes = ", ".join(v.code for v in loaded.protocol.visits)
            raise NotFound(f"visit {visit_code} is not in the protocol (visits: {codes})") from None
        if not forms:
            raise ValidationFailed("a contact needs its forms", {"forms": "required"})
        unknown = sorted(set(forms) - set(visit.forms))
        if unknown:
            raise ValidationFailed(
                f"visit {visit_code} has no form " + ", ".join(unknown),
                {f: "not a form of this visit" for f in unknown},
            )
        facts = _exit_facts(act)
        for code in forms:
            check_record_after_exit(facts, code, contact_date, subject=number)
        if uow.visits.get(read.subject.id, visit_code) is not None:
            raise PreconditionFailed(
                f"visit {visit_code} is already recorded", Refusal.ALREADY_RECORDED
            )
        act.check_date(contact_date, f"contact {visit_code}", field="contact_date")
        randomized_on = read.subject.randomized_on
        if randomized_on is None:
            raise PreconditionFailed(
                f"{number} was never randomized: it has no scheduled contacts",
                Refusal.NOT_WITHDRAWN_WITH_CONTACT,
            )
        for code, raw in forms.items():
            typed_values(loaded, code, raw)  # every form valid before anything is written
        window = window_for(randomized_on, visit_spec(visit))
        uow.visits.add(
            subject_id=read.subject.id,
            visit_code=visit_code,
            status="done",
            visit_date=contact_date,
            timing=classify(contact_date, window),
            window_start=window.start,
            window_end=window.end,
            missed_reason=None,
            protocol_version_id=read.version.id,
            recorded_at=now,
            recorded_by=actor.label,
        )
        for code, raw in forms.items():
            save_form(
                act, loaded, read.version.id, code, raw, visit_code=visit_code,
                action="record_contact_form",
            )  # fmt: skip
        act.audit(
            "record_contact",
            new={
                "visit": visit_code,
                "contact_date": contact_date.isoformat(),
                "forms": sorted(forms),
                "after": state.value,
            },
        )
        return committed_view(act)


def contacts_offered(ctx: ServiceContext, actor: Actor, study_id: int, number: str) -> list[str]:
    """The scheduled visits at which :func:`record_contact` would take a follow-up contact
    now (REC-9), for pages to offer exactly these: the actor records visits at the subject's
    site, the subject withdrew with a kind that allows contact, the visit's forms are all
    contact forms of that kind and it is not recorded yet. Empty otherwise."""
    now = ctx.now()
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        if not actor.may(study_id, Permission.VISIT_RECORD, subject.site_id):
            return []
        if SubjectState(subject.state) is not SubjectState.WITHDRAWN:
            return []
        if subject.randomized_on is None or subject.exit_date is None:
            return []
        act = acting_with(ctx, uow, actor, read, now)
        facts = _exit_facts(act)
        if facts.withdrawal is None or not facts.withdrawal.contact_allowed:
            return []
        visits = [(v.code, list(v.forms)) for v in act.protocol().protocol.visits]
        recorded = {v.visit_code for v in uow.visits.for_subject(subject.id)}
        return [c for c in contact_visits(facts.withdrawal, visits) if c not in recorded]
