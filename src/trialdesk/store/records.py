"""What the repositories hand to the services: frozen records, one field per column.

A record is a snapshot read in the current unit of work. Services never change one in place;
they ask the repository for a change (a guarded update when others may race them) and get
the new record back, so the same service code runs on the SQL repositories and on the
in-memory fakes of the unit tests (tests/fakes.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Study:
    id: int
    code: str
    name: str
    mode: str
    trial_unblinded_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Site:
    id: int
    study_id: int
    code: str
    name: str
    country: str
    region: str
    timezone: str
    cap: int | None
    active: bool
    planned_activation: dt.date | None = None


@dataclass(frozen=True, slots=True)
class ProtocolVersion:
    """A stored protocol version without its text (the parsed text is cached per process,
    keyed by ``sha256``: PROT-3 keeps it immutable)."""

    id: int
    study_id: int
    version: str
    sha256: str
    current: bool
    status: str
    effective_from: dt.date | None


@dataclass(frozen=True, slots=True)
class Subject:
    id: int
    study_id: int
    site_id: int
    number: str
    state: str
    version: int
    protocol_version_id: int
    registered_on: dt.date
    test_subject: bool
    consent_date: dt.date | None
    consent_version: str | None
    screen_failure_reason: str | None
    screen_failure_detail: str | None
    anatomy_suitable: bool | None
    crc_approved: bool
    randomized_on: dt.date | None
    procedure_done: bool
    discharged_on: dt.date | None
    unblinded_on: dt.date | None
    emergency_unblinded: bool
    exit_date: dt.date | None
    exit_reason: str | None
    follow_up_contact_allowed: bool | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Allocation:
    """The subject's randomization as the blinded data path may carry it: the arm stays
    encrypted until :mod:`trialdesk.services.blinding` allows reading it."""

    subject_id: int
    number: str
    arm_enc: bytes
    randomized_on: dt.date
    in_error: bool


@dataclass(frozen=True, slots=True)
class SubjectRead:
    """Everything a subject view needs that is one row per subject, read in one statement."""

    subject: Subject
    site: Site
    version: ProtocolVersion
    allocation: Allocation | None
    trial_unblinded: bool


@dataclass(frozen=True, slots=True)
class Visit:
    id: int
    subject_id: int
    visit_code: str
    status: str  # done | missed
    visit_date: dt.date | None
    timing: str | None
    window_start: dt.date
    window_end: dt.date
    missed_reason: str | None
    protocol_version_id: int
    recorded_at: dt.datetime
    recorded_by: str


@dataclass(frozen=True, slots=True)
class FormRecord:
    id: int
    subject_id: int
    form_code: str
    visit_code: str
    seq: int
    data: str
    protocol_version_id: int
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime
    version: int


@dataclass(frozen=True, slots=True)
class Confirmation:
    id: int
    subject_id: int
    criterion_id: str
    confirmed: bool
    signed_by: str
    signed_name: str
    signed_at: dt.datetime
    meaning: str


@dataclass(frozen=True, slots=True)
class Therapy:
    id: int
    subject_id: int
    therapy_date: dt.date
    therapy_type: str
    early: bool
    months_since: float
    recorded_at: dt.datetime
    recorded_by: str


@dataclass(frozen=True, slots=True)
class CrcCase:
    id: int
    study_id: int
    subject_id: int
    kind: str  # eligibility | therapy
    status: str  # open | info_requested | decided
    therapy_id: int | None
    opened_at: dt.datetime
    decision: str | None
    reason: str | None
    signed_by: str | None
    signed_name: str | None
    signed_at: dt.datetime | None
    meaning: str | None


@dataclass(frozen=True, slots=True)
class CaseNote:
    """A round of a CRC case: the committee's request (``request``) or the site's reply."""

    id: int
    case_id: int
    kind: str  # request | reply
    text: str
    written_by: str
    written_name: str
    written_at: dt.datetime


@dataclass(frozen=True, slots=True)
class CaseDetail:
    """A CRC case with what the committee reads beside it."""

    case: CrcCase
    subject: Subject
    site: Site
    therapy: Therapy | None


@dataclass(frozen=True, slots=True)
class DataQuery:
    id: int
    study_id: int
    subject_id: int
    form_record_id: int
    form_code: str
    visit_code: str
    field: str
    status: str  # open | answered | closed
    text: str
    raised_by: str
    raised_at: dt.datetime
    answer: str | None
    answered_by: str | None
    answered_at: dt.datetime | None
    value_changed: bool
    closed_by: str | None
    closed_at: dt.datetime | None
    reopened: int
    # issue 15 (x15b): REC-6, REC-7
    origin: str = "manual"
    rule_id: str | None = None
    discrepancy_key: str | None = None
    severity: str | None = None
    assignee: str | None = None
    response_code: str | None = None
    verified_by: str | None = None
    verified_at: dt.datetime | None = None


# --- allocation (issue 13, lane x13a): lists, slots, randomizations, trial unblinding --------


@dataclass(frozen=True, slots=True)
class AllocationList:
    id: int
    study_id: int
    mode: str  # live | test
    method: str
    source: str  # generated | imported
    seed_enc: bytes | None
    fingerprint: str
    created_at: dt.datetime
    created_by: str
    active: bool


@dataclass(frozen=True, slots=True)
class StratumCursor:
    """Where a stratum of a list stands: the next sequence to draw and the slots it holds."""

    id: int
    list_id: int
    stratum: str
    next_sequence: int
    size: int
    extensions: int


@dataclass(frozen=True, slots=True)
class AllocationSlot:
    id: int
    list_id: int
    stratum: str
    sequence: int
    payload_enc: bytes
    used_by_subject_id: int | None
    used_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class TakenSlot:
    """A slot just drawn for a subject, with its stratum's cursor after the draw."""

    slot: AllocationSlot
    cursor: StratumCursor


