"""Test doubles shared by the suites: a clock the test moves by hand, and a unit of work with
in-memory repositories for fast service tests (tests/unit).

:class:`FakeUnitOfWork` implements :class:`trialdesk.store.ports.UnitOfWork`; mypy checks it
against the same protocols as the SQL one (see ``_typed`` at the end), so a repository method
added to the protocol must be added here too. Like the real one it keeps nothing unless
``commit()`` is called: it works on a copy of the store's tables and swaps them in on commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

from sqlalchemy.orm import Session

from trialdesk.domain.audit import canonical_json, utc_iso
from trialdesk.domain.errors import Conflict
from trialdesk.reports.enrolment import MonthRow, SiteFacts, month_rows
from trialdesk.store.audit import PendingEntry, VerifyResult
from trialdesk.store.audit_log import AuditLog
from trialdesk.store.holds import RecordLock, SdvMarkRecord, SignatureRecord, UnblindingChange
from trialdesk.store.lock_guard import LockGuard
from trialdesk.store.ports import (
    AllocationRepository,
    AuditEntryRepository,
    AuditReadRepository,
    AuditTrail,
    ConfirmationRepository,
    ConsentRepository,
    CrcRepository,
    DatabaseMaintenance,
    DataQueryRepository,
    FormRepository,
    HoldRepository,
    ListRepository,
    MailDeliveryRepository,
    MailOutboxRepository,
    NotificationRepository,
    OdmHistoryRepository,
    ProtocolRepository,
    QualityExclusionRepository,
    RandomizationRepository,
    ReportingRepository,
    RequestRepository,
    SiteRepository,
    StudyRecordsRepository,
    StudyRepository,
    SubjectRepository,
    SubmissionReader,
    SupplyRepository,
    TrialUnblindingRepository,
    UnitOfWork,
    UnitOfWorkFactory,
    UserRepository,
    VisitRepository,
)
from trialdesk.store.records import (
    Allocation,
    AllocationList,
    AllocationSlot,
    AuditEntry,
    AuditQuery,
    AuditRecord,
    CapCounts,
    CaseDetail,
    CaseNote,
    Confirmation,
    Consent,
    CrcCase,
    DataQuery,
    Device,
    DeviceLot,
    DeviceShipment,
    DeviceUse,
    DqExclusion,
    FormMark,
    FormRecord,
    HistoryVersion,
    InErrorRandomization,
    Mail,
    Notification,
    NotificationRead,
    ProtocolVersion,
    Randomization,
    ScreeningLogLine,
    Site,
    StratumCursor,
    Study,
    StudyHead,
    StudyHistory,
    Subject,
    SubjectRead,
    TakenSlot,
    Therapy,
    TokenRead,
    TrialUnblinding,
    TrialUnblindingEvent,
    User,
    Visit,
    Withdrawal,
)
from trialdesk.store.submission import (
    StoredAllocation,
    StoredForm,
    StoredSubject,
    StoredTherapy,
    StoredVersion,
    StoredVisit,
    StudySubmission,
)


class FakeClock:
    """Returns a fixed UTC moment until the test moves it."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def set_day(self, day: dt.date | str, hour: int = 12) -> None:
        if isinstance(day, str):
            day = dt.date.fromisoformat(day)
        self.now = dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)

    def advance(self, **kwargs: float) -> None:
        self.now += dt.timedelta(**kwargs)


@dataclass
class Tables:
    """The in-memory database: records by id (records are frozen, so a copy of each dict is
    a snapshot)."""

    studies: dict[int, Study] = field(default_factory=dict)
    sites: dict[int, Site] = field(default_factory=dict)
    next_subject_seq: dict[int, int] = field(default_factory=dict)
    versions: dict[int, ProtocolVersion] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    subjects: dict[int, Subject] = field(default_factory=dict)
    allocations: dict[int, Allocation] = field(default_factory=dict)  # by subject id
    visits: dict[int, Visit] = field(default_factory=dict)
    forms: dict[int, FormRecord] = field(default_factory=dict)
    confirmations: dict[int, Confirmation] = field(default_factory=dict)
    cases: dict[int, CrcCase] = field(default_factory=dict)
    therapies: dict[int, Therapy] = field(default_factory=dict)
    case_notes: dict[int, CaseNote] = field(default_factory=dict)
    queries: dict[int, DataQuery] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    mail_addresses: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    """Addresses of a role's holders by (study, role); the tests set them."""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    audit: list[PendingEntry] = field(default_factory=list)
    last_id: int = 0
    # allocation (lane x13a)
    lists: dict[int, AllocationList] = field(default_factory=dict)
    cursors: dict[int, StratumCursor] = field(default_factory=dict)
    slots: dict[int, AllocationSlot] = field(default_factory=dict)
    randomizations: dict[int, Randomization] = field(default_factory=dict)
    next_randomization_seq: dict[int, int] = field(default_factory=dict)
    unblindings: dict[int, TrialUnblinding] = field(default_factory=dict)
    tokens: dict[tuple[str, str], TokenRead] = field(default_factory=dict)
    """Sessions by (token hash, kind); the tests set them."""
    row_locks: list[tuple[str, int, bool]] = field(default_factory=list)
    """Locks taken, in order: ("study", id, shared) and ("cursor", id, False)."""
    # supply (lane x13b)
    lots: dict[int, DeviceLot] = field(default_factory=dict)
    devices: dict[int, Device] = field(default_factory=dict)
    shipments: dict[int, DeviceShipment] = field(default_factory=dict)
    device_events: list[dict[str, Any]] = field(default_factory=list)
    users: dict[int, User] = field(default_factory=dict)
    # issue 15 (x15b)
    consents: dict[int, Consent] = field(default_factory=dict)
    withdrawals: dict[int, Withdrawal] = field(default_factory=dict)
    exclusions: dict[int, DqExclusion] = field(default_factory=dict)
    grants: dict[tuple[int, str], list[tuple[str, int | None]]] = field(default_factory=dict)
    """Role grants by (study, username); the tests set them."""
    # issue 15 (lane x15a): records that hold
    locks: dict[int, RecordLock] = field(default_factory=dict)
    sdv_marks: dict[int, SdvMarkRecord] = field(default_factory=dict)
    signatures: dict[int, SignatureRecord] = field(default_factory=dict)
    unblinding_changes: dict[int, UnblindingChange] = field(default_factory=dict)

    def copy(self) -> Tables:
        copied = Tables(**{f.name: getattr(self, f.name) for f in fields(self)})
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict | list):
                setattr(copied, f.name, value.copy())
        return copied

    def new_id(self) -> int:
        self.last_id += 1
        return self.last_id


