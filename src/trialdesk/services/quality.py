"""Data-quality rules from the protocol file, run on save and on demand (REC-6), and the
missing-data report per visit and form (REC-10).

A save or correction of a form runs, in the same unit of work, the protocol's ``on_save``
rules that read that form (:func:`check_on_save`); a discrepancy opens a query assigned to the
site (``origin = rule``, raised by ``system``), a finding that comes back reopens its query,
and a finding that is gone marks its open query answered for the monitor to verify. The data
manager may exclude a rule for one record with a reason. Rules never read an arm's procedure
form (checked at protocol load), so neither a query nor its absence tells the arm.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from trialdesk.domain.data_quality import (
    Discrepancy,
    DqRuleSpec,
    FormRecord,
    RuleQuery,
    SubjectData,
    evaluate,
    reconcile,
    rules_to_run,
)
from trialdesk.domain.database_lock import (
    PAST_ECHO,
    Slot,
    SlotStatus,
    expected_slots,
    fill,
    missing_report,
)
from trialdesk.domain.errors import NotFound, ValidationFailed
from trialdesk.domain.forms import FormSpec
from trialdesk.domain.lifecycle import ON_STUDY, SubjectState
from trialdesk.domain.locks import WriteKind
from trialdesk.domain.permissions import Permission
from trialdesk.domain.records import RecordRef
from trialdesk.domain.write_guard import GuardedWrite
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.specs import dq_rule_specs, form_spec, response_specs
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.common import Acting, loaded_protocol, require_text, subject_in_scope
from trialdesk.services.context import ServiceContext
from trialdesk.store.records import FormRecord as StoredForm
from trialdesk.store.records import Site, Subject, SubjectRead
from trialdesk.store.uow import UnitOfWork

SYSTEM = "system"
"""Who raises a rule's query in the audit trail."""

CONCEALED = "index_procedure"


# --- what the rules read ---------------------------------------------------------------------


def _typed_records(
    ctx: ServiceContext, uow: UnitOfWork, subject: Subject
) -> list[tuple[StoredForm, dict[str, object]]]:
    """Every record of the subject with its values typed under the version it was saved with
    (PROT-2); the concealed procedure record is never read."""
    from trialdesk.services.forms import typed_values  # forms imports this module

    parsed: dict[int, LoadedProtocol] = {}
    out: list[tuple[StoredForm, dict[str, object]]] = []
    for record in uow.forms.all_of_subject(subject.id):
        if record.form_code == CONCEALED:
            continue
        loaded = parsed.get(record.protocol_version_id)
        if loaded is None:
            loaded = loaded_protocol(ctx, uow, uow.protocols.get(record.protocol_version_id))
            parsed[record.protocol_version_id] = loaded
        try:
            values = typed_values(loaded, record.form_code, json.loads(record.data))
        except (NotFound, ValidationFailed):
            continue  # a record the rules cannot read is the missing-data report's business
        out.append((record, values))
    return out


def _passed_gates(subject: Subject) -> frozenset[str]:
    state = SubjectState(subject.state)
    randomized = subject.randomized_on is not None
    gates: set[str] = set()
    if randomized or state in PAST_ECHO:
        gates.add("echo")
    if randomized or subject.crc_approved:
        gates.add("committee_review")
    if randomized or subject.anatomy_suitable:
        gates.add("anatomy")
    return frozenset(gates)


def subject_data(
    loaded: LoadedProtocol,
    subject: Subject,
    records: list[tuple[StoredForm, dict[str, object]]],
) -> SubjectData:
    events = {
        "registration": subject.registered_on,
        "consent": subject.consent_date,
        "randomization": subject.randomized_on,
        "unblinding": subject.unblinded_on,
        "exit": subject.exit_date,
    }
    return SubjectData(
        subject=subject.number,
        records=tuple(
            FormRecord(RecordRef(subject.number, r.form_code, r.visit_code, r.seq), values)
            for r, values in records
        ),
        events={k: v for k, v in events.items() if v is not None},
        visit_order=tuple(v.code for v in loaded.protocol.visits),
        passed_gates=_passed_gates(subject),
    )


def _exclusions(uow: UnitOfWork, subject: Subject) -> dict[tuple[str, RecordRef], str]:
    return {
        (e.rule_id, RecordRef(subject.number, e.form_code, e.visit_code, e.seq)): e.reason
        for e in uow.exclusions.active(subject.id)
    }


