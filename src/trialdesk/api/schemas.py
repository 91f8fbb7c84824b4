"""Request and response models of the API (OpenAPI), kept apart from the ORM rows.

Responses are built from the services' views only; a model has an ``arm`` field only where the
service's result carries one (RAND-6), so the API cannot add what the service left out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

MAX_LIMIT = 500
DEFAULT_LIMIT = 50

Text = Field(min_length=1, max_length=4000)
Password = Field(min_length=1, max_length=1024, description="the signer re-enters it (SIG-1)")


class _In(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error rather than ignored."""

    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """RFC 9457 problem details; ``code`` is the stable reason, also the end of ``type``."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: dict[str, str] | None = Field(default=None, description="per-field messages")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


def paginate(items: list[T], offset: int, limit: int) -> dict[str, Any]:
    """One page of a list the service returned whole (the services decide what is in it)."""
    return {
        "items": items[offset : offset + limit],
        "total": len(items),
        "offset": offset,
        "limit": limit,
    }


def plain(view: Any) -> dict[str, Any]:
    """A service's dataclass view as a dict (nested dataclasses included)."""
    out: dict[str, Any] = dataclasses.asdict(view)
    return out


# --- auth -------------------------------------------------------------------------------------


class TokenRequest(_In):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)
    totp: str | None = Field(
        default=None, max_length=16, description="the current TOTP code, when enrolled"
    )


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: dt.datetime
    scope: str = Field(
        default="full",
        description="'enrol': the roles need a second factor; only /me/totp works until then",
    )


# --- studies ----------------------------------------------------------------------------------


class ProtocolPublic(BaseModel):
    name: str
    version: str
    sha256: str


class SitePublic(BaseModel):
    code: str
    name: str
    country: str
    region: str
    timezone: str
    active: bool
    planned_activation: str | None = None
    cap: int | None = None


class ArmDefinitionPublic(BaseModel):
    code: str
    label: str
    ratio: int


class ProtocolDetailPublic(BaseModel):
    """The running protocol; ``arms`` only for unblinded by-arm readers."""

    name: str
    version: str
    sha256: str
    title: str
    target_subjects: int
    cap_total: int
    visits: list[dict[str, Any]]
    criteria: list[dict[str, Any]]
    forms: list[str]
    arms: list[ArmDefinitionPublic] | None = None


class StudyPublic(BaseModel):
    code: str
    name: str
    mode: str
    protocol: ProtocolPublic
    sites: int


# --- subjects ---------------------------------------------------------------------------------


class ArmPublic(BaseModel):
    code: str
    label: str


class VisitPublic(BaseModel):
    code: str
    name: str
    kind: str
    target_date: str
    window_start: str
    window_end: str
    status: str
    visit_date: str | None = None
    timing: str | None = None
    protocol_version: str | None = Field(
        default=None,
        description="version the visit was recorded under, or whose window it follows (PROT-2)",
    )


class SubjectPublic(BaseModel):
    """The service's view of a subject; ``arm`` only when the blinding rule allows it."""

    number: str
    site: str
    state: str
    registered_on: str
    protocol_version: str
    test_subject: bool
    protocol_sha256: str
    consent_date: str | None = None
    consent_version: str | None = None
    screen_failure_reason: str | None = None
    screen_failure_detail: str | None = None
    anatomy_suitable: bool | None = None
    crc_approved: bool = False
    randomized: bool = False
    randomization_number: str | None = None
    randomized_on: str | None = None
    arm: ArmPublic | None = None
    procedure_done: bool = False
    discharged_on: str | None = None
    unblinded_on: str | None = None
    emergency_unblinded: bool = False
    unblinding_due: bool = False
    exit_date: str | None = None
    exit_reason: str | None = None
    allowed_actions: list[str] = Field(default_factory=list)
    visits: list[VisitPublic] = Field(default_factory=list)


class AllowedActions(BaseModel):
    subject: str
    state: str
    allowed_actions: list[str]


class CriterionOutcomePublic(BaseModel):
    id: str
    kind: str
    status: str
    text: str
    gate: str
    fields: list[str]
    missing: list[str]


class EligibilityPublic(BaseModel):
    subject: str
    gate: str
    eligible: bool
    failed: list[str]
    pending: list[str]
    outcomes: list[CriterionOutcomePublic]


class RandomizationPublic(BaseModel):
    subject: str
    randomization_number: str
    randomized_on: str
    arm: ArmPublic | None = None


class InErrorPublic(BaseModel):
    subject: str
    randomization_number: str
    state: str
    in_error: bool
    reason: str


