"""Helpers shared by the service functions.

:func:`acting_on` and :class:`Acting` are how a converted service acts on one subject: the
subject read in scope (ACC-1), the permission checked for its site, the action allowed in its
state (LIFE-1), one timestamp for the whole action, guarded state changes and audit entries
through the unit of work's repositories (no SQL here).

The row-based helpers (``load_subject``, ``transition``, ``audit``, ...) that services still
holding SQL use live in :mod:`trialdesk.services.orm_rows` and are re-exported here until
wave 2 of issue 13 moves those services onto repositories.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from trialdesk.domain.errors import Conflict, NotFound, ValidationFailed
from trialdesk.domain.lifecycle import Action, SubjectState, apply_action
from trialdesk.domain.permissions import ACTION_PERMISSIONS
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.context import ServiceContext
from trialdesk.store.records import (
    Allocation,
    ProtocolVersion,
    Site,
    Subject,
    SubjectRead,
)
from trialdesk.store.uow import UnitOfWork


class _Zoned(Protocol):
    @property
    def timezone(self) -> str: ...


class _Stateful(Protocol):
    @property
    def state(self) -> str: ...

    @property
    def number(self) -> str: ...


def site_today(site: _Zoned, now: dt.datetime) -> dt.date:
    """The calendar date at the site now (TIME-1)."""
    return now.astimezone(ZoneInfo(site.timezone)).date()


def check_action(subject: _Stateful, action: Action) -> SubjectState:
    """The state after ``action``; refuses with the state and allowed actions (LIFE-1)."""
    return apply_action(SubjectState(subject.state), action, subject_label=subject.number)


def require_text(value: str | None, field: str, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise ValidationFailed(f"{what} is required", {field: "required"})
    return text


def jsonable(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


# --- on repositories ----------------------------------------------------------------------


def loaded_protocol(
    ctx: ServiceContext, uow: UnitOfWork, version: ProtocolVersion
) -> LoadedProtocol:
    """The parsed protocol of a stored version: parsed once per process, and its text read
    from the database only the first time (PROT-3 keeps a stored version immutable)."""
    cached = ctx.cached_protocol(version.sha256)
    if cached is not None:
        return cached
    return ctx.protocol(version.sha256, uow.protocols.text(version.id))


def version_in_force(uow: UnitOfWork, study_id: int, on: dt.date | None = None) -> ProtocolVersion:
    """The signed version in force on ``on`` (a site-local date, PROT-2); without a date, the
    newest signed version, which may take effect later."""
    version = uow.protocols.newest(study_id) if on is None else uow.protocols.in_force(study_id, on)
    if version is None:
        raise NotFound("this study has no protocol loaded; run 'trialdesk init'")
    return version


def schedule_version(
    ctx: ServiceContext, uow: UnitOfWork, subject: Subject, own: ProtocolVersion, on: dt.date
) -> tuple[ProtocolVersion, LoadedProtocol]:
    """The version whose visits and windows apply to a visit of ``subject`` not yet done, on
    ``on`` (site-local): the one in force that day, never older than the subject's own
    (PROT-2: visits not yet done follow an amendment from its effective date)."""
    version = version_in_force(uow, subject.study_id, on)
    if version.id < own.id:
        version = own
    return version, loaded_protocol(ctx, uow, version)


def subject_in_scope(uow: UnitOfWork, actor: Actor, study_id: int, number: str) -> SubjectRead:
    """The subject, or 'not found' also when it belongs to a site the actor cannot see."""
    read = uow.subjects.read(study_id, number)
    if read is None:
        raise NotFound(f"subject {number} not found")
    require_site_visible(actor, study_id, read.subject.site_id, f"subject {number}")
    return read


def check_clinical_date(
    subject: Subject,
    site: Site,
    value: dt.date,
    now: dt.datetime,
    what: str,
    *,
    field: str = "date",
    not_before: dt.date | None = None,
    not_before_what: str = "",
) -> None:
    """Refuse a clinical date in the site's future or before consent (LIFE-2), or before
    ``not_before`` (e.g. randomization)."""
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


@dataclass
class Acting:
    """One action on one subject, inside its unit of work. ``subject`` is replaced by the
    new record after each change, so the view at the end shows what was committed."""

    ctx: ServiceContext
    uow: UnitOfWork
    actor: Actor
    subject: Subject
    site: Site
    version: ProtocolVersion
    allocation: Allocation | None
    trial_unblinded: bool
    now: dt.datetime
    """The action's one timestamp: every row and audit entry it writes carries it."""

    @property
    def read(self) -> SubjectRead:
        return SubjectRead(
            self.subject, self.site, self.version, self.allocation, self.trial_unblinded
        )

    @property
    def today(self) -> dt.date:
        """Today at the subject's site (TIME-1)."""
        return site_today(self.site, self.now)

    def protocol(self) -> LoadedProtocol:
        """The subject's own protocol version, parsed."""
        return loaded_protocol(self.ctx, self.uow, self.version)

    def check_date(
        self,
        value: dt.date,
        what: str,
        *,
        field: str = "date",
        not_before: dt.date | None = None,
        not_before_what: str = "",
    ) -> None:
        check_clinical_date(
            self.subject,
            self.site,
            value,
            self.now,
            what,
            field=field,
            not_before=not_before,
            not_before_what=not_before_what,
        )

    def transition(
        self,
        action: Action,
        *,
        changes: dict[str, Any] | None = None,
        audit_new: dict[str, Any] | None = None,
        reason: str | None = None,
        protocol_sha256: str | None = None,
    ) -> SubjectState:
        """Apply ``action`` with the guarded update, so two users acting at once cannot both
        win, and audit it (old and new state, the changed values)."""
        subject = self.subject
        old_state = SubjectState(subject.state)
        new_state = check_action(subject, action)
        values: dict[str, Any] = dict(changes or {})
        values.update(state=new_state.value, updated_at=self.now)
        updated = self.uow.subjects.update(subject, values)
        if updated is None:
            raise Conflict(
                f"subject {subject.number} was changed by someone else; reload and try again"
            )
        self.subject = updated
        new: dict[str, Any] = {"state": new_state.value}
        new.update({k: jsonable(v) for k, v in (changes or {}).items()})
        new.update(audit_new or {})
        self.audit(
            action.value,
            old={"state": old_state.value},
            new=new,
            reason=reason,
            protocol_sha256=protocol_sha256,
        )
        return new_state

    def audit(
        self,
        action: str,
        *,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        entity: str = "subject",
        entity_id: str | None = None,
        protocol_sha256: str | None = None,
    ) -> None:
        self.uow.audit.subject(
            self.actor.label,
            self.subject,
            action,
            at=self.now,
            old=old,
            new=new,
            reason=reason,
            entity=entity,
            entity_id=entity_id,
            protocol_sha256=protocol_sha256 or self.version.sha256,
        )


