"""The CRC case dossier (issue 14, ELIG-3, THER-2): everything the committee's decision rests
on, on one page: the core-lab echo, NYHA, KCCQ, walk test and every other screening form with
its values, each criterion's outcome and the values that decided it, the investigator's signed
confirmations, the rounds of "more information requested" with the site's replies, and for a
therapy case the therapy and the follow-up so far.

Nothing here reads or returns an arm: the concealed procedure form and the arms' procedure
forms are never read, only the screening forms and the scheduled visits' forms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from trialdesk.domain.eligibility import CriterionOutcome, evaluate
from trialdesk.domain.errors import NotFound, PreconditionFailed, Refusal
from trialdesk.domain.permissions import Permission
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.models import Form, FormField
from trialdesk.protocol.specs import criterion_specs
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.common import loaded_protocol, require_text
from trialdesk.services.context import ServiceContext
from trialdesk.services.crc import CaseView, case_view
from trialdesk.services.forms import concealed_form_codes, subject_form_values, typed_values
from trialdesk.store.records import CaseNote, FormRecord, Subject
from trialdesk.store.uow import UnitOfWork

MISSING = "—"
"""How a value not entered is shown (never an empty cell that reads as 'zero' or 'no')."""


@dataclass(frozen=True)
class ShownValue:
    """One field of a saved form as a reader sees it: label, value in words, unit."""

    code: str
    label: str
    value: str
    unit: str | None = None


@dataclass(frozen=True)
class ShownForm:
    code: str
    name: str
    visit: str | None
    saved_at: str | None
    saved_by: str | None
    values: tuple[ShownValue, ...]


@dataclass(frozen=True)
class CriterionLine:
    """A criterion with its outcome and what decided it (form.field = value), or the
    investigator's signed confirmation for a criterion without a rule."""

    id: str
    kind: str
    text: str
    outcome: str  # met | not_met | awaiting_data | awaiting_confirmation
    evidence: tuple[str, ...]
    confirmed_by: str | None = None
    confirmed_at: str | None = None
    meaning: str | None = None


@dataclass(frozen=True)
class Round:
    kind: str  # request | reply
    text: str
    by: str
    name: str
    at: str


@dataclass(frozen=True)
class VisitLine:
    code: str
    name: str
    status: str  # done | missed
    date: str | None
    window: str


@dataclass(frozen=True)
class Dossier:
    case: CaseView
    forms: tuple[ShownForm, ...]
    criteria: tuple[CriterionLine, ...]
    rounds: tuple[Round, ...]
    visits: tuple[VisitLine, ...]
    follow_up: tuple[ShownForm, ...]
    randomized_on: str | None
    may_decide: bool = False
    """The caller may sign a decision now (CRC role, case not decided): what the page offers."""

    @property
    def waiting_for_site(self) -> bool:
        return self.case.status == "info_requested"


