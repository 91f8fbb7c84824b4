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
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from sqlalchemy.orm import Session

from trialdesk.reports.enrolment import MonthRow, SiteFacts
from trialdesk.store.audit import PendingEntry, VerifyResult
from trialdesk.store.holds import RecordLock, SdvMarkRecord, SignatureRecord, UnblindingChange
from trialdesk.store.lock_guard import LockGuard
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
    InErrorRandomization,
    Mail,
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
from trialdesk.store.submission import StudySubmission


class StudyRepository(Protocol):
    def get(self, study_id: int) -> Study | None: ...


class SiteRepository(Protocol):
    def get(self, site_id: int) -> Site: ...

    def by_code(self, study_id: int, code: str) -> Site | None: ...

    def take_subject_number(self, site_id: int) -> int:
        """The site's next subject sequence number, taken atomically (no gaps, no twins)."""
        ...

    def of_study(self, study_id: int) -> list[Site]:
        """Every site of the study, by code."""
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
        search: str | None = None,
        order: str = "number",
        descending: bool = False,
    ) -> tuple[list[SubjectRead], int]:
        """Subjects (read as for a view) matching the filters (``search``: part of the
        number), sorted by ``order`` (number, registered, state, site; ties by number), and
        the total matching."""
        ...

    def state_counts(self, study_id: int, *, site_ids: Collection[int] | None) -> dict[str, int]:
        """How many subjects are in each state (issue 14)."""
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

    def marks_for_subjects(self, subject_ids: Collection[int]) -> list[FormMark]:
        """Issue 14: every saved copy of these subjects' forms, without data, oldest first."""
        ...

    def update_data(self, record: FormRecord, data: str, at: dt.datetime) -> FormRecord | None:
        """Guarded on the record's version; None when someone else corrected it first."""
        ...

    def all_of_subject(self, subject_id: int) -> list[FormRecord]:
        """Every record of the subject, in saving order (issue 15: the data-quality rules)."""
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

    # issue 14 (x14b): the dossier
    def case(self, study_id: int, case_id: int, *, lock: bool = False) -> CrcCase | None:
        """A case of either kind, by id within the study."""
        ...

    def notes(self, case_id: int) -> list[CaseNote]:
        """The case's rounds (requests and replies) in the order written."""
        ...

    def add_note(
        self,
        *,
        case_id: int,
        kind: str,
        text: str,
        written_by: str,
        written_name: str,
        at: dt.datetime,
    ) -> CaseNote: ...

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
        origin: str = "manual",
        rule_id: str | None = None,
        discrepancy_key: str | None = None,
        severity: str | None = None,
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

    # issue 14 (x14b)
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
        """One page of the queries matching the filters, and how many match in all."""
        ...

    def unresolved_for_subjects(
        self, subject_ids: Collection[int]
    ) -> list[tuple[int, str, str, str]]:
        """(subject id, form, visit, status) of each query not closed on these subjects."""

    def of_rules(self, subject_id: int) -> list[DataQuery]:
        """The queries data-quality rules opened on the subject (issue 15, REC-6)."""
        ...

    def of_subject(self, subject_id: int) -> list[DataQuery]:
        """Every query on the subject's records (issue 15: "not available" answers)."""
        ...

    def grants_of(self, study_id: int, username: str) -> list[tuple[str, int | None]]:
        """``(role, site id or None)`` of an active user in the study (REC-7: assignees)."""
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

    # lane x13a: reading them (trial unblinding's notifications service)
    def for_roles(
        self, study_id: int, roles: Collection[str], *, unread_only: bool
    ) -> list[NotificationRead]:
        """Notifications to any of ``roles``, newest first."""
        ...

    def get(self, notification_id: int) -> NotificationRead | None: ...

    def mark_read(self, notification_id: int, at: dt.datetime) -> NotificationRead:
        """Set the reading time if not set yet (the first one is kept)."""
        ...


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


# --- allocation (issue 13, lane x13a) ---------------------------------------------------------