def acting_with(
    ctx: ServiceContext, uow: UnitOfWork, actor: Actor, read: SubjectRead, now: dt.datetime
) -> Acting:
    """An :class:`Acting` for a subject reached through another record (a data query, a CRC
    case); the caller has checked scope and permission."""
    return Acting(
        ctx=ctx,
        uow=uow,
        actor=actor,
        subject=read.subject,
        site=read.site,
        version=read.version,
        allocation=read.allocation,
        trial_unblinded=read.trial_unblinded,
        now=now,
    )


@contextmanager
def acting_on(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    action: Action,
    *,
    readonly: bool = False,
) -> Iterator[Acting]:
    """Open the action's unit of work with the subject read in scope (ACC-1), the permission
    the action needs checked for the subject's site (:data:`ACTION_PERMISSIONS`), and the
    action allowed in the subject's state (LIFE-1). The caller commits."""
    now = ctx.now()
    with ctx.uow(readonly=readonly) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        require(actor, study_id, ACTION_PERMISSIONS[action], site_id=subject.site_id)
        check_action(subject, action)
        yield acting_with(ctx, uow, actor, read, now)


# The row-based helpers of the services not yet on repositories (wave 2 removes them).
from trialdesk.services.orm_rows import (  # noqa: E402
    audit as audit,
)
from trialdesk.services.orm_rows import (  # noqa: E402
    current_protocol_row as current_protocol_row,
)
from trialdesk.services.orm_rows import (  # noqa: E402
    load_subject as load_subject,
)
from trialdesk.services.orm_rows import (  # noqa: E402
    protocol_of as protocol_of,
)
from trialdesk.services.orm_rows import (  # noqa: E402
    record_of as record_of,
)
from trialdesk.services.orm_rows import (  # noqa: E402
    site_by_code as site_by_code,
)
from trialdesk.services.orm_rows import (  # noqa: E402
    study_by_id as study_by_id,
)
from trialdesk.services.orm_rows import (  # noqa: E402
    subject_protocol as subject_protocol,
)
from trialdesk.services.orm_rows import (  # noqa: E402
    transition as transition,
)
