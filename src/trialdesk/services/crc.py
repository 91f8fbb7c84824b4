"""The Central Review Committee: its work queue, eligibility decisions (ELIG-3) and
additional-therapy endpoint reviews (THER-2, THER-3), each e-signed (SIG-1).

A decision re-authenticates the signer and stores username, printed name, time and meaning
(21 CFR 11.50). A decision attempted by anyone without the CRC role is refused and audited as
a failed attempt. No CRC decision on a therapy changes the subject: the system never
withdraws anyone on its own (THER-3). Nothing here reads or returns an arm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.errors import (
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Refusal,
    ValidationFailed,
)
from trialdesk.domain.lifecycle import Action, ScreenFailureReason
from trialdesk.domain.permissions import Permission
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.auth import reauthenticate
from trialdesk.services.common import acting_on, require_text
from trialdesk.services.context import ServiceContext
from trialdesk.services.views import SubjectView, committed_view
from trialdesk.store.records import CaseDetail, CrcCase, Subject
from trialdesk.store.uow import UnitOfWork

# Meanings are the signed statement (SIG-1), stored with the decision; a failed
# re-authentication is audited as "signature_failed" with the meaning in its new values.
CRC_DECISIONS: dict[str, tuple[Action, str]] = {
    "approve": (Action.CRC_APPROVE, "CRC approval for the implant procedure"),
    "reject": (Action.CRC_REJECT, "CRC rejection for the implant procedure"),
    "request_info": (Action.CRC_REQUEST_INFO, "CRC request for more information"),
}
"""Eligibility decisions (ELIG-3): decision -> (lifecycle action, signature meaning)."""

THERAPY_DECISIONS: dict[str, str] = {
    "endpoint_event": "CRC: the therapy is an endpoint event",
    "not_endpoint_event": "CRC: the therapy is not an endpoint event",
    "continue_follow_up": "CRC: unclassified, follow-up continues",
    "request_info": "CRC request for more information",
}
"""Therapy review outcomes (THER-2, THER-3) -> signature meaning. ``endpoint_event`` and
``not_endpoint_event`` classify the therapy for the endpoint analysis; ``continue_follow_up``
records that the committee sees no endpoint classification to make and follow-up simply
continues; ``request_info`` keeps the case in the queue. In every case the subject stays on
the trial, in its state."""

PENDING = ("open", "info_requested")


@dataclass(frozen=True)
class TherapyInfo:
    type: str
    date: str
    months_since_randomization: float
    early: bool
    review: str  # endpoint_evaluation | early_therapy


@dataclass(frozen=True)
class CaseView:
    """A CRC case as the committee sees it: subject, site, what to review; never an arm."""

    id: int
    kind: str  # eligibility | therapy
    status: str  # open | info_requested | decided
    subject: str
    site: str
    subject_state: str
    test_subject: bool
    opened_at: str
    therapy: TherapyInfo | None = None
    decision: str | None = None
    reason: str | None = None
    signed_by: str | None = None
    signed_name: str | None = None
    signed_at: str | None = None
    meaning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _case_view(detail: CaseDetail) -> CaseView:
    case, subject, site, row = detail.case, detail.subject, detail.site, detail.therapy
    therapy = None
    if row is not None:
        therapy = TherapyInfo(
            type=row.therapy_type,
            date=row.therapy_date.isoformat(),
            months_since_randomization=round(row.months_since, 2),
            early=row.early,
            review="early_therapy" if row.early else "endpoint_evaluation",
        )
    return CaseView(
        id=case.id,
        kind=case.kind,
        status=case.status,
        subject=subject.number,
        site=site.code,
        subject_state=subject.state,
        test_subject=subject.test_subject,
        opened_at=case.opened_at.isoformat(),
        therapy=therapy,
        decision=case.decision,
        reason=case.reason,
        signed_by=case.signed_by,
        signed_name=case.signed_name,
        signed_at=case.signed_at.isoformat() if case.signed_at else None,
        meaning=case.meaning,
    )


case_view = _case_view
"""Public name for the dossier (services/crc_dossier.py)."""


def _request_round(uow: UnitOfWork, case: CrcCase, actor: Actor, text: str, at: Any) -> None:
    """A request for more information is kept as a round of the case (issue 14): the case
    row holds only the latest decision, the dossier shows every request and reply."""
    uow.crc.add_note(
        case_id=case.id,
        kind="request",
        text=text,
        written_by=actor.username,
        written_name=actor.full_name,
        at=at,
    )


def crc_queue(ctx: ServiceContext, actor: Actor, study_id: int) -> list[CaseView]:
    """Open and info-requested cases, eligibility and therapy, oldest first."""
    require(actor, study_id, Permission.CRC_QUEUE_READ)
    with ctx.uow(readonly=True) as uow:
        return [_case_view(detail) for detail in uow.crc.pending(study_id, PENDING)]


def _require_crc(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    permission: Permission,
    target: Callable[[UnitOfWork], tuple[Subject | None, str, str]],
    attempted: dict[str, Any],
) -> None:
    """Refuse a decision by anyone without the permission, after auditing the attempt in its
    own unit of work: in the subject's stream when the target exists, else in the user's."""
    try:
        require(actor, study_id, permission)
    except PermissionDenied as denied:
        new = {"refused": "not a CRC member", "roles": sorted(actor.roles(study_id)), **attempted}
        now = ctx.now()
        with ctx.uow() as uow:
            subject, entity, entity_id = target(uow)
            if not actor.roles(study_id):
                # a user of another study writes nothing into this study's subject streams
                # and does not learn whether the subject exists (PROT-1): its own stream
                subject = None
            entity_id = entity_id[:80]  # caller-supplied; the column holds 80 characters
            if subject is not None:
                uow.audit.subject(
                    actor.label,
                    subject,
                    "crc_decision_refused",
                    at=now,
                    entity=entity,
                    entity_id=entity_id,
                    new=new,
                )
            else:
                uow.audit.stream(
                    f"user:{actor.user_id}" if actor.user_id is not None else "auth",
                    actor.label,
                    "crc_decision_refused",
                    at=now,
                    entity=entity,
                    entity_id=entity_id,
                    study_id=study_id,
                    new=new,
                )
            uow.commit()
        raise denied from None


def _signature(actor: Actor, meaning: str, at: str) -> dict[str, str]:
    return {"name": actor.full_name, "username": actor.username, "at": at, "meaning": meaning}


def crc_eligibility_decision(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    decision: str,
    reason: str,
    password: str,
) -> SubjectView:
    """A CRC member's e-signed eligibility decision (ELIG-3, SIG-1)."""
    _require_crc(
        ctx,
        actor,
        study_id,
        Permission.CRC_ELIGIBILITY_DECIDE,
        lambda uow: (uow.subjects.find_any_site(study_id, number), "subject", number),
        {"kind": "eligibility", "decision": decision},
    )
    if decision not in CRC_DECISIONS:
        raise ValidationFailed(
            f"unknown decision {decision!r}; use approve, reject or request_info",
            {"decision": "unknown"},
        )
    action, meaning = CRC_DECISIONS[decision]
    reason = require_text(reason, "reason", "a reason for the decision")
    with acting_on(ctx, actor, study_id, number, action, readonly=True):
        pass  # scope, permission and state are checked before the password is asked for
    reauthenticate(ctx, actor, password, meaning=meaning)
    with acting_on(ctx, actor, study_id, number, action) as act:
        case = act.uow.crc.undecided_eligibility(act.subject.id)
        if case is None:
            raise PreconditionFailed(
                f"subject {number} has no open eligibility case", Refusal.NO_OPEN_CASE
            )
        act.uow.crc.decide(
            case,
            {
                "status": "info_requested" if decision == "request_info" else "decided",
                "decision": decision,
                "reason": reason,
                "signed_by": actor.username,
                "signed_name": actor.full_name,
                "signed_at": act.now,
                "meaning": meaning,
            },
        )
        if decision == "request_info":
            _request_round(act.uow, case, actor, reason, act.now)
        changes: dict[str, Any] = {}
        if decision == "approve":
            changes["crc_approved"] = True
        elif decision == "reject":
            changes.update(
                screen_failure_reason=ScreenFailureReason.CRC_REJECTED.value,
                screen_failure_detail=reason,
            )
        act.transition(
            action,
            changes=changes,
            audit_new={
                "crc_case": case.id,
                "decision": decision,
                "signature": _signature(actor, meaning, act.now.isoformat()),
            },
            reason=reason,
        )
        return committed_view(act)


