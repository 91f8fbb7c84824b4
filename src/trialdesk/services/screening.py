"""Screening actions: registration, consent, screening forms, eligibility, CRC review,
procedure-day anatomy (SYSTEM.md §2-3)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update

from trialdesk.domain.eligibility import EligibilityResult, evaluate
from trialdesk.domain.errors import NotFound, PreconditionFailed, ValidationFailed
from trialdesk.domain.lifecycle import Action, ScreenFailureReason
from trialdesk.domain.roles import Role
from trialdesk.protocol.models import Gate
from trialdesk.protocol.specs import criterion_specs
from trialdesk.services.access import Actor, require
from trialdesk.services.auth import reauthenticate
from trialdesk.services.common import (
    acting_on,
    audit,
    check_action,
    check_clinical_date,
    current_protocol_row,
    load_subject,
    require_text,
    site_by_code,
    site_today,
    subject_protocol,
    transition,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.crc import CRC_DECISIONS as CRC_DECISIONS  # moved; re-exported
from trialdesk.services.crc import (
    crc_eligibility_decision as crc_eligibility_decision,  # moved; re-exported
)
from trialdesk.services.forms import save_form, subject_form_values, typed_values
from trialdesk.services.mail import notify_crc_case
from trialdesk.services.views import SubjectView, subject_view
from trialdesk.store.tables import (
    ConfirmationRow,
    CrcCaseRow,
    SiteRow,
    SubjectRow,
)
from trialdesk.store.uow import UnitOfWork

SITE_STAFF = (Role.COORDINATOR,)
PROCEDURE_STAFF = (Role.COORDINATOR, Role.IMPLANTER)


def register_subject(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    site_code: str,
    registered_on: dt.date | None = None,
    *,
    test: bool = False,
) -> SubjectView:
    """Enter a candidate in the screening log; numbers are SITE-NNNN, per site. A test subject
    (user acceptance testing) draws only from test allocation lists (RAND-3)."""
    now = ctx.now()
    with ctx.uow() as uow:
        site = site_by_code(uow, study_id, site_code)
        require(actor, study_id, SITE_STAFF, site_id=site.id, action="register subject")
        if not site.active:
            raise PreconditionFailed(f"site {site.code} is not active", reason="site-inactive")
        today = site_today(site, now)
        registered_on = registered_on or today
        if registered_on > today:
            raise ValidationFailed(
                f"registration date {registered_on.isoformat()} is in the future",
                {"registered_on": "in the future"},
            )
        # the version in force at the site on the registration date (PROT-2)
        protocol_row = current_protocol_row(uow, study_id, registered_on)
        seq = (
            uow.session.execute(
                update(SiteRow)
                .where(SiteRow.id == site.id)
                .values(next_subject_seq=SiteRow.next_subject_seq + 1)
                .returning(SiteRow.next_subject_seq)
                .execution_options(synchronize_session=False)
            ).scalar_one()
            - 1
        )
        subject = SubjectRow(
            study_id=study_id,
            site_id=site.id,
            number=f"{site.code}-{seq:04d}",
            state="registered",
            version=1,
            protocol_version_id=protocol_row.id,
            registered_on=registered_on,
            test_subject=test,
            created_at=now,
            updated_at=now,
        )
        uow.session.add(subject)
        uow.session.flush()
        audit(
            uow,
            ctx,
            actor,
            subject,
            "register",
            new={
                "number": subject.number,
                "site": site.code,
                "state": "registered",
                "registered_on": registered_on.isoformat(),
                "test_subject": test,
            },
            protocol_sha256=protocol_row.sha256,
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def record_consent(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    consent_date: dt.date,
    consent_version: str,
) -> SubjectView:
    """Signed informed consent (LIFE-2): its date bounds every later study procedure."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_CONSENT, SITE_STAFF) as act:
        uow, subject = act
        version = require_text(consent_version, "consent_version", "the consent form version")
        check_clinical_date(uow, subject, consent_date, ctx.now(), "consent", field="consent_date")
        transition(
            uow,
            ctx,
            actor,
            subject,
            Action.RECORD_CONSENT,
            changes={"consent_date": consent_date, "consent_version": version},
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def decline_consent(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, reason: str
) -> SubjectView:
    with acting_on(ctx, actor, study_id, number, Action.DECLINE_CONSENT, SITE_STAFF) as act:
        uow, subject = act
        text = require_text(reason, "reason", "a reason")
        transition(
            uow,
            ctx,
            actor,
            subject,
            Action.DECLINE_CONSENT,
            changes={
                "screen_failure_reason": ScreenFailureReason.DECLINED.value,
                "screen_failure_detail": text,
            },
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def record_screening_form(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    form_code: str,
    values: dict[str, Any],
) -> SubjectView:
    """Save one screening form (all fields valid or nothing saved)."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_SCREENING_FORM, SITE_STAFF) as act:
        uow, subject = act
        loaded = subject_protocol(ctx, uow, subject)
        if form_code not in loaded.protocol.screening.forms:
            raise ValidationFailed(
                f"form {form_code} is not a screening form of this protocol (screening forms: "
                + ", ".join(loaded.protocol.screening.forms)
                + ")",
                {"form": "not a screening form"},
            )
        save_form(
            uow,
            ctx,
            actor,
            subject,
            loaded,
            subject.protocol_version_id,
            form_code,
            values,
            action=Action.RECORD_SCREENING_FORM.value,
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def confirm_criterion(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    criterion_id: str,
    confirmed: bool,
    password: str,
) -> SubjectView:
    """The investigator's signed answer for a criterion with no machine rule (ELIG-1, SIG-1)."""
    with ctx.uow(readonly=True) as uow:
        subject = load_subject(uow, actor, study_id, number)
        require(actor, study_id, SITE_STAFF, site_id=subject.site_id, action="confirm criterion")
        check_action(subject, Action.CONFIRM_CRITERION)
        loaded = subject_protocol(ctx, uow, subject)
        criterion = next((c for c in loaded.protocol.criteria if c.id == criterion_id), None)
        if criterion is None:
            raise NotFound(f"criterion {criterion_id} not found")
        if criterion.rule is not None:
            raise ValidationFailed(
                f"criterion {criterion_id} is checked from form data; it needs no confirmation",
                {"criterion": "has a rule"},
            )
    meaning = f"I confirm criterion {criterion_id} is {'met' if confirmed else 'not met'}"
    reauthenticate(ctx, actor, password, meaning=meaning)
    now = ctx.now()
    with ctx.uow() as uow:
        subject = load_subject(uow, actor, study_id, number)
        check_action(subject, Action.CONFIRM_CRITERION)
        row = uow.session.scalars(
            select(ConfirmationRow).where(
                ConfirmationRow.subject_id == subject.id,
                ConfirmationRow.criterion_id == criterion_id,
            )
        ).one_or_none()
        old = None
        if row is None:
            row = ConfirmationRow(
                subject_id=subject.id,
                criterion_id=criterion_id,
                confirmed=confirmed,
                signed_by=actor.username,
                signed_name=actor.full_name,
                signed_at=now,
                meaning=meaning,
            )
            uow.session.add(row)
        else:
            old = {"confirmed": row.confirmed, "signed_by": row.signed_by}
            row.confirmed, row.signed_by, row.signed_name = (
                confirmed,
                actor.username,
                actor.full_name,
            )
            row.signed_at, row.meaning = now, meaning
        audit(
            uow,
            ctx,
            actor,
            subject,
            Action.CONFIRM_CRITERION.value,
            entity="criterion",
            entity_id=criterion_id,
            old=old,
            new={
                "confirmed": confirmed,
                "signature": {"name": actor.full_name, "meaning": meaning},
            },
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def _confirmations(uow: UnitOfWork, subject_id: int) -> dict[str, bool]:
    return {
        row.criterion_id: row.confirmed
        for row in uow.session.scalars(
            select(ConfirmationRow).where(ConfirmationRow.subject_id == subject_id)
        )
    }


def eligibility(
    ctx: ServiceContext, uow: UnitOfWork, subject: SubjectRow, gate: Gate
) -> EligibilityResult:
    loaded = subject_protocol(ctx, uow, subject)
    values = subject_form_values(uow, ctx, subject.id)
    return evaluate(
        criterion_specs(loaded.protocol), values, _confirmations(uow, subject.id), gate=gate.value
    )


def check_eligibility(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, gate: Gate = Gate.ECHO
) -> EligibilityResult:
    """Read-only: which criteria pass, fail or await data or confirmation (ELIG-1)."""
    with ctx.uow(readonly=True) as uow:
        subject = load_subject(uow, actor, study_id, number)
        require(
            actor,
            study_id,
            [Role.COORDINATOR, Role.IMPLANTER, Role.CRC, Role.MONITOR, Role.MANAGER],
            site_id=subject.site_id,
            action="check eligibility",
        )
        return eligibility(ctx, uow, subject, gate)


def _pending_message(result: EligibilityResult) -> str:
    parts = []
    for outcome in result.outcomes:
        if outcome.id in result.pending_ids:
            what = (
                ("missing " + ", ".join(outcome.missing))
                if outcome.missing
                else "awaiting the investigator's confirmation"
            )
            parts.append(f"{outcome.id} ({what})")
    return "; ".join(parts)


def complete_screening(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str
) -> SubjectView:
    """Evaluate the echo-gate criteria: all met → echo_qualified and a CRC case opens (ELIG-2);
    any not met → screen failure naming the criteria (LIFE-3)."""
    with acting_on(ctx, actor, study_id, number, Action.PASS_SCREENING, SITE_STAFF) as act:
        uow, subject = act
        result = eligibility(ctx, uow, subject, Gate.ECHO)
        outcomes = {o.id: o.status.value for o in result.outcomes}
        if result.failed_ids:
            transition(
                uow,
                ctx,
                actor,
                subject,
                Action.FAIL_SCREENING,
                changes={
                    "screen_failure_reason": ScreenFailureReason.CRITERIA_NOT_MET.value,
                    "screen_failure_detail": ",".join(result.failed_ids),
                },
                audit_new={"criteria": outcomes},
            )
        elif result.pending_ids:
            raise PreconditionFailed(
                f"screening of {subject.number} is not complete: {_pending_message(result)}",
                reason="screening-incomplete",
            )
        else:
            transition(
                uow, ctx, actor, subject, Action.PASS_SCREENING, audit_new={"criteria": outcomes}
            )
            loaded = subject_protocol(ctx, uow, subject)
            if Gate.COMMITTEE_REVIEW in loaded.protocol.screening.gates:
                case = CrcCaseRow(
                    study_id=study_id,
                    subject_id=subject.id,
                    kind="eligibility",
                    status="open",
                    opened_at=ctx.now(),
                )
                uow.session.add(case)
                uow.session.flush()
                notify_crc_case(uow, ctx, case.id)
                audit(
                    uow,
                    ctx,
                    actor,
                    subject,
                    "open_crc_case",
                    entity="crc_case",
                    entity_id=str(case.id),
                    new={"kind": "eligibility", "status": "open"},
                )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def record_anatomy(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, forms: dict[str, dict[str, Any]]
) -> SubjectView:
    """Procedure-day angiogram and venogram (ELIG-4): suitable → may be randomized;
    unsuitable → screen failure (anatomy), never randomized."""
    with acting_on(ctx, actor, study_id, number, Action.ANATOMY_SUITABLE, PROCEDURE_STAFF) as act:
        uow, subject = act
        loaded = subject_protocol(ctx, uow, subject)
        wanted = loaded.protocol.screening.anatomy_forms
        unknown = sorted(set(forms) - set(wanted))
        missing = sorted(set(wanted) - set(forms))
        problems: dict[str, str] = {f: "not an anatomy form" for f in unknown}
        problems.update({f: "required" for f in missing})
        if problems:
            raise ValidationFailed(
                "the anatomy step needs the forms " + ", ".join(wanted), problems
            )
        # validate every form before saving any (nothing half-saved)
        for code in wanted:
            try:
                typed_values(loaded, code, forms[code])
            except ValidationFailed as exc:
                problems.update({f"{code}.{k}": v for k, v in exc.problems.items()})
        if problems:
            raise ValidationFailed("anatomy forms have errors", problems)
        for code in wanted:
            save_form(
                uow,
                ctx,
                actor,
                subject,
                loaded,
                subject.protocol_version_id,
                code,
                forms[code],
                action="record_anatomy_form",
            )
        uow.session.flush()
        result = eligibility(ctx, uow, subject, Gate.ANATOMY)
        outcomes = {o.id: o.status.value for o in result.outcomes}
        if result.failed_ids:
            transition(
                uow,
                ctx,
                actor,
                subject,
                Action.ANATOMY_UNSUITABLE,
                changes={
                    "anatomy_suitable": False,
                    "screen_failure_reason": ScreenFailureReason.ANATOMY_UNSUITABLE.value,
                    "screen_failure_detail": ",".join(result.failed_ids),
                },
                audit_new={"criteria": outcomes},
            )
        elif result.pending_ids:
            raise PreconditionFailed(
                f"anatomy assessment incomplete: {_pending_message(result)}",
                reason="anatomy-incomplete",
            )
        else:
            transition(
                uow,
                ctx,
                actor,
                subject,
                Action.ANATOMY_SUITABLE,
                changes={"anatomy_suitable": True},
                audit_new={"criteria": outcomes},
            )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)


def screen_fail_other(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, reason: str
) -> SubjectView:
    """The investigator ends screening for a reason no rule covers (LIFE-3 'other')."""
    with acting_on(ctx, actor, study_id, number, Action.SCREEN_FAIL_OTHER, SITE_STAFF) as act:
        uow, subject = act
        text = require_text(reason, "reason", "a reason")
        transition(
            uow,
            ctx,
            actor,
            subject,
            Action.SCREEN_FAIL_OTHER,
            changes={
                "screen_failure_reason": ScreenFailureReason.OTHER.value,
                "screen_failure_detail": text,
            },
        )
        uow.commit()
        return subject_view(ctx, uow, actor, subject)
