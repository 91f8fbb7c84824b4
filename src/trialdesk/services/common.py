"""Helpers shared by the service functions: loading records within scope, guarded state
changes, audit entries, dates checked against consent and the site's calendar."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from trialdesk.domain.errors import Conflict, NotFound, ValidationFailed
from trialdesk.domain.lifecycle import Action, SubjectState, apply_action
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import ProtocolVersionRow, SiteRow, StudyRow, SubjectRow
from trialdesk.store.uow import UnitOfWork


def study_by_id(uow: UnitOfWork, study_id: int) -> StudyRow:
    study = uow.session.get(StudyRow, study_id)
    if study is None:
        raise NotFound(f"study {study_id} not found")
    return study


def current_protocol_row(
    uow: UnitOfWork, study_id: int, on: dt.date | None = None
) -> ProtocolVersionRow:
    """The signed protocol version in force on ``on`` (a site-local date, PROT-2); without a
    date, the newest signed version, which may take effect later."""
    stmt = select(ProtocolVersionRow).where(ProtocolVersionRow.study_id == study_id)
    if on is None:
        stmt = stmt.where(ProtocolVersionRow.current.is_(True))
    else:
        stmt = stmt.where(
            ProtocolVersionRow.status == "signed",
            (ProtocolVersionRow.effective_from.is_(None))
            | (ProtocolVersionRow.effective_from <= on),
        )
    row = uow.session.scalars(stmt.order_by(ProtocolVersionRow.id.desc())).first()
    if row is None:
        raise NotFound("this study has no protocol loaded; run 'trialdesk init'")
    return row


def schedule_protocol(
    ctx: ServiceContext, uow: UnitOfWork, subject: SubjectRow, on: dt.date
) -> tuple[ProtocolVersionRow, LoadedProtocol]:
    """The version whose visits and windows apply to a visit of ``subject`` not yet done, on
    ``on`` (site-local): the one in force that day, never older than the subject's own
    (PROT-2: visits not yet done follow an amendment from its effective date)."""
    row = current_protocol_row(uow, subject.study_id, on)
    if row.id < subject.protocol_version_id:
        own = uow.session.get(ProtocolVersionRow, subject.protocol_version_id)
        assert own is not None
        row = own
    return row, protocol_of(ctx, row)


def protocol_of(ctx: ServiceContext, row: ProtocolVersionRow) -> LoadedProtocol:
    return ctx.protocol(row.sha256, row.text)


def subject_protocol(ctx: ServiceContext, uow: UnitOfWork, subject: SubjectRow) -> LoadedProtocol:
    row = uow.session.get(ProtocolVersionRow, subject.protocol_version_id)
    if row is None:  # pragma: no cover - foreign key guarantees it
        raise NotFound("protocol version of the subject is missing")
    return protocol_of(ctx, row)


def site_by_code(uow: UnitOfWork, study_id: int, code: str) -> SiteRow:
    site = uow.session.scalars(
        select(SiteRow).where(SiteRow.study_id == study_id, SiteRow.code == code)
    ).one_or_none()
    if site is None:
        raise NotFound(f"site {code} not found")
    return site


def load_subject(uow: UnitOfWork, actor: Actor, study_id: int, number: str) -> SubjectRow:
    """The subject, or 'not found' also when it belongs to a site the actor cannot see."""
    subject = uow.session.scalars(
        select(SubjectRow).where(SubjectRow.study_id == study_id, SubjectRow.number == number)
    ).one_or_none()
    if subject is None:
        raise NotFound(f"subject {number} not found")
    require_site_visible(actor, study_id, subject.site_id, f"subject {number}")
    return subject


def site_today(site: SiteRow, now: dt.datetime) -> dt.date:
    """The calendar date at the site now (TIME-1)."""
    return now.astimezone(ZoneInfo(site.timezone)).date()


def subject_site_today(uow: UnitOfWork, subject: SubjectRow, now: dt.datetime) -> dt.date:
    """Today at the subject's site (TIME-1)."""
    site = uow.session.get(SiteRow, subject.site_id)
    assert site is not None
    return site_today(site, now)


