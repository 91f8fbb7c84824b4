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
from types import TracebackType
from typing import Any, NoReturn, Self

from sqlalchemy.orm import Session

from trialdesk.store.audit import PendingEntry
from trialdesk.store.audit_log import AuditLog
from trialdesk.store.ports import (
    AllocationRepository,
    AuditTrail,
    ConfirmationRepository,
    CrcRepository,
    DataQueryRepository,
    FormRepository,
    MailOutboxRepository,
    NotificationRepository,
    ProtocolRepository,
    SiteRepository,
    StudyRepository,
    SubjectRepository,
    SubmissionReader,
    UnitOfWork,
    UnitOfWorkFactory,
    VisitRepository,
)
from trialdesk.store.records import (
    Allocation,
    CaseDetail,
    Confirmation,
    CrcCase,
    DataQuery,
    FormRecord,
    ProtocolVersion,
    Site,
    Study,
    Subject,
    SubjectRead,
    Therapy,
    Visit,
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
    queries: dict[int, DataQuery] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    mail_addresses: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    """Addresses of a role's holders by (study, role); the tests set them."""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    audit: list[PendingEntry] = field(default_factory=list)
    last_id: int = 0

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
    ) -> tuple[list[SubjectRead], int]:
        found = [
            s
            for s in self.t.subjects.values()
            if s.study_id == study_id
            and (site_ids is None or s.site_id in site_ids)
            and (site_code is None or self.t.sites[s.site_id].code == site_code)
            and (state is None or s.state == state)
        ]
        found.sort(key=lambda s: s.number)
        return [self.read_of(s) for s in found[offset : offset + limit]], len(found)

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
                if (q.form_record_id, q.field) == (form_record_id, field) and q.status != "closed"
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
            {"study_id": study_id, "role": recipient_role, "subject_id": subject_id, "text": text}
        )


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
        )

    def after_commit(self, wake: Callable[[], None]) -> None:
        """Nothing is delivered from the fake; delivery is tested against a real server."""


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
        self._pending = _PendingAudit()
        self.audit = AuditLog(self._pending, self.protocols)

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
        return study_id in self.tables.studies


class FakeUnitOfWorkFactory:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def __call__(self, *, readonly: bool = False) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.store, readonly=readonly)


def _typed(store: FakeStore) -> tuple[UnitOfWork, UnitOfWorkFactory]:
    """mypy checks here that the fakes implement the protocols the services use."""
    return FakeUnitOfWork(store), FakeUnitOfWorkFactory(store)
