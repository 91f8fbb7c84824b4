"""Data queries: the monitor questions one field of a saved form, the site answers (and may
correct the value through the DATA-2 correction path), the monitor closes or reopens.

Status machine: ``open -> answered -> closed``; ``answered`` or ``closed`` -> ``open`` again
(reopened). Every step is audited in the subject's stream; a refusal writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.errors import NotFound, PreconditionFailed, Refusal, ValidationFailed
from trialdesk.domain.lifecycle import Action
from trialdesk.domain.permissions import Permission
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.common import (
    acting_with,
    check_action,
    loaded_protocol,
    require_text,
    subject_in_scope,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import correct_form, form_record_protocol, refuse_concealed
from trialdesk.store.records import DataQuery, Site, Subject
from trialdesk.store.uow import UnitOfWork

OPEN, ANSWERED, CLOSED = "open", "answered", "closed"
STATUSES = (OPEN, ANSWERED, CLOSED)
_NOT_OPEN = {ANSWERED: Refusal.QUERY_ANSWERED, CLOSED: Refusal.QUERY_CLOSED}


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
    return None if moment is None else moment.isoformat()


def _view(row: DataQuery, subject: Subject, site: Site) -> QueryView:
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
        raised_at=row.raised_at.isoformat(),
        answer=row.answer,
        answered_by=row.answered_by,
        answered_at=_iso(row.answered_at),
        value_changed=row.value_changed,
        closed_by=row.closed_by,
        closed_at=_iso(row.closed_at),
        reopened=row.reopened,
    )


def _load(
    uow: UnitOfWork, actor: Actor, study_id: int, query_id: int, permission: Permission
) -> DataQuery:
    """The query (row-locked), or 'not found' also when its site is out of the actor's scope;
    then the permission at that site."""
    row = uow.queries.get(study_id, query_id, lock=True)
    if row is None:
        raise NotFound(f"query {query_id} not found")
    subject = uow.subjects.by_id(row.subject_id)
    require_site_visible(actor, study_id, subject.site_id, f"query {query_id}")
    require(actor, study_id, permission, site_id=subject.site_id)
    return row


def raise_query(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    form_code: str,
    field: str,
    text: str,
    visit_code: str = "",
) -> QueryView:
    """Question one field of the latest saved copy of a form. The index procedure's forms
    cannot be queried by blinded roles, under any of their names: success, 'not saved' or an
    error would tell the arm (RAND-6), so every such form gets the same refusal."""
    now = ctx.now()
    with ctx.uow() as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        require(actor, study_id, Permission.QUERY_RAISE, site_id=subject.site_id)
        question = require_text(text, "text", "the query text")
        refuse_concealed(loaded_protocol(ctx, uow, read.version), form_code, "a data query")
        record = uow.forms.latest(subject.id, form_code, visit_code)
        if record is None:
            where = f" at {visit_code}" if visit_code else ""
            raise NotFound(f"form {form_code}{where} of {number} has not been saved")
        loaded = form_record_protocol(ctx, uow, record)
        fields = [f.code for f in loaded.protocol.form(form_code).fields]
        if field not in fields:
            raise ValidationFailed(
                f"form {form_code} has no field {field!r} (fields: {', '.join(fields)})",
                {"field": "unknown"},
            )
        pending = uow.queries.in_progress(record.id, field)
        if pending is not None:
            raise PreconditionFailed(
                f"field {form_code}.{field} of {number} already has query {pending} in progress",
                Refusal.QUERY_IN_PROGRESS,
            )
        row = uow.queries.add(
            study_id=study_id,
            subject_id=subject.id,
            form_record_id=record.id,
            form_code=form_code,
            visit_code=visit_code,
            field=field,
            text=question,
            raised_by=actor.label,
            raised_at=now,
        )
        uow.audit.subject(
            actor.label,
            subject,
            "raise_query",
            at=now,
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
            protocol_sha256=read.version.sha256,
        )
        uow.commit()
        return _view(row, subject, read.site)


def answer_query(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    query_id: int,
    *,
    text: str,
    new_value: object = None,
    reason: str | None = None,
) -> QueryView:
    """The site's answer. With ``new_value`` the field is corrected in the same transaction,
    through the DATA-2 correction path (reason required, audit keeps old and new)."""
    now = ctx.now()
    with ctx.uow() as uow:
        row = _load(uow, actor, study_id, query_id, Permission.QUERY_ANSWER)
        if row.status != OPEN:
            hint = (
                "it waits for the monitor to close or reopen it"
                if row.status == ANSWERED
                else "the monitor may reopen it"
            )
            raise PreconditionFailed(
                f"query {query_id} is {row.status}; only an open query can be answered ({hint})",
                _NOT_OPEN[row.status],
            )
        answer = require_text(text, "text", "the answer")
        act = acting_with(
            ctx, uow, actor, uow.subjects.read_of(uow.subjects.by_id(row.subject_id)), now
        )
        correction: dict[str, Any] | None = None
        if new_value is not None:
            why = require_text(reason, "reason", "a reason for changing the value")
            require(actor, study_id, Permission.FORM_CORRECT, site_id=act.subject.site_id)
            check_action(act.subject, Action.CORRECT_DATA)
            record = uow.forms.get(row.form_record_id)
            loaded = form_record_protocol(ctx, uow, record)
            diff = correct_form(act, loaded, record, {row.field: new_value}, why)
            old, new = diff.get(row.field, (None, None))
            correction = {"old": old, "new": new, "reason": why}
        row = uow.queries.update(
            row,
            {
                "status": ANSWERED,
                "answer": answer,
                "answered_by": actor.label,
                "answered_at": now,
                "value_changed": correction is not None,
            },
        )
        act.audit(
            "answer_query",
            entity="data_query",
            entity_id=str(row.id),
            old={"status": OPEN},
            new={"status": ANSWERED, "answer": answer, "correction": correction},
        )
        uow.commit()
        return _view(row, act.subject, act.site)


def close_query(
    ctx: ServiceContext, actor: Actor, study_id: int, query_id: int, *, note: str | None = None
) -> QueryView:
    """The monitor accepts the answer; an unanswered query cannot be closed."""
    now = ctx.now()
    with ctx.uow() as uow:
        row = _load(uow, actor, study_id, query_id, Permission.QUERY_CLOSE)
        if row.status != ANSWERED:
            why = "it has no answer yet" if row.status == OPEN else "it is already closed"
            raise PreconditionFailed(
                f"query {query_id} cannot be closed: {why}; only an answered query can be closed",
                Refusal.QUERY_OPEN if row.status == OPEN else Refusal.QUERY_CLOSED,
            )
        row = uow.queries.update(
            row, {"status": CLOSED, "closed_by": actor.label, "closed_at": now}
        )
        read = uow.subjects.read_of(uow.subjects.by_id(row.subject_id))
        uow.audit.subject(
            actor.label,
            read.subject,
            "close_query",
            at=now,
            entity="data_query",
            entity_id=str(row.id),
            old={"status": ANSWERED},
            new={"status": CLOSED},
            reason=(note or "").strip() or None,
            protocol_sha256=read.version.sha256,
        )
        uow.commit()
        return _view(row, read.subject, read.site)


def reopen_query(
    ctx: ServiceContext, actor: Actor, study_id: int, query_id: int, *, text: str
) -> QueryView:
    """The monitor is not satisfied: an answered or closed query is open again, with why.
    The previous answer stays in the audit trail; the row shows the current round."""
    now = ctx.now()
    with ctx.uow() as uow:
        row = _load(uow, actor, study_id, query_id, Permission.QUERY_REOPEN)
        if row.status == OPEN:
            raise PreconditionFailed(f"query {query_id} is already open", Refusal.QUERY_OPEN)
        why = require_text(text, "text", "why the query is reopened")
        old = {"status": row.status, "answer": row.answer}
        row = uow.queries.update(
            row,
            {
                "status": OPEN,
                "text": f"{row.text}\n[reopened by {actor.label}] {why}",
                "reopened": row.reopened + 1,
                "answer": None,
                "answered_by": None,
                "closed_by": None,
                "answered_at": None,
                "closed_at": None,
                "value_changed": False,
            },
        )
        read = uow.subjects.read_of(uow.subjects.by_id(row.subject_id))
        uow.audit.subject(
            actor.label,
            read.subject,
            "reopen_query",
            at=now,
            entity="data_query",
            entity_id=str(row.id),
            old=old,
            new={"status": OPEN, "reopened": row.reopened},
            reason=why,
            protocol_sha256=read.version.sha256,
        )
        uow.commit()
        return _view(row, read.subject, read.site)


def open_queries(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    site: str | None = None,
    status: str | None = None,
) -> list[QueryView]:
    """Queries not yet closed (or of one ``status``), oldest first; a site-scoped user sees
    only their own site's (ACC-1)."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(
            f"unknown query status {status!r}; one of {', '.join(STATUSES)}",
            {"status": "unknown"},
        )
    require(actor, study_id, Permission.QUERY_READ)
    with ctx.uow(readonly=True) as uow:
        site_id = None
        if site is not None:
            wanted = uow.sites.by_code(study_id, site)
            if wanted is None:
                raise NotFound(f"site {site} not found")
            require_site_visible(actor, study_id, wanted.id, f"site {site}")
            site_id = wanted.id
        rows = uow.queries.listing(
            study_id,
            statuses=(OPEN, ANSWERED) if status is None else (status,),
            site_id=site_id,
            site_ids=actor.site_ids(study_id),
        )
        return [_view(q, s, st) for q, s, st in rows]
