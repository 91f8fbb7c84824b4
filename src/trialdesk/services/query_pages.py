"""Data queries as the pages show them (issue 14, DATA-2): the study's query list filtered by
status, site, age and subject and paged in the repository, and one saved form instance (a
form at a visit) with each field's value and the whole thread of each of its queries, read
from the audit trail (raised, answered with any correction, closed, reopened).

What a page offers (raise, answer, correct, close, reopen) is decided here from the same
permission table the actions check. The concealed procedure forms are refused the same way
whatever the arm (RAND-6).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from trialdesk.domain.errors import NotFound, ValidationFailed
from trialdesk.domain.permissions import Permission
from trialdesk.protocol.specs import response_specs
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.common import loaded_protocol, subject_in_scope
from trialdesk.services.context import ServiceContext
from trialdesk.services.crc_dossier import words
from trialdesk.services.data_queries import (
    ANSWERED,
    CLOSED,
    OPEN,
    STATUSES,
    VERIFIED,
    QueryView,
    _view,
)
from trialdesk.services.forms import form_record_protocol, refuse_concealed, typed_values
from trialdesk.store.records import AuditRecord

UNRESOLVED = "unresolved"
ALL = "all"
STATUS_FILTERS = (UNRESOLVED, OPEN, ANSWERED, VERIFIED, CLOSED, ALL)
"""The list's status choices: not yet closed (the default), one status, or every query."""
PAGE_SIZES = (25, 50, 100)


@dataclass(frozen=True)
class QueryLine:
    query: QueryView
    age_days: int
    """Whole days since the query was raised (the list's age column and filter)."""


@dataclass(frozen=True)
class QueryPage:
    items: list[QueryLine]
    total: int
    offset: int
    limit: int


def _age(now: dt.datetime, raised_at: str) -> int:
    return max(0, (now - dt.datetime.fromisoformat(raised_at)).days)