@dataclass
class Outcome:
    """What one run did to the automatic queries of one subject."""

    found: list[Discrepancy] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    reopened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


def _reconcile(
    ctx: ServiceContext,
    uow: UnitOfWork,
    read: SubjectRead,
    rules: list[DqRuleSpec],
    *,
    now: dt.datetime,
) -> Outcome:
    """Evaluate ``rules`` on one subject and bring its rule queries in line (same unit of
    work as the caller's write)."""
    subject = read.subject
    loaded = loaded_protocol(ctx, uow, read.version)
    records = _typed_records(ctx, uow, subject)
    found = evaluate(
        rules, subject_data(loaded, subject, records), exclusions=_exclusions(uow, subject)
    )
    existing = uow.queries.of_rules(subject.id)
    plan = reconcile(
        found,
        [
            RuleQuery(q.id, q.rule_id or "", q.discrepancy_key or "", q.status == "open")
            for q in existing
        ],
        [r.id for r in rules],
    )
    by_ref = {RecordRef(subject.number, r.form_code, r.visit_code, r.seq): r for r, _ in records}
    by_id = {q.id: q for q in existing}
    outcome = Outcome(found=found)
    for discrepancy in plan.to_open:
        record = by_ref.get(discrepancy.ref)
        if record is None:
            continue  # a finding on a record never saved (e.g. a criterion's form) has no field
        row = uow.queries.add(
            study_id=subject.study_id,
            subject_id=subject.id,
            form_record_id=record.id,
            form_code=record.form_code,
            visit_code=record.visit_code,
            field=discrepancy.field,
            text=discrepancy.query_text(),
            raised_by=SYSTEM,
            raised_at=now,
            origin="rule",
            rule_id=discrepancy.rule,
            discrepancy_key=discrepancy.key,
            severity=discrepancy.severity,
        )
        outcome.opened.append(row.id)
        uow.audit.subject(
            SYSTEM,
            subject,
            "raise_query",
            at=now,
            entity="data_query",
            entity_id=str(row.id),
            new={
                "status": "open",
                "origin": "rule",
                "rule": discrepancy.rule,
                "severity": discrepancy.severity,
                "form": record.form_code,
                "visit": record.visit_code or None,
                "field": discrepancy.field,
                "form_record": record.id,
                "text": row.text,
                "assigned_to": f"site {read.site.code}",
            },
            protocol_sha256=read.version.sha256,
        )
    for query_id in plan.to_reopen:
        query = by_id[query_id]
        uow.queries.update(
            query,
            {
                "status": "open",
                "reopened": query.reopened + 1,
                "answer": None,
                "answered_by": None,
                "answered_at": None,
                "closed_by": None,
                "closed_at": None,
                "verified_by": None,
                "verified_at": None,
                "response_code": None,
                "value_changed": False,
            },
        )
        outcome.reopened.append(query_id)
        uow.audit.subject(
            SYSTEM,
            subject,
            "reopen_query",
            at=now,
            entity="data_query",
            entity_id=str(query_id),
            old={"status": query.status},
            new={"status": "open", "rule": query.rule_id},
            reason="the data-quality rule finds the discrepancy again",
            protocol_sha256=read.version.sha256,
        )
    for query_id in plan.resolved:
        query = by_id[query_id]
        answer = "The discrepancy is no longer found after the data changed."
        uow.queries.update(
            query,
            {
                "status": "answered",
                "answer": answer,
                "answered_by": SYSTEM,
                "answered_at": now,
                "value_changed": True,
            },
        )
        outcome.resolved.append(query_id)
        uow.audit.subject(
            SYSTEM,
            subject,
            "answer_query",
            at=now,
            entity="data_query",
            entity_id=str(query_id),
            old={"status": "open"},
            new={"status": "answered", "answer": answer, "rule": query.rule_id},
            protocol_sha256=read.version.sha256,
        )
    return outcome


def check_on_save(act: Acting, form_code: str) -> Outcome | None:
    """After a form of the subject was saved or corrected: run the subject protocol's
    ``on_save`` rules that read ``form_code`` (REC-6). Nothing runs when none reads it."""
    rules = rules_to_run(dq_rule_specs(act.protocol().protocol), form_code)
    if not rules:
        return None
    return _reconcile(act.ctx, act.uow, act.read, rules, now=act.now)


