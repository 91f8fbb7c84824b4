"""After randomization: index procedure, discharge, visits, therapies, adverse events,
unblinding, exits and completion (SYSTEM.md §2, 5-7; LIFE-4, SCHED-1..3, THER-1..3)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from trialdesk.domain.errors import NotFound, PreconditionFailed, ValidationFailed
from trialdesk.domain.lifecycle import Action
from trialdesk.domain.roles import Role
from trialdesk.domain.schedule import classify, window_for
from trialdesk.domain.therapy import classify_therapy
from trialdesk.protocol.specs import visit_spec
from trialdesk.services import devices
from trialdesk.services.access import Actor, require
from trialdesk.services.auth import reauthenticate
from trialdesk.services.common import (
    acting_on,
    check_action,
    check_clinical_date,
    load_subject,
    require_text,
    schedule_protocol,
    subject_protocol,
    subject_site_today,
    transition,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import (
    CONCEALED_PROCEDURE_FORM,
    correct_form,
    save_concealed_procedure,
    save_form,
    typed_values,
)
from trialdesk.services.mail import notify_crc_case, notify_emergency_unblinding
from trialdesk.services.views import ArmView, SubjectView, subject_view
from trialdesk.store.tables import (
    CrcCaseRow,
    FormRecordRow,
    NotificationRow,
    ProtocolVersionRow,
    RandomizationRow,
    TherapyRow,
    VisitRow,
)

SITE_STAFF = (Role.COORDINATOR,)


def record_procedure(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, values: dict[str, Any]
) -> SubjectView:
    """The implanting team records the arm's index procedure form (PROC-1/2, RAND-8)."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_PROCEDURE, [Role.IMPLANTER]) as act:
        uow, subject = act
        if subject.procedure_done:
            raise PreconditionFailed(
                f"the index procedure of {number} is already recorded", reason="already-recorded"
            )
        rand = uow.session.scalars(
            select(RandomizationRow).where(RandomizationRow.subject_id == subject.id)
        ).one()
        arm = ctx.cipher.decrypt(rand.arm_enc)
        loaded = subject_protocol(ctx, uow, subject)
        form_code = loaded.protocol.arm(arm).procedure_form
        if form_code is None:
            raise PreconditionFailed(
                "the protocol names no procedure form for this arm", reason="no-procedure-form"
            )
        save_concealed_procedure(
            uow, ctx, actor, subject, loaded, subject.protocol_version_id, form_code, values
        )
        # SUP-1: the implant arm names its device; refused with nothing saved unless in stock
        on = _procedure_date(loaded, form_code, values)
        devices.use_for_procedure(uow, ctx, actor, subject, loaded, arm, values, on)
        transition(
            uow, ctx, actor, subject, Action.RECORD_PROCEDURE, changes={"procedure_done": True}
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject, for_procedure=True)


def _procedure_date(loaded: Any, form_code: str, values: dict[str, Any]) -> dt.date | None:
    """The procedure form's own date (its ``date_field``, already validated by the save), or
    None when the form has none (the device service then takes the site's today)."""
    form = loaded.protocol.form(form_code)
    typed = typed_values(loaded, form_code, values)
    value = typed.get(form.date_field) if form.date_field else None
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else None