class FakeStore:
    """What the fake units of work share: the committed tables."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.commits = 0
        self.parallel_writers: int | None = None
        """What ``uow.randomizations.parallel_writers()`` answers: None as on SQLite (writers
        serialized), a number as on PostgreSQL (its connection limit)."""


class _Repo:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def t(self) -> Tables:
        return self._uow.tables


class FakeStudies(_Repo):
    def get(self, study_id: int) -> Study | None:
        return self.t.studies.get(study_id)


class FakeSites(_Repo):
    def get(self, site_id: int) -> Site:
        return self.t.sites[site_id]

    def by_code(self, study_id: int, code: str) -> Site | None:
        return next(
            (s for s in self.t.sites.values() if s.study_id == study_id and s.code == code), None
        )

    def take_subject_number(self, site_id: int) -> int:
        seq = self.t.next_subject_seq.get(site_id, 1)
        self.t.next_subject_seq[site_id] = seq + 1
        return seq

    def of_study(self, study_id: int) -> list[Site]:
        return sorted((s for s in self.t.sites.values() if s.study_id == study_id), key=_code)


class FakeProtocols(_Repo):
    def get(self, version_id: int) -> ProtocolVersion:
        return self.t.versions[version_id]

    def text(self, version_id: int) -> str:
        return self.t.texts[version_id]

    def newest(self, study_id: int) -> ProtocolVersion | None:
        found = [v for v in self.t.versions.values() if v.study_id == study_id and v.current]
        return max(found, key=lambda v: v.id, default=None)

    def in_force(self, study_id: int, on: dt.date) -> ProtocolVersion | None:
        found = [
            v
            for v in self.t.versions.values()
            if v.study_id == study_id
            and v.status == "signed"
            and (v.effective_from is None or v.effective_from <= on)
        ]
        return max(found, key=lambda v: v.id, default=None)


class FakeSubjects(_Repo):
    def get(self, study_id: int, number: str) -> Subject | None:
        return next(
            (s for s in self.t.subjects.values() if s.study_id == study_id and s.number == number),
            None,
        )

    def by_id(self, subject_id: int) -> Subject:
        return self.t.subjects[subject_id]

    def find_any_site(self, study_id: int, number: str) -> Subject | None:
        return self.get(study_id, number)

    def read_of(self, subject: Subject) -> SubjectRead:
        subject = self.t.subjects[subject.id]
        study = self.t.studies[subject.study_id]
        return SubjectRead(
            subject=subject,
            site=self.t.sites[subject.site_id],
            version=self.t.versions[subject.protocol_version_id],
            allocation=self.t.allocations.get(subject.id),
            trial_unblinded=study.trial_unblinded_at is not None,
        )

    def read(self, study_id: int, number: str) -> SubjectRead | None:
        subject = self.get(study_id, number)
        return None if subject is None else self.read_of(subject)

    def add(
        self,
        *,
        study_id: int,
        site_id: int,
        number: str,
        state: str,
        protocol_version_id: int,
        registered_on: dt.date,
        test_subject: bool,
        at: dt.datetime,
    ) -> Subject:
        if self.get(study_id, number) is not None:
            raise AssertionError(f"unique (study_id, number) violated: {number}")
        subject = Subject(
            id=self.t.new_id(),
            study_id=study_id,
            site_id=site_id,
            number=number,
            state=state,
            version=1,
            protocol_version_id=protocol_version_id,
            registered_on=registered_on,
            test_subject=test_subject,
            consent_date=None,
            consent_version=None,
            screen_failure_reason=None,
            screen_failure_detail=None,
            anatomy_suitable=None,
            crc_approved=False,
            randomized_on=None,
            procedure_done=False,
            discharged_on=None,
            unblinded_on=None,
            emergency_unblinded=False,
            exit_date=None,
            exit_reason=None,
            follow_up_contact_allowed=None,
            created_at=at,
            updated_at=at,
        )
        self.t.subjects[subject.id] = subject
        return subject

    def update(self, subject: Subject, values: Mapping[str, Any]) -> Subject | None:
        stored = self.t.subjects[subject.id]
        if (stored.state, stored.version) != (subject.state, subject.version):
            return None
        updated = replace(stored, **values, version=stored.version + 1)
        self.t.subjects[subject.id] = updated
        return updated

    def page(
        self,
        study_id: int,
        *,
        site_ids: Collection[int] | None,
        site_code: str | None,
        state: str | None,
        offset: int,
        limit: int,
        search: str | None = None,
        order: str = "number",
        descending: bool = False,
    ) -> tuple[list[SubjectRead], int]:
        found = [
            s
            for s in self.t.subjects.values()
            if s.study_id == study_id
            and (site_ids is None or s.site_id in site_ids)
            and (site_code is None or self.t.sites[s.site_id].code == site_code)
            and (state is None or s.state == state)
            and (not search or search in s.number)
        ]
        keys: dict[str, Callable[[Subject], Any]] = {
            "number": lambda s: "",
            "registered": lambda s: s.registered_on,
            "state": lambda s: s.state,
            "site": lambda s: self.t.sites[s.site_id].code,
        }
        found.sort(key=lambda s: s.number, reverse=descending)
        found.sort(key=keys[order], reverse=descending)
        return [self.read_of(s) for s in found[offset : offset + limit]], len(found)

    def state_counts(self, study_id: int, *, site_ids: Collection[int] | None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.t.subjects.values():
            if s.study_id == study_id and (site_ids is None or s.site_id in site_ids):
                counts[s.state] = counts.get(s.state, 0) + 1
        return counts

    def on_study(
        self,
        study_id: int,
        states: Collection[str],
        *,
        site_ids: Collection[int] | None,
        site_code: str | None,
    ) -> list[tuple[Subject, Site]]:
        found = [
            (s, self.t.sites[s.site_id])
            for s in self.t.subjects.values()
            if s.study_id == study_id
            and s.state in states
            and (site_ids is None or s.site_id in site_ids)
            and (site_code is None or self.t.sites[s.site_id].code == site_code)
        ]
        return sorted(found, key=lambda pair: (pair[1].code, pair[0].number))


class FakeAllocations(_Repo):
    def for_subject(self, subject_id: int) -> Allocation | None:
        return self.t.allocations.get(subject_id)


class FakeVisits(_Repo):
    def for_subject(self, subject_id: int) -> list[Visit]:
        return [v for v in self.t.visits.values() if v.subject_id == subject_id]

    def for_subjects(self, subject_ids: Collection[int]) -> dict[int, list[Visit]]:
        return {i: self.for_subject(i) for i in subject_ids}

    def get(self, subject_id: int, visit_code: str) -> Visit | None:
        return next((v for v in self.for_subject(subject_id) if v.visit_code == visit_code), None)

    def add(self, **values: Any) -> Visit:
        if self.get(values["subject_id"], values["visit_code"]) is not None:
            raise AssertionError("unique (subject_id, visit_code) violated")
        visit = Visit(id=self.t.new_id(), **values)
        self.t.visits[visit.id] = visit
        return visit

    def count_missed(self, subject_id: int) -> int:
        return sum(1 for v in self.for_subject(subject_id) if v.status == "missed")


class FakeForms(_Repo):
    def _of(self, subject_id: int, form_code: str, visit_code: str) -> list[FormRecord]:
        return sorted(
            (
                f
                for f in self.t.forms.values()
                if (f.subject_id, f.form_code, f.visit_code) == (subject_id, form_code, visit_code)
            ),
            key=lambda f: f.seq,
        )

    def latest(
        self, subject_id: int, form_code: str, visit_code: str, *, seq: int | None = None
    ) -> FormRecord | None:
        found = [
            f for f in self._of(subject_id, form_code, visit_code) if seq is None or f.seq == seq
        ]
        return found[-1] if found else None

    def get(self, record_id: int) -> FormRecord:
        return self.t.forms[record_id]

    def max_seq(self, subject_id: int, form_code: str, visit_code: str) -> int:
        return max((f.seq for f in self._of(subject_id, form_code, visit_code)), default=0)

    def marks_for_subjects(self, subject_ids: Collection[int]) -> list[FormMark]:
        found = sorted(
            (r for r in self.t.forms.values() if r.subject_id in subject_ids),
            key=lambda r: (r.subject_id, r.seq, r.id),
        )
        return [FormMark(r.subject_id, r.form_code, r.visit_code, r.id, r.version) for r in found]

    def for_subject(self, subject_id: int, *, visit_code: str = "") -> list[FormRecord]:
        return sorted(
            (
                f
                for f in self.t.forms.values()
                if f.subject_id == subject_id and f.visit_code == visit_code
            ),
            key=lambda f: (f.seq, f.id),
        )

    def add(
        self,
        *,
        subject_id: int,
        form_code: str,
        visit_code: str,
        seq: int,
        data: str,
        protocol_version_id: int,
        at: dt.datetime,
        by: str,
    ) -> FormRecord:
        if any(f.seq == seq for f in self._of(subject_id, form_code, visit_code)):
            raise AssertionError("unique (subject_id, form_code, visit_code, seq) violated")
        record = FormRecord(
            self.t.new_id(), subject_id, form_code, visit_code, seq, data, protocol_version_id,
            at, by, at, 1,
        )  # fmt: skip
        self.t.forms[record.id] = record
        return record

    def update_data(self, record: FormRecord, data: str, at: dt.datetime) -> FormRecord | None:
        stored = self.t.forms[record.id]
        if stored.version != record.version:
            return None
        updated = replace(stored, data=data, updated_at=at, version=stored.version + 1)
        self.t.forms[record.id] = updated
        return updated

    def all_of_subject(self, subject_id: int) -> list[FormRecord]:
        return sorted(
            (f for f in self.t.forms.values() if f.subject_id == subject_id), key=lambda f: f.id
        )


class FakeConfirmations(_Repo):
    def for_subject(self, subject_id: int) -> dict[str, bool]:
        return {
            c.criterion_id: c.confirmed
            for c in self.t.confirmations.values()
            if c.subject_id == subject_id
        }

    def get(self, subject_id: int, criterion_id: str) -> Confirmation | None:
        return next(
            (
                c
                for c in self.t.confirmations.values()
                if (c.subject_id, c.criterion_id) == (subject_id, criterion_id)
            ),
            None,
        )

    def save(self, **values: Any) -> Confirmation:
        previous = self.get(values["subject_id"], values["criterion_id"])
        saved = Confirmation(id=previous.id if previous else self.t.new_id(), **values)
        self.t.confirmations[saved.id] = saved
        return saved


class FakeCrc(_Repo):
    def open_case(
        self,
        *,
        study_id: int,
        subject_id: int,
        kind: str,
        at: dt.datetime,
        therapy_id: int | None = None,
    ) -> CrcCase:
        case = CrcCase(
            self.t.new_id(), study_id, subject_id, kind, "open", therapy_id, at,
            None, None, None, None, None, None,
        )  # fmt: skip
        self.t.cases[case.id] = case
        return case

    def detail(self, case: CrcCase) -> CaseDetail:
        case = self.t.cases[case.id]
        subject = self.t.subjects[case.subject_id]
        therapy = self.t.therapies.get(case.therapy_id) if case.therapy_id else None
        return CaseDetail(case, subject, self.t.sites[subject.site_id], therapy)

    def pending(self, study_id: int, statuses: Sequence[str]) -> list[CaseDetail]:
        found = [
            c for c in self.t.cases.values() if c.study_id == study_id and c.status in statuses
        ]
        return [self.detail(c) for c in sorted(found, key=lambda c: (c.opened_at, c.id))]

    def undecided_eligibility(self, subject_id: int) -> CrcCase | None:
        found = [
            c
            for c in self.t.cases.values()
            if c.subject_id == subject_id and c.kind == "eligibility" and c.status != "decided"
        ]
        return max(found, key=lambda c: c.id, default=None)

    def therapy_case(self, study_id: int, case_id: int, *, lock: bool = False) -> CrcCase | None:
        case = self.t.cases.get(case_id)
        if case is None or case.study_id != study_id or case.kind != "therapy":
            return None
        return case

    def decide(self, case: CrcCase, values: Mapping[str, Any]) -> CrcCase:
        updated = replace(self.t.cases[case.id], **values)
        self.t.cases[case.id] = updated
        return updated

    def case(self, study_id: int, case_id: int, *, lock: bool = False) -> CrcCase | None:
        case = self.t.cases.get(case_id)
        return case if case is not None and case.study_id == study_id else None

    def notes(self, case_id: int) -> list[CaseNote]:
        return sorted(
            (n for n in self.t.case_notes.values() if n.case_id == case_id), key=lambda n: n.id
        )

    def add_note(
        self,
        *,
        case_id: int,
        kind: str,
        text: str,
        written_by: str,
        written_name: str,
        at: dt.datetime,
    ) -> CaseNote:
        note = CaseNote(self.t.new_id(), case_id, kind, text, written_by, written_name, at)
        self.t.case_notes[note.id] = note
        return note

    def add_therapy(
        self,
        *,
        subject_id: int,
        therapy_date: dt.date,
        therapy_type: str,
        early: bool,
        months_since: float,
        at: dt.datetime,
        by: str,
    ) -> Therapy:
        therapy = Therapy(
            self.t.new_id(), subject_id, therapy_date, therapy_type, early, months_since, at, by
        )
        self.t.therapies[therapy.id] = therapy
        return therapy

    def therapy(self, therapy_id: int) -> Therapy:
        return self.t.therapies[therapy_id]


class FakeDataQueries(_Repo):
    def get(self, study_id: int, query_id: int, *, lock: bool = False) -> DataQuery | None:
        query = self.t.queries.get(query_id)
        return query if query is not None and query.study_id == study_id else None

    def in_progress(self, form_record_id: int, field: str) -> int | None:
        return next(
            (
                q.id
                for q in self.t.queries.values()
                if (q.form_record_id, q.field) == (form_record_id, field)
                and q.status in ("open", "answered")
            ),
            None,
        )

    def add(self, **values: Any) -> DataQuery:
        query = DataQuery(
            id=self.t.new_id(),
            status="open",
            answer=None,
            answered_by=None,
            answered_at=None,
            value_changed=False,
            closed_by=None,
            closed_at=None,
            reopened=0,
            **values,
        )
        self.t.queries[query.id] = query
        return query

    def update(self, query: DataQuery, values: Mapping[str, Any]) -> DataQuery:
        updated = replace(self.t.queries[query.id], **values)
        self.t.queries[query.id] = updated
        return updated

    def listing(
        self,
        study_id: int,
        *,
        statuses: Collection[str],
        site_id: int | None,
        site_ids: Collection[int] | None,
    ) -> list[tuple[DataQuery, Subject, Site]]:
        out = []
        for q in sorted(self.t.queries.values(), key=lambda q: (q.raised_at, q.id)):
            subject = self.t.subjects[q.subject_id]
            if q.study_id != study_id or q.status not in statuses:
                continue
            if (site_id is not None and subject.site_id != site_id) or (
                site_ids is not None and subject.site_id not in site_ids
            ):
                continue
            out.append((q, subject, self.t.sites[subject.site_id]))
        return out

    def of_subject(self, subject_id: int) -> list[DataQuery]:
        return sorted(
            (q for q in self.t.queries.values() if q.subject_id == subject_id), key=lambda q: q.id
        )

    def of_rules(self, subject_id: int) -> list[DataQuery]:
        return sorted(
            (
                q
                for q in self.t.queries.values()
                if q.subject_id == subject_id and q.origin == "rule"
            ),
            key=lambda q: q.id,
        )

    def grants_of(self, study_id: int, username: str) -> list[tuple[str, int | None]]:
        return list(self.t.grants.get((study_id, username), []))

    def page(
        self,
        study_id: int,
        *,
        statuses: Collection[str],
        site_ids: Collection[int] | None,
        site_code: str | None = None,
        raised_before: dt.datetime | None = None,
        subject: str | None = None,
        form_record_id: int | None = None,
        newest_first: bool = False,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[tuple[DataQuery, Subject, Site]], int]:
        found = [
            (q, s, site)
            for q, s, site in self.listing(
                study_id, statuses=statuses, site_id=None, site_ids=site_ids
            )
            if (site_code is None or site.code == site_code)
            and (raised_before is None or q.raised_at <= raised_before)
            and (not subject or s.number.startswith(subject))
            and (form_record_id is None or q.form_record_id == form_record_id)
        ]
        if newest_first:
            found.reverse()
        return found[offset : offset + limit], len(found)

    def unresolved_for_subjects(
        self, subject_ids: Collection[int]
    ) -> list[tuple[int, str, str, str]]:
        return [
            (q.subject_id, q.form_code, q.visit_code, q.status)
            for q in self.t.queries.values()
            if q.subject_id in subject_ids and q.status != "closed"
        ]


# --- issue 15 (x15b) -----------------------------------------------------------------------------


class FakeConsents(_Repo):
    def for_subject(self, subject_id: int) -> list[Consent]:
        return sorted(
            (c for c in self.t.consents.values() if c.subject_id == subject_id), key=lambda c: c.id
        )

    def for_subjects(self, subject_ids: Collection[int]) -> dict[int, list[Consent]]:
        return {i: self.for_subject(i) for i in subject_ids}

    def add(self, **values: Any) -> Consent:
        consent = Consent(id=self.t.new_id(), **values)
        self.t.consents[consent.id] = consent
        return consent

    def withdrawal(self, subject_id: int) -> Withdrawal | None:
        return next((w for w in self.t.withdrawals.values() if w.subject_id == subject_id), None)

    def add_withdrawal(self, **values: Any) -> Withdrawal:
        if self.withdrawal(values["subject_id"]) is not None:
            raise AssertionError("unique (subject_id) violated")
        withdrawal = Withdrawal(id=self.t.new_id(), **values)
        self.t.withdrawals[withdrawal.id] = withdrawal
        return withdrawal


class FakeExclusions(_Repo):
    def active(self, subject_id: int) -> list[DqExclusion]:
        return sorted(
            (
                e
                for e in self.t.exclusions.values()
                if e.subject_id == subject_id and e.revoked_at is None
            ),
            key=lambda e: e.id,
        )

    def get(self, study_id: int, exclusion_id: int) -> DqExclusion | None:
        found = self.t.exclusions.get(exclusion_id)
        return found if found is not None and found.study_id == study_id else None

    def add(self, *, by: str, at: dt.datetime, **values: Any) -> DqExclusion:
        exclusion = DqExclusion(
            id=self.t.new_id(),
            excluded_by=by,
            excluded_at=at,
            revoked_by=None,
            revoked_at=None,
            **values,
        )
        self.t.exclusions[exclusion.id] = exclusion
        return exclusion

    def revoke(self, exclusion: DqExclusion, *, by: str, at: dt.datetime) -> DqExclusion:
        updated = replace(self.t.exclusions[exclusion.id], revoked_by=by, revoked_at=at)
        self.t.exclusions[exclusion.id] = updated
        return updated


class FakeNotifications(_Repo):
    def add(
        self,
        *,
        study_id: int,
        recipient_role: str,
        subject_id: int | None,
        text: str,
        at: dt.datetime,
    ) -> None:
        self.t.notifications.append(
            {
                "id": self.t.new_id(),
                "study_id": study_id,
                "role": recipient_role,
                "subject_id": subject_id,
                "text": text,
                "at": at,
                "read_at": None,
            }
        )

    def _read(self, note: dict[str, Any]) -> NotificationRead:
        subject = self.t.subjects.get(note["subject_id"]) if note["subject_id"] else None
        return NotificationRead(
            Notification(
                note["id"],
                note["study_id"],
                note["role"],
                note["subject_id"],
                note["text"],
                note["at"],
                note["read_at"],
            ),
            subject.number if subject else None,
            subject.site_id if subject else None,
        )

    def for_roles(
        self, study_id: int, roles: Collection[str], *, unread_only: bool
    ) -> list[NotificationRead]:
        found = [
            n
            for n in self.t.notifications
            if n["study_id"] == study_id
            and n["role"] in roles
            and not (unread_only and n["read_at"] is not None)
        ]
        return [self._read(n) for n in sorted(found, key=lambda n: -n["id"])]

    def get(self, notification_id: int) -> NotificationRead | None:
        found = [n for n in self.t.notifications if n["id"] == notification_id]
        return self._read(found[0]) if found else None

    def mark_read(self, notification_id: int, at: dt.datetime) -> NotificationRead:
        notes = self.t.notifications = [dict(n) for n in self.t.notifications]
        note = next(n for n in notes if n["id"] == notification_id)
        if note["read_at"] is None:
            note["read_at"] = at
        return self._read(note)


class FakeLists(_Repo):
    def site_codes(self, study_id: int) -> list[str]:
        return sorted(s.code for s in self.t.sites.values() if s.study_id == study_id)

    def active(self, study_id: int, mode: str) -> AllocationList | None:
        found = [
            lst
            for lst in self.t.lists.values()
            if lst.study_id == study_id and lst.mode == mode and lst.active
        ]
        return max(found, key=lambda lst: lst.id, default=None)

    def get(self, list_id: int) -> AllocationList | None:
        return self.t.lists.get(list_id)

    def of_study(self, study_id: int, mode: str | None = None) -> list[AllocationList]:
        return sorted(
            (
                lst
                for lst in self.t.lists.values()
                if lst.study_id == study_id and (mode is None or lst.mode == mode)
            ),
            key=lambda lst: lst.id,
        )

    def add(
        self,
        *,
        study_id: int,
        mode: str,
        method: str,
        source: str,
        seed_enc: bytes | None,
        fingerprint: str,
        at: dt.datetime,
        by: str,
    ) -> AllocationList:
        lst = AllocationList(
            self.t.new_id(), study_id, mode, method, source, seed_enc, fingerprint, at, by, True
        )
        self.t.lists[lst.id] = lst
        return lst

    def deactivate(self, lst: AllocationList) -> AllocationList:
        new = self.t.lists[lst.id] = replace(self.t.lists[lst.id], active=False)
        return new

    def cursor(self, list_id: int, stratum: str, *, lock: bool = False) -> StratumCursor | None:
        found = next(
            (c for c in self.t.cursors.values() if c.list_id == list_id and c.stratum == stratum),
            None,
        )
        if found is not None and lock:
            self.t.row_locks.append(("cursor", found.id, False))
        return found

    def cursors(self, list_id: int) -> list[StratumCursor]:
        return sorted(
            (c for c in self.t.cursors.values() if c.list_id == list_id), key=lambda c: c.stratum
        )

    def add_cursor(self, list_id: int, stratum: str, size: int) -> StratumCursor:
        if self.cursor(list_id, stratum) is not None:
            raise AssertionError("unique (list_id, stratum) violated")
        cursor = StratumCursor(self.t.new_id(), list_id, stratum, 1, size, 0)
        self.t.cursors[cursor.id] = cursor
        return cursor

    def update_cursor(self, cursor: StratumCursor, values: Mapping[str, Any]) -> StratumCursor:
        new = self.t.cursors[cursor.id] = replace(self.t.cursors[cursor.id], **values)
        return new

    def add_slots(self, list_id: int, stratum: str, slots: Sequence[tuple[int, bytes]]) -> None:
        held = {(s.stratum, s.sequence) for s in self.t.slots.values() if s.list_id == list_id}
        for seq, payload in slots:
            if (stratum, seq) in held:
                raise AssertionError("unique (list_id, stratum, sequence) violated")
            slot = AllocationSlot(self.t.new_id(), list_id, stratum, seq, payload, None, None)
            self.t.slots[slot.id] = slot

    def slots(self, list_id: int, stratum: str | None = None) -> list[AllocationSlot]:
        return sorted(
            (
                s
                for s in self.t.slots.values()
                if s.list_id == list_id and (stratum is None or s.stratum == stratum)
            ),
            key=lambda s: (s.stratum, s.sequence),
        )

    def last_slot(self, list_id: int, stratum: str) -> AllocationSlot | None:
        found = self.slots(list_id, stratum)
        return found[-1] if found else None

    def sizes(self, list_id: int) -> tuple[int, int]:
        return len(self.cursors(list_id)), len(self.slots(list_id))

    def used(self, list_id: int) -> int:
        return sum(1 for s in self.slots(list_id) if s.used_by_subject_id is not None)

    def draw(
        self, study_id: int, mode: str, stratum: str, *, subject_id: int, at: dt.datetime
    ) -> TakenSlot | None:
        lst = self.active(study_id, mode)
        cursor = None if lst is None else self.cursor(lst.id, stratum, lock=True)
        if cursor is None or cursor.next_sequence > cursor.size:
            return None
        return self.take_slot(cursor, subject_id=subject_id, at=at)

    def take_slot(self, cursor: StratumCursor, *, subject_id: int, at: dt.datetime) -> TakenSlot:
        slot = next(
            s
            for s in self.slots(cursor.list_id, cursor.stratum)
            if s.sequence == cursor.next_sequence
        )
        if slot.used_by_subject_id is not None or any(
            s.used_by_subject_id == subject_id for s in self.t.slots.values()
        ):
            raise AssertionError("a slot is used at most once, by one subject")
        used = self.t.slots[slot.id] = replace(slot, used_by_subject_id=subject_id, used_at=at)
        after = self.update_cursor(cursor, {"next_sequence": cursor.next_sequence + 1})
        return TakenSlot(used, after)


class FakeRandomizations(_Repo):
    def read(self, study_id: int, number: str) -> tuple[SubjectRead, ProtocolVersion] | None:
        read = FakeSubjects(self._uow).read(study_id, number)
        if read is None:
            return None
        signed = [
            v for v in self.t.versions.values() if v.study_id == study_id and v.status == "signed"
        ]
        return read, max(signed, key=lambda v: v.id)

    def for_subject(self, subject_id: int) -> Randomization | None:
        return next((r for r in self.t.randomizations.values() if r.subject_id == subject_id), None)

    def by_key(self, key: str) -> Randomization | None:
        return next((r for r in self.t.randomizations.values() if r.idempotency_key == key), None)

    def parallel_writers(self) -> int | None:
        return self._uow.store.parallel_writers

    def counts(self, study_id: int, *, site_id: int, country: str) -> CapCounts:
        total = site = in_country = 0
        for rand in self.t.randomizations.values():
            if rand.study_id != study_id:
                continue
            subject_site = self.t.sites[self.t.subjects[rand.subject_id].site_id]
            total += 1
            site += subject_site.id == site_id
            in_country += subject_site.country == country
        return CapCounts(total, site, in_country)

    def allocated(self, study_id: int) -> list[tuple[bytes, str]]:
        return [
            (r.arm_enc, r.factors)
            for r in self.t.randomizations.values()
            if r.study_id == study_id and not r.in_error
        ]

    def add(self, *, site_id: int, site_code: str, **values: Any) -> Randomization:
        if self.for_subject(values["subject_id"]) is not None or (
            values["idempotency_key"] is not None and self.by_key(values["idempotency_key"])
        ):
            raise Conflict("this subject was randomized by a concurrent request")
        seq = self.t.next_randomization_seq.get(site_id, 1)
        self.t.next_randomization_seq[site_id] = seq + 1
        rand = Randomization(
            id=self.t.new_id(),
            number=f"{site_code}-R{seq:03d}",
            in_error=False,
            in_error_reason=None,
            **values,
        )
        self.t.randomizations[rand.id] = rand
        self.t.allocations[rand.subject_id] = Allocation(
            rand.subject_id, rand.number, rand.arm_enc, rand.randomized_on, False
        )
        return rand

    def mark_in_error(self, rand: Randomization, reason: str) -> Randomization | None:
        current = self.t.randomizations[rand.id]
        if current.in_error:
            return None
        new = self.t.randomizations[rand.id] = replace(
            current, in_error=True, in_error_reason=reason
        )
        self.t.allocations[new.subject_id] = replace(
            self.t.allocations[new.subject_id], in_error=True
        )
        return new


class FakeRequests(_Repo):
    def token(self, token_hash: str, kind: str) -> TokenRead | None:
        return self.t.tokens.get((token_hash, kind))

    def study(self, code: str) -> StudyHead | None:
        study = next((s for s in self.t.studies.values() if s.code == code), None)
        if study is None:
            return None
        current = [v for v in self.t.versions.values() if v.study_id == study.id and v.current]
        version = max(current, key=lambda v: v.id, default=None)
        return StudyHead(
            study.id,
            study.code,
            study.name,
            study.mode,
            "" if version is None else "protocol",
            "" if version is None else version.version,
            "" if version is None else version.sha256,
            sum(1 for site in self.t.sites.values() if site.study_id == study.id),
        )

    def touch(self, token_id: int, at: dt.datetime) -> None:
        for key, token in list(self.t.tokens.items()):
            if token.token_id == token_id:
                self.t.tokens[key] = replace(token, last_used_at=at)


class FakeTrialUnblindings(_Repo):
    def pending(self, study_id: int) -> TrialUnblinding | None:
        found = [
            u
            for u in self.t.unblindings.values()
            if u.study_id == study_id and u.status == "pending"
        ]
        return min(found, key=lambda u: u.id, default=None)

    def latest(self, study_id: int) -> TrialUnblinding | None:
        found = [u for u in self.t.unblindings.values() if u.study_id == study_id]
        return max(found, key=lambda u: u.id, default=None)

    def add(self, **values: Any) -> TrialUnblinding:
        row = TrialUnblinding(
            id=self.t.new_id(),
            status="pending",
            confirmed_by=None,
            confirmed_name=None,
            confirmed_at=None,
            confirmed_meaning=None,
            **values,
        )
        self.t.unblindings[row.id] = row
        return row

    def confirm(
        self, pending: TrialUnblinding, values: Mapping[str, Any]
    ) -> TrialUnblinding | None:
        current = self.t.unblindings[pending.id]
        if current.status != "pending":
            return None
        new = self.t.unblindings[pending.id] = replace(current, **values)
        return new

    def unblind_study(self, study_id: int, at: dt.datetime) -> None:
        self.t.studies[study_id] = replace(self.t.studies[study_id], trial_unblinded_at=at)

    def in_state(self, study_id: int, state: str, site_ids: set[int] | None) -> int:
        return sum(
            1
            for s in self.t.subjects.values()
            if s.study_id == study_id
            and s.state == state
            and (site_ids is None or s.site_id in site_ids)
        )

    def user_id(self, username: str) -> int | None:
        return next((u.id for u in self.t.users.values() if u.username == username), None)


class FakeMailOutbox(_Repo):
    def addresses(self, *, study_id: int, role: str, site_id: int | None) -> list[str]:
        return sorted(self.t.mail_addresses.get((study_id, role), []))

    def add(
        self,
        *,
        study_id: int | None,
        kind: str,
        recipient: str,
        subject: str,
        body_enc: bytes,
        at: dt.datetime,
    ) -> None:
        self.t.outbox.append(
            {"study_id": study_id, "kind": kind, "to": recipient, "subject": subject}
            | {"id": self.t.new_id(), "body_enc": body_enc, "created_at": at, "attempts": 0}
            | {"next_attempt_at": at, "claimed_until": None, "last_error": None, "sent_at": None}
        )

    def after_commit(self, wake: Callable[[], None]) -> None:
        """Nothing is delivered from the fake; delivery is tested against a real server."""


class FakeMailDelivery(_Repo):
    """The outbox as the sender sees it (lane x13b); the fake sends nothing itself."""

    def _mails(self) -> list[Mail]:
        keys: tuple[str, ...] = ("id", "study_id", "kind", "to", "subject", "body_enc")
        keys += ("created_at", "attempts", "next_attempt_at", "claimed_until")
        keys += ("last_error", "sent_at")
        return [Mail(*(m[k] for k in keys)) for m in self.t.outbox]

    def due(self, now: dt.datetime, *, max_attempts: int, force: bool) -> list[int]:
        return [
            m.id
            for m in self._mails()
            if m.sent_at is None
            and (force or (m.attempts < max_attempts and m.next_attempt_at <= now))
        ]

    def claim(self, mail_id: int, now: dt.datetime, until: dt.datetime) -> Mail | None:
        mail = self.get(mail_id)
        if mail is None or mail.sent_at is not None:
            return None
        if mail.claimed_until is not None and mail.claimed_until >= now:
            return None
        self.update(mail_id, {"claimed_until": until})
        return self.get(mail_id)

    def get(self, mail_id: int) -> Mail | None:
        return next((m for m in self._mails() if m.id == mail_id), None)

    def update(self, mail_id: int, values: Mapping[str, Any]) -> None:
        for n, m in enumerate(self.t.outbox):
            if m["id"] == mail_id:
                self.t.outbox[n] = {**m, **values}

    def listing(self, *, unsent_only: bool) -> list[Mail]:
        return [m for m in self._mails() if not unsent_only or m.sent_at is None]

    def waiting(self) -> int:
        return len(self.listing(unsent_only=True))


class FakeStudyRecords(_Repo):
    """The study's records for the endpoint analyses (lane x13b)."""

    def _ids(self, study_id: int) -> set[int]:
        return {s.id for s in self.t.subjects.values() if s.study_id == study_id}

    def randomized(
        self, study_id: int, site_ids: Collection[int] | None
    ) -> list[tuple[Subject, Allocation, Site]]:
        out = [
            (s, self.t.allocations[s.id], self.t.sites[s.site_id])
            for s in self.t.subjects.values()
            if s.study_id == study_id
            and not s.test_subject
            and s.id in self.t.allocations
            and (site_ids is None or s.site_id in site_ids)
        ]
        return sorted(out, key=lambda t: t[0].number)

    def visits(self, study_id: int) -> list[Visit]:
        ids = self._ids(study_id)
        return [v for v in self.t.visits.values() if v.subject_id in ids]

    def therapies(self, study_id: int) -> list[Therapy]:
        ids = self._ids(study_id)
        return [t for t in self.t.therapies.values() if t.subject_id in ids]

    def forms(self, study_id: int) -> list[FormRecord]:
        ids = self._ids(study_id)
        found = [f for f in self.t.forms.values() if f.subject_id in ids]
        return sorted(found, key=lambda f: (f.subject_id, f.seq))

    def procedures_with_arm(self, study_id: int, form_code: str) -> list[tuple[FormRecord, bytes]]:
        return [
            (f, self.t.allocations[f.subject_id].arm_enc)
            for f in self.forms(study_id)
            if f.form_code == form_code
            and f.subject_id in self.t.allocations
            and not self.t.allocations[f.subject_id].in_error
            and not self.t.subjects[f.subject_id].test_subject
        ]

    # the operational reports (lane x13b)

    def live_subjects(self, study_id: int, site_ids: Collection[int] | None) -> list[Subject]:
        found = [
            s
            for s in self.t.subjects.values()
            if s.study_id == study_id
            and not s.test_subject
            and (site_ids is None or s.site_id in site_ids)
        ]
        return sorted(found, key=lambda s: s.number)

    def allocations_of(self, subject_ids: Collection[int]) -> dict[int, Allocation]:
        return {i: a for i, a in self.t.allocations.items() if i in subject_ids}

    def forms_of(self, subject_ids: Collection[int], form_code: str) -> list[FormRecord]:
        return [
            f
            for f in self.t.forms.values()
            if f.subject_id in subject_ids and f.form_code == form_code
        ]

    def visits_of(self, subject_ids: Collection[int]) -> list[Visit]:
        return [v for v in self.t.visits.values() if v.subject_id in subject_ids]

    def in_error(self, subject_ids: Collection[int]) -> list[InErrorRandomization]:
        """The fake's allocations keep no reason."""
        return [
            InErrorRandomization(a.subject_id, a.randomized_on, None)
            for a in self.t.allocations.values()
            if a.subject_id in subject_ids and a.in_error
        ]

    def live_crc_cases(self, study_id: int) -> list[CrcCase]:
        live = {s.id for s in self.live_subjects(study_id, None)}
        return [c for c in self.t.cases.values() if c.subject_id in live]

    def audit_actions(self, study_id: int, actions: Collection[str]) -> list[AuditEntry]:
        return [
            e
            for e in FakeAuditEntries(self._uow)._all()
            if e.study_id == study_id and e.action in actions
        ]

    def trial_unblindings(self, study_id: int) -> list[TrialUnblindingEvent]:
        """The fake keeps no trial-level unblinding."""
        return []


