"""Pydantic models of a protocol file. Every rule of a trial is data here, never code.

Models check one value at a time (types, ranges, unknown keys); checks that span the file
(a criterion naming a field no form has, overlapping windows, duplicate ids) live in
:mod:`trialdesk.protocol.checks` so each problem can be reported with its YAML line.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Code = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.\-]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Region(_Model):
    code: Code
    name: str


class Country(_Model):
    code: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    name: str
    region: Code
    cap: int | None = Field(default=None, ge=1, description="most subjects randomized here")


class Site(_Model):
    code: Code
    name: str
    country: str
    timezone: str = Field(description="IANA time zone; clinical dates are local to the site")
    planned_activation: dt.date | None = None
    cap: int | None = Field(default=None, ge=1)


class Arm(_Model):
    code: Code
    label: str
    ratio: int = Field(ge=1, description="integer allocation weight; 1:1 is two arms of 1")
    procedure_form: str | None = Field(
        default=None, description="form recording this arm's index procedure"
    )


class Enrolment(_Model):
    target_subjects: int = Field(ge=1)
    cap_total: int | None = Field(default=None, ge=1, description="defaults to the target")
    cap_per_site: int | None = Field(default=None, ge=1)

    @property
    def total_cap(self) -> int:
        return self.cap_total if self.cap_total is not None else self.target_subjects


class FieldType(StrEnum):
    INTEGER = "integer"
    DECIMAL = "decimal"
    TEXT = "text"
    DATE = "date"
    TIME = "time"
    DATETIME = "datetime"
    CHOICE = "choice"
    BOOLEAN = "boolean"


class Choice(_Model):
    code: str = Field(min_length=1)
    label: str


class FormField(_Model):
    code: Code
    label: str
    type: FieldType
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    choices: list[Choice] | None = None
    required: bool = True
    max_length: int | None = Field(default=None, ge=1)


class Form(_Model):
    code: Code
    name: str
    fields: list[FormField] = Field(min_length=1)
    repeating: bool = Field(default=False, description="may be entered many times (AE, therapy)")
    date_field: str | None = Field(
        default=None,
        description="the date field holding the form's clinical date (LIFE-2, SCHED-2, THER-2)",
    )


class Operator(StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    IN = "in"
    NOT_IN = "not_in"
    BETWEEN = "between"
    IS_TRUE = "is_true"
    IS_FALSE = "is_false"


Scalar = int | float | str | bool


class Condition(_Model):
    """``form.field OP value``; ``between`` is inclusive at both ends."""

    field: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")]
    op: Operator
    value: Scalar | list[Scalar] | None = None


class AllOf(_Model):
    all: list[Rule] = Field(min_length=1)


class AnyOf(_Model):
    any: list[Rule] = Field(min_length=1)


class NotRule(_Model):
    not_: Rule = Field(alias="not")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Rule = Condition | AllOf | AnyOf | NotRule


class Gate(StrEnum):
    """Screening steps; a criterion is evaluated at its gate (ELIG-2, ELIG-4)."""

    ECHO = "echo"
    COMMITTEE_REVIEW = "committee_review"
    ANATOMY = "anatomy"


class Criterion(_Model):
    """An inclusion or exclusion criterion (ELIG-1).

    ``rule`` states the criterion as written: an inclusion is met when it holds, an exclusion
    excludes when it holds. With no rule the investigator confirms it (yes/no, signed).
    """

    id: Code
    kind: Literal["inclusion", "exclusion"]
    text: str
    gate: Gate = Gate.ECHO
    rule: Rule | None = None
    assumption: bool = Field(default=False, description="not from the public record")


class Screening(_Model):
    gates: list[Gate] = Field(min_length=1)
    forms: list[str] = Field(description="forms entered during screening")
    echo_form: str | None = None
    anatomy_forms: list[str] = Field(default_factory=list)


class VisitKind(StrEnum):
    CLINIC = "clinic"
    PHONE = "phone"


class Visit(_Model):
    """A scheduled visit (SCHED-1); day 0 is the randomization date, windows inclusive."""

    code: Code
    name: str
    kind: VisitKind
    target_day: int = Field(ge=1)
    window_before: int = Field(ge=0)
    window_after: int = Field(ge=0)
    forms: list[str] = Field(default_factory=list)
    assumption: bool = False


class Method(StrEnum):
    COMPLETE = "complete"
    PERMUTED_BLOCKS = "permuted_blocks"
    MINIMIZATION = "minimization"


class MinimizationFactor(_Model):
    factor: str = Field(description="'site' or 'form.field'")
    weight: float = Field(default=1.0, gt=0)


class Minimization(_Model):
    factors: list[MinimizationFactor] = Field(min_length=1)
    imbalance: Literal["range", "variance"] = "range"
    preferred_probability: float = Field(default=0.8, gt=0, le=1)


class Randomization(_Model):
    method: Method
    strata: list[str] = Field(
        default_factory=list, description="'site' or 'form.field' values read from saved forms"
    )
    block_sizes: list[int] = Field(default_factory=list)
    seed_policy: Literal["generated", "fixed"] = "generated"
    seed: int | None = None
    list_size_per_stratum: int | None = Field(default=None, ge=1)
    reserve_fraction: float = Field(default=0.25, ge=0, le=5)
    low_slots_warning: int = Field(default=4, ge=0)
    minimization: Minimization | None = None


class Blinding(_Model):
    unblinded_roles: list[str]
    unblind_after_visit: str | None = Field(
        default=None, description="visit whose completion makes subject unblinding due"
    )


class TherapyType(_Model):
    code: Code
    label: str


class Therapies(_Model):
    endpoint_review_after_months: int = Field(ge=0)
    types: list[TherapyType] = Field(default_factory=list)
    form: str | None = None


class FollowUp(_Model):
    lost_after_missed_contacts: int = Field(default=2, ge=1)
    completion_visit: str | None = None


class Endpoints(_Model):
    safety_visit: str | None = None
    safety_performance_goal: float | None = Field(default=None, gt=0, lt=1)
    major_adverse_events: list[str] = Field(default_factory=list)
    efficacy_visit: str | None = None
    efficacy_hierarchy: list[str] = Field(default_factory=list)
    kccq_improvement_points: float | None = None


class Supply(_Model):
    """Device accountability (SUP-1, SUP-2): which arms' procedures use a tracked device, the
    procedure form field naming it, and when a site's stock needs re-supply."""

    device_arms: list[Code] = Field(
        min_length=1, description="arms whose index procedure names the device used"
    )
    device_field: Code = Field(
        default="device_udi", description="field of those arms' procedure form naming the device"
    )
    released_field: Code | None = Field(
        default=None,
        description="boolean field of that form: false = attempted, not implanted (the "
        "device is then quarantined for return)",
    )
    reorder_level: int = Field(
        default=2, ge=0, description="warn when a site's usable stock is at or below this"
    )
    site_reorder_levels: dict[str, int] = Field(
        default_factory=dict, description="per-site reorder level overriding the default"
    )

    def reorder_level_for(self, site_code: str) -> int:
        return self.site_reorder_levels.get(site_code, self.reorder_level)


