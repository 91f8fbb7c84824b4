"""Screening actions: registration, consent, screening forms, eligibility, CRC review,
procedure-day anatomy (SYSTEM.md §2-3)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from trialdesk.domain.eligibility import EligibilityResult, evaluate
from trialdesk.domain.errors import NotFound, PreconditionFailed, Refusal, ValidationFailed
from trialdesk.domain.lifecycle import Action, ScreenFailureReason
from trialdesk.domain.permissions import Permission
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.models import Gate
from trialdesk.protocol.specs import criterion_specs
from trialdesk.services.access import Actor, require
from trialdesk.services.auth import reauthenticate
from trialdesk.services.common import (
    acting_on,
    loaded_protocol,
    require_text,
    site_today,
    subject_in_scope,
    version_in_force,
)
from trialdesk.services.consent import add_consent, checked_consent
from trialdesk.services.context import ServiceContext
from trialdesk.services.crc import CRC_DECISIONS as CRC_DECISIONS  # moved; re-exported
from trialdesk.services.crc import (
    crc_eligibility_decision as crc_eligibility_decision,  # moved; re-exported
)
from trialdesk.services.forms import save_form, subject_form_values, typed_values
from trialdesk.services.mail import notify_crc_case
from trialdesk.services.views import SubjectView, committed_view, subject_view
from trialdesk.store.records import Subject, SubjectRead
from trialdesk.store.uow import UnitOfWork


def register_subject(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    site_code: str,
    registered_on: dt.date | None = None,
    test: bool = False,
) -> SubjectView:
    """Enter a candidate in the screening log; numbers are SITE-NNNN, per site. A test subject
    (user acceptance testing) draws only from test allocation lists (RAND-3)."""
    now = ctx.now()
    with ctx.uow() as uow:
        site = uow.sites.by_code(study_id, site_code)
        if site is None:
            raise NotFound(f"site {site_code} not found")
        require(actor, study_id, Permission.SUBJECT_REGISTER, site_id=site.id)
        if not site.active:
            raise PreconditionFailed(f"site {site.code} is not active", Refusal.SITE_INACTIVE)
        today = site_today(site, now)
        registered_on = registered_on or today
        if registered_on > today:
            raise ValidationFailed(
                f"registration date {registered_on.isoformat()} is in the future",
                {"registered_on": "in the future"},
            )
        # the version in force at the site on the registration date (PROT-2)
        version = version_in_force(uow, study_id, registered_on)
        seq = uow.sites.take_subject_number(site.id)
        subject = uow.subjects.add(
            study_id=study_id,
            site_id=site.id,
            number=f"{site.code}-{seq:04d}",
            state="registered",
            protocol_version_id=version.id,
            registered_on=registered_on,
            test_subject=test,
            at=now,
        )
        uow.audit.subject(
            actor.label,
            subject,
            "register",
            at=now,
            new={
                "number": subject.number,
                "site": site.code,
                "state": "registered",
                "registered_on": registered_on.isoformat(),
                "test_subject": test,
            },
            protocol_sha256=version.sha256,
        )
        uow.commit()
        read = SubjectRead(subject, site, version, None, trial_unblinded=False)
        return subject_view(ctx, uow, actor, read, visits=[])


def record_consent(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    consent_date: dt.date,
    consent_version: str,
    document: str | None = None,
) -> SubjectView:
    """Signed informed consent (LIFE-2): its date bounds every later study procedure. The
    version must be one the protocol names, approved and in force at the subject's site on
    that date (REC-8); ``ICF v1.0`` names document ICF, version v1.0."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_CONSENT) as act:
        require_text(consent_version, "consent_version", "the consent form version")
        act.check_date(consent_date, "consent", field="consent_date")
        choice, pv_id = checked_consent(
            ctx,
            act.uow,
            act.subject,
            act.site,
            signed_on=consent_date,
            version=consent_version,
            document=document,
        )
        add_consent(act, choice, consent_date, pv_id)
        act.transition(
            Action.RECORD_CONSENT,
            changes={"consent_date": consent_date, "consent_version": choice.version},
            audit_new={"document": choice.document or None},
        )
        return committed_view(act)