# --- on demand ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscrepancyView:
    subject: str
    site: str
    rule: str
    severity: str
    form: str
    visit: str | None
    seq: int
    field: str
    text: str
    detail: str
    excluded: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QualityRun:
    """An on-demand run: every discrepancy found (excluded ones marked), and the queries it
    opened, reopened or found resolved."""

    subjects: int
    discrepancies: list[DiscrepancyView]
    opened: list[int]
    reopened: list[int]
    resolved: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subjects": self.subjects,
            "discrepancies": [d.to_dict() for d in self.discrepancies],
            "opened": self.opened,
            "reopened": self.reopened,
            "resolved": self.resolved,
        }


def _discrepancy_view(d: Discrepancy, site: Site) -> DiscrepancyView:
    return DiscrepancyView(
        subject=d.ref.subject,
        site=site.code,
        rule=d.rule,
        severity=d.severity,
        form=d.ref.form,
        visit=d.ref.visit or None,
        seq=d.ref.seq,
        field=d.field,
        text=d.text,
        detail=d.detail,
        excluded=d.excluded,
    )


def _reads_in_scope(
    uow: UnitOfWork, actor: Actor, study_id: int, number: str | None, site: str | None
) -> list[SubjectRead]:
    if number is not None:
        return [subject_in_scope(uow, actor, study_id, number)]
    site_id = None
    if site is not None:
        wanted = uow.sites.by_code(study_id, site)
        if wanted is None:
            raise NotFound(f"site {site} not found")
        require_site_visible(actor, study_id, wanted.id, f"site {site}")
        site_id = wanted.id
    reads, _ = uow.subjects.page(
        study_id,
        site_ids=actor.site_ids(study_id),
        site_code=site,
        state=None,
        offset=0,
        limit=100_000,
    )
    return [r for r in reads if site_id is None or r.subject.site_id == site_id]


def run_quality_rules(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    number: str | None = None,
    site: str | None = None,
) -> QualityRun:
    """Every rule of the protocol (``on_save`` and ``on_demand``) on one subject, one site or
    the whole study, opening, reopening and resolving their queries (REC-6)."""
    require(actor, study_id, Permission.DQ_RUN)
    now = ctx.now()
    with ctx.uow() as uow:
        # A run exists to open queries: under a study-wide lock that refuses them (the hard
        # database lock) the run itself is refused by the one guard, even when it would find
        # nothing; a subject's own lock is met per query by the guard in the audit log.
        uow.guard.check(study_id, None, GuardedWrite(WriteKind.QUERY))
        reads = _reads_in_scope(uow, actor, study_id, number, site)
        views: list[DiscrepancyView] = []
        opened: list[int] = []
        reopened: list[int] = []
        resolved: list[int] = []
        for read in reads:
            require(actor, study_id, Permission.DQ_RUN, site_id=read.subject.site_id)
            rules = rules_to_run(dq_rule_specs(loaded_protocol(ctx, uow, read.version).protocol))
            if not rules:
                continue
            outcome = _reconcile(ctx, uow, read, rules, now=now)
            views += [_discrepancy_view(d, read.site) for d in outcome.found]
            opened += outcome.opened
            reopened += outcome.reopened
            resolved += outcome.resolved
        uow.commit()
        return QualityRun(len(reads), views, opened, reopened, resolved)


def quality_report(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    number: str | None = None,
    site: str | None = None,
) -> list[DiscrepancyView]:
    """What every rule finds now, excluded findings marked, without touching a query."""
    require(actor, study_id, Permission.DQ_READ)
    with ctx.uow(readonly=True) as uow:
        out: list[DiscrepancyView] = []
        for read in _reads_in_scope(uow, actor, study_id, number, site):
            loaded = loaded_protocol(ctx, uow, read.version)
            rules = dq_rule_specs(loaded.protocol)
            if not rules:
                continue
            records = _typed_records(ctx, uow, read.subject)
            data = subject_data(loaded, read.subject, records)
            found = evaluate(rules, data, exclusions=_exclusions(uow, read.subject))
            out += [_discrepancy_view(d, read.site) for d in found]
        return out