class Protocol(_Model):
    """A whole protocol file. ``version`` is the author's label; the SHA-256 of the file is
    what records point to."""

    name: str
    version: str
    title: str
    description: str | None = None
    assumptions: list[str] = Field(default_factory=list)
    arms: list[Arm] = Field(min_length=2)
    enrolment: Enrolment
    regions: list[Region] = Field(min_length=1)
    countries: list[Country] = Field(min_length=1)
    sites: list[Site] = Field(default_factory=list)
    forms: list[Form] = Field(min_length=1)
    screening: Screening
    criteria: list[Criterion] = Field(min_length=1)
    visits: list[Visit] = Field(min_length=1)
    randomization: Randomization
    blinding: Blinding
    therapies: Therapies
    follow_up: FollowUp = Field(default_factory=FollowUp)
    endpoints: Endpoints = Field(default_factory=Endpoints)
    supply: Supply | None = None
    # Records that hold (issue 15): all optional, so protocols written before them still load.
    consent: Consent | None = None
    data_quality: DataQuality | None = None
    sdv: SdvPolicy | None = None
    sign_off: SignOff | None = None
    freeze: Freeze | None = None
    queries: QueryPolicy | None = None
    exits: Exits | None = None

    def form(self, code: str) -> Form:
        for form in self.forms:
            if form.code == code:
                return form
        raise KeyError(code)

    def arm(self, code: str) -> Arm:
        for arm in self.arms:
            if arm.code == code:
                return arm
        raise KeyError(code)

    def site(self, code: str) -> Site:
        for site in self.sites:
            if site.code == code:
                return site
        raise KeyError(code)

    def country(self, code: str) -> Country:
        for country in self.countries:
            if country.code == code:
                return country
        raise KeyError(code)

    def visit(self, code: str) -> Visit:
        for visit in self.visits:
            if visit.code == code:
                return visit
        raise KeyError(code)