def query_list(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    status: str = UNRESOLVED,
    site: str | None = None,
    older_than_days: int | None = None,
    subject: str | None = None,
    newest_first: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> QueryPage:
    """One page of the queries the actor may see (own sites only for site-scoped roles,
    ACC-1), filtered and counted in the repository."""
    if status not in STATUS_FILTERS:
        raise ValidationFailed(
            f"unknown query status {status!r}; one of {', '.join(STATUS_FILTERS)}",
            {"status": "unknown"},
        )
    if older_than_days is not None and not 0 <= older_than_days <= 3650:
        raise ValidationFailed("age must be 0-3650 days", {"older_than": "out of range"})
    if not 1 <= limit <= 200 or offset < 0:
        raise ValidationFailed("limit must be 1-200 and offset ≥ 0", {"limit": "out of range"})
    require(actor, study_id, Permission.QUERY_READ)
    statuses = {UNRESOLVED: (OPEN, ANSWERED), ALL: STATUSES}.get(status, (status,))
    now = ctx.now()
    with ctx.uow(readonly=True) as uow:
        if site:
            wanted = uow.sites.by_code(study_id, site)
            if wanted is None:
                raise NotFound(f"site {site} not found")
            require_site_visible(actor, study_id, wanted.id, f"site {site}")
        rows, total = uow.queries.page(
            study_id,
            statuses=statuses,
            site_ids=actor.site_ids(study_id),
            site_code=site or None,
            raised_before=None
            if older_than_days is None
            else now - dt.timedelta(days=older_than_days),
            subject=subject or None,
            newest_first=newest_first,
            offset=offset,
            limit=limit,
        )
        items = [QueryLine(view := _view(q, s, st), _age(now, view.raised_at)) for q, s, st in rows]
        return QueryPage(items=items, total=total, offset=offset, limit=limit)


@dataclass(frozen=True)
class ThreadStep:
    """One step of a query's life: raised, answered, closed or reopened, by whom, when."""

    step: str
    by: str
    at: str
    text: str | None
    change: str | None = None


@dataclass(frozen=True)
class QueryThread:
    query: QueryView
    age_days: int
    steps: tuple[ThreadStep, ...]


@dataclass(frozen=True)
class FieldLine:
    code: str
    label: str
    value: str
    unit: str | None
    threads: tuple[QueryThread, ...]

    @property
    def in_progress(self) -> bool:
        return any(t.query.status not in (CLOSED, VERIFIED) for t in self.threads)


@dataclass(frozen=True)
class FormQueries:
    """A saved form instance with the queries on its fields and what the caller may do."""

    subject: str
    site: str
    form: str
    form_name: str
    visit: str | None
    visit_name: str | None
    fields: tuple[FieldLine, ...]
    may_raise: bool
    may_answer: bool
    may_correct: bool
    may_close: bool
    may_reopen: bool
    may_verify: bool = False
    may_assign: bool = False
    """Assign an open or answered query to a person of the site (REC-7, issue 15)."""
    responses: tuple[tuple[str, str], ...] = ()
    """The protocol's coded query responses (code, label); empty when answers are free text."""


_STEPS = {
    "raise_query": "raised",
    "answer_query": "answered",
    "close_query": "closed",
    "reopen_query": "reopened",
    "verify_query": "verified",
    "assign_query": "assigned",
}


def _step(entry: AuditRecord) -> ThreadStep:
    new = entry.new if isinstance(entry.new, dict) else {}
    step = _STEPS.get(entry.action, entry.action)
    text: str | None
    change = None
    if step == "raised":
        text = new.get("text")
    elif step == "answered":
        text = new.get("answer")
        correction = new.get("correction")
        if isinstance(correction, dict):
            change = (
                f"value changed from “{correction.get('old')}” to “{correction.get('new')}”: "
                f"{correction.get('reason')}"
            )
    else:
        text = entry.reason
    return ThreadStep(step, entry.actor, entry.at, text, change)


def form_queries(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    form_code: str,
    visit_code: str = "",
) -> FormQueries:
    """The latest saved copy of ``form_code`` (at ``visit_code``) with each field's value
    and queries; 'not found' when it was never saved, or when the subject is at a site the
    actor cannot see (before any permission is checked: ACC-1, existence does not leak)."""
    now = ctx.now()
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject, site = read.subject, read.site
        require(actor, study_id, Permission.QUERY_READ, site_id=subject.site_id)
        refuse_concealed(loaded_protocol(ctx, uow, read.version), form_code, "a data query")
        record = uow.forms.latest(subject.id, form_code, visit_code)
        if record is None:
            where = f" at {visit_code}" if visit_code else ""
            raise NotFound(f"form {form_code}{where} of {number} has not been saved")
        loaded = form_record_protocol(ctx, uow, record)
        form = loaded.protocol.form(form_code)
        values = typed_values(loaded, form_code, json.loads(record.data))
        rows, _total = uow.queries.page(
            study_id, statuses=STATUSES, site_ids=None, form_record_id=record.id, limit=1000
        )
        steps: dict[str, list[ThreadStep]] = {}
        for entry in uow.audit_reads.for_subject(subject.id, entities=("data_query",)):
            steps.setdefault(entry.entity_id, []).append(_step(entry))
        threads: dict[str, list[QueryThread]] = {}
        for q, s, st in rows:
            view = _view(q, s, st)
            threads.setdefault(q.field, []).append(
                QueryThread(view, _age(now, view.raised_at), tuple(steps.get(str(q.id), [])))
            )
        visit_name = None
        if visit_code:
            visit_name = next(
                (v.name for v in loaded.protocol.visits if v.code == visit_code), visit_code
            )
        at = subject.site_id
        return FormQueries(
            subject=subject.number,
            site=site.code,
            form=form_code,
            form_name=form.name,
            visit=visit_code or None,
            visit_name=visit_name,
            fields=tuple(
                FieldLine(
                    f.code,
                    f.label,
                    words(f, values.get(f.code)),
                    f.unit,
                    tuple(threads.get(f.code, [])),
                )
                for f in form.fields
            ),
            may_raise=actor.may(study_id, Permission.QUERY_RAISE, at),
            may_answer=actor.may(study_id, Permission.QUERY_ANSWER, at),
            may_correct=actor.may(study_id, Permission.FORM_CORRECT, at),
            may_close=actor.may(study_id, Permission.QUERY_CLOSE, at),
            may_reopen=actor.may(study_id, Permission.QUERY_REOPEN, at),
            may_verify=actor.may(study_id, Permission.QUERY_VERIFY, at),
            may_assign=actor.may(study_id, Permission.QUERY_ASSIGN, at),
            responses=tuple(
                (r.code, r.label)
                for r in response_specs(loaded_protocol(ctx, uow, read.version).protocol)
            ),
        )
