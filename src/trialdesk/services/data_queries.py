"""Data queries: the monitor questions one field of a saved form, the site answers (and may
correct the value through the DATA-2 correction path), the monitor closes or reopens.

Status machine: ``open -> answered -> closed``; ``answered`` or ``closed`` -> ``open`` again
(reopened). Every step is audited in the subject's stream; a refusal writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from trialdesk.domain.errors import NotFound, PreconditionFailed, ValidationFailed
from trialdesk.domain.lifecycle import Action
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.common import (
    audit,
    check_action,
    load_subject,
    require_text,
    site_by_code,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import correct_form
from trialdesk.store.tables import (
    DataQueryRow,
    FormRecordRow,
    ProtocolVersionRow,
    SiteRow,
    SubjectRow,
)
from trialdesk.store.uow import UnitOfWork

MONITORS = (Role.MONITOR, Role.MANAGER)
"""Who raises, closes and reopens queries: the monitor, and the study manager as data manager."""
ANSWERERS = (Role.COORDINATOR,)
READERS = (Role.MONITOR, Role.MANAGER, Role.COORDINATOR)

OPEN, ANSWERED, CLOSED = "open", "answered", "closed"
STATUSES = (OPEN, ANSWERED, CLOSED)


@dataclass(frozen=True)
class QueryView:
    id: int
    subject: str
    site: str
    form: str
    visit: str | None
    field: str
    status: str
    text: str
    raised_by: str
    raised_at: str
    answer: str | None = None
    answered_by: str | None = None
    answered_at: str | None = None
    value_changed: bool = False
    closed_by: str | None = None
    closed_at: str | None = None
    reopened: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(moment: dt.datetime | None) -> str | None:
    """UTC ISO 8601; SQLite hands stored times back without their zone (they are UTC)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).isoformat()


def _view(row: DataQueryRow, subject: SubjectRow, site: SiteRow) -> QueryView:
    return QueryView(
        id=row.id,
        subject=subject.number,
        site=site.code,
        form=row.form_code,
        visit=row.visit_code or None,
        field=row.field,
        status=row.status,
        text=row.text,
        raised_by=row.raised_by,
        raised_at=_iso(row.raised_at) or "",
        answer=row.answer,
        answered_by=row.answered_by,
        answered_at=_iso(row.answered_at),
        value_changed=row.value_changed,
        closed_by=row.closed_by,
        closed_at=_iso(row.closed_at),
        reopened=row.reopened,
    )


def _site(uow: UnitOfWork, subject: SubjectRow) -> SiteRow:
    site = uow.session.get(SiteRow, subject.site_id)
    assert site is not None  # foreign key
    return site


def _record_protocol(ctx: ServiceContext, uow: UnitOfWork, record: FormRecordRow) -> LoadedProtocol:
    version = uow.session.get(ProtocolVersionRow, record.protocol_version_id)
    assert version is not None  # foreign key
    return ctx.protocol(version.sha256, version.text)


def _arm_forms(loaded: LoadedProtocol) -> set[str]:
    return {arm.procedure_form for arm in loaded.protocol.arms if arm.procedure_form}