@dataclass(frozen=True)
class ExclusionView:
    id: int
    subject: str
    rule: str
    form: str
    visit: str | None
    seq: int
    reason: str
    excluded_by: str
    excluded_at: str
    revoked_by: str | None = None
    revoked_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def exclude_rule(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    rule_id: str,
    form_code: str,
    visit_code: str = "",
    seq: int = 1,
    reason: str,
) -> ExclusionView:
    """Switch a rule off for one saved record, with a reason (REC-6, as REDCap's data quality
    module allows); the rule's open queries on that record are closed with the reason."""
    now = ctx.now()
    with ctx.uow() as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        require(actor, study_id, Permission.DQ_EXCLUDE, site_id=subject.site_id)
        why = require_text(reason, "reason", "a reason for excluding the rule")
        rules = {r.id: r for r in dq_rule_specs(loaded_protocol(ctx, uow, read.version).protocol)}
        if rule_id not in rules:
            known = ", ".join(rules) or "none"
            raise ValidationFailed(
                f"the protocol has no data-quality rule {rule_id!r} (rules: {known})",
                {"rule": "unknown"},
            )
        record = uow.forms.latest(subject.id, form_code, visit_code, seq=seq)
        ref = RecordRef(number, form_code, visit_code, seq)
        if record is None or form_code == CONCEALED:
            raise NotFound(f"{ref.label()} has not been saved")
        if any(
            (e.rule_id, e.form_code, e.visit_code, e.seq) == (rule_id, form_code, visit_code, seq)
            for e in uow.exclusions.active(subject.id)
        ):
            raise ValidationFailed(
                f"rule {rule_id} is already excluded for {ref.label()}", {"rule": "excluded"}
            )
        row = uow.exclusions.add(
            study_id=study_id,
            subject_id=subject.id,
            rule_id=rule_id,
            form_code=form_code,
            visit_code=visit_code,
            seq=seq,
            reason=why,
            by=actor.label,
            at=now,
        )
        uow.audit.subject(
            actor.label,
            subject,
            "exclude_quality_rule",
            at=now,
            entity="dq_exclusion",
            entity_id=str(row.id),
            new={"rule": rule_id, "form": form_code, "visit": visit_code or None, "seq": seq},
            reason=why,
            protocol_sha256=read.version.sha256,
        )
        for query in uow.queries.of_rules(subject.id):
            if (
                query.rule_id == rule_id
                and query.form_record_id == record.id
                and query.status in ("open", "answered")
            ):
                uow.queries.update(
                    query, {"status": "closed", "closed_by": actor.label, "closed_at": now}
                )
                uow.audit.subject(
                    actor.label,
                    subject,
                    "close_query",
                    at=now,
                    entity="data_query",
                    entity_id=str(query.id),
                    old={"status": query.status},
                    new={"status": "closed"},
                    reason=f"rule {rule_id} excluded for this record: {why}",
                    protocol_sha256=read.version.sha256,
                )
        uow.commit()
        return _exclusion_view(row, subject)


def revoke_exclusion(
    ctx: ServiceContext, actor: Actor, study_id: int, *, exclusion_id: int, reason: str
) -> ExclusionView:
    """Bring an excluded rule back for its record; the next run judges it again."""
    now = ctx.now()
    with ctx.uow() as uow:
        row = uow.exclusions.get(study_id, exclusion_id)
        if row is None:
            raise NotFound(f"exclusion {exclusion_id} not found")
        subject = uow.subjects.by_id(row.subject_id)
        require_site_visible(actor, study_id, subject.site_id, f"exclusion {exclusion_id}")
        require(actor, study_id, Permission.DQ_EXCLUDE, site_id=subject.site_id)
        why = require_text(reason, "reason", "a reason for bringing the rule back")
        if row.revoked_at is not None:
            raise ValidationFailed(
                f"exclusion {exclusion_id} was already revoked", {"exclusion": "revoked"}
            )
        row = uow.exclusions.revoke(row, by=actor.label, at=now)
        uow.audit.subject(
            actor.label,
            subject,
            "revoke_quality_exclusion",
            at=now,
            entity="dq_exclusion",
            entity_id=str(row.id),
            old={"excluded": True},
            new={"excluded": False, "rule": row.rule_id},
            reason=why,
        )
        uow.commit()
        return _exclusion_view(row, subject)