class ListRepository(Protocol):
    """Allocation lists, their strata (cursors) and their encrypted slots (RAND-3)."""

    def site_codes(self, study_id: int) -> list[str]:
        """The study's site codes in order: the levels of the site stratification factor."""
        ...

    def active(self, study_id: int, mode: str) -> AllocationList | None: ...

    def get(self, list_id: int) -> AllocationList | None: ...

    def of_study(self, study_id: int, mode: str | None = None) -> list[AllocationList]:
        """Every list of the study (of ``mode``), oldest first, discarded ones included."""
        ...

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
    ) -> AllocationList: ...

    def deactivate(self, lst: AllocationList) -> AllocationList: ...

    def cursor(self, list_id: int, stratum: str, *, lock: bool = False) -> StratumCursor | None:
        """``lock``: held until commit (one user of the stratum at a time)."""
        ...

    def cursors(self, list_id: int) -> list[StratumCursor]:
        """Ordered by stratum."""
        ...

    def add_cursor(self, list_id: int, stratum: str, size: int) -> StratumCursor: ...

    def update_cursor(self, cursor: StratumCursor, values: Mapping[str, Any]) -> StratumCursor:
        """For a cursor the caller holds locked."""
        ...

    def add_slots(self, list_id: int, stratum: str, slots: Sequence[tuple[int, bytes]]) -> None:
        """(sequence, encrypted payload) pairs."""
        ...

    def slots(self, list_id: int, stratum: str | None = None) -> list[AllocationSlot]:
        """Ordered by stratum and sequence."""
        ...

    def last_slot(self, list_id: int, stratum: str) -> AllocationSlot | None: ...

    def sizes(self, list_id: int) -> tuple[int, int]:
        """(strata, slots)."""
        ...

    def used(self, list_id: int) -> int:
        """Slots already drawn."""
        ...

    def draw(
        self, study_id: int, mode: str, stratum: str, *, subject_id: int, at: dt.datetime
    ) -> TakenSlot | None:
        """The next unused slot of the stratum of the active list of ``mode``, marked used by
        the subject, under the cursor's lock; None when there is no list, no such stratum or
        no slot left."""
        ...

    def take_slot(self, cursor: StratumCursor, *, subject_id: int, at: dt.datetime) -> TakenSlot:
        """Draw from a cursor the caller holds locked and that has a slot left."""
        ...


class RandomizationRepository(Protocol):
    def read(self, study_id: int, number: str) -> tuple[SubjectRead, ProtocolVersion] | None:
        """The subject (as :meth:`SubjectRepository.read`) and the study's newest signed
        protocol version, in one statement."""
        ...

    def for_subject(self, subject_id: int) -> Randomization | None: ...

    def by_key(self, key: str) -> Randomization | None:
        """By stored (scoped) idempotency key."""
        ...

    def parallel_writers(self) -> int | None:
        """An upper bound on randomizations in flight at once (the connection limit); None
        where writers are serialized."""
        ...

    def counts(self, study_id: int, *, site_id: int, country: str) -> CapCounts: ...

    def allocated(self, study_id: int) -> list[tuple[bytes, str]]:
        """(encrypted arm, stratification levels as JSON) of each randomization not in
        error: what minimization counts."""
        ...

    def add(
        self,
        *,
        site_id: int,
        site_code: str,
        study_id: int,
        subject_id: int,
        slot_id: int | None,
        stratum: str,
        factors: str,
        arm_enc: bytes,
        detail_enc: bytes | None,
        randomized_on: dt.date,
        randomized_at: dt.datetime,
        randomized_by: str,
        idempotency_key: str | None,
        protocol_version_id: int,
    ) -> Randomization:
        """Numbered ``<site>-R<NNN>`` from the site's counter, taken atomically."""
        ...

    def mark_in_error(self, rand: Randomization, reason: str) -> Randomization | None: ...


class TrialUnblindingRepository(Protocol):
    def pending(self, study_id: int) -> TrialUnblinding | None: ...

    def latest(self, study_id: int) -> TrialUnblinding | None: ...

    def add(
        self,
        *,
        study_id: int,
        reason: str,
        requested_by: str,
        requested_name: str,
        requested_at: dt.datetime,
        requested_meaning: str,
    ) -> TrialUnblinding: ...

    def confirm(
        self, pending: TrialUnblinding, values: Mapping[str, Any]
    ) -> TrialUnblinding | None: ...

    def unblind_study(self, study_id: int, at: dt.datetime) -> None: ...

    def in_state(self, study_id: int, state: str, site_ids: set[int] | None) -> int: ...

    def user_id(self, username: str) -> int | None: ...


