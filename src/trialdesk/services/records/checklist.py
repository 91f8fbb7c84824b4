"""The database-lock checklist (REC-5): everything in the way of the hard lock, as a report
before it is a refusal. :func:`blockers_in` is what :func:`lock_database` checks; the
report lists each blocker (site, subject, what, why)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.database_lock import (
    Blocker,
    CasebookFacts,
    QueryFacts,
    Slot,
    SlotStatus,
    casebook_needs_signature,
    expected_slots,
    fill,
    lock_blockers,
)
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.permissions import Permission
from trialdesk.domain.queries import UNRESOLVED, QueryStatus
from trialdesk.domain.records import RecordRef
from trialdesk.domain.sdv import SdvState
from trialdesk.services.access import Actor, require
from trialdesk.services.common import loaded_protocol, site_today
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import CONCEALED_PROCEDURE_FORM
from trialdesk.services.records.review import (
    _ALL_STATES,
    _site_ordinals,
    record_sdv_states,
    signature_views,
)
from trialdesk.store.ports import UnitOfWork


@dataclass(frozen=True)
class BlockerView:
    kind: str
    site: str
    subject: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChecklistView:
    """The lock checklist: ``ready`` when nothing blocks the hard lock."""

    ready: bool
    database_lock: str | None
    blockers: list[BlockerView]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def blockers_in(
    ctx: ServiceContext, uow: UnitOfWork, study_id: int, *, site: str | None
) -> list[Blocker]:
    """Open or unverified queries, expected forms not saved, unsigned or invalidated
    casebooks, SDV pending or cleared where the protocol requires it, subjects still on
    study: read in the caller's unit of work (the lock service's, under the study lock)."""
    now = ctx.now()
    pairs = uow.subjects.on_study(study_id, _ALL_STATES, site_ids=None, site_code=site)
    queries = [
        QueryFacts(
            id=q.id,
            subject=s.number,
            site=st.code,
            ref=RecordRef(s.number, q.form_code, q.visit_code),
            field=q.field,
            status=QueryStatus(q.status),
            raised_on=q.raised_at.date(),
        )
        for q, s, st in uow.queries.listing(
            study_id, statuses=[x.value for x in UNRESOLVED], site_id=None, site_ids=None
        )
        if site is None or st.code == site
    ]
    ordinals = _site_ordinals(uow, study_id)
    marks = uow.holds.sdv_marks(study_id=study_id)
    signatures = uow.holds.signatures(study_id=study_id)
    slots: list[Slot] = []
    casebooks: list[CasebookFacts] = []
    sdv: list[tuple[str, SdvState]] = []
    visits = uow.visits.for_subjects([s.id for s, _ in pairs])
    for subject, site_row in pairs:
        loaded = loaded_protocol(ctx, uow, uow.protocols.get(subject.protocol_version_id))
        protocol = loaded.protocol
        records = uow.holds.subject_forms(subject.id)
        visit_forms = {v.code: v.forms for v in protocol.visits}
        done = {
            v.visit_code: visit_forms.get(v.visit_code, [])
            for v in visits.get(subject.id, [])
            if v.status == "done"
        }
        randomized = subject.randomized_on is not None
        expected = expected_slots(
            subject.number,
            site_row.code,
            state=SubjectState(subject.state),
            randomized=randomized,
            screening_forms=protocol.screening.forms,
            anatomy_forms=protocol.screening.anatomy_forms,
            after_randomization=[],
            visits_done=done,
        )
        saved = {
            RecordRef(subject.number, r.form_code, r.visit_code, r.seq): True
            for r in records
            if r.form_code != CONCEALED_PROCEDURE_FORM
        }
        slots += [s for s in fill(expected, saved, {}) if s.status is not SlotStatus.COMPLETE]
        scope = protocol.sign_off.casebooks_for.value if protocol.sign_off else "randomized"
        needs = casebook_needs_signature(
            randomized=randomized, consented=subject.consent_date is not None, scope=scope
        )
        books = [
            v
            for v in signature_views(
                subject.number, [g for g in signatures if g.subject_id == subject.id], records
            )
            if v.level == "casebook"
        ]
        newest = books[-1] if books else None
        casebooks.append(
            CasebookFacts(
                subject=subject.number,
                site=site_row.code,
                state=SubjectState(subject.state),
                needs_signature=needs,
                signed=newest is not None,
                signature_valid=newest is not None and newest.valid,
                invalid_because=tuple(newest.invalid_because) if newest else (),
            )
        )
        own = [m for m in marks if m.subject_id == subject.id]
        for _record, state, _row in record_sdv_states(
            loaded, subject, records, own, ordinals.get(subject.id, 1)
        ):
            sdv.append((site_row.code, state))
    today = site_today(pairs[0][1], now) if pairs else now.date()
    return lock_blockers(queries=queries, slots=slots, casebooks=casebooks, sdv=sdv, today=today)


def lock_checklist(
    ctx: ServiceContext, actor: Actor, *, study_id: int, site: str | None = None
) -> ChecklistView:
    """The report of what blocks the hard database lock (REC-5)."""
    from trialdesk.services.records.locks import database_lock

    require(actor, study_id, Permission.LOCK_CHECKLIST_READ)
    with ctx.uow(readonly=True) as uow:
        found = blockers_in(ctx, uow, study_id, site=site)
        row = database_lock(uow, study_id)
        return ChecklistView(
            ready=not found,
            database_lock=row.kind if row else None,
            blockers=[BlockerView(b.kind.value, b.site, b.subject, b.text) for b in found],
        )