class FakeSubmission(_Repo):
    """The submission exports' read (issue 16) over the fake's tables."""

    def read(self, study_id: int) -> StudySubmission:
        t = self.t
        study = t.studies[study_id]
        subjects: list[StoredSubject] = []
        for s in sorted(t.subjects.values(), key=lambda s: s.number):
            if s.study_id != study_id:
                continue
            site = t.sites[s.site_id]
            alloc = t.allocations.get(s.id)
            subjects.append(
                StoredSubject(
                    id=s.id,
                    number=s.number,
                    site_code=site.code,
                    site_name=site.name,
                    country=site.country,
                    state=s.state,
                    test_subject=s.test_subject,
                    registered_on=s.registered_on,
                    consent_date=s.consent_date,
                    consent_version=s.consent_version,
                    screen_failure_reason=s.screen_failure_reason,
                    randomized_on=s.randomized_on,
                    procedure_done=s.procedure_done,
                    discharged_on=s.discharged_on,
                    exit_date=s.exit_date,
                    exit_reason=s.exit_reason,
                    allocation=None
                    if alloc is None
                    else StoredAllocation(
                        alloc.number, alloc.randomized_on, alloc.arm_enc, alloc.in_error
                    ),
                    forms=[
                        StoredForm(
                            f.form_code,
                            f.visit_code,
                            f.seq,
                            f.data,
                            f.protocol_version_id,
                            f.created_at,
                        )
                        for f in sorted(t.forms.values(), key=lambda f: f.id)
                        if f.subject_id == s.id
                    ],
                    visits=[
                        StoredVisit(v.visit_code, v.status, v.visit_date, v.missed_reason)
                        for v in sorted(t.visits.values(), key=lambda v: v.id)
                        if v.subject_id == s.id
                    ],
                    therapies=[
                        StoredTherapy(x.therapy_date, x.therapy_type)
                        for x in sorted(t.therapies.values(), key=lambda x: x.id)
                        if x.subject_id == s.id
                    ],
                )
            )
        versions = [
            StoredVersion(v.id, v.version, v.sha256, v.effective_from, v.current)
            for v in sorted(t.versions.values(), key=lambda v: v.id)
            if v.study_id == study_id
        ]
        return StudySubmission(study_id, study.code, study.name, versions, subjects)


