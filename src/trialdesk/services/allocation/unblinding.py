"""Corrections and unblinding beyond the single subject (RAND-6, RAND-7, SIG-1, LIFE-4).

- A randomization made in error stays a randomization (LIFE-4): the subject keeps its number
  and arm, the slot stays used, and only a flag (with its reason) takes it out of minimization
  counts. The audit entry never carries the arm, because blinded roles read the audit trail.
- Trial-level unblinding at study end needs two people: the study manager requests and the
  unblinded statistician confirms, each re-entering a password (SIG-1). Until the second
  signature nothing changes for anyone's view. Each of the two must hold the role through a
  grant that neither of them asked for or approved (issue 12), so accounts one person minted
  cannot make up the pair.
- Notifications are addressed to a role; only holders of that role read them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require
from trialdesk.services.accounts import grant_requesters, independent_grant
from trialdesk.services.auth import reauthenticate
from trialdesk.services.common import (
    loaded_protocol,
    require_text,
    subject_in_scope,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.records.locks import require_hard_lock
from trialdesk.store.audit import PendingEntry
from trialdesk.store.records import NotificationRead, Study, TrialUnblinding
from trialdesk.store.uow import UnitOfWork

READERS = list(Role)


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat()


def trial_unblinded(uow: UnitOfWork, study_id: int) -> bool:
    """Whether trial-level unblinding has been confirmed; callers pass it to may_see_arm."""
    study = uow.studies.get(study_id)
    return study is not None and study.trial_unblinded_at is not None


def _study(uow: UnitOfWork, study_id: int) -> Study:
    study = uow.studies.get(study_id)
    if study is None:
        raise NotFound(f"study {study_id} not found")
    return study


# --- randomized in error -------------------------------------------------------------------


@dataclass(frozen=True)
class InErrorView:
    """The flagged randomization, without the arm (the caller may be blinded elsewhere)."""

    subject: str
    randomization_number: str
    state: str
    in_error: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _refuse_arm_in_text(loaded: LoadedProtocol, text: str, field: str) -> None:
    """Free text that blinded roles will read must not name an arm (RAND-6)."""
    for arm in loaded.protocol.arms:
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(arm.code)}(?![A-Za-z0-9_])", text) or (
            arm.label.casefold() in text.casefold()
        ):
            raise ValidationFailed(
                f"the {field} must not name an arm: blinded roles read it in the audit trail",
                {field: "names an arm"},
            )


def mark_randomized_in_error(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str, reason: str
) -> InErrorView:
    """Flag a randomization made in error (e.g. an ineligible subject randomized).

    The subject is never un-randomized (LIFE-4): state, number, arm and slot stay as they are;
    the flag takes the record out of minimization counts and shows in reports.
    """
    text = require_text(reason, "reason", "a reason")
    now = ctx.now()
    with ctx.uow() as uow:
        require(actor, study_id, [Role.STATISTICIAN], action="mark randomized in error")
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        rand = uow.randomizations.for_subject(subject.id)
        if rand is None:
            raise PreconditionFailed(
                f"subject {number} has not been randomized (state '{subject.state}'); only a "
                "randomization can be marked in error",
                reason="not-randomized",
            )
        if rand.in_error:
            raise PreconditionFailed(
                f"randomization {rand.number} of subject {number} is already marked in error "
                f"({rand.in_error_reason})",
                reason="already-in-error",
            )
        _refuse_arm_in_text(loaded_protocol(ctx, uow, read.version), text, "reason")
        if uow.randomizations.mark_in_error(rand, text) is None:
            raise Conflict(f"randomization {rand.number} was changed by someone else; reload")
        uow.audit.subject(
            actor.label,
            subject,
            "mark_randomized_in_error",
            at=now,
            entity="randomization",
            entity_id=rand.number,
            old={"in_error": False},
            new={"in_error": True, "randomization_number": rand.number},
            reason=text,
            protocol_sha256=read.version.sha256,
        )
        uow.commit()
        return InErrorView(
            subject=subject.number,
            randomization_number=rand.number,
            state=subject.state,
            in_error=True,
            reason=text,
        )


# --- trial-level unblinding ----------------------------------------------------------------


@dataclass(frozen=True)
class TrialUnblindingView:
    """Where trial-level unblinding stands: ``blinded``, ``requested`` or ``unblinded``."""

    study: str
    status: str
    reason: str | None = None
    requested_by: str | None = None
    requested_at: str | None = None
    confirmed_by: str | None = None
    confirmed_at: str | None = None
    subjects_in_blinded_follow_up: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pending(uow: UnitOfWork, study_id: int) -> TrialUnblinding | None:
    return uow.unblindings.pending(study_id)


def _lock_study(uow: UnitOfWork, study_id: int) -> Study:
    """One request or confirmation at a time per study (SQLite writers are serialized)."""
    if not uow.lock_study(study_id):
        raise NotFound(f"study {study_id} not found")
    return _study(uow, study_id)


def _status_view(
    uow: UnitOfWork, study: Study, sites: set[int] | None = None
) -> TrialUnblindingView:
    """``sites``: a site-scoped reader counts its own sites' subjects only (ACC-1)."""
    blinded_follow_up = uow.unblindings.in_state(study.id, SubjectState.RANDOMIZED.value, sites)
    row = uow.unblindings.latest(study.id)
    if row is None:
        return TrialUnblindingView(
            study=study.code, status="blinded", subjects_in_blinded_follow_up=blinded_follow_up
        )
    return TrialUnblindingView(
        study=study.code,
        status="unblinded" if study.trial_unblinded_at is not None else "requested",
        reason=row.reason,
        requested_by=row.requested_name,
        requested_at=_iso(row.requested_at),
        confirmed_by=row.confirmed_name,
        confirmed_at=_iso(row.confirmed_at),
        subjects_in_blinded_follow_up=blinded_follow_up,
    )