class RequestRepository(Protocol):
    """What every authenticated request reads first (one read transaction)."""

    def token(self, token_hash: str, kind: str) -> TokenRead | None: ...

    def study(self, code: str) -> StudyHead | None: ...

    def touch(self, token_id: int, at: dt.datetime) -> None:
        """Record the session's last use."""
        ...


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


class AuditReadRepository(Protocol):
    """Issue 14 (x14b): a subject's audit entries read back, for query threads and the
    history of each value beside the data."""

    def for_subject(
        self, subject_id: int, *, entities: Collection[str] | None = None
    ) -> list[AuditRecord]: ...


# --- issue 15 (lane x15a): locks, SDV marks, signatures, changes after unblinding -------


class HoldRepository(Protocol):
    """Records that hold (:mod:`trialdesk.store.holds`); rows are never deleted."""

    def active_locks(self, study_id: int, subject_id: int | None) -> list[RecordLock]:
        """Active study locks and, with ``subject_id``, the subject's active record locks."""
        ...

    def locks(
        self, study_id: int, *, subject_id: int | None = None, active_only: bool = False
    ) -> list[RecordLock]: ...

    def lock(self, study_id: int, lock_id: int) -> RecordLock | None: ...

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
    ) -> RecordLock: ...

    def unlock(
        self, lock: RecordLock, *, at: dt.datetime, by: str, name: str, reason: str
    ) -> RecordLock | None:
        """None when someone else lifted it first."""
        ...

    def subject_numbers(self, subject_ids: list[int]) -> dict[int, str]: ...

    def sdv_marks(
        self, *, study_id: int | None = None, subject_id: int | None = None
    ) -> list[SdvMarkRecord]:
        """Marks, cleared ones too (x16b's ODM export reads them by study)."""
        ...

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
    ) -> SdvMarkRecord: ...

    def clear_sdv_mark(self, mark_id: int, *, at: dt.datetime, reason: str) -> None: ...

    def signatures(
        self, *, study_id: int | None = None, subject_id: int | None = None
    ) -> list[SignatureRecord]:
        """Signatures, invalidated ones too (x16b's ODM export reads them by study)."""
        ...

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
    ) -> SignatureRecord: ...

    def invalidate_signature(self, signature_id: int, *, at: dt.datetime, reason: str) -> None: ...

    def subject_forms(self, subject_id: int) -> list[FormRecord]: ...

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
    ) -> None: ...

    def unblinding_changes(
        self, study_id: int, *, subject_id: int | None = None
    ) -> list[UnblindingChange]: ...


# --- supply (lane x13b, issue 13) -----------------------------------------------------------