class FakeOdmHistory(_Repo):
    """Issue 16 (x16b): the export's reading; the fake keeps no audit trail once committed,
    so the history is the study, its protocol versions and sites, with no entries."""

    def study_history(self, study_id: int, *, concealed_form: str) -> StudyHistory | None:
        study = self.t.studies.get(study_id)
        if study is None:
            return None
        versions = [
            HistoryVersion(v.id, v.version, "", v.sha256, v.status, dt.date.min, v.effective_from)
            for v in sorted(self.t.versions.values(), key=lambda v: v.id)
            if v.study_id == study_id
        ]
        sites = {s.code: s.name for s in self.t.sites.values() if s.study_id == study_id}
        return StudyHistory(study.code, study.name, versions, sites, {}, {}, {}, [])


def _code(site: Site) -> str:
    return site.code


# --- supply (lane x13b) ---------------------------------------------------------------------


class FakeSupply(_Repo):
    def lot(self, study_id: int, lot_number: str) -> DeviceLot | None:
        return next(
            (
                lot
                for lot in self.t.lots.values()
                if lot.study_id == study_id and lot.lot_number == lot_number
            ),
            None,
        )

    def lot_by_id(self, lot_id: int) -> DeviceLot:
        return self.t.lots[lot_id]

    def lots(self, study_id: int) -> list[DeviceLot]:
        found = [lot for lot in self.t.lots.values() if lot.study_id == study_id]
        return sorted(found, key=lambda lot: lot.lot_number)

    def add_lot(self, **values: Any) -> DeviceLot:
        lot = DeviceLot(id=self.t.new_id(), quarantine_reason=None, **values)
        self.t.lots[lot.id] = lot
        return lot

    def update_lot(self, lot: DeviceLot, values: Mapping[str, Any]) -> DeviceLot:
        new = self.t.lots[lot.id] = replace(self.t.lots[lot.id], **values)
        return new

    def _devices(self) -> list[Device]:
        return sorted(self.t.devices.values(), key=lambda d: d.serial)

    def device(self, study_id: int, serial: str) -> Device | None:
        return next(
            (d for d in self._devices() if d.study_id == study_id and d.serial == serial), None
        )

    def registered(self, study_id: int, serials: Collection[str]) -> list[str]:
        return [d.serial for d in self._devices() if d.study_id == study_id and d.serial in serials]

    def add_device(self, **values: Any) -> Device:
        device = Device(
            id=self.t.new_id(), site_id=None, shipment_id=None, subject_enc=None, **values
        )
        self.t.devices[device.id] = device
        return device

    def devices_of_lot(self, lot_id: int, statuses: Collection[str] | None = None) -> list[Device]:
        return [
            d
            for d in self._devices()
            if d.lot_id == lot_id and (statuses is None or d.status in statuses)
        ]

    def devices_of_shipment(self, shipment_id: int) -> list[Device]:
        return [d for d in self._devices() if d.shipment_id == shipment_id]

    def devices_at_site(self, site_id: int) -> list[tuple[Device, DeviceLot]]:
        return [(d, self.t.lots[d.lot_id]) for d in self._devices() if d.site_id == site_id]

    def device_page(
        self,
        study_id: int,
        *,
        visible: Mapping[int, Collection[str]],
        search: str | None,
        site_id: int | None,
        status: str | None,
        lot_number: str | None,
        order: str,
        descending: bool,
        offset: int,
        limit: int,
    ) -> tuple[list[tuple[Device, DeviceLot]], int]:
        rows = [
            (d, self.t.lots[d.lot_id])
            for d in self._devices()
            if d.study_id == study_id
            and d.site_id is not None
            and d.status in visible.get(d.site_id, ())
            and (not search or search in d.serial or search in self.t.lots[d.lot_id].lot_number)
            and (site_id is None or d.site_id == site_id)
            and (status is None or d.status == status)
            and (lot_number is None or self.t.lots[d.lot_id].lot_number == lot_number)
        ]
        keys: dict[str, Callable[[tuple[Device, DeviceLot]], Any]] = {
            "serial": lambda r: (r[0].serial,),
            "lot": lambda r: (r[1].lot_number, r[0].serial),
            "expiry": lambda r: (r[1].expiry, r[0].serial),
            "site": lambda r: (self.t.sites[r[0].site_id or 0].code, r[0].serial),
            "status": lambda r: (r[0].status, r[0].serial),
        }
        rows.sort(key=keys[order], reverse=descending)
        return rows[offset : offset + limit], len(rows)

    def count_at_site(self, site_id: int, status: str, *, usable_on: dt.date | None = None) -> int:
        return sum(
            1
            for d, lot in self.devices_at_site(site_id)
            if d.status == status and (usable_on is None or lot.expiry >= usable_on)
        )

    def move(
        self, device: Device, sources: Collection[str], values: Mapping[str, Any]
    ) -> Device | None:
        now = self.t.devices[device.id]
        if now.version != device.version or now.status not in sources:
            return None
        moved = self.t.devices[device.id] = replace(now, version=now.version + 1, **values)
        return moved

    def add_event(self, **values: Any) -> None:
        self.t.device_events.append({"id": self.t.new_id(), **values})

    def count_events(self, site_id: int, kind: str) -> int:
        return sum(1 for e in self.t.device_events if e["site_id"] == site_id and e["kind"] == kind)

    def last_return_site(self, device_id: int) -> int | None:
        returns = [
            e["site_id"]
            for e in self.t.device_events
            if e["device_id"] == device_id and e["kind"] == "returned"
        ]
        return returns[-1] if returns else None

    def stocked_sites(self, study_id: int) -> set[int]:
        held = {d.site_id for d in self.t.devices.values() if d.study_id == study_id}
        logged = {e["site_id"] for e in self.t.device_events if e["study_id"] == study_id}
        return {i for i in held | logged if i is not None}

    def uses(self, lot_id: int) -> list[DeviceUse]:
        return [
            DeviceUse(self.t.devices[e["device_id"]].serial, e["site_id"], e["detail_enc"])
            for e in self.t.device_events
            if e["kind"] in ("implanted", "used_not_released")
            and self.t.devices[e["device_id"]].lot_id == lot_id
        ]

    def shipment(self, study_id: int, number: str) -> DeviceShipment | None:
        return next(
            (s for s in self.t.shipments.values() if s.study_id == study_id and s.number == number),
            None,
        )

    def shipment_by_id(self, shipment_id: int) -> DeviceShipment:
        return self.t.shipments[shipment_id]

    def shipments(self, study_id: int) -> list[DeviceShipment]:
        return sorted(
            (s for s in self.t.shipments.values() if s.study_id == study_id), key=lambda s: s.id
        )

    def count_shipments(self, study_id: int) -> int:
        return len(self.shipments(study_id))

    def add_shipment(self, **values: Any) -> DeviceShipment:
        shipment = DeviceShipment(id=self.t.new_id(), received_on=None, received_by=None, **values)
        self.t.shipments[shipment.id] = shipment
        return shipment

    def update_shipment(
        self, shipment: DeviceShipment, values: Mapping[str, Any]
    ) -> DeviceShipment:
        new = self.t.shipments[shipment.id] = replace(self.t.shipments[shipment.id], **values)
        return new

    def in_transit_shipments(self, study_id: int) -> set[int]:
        return {s.id for s in self.shipments(study_id) if s.status == "in_transit"}

    def supplied_sites(self, study_id: int) -> set[int]:
        return {s.site_id for s in self.shipments(study_id)}

    def shipped_serials(self, shipment_id: int) -> list[str]:
        return sorted(
            self.t.devices[e["device_id"]].serial
            for e in self.t.device_events
            if e["shipment_id"] == shipment_id and e["kind"] == "shipped"
        )