@dataclass(frozen=True, slots=True)
class Randomization:
    id: int
    study_id: int
    subject_id: int
    slot_id: int | None
    number: str
    stratum: str
    arm_enc: bytes
    randomized_on: dt.date
    randomized_at: dt.datetime
    randomized_by: str
    idempotency_key: str | None
    factors: str
    detail_enc: bytes | None
    in_error: bool
    in_error_reason: str | None
    protocol_version_id: int


@dataclass(frozen=True, slots=True)
class CapCounts:
    """Randomized subjects of a study, of one site and of one country."""

    total: int
    site: int
    country: int


@dataclass(frozen=True, slots=True)
class TrialUnblinding:
    id: int
    study_id: int
    status: str  # pending | confirmed
    reason: str
    requested_by: str
    requested_name: str
    requested_at: dt.datetime
    requested_meaning: str
    confirmed_by: str | None
    confirmed_name: str | None
    confirmed_at: dt.datetime | None
    confirmed_meaning: str | None


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    study_id: int
    recipient_role: str
    subject_id: int | None
    text: str
    created_at: dt.datetime
    read_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class NotificationRead:
    """A notification with the number and site of the subject it is about, if any."""

    notification: Notification
    subject_number: str | None
    subject_site_id: int | None


# --- per-request resolution (issue 13, lane x13a) --------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenRead:
    """A session token with its user and the user's role grants (role, study, site)."""

    token_id: int
    user_id: int
    username: str
    full_name: str
    active: bool
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    csrf_token: str | None
    study_id: int | None
    scope: str | None
    grants: tuple[tuple[str, int, int | None], ...]


@dataclass(frozen=True, slots=True)
class StudyHead:
    """A study with its current protocol version and number of sites."""

    id: int
    code: str
    name: str
    mode: str
    protocol_name: str
    protocol_version: str
    protocol_sha256: str
    sites: int


# --- issue 16, lane x16b: what the transactional ODM export reads -----------------------------


@dataclass(frozen=True, slots=True)
class HistoryVersion:
    id: int
    version: str
    name: str
    sha256: str
    status: str
    loaded_on: dt.date
    effective_from: dt.date | None


@dataclass(frozen=True, slots=True)
class HistorySubject:
    id: int
    number: str
    site_code: str
    protocol_version_id: int
    test_subject: bool


@dataclass(frozen=True, slots=True)
class HistoryForm:
    """A saved form's place; ``data`` is kept for concealed records only (the service
    decrypts it for unblinded readers)."""

    id: int
    subject_id: int
    form_code: str
    visit_code: str
    seq: int
    protocol_version_id: int
    data: str | None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    stream: str
    seq: int
    at: str
    actor: str
    action: str
    entity: str
    entity_id: str
    subject_id: int | None
    old: str
    new: str
    reason: str | None
    protocol_sha256: str | None


# --- supply (lane x13b, issue 13): lots, shipments, devices and their log ------------------


@dataclass(frozen=True, slots=True)
class DeviceLot:
    id: int
    study_id: int
    lot_number: str
    model: str
    gtin: str
    manufacturer: str
    expiry: dt.date
    status: str
    quarantine_reason: str | None
    created_at: dt.datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class DeviceShipment:
    id: int
    study_id: int
    number: str
    site_id: int
    status: str
    shipped_on: dt.date
    shipped_by: str
    received_on: dt.date | None
    received_by: str | None