class SupplyRepository(Protocol):
    """Lots, shipments, devices and the device log (SUP-1, SUP-2)."""

    def lot(self, study_id: int, lot_number: str) -> DeviceLot | None: ...

    def lot_by_id(self, lot_id: int) -> DeviceLot: ...

    def lots(self, study_id: int) -> list[DeviceLot]:
        """By lot number."""
        ...

    def add_lot(self, **values: Any) -> DeviceLot: ...

    def update_lot(self, lot: DeviceLot, values: Mapping[str, Any]) -> DeviceLot: ...

    def device(self, study_id: int, serial: str) -> Device | None: ...

    def registered(self, study_id: int, serials: Collection[str]) -> list[str]:
        """Which of ``serials`` the study already has."""
        ...

    def add_device(self, **values: Any) -> Device: ...

    def devices_of_lot(self, lot_id: int, statuses: Collection[str] | None = None) -> list[Device]:
        """By serial; only those in ``statuses`` when given."""
        ...

    def devices_of_shipment(self, shipment_id: int) -> list[Device]: ...

    def devices_at_site(self, site_id: int) -> list[tuple[Device, DeviceLot]]:
        """Devices assigned to the site (any state), each with its lot, by serial."""
        ...

    def count_at_site(self, site_id: int, status: str, *, usable_on: dt.date | None = None) -> int:
        """Devices of the site in ``status``; with ``usable_on``, only lots not expired then."""
        ...

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
        """One page of the devices listed at ``visible`` sites in their listed states
        (issue 14, f3), filtered and sorted (DEVICE_ORDERS), with the total before paging."""
        ...

    def move(
        self, device: Device, sources: Collection[str], values: Mapping[str, Any]
    ) -> Device | None:
        """The guarded status change (version and one of ``sources``); None when the device
        changed meanwhile."""
        ...

    def add_event(self, **values: Any) -> None: ...

    def count_events(self, site_id: int, kind: str) -> int: ...

    def last_return_site(self, device_id: int) -> int | None: ...

    def stocked_sites(self, study_id: int) -> set[int]:
        """Sites that hold or have held a device of the study."""
        ...

    def uses(self, lot_id: int) -> list[DeviceUse]:
        """Every procedure use of a device of the lot, in the order recorded."""
        ...

    def shipment(self, study_id: int, number: str) -> DeviceShipment | None: ...

    def shipment_by_id(self, shipment_id: int) -> DeviceShipment: ...

    def shipments(self, study_id: int) -> list[DeviceShipment]: ...

    def count_shipments(self, study_id: int) -> int: ...

    def add_shipment(self, **values: Any) -> DeviceShipment: ...

    def update_shipment(
        self, shipment: DeviceShipment, values: Mapping[str, Any]
    ) -> DeviceShipment: ...

    def in_transit_shipments(self, study_id: int) -> set[int]: ...

    def supplied_sites(self, study_id: int) -> set[int]: ...

    def shipped_serials(self, shipment_id: int) -> list[str]: ...


# --- the rest of the seam (lane x13b, issue 13) -----------------------------------------------


class UserRepository(Protocol):
    def get(self, user_id: int) -> User | None: ...

    def set_timezone(self, user_id: int, zone: str | None) -> None: ...


class AuditEntryRepository(Protocol):
    def stream(self, stream: str) -> list[AuditEntry]:
        """The stored entries of one stream, in chain order."""
        ...

    def count(self, query: AuditQuery) -> int: ...

    def find(
        self, query: AuditQuery, *, offset: int = 0, limit: int | None = None
    ) -> list[AuditEntry]:
        """The entries ``query`` selects, in the order written."""
        ...

    def subject_numbers(self, subject_ids: Collection[int]) -> dict[int, str]: ...


class ReportingRepository(Protocol):
    def registered_by_site(self, study_id: int, as_of: dt.date | None) -> dict[int, int]: ...

    def randomized_by_site(self, study_id: int, as_of: dt.date | None) -> dict[int, int]: ...

    def screening_log(self, study_id: int, as_of: dt.date | None) -> list[ScreeningLogLine]:
        """Live subjects registered on or before ``as_of``, by registration date and number."""
        ...

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
        """Issue 14 (x14b): one page of the log, newest first, and the total matching."""
        ...

    def site_facts(
        self, study_id: int, as_of: dt.date, randomized: dict[str, int]
    ) -> list[SiteFacts]: ...

    def month_rows(self, study_id: int, as_of: dt.date) -> list[MonthRow]: ...


class DatabaseMaintenance(Protocol):
    """The database as a whole, for the local operator (verification, backup, restore)."""

    @property
    def backend(self) -> str:
        """The dialect's name (sqlite, postgresql), recorded in a backup's manifest."""
        ...

    def verify_audit(self) -> VerifyResult: ...

    def schema_revision(self) -> str | None: ...

    def snapshot(self, target: Path) -> str: ...

    def holds_data(self) -> bool: ...

    def replace_contents(self, source: Path) -> None: ...


class MailDeliveryRepository(Protocol):
    """The sender's side of the outbox: due mails, claims, outcomes, the operator's list."""

    def due(self, now: dt.datetime, *, max_attempts: int, force: bool) -> list[int]: ...

    def claim(self, mail_id: int, now: dt.datetime, until: dt.datetime) -> Mail | None:
        """The mail, claimed until ``until``; None when another sender holds it or it was
        sent."""
        ...

    def get(self, mail_id: int) -> Mail | None: ...

    def update(self, mail_id: int, values: Mapping[str, Any]) -> None: ...

    def listing(self, *, unsent_only: bool) -> list[Mail]: ...

    def waiting(self) -> int: ...