# --- users, audit reads, reporting (lane x13b) ------------------------------------------------


class FakeUsers(_Repo):
    def get(self, user_id: int) -> User | None:
        return self.t.users.get(user_id)

    def set_timezone(self, user_id: int, zone: str | None) -> None:
        self.t.users[user_id] = replace(self.t.users[user_id], timezone=zone)


class FakeAuditEntries(_Repo):
    def stream(self, stream: str) -> list[AuditEntry]:
        """Committed entries of the stream, numbered in order (no hashes: not chained)."""
        return [e for e in self._all() if e.stream == stream]

    def _all(self) -> list[AuditEntry]:
        """Every committed entry, ids in the order written, seq per stream."""
        seqs: dict[str, int] = {}
        out = []
        for n, e in enumerate(self.t.audit, start=1):
            seqs[e.stream] = seq = seqs.get(e.stream, 0) + 1
            out.append(self._stored(n, seq, e))
        return out

    def _selected(self, q: AuditQuery) -> list[AuditEntry]:
        """The study's own entries (the fake keeps no role grants, so the users' security
        entries the SQL query adds are not selected here)."""
        return [
            e
            for e in self._all()
            if e.study_id == q.study_id
            and (q.action is None or e.action == q.action)
            and (q.action_prefix is None or e.action.startswith(q.action_prefix))
            and (q.actor is None or e.actor == q.actor)
            and (q.subject_id is None or e.subject_id == q.subject_id)
            and (q.since_at is None or e.at >= q.since_at)
            and (q.until_at is None or e.at < q.until_at)
            and e.entity not in q.excluded_entities
        ]

    def count(self, query: AuditQuery) -> int:
        return len(self._selected(query))

    def find(
        self, query: AuditQuery, *, offset: int = 0, limit: int | None = None
    ) -> list[AuditEntry]:
        selected = self._selected(query)[offset:]
        return selected if limit is None else selected[:limit]

    def subject_numbers(self, subject_ids: Collection[int]) -> dict[int, str]:
        return {i: self.t.subjects[i].number for i in subject_ids if i in self.t.subjects}

    @staticmethod
    def _stored(n: int, seq: int, e: PendingEntry) -> AuditEntry:
        return AuditEntry(
            id=n, stream=e.stream, seq=seq, prev_hash="", hash="", at=utc_iso(e.at),
            actor=e.actor, action=e.action, study_id=e.study_id, subject_id=e.subject_id,
            entity=e.entity, entity_id=e.entity_id, old=canonical_json(e.old),
            new=canonical_json(e.new), reason=e.reason, protocol_sha256=e.protocol_sha256,
        )  # fmt: skip