def words(field: FormField, value: object) -> str:
    if value is None or value == "":
        return MISSING
    if field.choices:
        labels = {c.code: c.label for c in field.choices}
        if isinstance(value, list):
            return ", ".join(labels.get(str(v), str(v)) for v in value)
        return labels.get(str(value), str(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _shown(form: Form, record: FormRecord | None, values: dict[str, object]) -> ShownForm:
    return ShownForm(
        code=form.code,
        name=form.name,
        visit=(record.visit_code or None) if record else None,
        saved_at=record.updated_at.isoformat() if record else None,
        saved_by=record.created_by if record else None,
        values=tuple(
            ShownValue(f.code, f.label, words(f, values.get(f.code)), f.unit) for f in form.fields
        ),
    )


def _note(note: CaseNote) -> Round:
    return Round(
        note.kind, note.text, note.written_by, note.written_name, note.written_at.isoformat()
    )


def _criteria(
    uow: UnitOfWork, loaded: LoadedProtocol, subject: Subject, values: dict[str, dict[str, object]]
) -> tuple[CriterionLine, ...]:
    confirmations = uow.confirmations.for_subject(subject.id)
    result = evaluate(criterion_specs(loaded.protocol), values, confirmations, gate=None)
    lines = []
    for outcome in result.outcomes:
        signed = None if outcome.fields else uow.confirmations.get(subject.id, outcome.id)
        lines.append(
            CriterionLine(
                id=outcome.id,
                kind=outcome.kind,
                text=outcome.text,
                outcome=outcome.status.value,
                evidence=_evidence(outcome, values),
                confirmed_by=signed.signed_name if signed else None,
                confirmed_at=signed.signed_at.isoformat() if signed else None,
                meaning=signed.meaning if signed else None,
            )
        )
    return tuple(lines)


def _evidence(outcome: CriterionOutcome, values: dict[str, dict[str, object]]) -> tuple[str, ...]:
    shown = []
    for name in outcome.fields:
        form, _, field = name.partition(".")
        value = values.get(form, {}).get(field)
        shown.append(f"{name} = {MISSING if value is None else value}")
    return tuple(shown)


def case_dossier(ctx: ServiceContext, actor: Actor, study_id: int, case_id: int) -> Dossier:
    """The committee's (and the study manager's) view of one case, open or decided."""
    require(actor, study_id, Permission.CRC_QUEUE_READ)
    with ctx.uow(readonly=True) as uow:
        case = uow.crc.case(study_id, case_id)
        if case is None:
            raise NotFound(f"CRC case {case_id} not found")
        detail = uow.crc.detail(case)
        subject = detail.subject
        require_site_visible(actor, study_id, subject.site_id, f"CRC case {case_id}")
        loaded = loaded_protocol(ctx, uow, uow.protocols.get(subject.protocol_version_id))
        protocol = loaded.protocol
        concealed = concealed_form_codes(loaded)
        values = subject_form_values(uow, ctx, subject.id)
        screening = tuple(
            _shown(
                protocol.form(code),
                uow.forms.latest(subject.id, code, ""),
                values.get(code, {}),
            )
            for code in protocol.screening.forms
            if code not in concealed
        )
        visits: list[VisitLine] = []
        follow_up: list[ShownForm] = []
        if case.kind == "therapy":
            for visit in uow.visits.for_subject(subject.id):
                spec = protocol.visit(visit.visit_code)
                visits.append(
                    VisitLine(
                        visit.visit_code,
                        spec.name,
                        visit.status,
                        visit.visit_date.isoformat() if visit.visit_date else None,
                        f"{visit.window_start.isoformat()} to {visit.window_end.isoformat()}",
                    )
                )
                for record in uow.forms.for_subject(subject.id, visit_code=visit.visit_code):
                    if record.form_code in concealed:
                        continue
                    form_loaded = loaded_protocol(
                        ctx, uow, uow.protocols.get(record.protocol_version_id)
                    )
                    typed = typed_values(form_loaded, record.form_code, json.loads(record.data))
                    follow_up.append(
                        _shown(form_loaded.protocol.form(record.form_code), record, typed)
                    )
        permission = (
            Permission.CRC_ELIGIBILITY_DECIDE
            if case.kind == "eligibility"
            else Permission.CRC_THERAPY_DECIDE
        )
        return Dossier(
            may_decide=case.status != "decided" and actor.may(study_id, permission),
            case=case_view(detail),
            forms=screening,
            criteria=_criteria(uow, loaded, subject, values),
            rounds=tuple(_note(n) for n in uow.crc.notes(case.id)),
            visits=tuple(visits),
            follow_up=tuple(follow_up),
            randomized_on=subject.randomized_on.isoformat() if subject.randomized_on else None,
        )


def reply_to_crc(
    ctx: ServiceContext, actor: Actor, study_id: int, case_id: int, *, text: str
) -> CaseView:
    """The site answers the committee's request for more information: the reply is kept as a
    round of the case and the case is open for the committee again. Only a case waiting for
    the site (``info_requested``) takes a reply."""
    require(actor, study_id, Permission.CRC_CASE_REPLY)
    now = ctx.now()
    with ctx.uow() as uow:
        case = uow.crc.case(study_id, case_id, lock=True)
        if case is None:
            raise NotFound(f"CRC case {case_id} not found")
        subject = uow.subjects.by_id(case.subject_id)
        require_site_visible(actor, study_id, subject.site_id, f"CRC case {case_id}")
        require(actor, study_id, Permission.CRC_CASE_REPLY, site_id=subject.site_id)
        if case.status != "info_requested":
            raise PreconditionFailed(
                f"CRC case {case_id} does not wait for a reply (it is {case.status}); "
                "the site replies only when the committee asked for more information",
                Refusal.CASE_NOT_WAITING,
            )
        reply = require_text(text, "text", "the reply to the committee")
        uow.crc.add_note(
            case_id=case.id,
            kind="reply",
            text=reply,
            written_by=actor.username,
            written_name=actor.full_name,
            at=now,
        )
        case = uow.crc.decide(case, {"status": "open"})
        uow.audit.subject(
            actor.label,
            subject,
            "crc_case_reply",
            at=now,
            entity="crc_case",
            entity_id=str(case.id),
            old={"status": "info_requested"},
            new={"status": "open", "reply": reply},
        )
        uow.commit()
        return case_view(uow.crc.detail(case))


@dataclass(frozen=True)
class WaitingCase:
    """A case the committee asked more information on, as the site sees it: the subject,
    what was asked (every round) and when; never the committee's other deliberation."""

    case: CaseView
    rounds: tuple[Round, ...]


def cases_waiting_for_site(ctx: ServiceContext, actor: Actor, study_id: int) -> list[WaitingCase]:
    """Cases of the actor's sites waiting for the site's reply, oldest first."""
    require(actor, study_id, Permission.CRC_CASE_REPLY)
    visible = actor.site_ids(study_id)
    with ctx.uow(readonly=True) as uow:
        return [
            WaitingCase(case_view(detail), tuple(_note(n) for n in uow.crc.notes(detail.case.id)))
            for detail in uow.crc.pending(study_id, ("info_requested",))
            if visible is None or detail.subject.site_id in visible
        ]
