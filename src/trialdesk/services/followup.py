"""After randomization: index procedure, discharge, visits, therapies, adverse events,
unblinding, exits and completion (SYSTEM.md §2, 5-7; LIFE-4, SCHED-1..3, THER-1..3)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from trialdesk.domain.errors import NotFound, PreconditionFailed, Refusal, ValidationFailed
from trialdesk.domain.lifecycle import Action
from trialdesk.domain.roles import Role
from trialdesk.domain.schedule import classify, window_for
from trialdesk.domain.therapy import classify_therapy
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.models import Visit as VisitDefinition
from trialdesk.protocol.specs import visit_spec
from trialdesk.services import supply
from trialdesk.services.access import Actor
from trialdesk.services.auth import reauthenticate
from trialdesk.services.common import (
    Acting,
    acting_on,
    require_text,
    schedule_version,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.exits import keep_withdrawal_kind
from trialdesk.services.forms import (
    CONCEALED_PROCEDURE_FORM,
    concealed_procedure,
    correct_form,
    form_record_protocol,
    refuse_concealed,
    save_concealed_procedure,
    save_form,
    typed_values,
)
from trialdesk.services.mail import notify_crc_case, notify_emergency_unblinding
from trialdesk.services.records.locks import freeze_at_unblinding
from trialdesk.services.views import ArmView, SubjectView, committed_view
from trialdesk.store.records import ProtocolVersion, Visit


def record_procedure(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, *, values: dict[str, Any]
) -> SubjectView:
    """The implanting team records the arm's index procedure form (PROC-1/2, RAND-8); its
    dates are not before randomization (issue 12)."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_PROCEDURE) as act:
        if act.subject.procedure_done:
            raise PreconditionFailed(
                f"the index procedure of {number} is already recorded", Refusal.ALREADY_RECORDED
            )
        assert act.allocation is not None  # the state is randomized
        arm = ctx.cipher.decrypt(act.allocation.arm_enc)
        loaded = act.protocol()
        form_code = loaded.protocol.arm(arm).procedure_form
        if form_code is None:
            raise PreconditionFailed(
                "the protocol names no procedure form for this arm", Refusal.NO_PROCEDURE_FORM
            )
        save_concealed_procedure(act, loaded, act.version.id, form_code, values)
        # SUP-1: the implant arm names its device; refused with nothing saved unless in stock
        on = _procedure_date(loaded, form_code, typed_values(loaded, form_code, values))
        supply.use_for_procedure(act.uow, ctx, actor, act.subject, loaded, arm, values, on)
        act.transition(Action.RECORD_PROCEDURE, changes={"procedure_done": True})
        return committed_view(act, for_procedure=True)


def _procedure_date(
    loaded: LoadedProtocol, form_code: str, typed: dict[str, Any]
) -> dt.date | None:
    """The procedure form's own date (its ``date_field``), or None when the form has none
    (the device service then takes the site's today)."""
    form = loaded.protocol.form(form_code)
    value = typed.get(form.date_field) if form.date_field else None
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else None


def _recorded_procedure_date(act: Acting) -> dt.date | None:
    """The date of the subject's concealed index procedure record, read inside the service:
    both arms' forms carry one, so a refusal quoting it says nothing about the arm."""
    record = act.uow.forms.latest(act.subject.id, CONCEALED_PROCEDURE_FORM, "")
    if record is None:
        return None
    form_code, values = concealed_procedure(act.ctx, record)
    loaded = form_record_protocol(act.ctx, act.uow, record)
    return _procedure_date(loaded, form_code, typed_values(loaded, form_code, values))