class FakeReporting(_Repo):
    def _live(self, study_id: int) -> list[Subject]:
        return [
            s for s in self.t.subjects.values() if s.study_id == study_id and not s.test_subject
        ]

    def registered_by_site(self, study_id: int, as_of: dt.date | None) -> dict[int, int]:
        counts: dict[int, int] = {}
        for s in self._live(study_id):
            if as_of is None or s.registered_on <= as_of:
                counts[s.site_id] = counts.get(s.site_id, 0) + 1
        return counts

    def randomized_by_site(self, study_id: int, as_of: dt.date | None) -> dict[int, int]:
        counts: dict[int, int] = {}
        for s in self._live(study_id):
            allocation = self.t.allocations.get(s.id)
            if allocation is not None and (as_of is None or allocation.randomized_on <= as_of):
                counts[s.site_id] = counts.get(s.site_id, 0) + 1
        return counts

    def screening_log(self, study_id: int, as_of: dt.date | None) -> list[ScreeningLogLine]:
        lines = [
            ScreeningLogLine(
                s.number,
                self.t.sites[s.site_id].code,
                s.registered_on,
                s.state,
                s.screen_failure_reason,
                s.screen_failure_detail,
            )
            for s in self._live(study_id)
            if as_of is None or s.registered_on <= as_of
        ]
        return sorted(lines, key=lambda line: (line.registered_on, line.number))

    def screening_log_page(
        self,
        study_id: int,
        *,
        site: str | None,
        state: str | None,
        search: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[ScreeningLogLine], int]:
        found = [
            line
            for line in reversed(self.screening_log(study_id, None))
            if (not site or line.site == site)
            and (not state or line.state == state)
            and (not search or search in line.number)
        ]
        return found[offset : offset + limit], len(found)

    def site_facts(
        self, study_id: int, as_of: dt.date, randomized: dict[str, int]
    ) -> list[SiteFacts]:
        first: dict[int, dt.date] = {}
        for s in self._live(study_id):
            if s.registered_on <= as_of:
                first[s.site_id] = min(first.get(s.site_id, s.registered_on), s.registered_on)
        sites = sorted((s for s in self.t.sites.values() if s.study_id == study_id), key=_code)
        return [
            SiteFacts(
                s.code, s.active, s.planned_activation, first.get(s.id), randomized.get(s.code, 0)
            )
            for s in sites
        ]

    def month_rows(self, study_id: int, as_of: dt.date) -> list[MonthRow]:
        live = self._live(study_id)
        registered = [s.registered_on for s in live if s.registered_on <= as_of]
        randomized = [
            a.randomized_on
            for s in live
            if (a := self.t.allocations.get(s.id)) is not None and a.randomized_on <= as_of
        ]
        return month_rows(registered, randomized, as_of)