def _refuse_if_unblinded(study: Study) -> None:
    if study.trial_unblinded_at is not None:
        raise PreconditionFailed(
            f"study {study.code} was unblinded at trial level on {_iso(study.trial_unblinded_at)}",
            reason="trial-unblinded",
        )


def _study_entry(
    ctx: ServiceContext, actor: Actor, study: Study, action: str, new: Any, reason: str | None
) -> PendingEntry:
    return PendingEntry(
        stream=f"study:{study.id}",
        at=ctx.now(),
        actor=actor.label,
        action=action,
        entity="study",
        entity_id=study.code,
        study_id=study.id,
        new=new,
        reason=reason,
    )


def trial_unblinding_status(
    ctx: ServiceContext, actor: Actor, study_id: int
) -> TrialUnblindingView:
    """Readable by every role of the study: it names people and dates, never an arm."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="view trial unblinding status")
        return _status_view(uow, _study(uow, study_id), actor.site_ids(study_id))


def request_trial_unblinding(
    ctx: ServiceContext, actor: Actor, study_id: int, reason: str, password: str
) -> TrialUnblindingView:
    """First signature (study manager). Nothing is unblinded until the statistician confirms."""
    text = require_text(reason, "reason", "a reason")
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, [Role.MANAGER], action="request trial-level unblinding")
        study = _study(uow, study_id)
        _refuse_if_unblinded(study)
        require_hard_lock(uow, study_id)  # REC-5: trial unblinding needs the database lock
        _refuse_if_pending(uow, study)
        _require_independent(uow, study_id, actor.user_id, Role.MANAGER, {actor.user_id})
        code = study.code
    meaning = f"Request for trial-level unblinding of study {code}"
    reauthenticate(ctx, actor, password, meaning=meaning)
    with ctx.uow() as uow:
        study = _lock_study(uow, study_id)
        _refuse_if_unblinded(study)
        _refuse_if_pending(uow, study)
        now = ctx.now()
        uow.unblindings.add(
            study_id=study_id,
            reason=text,
            requested_by=actor.username,
            requested_name=actor.full_name,
            requested_at=now,
            requested_meaning=meaning,
        )
        uow.notifications.add(
            study_id=study_id,
            recipient_role=Role.STATISTICIAN.value,
            subject_id=None,
            text=f"Trial-level unblinding of study {code} requested by {actor.full_name}: "
            f"{text}. It takes effect when an unblinded statistician confirms it.",
            at=now,
        )
        uow.audit.record(
            _study_entry(
                ctx,
                actor,
                study,
                "request_trial_unblinding",
                {"status": "requested", "signature": {"name": actor.full_name, "meaning": meaning}},
                text,
            )
        )
        view = _status_view(uow, study)
        uow.commit()
        return view


def _require_independent(
    uow: UnitOfWork, study_id: int, user_id: int | None, role: Role, people: set[int | None]
) -> None:
    """The two-person rule counts only people granted by someone else (issue 12)."""
    if not independent_grant(uow, study_id, user_id, [role], people):
        raise PermissionDenied(
            f"the {role.value} role of this signer was asked for or approved by one of the two "
            "people of this unblinding; the two-person rule needs two people each granted by "
            "someone else"
        )


def _pair_is_independent(
    uow: UnitOfWork, study_id: int, pending: TrialUnblinding, actor: Actor
) -> None:
    requester = uow.unblindings.user_id(pending.requested_by)
    people = {requester, actor.user_id}
    _require_independent(uow, study_id, requester, Role.MANAGER, people)
    _require_independent(uow, study_id, actor.user_id, Role.STATISTICIAN, people)
    shared = grant_requesters(uow, study_id, requester, [Role.MANAGER]) & grant_requesters(
        uow, study_id, actor.user_id, [Role.STATISTICIAN]
    )
    if shared:
        raise PermissionDenied(
            "the roles of both signers were asked for by the same person; the two-person rule "
            "needs two people whose access does not come from one and the same requester"
        )


def _refuse_if_pending(uow: UnitOfWork, study: Study) -> None:
    pending = _pending(uow, study.id)
    if pending is not None:
        raise PreconditionFailed(
            f"trial-level unblinding of study {study.code} was already requested by "
            f"{pending.requested_name} on {_iso(pending.requested_at)}; it awaits the "
            "statistician's confirmation",
            reason="unblinding-pending",
        )


def _pending_or_refuse(uow: UnitOfWork, study: Study, actor: Actor) -> TrialUnblinding:
    pending = _pending(uow, study.id)
    if pending is None:
        raise PreconditionFailed(
            f"trial-level unblinding of study {study.code} has not been requested; the study "
            "manager requests it first",
            reason="no-unblinding-request",
        )
    if pending.requested_by == actor.username:
        raise PermissionDenied(
            "the person who requested trial-level unblinding cannot also confirm it "
            "(two-person rule); another unblinded statistician must confirm"
        )
    return pending


def confirm_trial_unblinding(
    ctx: ServiceContext, actor: Actor, study_id: int, password: str
) -> TrialUnblindingView:
    """Second signature (unblinded statistician, not the requester): the study is unblinded."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, [Role.STATISTICIAN], action="confirm trial-level unblinding")
        study = _study(uow, study_id)
        _refuse_if_unblinded(study)
        _pair_is_independent(uow, study_id, _pending_or_refuse(uow, study, actor), actor)
        code = study.code
    meaning = f"Confirmation of trial-level unblinding of study {code}"
    reauthenticate(ctx, actor, password, meaning=meaning)
    with ctx.uow() as uow:
        study = _lock_study(uow, study_id)
        _refuse_if_unblinded(study)
        require_hard_lock(uow, study_id)  # REC-5
        pending = _pending_or_refuse(uow, study, actor)
        _pair_is_independent(uow, study_id, pending, actor)
        now = ctx.now()
        confirmed = uow.unblindings.confirm(
            pending,
            {
                "status": "confirmed",
                "confirmed_by": actor.username,
                "confirmed_name": actor.full_name,
                "confirmed_at": now,
                "confirmed_meaning": meaning,
            },
        )
        if confirmed is None:
            raise Conflict("the unblinding request was changed by someone else; reload")
        uow.unblindings.unblind_study(study_id, now)
        study = _study(uow, study_id)
        uow.notifications.add(
            study_id=study_id,
            recipient_role=Role.MANAGER.value,
            subject_id=None,
            text=f"Study {code} is unblinded at trial level, confirmed by {actor.full_name}.",
            at=now,
        )
        uow.audit.record(
            _study_entry(
                ctx,
                actor,
                study,
                "confirm_trial_unblinding",
                {
                    "status": "unblinded",
                    "requested_by": pending.requested_by,
                    "signature": {"name": actor.full_name, "meaning": meaning},
                },
                None,
            )
        )
        view = _status_view(uow, study)
        uow.commit()
        return view


