"""Row-based helpers for the services that still use the ORM session (randomization,
unblinding, devices, lists, amendments, ...). Wave 2 of issue 13 moves those services onto the
repositories of :mod:`trialdesk.store` and deletes this module; new code uses
:mod:`trialdesk.services.common` (``acting_on``, ``Acting``) instead."""

from __future__ import annotations

import datetime as dt
from typing import Any

from trialdesk.domain.errors import Conflict, NotFound
from trialdesk.domain.lifecycle import Action, SubjectState
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require_site_visible
from trialdesk.services.common import check_action, jsonable, loaded_protocol, version_in_force
from trialdesk.services.context import ServiceContext
from trialdesk.store.records import Subject
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
    version = version_in_force(uow, study_id, on)
    row = uow.session.get(ProtocolVersionRow, version.id)
    assert row is not None
    return row


def protocol_of(ctx: ServiceContext, row: ProtocolVersionRow) -> LoadedProtocol:
    return ctx.protocol(row.sha256, row.text)


def subject_protocol(ctx: ServiceContext, uow: UnitOfWork, subject: SubjectRow) -> LoadedProtocol:
    return loaded_protocol(ctx, uow, uow.protocols.get(subject.protocol_version_id))


def site_by_code(uow: UnitOfWork, study_id: int, code: str) -> SiteRow:
    found = uow.sites.by_code(study_id, code)
    site = uow.session.get(SiteRow, found.id) if found is not None else None
    if site is None:
        raise NotFound(f"site {code} not found")
    return site


def load_subject(uow: UnitOfWork, actor: Actor, study_id: int, number: str) -> SubjectRow:
    """The subject, or 'not found' also when it belongs to a site the actor cannot see."""
    found = uow.subjects.get(study_id, number)
    subject = uow.session.get(SubjectRow, found.id) if found is not None else None
    if subject is None:
        raise NotFound(f"subject {number} not found")
    require_site_visible(actor, study_id, subject.site_id, f"subject {number}")
    return subject


def record_of(row: SubjectRow) -> Subject:
    """The repository record of an ORM subject row."""
    return Subject(**{name: getattr(row, name) for name in Subject.__dataclass_fields__})


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
    """Apply ``action`` to an ORM subject row with the one guarded update."""
    old_state = SubjectState(subject.state)
    new_state = check_action(subject, action)
    values: dict[str, Any] = dict(changes or {})
    values.update(state=new_state.value, updated_at=ctx.now())
    uow.session.flush()
    if uow.subjects.update(record_of(subject), values) is None:
        raise Conflict(
            f"subject {subject.number} was changed by someone else; reload and try again"
        )
    uow.session.refresh(subject)
    new: dict[str, Any] = {"state": new_state.value}
    new.update({k: jsonable(v) for k, v in (changes or {}).items()})
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
    """An entry in an ORM subject row's stream (see :meth:`Acting.audit`)."""
    uow.audit.subject(
        actor.label,
        record_of(subject),
        action,
        at=ctx.now(),
        old=old,
        new=new,
        reason=reason,
        entity=entity,
        entity_id=entity_id,
        protocol_sha256=protocol_sha256,
    )