# --- Records that hold (issue 15) ---------------------------------------------------------
# Consent documents, data-quality rules, source-data verification, sign-off, the freeze of the
# blinded phase at unblinding, coded query responses and the exits' forms. Checks that span
# the file (a rule naming a real field, a version order) are in :mod:`.checks`.


class ConsentApproval(_Model):
    """An ethics approval of one consent version for one site or one country (REC-8)."""

    site: Code | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    effective_from: dt.date = Field(description="first day the version may be signed there")


class ConsentVersion(_Model):
    version: Code
    effective_from: dt.date | None = Field(
        default=None,
        description="first day the version may be signed; only the first version may omit it "
        "(then it is in force from the start of the study)",
    )
    approvals: list[ConsentApproval] = Field(
        default_factory=list,
        description="where ethics approvals differ: the sites or countries it is approved for; "
        "empty means approved everywhere from effective_from",
    )
    reconsent: bool = Field(
        default=False,
        description="subjects still in the study who signed an earlier version must sign this "
        "one once it is in force at their site",
    )
    assumption: bool = False


class ConsentDocument(_Model):
    code: Code
    name: str
    required: bool = Field(default=True, description="needed before any study procedure")
    versions: list[ConsentVersion] = Field(min_length=1, description="oldest first")
    assumption: bool = False


class Consent(_Model):
    documents: list[ConsentDocument] = Field(min_length=1)


class DqKind(StrEnum):
    """The typed data-quality rule kinds (REC-6); no expression is ever evaluated as code."""

    COMPARE = "compare"
    CHANGE = "change"
    RANGE = "range"
    CRITERIA = "criteria"
    REQUIRES_FORM = "requires_form"


class DqSeverity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"


class DqRun(StrEnum):
    ON_SAVE = "on_save"
    ON_DEMAND = "on_demand"


class DqAgainst(StrEnum):
    PREVIOUS = "previous"
    BASELINE = "baseline"


class SubjectEvent(StrEnum):
    """Subject dates a ``compare`` rule may name instead of a ``form.field``."""

    REGISTRATION = "registration"
    CONSENT = "consent"
    RANDOMIZATION = "randomization"
    UNBLINDING = "unblinding"
    EXIT = "exit"


class DqRule(_Model):
    """One data-quality rule. ``kind`` says which keys it uses (checked in :mod:`.checks`):

    * ``compare``: ``left`` (form.field) ``op`` ``right`` (form.field or a subject event),
      optionally shifted by ``offset`` (days for dates);
    * ``change``: the values of ``series`` (form.field, in visit order) may not change by more
      than ``max_change`` (absolute) or ``max_change_pct`` from the ``against`` value;
    * ``range``: ``field`` should lie within ``min``..``max`` (a plausibility range, softer
      than the field's own limits);
    * ``criteria``: the named criteria still hold on the current data once their gate passed;
    * ``requires_form``: when ``when`` holds on a record, the subject has a ``form`` record.

    ``when`` (a rule as in criteria) limits any kind to the records where it holds.
    """

    id: Code
    text: str = Field(min_length=1)
    kind: DqKind
    severity: DqSeverity = DqSeverity.MAJOR
    run: DqRun = Field(default=DqRun.ON_SAVE, description="on_save also runs on demand")
    when: Rule | None = None
    left: str | None = None
    op: Operator | None = None
    right: str | None = None
    offset: float | None = None
    series: list[str] | None = None
    against: DqAgainst | None = None
    max_change: float | None = Field(default=None, gt=0)
    max_change_pct: float | None = Field(default=None, gt=0)
    field: str | None = None
    min: float | None = None
    max: float | None = None
    criteria: list[Code] | None = None
    form: Code | None = None
    assumption: bool = False