class FakeDatabase(_Repo):
    """Verification over the committed entries' count only; backup and restore need a real
    database (tests/integration, tests/e2e)."""

    backend = "memory"

    def verify_audit(self) -> VerifyResult:
        streams = {e.stream for e in self.t.audit}
        return VerifyResult(len(self.t.audit), len(streams), "", None)

    def schema_revision(self) -> str | None:
        return None

    def snapshot(self, target: Path) -> str:
        raise AssertionError("no snapshot of the fake database: test backups on a real one")

    def holds_data(self) -> bool:
        return bool(self.t.studies)

    def replace_contents(self, source: Path) -> None:
        raise AssertionError("no restore into the fake database: test restores on a real one")


class FakeHolds(_Repo):
    """Issue 15 (lane x15a): locks, SDV marks, signatures, changes after unblinding."""

    def active_locks(self, study_id: int, subject_id: int | None) -> list[RecordLock]:
        return [
            lock
            for lock in sorted(self.t.locks.values(), key=lambda lock: lock.id)
            if lock.study_id == study_id
            and lock.unlocked_at is None
            and (lock.subject_id is None or lock.subject_id == subject_id)
        ]

    def locks(
        self, study_id: int, *, subject_id: int | None = None, active_only: bool = False
    ) -> list[RecordLock]:
        return [
            lock
            for lock in sorted(self.t.locks.values(), key=lambda lock: lock.id)
            if lock.study_id == study_id
            and (subject_id is None or lock.subject_id == subject_id)
            and not (active_only and lock.unlocked_at is not None)
        ]

    def lock(self, study_id: int, lock_id: int) -> RecordLock | None:
        found = self.t.locks.get(lock_id)
        return found if found is not None and found.study_id == study_id else None

    def add_lock(
        self,
        *,
        study_id: int,
        level: str,
        kind: str,
        subject_id: int | None,
        visit_code: str | None,
        form_code: str | None,
        seq: int | None,
        reason: str,
        locked_by: str,
        locked_name: str,
        locked_at: dt.datetime,
        locked_meaning: str,
    ) -> RecordLock:
        lock = RecordLock(
            self.t.new_id(), study_id, level, kind, subject_id, visit_code, form_code, seq,
            reason, locked_by, locked_name, locked_at, locked_meaning, None, None, None, None,
        )  # fmt: skip
        self.t.locks[lock.id] = lock
        return lock

    def unlock(
        self, lock: RecordLock, *, at: dt.datetime, by: str, name: str, reason: str
    ) -> RecordLock | None:
        stored = self.t.locks[lock.id]
        if stored.unlocked_at is not None:
            return None
        done = replace(stored, unlocked_at=at, unlocked_by=by, unlocked_name=name,
                       unlock_reason=reason)  # fmt: skip
        self.t.locks[lock.id] = done
        return done

    def subject_numbers(self, subject_ids: list[int]) -> dict[int, str]:
        return {i: self.t.subjects[i].number for i in subject_ids if i in self.t.subjects}

    def sdv_marks(
        self, *, study_id: int | None = None, subject_id: int | None = None
    ) -> list[SdvMarkRecord]:
        return [
            m
            for m in sorted(self.t.sdv_marks.values(), key=lambda m: m.id)
            if (study_id is None or m.study_id == study_id)
            and (subject_id is None or m.subject_id == subject_id)
        ]

    def add_sdv_mark(
        self,
        *,
        study_id: int,
        subject_id: int,
        form_record_id: int,
        fields: str,
        fingerprints: str,
        marked_by: str,
        marked_at: dt.datetime,
    ) -> SdvMarkRecord:
        mark = SdvMarkRecord(
            self.t.new_id(), study_id, subject_id, form_record_id, fields, fingerprints,
            marked_by, marked_at, None, None,
        )  # fmt: skip
        self.t.sdv_marks[mark.id] = mark
        return mark

    def clear_sdv_mark(self, mark_id: int, *, at: dt.datetime, reason: str) -> None:
        mark = self.t.sdv_marks[mark_id]
        if mark.cleared_at is None:
            self.t.sdv_marks[mark_id] = replace(mark, cleared_at=at, cleared_reason=reason)

    def signatures(
        self, *, study_id: int | None = None, subject_id: int | None = None
    ) -> list[SignatureRecord]:
        return [
            s
            for s in sorted(self.t.signatures.values(), key=lambda s: s.id)
            if (study_id is None or s.study_id == study_id)
            and (subject_id is None or s.subject_id == subject_id)
        ]

    def add_signature(
        self,
        *,
        study_id: int,
        subject_id: int,
        level: str,
        visit_code: str | None,
        form_record_id: int | None,
        signed_by: str,
        signed_name: str,
        signed_at: dt.datetime,
        meaning: str,
        covered: str,
    ) -> SignatureRecord:
        sig = SignatureRecord(
            self.t.new_id(), study_id, subject_id, level, visit_code, form_record_id,
            signed_by, signed_name, signed_at, meaning, covered, None, None,
        )  # fmt: skip
        self.t.signatures[sig.id] = sig
        return sig

    def invalidate_signature(self, signature_id: int, *, at: dt.datetime, reason: str) -> None:
        sig = self.t.signatures[signature_id]
        if sig.invalidated_at is None:
            self.t.signatures[signature_id] = replace(
                sig, invalidated_at=at, invalidated_reason=reason
            )

    def subject_forms(self, subject_id: int) -> list[FormRecord]:
        return sorted(
            (f for f in self.t.forms.values() if f.subject_id == subject_id), key=lambda f: f.id
        )

    def add_unblinding_change(
        self,
        *,
        study_id: int,
        subject_id: int,
        form_record_id: int,
        form_code: str,
        visit_code: str,
        field: str,
        flag: str,
        old: str,
        new: str,
        changed_at: dt.datetime,
        changed_by: str,
        reason: str | None,
    ) -> None:
        change = UnblindingChange(
            self.t.new_id(), study_id, subject_id, form_record_id, form_code, visit_code,
            field, flag, old, new, changed_at, changed_by, reason,
        )  # fmt: skip
        self.t.unblinding_changes[change.id] = change

    def unblinding_changes(
        self, study_id: int, *, subject_id: int | None = None
    ) -> list[UnblindingChange]:
        return [
            c
            for c in sorted(self.t.unblinding_changes.values(), key=lambda c: c.id)
            if c.study_id == study_id and (subject_id is None or c.subject_id == subject_id)
        ]


