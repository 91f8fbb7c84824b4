"""Request and response models of the records routes of issue 15 (lane x15b): data quality,
missing data, query assignment and verification, consents, exits through forms, contacts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from trialdesk.api.schemas import Text, _In


class DiscrepancyPublic(BaseModel):
    subject: str
    site: str
    rule: str
    severity: str
    form: str
    visit: str | None
    seq: int
    field: str
    text: str
    detail: str
    excluded: str | None


class QualityRunIn(_In):
    subject: str | None = Field(default=None, max_length=40)
    site: str | None = Field(default=None, max_length=40)


class QualityRunPublic(BaseModel):
    subjects: int
    discrepancies: list[DiscrepancyPublic]
    opened: list[int]
    reopened: list[int]
    resolved: list[int]


class ExclusionIn(_In):
    rule: str = Field(min_length=1, max_length=40)
    form: str = Field(min_length=1, max_length=100)
    visit: str = Field(default="", max_length=40)
    seq: int = Field(default=1, ge=1, le=10_000)
    reason: str = Text


class RevokeExclusionIn(_In):
    reason: str = Text


class ExclusionPublic(BaseModel):
    id: int
    subject: str
    rule: str
    form: str
    visit: str | None
    seq: int
    reason: str
    excluded_by: str
    excluded_at: str
    revoked_by: str | None = None
    revoked_at: str | None = None


class MissingRowPublic(BaseModel):
    visit: str | None
    form: str
    expected: int
    complete: int
    incomplete: int
    not_saved: int
    marked_missing: int
    subjects: list[str]


class AssignQueryIn(_In):
    assignee: str = Field(max_length=80, description="a username; empty: the site as a whole")


class ReconsentIn(_In):
    signed_on: dt.date
    version: str = Field(min_length=1, max_length=100)
    document: str | None = Field(default=None, max_length=40)


class ConsentPublic(BaseModel):
    document: str
    version: str
    signed_on: str
    recorded_by: str


class ConsentDuePublic(BaseModel):
    subject: str
    site: str
    document: str
    signed: str | None
    required: str
    since: str | None


class SubjectConsentsPublic(BaseModel):
    subject: str
    consents: list[ConsentPublic]
    due: list[ConsentDuePublic]


class ExitFormIn(_In):
    exit: str = Field(min_length=1, max_length=20, description="death or withdrawal")
    values: dict[str, Any] = Field(description="the protocol's death or withdrawal form")
    kind: str | None = Field(
        default=None, max_length=40, description="REC-9: what the subject withdraws from"
    )


class ContactIn(_In):
    visit: str = Field(min_length=1, max_length=40)
    contact_date: dt.date
    forms: dict[str, dict[str, Any]]
