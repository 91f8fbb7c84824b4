"""The subject casebook (issue 14): every saved form of one subject, by visit, each value
with its history beside it (who entered it, each correction with old and new value, who,
when and why, from the audit trail) and the queries on it. Printable.

Nothing here depends on an arm: the concealed procedure record and the arms' procedure forms
are left out for everyone (the page says so), so two subjects differing only in arm have the
same casebook for a blinded reader (RAND-6).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from trialdesk.domain.permissions import Permission
from trialdesk.services.access import Actor, require
from trialdesk.services.common import loaded_protocol, subject_in_scope
from trialdesk.services.context import ServiceContext
from trialdesk.services.crc_dossier import words
from trialdesk.services.data_queries import STATUSES, _view
from trialdesk.services.forms import concealed_form_codes, typed_values
from trialdesk.store.records import AuditRecord


@dataclass(frozen=True)
class ValueChange:
    at: str
    by: str
    old: str
    new: str
    reason: str | None


@dataclass(frozen=True)
class QueryNote:
    id: int
    status: str
    text: str
    answer: str | None


@dataclass(frozen=True)
class CaseValue:
    code: str
    label: str
    value: str
    unit: str | None
    changes: tuple[ValueChange, ...]
    queries: tuple[QueryNote, ...]


@dataclass(frozen=True)
class CaseForm:
    code: str
    name: str
    seq: int
    entered_by: str
    entered_at: str
    values: tuple[CaseValue, ...]


@dataclass(frozen=True)
class CaseSection:
    title: str
    visit: str  # "" outside visits
    forms: tuple[CaseForm, ...]


@dataclass(frozen=True)
class Casebook:
    subject: str
    site: str
    state: str
    registered_on: str
    randomized_on: str | None
    sections: tuple[CaseSection, ...]
    concealed_note: bool
    """True when the subject has an index procedure record that the casebook leaves out."""


def _changes(entries: list[AuditRecord], field: str) -> tuple[ValueChange, ...]:
    out = []
    for e in entries:
        old = e.old if isinstance(e.old, dict) else {}
        new = e.new if isinstance(e.new, dict) else {}
        if field in old or field in new:
            out.append(
                ValueChange(
                    e.at,
                    e.actor,
                    "—" if old.get(field) is None else str(old.get(field)),
                    "—" if new.get(field) is None else str(new.get(field)),
                    e.reason,
                )
            )
    return tuple(out)


def casebook(ctx: ServiceContext, actor: Actor, study_id: int, number: str) -> Casebook:
    """Every saved form of the subject in journey order: screening, procedure day, each
    visit in protocol order, then other records (adverse events, therapies, exits)."""
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        require(actor, study_id, Permission.SUBJECT_READ, site_id=subject.site_id)
        own = loaded_protocol(ctx, uow, read.version)
        protocol = own.protocol
        concealed = concealed_form_codes(own)
        corrections: dict[str, list[AuditRecord]] = {}
        for entry in uow.audit_reads.for_subject(subject.id, entities=("form",)):
            if entry.action == "correct_data":
                corrections.setdefault(entry.entity_id, []).append(entry)
        queries: dict[tuple[int, str], list[QueryNote]] = {}
        rows, _total = uow.queries.page(
            study_id, statuses=STATUSES, site_ids=None, subject=subject.number, limit=10_000
        )
        for q, s, st in rows:
            if q.subject_id != subject.id:
                continue
            view = _view(q, s, st)
            queries.setdefault((q.form_record_id, q.field), []).append(
                QueryNote(view.id, view.status, view.text, view.answer)
            )
        visit_names = {v.code: v.name for v in protocol.visits}
        order = {v.code: i for i, v in enumerate(protocol.visits)}
        screening = set(protocol.screening.forms)
        anatomy = set(protocol.screening.anatomy_forms)
        grouped: dict[tuple[int, str, str], list[CaseForm]] = {}
        hidden = False
        visit_codes = ["", *(v.visit_code for v in uow.visits.for_subject(subject.id))]
        for visit in dict.fromkeys(visit_codes):
            for record in uow.forms.for_subject(subject.id, visit_code=visit):
                if record.form_code in concealed:
                    hidden = True
                    continue
                loaded = loaded_protocol(ctx, uow, uow.protocols.get(record.protocol_version_id))
                form = loaded.protocol.form(record.form_code)
                values = typed_values(loaded, record.form_code, json.loads(record.data))
                entity = f"{record.form_code}#{record.id}"
                case_form = CaseForm(
                    record.form_code,
                    form.name,
                    record.seq,
                    record.created_by,
                    record.created_at.isoformat(),
                    tuple(
                        CaseValue(
                            f.code,
                            f.label,
                            words(f, values.get(f.code)),
                            f.unit,
                            _changes(corrections.get(entity, []), f.code),
                            tuple(queries.get((record.id, f.code), [])),
                        )
                        for f in form.fields
                    ),
                )
                if visit:
                    key = (2, f"{order.get(visit, 99):03d}", visit)
                elif record.form_code in screening:
                    key = (0, "", "")
                elif record.form_code in anatomy:
                    key = (1, "", "")
                else:
                    key = (3, "", "")
                grouped.setdefault(key, []).append(case_form)
        titles = {0: "Screening", 1: "Procedure day", 3: "Other records"}
        sections = tuple(
            CaseSection(
                titles.get(key[0]) or f"{key[2]} ({visit_names.get(key[2], key[2])})",
                key[2],
                tuple(forms),
            )
            for key, forms in sorted(grouped.items())
        )
        return Casebook(
            subject=subject.number,
            site=read.site.code,
            state=subject.state,
            registered_on=subject.registered_on.isoformat(),
            randomized_on=subject.randomized_on.isoformat() if subject.randomized_on else None,
            sections=sections,
            concealed_note=hidden,
        )