def _check_pending(case: CrcCase | None, case_id: int) -> CrcCase:
    if case is None:
        raise NotFound(f"therapy case {case_id} not found")
    if case.status == "decided":
        raise PreconditionFailed(
            f"therapy case {case_id} is already decided ({case.decision}, signed by "
            f"{case.signed_name})",
            Refusal.CASE_DECIDED,
        )
    return case


def decide_therapy_case(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    case_id: int,
    *,
    classification: str,
    reason: str,
    password: str,
) -> CaseView:
    """The CRC's e-signed review of an additional therapy: endpoint evaluation for one more
    than 6 months after randomization (THER-2), an explicit decision for an early one (THER-3).
    The subject's state and record are left as they are."""

    def target(uow: UnitOfWork) -> tuple[Subject | None, str, str]:
        found = uow.crc.therapy_case(study_id, case_id)
        subject = uow.subjects.by_id(found.subject_id) if found else None
        return subject, "crc_case", str(case_id)

    _require_crc(
        ctx,
        actor,
        study_id,
        Permission.CRC_THERAPY_DECIDE,
        target,
        {"kind": "therapy", "decision": classification},
    )
    if classification not in THERAPY_DECISIONS:
        raise ValidationFailed(
            f"unknown classification {classification!r}; use " + ", ".join(THERAPY_DECISIONS),
            {"classification": "unknown"},
        )
    meaning = THERAPY_DECISIONS[classification]
    reason = require_text(reason, "reason", "a reason for the decision")
    with ctx.uow(readonly=True) as uow:
        case = _check_pending(uow.crc.therapy_case(study_id, case_id), case_id)
        subject = uow.subjects.by_id(case.subject_id)
        require_site_visible(actor, study_id, subject.site_id, f"subject {subject.number}")
    reauthenticate(ctx, actor, password, meaning=meaning)
    now = ctx.now()
    with ctx.uow() as uow:
        case = _check_pending(uow.crc.therapy_case(study_id, case_id, lock=True), case_id)
        old_status = case.status
        case = uow.crc.decide(
            case,
            {
                "status": "info_requested" if classification == "request_info" else "decided",
                "decision": classification,
                "reason": reason,
                "signed_by": actor.username,
                "signed_name": actor.full_name,
                "signed_at": now,
                "meaning": meaning,
            },
        )
        if classification == "request_info":
            _request_round(uow, case, actor, reason, now)
        detail = uow.crc.detail(case)
        view = _case_view(detail)
        uow.audit.subject(
            actor.label,
            detail.subject,
            "crc_therapy_decision",
            at=now,
            entity="crc_case",
            entity_id=str(case.id),
            old={"status": old_status},
            new={
                "status": case.status,
                "decision": classification,
                "therapy": asdict(view.therapy) if view.therapy else None,
                "subject_state": detail.subject.state,
                "signature": _signature(actor, meaning, now.isoformat()),
            },
            reason=reason,
        )
        uow.commit()
        return view
