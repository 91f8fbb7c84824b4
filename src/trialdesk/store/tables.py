"""SQLAlchemy 2 tables. Every record belongs to a study (PROT-1) and names the protocol
version it was made under (its SHA-256 row)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trialdesk.store.types import UtcDateTime


class Base(DeclarativeBase):
    pass


class StudyRow(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(10))  # live | demo | sandbox
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # trial-level unblinding (RAND-7), set when the second signature confirms it
    trial_unblinded_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ProtocolVersionRow(Base):
    __tablename__ = "protocol_versions"
    __table_args__ = (UniqueConstraint("study_id", "sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    loaded_by: Mapped[str] = mapped_column(String(80))
    # the newest signed version; it may take effect later (``effective_from``)
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    # PROT-2: pending (awaiting signatures) | signed; a signed version is in force at a site
    # from ``effective_from`` (its local date; None: from the start of the study)
    status: Mapped[str] = mapped_column(String(10), default="signed", server_default="signed")
    effective_from: Mapped[dt.date | None] = mapped_column(Date, nullable=True)


@event.listens_for(ProtocolVersionRow, "before_update")
def _protocol_text_is_immutable(
    _mapper: object, _connection: object, row: ProtocolVersionRow
) -> None:
    """PROT-3: a stored protocol's text and fingerprint never change; a new version is an
    amendment (a new row). Refused here so that no code path can edit one in place."""
    state = inspect(row)
    for name in ("text", "sha256", "version", "name", "study_id"):
        if state.attrs[name].history.has_changes():
            raise ValueError(
                f"protocol version {row.id}: {name} cannot be changed in place (PROT-3); "
                "load a new version with 'trialdesk protocol amend'"
            )


class ProtocolAmendmentRow(Base):
    """A new protocol version proposed and e-signed by the study manager (PROT-2); a change
    of arms, ratio or randomization of a running study also needs the statistician's
    signature and stays pending until then (SIG-1)."""

    __tablename__ = "protocol_amendments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"), unique=True)
    previous_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    status: Mapped[str] = mapped_column(String(10))  # pending | signed
    effective_from: Mapped[dt.date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text)
    needs_statistician: Mapped[bool] = mapped_column(Boolean, default=False)
    manager_by: Mapped[str] = mapped_column(String(80))
    manager_name: Mapped[str] = mapped_column(String(200))
    manager_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    manager_meaning: Mapped[str] = mapped_column(String(200))
    statistician_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    statistician_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    statistician_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    statistician_meaning: Mapped[str | None] = mapped_column(String(200), nullable=True)


class SiteRow(Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("study_id", "code"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    region: Mapped[str] = mapped_column(String(40))
    timezone: Mapped[str] = mapped_column(String(64))
    cap: Mapped[int | None] = mapped_column(Integer, nullable=True)
    planned_activation: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    next_subject_seq: Mapped[int] = mapped_column(Integer, default=1)
    next_randomization_seq: Mapped[int] = mapped_column(Integer, default=1)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # the zone this person reads timestamps in (TIME-1); None: their site's zone, else UTC
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # issue 12 (identity and access): where invitations, reset links and notices go (set by
    # the invitation the person accepted, or by the local operator); lower case, unique
    email: Mapped[str | None] = mapped_column(String(254), unique=True, nullable=True)
    # TOTP second factor: the secret encrypted with the installation key, the time step of
    # the last code accepted (a code is never accepted twice)
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    totp_enabled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RoleGrantRow(Base):
    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("user_id", "study_id", "role", "site_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    role: Mapped[str] = mapped_column(String(20))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    # issue 12: who asked for the grant and who approved it (separation of duties); None
    # for the local operator and for grants made before this was recorded
    granted_by_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approved_by_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    granted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class SubjectRow(Base):
    __tablename__ = "subjects"
    __table_args__ = (UniqueConstraint("study_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    number: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(30))
    version: Mapped[int] = mapped_column(Integer, default=1)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    registered_on: Mapped[dt.date] = mapped_column(Date)
    test_subject: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    consent_version: Mapped[str | None] = mapped_column(String(40), nullable=True)
    screen_failure_reason: Mapped[str | None] = mapped_column(String(30), nullable=True)
    screen_failure_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    anatomy_suitable: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    crc_approved: Mapped[bool] = mapped_column(Boolean, default=False)
    randomized_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    procedure_done: Mapped[bool] = mapped_column(Boolean, default=False)
    discharged_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    unblinded_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    emergency_unblinded: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    follow_up_contact_allowed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class FormRecordRow(Base):
    """One saved form; ``data`` is canonical JSON of the typed values."""

    __tablename__ = "form_records"
    __table_args__ = (UniqueConstraint("subject_id", "form_code", "visit_code", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    form_code: Mapped[str] = mapped_column(String(40))
    visit_code: Mapped[str] = mapped_column(String(40), default="")
    seq: Mapped[int] = mapped_column(Integer, default=1)
    data: Mapped[str] = mapped_column(Text)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


class ConfirmationRow(Base):
    """Investigator's signed yes/no for a criterion with no machine rule (ELIG-1)."""

    __tablename__ = "criterion_confirmations"
    __table_args__ = (UniqueConstraint("subject_id", "criterion_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    criterion_id: Mapped[str] = mapped_column(String(40))
    confirmed: Mapped[bool] = mapped_column(Boolean)
    signed_by: Mapped[str] = mapped_column(String(80))
    signed_name: Mapped[str] = mapped_column(String(200))
    signed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    meaning: Mapped[str] = mapped_column(String(200))


class CrcCaseRow(Base):
    __tablename__ = "crc_cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    kind: Mapped[str] = mapped_column(String(20))  # eligibility | therapy
    status: Mapped[str] = mapped_column(String(20))  # open | info_requested | decided
    therapy_id: Mapped[int | None] = mapped_column(ForeignKey("therapies.id"), nullable=True)
    opened_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    decision: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    signed_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    signed_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    signed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    meaning: Mapped[str | None] = mapped_column(String(200), nullable=True)


class CrcCaseNoteRow(Base):
    """One round of a CRC case (issue 14, x14b): the committee's request for more
    information (``request``) or the site's reply (``reply``), in the order written."""

    __tablename__ = "crc_case_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("crc_cases.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # request | reply
    text: Mapped[str] = mapped_column(Text)
    written_by: Mapped[str] = mapped_column(String(80))
    written_name: Mapped[str] = mapped_column(String(200))
    written_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class DataQueryRow(Base):
    """A monitor's question on one field of a saved form; the site answers (DATA-2).
    Status: open -> answered -> closed; answered or closed -> open again (reopened)."""

    __tablename__ = "data_queries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    form_record_id: Mapped[int] = mapped_column(ForeignKey("form_records.id"))
    form_code: Mapped[str] = mapped_column(String(40))
    visit_code: Mapped[str] = mapped_column(String(40), default="")
    field: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(10))  # open | answered | verified | closed
    text: Mapped[str] = mapped_column(Text)
    raised_by: Mapped[str] = mapped_column(String(80))
    raised_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    value_changed: Mapped[bool] = mapped_column(Boolean, default=False)
    closed_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    reopened: Mapped[int] = mapped_column(Integer, default=0)
    # issue 15 (x15b): automatic queries of data-quality rules, assignment, coded responses,
    # the monitor's verification (REC-6, REC-7)
    origin: Mapped[str] = mapped_column(String(10), default="manual")  # manual | rule
    rule_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    discrepancy_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    severity: Mapped[str | None] = mapped_column(String(10), nullable=True)
    assignee: Mapped[str | None] = mapped_column(String(80), nullable=True)
    response_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    verified_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    verified_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class VisitRow(Base):
    __tablename__ = "visits"
    __table_args__ = (UniqueConstraint("subject_id", "visit_code"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    visit_code: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(10))  # done | missed
    visit_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    timing: Mapped[str | None] = mapped_column(String(10), nullable=True)  # early|on_time|late
    window_start: Mapped[dt.date] = mapped_column(Date)
    window_end: Mapped[dt.date] = mapped_column(Date)
    missed_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    recorded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    recorded_by: Mapped[str] = mapped_column(String(80))


class TherapyRow(Base):
    __tablename__ = "therapies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    therapy_date: Mapped[dt.date] = mapped_column(Date)
    therapy_type: Mapped[str] = mapped_column(String(40))
    early: Mapped[bool] = mapped_column(Boolean)
    months_since: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    recorded_by: Mapped[str] = mapped_column(String(80))


class AllocationListRow(Base):
    __tablename__ = "allocation_lists"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    mode: Mapped[str] = mapped_column(String(10))  # test | live
    method: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))  # generated | imported
    seed_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # seed is the list
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(80))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class AllocationSlotRow(Base):
    """A concealed list slot; the arm is only ever stored encrypted (RAND-6)."""

    __tablename__ = "allocation_slots"
    __table_args__ = (UniqueConstraint("list_id", "stratum", "sequence"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("allocation_lists.id"))
    stratum: Mapped[str] = mapped_column(String(120))
    sequence: Mapped[int] = mapped_column(Integer)
    payload_enc: Mapped[bytes] = mapped_column(LargeBinary)  # {"arm", "block", "block_size"}
    used_by_subject_id: Mapped[int | None] = mapped_column(
        ForeignKey("subjects.id"), nullable=True, unique=True
    )
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class StratumCursorRow(Base):
    """Next unused slot per list and stratum; locking this row orders randomizations (RAND-5)."""

    __tablename__ = "stratum_cursors"
    __table_args__ = (UniqueConstraint("list_id", "stratum"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("allocation_lists.id"))
    stratum: Mapped[str] = mapped_column(String(120))
    next_sequence: Mapped[int] = mapped_column(Integer, default=1)
    size: Mapped[int] = mapped_column(Integer)
    extensions: Mapped[int] = mapped_column(Integer, default=0)


class RandomizationRow(Base):
    __tablename__ = "randomizations"
    __table_args__ = (UniqueConstraint("study_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), unique=True)
    slot_id: Mapped[int | None] = mapped_column(
        ForeignKey("allocation_slots.id"), nullable=True, unique=True
    )
    number: Mapped[str] = mapped_column(String(40))
    stratum: Mapped[str] = mapped_column(String(120))
    arm_enc: Mapped[bytes] = mapped_column(LargeBinary)
    randomized_on: Mapped[dt.date] = mapped_column(Date)
    randomized_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    randomized_by: Mapped[str] = mapped_column(String(80))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    factors: Mapped[str] = mapped_column(Text, default="{}")  # factor -> level, for minimization
    detail_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    in_error: Mapped[bool] = mapped_column(Boolean, default=False)
    in_error_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))


class NotificationRow(Base):
    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    recipient_role: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id"), nullable=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    read_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class TrialUnblindingRow(Base):
    """Trial-level unblinding (RAND-7): the study manager requests, the statistician confirms;
    two people, each e-signing with name, time and meaning (SIG-1)."""

    __tablename__ = "trial_unblindings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    status: Mapped[str] = mapped_column(String(10))  # pending | confirmed
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(80))
    requested_name: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    requested_meaning: Mapped[str] = mapped_column(String(200))
    confirmed_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    confirmed_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    confirmed_meaning: Mapped[str | None] = mapped_column(String(200), nullable=True)


class DeviceLotRow(Base):
    """A manufactured lot of implant devices (SUP-1); a recall quarantines the whole lot."""

    __tablename__ = "device_lots"
    __table_args__ = (UniqueConstraint("study_id", "lot_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    lot_number: Mapped[str] = mapped_column(String(20))
    model: Mapped[str] = mapped_column(String(120))
    gtin: Mapped[str] = mapped_column(String(14))  # the UDI's device identifier (01)
    manufacturer: Mapped[str] = mapped_column(String(200))
    expiry: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(12))  # released | quarantined
    quarantine_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(80))


class DeviceShipmentRow(Base):
    """Devices sent from the sponsor's depot to one site; the site's coordinator receives it."""

    __tablename__ = "device_shipments"
    __table_args__ = (UniqueConstraint("study_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    number: Mapped[str] = mapped_column(String(40))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    status: Mapped[str] = mapped_column(String(12))  # in_transit | received
    shipped_on: Mapped[dt.date] = mapped_column(Date)
    shipped_by: Mapped[str] = mapped_column(String(80))
    received_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    received_by: Mapped[str | None] = mapped_column(String(80), nullable=True)


class DeviceRow(Base):
    """One serialised device. Which subject it went to would tell that subject's arm, so the
    link is stored only encrypted (RAND-6)."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("study_id", "serial"), UniqueConstraint("study_id", "udi"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    lot_id: Mapped[int] = mapped_column(ForeignKey("device_lots.id"))
    serial: Mapped[str] = mapped_column(String(20))
    udi: Mapped[str] = mapped_column(String(120))
    # at_depot | in_transit | at_site | implanted | returned | destroyed | quarantined
    status: Mapped[str] = mapped_column(String(12))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    shipment_id: Mapped[int | None] = mapped_column(
        ForeignKey("device_shipments.id"), nullable=True
    )
    subject_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class DeviceEventRow(Base):
    """Each movement of a device; an implant's subject is in ``detail_enc`` only."""

    __tablename__ = "device_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(12))  # the device's status after the event
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    shipment_id: Mapped[int | None] = mapped_column(
        ForeignKey("device_shipments.id"), nullable=True
    )
    on_date: Mapped[dt.date] = mapped_column(Date)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class AuditEntryRow(Base):
    """Append-only, hash-chained per stream (AUD-1); see :mod:`trialdesk.store.audit`."""

    __tablename__ = "audit_entries"
    __table_args__ = (UniqueConstraint("stream", "seq"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(80))
    seq: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(32))  # ISO 8601 UTC, exactly as hashed
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(60))
    study_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    subject_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(String(80))
    old: Mapped[str] = mapped_column(Text)
    new: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    protocol_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditHeadRow(Base):
    """Last sequence and hash of each stream; a deleted tail entry no longer matches it."""

    __tablename__ = "audit_heads"
    stream: Mapped[str] = mapped_column(String(80), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


PG_AUDIT_GUARD = [
    """CREATE OR REPLACE FUNCTION trialdesk_audit_append_only() RETURNS trigger AS $$
    BEGIN
      RAISE EXCEPTION 'audit entries are append-only (% refused)', TG_OP;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION trialdesk_audit_append_only()""",
    """CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION trialdesk_audit_append_only()""",
]
SQLITE_AUDIT_GUARD = [
    """CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
    BEGIN SELECT RAISE(ABORT, 'audit entries are append-only (UPDATE refused)'); END""",
    """CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
    BEGIN SELECT RAISE(ABORT, 'audit entries are append-only (DELETE refused)'); END""",
]

for _sql in PG_AUDIT_GUARD:
    event.listen(
        AuditEntryRow.__table__,
        "after_create",
        DDL(_sql.replace("%", "%%")).execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
    )
for _sql in SQLITE_AUDIT_GUARD:
    event.listen(
        AuditEntryRow.__table__,
        "after_create",
        DDL(_sql).execute_if(dialect="sqlite"),  # type: ignore[no-untyped-call]
    )


class AuthTokenRow(Base):
    """A bearer token (API) or a browser session (web); only its SHA-256 is stored."""

    __tablename__ = "auth_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(10))  # api | web
    csrf_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # issue 12: a web session unused for the idle timeout ends; a session of a user who must
    # still enrol a second factor is good for enrolment only (scope "enrol")
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    scope: Mapped[str] = mapped_column(String(10), default="full", server_default="full")
    # the client (address) it was issued to: a client that signed in as a user before is not
    # held back with strangers when the name backs off
    client: Mapped[str | None] = mapped_column(String(100), nullable=True)


# ============================================================================================
# Identity and access (issue 12, migration 0005): invitations, approvals of grants that can
# reach an arm, reset links, sign-in throttling and the mail outbox.


class InvitationRow(Base):
    """A role offered to an e-mail address. Its link (only the SHA-256 is stored) is issued
    at once for a blinded role, and only after a second person's e-signed approval for a
    role that can reach an arm."""

    __tablename__ = "invitations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    email: Mapped[str] = mapped_column(String(254))
    full_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    invited_by: Mapped[str] = mapped_column(String(80))
    invited_by_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    # awaiting_approval | sent | accepted | rejected | cancelled
    status: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    approved_by_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


class GrantApprovalRow(Base):
    """A request for a role that can reach an arm, awaiting a second person's e-signature
    (SIG-1): an unblinded member of the study who is neither the requester nor the grantee."""

    __tablename__ = "grant_approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    role: Mapped[str] = mapped_column(String(20))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    invitation_id: Mapped[int | None] = mapped_column(ForeignKey("invitations.id"), nullable=True)
    grantee: Mapped[str] = mapped_column(String(254))  # username or invited address, shown
    requested_by: Mapped[str] = mapped_column(String(80))
    requested_by_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    requested_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(10))  # pending | approved | rejected
    decided_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    decided_by_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decided_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    meaning: Mapped[str | None] = mapped_column(String(300), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class PasswordResetRow(Base):
    """A single-use, expiring link that lets a person choose a new password."""

    __tablename__ = "password_resets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(80))


class SignInThrottleRow(Base):
    """Failed sign-ins counted per client, per (client, name) and per name, whether or not
    the name exists, so the answer never depends on an account's existence."""

    __tablename__ = "signin_throttle"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(400), unique=True)
    kind: Mapped[str] = mapped_column(String(10))  # client | pair | name | signature
    client: Mapped[str | None] = mapped_column(String(100), nullable=True)
    name: Mapped[str | None] = mapped_column(String(254), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_failure_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    blocked_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class MailOutboxRow(Base):
    """A mail written in the transaction of the action that caused it and delivered after
    commit; the body (it may hold a link) is encrypted and dropped once sent."""

    __tablename__ = "mail_outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(30))
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


# --- issue 15 (lane x15b): data-quality exclusions, consents, withdrawals -----------------------


class DqExclusionRow(Base):
    """A data-quality rule switched off for one form record, with a reason (REC-6); revoking
    it brings the rule back for that record."""

    __tablename__ = "dq_exclusions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    rule_id: Mapped[str] = mapped_column(String(40))
    form_code: Mapped[str] = mapped_column(String(40))
    visit_code: Mapped[str] = mapped_column(String(40), default="")
    seq: Mapped[int] = mapped_column(Integer, default=1)
    reason: Mapped[str] = mapped_column(Text)
    excluded_by: Mapped[str] = mapped_column(String(80))
    excluded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ConsentRow(Base):
    """One signed consent document version (REC-8): the first consent and every re-consent.
    The first one also fills ``subjects.consent_date/consent_version`` (LIFE-2)."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    document: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(40))
    signed_on: Mapped[dt.date] = mapped_column(Date)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    recorded_by: Mapped[str] = mapped_column(String(80))
    recorded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class WithdrawalRow(Base):
    """What a withdrawn subject withdrew from (REC-9): the protocol's withdrawal kind and the
    withdrawal form it was recorded on."""

    __tablename__ = "withdrawals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    contact_allowed: Mapped[bool] = mapped_column(Boolean)
    form_record_id: Mapped[int | None] = mapped_column(ForeignKey("form_records.id"), nullable=True)
    withdrawn_on: Mapped[dt.date] = mapped_column(Date)
    recorded_by: Mapped[str] = mapped_column(String(80))
    recorded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


# --- issue 15 (lane x15a): records that hold: locks, SDV marks, signatures -----------------


class RecordLockRow(Base):
    """A lock of a form record, a visit, a casebook (``manual`` or ``freeze``) or the study
    (``soft``/``hard`` database lock, REC-3, REC-5). Never deleted: an unlock fills the
    ``unlocked_*`` columns, so the record shows it was locked and by whom it was lifted."""

    __tablename__ = "record_locks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    level: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(10))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id"), nullable=True)
    visit_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    form_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    locked_by: Mapped[str] = mapped_column(String(80))
    locked_name: Mapped[str] = mapped_column(String(200))
    locked_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    locked_meaning: Mapped[str] = mapped_column(Text)
    unlocked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    unlocked_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    unlocked_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    unlock_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class SdvMarkRow(Base):
    """A monitor's source-data verification of a form record's fields (REC-1): each field's
    value fingerprint at marking; ``cleared_*`` when a later change cleared it, with why."""

    __tablename__ = "sdv_marks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    form_record_id: Mapped[int] = mapped_column(ForeignKey("form_records.id"))
    fields: Mapped[str] = mapped_column(Text)  # JSON list
    fingerprints: Mapped[str] = mapped_column(Text)  # JSON {field: sha256}
    marked_by: Mapped[str] = mapped_column(String(80))
    marked_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    cleared_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    cleared_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class RecordSignatureRow(Base):
    """An investigator's e-signature of a form record, a visit or a casebook (REC-2, SIG-1):
    printed name, time, meaning, and each covered record's version and fingerprint."""

    __tablename__ = "record_signatures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    level: Mapped[str] = mapped_column(String(10))
    visit_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    form_record_id: Mapped[int | None] = mapped_column(ForeignKey("form_records.id"), nullable=True)
    signed_by: Mapped[str] = mapped_column(String(80))
    signed_name: Mapped[str] = mapped_column(String(200))
    signed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    meaning: Mapped[str] = mapped_column(Text)
    covered: Mapped[str] = mapped_column(Text)  # JSON {record id: [version, fingerprint]}
    invalidated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    invalidated_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class UnblindingChangeRow(Base):
    """A value of the frozen blinded phase changed (or first entered) after its subject was
    unblinded (REC-4): what the endpoint outputs and the DSMB report flag."""

    __tablename__ = "unblinding_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    form_record_id: Mapped[int] = mapped_column(ForeignKey("form_records.id"))
    form_code: Mapped[str] = mapped_column(String(40))
    visit_code: Mapped[str] = mapped_column(String(40))
    field: Mapped[str] = mapped_column(String(80))
    flag: Mapped[str] = mapped_column(String(30))
    old: Mapped[str] = mapped_column(Text)  # JSON value
    new: Mapped[str] = mapped_column(Text)  # JSON value
    changed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    changed_by: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