class RegisterIn(_In):
    site: str = Field(min_length=1, max_length=40)
    registered_on: dt.date | None = None
    test: bool = Field(default=False, description="a UAT subject; draws from test lists only")


class ConsentIn(_In):
    consent_date: dt.date
    consent_version: str = Field(min_length=1, max_length=100)
    document: str | None = Field(
        default=None, max_length=40, description="REC-8: the consent document (default ICF)"
    )


class ReasonIn(_In):
    reason: str = Text


class FormIn(_In):
    values: dict[str, Any]


class ConfirmationIn(_In):
    confirmed: bool
    password: str = Password


class CrcDecisionIn(_In):
    decision: str = Field(description="approve, reject or request_info", max_length=40)
    reason: str = Text
    password: str = Password


class FormsIn(_In):
    forms: dict[str, dict[str, Any]] = Field(description="form code -> field values")


class DischargeIn(_In):
    discharged_on: dt.date


class VisitIn(_In):
    visit_date: dt.date
    forms: dict[str, dict[str, Any]] = Field(default_factory=dict)


class TherapyIn(_In):
    therapy_date: dt.date
    therapy_type: str = Field(min_length=1, max_length=100)


class PasswordIn(_In):
    password: str = Password


class SignedReasonIn(_In):
    reason: str = Text
    password: str = Password


class WithdrawIn(_In):
    withdrawn_on: dt.date
    reason: str = Text
    follow_up_contact_allowed: bool


class LostIn(_In):
    on: dt.date
    reason: str = Text


class DeathIn(_In):
    death_date: dt.date
    cause: str = Text


class CorrectionIn(_In):
    form: str = Field(min_length=1, max_length=100)
    changes: dict[str, Any]
    reason: str = Text
    visit: str = Field(default="", max_length=40)
    seq: int | None = Field(default=None, ge=1, le=1_000_000)


# --- visits, data queries, CRC ----------------------------------------------------------------


class VisitItemPublic(BaseModel):
    subject: str
    site: str
    visit: str
    state: str
    target_date: str
    window_start: str
    window_end: str
    as_of: str
    reconsent: str | None = Field(
        default=None, description="REC-8: the consent version to sign at this visit"
    )


class QueryPublic(BaseModel):
    id: int
    subject: str
    site: str
    form: str
    visit: str | None
    field: str
    status: str
    text: str
    raised_by: str
    raised_at: str
    answer: str | None = None
    answered_by: str | None = None
    answered_at: str | None = None
    value_changed: bool = False
    closed_by: str | None = None
    closed_at: str | None = None
    reopened: int = 0
    # issue 15 (x15b): REC-6, REC-7
    origin: str = "manual"
    rule: str | None = None
    severity: str | None = None
    assignee: str | None = None
    assigned_to: str = ""
    response: str | None = None
    verified_by: str | None = None
    verified_at: str | None = None
    age_days: int = 0
    age_band: str = ""
    overdue: bool = False


class RaiseQueryIn(_In):
    subject: str = Field(min_length=1, max_length=40)
    form: str = Field(min_length=1, max_length=100)
    field: str = Field(min_length=1, max_length=100)
    text: str = Text
    visit: str = Field(default="", max_length=40)


class AnswerQueryIn(_In):
    text: str = Text
    new_value: Any = Field(default=None, description="corrects the field (DATA-2) when given")
    reason: str | None = Field(default=None, max_length=4000)
    response: str | None = Field(
        default=None, max_length=40, description="REC-7: a coded response of the protocol"
    )


class CloseQueryIn(_In):
    note: str | None = Field(default=None, max_length=4000)


class ReopenQueryIn(_In):
    text: str = Text


class TherapyInfoPublic(BaseModel):
    type: str
    date: str
    months_since_randomization: float
    early: bool
    review: str


class CasePublic(BaseModel):
    id: int
    kind: str
    status: str
    subject: str
    site: str
    subject_state: str
    test_subject: bool
    opened_at: str
    therapy: TherapyInfoPublic | None = None
    decision: str | None = None
    reason: str | None = None
    signed_by: str | None = None
    signed_name: str | None = None
    signed_at: str | None = None
    meaning: str | None = None


class TherapyDecisionIn(_In):
    classification: str = Field(
        max_length=40,
        description="endpoint_event, not_endpoint_event, continue_follow_up or request_info",
    )
    reason: str = Text
    password: str = Password


# --- allocation lists -------------------------------------------------------------------------