def decline_consent(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, *, reason: str
) -> SubjectView:
    with acting_on(ctx, actor, study_id, number, Action.DECLINE_CONSENT) as act:
        text = require_text(reason, "reason", "a reason")
        act.transition(
            Action.DECLINE_CONSENT,
            changes={
                "screen_failure_reason": ScreenFailureReason.DECLINED.value,
                "screen_failure_detail": text,
            },
        )
        return committed_view(act)


def record_screening_form(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    form_code: str,
    values: dict[str, Any],
) -> SubjectView:
    """Save one screening form (all fields valid or nothing saved)."""
    with acting_on(ctx, actor, study_id, number, Action.RECORD_SCREENING_FORM) as act:
        loaded = act.protocol()
        if form_code not in loaded.protocol.screening.forms:
            raise ValidationFailed(
                f"form {form_code} is not a screening form of this protocol (screening forms: "
                + ", ".join(loaded.protocol.screening.forms)
                + ")",
                {"form": "not a screening form"},
            )
        save_form(
            act,
            loaded,
            act.version.id,
            form_code,
            values,
            action=Action.RECORD_SCREENING_FORM.value,
        )
        return committed_view(act)


def confirm_criterion(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    criterion_id: str,
    confirmed: bool,
    password: str,
) -> SubjectView:
    """The investigator's signed answer for a criterion with no machine rule (ELIG-1, SIG-1)."""
    with acting_on(ctx, actor, study_id, number, Action.CONFIRM_CRITERION, readonly=True) as act:
        criterion = next(
            (c for c in act.protocol().protocol.criteria if c.id == criterion_id), None
        )
        if criterion is None:
            raise NotFound(f"criterion {criterion_id} not found")
        if criterion.rule is not None:
            raise ValidationFailed(
                f"criterion {criterion_id} is checked from form data; it needs no confirmation",
                {"criterion": "has a rule"},
            )
    meaning = confirmation_meaning(criterion.id, criterion.kind, criterion.text, confirmed)
    reauthenticate(ctx, actor, password, meaning=meaning)
    with acting_on(ctx, actor, study_id, number, Action.CONFIRM_CRITERION) as act:
        previous = act.uow.confirmations.get(act.subject.id, criterion_id)
        act.uow.confirmations.save(
            subject_id=act.subject.id,
            criterion_id=criterion_id,
            confirmed=confirmed,
            signed_by=actor.username,
            signed_name=actor.full_name,
            signed_at=act.now,
            meaning=meaning,
        )
        act.audit(
            Action.CONFIRM_CRITERION.value,
            entity="criterion",
            entity_id=criterion_id,
            old=None
            if previous is None
            else {"confirmed": previous.confirmed, "signed_by": previous.signed_by},
            new={
                "confirmed": confirmed,
                "signature": {"name": actor.full_name, "meaning": meaning},
            },
        )
        return committed_view(act)


def confirmation_meaning(criterion_id: str, kind: str, text: str, confirmed: bool) -> str:
    """What the investigator's signature says, spelled out so it cannot be read backwards
    (issue 14): an exclusion *applies* (the subject is excluded) or *does not apply*; an
    inclusion is met or not met. ``confirmed`` is "the criterion is satisfied" in both."""
    if kind == "exclusion":
        if confirmed:
            return (
                f"I confirm exclusion criterion {criterion_id} does not apply to this subject "
                f"({text.rstrip('.')}: no); the subject is not excluded by it"
            )
        return (
            f"I confirm exclusion criterion {criterion_id} applies to this subject "
            f"({text.rstrip('.')}: yes); the subject is excluded and fails screening"
        )
    if confirmed:
        return f"I confirm inclusion criterion {criterion_id} is met ({text.rstrip('.')})"
    return (
        f"I confirm inclusion criterion {criterion_id} is not met ({text.rstrip('.')}); "
        "the subject fails screening"
    )


def eligibility(
    ctx: ServiceContext, uow: UnitOfWork, subject: Subject, gate: Gate
) -> EligibilityResult:
    loaded = loaded_protocol(ctx, uow, uow.protocols.get(subject.protocol_version_id))
    values = subject_form_values(uow, ctx, subject.id)
    confirmations = uow.confirmations.for_subject(subject.id)
    return evaluate(criterion_specs(loaded.protocol), values, confirmations, gate=gate.value)