def record_discharge(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, *, discharged_on: dt.date
) -> SubjectView:
    """Discharge after the index procedure (PROC-2), never dated before it (issue 12)."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_DISCHARGE) as act:
        if not act.subject.procedure_done:
            raise PreconditionFailed(
                "record the index procedure before discharge", Refusal.PROCEDURE_MISSING
            )
        if act.subject.discharged_on is not None:
            raise PreconditionFailed("discharge is already recorded", Refusal.ALREADY_RECORDED)
        procedure_on = _recorded_procedure_date(act)
        not_before: dt.date | None = procedure_on or act.subject.randomized_on
        what = "the index procedure" if procedure_on is not None else "randomization"
        act.check_date(
            discharged_on,
            "discharge",
            field="discharged_on",
            not_before=not_before,
            not_before_what=what,
        )
        act.transition(Action.RECORD_DISCHARGE, changes={"discharged_on": discharged_on})
        return committed_view(act)


def _visit_spec(
    act: Acting, visit_code: str, on: dt.date
) -> tuple[ProtocolVersion, LoadedProtocol, VisitDefinition]:
    """The visit as the version in force on ``on`` defines it (PROT-2: a visit not yet done
    follows an amendment from its effective date)."""
    version, loaded = schedule_version(act.ctx, act.uow, act.subject, act.version, on)
    try:
        return version, loaded, loaded.protocol.visit(visit_code)
    except KeyError:
        codes = ", ".join(v.code for v in loaded.protocol.visits)
        raise NotFound(f"visit {visit_code} is not in the protocol (visits: {codes})") from None


def _visits_if_free(act: Acting, visit_code: str) -> list[Visit]:
    """The subject's recorded visits; refused when ``visit_code`` is one of them."""
    visits = act.uow.visits.for_subject(act.subject.id)
    for visit in visits:
        if visit.visit_code == visit_code:
            raise PreconditionFailed(
                f"visit {visit_code} is already recorded as {visit.status}",
                Refusal.ALREADY_RECORDED,
            )
    return visits


def record_visit(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    visit_code: str,
    visit_date: dt.date,
    forms: dict[str, dict[str, Any]] | None = None,
) -> SubjectView:
    """Record a visit in, before or after its window; outside it is a deviation (SCHED-2)."""
    forms = forms or {}
    with acting_on(ctx, actor, study_id, number, Action.RECORD_VISIT) as act:
        version, loaded, visit = _visit_spec(act, visit_code, visit_date)
        visits = _visits_if_free(act, visit_code)
        randomized_on = act.subject.randomized_on
        assert randomized_on is not None  # the state is on study
        act.check_date(
            visit_date,
            f"visit {visit_code}",
            field="visit_date",
            not_before=randomized_on,
            not_before_what="randomization",
        )
        unknown = sorted(set(forms) - set(visit.forms))
        if unknown:
            raise ValidationFailed(
                f"visit {visit_code} has no form " + ", ".join(unknown),
                {f: "not a form of this visit" for f in unknown},
            )
        problems: dict[str, str] = {}
        for code in visit.forms:
            if code not in forms:
                problems[code] = "required"
                continue
            try:
                typed_values(loaded, code, forms[code])
            except ValidationFailed as exc:
                problems.update({f"{code}.{k}": v for k, v in exc.problems.items()})
        if problems:
            raise ValidationFailed(f"visit {visit_code}: forms have errors", problems)
        window = window_for(randomized_on, visit_spec(visit))
        timing = classify(visit_date, window)
        visits.append(
            act.uow.visits.add(
                subject_id=act.subject.id,
                visit_code=visit_code,
                status="done",
                visit_date=visit_date,
                timing=timing,
                window_start=window.start,
                window_end=window.end,
                missed_reason=None,
                protocol_version_id=version.id,
                recorded_at=act.now,
                recorded_by=actor.label,
            )
        )
        for code in visit.forms:
            save_form(
                act,
                loaded,
                version.id,
                code,
                forms[code],
                visit_code=visit_code,
                action="record_visit_form",
            )
        act.transition(
            Action.RECORD_VISIT,
            audit_new={
                "visit": visit_code,
                "visit_date": visit_date.isoformat(),
                "timing": timing,
                "window": [window.start.isoformat(), window.end.isoformat()],
                "protocol_deviation": timing != "on_time",
            },
        )
        return committed_view(act, visits=visits)


def miss_visit(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    visit_code: str,
    reason: str,
) -> SubjectView:
    """Mark a visit missed; it never blocks later visits (SCHED-2). A visit whose window has
    not opened yet cannot be missed (issue 12)."""
    with acting_on(ctx, actor, study_id, number, Action.MISS_VISIT) as act:
        today = act.today
        version, _loaded, visit = _visit_spec(act, visit_code, today)
        visits = _visits_if_free(act, visit_code)
        text = require_text(reason, "reason", "a reason")
        randomized_on = act.subject.randomized_on
        assert randomized_on is not None  # the state is on study
        window = window_for(randomized_on, visit_spec(visit))
        if today < window.start:
            raise PreconditionFailed(
                f"visit {visit_code} of {number} cannot be missed yet: its window opens on "
                f"{window.start.isoformat()} (today at the site is {today.isoformat()})",
                Refusal.VISIT_NOT_OPEN,
            )
        visits.append(
            act.uow.visits.add(
                subject_id=act.subject.id,
                visit_code=visit_code,
                status="missed",
                visit_date=None,
                timing=None,
                window_start=window.start,
                window_end=window.end,
                missed_reason=text,
                protocol_version_id=version.id,
                recorded_at=act.now,
                recorded_by=actor.label,
            )
        )
        act.transition(
            Action.MISS_VISIT, audit_new={"visit": visit_code, "missed": True}, reason=text
        )
        return committed_view(act, visits=visits)