class StudyRecordsRepository(Protocol):
    """A study's clinical records read whole, for the endpoint analyses."""

    def randomized(
        self, study_id: int, site_ids: Collection[int] | None
    ) -> list[tuple[Subject, Allocation, Site]]:
        """Randomized live (non-test) subjects, in ``site_ids`` when given, by number."""
        ...

    def visits(self, study_id: int) -> list[Visit]: ...

    def therapies(self, study_id: int) -> list[Therapy]: ...

    def forms(self, study_id: int) -> list[FormRecord]:
        """By subject and sequence."""
        ...

    def procedures_with_arm(self, study_id: int, form_code: str) -> list[tuple[FormRecord, bytes]]:
        """Live subjects' concealed procedure records with the encrypted arm (not in error)."""
        ...

    def live_subjects(self, study_id: int, site_ids: Collection[int] | None) -> list[Subject]:
        """Live (non-test) subjects, in ``site_ids`` when given, by number."""
        ...

    def allocations_of(self, subject_ids: Collection[int]) -> dict[int, Allocation]: ...

    def forms_of(self, subject_ids: Collection[int], form_code: str) -> list[FormRecord]: ...

    def visits_of(self, subject_ids: Collection[int]) -> list[Visit]: ...

    def in_error(self, subject_ids: Collection[int]) -> list[InErrorRandomization]: ...

    def live_crc_cases(self, study_id: int) -> list[CrcCase]: ...

    def audit_actions(self, study_id: int, actions: Collection[str]) -> list[AuditEntry]: ...

    def trial_unblindings(self, study_id: int) -> list[TrialUnblindingEvent]: ...


# --- issue 15 (lane x15b): consents, withdrawals, data-quality exclusions ----------------------


class ConsentRepository(Protocol):
    def for_subject(self, subject_id: int) -> list[Consent]: ...

    def for_subjects(self, subject_ids: Collection[int]) -> dict[int, list[Consent]]: ...

    def add(
        self,
        *,
        study_id: int,
        subject_id: int,
        document: str,
        version: str,
        signed_on: dt.date,
        protocol_version_id: int,
        recorded_by: str,
        recorded_at: dt.datetime,
    ) -> Consent: ...

    def withdrawal(self, subject_id: int) -> Withdrawal | None: ...

    def add_withdrawal(
        self,
        *,
        subject_id: int,
        kind: str,
        contact_allowed: bool,
        form_record_id: int | None,
        withdrawn_on: dt.date,
        recorded_by: str,
        recorded_at: dt.datetime,
    ) -> Withdrawal: ...


class QualityExclusionRepository(Protocol):
    def active(self, subject_id: int) -> list[DqExclusion]: ...

    def get(self, study_id: int, exclusion_id: int) -> DqExclusion | None: ...

    def add(
        self,
        *,
        study_id: int,
        subject_id: int,
        rule_id: str,
        form_code: str,
        visit_code: str,
        seq: int,
        reason: str,
        by: str,
        at: dt.datetime,
    ) -> DqExclusion: ...

    def revoke(self, exclusion: DqExclusion, *, by: str, at: dt.datetime) -> DqExclusion: ...


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
    # lane x13a
    lists: ListRepository
    randomizations: RandomizationRepository
    unblindings: TrialUnblindingRepository
    requests: RequestRepository
    audit_reads: AuditReadRepository  # issue 14 (x14b)
    holds: HoldRepository
    guard: LockGuard
    odm_history: OdmHistoryRepository  # issue 16 (x16b)
    supply: SupplyRepository
    users: UserRepository
    audit_entries: AuditEntryRepository
    reporting: ReportingRepository
    database: DatabaseMaintenance
    mail_delivery: MailDeliveryRepository
    study_records: StudyRecordsRepository
    consents: ConsentRepository  # issue 15 (x15b)
    exclusions: QualityExclusionRepository  # issue 15 (x15b)

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


# --- issue 16, lane x16b: the transactional ODM export's reading ---------------------------


class OdmHistoryRepository(Protocol):
    def study_history(self, study_id: int, *, concealed_form: str) -> StudyHistory | None:
        """The study's audit trail, protocol versions, sites, subjects, form records and
        users, as the transactional ODM export maps them (None: no such study)."""
        ...