class DataQuality(_Model):
    rules: list[DqRule] = Field(default_factory=list)


class SdvLevel(StrEnum):
    FULL = "full"
    SAMPLE = "sample"
    NONE = "none"


class SdvForm(_Model):
    form: Code
    level: SdvLevel
    fields: list[Code] | None = Field(
        default=None, description="only these fields need verifying; all when omitted"
    )
    rate: float | None = Field(default=None, gt=0, le=1, description="overrides sample_rate")


class SdvPolicy(_Model):
    """Risk-based source-data verification (REC-1): which forms or fields need 100 %, which a
    sample of subjects drawn from ``seed`` (the same subjects on every run)."""

    default_level: SdvLevel = SdvLevel.NONE
    sample_rate: float = Field(default=0.2, gt=0, le=1)
    seed: int = Field(default=0, ge=0, lt=2**63)
    first_subjects_full: int = Field(
        default=0, ge=0, le=1000, description="a site's first N subjects: sampled forms in full"
    )
    forms: list[SdvForm] = Field(default_factory=list)
    assumption: bool = False


class CasebookScope(StrEnum):
    RANDOMIZED = "randomized"
    CONSENTED = "consented"


class SignOff(_Model):
    """Investigator sign-off (SIG-1, REC-2): the meaning signed and whose casebooks need it."""

    meaning: str = Field(
        default="I attest the data are accurate and complete.", min_length=1, max_length=200
    )
    casebooks_for: CasebookScope = CasebookScope.RANDOMIZED
    assumption: bool = False


class UnblindingKind(StrEnum):
    SCHEDULED = "scheduled"
    EMERGENCY = "emergency"


class LateRecords(StrEnum):
    FLAG = "flag"
    REFUSE = "refuse"


class Freeze(_Model):
    """The blinded phase frozen at unblinding (REC-4): visits up to and including
    ``visits_through`` and the ``forms`` the primary endpoints read are locked before the arm
    is shown. Records of that phase saved later are flagged (or refused)."""

    unblinding: list[UnblindingKind] = Field(min_length=1)
    visits_through: Code
    forms: list[Code] = Field(default_factory=list)
    late_records: LateRecords = LateRecords.FLAG
    assumption: bool = False


class ResponseChange(StrEnum):
    REQUIRED = "required"
    FORBIDDEN = "forbidden"
    OPTIONAL = "optional"


class QueryResponse(_Model):
    code: Code
    label: str = Field(min_length=1)
    change: ResponseChange = Field(
        default=ResponseChange.OPTIONAL, description="must the queried value change with it?"
    )
    text_required: bool = False
    marks_missing: bool = Field(
        default=False, description="the value is confirmed unobtainable: counts as missing"
    )


class QueryPolicy(_Model):
    """Coded query responses and when a query counts as overdue (REC-7)."""

    responses: list[QueryResponse] = Field(min_length=1)
    overdue_after_days: int = Field(default=14, ge=1, le=3650)
    assumption: bool = False


class WithdrawalKind(_Model):
    code: Code
    label: str = Field(min_length=1)
    contact_allowed: bool
    contact_forms: list[Code] = Field(
        default_factory=list, description="forms still recorded at follow-up contacts"
    )


class DeathExit(_Model):
    form: Code
    cause_field: Code | None = None


class WithdrawalExit(_Model):
    form: Code
    reason_field: Code | None = None
    kind_field: Code | None = Field(
        default=None, description="choice field holding the kind; else the kind is given apart"
    )
    kinds: list[WithdrawalKind] = Field(min_length=1)


class Exits(_Model):
    """Death and withdrawal through the protocol's forms (LIFE-4, REC-9)."""

    death: DeathExit | None = None
    withdrawal: WithdrawalExit | None = None
    assumption: bool = False


# ``Rule`` refers to itself; pydantic resolves the forward references once, here.
for _model in (AllOf, AnyOf, NotRule, Criterion, DqRule, Protocol):
    _model.model_rebuild()