def _exclusion_view(row: Any, subject: Subject) -> ExclusionView:
    return ExclusionView(
        id=row.id,
        subject=subject.number,
        rule=row.rule_id,
        form=row.form_code,
        visit=row.visit_code or None,
        seq=row.seq,
        reason=row.reason,
        excluded_by=row.excluded_by,
        excluded_at=row.excluded_at.isoformat(),
        revoked_by=row.revoked_by,
        revoked_at=None if row.revoked_at is None else row.revoked_at.isoformat(),
    )


# --- the missing-data report (REC-10) ------------------------------------------------------


@dataclass(frozen=True)
class MissingRow:
    visit: str | None
    form: str
    expected: int
    complete: int
    incomplete: int
    not_saved: int
    marked_missing: int
    subjects: list[str]
    """Subjects whose record is not saved or incomplete."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _complete(spec: FormSpec, values: dict[str, object]) -> bool:
    return all(values.get(f.code) not in (None, "") for f in spec.fields if f.required)


def missing_data(
    ctx: ServiceContext, actor: Actor, study_id: int, *, site: str | None = None
) -> list[MissingRow]:
    """Per visit and form: the records expected now, complete, incomplete, not saved, or
    marked missing by a "not available" query answer; with the subjects to chase. Arm-neutral:
    the concealed procedure record is expected of every randomized subject alike."""
    require(actor, study_id, Permission.MISSING_DATA_READ)
    with ctx.uow(readonly=True) as uow:
        slots: list[Slot] = []
        for read in _reads_in_scope(uow, actor, study_id, None, site):
            slots += _subject_slots(ctx, uow, read)
        report = missing_report(slots)
        chase: dict[tuple[str, str], list[str]] = {}
        for slot in slots:
            if slot.status in (SlotStatus.NOT_SAVED, SlotStatus.INCOMPLETE):
                key = (slot.ref.visit, slot.ref.form)
                chase.setdefault(key, []).append(slot.ref.subject)
        return [
            MissingRow(
                visit=visit or None,
                form=form,
                expected=c.expected,
                complete=c.complete,
                incomplete=c.incomplete,
                not_saved=c.not_saved,
                marked_missing=c.marked_missing,
                subjects=sorted(set(chase.get((visit, form), []))),
            )
            for (visit, form), c in report.items()
        ]


def _subject_slots(ctx: ServiceContext, uow: UnitOfWork, read: SubjectRead) -> list[Slot]:
    subject = read.subject
    loaded = loaded_protocol(ctx, uow, read.version)
    protocol = loaded.protocol
    state = SubjectState(subject.state)
    randomized = subject.randomized_on is not None
    visits = {v.code: v.forms for v in protocol.visits}
    done = {
        v.visit_code: visits.get(v.visit_code, [])
        for v in uow.visits.for_subject(subject.id)
        if v.status == "done"
    }
    after: list[str] = []
    if randomized and state in ON_STUDY | {SubjectState.COMPLETED}:
        after = [CONCEALED] + (["discharge"] if _has_form(protocol, "discharge") else [])
    slots = expected_slots(
        subject.number,
        read.site.code,
        state=state,
        randomized=randomized,
        screening_forms=protocol.screening.forms,
        anatomy_forms=protocol.screening.anatomy_forms,
        after_randomization=after,
        visits_done=done,
    )
    saved: dict[RecordRef, bool] = {}
    for record in uow.forms.all_of_subject(subject.id):
        ref = RecordRef(subject.number, record.form_code, record.visit_code, record.seq)
        if record.form_code == CONCEALED:
            saved[ref] = True
            continue
        try:
            spec = form_spec(protocol.form(record.form_code))
        except KeyError:
            continue
        saved[ref] = _complete(spec, json.loads(record.data))
    if subject.discharged_on is not None:  # discharge is kept on the subject (PROC-2)
        saved.setdefault(RecordRef(subject.number, "discharge"), True)
    marked: dict[RecordRef, str] = {}
    unobtainable = {r.code for r in response_specs(protocol) if r.marks_missing}
    for query in uow.queries.of_subject(subject.id) if unobtainable else []:
        if query.status in ("answered", "verified") and query.response_code in unobtainable:
            seq = uow.forms.get(query.form_record_id).seq
            ref = RecordRef(subject.number, query.form_code, query.visit_code, seq)
            marked[ref] = f"{query.field}: {query.answer}"
    return fill(slots, saved, marked)


def _has_form(protocol: Any, code: str) -> bool:
    try:
        protocol.form(code)
    except KeyError:
        return False
    return True