def check_eligibility(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, *, gate: Gate = Gate.ECHO
) -> EligibilityResult:
    """Read-only: which criteria pass, fail or await data or confirmation (ELIG-1)."""
    with ctx.uow(readonly=True) as uow:
        subject = subject_in_scope(uow, actor, study_id, number).subject
        require(actor, study_id, Permission.ELIGIBILITY_READ, site_id=subject.site_id)
        return eligibility(ctx, uow, subject, gate)


def _pending_message(result: EligibilityResult, loaded: LoadedProtocol) -> str:
    """Which criteria still wait and for what, in the words of the forms (no field codes)."""
    parts = []
    for outcome in result.outcomes:
        if outcome.id in result.pending_ids:
            what = (
                ("missing " + ", ".join(field_label(loaded, f) for f in outcome.missing))
                if outcome.missing
                else "awaiting the investigator's confirmation"
            )
            parts.append(f"{outcome.id} ({what})")
    return "; ".join(parts)


def field_label(loaded: LoadedProtocol, dotted: str) -> str:
    """``demographics.age_years`` as "Age (years) on form Demographics"."""
    form_code, _, name = dotted.partition(".")
    try:
        form = loaded.protocol.form(form_code)
    except KeyError:
        return dotted
    found = next((f for f in form.fields if f.code == name), None)
    return f"{found.label if found else name.replace('_', ' ')} on form {form.name}"


def complete_screening(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str
) -> SubjectView:
    """Evaluate the echo-gate criteria: all met → echo_qualified and a CRC case opens (ELIG-2);
    any not met → screen failure naming the criteria (LIFE-3)."""
    with acting_on(ctx, actor, study_id, number, Action.PASS_SCREENING) as act:
        result = eligibility(ctx, act.uow, act.subject, Gate.ECHO)
        outcomes = {o.id: o.status.value for o in result.outcomes}
        if result.failed_ids:
            act.transition(
                Action.FAIL_SCREENING,
                changes={
                    "screen_failure_reason": ScreenFailureReason.CRITERIA_NOT_MET.value,
                    "screen_failure_detail": ",".join(result.failed_ids),
                },
                audit_new={"criteria": outcomes},
            )
        elif result.pending_ids:
            raise PreconditionFailed(
                f"screening of {number} is not complete: "
                f"{_pending_message(result, act.protocol())}",
                Refusal.SCREENING_INCOMPLETE,
            )
        else:
            act.transition(Action.PASS_SCREENING, audit_new={"criteria": outcomes})
            if Gate.COMMITTEE_REVIEW in act.protocol().protocol.screening.gates:
                case = act.uow.crc.open_case(
                    study_id=study_id, subject_id=act.subject.id, kind="eligibility", at=act.now
                )
                notify_crc_case(act.uow, ctx, case, act.subject.number)
                act.audit(
                    "open_crc_case",
                    entity="crc_case",
                    entity_id=str(case.id),
                    new={"kind": "eligibility", "status": "open"},
                )
        return committed_view(act)


def record_anatomy(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    forms: dict[str, dict[str, Any]],
) -> SubjectView:
    """Procedure-day angiogram and venogram (ELIG-4): suitable → may be randomized;
    unsuitable → screen failure (anatomy), never randomized."""
    with acting_on(ctx, actor, study_id, number, Action.ANATOMY_SUITABLE) as act:
        loaded = act.protocol()
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
            save_form(act, loaded, act.version.id, code, forms[code], action="record_anatomy_form")
        result = eligibility(ctx, act.uow, act.subject, Gate.ANATOMY)
        outcomes = {o.id: o.status.value for o in result.outcomes}
        if result.failed_ids:
            act.transition(
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
                f"anatomy assessment incomplete: {_pending_message(result, loaded)}",
                Refusal.ANATOMY_INCOMPLETE,
            )
        else:
            act.transition(
                Action.ANATOMY_SUITABLE,
                changes={"anatomy_suitable": True},
                audit_new={"criteria": outcomes},
            )
        return committed_view(act)


def screen_fail_other(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, *, reason: str
) -> SubjectView:
    """The investigator ends screening for a reason no rule covers (LIFE-3 'other')."""
    with acting_on(ctx, actor, study_id, number, Action.SCREEN_FAIL_OTHER) as act:
        text = require_text(reason, "reason", "a reason")
        act.transition(
            Action.SCREEN_FAIL_OTHER,
            changes={
                "screen_failure_reason": ScreenFailureReason.OTHER.value,
                "screen_failure_detail": text,
            },
        )
        return committed_view(act)