def check_clinical_date(
    uow: UnitOfWork,
    subject: SubjectRow,
    value: dt.date,
    now: dt.datetime,
    what: str,
    *,
    field: str = "date",
    not_before: dt.date | None = None,
    not_before_what: str = "",
) -> None:
    """Refuse a clinical date in the site's future or before consent (LIFE-2)."""
    site = uow.session.get(SiteRow, subject.site_id)
    assert site is not None
    today = site_today(site, now)
    if value > today:
        raise ValidationFailed(
            f"{what} date {value.isoformat()} is in the future (today at the site is "
            f"{today.isoformat()})",
            {field: "in the future"},
        )
    if subject.consent_date is not None and value < subject.consent_date:
        raise ValidationFailed(
            f"{what} date {value.isoformat()} is before consent "
            f"({subject.consent_date.isoformat()}); no study procedure may precede consent",
            {field: "before consent"},
        )
    if not_before is not None and value < not_before:
        raise ValidationFailed(
            f"{what} date {value.isoformat()} is before {not_before_what} "
            f"({not_before.isoformat()})",
            {field: f"before {not_before_what}"},
        )


def check_action(subject: SubjectRow, action: Action) -> SubjectState:
    """The state after ``action``; refuses with the state and allowed actions (LIFE-1)."""
    return apply_action(SubjectState(subject.state), action, subject_label=subject.number)


def transition(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    subject: SubjectRow,
    action: Action,
    *,
    changes: dict[str, Any] | None = None,
    audit_new: dict[str, Any] | None = None,
    reason: str | None = None,
    protocol_sha256: str | None = None,
) -> SubjectState:
    """Apply ``action`` with a guarded update, so two users acting at once cannot both win."""
    old_state = SubjectState(subject.state)
    new_state = check_action(subject, action)
    now = ctx.now()
    values: dict[str, Any] = dict(changes or {})
    values.update(state=new_state.value, version=subject.version + 1, updated_at=now)
    result = uow.session.execute(
        update(SubjectRow)
        .where(
            SubjectRow.id == subject.id,
            SubjectRow.state == old_state.value,
            SubjectRow.version == subject.version,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(
            f"subject {subject.number} was changed by someone else; reload and try again"
        )
    uow.session.refresh(subject)
    new: dict[str, Any] = {"state": new_state.value}
    new.update({k: _jsonable(v) for k, v in (changes or {}).items()})
    new.update(audit_new or {})
    audit(
        uow,
        ctx,
        actor,
        subject,
        action.value,
        old={"state": old_state.value},
        new=new,
        reason=reason,
        protocol_sha256=protocol_sha256,
    )
    return new_state


def audit(
    uow: UnitOfWork,
    ctx: ServiceContext,
    actor: Actor,
    subject: SubjectRow,
    action: str,
    *,
    old: Any = None,
    new: Any = None,
    reason: str | None = None,
    entity: str = "subject",
    entity_id: str | None = None,
    protocol_sha256: str | None = None,
) -> None:
    if protocol_sha256 is None:
        row = uow.session.get(ProtocolVersionRow, subject.protocol_version_id)
        protocol_sha256 = row.sha256 if row else None
    uow.record(
        PendingEntry(
            stream=f"subject:{subject.id}",
            at=ctx.now(),
            actor=actor.label,
            action=action,
            entity=entity,
            entity_id=entity_id or subject.number,
            study_id=subject.study_id,
            subject_id=subject.id,
            old=old,
            new=new,
            reason=reason,
            protocol_sha256=protocol_sha256,
        )
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def require_text(value: str | None, field: str, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise ValidationFailed(f"{what} is required", {field: "required"})
    return text


@contextmanager
def acting_on(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    action: Action,
    roles: Iterable[Role],
) -> Iterator[tuple[UnitOfWork, SubjectRow]]:
    """Open the action's unit of work with the subject loaded in scope (ACC-1), the actor's
    role checked for the subject's site, and the action allowed in the subject's state
    (LIFE-1). The caller commits."""
    with ctx.uow() as uow:
        subject = load_subject(uow, actor, study_id, number)
        require(actor, study_id, roles, site_id=subject.site_id, action=action.value)
        check_action(subject, action)
        yield uow, subject