# --- notifications -------------------------------------------------------------------------


@dataclass(frozen=True)
class NotificationView:
    id: int
    recipient_role: str
    subject: str | None
    text: str
    created_at: str
    read_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _notification_view(read: NotificationRead) -> NotificationView:
    row = read.notification
    created = _iso(row.created_at)
    assert created is not None
    return NotificationView(
        id=row.id,
        recipient_role=row.recipient_role,
        subject=read.subject_number,
        text=row.text,
        created_at=created,
        read_at=_iso(row.read_at),
    )


def _readable(actor: Actor, study_id: int, read: NotificationRead) -> bool:
    """Addressed to a role the actor holds, about a subject of a site the actor sees (ACC-1)."""
    row = read.notification
    held = {r for r in actor.roles(study_id) if r.value == row.recipient_role}
    if row.study_id != study_id or not held:
        return False
    if row.subject_id is None:
        return True
    return read.subject_site_id is not None and actor.has(study_id, held, read.subject_site_id)


def notifications(
    ctx: ServiceContext, actor: Actor, study_id: int, *, unread_only: bool = False
) -> list[NotificationView]:
    """Notifications for the roles the actor holds in this study, newest first."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="read notifications")
        roles = [r.value for r in actor.roles(study_id)]
        rows = uow.notifications.for_roles(study_id, roles, unread_only=unread_only)
        return [_notification_view(row) for row in rows if _readable(actor, study_id, row)]


def mark_notification_read(
    ctx: ServiceContext, actor: Actor, study_id: int, notification_id: int
) -> NotificationView:
    """Mark read (idempotent: the first reading time is kept). Someone else's notification is
    'not found', so its existence does not leak."""
    with ctx.uow() as uow:
        require(actor, study_id, READERS, action="read notifications")
        row = uow.notifications.get(notification_id)
        if row is None or not _readable(actor, study_id, row):
            raise NotFound(f"notification {notification_id} not found")
        if row.notification.read_at is None:
            view = _notification_view(uow.notifications.mark_read(notification_id, ctx.now()))
            uow.commit()
            return view
        return _notification_view(row)
