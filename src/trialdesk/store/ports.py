"""The unit of work and its repositories as typed protocols.

Services are written against these; :mod:`trialdesk.store.uow` implements them on SQLAlchemy
and ``tests/fakes.py`` in memory. mypy checks both against the same protocol, so the fake
cannot drift from the real thing.

``session`` and ``record`` remain for the services that still hold SQL (wave 2 of issue 13
moves them onto repositories and removes both from the protocol).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from sqlalchemy.orm import Session

from trialdesk.store.audit import PendingEntry
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
from trialdesk.store.submission import StudySubmission


class StudyRepository(Protocol):
    def get(self, study_id: int) -> Study | None: ...


class SiteRepository(Protocol):
    def get(self, site_id: int) -> Site: ...

    def by_code(self, study_id: int, code: str) -> Site | None: ...

    def take_subject_number(self, site_id: int) -> int:
        """The site's next subject sequence number, taken atomically (no gaps, no twins)."""
        ...


class ProtocolRepository(Protocol):
    def get(self, version_id: int) -> ProtocolVersion:
        """Read once per unit of work: its name, version and SHA-256 never change (PROT-3);
        ``status`` and ``current`` are as first read."""
        ...

    def text(self, version_id: int) -> str: ...

    def newest(self, study_id: int) -> ProtocolVersion | None:
        """The newest signed version (it may take effect later)."""
        ...

    def in_force(self, study_id: int, on: dt.date) -> ProtocolVersion | None:
        """The newest signed version in force on the site-local date ``on`` (PROT-2)."""
        ...


class SubjectRepository(Protocol):
    def get(self, study_id: int, number: str) -> Subject | None: ...

    def by_id(self, subject_id: int) -> Subject: ...

    def read(self, study_id: int, number: str) -> SubjectRead | None:
        """The subject with its site, protocol version, allocation and the study's unblinding
        flag: the per-subject part of a subject view, in one statement."""
        ...

    def read_of(self, subject: Subject) -> SubjectRead: ...

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
    ) -> Subject: ...

    def update(self, subject: Subject, values: Mapping[str, Any]) -> Subject | None:
        """Write ``values`` only if the subject still has the state and version it was read
        with (a guarded update); the new record, or None when someone else changed it first.
        The version is incremented."""
        ...

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
        """Subjects (read as for a view) ordered by number, and the total matching."""
        ...

    def on_study(
        self,
        study_id: int,
        states: Collection[str],
        *,
        site_ids: Collection[int] | None,
        site_code: str | None,
    ) -> list[tuple[Subject, Site]]:
        """Subjects in ``states`` with their sites, ordered by site code and number."""
        ...

    def find_any_site(self, study_id: int, number: str) -> Subject | None:
        """For refusal audits only: the subject whatever the caller's scope."""
        ...


class AllocationRepository(Protocol):
    def for_subject(self, subject_id: int) -> Allocation | None: ...


class VisitRepository(Protocol):
    def for_subject(self, subject_id: int) -> list[Visit]: ...

    def for_subjects(self, subject_ids: Collection[int]) -> dict[int, list[Visit]]: ...

    def get(self, subject_id: int, visit_code: str) -> Visit | None: ...

    def add(
        self,
        *,
        subject_id: int,
        visit_code: str,
        status: str,
        visit_date: dt.date | None,
        timing: str | None,
        window_start: dt.date,
        window_end: dt.date,
        missed_reason: str | None,
        protocol_version_id: int,
        recorded_at: dt.datetime,
        recorded_by: str,
    ) -> Visit: ...

    def count_missed(self, subject_id: int) -> int: ...


class FormRepository(Protocol):
    def latest(
        self, subject_id: int, form_code: str, visit_code: str, *, seq: int | None = None
    ) -> FormRecord | None: ...

    def get(self, record_id: int) -> FormRecord: ...

    def max_seq(self, subject_id: int, form_code: str, visit_code: str) -> int: ...

    def for_subject(self, subject_id: int, *, visit_code: str = "") -> list[FormRecord]:
        """Saved forms at one visit ("" for screening), in saving order."""
        ...

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
    ) -> FormRecord: ...

    def update_data(self, record: FormRecord, data: str, at: dt.datetime) -> FormRecord | None:
        """Guarded on the record's version; None when someone else corrected it first."""
        ...


class ConfirmationRepository(Protocol):
    def for_subject(self, subject_id: int) -> dict[str, bool]: ...

    def get(self, subject_id: int, criterion_id: str) -> Confirmation | None: ...

    def save(
        self,
        *,
        subject_id: int,
        criterion_id: str,
        confirmed: bool,
        signed_by: str,
        signed_name: str,
        signed_at: dt.datetime,
        meaning: str,
    ) -> Confirmation:
        """Insert, or replace the previous answer for the criterion."""
        ...