class FakeAuditReads(_Repo):
    """The committed audit entries of the fake store, read back like the SQL repository."""

    def for_subject(
        self, subject_id: int, *, entities: Collection[str] | None = None
    ) -> list[AuditRecord]:
        stream = f"subject:{subject_id}"
        mine = [e for e in self.t.audit if e.stream == stream]
        return [
            AuditRecord(
                seq,
                utc_iso(e.at),
                e.actor,
                e.action,
                e.entity,
                e.entity_id,
                e.old,
                e.new,
                e.reason,
            )
            for seq, e in enumerate(mine, start=1)
            if entities is None or e.entity in entities
        ]


class _PendingAudit:
    """The writer side of :class:`AuditLog`: entries wait in the unit of work until commit."""

    def __init__(self) -> None:
        self.pending: list[PendingEntry] = []

    def record(self, entry: PendingEntry) -> None:
        self.pending.append(entry)


class FakeUnitOfWork:
    audit: AuditTrail
    studies: StudyRepository
    sites: SiteRepository
    protocols: ProtocolRepository
    subjects: SubjectRepository
    allocations: AllocationRepository
    visits: VisitRepository
    forms: FormRepository
    confirmations: ConfirmationRepository
    crc: CrcRepository
    queries: DataQueryRepository
    notifications: NotificationRepository
    mail: MailOutboxRepository
    submission: SubmissionReader
    lists: ListRepository
    randomizations: RandomizationRepository
    unblindings: TrialUnblindingRepository
    requests: RequestRepository
    audit_reads: AuditReadRepository
    odm_history: OdmHistoryRepository
    supply: SupplyRepository
    users: UserRepository
    audit_entries: AuditEntryRepository
    reporting: ReportingRepository
    database: DatabaseMaintenance
    mail_delivery: MailDeliveryRepository
    study_records: StudyRecordsRepository
    consents: ConsentRepository
    exclusions: QualityExclusionRepository
    holds: HoldRepository
    guard: LockGuard

    def __init__(self, store: FakeStore, *, readonly: bool = False) -> None:
        self.store = store
        self.readonly = readonly
        self.tables = store.tables.copy()
        self.studies = FakeStudies(self)
        self.sites = FakeSites(self)
        self.protocols = FakeProtocols(self)
        self.subjects = FakeSubjects(self)
        self.allocations = FakeAllocations(self)
        self.visits = FakeVisits(self)
        self.forms = FakeForms(self)
        self.confirmations = FakeConfirmations(self)
        self.crc = FakeCrc(self)
        self.queries = FakeDataQueries(self)
        self.notifications = FakeNotifications(self)
        self.mail = FakeMailOutbox(self)
        self.submission = FakeSubmission(self)
        self.lists = FakeLists(self)
        self.randomizations = FakeRandomizations(self)
        self.unblindings = FakeTrialUnblindings(self)
        self.requests = FakeRequests(self)
        self.audit_reads = FakeAuditReads(self)
        self.odm_history = FakeOdmHistory(self)
        self.supply = FakeSupply(self)
        self.users = FakeUsers(self)
        self.audit_entries = FakeAuditEntries(self)
        self.reporting = FakeReporting(self)
        self.database = FakeDatabase(self)
        self.mail_delivery = FakeMailDelivery(self)
        self.study_records = FakeStudyRecords(self)
        self.consents = FakeConsents(self)
        self.exclusions = FakeExclusions(self)
        self._pending = _PendingAudit()
        self.holds = FakeHolds(self)
        self.guard = LockGuard(self.holds, self.forms)
        self.audit = AuditLog(self._pending, self.protocols, self.guard)

    @property
    def session(self) -> Session:
        return self._no_sql()

    def _no_sql(self) -> NoReturn:
        raise AssertionError(
            "the fake unit of work has no SQL session: this service still holds SQL "
            "(issue 13, wave 2); test it in tests/integration"
        )

    def __enter__(self) -> Self:
        self.tables = self.store.tables.copy()
        self._pending.pending.clear()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pending.pending.clear()

    def record(self, entry: PendingEntry) -> None:
        self._pending.record(entry)

    def commit(self) -> None:
        self.tables.audit.extend(self._pending.pending)
        self._pending.pending.clear()
        self.store.tables = self.tables
        self.tables = self.store.tables.copy()
        self.store.commits += 1

    def lock_study(self, study_id: int, *, shared: bool = False) -> bool:
        self.tables.row_locks.append(("study", study_id, shared))
        return study_id in self.tables.studies


class FakeUnitOfWorkFactory:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def __call__(self, *, readonly: bool = False) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.store, readonly=readonly)


def _typed(store: FakeStore) -> tuple[UnitOfWork, UnitOfWorkFactory]:
    """mypy checks here that the fakes implement the protocols the services use."""
    return FakeUnitOfWork(store), FakeUnitOfWorkFactory(store)