class ListInfoPublic(BaseModel):
    id: int
    mode: str
    method: str
    strata: int
    slots: int
    fingerprint: str
    source: str
    active: bool


class StratumStatusPublic(BaseModel):
    list_id: int
    mode: str
    source: str
    stratum: str
    size: int
    used: int
    unused: int
    extensions: int
    low: bool


class GenerateListIn(_In):
    mode: str = Field(default="live", description="live or test")
    seed: int | None = Field(default=None, description="recorded; random when omitted")
    size_per_stratum: int | None = None


class ImportListIn(_In):
    csv: str = Field(min_length=1, max_length=20_000_000)
    mode: str = Field(description="live or test")
    source_name: str = Field(default="upload.csv", min_length=1, max_length=200)
    append: bool = False


class ExtendIn(_In):
    stratum: str = Field(min_length=1, max_length=200)
    blocks: int | None = None
    mode: str = "live"


# --- notifications, trial unblinding, endpoints -----------------------------------------------


class NotificationPublic(BaseModel):
    id: int
    recipient_role: str
    subject: str | None
    text: str
    created_at: str
    read_at: str | None


class TrialUnblindingPublic(BaseModel):
    study: str
    status: str
    reason: str | None = None
    requested_by: str | None = None
    requested_at: str | None = None
    confirmed_by: str | None = None
    confirmed_at: str | None = None
    subjects_in_blinded_follow_up: int = 0


class SafetyPublic(BaseModel):
    as_of: str | None
    arm: str
    horizon_days: int
    subjects: int
    events: int
    event_free_rate: float | None
    lower_bound: float | None
    confidence: float
    goal: float
    meets_goal: bool
    method: str
    major_adverse_events: list[str]
    analysed: list[str]
    with_event: list[str]
    not_yet_evaluable: int
    excluded_in_error: int
    note: str | None = None
    changed_after_unblinding: list[dict[str, Any]] = []
    """Values of the frozen blinded phase changed after unblinding (REC-4), as the view
    lists them (found missing here by tests/unit/test_api_view_parity.py)."""


class EfficacyPublic(BaseModel):
    as_of: str | None
    horizon_days: int
    intervention_arm: str
    control_arm: str
    n_intervention: int
    n_control: int
    excluded_in_error: int
    kccq_threshold: float
    win_ratio: dict[str, Any] | None
    outcomes: list[dict[str, Any]]
    note: str | None = None
    changed_after_unblinding: list[dict[str, Any]] = []
    """Values of the frozen blinded phase changed after unblinding (REC-4)."""


class InterimPublic(BaseModel):
    as_of: str | None
    randomized: int
    past_12_months: int
    threshold: int
    due: bool
    first_due_on: str | None
    excluded_in_error: int


class HistoryEntryPublic(BaseModel):
    """One audit entry of a subject's record; ``at`` is UTC."""

    seq: int
    at: dt.datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    reason: str | None


# --- protocol amendments (PROT-2) -------------------------------------------------------------


class SignaturePublic(BaseModel):
    name: str
    username: str
    at: str
    meaning: str


class ProtocolVersionPublic(BaseModel):
    id: int
    version: str
    sha256: str
    status: str = Field(description="pending (awaiting a signature) or signed")
    current: bool = Field(description="the newest signed version (it may take effect later)")
    effective_from: str | None = Field(description="site-local date; null: from the start")
    loaded_at: str
    loaded_by: str
    amendment: int | None = None
    reason: str | None = None
    needs_statistician: bool = False
    signatures: list[SignaturePublic] = Field(default_factory=list)


class AmendmentPreviewIn(_In):
    text: str = Field(min_length=1, max_length=2_000_000, description="the new protocol YAML")
    effective_from: dt.date | None = Field(
        default=None, description="site-local date (default: the earliest not past anywhere)"
    )


class AmendmentIn(AmendmentPreviewIn):
    reason: str = Text
    password: str = Password


class AmendmentPreviewPublic(BaseModel):
    study: str
    old_version: str
    old_sha256: str
    new_version: str
    new_sha256: str
    effective_from: str
    changes: list[dict[str, str]]
    lines: list[str]
    impact: list[str] = Field(description="what it changes for subjects already enrolled")
    needs_statistician: bool
    refusals: list[str] = Field(description="why it cannot be proposed; empty when it can")


class AmendmentPublic(BaseModel):
    id: int
    study: str
    version: str
    sha256: str
    previous_version: str
    status: str
    effective_from: str
    reason: str
    needs_statistician: bool
    signatures: list[SignaturePublic]
    lines: list[str]