class CrcRepository(Protocol):
    def open_case(
        self,
        *,
        study_id: int,
        subject_id: int,
        kind: str,
        at: dt.datetime,
        therapy_id: int | None = None,
    ) -> CrcCase: ...

    def pending(self, study_id: int, statuses: Sequence[str]) -> list[CaseDetail]:
        """Cases in ``statuses`` with their subjects, sites and therapies, oldest first."""
        ...

    def detail(self, case: CrcCase) -> CaseDetail: ...

    def undecided_eligibility(self, subject_id: int) -> CrcCase | None:
        """The newest eligibility case not decided yet."""
        ...

    def therapy_case(
        self, study_id: int, case_id: int, *, lock: bool = False
    ) -> CrcCase | None: ...

    def decide(self, case: CrcCase, values: Mapping[str, Any]) -> CrcCase: ...

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
    ) -> Therapy: ...

    def therapy(self, therapy_id: int) -> Therapy: ...


class DataQueryRepository(Protocol):
    def get(self, study_id: int, query_id: int, *, lock: bool = False) -> DataQuery | None: ...

    def in_progress(self, form_record_id: int, field: str) -> int | None:
        """The id of a query on that field that is not closed, if any."""
        ...

    def add(
        self,
        *,
        study_id: int,
        subject_id: int,
        form_record_id: int,
        form_code: str,
        visit_code: str,
        field: str,
        text: str,
        raised_by: str,
        raised_at: dt.datetime,
    ) -> DataQuery: ...

    def update(self, query: DataQuery, values: Mapping[str, Any]) -> DataQuery: ...

    def listing(
        self,
        study_id: int,
        *,
        statuses: Collection[str],
        site_id: int | None,
        site_ids: Collection[int] | None,
    ) -> list[tuple[DataQuery, Subject, Site]]:
        """Queries with their subjects and sites, oldest first."""
        ...


class NotificationRepository(Protocol):
    def add(
        self,
        *,
        study_id: int,
        recipient_role: str,
        subject_id: int | None,
        text: str,
        at: dt.datetime,
    ) -> None: ...


class MailOutboxRepository(Protocol):
    """Mails written in the action's transaction, sent after it commits (issue 12)."""

    def addresses(self, *, study_id: int, role: str, site_id: int | None) -> list[str]:
        """Addresses of the active holders of ``role`` (at ``site_id``: a study-wide grant
        covers every site)."""
        ...

    def add(
        self,
        *,
        study_id: int | None,
        kind: str,
        recipient: str,
        subject: str,
        body_enc: bytes,
        at: dt.datetime,
    ) -> None: ...

    def after_commit(self, wake: Callable[[], None]) -> None: ...


class AuditTrail(Protocol):
    """Audit entries of this unit of work, written by ``commit`` in the same transaction."""

    def subject(
        self,
        actor: str,
        subject: Subject,
        action: str,
        *,
        at: dt.datetime,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        entity: str = "subject",
        entity_id: str | None = None,
        protocol_sha256: str | None = None,
    ) -> None:
        """An entry in the subject's stream; the protocol is the subject's own version
        unless another is named."""
        ...

    def stream(
        self,
        stream: str,
        actor: str,
        action: str,
        *,
        at: dt.datetime,
        entity: str,
        entity_id: str,
        study_id: int | None = None,
        subject_id: int | None = None,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        protocol_sha256: str | None = None,
    ) -> None: ...

    def record(self, entry: PendingEntry) -> None: ...


class SubmissionReader(Protocol):
    """The study as the submission exports read it (issue 16, x16a)."""

    def read(self, study_id: int) -> StudySubmission: ...


class UnitOfWork(Protocol):
    """One transaction per user action; nothing is kept unless ``commit`` is called."""

    readonly: bool
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

    @property
    def session(self) -> Session:
        """The SQL session, for services not yet on repositories (wave 2 removes it)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def record(self, entry: PendingEntry) -> None:
        """Buffer an audit entry (prefer ``audit``)."""
        ...

    def commit(self) -> None: ...

    def lock_study(self, study_id: int, *, shared: bool = False) -> bool:
        """Serialize this transaction with others on the study (PostgreSQL: the study row,
        ``FOR UPDATE`` or, ``shared``, ``FOR KEY SHARE``; SQLite writers are serial anyway).
        False when there is no such study."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, readonly: bool = False) -> UnitOfWork: ...