def _load(
    uow: UnitOfWork, actor: Actor, study_id: int, query_id: int
) -> tuple[DataQueryRow, SubjectRow]:
    """The query (row-locked), or 'not found' also when its site is out of the actor's scope."""
    row = uow.session.scalars(
        select(DataQueryRow)
        .where(DataQueryRow.id == query_id, DataQueryRow.study_id == study_id)
        .with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFound(f"query {query_id} not found")
    subject = uow.session.get(SubjectRow, row.subject_id)
    assert subject is not None  # foreign key
    require_site_visible(actor, study_id, subject.site_id, f"query {query_id}")
    return row, subject


def raise_query(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    form_code: str,
    field: str,
    text: str,
    *,
    visit_code: str = "",
) -> QueryView:
    """Question one field of the latest saved copy of a form. Arm-specific procedure forms
    cannot be queried by blinded roles: success or 'not saved' would tell the arm (RAND-6)."""
    with ctx.uow() as uow:
        subject = load_subject(uow, actor, study_id, number)
        require(actor, study_id, MONITORS, site_id=subject.site_id, action="raise data query")
        question = require_text(text, "text", "the query text")
        record = uow.session.scalars(
            select(FormRecordRow)
            .where(
                FormRecordRow.subject_id == subject.id,
                FormRecordRow.form_code == form_code,
                FormRecordRow.visit_code == visit_code,
            )
            .order_by(FormRecordRow.seq.desc())
        ).first()
        loaded = (
            _record_protocol(ctx, uow, record)
            if record is not None
            else ctx.protocol(*_current_protocol(uow, subject))
        )
        if form_code in _arm_forms(loaded):
            raise ValidationFailed(
                f"form {form_code} is an arm's procedure form; blinded roles cannot query it",
                {"form": "arm-specific"},
            )
        if record is None:
            where = f" at {visit_code}" if visit_code else ""
            raise NotFound(f"form {form_code}{where} of {number} has not been saved")
        fields = [f.code for f in loaded.protocol.form(form_code).fields]
        if field not in fields:
            raise ValidationFailed(
                f"form {form_code} has no field {field!r} (fields: {', '.join(fields)})",
                {"field": "unknown"},
            )
        pending = uow.session.scalars(
            select(DataQueryRow.id).where(
                DataQueryRow.form_record_id == record.id,
                DataQueryRow.field == field,
                DataQueryRow.status != CLOSED,
            )
        ).first()
        if pending is not None:
            raise PreconditionFailed(
                f"field {form_code}.{field} of {number} already has query {pending} in progress",
                reason="query-in-progress",
            )
        now = ctx.now()
        row = DataQueryRow(
            study_id=study_id,
            subject_id=subject.id,
            form_record_id=record.id,
            form_code=form_code,
            visit_code=visit_code,
            field=field,
            status=OPEN,
            text=question,
            raised_by=actor.label,
            raised_at=now,
            value_changed=False,
            reopened=0,
        )
        uow.session.add(row)
        uow.session.flush()
        audit(
            uow,
            ctx,
            actor,
            subject,
            "raise_query",
            entity="data_query",
            entity_id=str(row.id),
            new={
                "status": OPEN,
                "form": form_code,
                "visit": visit_code or None,
                "field": field,
                "form_record": record.id,
                "text": question,
            },
        )
        uow.commit()
        return _view(row, subject, _site(uow, subject))


def _current_protocol(uow: UnitOfWork, subject: SubjectRow) -> tuple[str, str]:
    version = uow.session.get(ProtocolVersionRow, subject.protocol_version_id)
    assert version is not None  # foreign key
    return version.sha256, version.text


def answer_query(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    query_id: int,
    text: str,
    new_value: object = None,
    reason: str | None = None,
) -> QueryView:
    """The site's answer. With ``new_value`` the field is corrected in the same transaction,
    through the DATA-2 correction path (reason required, audit keeps old and new)."""
    with ctx.uow() as uow:
        row, subject = _load(uow, actor, study_id, query_id)
        require(actor, study_id, ANSWERERS, site_id=subject.site_id, action="answer data query")
        if row.status != OPEN:
            hint = (
                "it waits for the monitor to close or reopen it"
                if row.status == ANSWERED
                else "the monitor may reopen it"
            )
            raise PreconditionFailed(
                f"query {query_id} is {row.status}; only an open query can be answered ({hint})",
                reason=f"query-{row.status}",
            )
        answer = require_text(text, "text", "the answer")
        correction: dict[str, Any] | None = None
        if new_value is not None:
            why = require_text(reason, "reason", "a reason for changing the value")
            check_action(subject, Action.CORRECT_DATA)
            record = uow.session.get(FormRecordRow, row.form_record_id)
            assert record is not None  # foreign key
            loaded = _record_protocol(ctx, uow, record)
            diff = correct_form(
                ctx, uow, actor, subject, loaded, record, {row.field: new_value}, why
            )
            old, new = diff.get(row.field, (None, None))
            correction = {"old": old, "new": new, "reason": why}
        now = ctx.now()
        row.status = ANSWERED
        row.answer, row.answered_by, row.answered_at = answer, actor.label, now
        row.value_changed = correction is not None
        audit(
            uow,
            ctx,
            actor,
            subject,
            "answer_query",
            entity="data_query",
            entity_id=str(row.id),
            old={"status": OPEN},
            new={"status": ANSWERED, "answer": answer, "correction": correction},
        )
        uow.commit()
        return _view(row, subject, _site(uow, subject))


def close_query(
    ctx: ServiceContext, actor: Actor, study_id: int, query_id: int, note: str | None = None
) -> QueryView:
    """The monitor accepts the answer; an unanswered query cannot be closed."""
    with ctx.uow() as uow:
        row, subject = _load(uow, actor, study_id, query_id)
        require(actor, study_id, MONITORS, site_id=subject.site_id, action="close data query")
        if row.status != ANSWERED:
            why = "it has no answer yet" if row.status == OPEN else "it is already closed"
            raise PreconditionFailed(
                f"query {query_id} cannot be closed: {why}; only an answered query can be closed",
                reason=f"query-{row.status}",
            )
        row.status = CLOSED
        row.closed_by, row.closed_at = actor.label, ctx.now()
        audit(
            uow,
            ctx,
            actor,
            subject,
            "close_query",
            entity="data_query",
            entity_id=str(row.id),
            old={"status": ANSWERED},
            new={"status": CLOSED},
            reason=(note or "").strip() or None,
        )
        uow.commit()
        return _view(row, subject, _site(uow, subject))


def reopen_query(
    ctx: ServiceContext, actor: Actor, study_id: int, query_id: int, text: str
) -> QueryView:
    """The monitor is not satisfied: an answered or closed query is open again, with why.
    The previous answer stays in the audit trail; the row shows the current round."""
    with ctx.uow() as uow:
        row, subject = _load(uow, actor, study_id, query_id)
        require(actor, study_id, MONITORS, site_id=subject.site_id, action="reopen data query")
        if row.status == OPEN:
            raise PreconditionFailed(f"query {query_id} is already open", reason="query-open")
        why = require_text(text, "text", "why the query is reopened")
        old = {"status": row.status, "answer": row.answer}
        row.status = OPEN
        row.text = f"{row.text}\n[reopened by {actor.label}] {why}"
        row.reopened += 1
        row.answer = row.answered_by = row.closed_by = None
        row.answered_at = row.closed_at = None
        row.value_changed = False
        audit(
            uow,
            ctx,
            actor,
            subject,
            "reopen_query",
            entity="data_query",
            entity_id=str(row.id),
            old=old,
            new={"status": OPEN, "reopened": row.reopened},
            reason=why,
        )
        uow.commit()
        return _view(row, subject, _site(uow, subject))


def open_queries(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    site: str | None = None,
    *,
    status: str | None = None,
) -> list[QueryView]:
    """Queries not yet closed (or of one ``status``), oldest first; a site-scoped user sees
    only their own site's (ACC-1)."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(
            f"unknown query status {status!r}; one of {', '.join(STATUSES)}",
            {"status": "unknown"},
        )
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="list data queries")
        stmt = (
            select(DataQueryRow, SubjectRow, SiteRow)
            .join(SubjectRow, SubjectRow.id == DataQueryRow.subject_id)
            .join(SiteRow, SiteRow.id == SubjectRow.site_id)
            .where(DataQueryRow.study_id == study_id)
        )
        if status is None:
            stmt = stmt.where(DataQueryRow.status != CLOSED)
        else:
            stmt = stmt.where(DataQueryRow.status == status)
        if site is not None:
            wanted = site_by_code(uow, study_id, site)
            require_site_visible(actor, study_id, wanted.id, f"site {site}")
            stmt = stmt.where(SiteRow.id == wanted.id)
        allowed = actor.site_ids(study_id)
        if allowed is not None:
            stmt = stmt.where(SiteRow.id.in_(allowed))
        rows = uow.session.execute(stmt.order_by(DataQueryRow.raised_at, DataQueryRow.id))
        return [_view(q, s, st) for q, s, st in rows.tuples()]