def record_therapy(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    therapy_date: dt.date,
    therapy_type: str,
) -> SubjectView:
    """Any additional therapy goes to the CRC: > 6 months for endpoint evaluation, otherwise
    flagged early (THER-1..3). The subject is never withdrawn by the system."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_THERAPY) as act:
        loaded = act.protocol()
        types = {t.code for t in loaded.protocol.therapies.types}
        if types and therapy_type not in types:
            raise ValidationFailed(
                f"unknown therapy type {therapy_type!r}; one of " + ", ".join(sorted(types)),
                {"therapy_type": "unknown"},
            )
        randomized_on = act.subject.randomized_on
        assert randomized_on is not None  # the state is on study
        act.check_date(
            therapy_date,
            "therapy",
            field="therapy_date",
            not_before=randomized_on,
            not_before_what="randomization",
        )
        cls = classify_therapy(
            randomized_on, therapy_date, loaded.protocol.therapies.endpoint_review_after_months
        )
        therapy = act.uow.crc.add_therapy(
            subject_id=act.subject.id,
            therapy_date=therapy_date,
            therapy_type=therapy_type,
            early=cls.early,
            months_since=cls.months_since,
            at=act.now,
            by=actor.label,
        )
        case = act.uow.crc.open_case(
            study_id=study_id,
            subject_id=act.subject.id,
            kind="therapy",
            at=act.now,
            therapy_id=therapy.id,
        )
        notify_crc_case(act.uow, ctx, case, act.subject.number)
        act.transition(
            Action.RECORD_THERAPY,
            audit_new={
                "therapy": therapy.id,
                "therapy_date": therapy_date.isoformat(),
                "therapy_type": therapy_type,
                "months_since": cls.months_since,
                "early": cls.early,
                "review": cls.review,
                "crc_case": case.id,
            },
        )
        return committed_view(act)


def record_adverse_event(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, *, values: dict[str, Any]
) -> SubjectView:
    """An adverse event on the form of the version in force at the site today (PROT-2): after
    an amendment of the form (flagship 2.0: hospitalization dates) enrolled subjects' new
    events use the amended form, events recorded before keep theirs."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_ADVERSE_EVENT) as act:
        version, loaded = schedule_version(act.ctx, act.uow, act.subject, act.version, act.today)
        save_form(
            act,
            loaded,
            version.id,
            "adverse_event",
            values,
            action=Action.RECORD_ADVERSE_EVENT.value,
        )
        return committed_view(act)


def unblind_subject(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, *, password: str
) -> SubjectView:
    """Scheduled unblinding once the 24-month evaluation is complete (RAND-7), e-signed."""
    with acting_on(ctx, actor, study_id, number, Action.UNBLIND, readonly=True) as act:
        after = act.protocol().protocol.blinding.unblind_after_visit
        visit = act.uow.visits.get(act.subject.id, after) if after else None
        if after and (visit is None or visit.status != "done"):
            raise PreconditionFailed(
                f"unblinding of {number} is due only after visit {after} is complete",
                Refusal.UNBLINDING_NOT_DUE,
            )
    meaning = f"Unblinding of subject {number} after the {after or 'final'} evaluation"
    reauthenticate(ctx, actor, password, meaning=meaning)
    with acting_on(ctx, actor, study_id, number, Action.UNBLIND) as act:
        act.transition(
            Action.UNBLIND,
            changes={"unblinded_on": act.today},
            audit_new={"signature": {"name": actor.full_name, "meaning": meaning}},
        )
        freeze_at_unblinding(act, "scheduled")  # REC-4: before the arm is shown
        return committed_view(act)


