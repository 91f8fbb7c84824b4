"""The unit of work on SQLAlchemy: one transaction per user action, with the repositories.

Nothing is kept unless ``commit()`` is called, and the audit entries join the same
transaction (chained by ``commit``). A unit of work that ends without an error and without
writes still pending ends its transaction with COMMIT, not ROLLBACK: psycopg drops its
prepared statements on every ROLLBACK, so read-only work that rolled back re-planned every
statement on the next call (issue 13: -45 % server CPU).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from trialdesk.store.allocation import SqlLists, SqlRandomizations, SqlTrialUnblindings
from trialdesk.store.audit import AuditWriter, PendingEntry
from trialdesk.store.audit_log import AuditLog
from trialdesk.store.audit_reads import SqlAuditReads
from trialdesk.store.consents import SqlConsents, SqlQualityExclusions
from trialdesk.store.crc import SqlCrc
from trialdesk.store.data_queries import SqlDataQueries
from trialdesk.store.forms import SqlConfirmations, SqlForms
from trialdesk.store.holds import SqlHolds
from trialdesk.store.lock_guard import LockGuard
from trialdesk.store.mail_outbox import SqlMailDelivery, SqlMailOutbox
from trialdesk.store.maintenance import SqlDatabase
from trialdesk.store.notifications import SqlNotifications
from trialdesk.store.odm_history import SqlOdmHistory
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
    SupplyRepository,
    TrialUnblindingRepository,
    UserRepository,
    VisitRepository,
)
from trialdesk.store.ports import UnitOfWork as UnitOfWork
from trialdesk.store.ports import UnitOfWorkFactory as UnitOfWorkFactory
from trialdesk.store.protocols import SqlProtocols
from trialdesk.store.reading import SqlAuditEntries, SqlReporting, SqlUsers
from trialdesk.store.requests import SqlRequests
from trialdesk.store.sites import STUDY, SqlSites, SqlStudies
from trialdesk.store.sql import for_update
from trialdesk.store.study_records import SqlStudyRecords
from trialdesk.store.subjects import SqlAllocations, SqlSubjects
from trialdesk.store.supply import SqlSupply
from trialdesk.store.visits import SqlVisits

_STUDY_ROW = select(STUDY.table.c.id).where(STUDY.table.c.id == bindparam("id"))


class SqlUnitOfWork:
    """Implements :class:`trialdesk.store.ports.UnitOfWork`."""

    session: Session
    audit: AuditTrail
    _log: AuditLog
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
    consents: ConsentRepository  # issue 15 (x15b)
    exclusions: QualityExclusionRepository  # issue 15 (x15b)
    holds: HoldRepository
    guard: LockGuard

    def __init__(self, factory: sessionmaker[Session], *, readonly: bool = False) -> None:
        self._factory = factory
        self.readonly = readonly
        self._committed = False

    def __enter__(self) -> Self:
        session = self.session = self._factory()
        self._writer = AuditWriter(session)
        self.studies = SqlStudies(session)
        self.sites = SqlSites(session)
        self.protocols = protocols = SqlProtocols(session)
        self.subjects = SqlSubjects(session, protocols)
        self.allocations = SqlAllocations(session)
        self.visits = SqlVisits(session)
        self.forms = SqlForms(session)
        self.confirmations = SqlConfirmations(session)
        self.crc = SqlCrc(session)
        self.queries = SqlDataQueries(session)
        self.notifications = SqlNotifications(session)
        self.mail = SqlMailOutbox(session)
        self.lists = SqlLists(session)
        self.randomizations = SqlRandomizations(session)
        self.unblindings = SqlTrialUnblindings(session)
        self.requests = SqlRequests(session)
        self.audit_reads = SqlAuditReads(session)
        self.odm_history = SqlOdmHistory(session)
        self.supply = SqlSupply(session)
        self.users = SqlUsers(session)
        self.audit_entries = SqlAuditEntries(session)
        self.reporting = SqlReporting(session)
        self.database = SqlDatabase(session)
        self.mail_delivery = SqlMailDelivery(session)
        self.study_records = SqlStudyRecords(session)
        self.consents = SqlConsents(session)  # issue 15 (x15b)
        self.exclusions = SqlQualityExclusions(session)  # issue 15 (x15b)
        self.audit = self._log = AuditLog(self._writer, protocols)
        self.holds = SqlHolds(session)
        self.guard = LockGuard(self.holds, self.forms)
        self.audit = self._log = AuditLog(self._writer, protocols, self.guard)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            if exc_type is None and self._reads_only():
                session.commit()  # nothing to keep: COMMIT keeps psycopg's prepared statements
            else:
                session.rollback()
        finally:
            session.close()

    def _reads_only(self) -> bool:
        """True when nothing written since the last commit can be lost by committing: a
        read-only unit of work, or reads after this one's explicit commit."""
        if not (self.readonly or self._committed):
            return False
        session = self.session
        return not (session.new or session.dirty or session.deleted or self._log.unwritten)

    def record(self, entry: PendingEntry) -> None:
        self._log.record(entry)

    def commit(self) -> None:
        self._writer.flush()
        self.session.commit()
        self._log.unwritten = 0
        self._committed = True

    def lock_study(self, study_id: int, *, shared: bool = False) -> bool:
        stmt = for_update(self.session, _STUDY_ROW, shared=shared)
        return self.session.connection().execute(stmt, {"id": study_id}).first() is not None


class SqlUnitOfWorkFactory:
    """Makes units of work; read-only ones skip SQLite's write lock."""

    def __init__(self, write: sessionmaker[Session], read: sessionmaker[Session]) -> None:
        self._write = write
        self._read = read

    def __call__(self, *, readonly: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._read if readonly else self._write, readonly=readonly)
