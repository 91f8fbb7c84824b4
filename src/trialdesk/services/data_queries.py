"""Data queries: the monitor questions one field of a saved form, the site answers (and may
correct the value through the DATA-2 correction path), the monitor closes or reopens.

Status machine: ``open -> answered -> closed``; ``answered`` or ``closed`` -> ``open`` again
(reopened). Every step is audited in the subject's stream; a refusal writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.errors import (
    ActionNotAllowed,
    NotFound,
    PreconditionFailed,
    Refusal,
    ValidationFailed,
)
from trialdesk.domain.lifecycle import Action
from trialdesk.domain.permissions import ROLE_PERMISSIONS, Permission
from trialdesk.domain.queries import (
    QueryAction,
    QueryStatus,
    age_band,
    age_days,
    apply_query_action,
    check_response,
    overdue,
)
from trialdesk.domain.roles import Role
from trialdesk.protocol.specs import response_specs
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
VERIFIED = "verified"  # issue 15 (x15b): the monitor accepted the answer (REC-7)
STATUSES = (OPEN, ANSWERED, VERIFIED, CLOSED)
_NOT_OPEN = {
    ANSWERED: Refusal.QUERY_ANSWERED,
    CLOSED: Refusal.QUERY_CLOSED,
    VERIFIED: Refusal.QUERY_VERIFIED,
}


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
    # issue 15 (x15b): REC-6, REC-7
    origin: str = "manual"
    rule: str | None = None
    severity: str | None = None
    assignee: str | None = None
    assigned_to: str = ""
    """The person the query is assigned to, else its site (``site S101``)."""
    response: str | None = None
    verified_by: str | None = None
    verified_at: str | None = None
    age_days: int = 0
    age_band: str = ""
    overdue: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _view(
    row: DataQuery,
    subject: Subject,
    site: Site,
    *,
    today: dt.date | None = None,
    overdue_after: int | None = None,
) -> QueryView:
    ended = row.verified_at or row.closed_at
    age = age_days(
        row.raised_at.date(),
        today=today or row.raised_at.date(),
        ended_on=None if ended is None or row.status not in (VERIFIED, CLOSED) else ended.date(),
    )
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
        origin=row.origin,
        rule=row.rule_id,
        severity=row.severity,
        assignee=row.assignee,
        assigned_to=row.assignee or f"site {site.code}",
        response=row.response_code,
        verified_by=row.verified_by,
        verified_at=_iso(row.verified_at),
        age_days=age,
        age_band=age_band(age),
        overdue=overdue_after is not None and overdue(QueryStatus(row.status), age, overdue_after),
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
        return _fresh_view(ctx, uow, row, read)


def answer_query(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    query_id: int,
    *,
    text: str,
    new_value: object = None,
    reason: str | None = None,
    response: str | None = None,
) -> QueryView:
    """The site's answer. With ``new_value`` the field is corrected in the same transaction,
    through the DATA-2 correction path (reason required, audit keeps old and new).
    ``response`` is one of the protocol's coded responses (REC-7: "data corrected" needs the
    correction, "confirmed as is" forbids one, some need an explanation); without one the
    answer is free text."""
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
        act = acting_with(
            ctx, uow, actor, uow.subjects.read_of(uow.subjects.by_id(row.subject_id)), now
        )
        coded = None
        if response is not None:
            coded = check_response(
                response_specs(act.protocol().protocol),
                response,
                text or "",
                value_changed=new_value is not None,
            )
        answer = (text or "").strip() or (coded.label if coded is not None else "")
        answer = require_text(answer, "text", "the answer")
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
                "response_code": coded.code if coded is not None else None,
            },
        )
        act.audit(
            "answer_query",
            entity="data_query",
            entity_id=str(row.id),
            old={"status": OPEN},
            new={
                "status": ANSWERED,
                "answer": answer,
                "correction": correction,
                "response": coded.code if coded is not None else None,
                "marks_missing": bool(coded and coded.marks_missing),
            },
        )
        uow.commit()
        return _fresh_view(ctx, uow, row, act.read)


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
        return _fresh_view(ctx, uow, row, read)


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
                "verified_by": None,
                "verified_at": None,
                "response_code": None,
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
        return _fresh_view(ctx, uow, row, read)


def open_queries(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    site: str | None = None,
    status: str | None = None,
    assignee: str | None = None,
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
        today = ctx.now().date()
        return [
            _view(q, s, st, today=today, overdue_after=_overdue_after(ctx, uow, s))
            for q, s, st in rows
            if assignee is None or q.assignee == assignee
        ]


# --- issue 15 (lane x15b): queries grown up (REC-7) ---------------------------------------------


def _overdue_after(ctx: ServiceContext, uow: UnitOfWork, subject: Subject) -> int | None:
    section = loaded_protocol(ctx, uow, uow.protocols.get(subject.protocol_version_id))
    queries = section.protocol.queries
    return None if queries is None else queries.overdue_after_days


def _fresh_view(ctx: ServiceContext, uow: UnitOfWork, row: DataQuery, read: Any) -> QueryView:
    return _view(
        row,
        read.subject,
        read.site,
        today=ctx.now().date(),
        overdue_after=_overdue_after(ctx, uow, read.subject),
    )


def assign_query(
    ctx: ServiceContext, actor: Actor, study_id: int, query_id: int, *, assignee: str
) -> QueryView:
    """Assign an open or answered query to a person of the subject's site who may answer it
    (REC-7); an empty assignee hands it back to the site as a whole."""
    now = ctx.now()
    with ctx.uow() as uow:
        row = _load(uow, actor, study_id, query_id, Permission.QUERY_ASSIGN)
        apply_query_action(QueryStatus(row.status), QueryAction.ASSIGN, label=f"query {query_id}")
        read = uow.subjects.read_of(uow.subjects.by_id(row.subject_id))
        person = assignee.strip() or None
        if person is not None:
            grants = uow.queries.grants_of(study_id, person)
            answers = any(
                Permission.QUERY_ANSWER in ROLE_PERMISSIONS[Role(role)]
                and (site_id is None or site_id == read.subject.site_id)
                for role, site_id in grants
            )
            if not answers:
                raise ValidationFailed(
                    f"{person} cannot answer queries of site {read.site.code}: assign the query "
                    "to a person of that site who answers queries",
                    {"assignee": "cannot answer this query"},
                )
        old = row.assignee
        row = uow.queries.update(row, {"assignee": person})
        uow.audit.subject(
            actor.label,
            read.subject,
            "assign_query",
            at=now,
            entity="data_query",
            entity_id=str(row.id),
            old={"assignee": old},
            new={"assignee": person or f"site {read.site.code}"},
            protocol_sha256=read.version.sha256,
        )
        uow.commit()
        return _fresh_view(ctx, uow, row, read)


def verify_query(ctx: ServiceContext, actor: Actor, study_id: int, query_id: int) -> QueryView:
    """The monitor accepts the site's answer: the query is verified (REC-7) and no longer
    blocks the database lock."""
    now = ctx.now()
    with ctx.uow() as uow:
        row = _load(uow, actor, study_id, query_id, Permission.QUERY_VERIFY)
        status = QueryStatus(row.status)
        if status is not QueryStatus.ANSWERED:
            code = {
                QueryStatus.OPEN: Refusal.QUERY_OPEN,
                QueryStatus.VERIFIED: Refusal.QUERY_VERIFIED,
                QueryStatus.CLOSED: Refusal.QUERY_CLOSED,
            }[status]
            try:
                apply_query_action(status, QueryAction.VERIFY, label=f"query {query_id}")
            except ActionNotAllowed as exc:
                raise PreconditionFailed(exc.message, code) from None
        row = uow.queries.update(
            row, {"status": VERIFIED, "verified_by": actor.label, "verified_at": now}
        )
        read = uow.subjects.read_of(uow.subjects.by_id(row.subject_id))
        uow.audit.subject(
            actor.label,
            read.subject,
            "verify_query",
            at=now,
            entity="data_query",
            entity_id=str(row.id),
            old={"status": ANSWERED},
            new={"status": VERIFIED, "response": row.response_code},
            protocol_sha256=read.version.sha256,
        )
        uow.commit()
        return _fresh_view(ctx, uow, row, read)
