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


# ``Rule`` refers to itself; pydantic resolves the forward references once, here.
for _model in (AllOf, AnyOf, NotRule, Criterion, Protocol):
    _model.model_rebuild()