def record_discharge(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, discharged_on: dt.date
) -> SubjectView:
    with acting_on(ctx, actor, study_id, number, Action.RECORD_DISCHARGE, SITE_STAFF) as act:
        uow, subject = act
        if not subject.procedure_done:
            raise PreconditionFailed(
                "record the index procedure before discharge", reason="procedure-missing"
            )
        if subject.discharged_on is not None:
            raise PreconditionFailed("discharge is already recorded", reason="already-recorded")
        check_clinical_date(
            uow,
            subject,
            discharged_on,
            ctx.now(),
            "discharge",
            field="discharged_on",
            not_before=subject.randomized_on,
            not_before_what="randomization",
        )
        transition(
            uow,
            ctx,
            actor,
            subject,
            Action.RECORD_DISCHARGE,
            changes={"discharged_on": discharged_on},
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def _visit_spec(
    ctx: ServiceContext, uow: Any, subject: Any, visit_code: str, on: dt.date
) -> tuple[int, Any, Any]:
    """The visit as the version in force on ``on`` defines it (PROT-2: a visit not yet done
    follows an amendment from its effective date); with that version's row id."""
    row, loaded = schedule_protocol(ctx, uow, subject, on)
    try:
        return row.id, loaded, loaded.protocol.visit(visit_code)
    except KeyError:
        codes = ", ".join(v.code for v in loaded.protocol.visits)
        raise NotFound(f"visit {visit_code} is not in the protocol (visits: {codes})") from None


def _visit_taken(uow: Any, subject_id: int, visit_code: str) -> None:
    row = uow.session.scalars(
        select(VisitRow).where(VisitRow.subject_id == subject_id, VisitRow.visit_code == visit_code)
    ).one_or_none()
    if row is not None:
        raise PreconditionFailed(
            f"visit {visit_code} is already recorded as {row.status}", reason="already-recorded"
        )


def record_visit(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    visit_code: str,
    visit_date: dt.date,
    forms: dict[str, dict[str, Any]] | None = None,
) -> SubjectView:
    """Record a visit in, before or after its window; outside it is a deviation (SCHED-2)."""
    forms = forms or {}
    with acting_on(ctx, actor, study_id, number, Action.RECORD_VISIT, SITE_STAFF) as act:
        uow, subject = act
        version_id, loaded, visit = _visit_spec(ctx, uow, subject, visit_code, visit_date)
        _visit_taken(uow, subject.id, visit_code)
        assert subject.randomized_on is not None
        check_clinical_date(
            uow,
            subject,
            visit_date,
            ctx.now(),
            f"visit {visit_code}",
            field="visit_date",
            not_before=subject.randomized_on,
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
        window = window_for(subject.randomized_on, visit_spec(visit))
        timing = classify(visit_date, window)
        row = VisitRow(
            subject_id=subject.id,
            visit_code=visit_code,
            status="done",
            visit_date=visit_date,
            timing=timing,
            window_start=window.start,
            window_end=window.end,
            protocol_version_id=version_id,
            recorded_at=ctx.now(),
            recorded_by=actor.label,
        )
        uow.session.add(row)
        for code in visit.forms:
            save_form(
                uow,
                ctx,
                actor,
                subject,
                loaded,
                version_id,
                code,
                forms[code],
                visit_code=visit_code,
                action="record_visit_form",
            )
        transition(
            uow,
            ctx,
            actor,
            subject,
            Action.RECORD_VISIT,
            audit_new={
                "visit": visit_code,
                "visit_date": visit_date.isoformat(),
                "timing": timing,
                "window": [window.start.isoformat(), window.end.isoformat()],
                "protocol_deviation": timing != "on_time",
            },
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def miss_visit(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, visit_code: str, reason: str
) -> SubjectView:
    """Mark a visit missed; it never blocks later visits (SCHED-2)."""
    with acting_on(ctx, actor, study_id, number, Action.MISS_VISIT, SITE_STAFF) as act:
        uow, subject = act
        today = subject_site_today(uow, subject, ctx.now())
        version_id, _loaded, visit = _visit_spec(ctx, uow, subject, visit_code, today)
        _visit_taken(uow, subject.id, visit_code)
        text = require_text(reason, "reason", "a reason")
        assert subject.randomized_on is not None
        window = window_for(subject.randomized_on, visit_spec(visit))
        uow.session.add(
            VisitRow(
                subject_id=subject.id,
                visit_code=visit_code,
                status="missed",
                window_start=window.start,
                window_end=window.end,
                missed_reason=text,
                protocol_version_id=version_id,
                recorded_at=ctx.now(),
                recorded_by=actor.label,
            )
        )
        transition(
            uow,
            ctx,
            actor,
            subject,
            Action.MISS_VISIT,
            audit_new={"visit": visit_code, "missed": True},
            reason=text,
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def record_therapy(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    therapy_date: dt.date,
    therapy_type: str,
) -> SubjectView:
    """Any additional therapy goes to the CRC: > 6 months for endpoint evaluation, otherwise
    flagged early (THER-1..3). The subject is never withdrawn by the system."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_THERAPY, SITE_STAFF) as act:
        uow, subject = act
        loaded = subject_protocol(ctx, uow, subject)
        types = {t.code for t in loaded.protocol.therapies.types}
        if types and therapy_type not in types:
            raise ValidationFailed(
                f"unknown therapy type {therapy_type!r}; one of " + ", ".join(sorted(types)),
                {"therapy_type": "unknown"},
            )
        assert subject.randomized_on is not None
        check_clinical_date(
            uow,
            subject,
            therapy_date,
            ctx.now(),
            "therapy",
            field="therapy_date",
            not_before=subject.randomized_on,
            not_before_what="randomization",
        )
        cls = classify_therapy(
            subject.randomized_on,
            therapy_date,
            loaded.protocol.therapies.endpoint_review_after_months,
        )
        therapy = TherapyRow(
            subject_id=subject.id,
            therapy_date=therapy_date,
            therapy_type=therapy_type,
            early=cls.early,
            months_since=cls.months_since,
            recorded_at=ctx.now(),
            recorded_by=actor.label,
        )
        uow.session.add(therapy)
        uow.session.flush()
        case = CrcCaseRow(
            study_id=study_id,
            subject_id=subject.id,
            kind="therapy",
            status="open",
            therapy_id=therapy.id,
            opened_at=ctx.now(),
        )
        uow.session.add(case)
        uow.session.flush()
        notify_crc_case(uow, ctx, case.id)
        transition(
            uow,
            ctx,
            actor,
            subject,
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
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def record_adverse_event(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, values: dict[str, Any]
) -> SubjectView:
    with acting_on(ctx, actor, study_id, number, Action.RECORD_ADVERSE_EVENT, SITE_STAFF) as act:
        uow, subject = act
        loaded = subject_protocol(ctx, uow, subject)
        save_form(
            uow,
            ctx,
            actor,
            subject,
            loaded,
            subject.protocol_version_id,
            "adverse_event",
            values,
            action=Action.RECORD_ADVERSE_EVENT.value,
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def _unblind_visit_done(uow: Any, subject_id: int, visit_code: str) -> bool:
    row = uow.session.scalars(
        select(VisitRow).where(VisitRow.subject_id == subject_id, VisitRow.visit_code == visit_code)
    ).one_or_none()
    return row is not None and row.status == "done"


def unblind_subject(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, password: str
) -> SubjectView:
    """Scheduled unblinding once the 24-month evaluation is complete (RAND-7), e-signed."""
    with ctx.uow(readonly=True) as uow:
        subject = load_subject(uow, actor, study_id, number)
        require(actor, study_id, SITE_STAFF, site_id=subject.site_id, action="unblind")
        check_action(subject, Action.UNBLIND)
        loaded = subject_protocol(ctx, uow, subject)
        after = loaded.protocol.blinding.unblind_after_visit
        if after and not _unblind_visit_done(uow, subject.id, after):
            raise PreconditionFailed(
                f"unblinding of {number} is due only after visit {after} is complete",
                reason="unblinding-not-due",
            )
    meaning = f"Unblinding of subject {number} after the {after or 'final'} evaluation"
    reauthenticate(ctx, actor, password, meaning=meaning)
    with ctx.uow() as uow:
        subject = load_subject(uow, actor, study_id, number)
        today = ctx.now().date()
        transition(
            uow,
            ctx,
            actor,
            subject,
            Action.UNBLIND,
            changes={"unblinded_on": today},
            audit_new={"signature": {"name": actor.full_name, "meaning": meaning}},
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def emergency_unblind(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, reason: str, password: str
) -> SubjectView:
    """The investigator breaks the code for one subject (RAND-7): reason, signature, and a
    notification to the study manager. The returned view shows the arm to this caller."""
    text = require_text(reason, "reason", "a reason")
    with ctx.uow(readonly=True) as uow:
        subject = load_subject(uow, actor, study_id, number)
        require(actor, study_id, SITE_STAFF, site_id=subject.site_id, action="emergency unblinding")
        check_action(subject, Action.EMERGENCY_UNBLIND)
    meaning = f"Emergency unblinding of subject {number}"
    reauthenticate(ctx, actor, password, meaning=meaning)
    with ctx.uow() as uow:
        subject = load_subject(uow, actor, study_id, number)
        transition(
            uow,
            ctx,
            actor,
            subject,
            Action.EMERGENCY_UNBLIND,
            changes={"emergency_unblinded": True},
            reason=text,
            audit_new={"signature": {"name": actor.full_name, "meaning": meaning}},
        )
        uow.session.add(
            NotificationRow(
                study_id=study_id,
                recipient_role=Role.MANAGER.value,
                subject_id=subject.id,
                text=f"Emergency unblinding of subject {number} by {actor.full_name}: {text}",
                created_at=ctx.now(),
            )
        )
        notify_emergency_unblinding(uow, ctx, subject, actor)
        uow.commit()
        view = subject_view(ctx, uow, actor, subject)
        rand = uow.session.scalars(
            select(RandomizationRow).where(RandomizationRow.subject_id == subject.id)
        ).one()
        code = ctx.cipher.decrypt(rand.arm_enc)
        label = subject_protocol(ctx, uow, subject).protocol.arm(code).label
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
    with ctx.uow() as uow:
        subject = load_subject(uow, actor, study_id, number)
        require(actor, study_id, SITE_STAFF, site_id=subject.site_id, action=action.value)
        check_action(subject, action)
        text = require_text(reason, "reason", "a reason")
        check_clinical_date(uow, subject, exit_date, ctx.now(), action.value, field="date")
        if action is Action.MARK_LOST_TO_FOLLOW_UP and subject.randomized_on is not None:
            loaded = subject_protocol(ctx, uow, subject)
            needed = loaded.protocol.follow_up.lost_after_missed_contacts
            missed = (
                uow.session.scalar(
                    select(func.count())
                    .select_from(VisitRow)
                    .where(VisitRow.subject_id == subject.id, VisitRow.status == "missed")
                )
                or 0
            )
            if missed < needed:
                raise PreconditionFailed(
                    f"lost to follow-up needs {needed} missed contacts first; {number} has "
                    f"{missed}",
                    reason="not-enough-missed-contacts",
                )
        changes: dict[str, Any] = {"exit_date": exit_date, "exit_reason": text}
        changes.update(extra or {})
        transition(uow, ctx, actor, subject, action, changes=changes, reason=text)
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def withdraw(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    withdrawn_on: dt.date,
    reason: str,
    *,
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
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, on: dt.date, reason: str
) -> SubjectView:
    return _exit(ctx, actor, study_id, number, Action.MARK_LOST_TO_FOLLOW_UP, on, reason)


def record_death(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, death_date: dt.date, cause: str
) -> SubjectView:
    return _exit(ctx, actor, study_id, number, Action.RECORD_DEATH, death_date, cause)


def complete_subject(ctx: ServiceContext, actor: Actor, study_id: int, number: str) -> SubjectView:
    """Completion at the final (60-month) contact (SCHED-3)."""
    with acting_on(ctx, actor, study_id, number, Action.COMPLETE, SITE_STAFF) as act:
        uow, subject = act
        loaded = subject_protocol(ctx, uow, subject)
        final = loaded.protocol.follow_up.completion_visit or loaded.protocol.visits[-1].code
        row = uow.session.scalars(
            select(VisitRow).where(VisitRow.subject_id == subject.id, VisitRow.visit_code == final)
        ).one_or_none()
        if row is None:
            raise PreconditionFailed(
                f"{number} completes at visit {final}, not yet recorded",
                reason="final-visit-missing",
            )
        transition(uow, ctx, actor, subject, Action.COMPLETE, audit_new={"final_visit": final})
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def correct_form_data(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    form_code: str,
    changes: dict[str, Any],
    reason: str,
    *,
    visit_code: str = "",
    seq: int | None = None,
) -> SubjectView:
    """Change saved form values; needs a reason, and the audit keeps old and new (DATA-2)."""
    with acting_on(ctx, actor, study_id, number, Action.CORRECT_DATA, SITE_STAFF) as act:
        uow, subject = act
        if form_code == CONCEALED_PROCEDURE_FORM:
            raise PreconditionFailed(
                "the index procedure record is concealed (it would tell the arm); it cannot be "
                "corrected through the blinded data path",
                reason="concealed-record",
            )
        stmt = select(FormRecordRow).where(
            FormRecordRow.subject_id == subject.id,
            FormRecordRow.form_code == form_code,
            FormRecordRow.visit_code == visit_code,
        )
        if seq is not None:
            stmt = stmt.where(FormRecordRow.seq == seq)
        record = uow.session.scalars(stmt.order_by(FormRecordRow.seq.desc())).first()
        if record is None:
            where = f" at {visit_code}" if visit_code else ""
            raise NotFound(f"form {form_code}{where} of {number} has not been saved")
        version = uow.session.get(ProtocolVersionRow, record.protocol_version_id)
        assert version is not None
        loaded = ctx.protocol(version.sha256, version.text)
        correct_form(ctx, uow, actor, subject, loaded, record, changes, reason)
        uow.commit()
        return subject_view(ctx, uow, actor, subject)