def emergency_unblind(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    reason: str,
    password: str,
) -> SubjectView:
    """The investigator breaks the code for one subject (RAND-7): reason, signature, and a
    notification to the study manager. The returned view shows the arm to this caller."""
    text = require_text(reason, "reason", "a reason")
    with acting_on(ctx, actor, study_id, number, Action.EMERGENCY_UNBLIND, readonly=True):
        pass  # scope, permission and state are checked before the password is asked for
    meaning = f"Emergency unblinding of subject {number}"
    reauthenticate(ctx, actor, password, meaning=meaning)
    with acting_on(ctx, actor, study_id, number, Action.EMERGENCY_UNBLIND) as act:
        act.transition(
            Action.EMERGENCY_UNBLIND,
            changes={"emergency_unblinded": True},
            reason=text,
            audit_new={"signature": {"name": actor.full_name, "meaning": meaning}},
        )
        act.uow.notifications.add(
            study_id=study_id,
            recipient_role=Role.MANAGER.value,
            subject_id=act.subject.id,
            text=f"Emergency unblinding of subject {number} by {actor.full_name}: {text}",
            at=act.now,
        )
        notify_emergency_unblinding(act.uow, ctx, act.subject, actor)
        freeze_at_unblinding(act, "emergency")  # REC-4: before the arm is shown
        view = committed_view(act)
        assert act.allocation is not None  # the state is randomized
        code = ctx.cipher.decrypt(act.allocation.arm_enc)
        label = act.protocol().protocol.arm(code).label
        return SubjectView(**{**view.__dict__, "arm": ArmView(code=code, label=label)})


def _exit(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    action: Action,
    exit_date: dt.date,
    reason: str,
    extra: dict[str, Any] | None = None,
) -> SubjectView:
    with acting_on(ctx, actor, study_id, number, action) as act:
        text = require_text(reason, "reason", "a reason")
        act.check_date(exit_date, action.value, field="date")
        if action is Action.MARK_LOST_TO_FOLLOW_UP and act.subject.randomized_on is not None:
            needed = act.protocol().protocol.follow_up.lost_after_missed_contacts
            missed = act.uow.visits.count_missed(act.subject.id)
            if missed < needed:
                raise PreconditionFailed(
                    f"lost to follow-up needs {needed} missed contacts first; {number} has "
                    f"{missed}",
                    Refusal.NOT_ENOUGH_MISSED_CONTACTS,
                )
        changes: dict[str, Any] = {"exit_date": exit_date, "exit_reason": text}
        changes.update(extra or {})
        act.transition(action, changes=changes, reason=text)
        if action is Action.WITHDRAW:  # REC-9: what the subject withdrew from
            keep_withdrawal_kind(act, bool(changes.get("follow_up_contact_allowed")), exit_date)
        return committed_view(act)


def withdraw(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    withdrawn_on: dt.date,
    reason: str,
    follow_up_contact_allowed: bool,
) -> SubjectView:
    """Consent withdrawn; data kept, the subject stays in its arm (LIFE-4)."""
    return _exit(
        ctx,
        actor,
        study_id,
        number,
        Action.WITHDRAW,
        withdrawn_on,
        reason,
        {"follow_up_contact_allowed": follow_up_contact_allowed},
    )


def mark_lost_to_follow_up(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, *, on: dt.date, reason: str
) -> SubjectView:
    return _exit(ctx, actor, study_id, number, Action.MARK_LOST_TO_FOLLOW_UP, on, reason)


def record_death(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    death_date: dt.date,
    cause: str,
) -> SubjectView:
    return _exit(ctx, actor, study_id, number, Action.RECORD_DEATH, death_date, cause)


def complete_subject(ctx: ServiceContext, actor: Actor, study_id: int, number: str) -> SubjectView:
    """Completion at the final (60-month) contact (SCHED-3)."""
    with acting_on(ctx, actor, study_id, number, Action.COMPLETE) as act:
        loaded = act.protocol()
        final = loaded.protocol.follow_up.completion_visit or loaded.protocol.visits[-1].code
        if act.uow.visits.get(act.subject.id, final) is None:
            raise PreconditionFailed(
                f"{number} completes at visit {final}, not yet recorded",
                Refusal.FINAL_VISIT_MISSING,
            )
        act.transition(Action.COMPLETE, audit_new={"final_visit": final})
        return committed_view(act)


def correct_form_data(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    form_code: str,
    changes: dict[str, Any],
    reason: str,
    visit_code: str = "",
    seq: int | None = None,
) -> SubjectView:
    """Change saved form values; needs a reason, and the audit keeps old and new (DATA-2)."""
    with acting_on(ctx, actor, study_id, number, Action.CORRECT_DATA) as act:
        refuse_concealed(act.protocol(), form_code, "a correction")
        record = act.uow.forms.latest(act.subject.id, form_code, visit_code, seq=seq)
        if record is None:
            where = f" at {visit_code}" if visit_code else ""
            raise NotFound(f"form {form_code}{where} of {number} has not been saved")
        loaded = form_record_protocol(ctx, act.uow, record)
        correct_form(act, loaded, record, changes, reason)
        return committed_view(act)
