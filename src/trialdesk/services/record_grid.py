"""The record status grid (issue 14; REDCap's record status dashboard, with visit windows):
subjects down, screening and procedure-day forms and scheduled visits across; each cell a
status with the link to its form. Per site or study-wide, filtered by site, subject state and
cell status; paged.

Read in bulk (one query each for subjects, visits, saved-form marks and unresolved queries),
never subject by subject. Nothing here depends on an arm: the concealed procedure record and
the arms' procedure forms are not columns, visit windows run from the randomization date.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import quote

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.lifecycle import ON_STUDY, SubjectState
from trialdesk.domain.permissions import Permission
from trialdesk.domain.schedule import VisitSpec, plan_visits, visit_statuses
from trialdesk.protocol.specs import visit_specs
from trialdesk.services.access import Actor, require
from trialdesk.services.common import loaded_protocol, site_today, version_in_force
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import concealed_form_codes
from trialdesk.store.records import SubjectRead, Visit

CELL_STATUSES = (
    "complete",
    "corrected",
    "query",
    "not_started",
    "due",
    "overdue",
    "missed",
    "upcoming",
)
"""What a cell can say (the grid's status filter); "" is a cell that does not apply."""
CELL_WORDS = {
    "complete": "complete",
    "corrected": "complete, corrected",
    "query": "has an unresolved query",
    "not_started": "not started",
    "due": "due (window open)",
    "overdue": "overdue (window closed)",
    "missed": "missed",
    "upcoming": "window not open yet",
    "": "does not apply",
}
SCREENING_STATES = {
    SubjectState.REGISTERED.value,
    SubjectState.SCREENING.value,
}


@dataclass(frozen=True)
class Column:
    code: str
    title: str
    group: str  # screening | procedure day | follow-up
    visit: str  # "" for forms outside visits


@dataclass(frozen=True)
class Cell:
    status: str
    words: str
    url: str | None
    window: str | None = None


@dataclass(frozen=True)
class GridRow:
    subject: str
    site: str
    state: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Grid:
    columns: tuple[Column, ...]
    rows: list[GridRow]
    total: int
    offset: int
    limit: int
    as_of: str


def _form_cell(number: str, code: str, visit: str, mark: tuple[int, int] | None, query: bool,
               enterable: bool) -> Cell:  # fmt: skip
    subject = quote(number)
    if mark is None:
        if not enterable:
            return Cell("", CELL_WORDS[""], None)
        return Cell("not_started", CELL_WORDS["not_started"], f"/subjects/{subject}/forms/{code}")
    tail = f"?visit={quote(visit)}" if visit else ""
    url = f"/subjects/{subject}/queries/{quote(code)}{tail}"
    status = "query" if query else "corrected" if mark[1] > 1 else "complete"
    return Cell(status, CELL_WORDS[status], url)


def status_grid(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    site: str | None = None,
    state: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Grid:
    """One page of the grid. Without a cell-status filter the subjects are paged in the
    repository; with one, the grid of every subject matching site and state is built from
    the same bulk reads and the matching rows paged here."""
    if state is not None and state not in {s.value for s in SubjectState}:
        raise ValidationFailed(f"unknown state {state!r}", {"state": "unknown"})
    if status is not None and status not in CELL_STATUSES:
        raise ValidationFailed(
            f"unknown cell status {status!r}; one of {', '.join(CELL_STATUSES)}",
            {"status": "unknown"},
        )
    if not 1 <= limit <= 200 or offset < 0:
        raise ValidationFailed("limit must be 1-200 and offset ≥ 0", {"limit": "out of range"})
    require(actor, study_id, Permission.SUBJECT_READ)
    now = ctx.now()
    with ctx.uow(readonly=True) as uow:
        loaded = loaded_protocol(ctx, uow, version_in_force(uow, study_id))
        protocol = loaded.protocol
        concealed = concealed_form_codes(loaded)
        columns: list[Column] = [
            Column(code, protocol.form(code).name, "screening", "")
            for code in protocol.screening.forms
            if code not in concealed
        ]
        columns += [
            Column(code, protocol.form(code).name, "procedure day", "")
            for code in protocol.screening.anatomy_forms
            if code not in concealed
        ]
        columns += [Column(v.code, v.name, "follow-up", v.code) for v in protocol.visits]
        paged = status is None
        reads, total = uow.subjects.page(
            study_id,
            site_ids=actor.site_ids(study_id),
            site_code=site,
            state=state,
            offset=offset if paged else 0,
            limit=limit if paged else 1_000_000,
        )
        ids = [r.subject.id for r in reads]
        marks: dict[tuple[int, str, str], tuple[int, int]] = {
            (m.subject_id, m.form_code, m.visit_code): (m.record_id, m.version)
            for m in uow.forms.marks_for_subjects(ids)
        }
        queried = {(s, f, v) for s, f, v, _st in uow.queries.unresolved_for_subjects(ids)}
        visits = uow.visits.for_subjects([r.subject.id for r in reads if r.subject.randomized_on])
        specs = visit_specs(protocol)
        first_form = {v.code: (v.forms[0] if v.forms else "") for v in protocol.visits}
        rows: list[GridRow] = []
        for read in reads:
            row = _row(read, columns, marks, queried, visits.get(read.subject.id, []), specs,
                       first_form, site_today(read.site, now))  # fmt: skip
            if status is None or any(c.status == status for c in row.cells):
                rows.append(row)
        if not paged:
            total = len(rows)
            rows = rows[offset : offset + limit]
        return Grid(tuple(columns), rows, total, offset, limit, now.date().isoformat())


def _row(
    read: SubjectRead,
    columns: list[Column],
    marks: dict[tuple[int, str, str], tuple[int, int]],
    queried: set[tuple[int, str, str]],
    visits: list[Visit],
    specs: list[VisitSpec],
    first_form: dict[str, str],
    today: dt.date,
) -> GridRow:
    subject = read.subject
    sid = subject.id
    enterable = subject.state in SCREENING_STATES
    statuses = {}
    if subject.randomized_on is not None:
        recorded = {v.visit_code: (v.visit_date, v.status == "missed") for v in visits}
        planned = plan_visits(subject.randomized_on, specs)
        statuses = {s.code: s for s in visit_statuses(planned, recorded, today)}
    on_study = subject.state in {s.value for s in ON_STUDY}
    cells: list[Cell] = []
    for column in columns:
        if column.group != "follow-up":
            cells.append(
                _form_cell(
                    subject.number,
                    column.code,
                    "",
                    marks.get((sid, column.code, "")),
                    (sid, column.code, "") in queried,
                    enterable and column.group == "screening",
                )
            )
            continue
        found = statuses.get(column.code)
        if found is None:
            cells.append(Cell("", CELL_WORDS[""], None))
            continue
        window = (
            f"{found.planned.window_start.isoformat()} to {found.planned.window_end.isoformat()}"
        )
        number = quote(subject.number)
        state = found.state.value
        if state == "done":
            form = first_form.get(column.code, "")
            query = any((sid, f, column.code) in queried for f in [form])
            mark = marks.get((sid, form, column.code))
            cell = _form_cell(subject.number, form, column.code, mark, query, False)
            cells.append(Cell(cell.status or "complete", cell.words, cell.url, window))
        elif state in ("due", "overdue", "upcoming") and not on_study:
            cells.append(Cell("", CELL_WORDS[""], None, window))  # exited: nothing is due
        elif state in ("due", "overdue"):
            url = f"/subjects/{number}/visits/{quote(column.code)}"
            cells.append(Cell(state, CELL_WORDS[state], url, window))
        else:
            cells.append(Cell(state, CELL_WORDS[state], None, window))
    return GridRow(subject.number, read.site.code, subject.state, tuple(cells))