@dataclass(frozen=True, slots=True)
class Device:
    """One serialised device; ``subject_enc`` is the encrypted link to its subject (RAND-6)."""

    id: int
    study_id: int
    lot_id: int
    serial: str
    udi: str
    status: str
    site_id: int | None
    shipment_id: int | None
    subject_enc: bytes | None
    version: int
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DeviceUse:
    """A procedure's use of a device, from the device's log: the encrypted link and where."""

    serial: str
    site_id: int | None
    detail_enc: bytes


# --- the rest of the seam (lane x13b, issue 13): users, audit reads, reporting -------------


@dataclass(frozen=True, slots=True)
class User:
    """A person's account without its secrets (password hash, TOTP secret stay in store/)."""

    id: int
    username: str
    full_name: str
    active: bool
    created_at: dt.datetime
    timezone: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored audit entry as read back (``old``/``new`` are the stored JSON text)."""

    id: int
    stream: str
    seq: int
    prev_hash: str
    hash: str
    at: str
    actor: str
    action: str
    study_id: int | None
    subject_id: int | None
    entity: str
    entity_id: str
    old: str
    new: str
    reason: str | None
    protocol_sha256: str | None


@dataclass(frozen=True, slots=True)
class StudyHistory:
    study_code: str
    study_name: str
    versions: list[HistoryVersion]
    sites: dict[str, str]
    """Site code -> name."""
    subjects: dict[int, HistorySubject]
    forms: dict[int, HistoryForm]
    users: dict[str, str]
    """Username -> full name."""
    entries: list[HistoryEntry]


@dataclass(frozen=True, slots=True)
class ScreeningLogLine:
    """A registered live subject as the screening log reads it (never an arm)."""

    number: str
    site: str
    registered_on: dt.date
    state: str
    screen_failure_reason: str | None
    screen_failure_detail: str | None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which stored audit entries of a study to read: the study's own entries and, from its
    users' streams (``user:<id>`` of every user holding a role in it), those whose action ends
    in one of ``security_suffixes``; then each given part narrows (times are the stored UTC
    text, ``until_at`` exclusive)."""

    study_id: int
    security_suffixes: tuple[str, ...] = ()
    action: str | None = None
    action_prefix: str | None = None
    actor: str | None = None
    subject_id: int | None = None
    since_at: str | None = None
    until_at: str | None = None
    excluded_entities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Mail:
    """A mail of the outbox; ``body_enc`` is None once delivered."""

    id: int
    study_id: int | None
    kind: str
    recipient: str
    subject: str
    body_enc: bytes | None
    created_at: dt.datetime
    attempts: int
    next_attempt_at: dt.datetime
    claimed_until: dt.datetime | None
    last_error: str | None
    sent_at: dt.datetime | None


# --- issue 15 (lane x15b): exclusions, consents, withdrawals ------------------------------------


@dataclass(frozen=True, slots=True)
class DqExclusion:
    id: int
    study_id: int
    subject_id: int
    rule_id: str
    form_code: str
    visit_code: str
    seq: int
    reason: str
    excluded_by: str
    excluded_at: dt.datetime
    revoked_by: str | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Consent:
    id: int
    study_id: int
    subject_id: int
    document: str
    version: str
    signed_on: dt.date
    protocol_version_id: int
    recorded_by: str
    recorded_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Withdrawal:
    id: int
    subject_id: int
    kind: str
    contact_allowed: bool
    form_record_id: int | None
    withdrawn_on: dt.date
    recorded_by: str
    recorded_at: dt.datetime


# --- issue 14 (lane x14b): review pages ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An audit entry read back (issue 14): ``at`` is the ISO 8601 UTC text as hashed;
    ``old`` and ``new`` are the decoded JSON values."""

    seq: int
    at: str
    actor: str
    action: str
    entity: str
    entity_id: str
    old: Any
    new: Any
    reason: str | None


@dataclass(frozen=True, slots=True)
class InErrorRandomization:
    """A randomization flagged in error, as the deviations report lists it (never the arm)."""

    subject_id: int
    randomized_on: dt.date
    reason: str | None


@dataclass(frozen=True, slots=True)
class FormMark:
    """Issue 14: that a form was saved for a subject (at a visit), without its data: the
    status grid reads these for many subjects at once. ``version`` above 1: corrected."""

    subject_id: int
    form_code: str
    visit_code: str
    record_id: int
    version: int


@dataclass(frozen=True, slots=True)
class TrialUnblindingEvent:
    """A trial-level unblinding request and its confirmation: who, when and why."""

    requested_at: dt.datetime
    requested_by: str
    reason: str
    confirmed_at: dt.datetime | None
    confirmed_by: str | None
