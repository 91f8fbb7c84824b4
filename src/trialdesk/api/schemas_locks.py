"""Request and response models of the records-that-hold routes (issue 15, lane x15a): locks,
the database lock and its checklist, SDV, investigator signatures. Responses mirror the
services' views field for field; none carries an arm."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from trialdesk.api.schemas import Password, Text, _In

Visit = Field(default=None, max_length=40)
Form = Field(default=None, max_length=100)


class LockIn(_In):
    level: Literal["form", "visit", "casebook"]
    visit: str | None = Visit
    form: str | None = Form
    seq: int | None = Field(default=None, ge=1, le=10_000)
    reason: str = Text
    password: str = Password


class UnlockIn(_In):
    reason: str = Text
    password: str = Password


class DatabaseLockIn(_In):
    kind: Literal["soft", "hard"]
    reason: str = Text
    password: str = Password


class SdvIn(_In):
    form: str = Field(min_length=1, max_length=100)
    visit: str = Field(default="", max_length=40)
    seq: int = Field(default=1, ge=1, le=10_000)
    fields: list[str] | None = Field(default=None, max_length=200)


class SignIn(_In):
    level: Literal["form", "visit", "casebook"]
    visit: str | None = Visit
    form: str | None = Form
    seq: int = Field(default=1, ge=1, le=10_000)
    password: str = Password


class LockPublic(BaseModel):
    id: int
    level: str
    kind: str
    subject: str | None
    visit: str | None
    form: str | None
    seq: int | None
    describes: str
    reason: str
    locked_by: str
    locked_name: str
    locked_at: str
    active: bool
    unlocked_by: str | None
    unlocked_name: str | None
    unlocked_at: str | None
    unlock_reason: str | None


class BlockerPublic(BaseModel):
    kind: str
    site: str
    subject: str
    text: str


class ChecklistPublic(BaseModel):
    ready: bool
    database_lock: str | None
    blockers: list[BlockerPublic]


class SdvRecordPublic(BaseModel):
    subject: str
    site: str
    form: str
    visit: str
    seq: int
    status: str
    required: bool
    why: str
    fields: list[str]
    missing: list[str]
    cleared_because: list[str]
    marked_by: str | None
    marked_at: str | None


class SdvSummaryPublic(BaseModel):
    records: list[SdvRecordPublic]
    by_subject: dict[str, dict[str, int]]
    by_site: dict[str, dict[str, int]]
    by_visit: dict[str, dict[str, int]]


class RecordSignaturePublic(BaseModel):
    id: int
    subject: str
    level: str
    visit: str | None
    form: str | None
    signed_by: str
    signed_name: str
    signed_at: str
    meaning: str
    valid: bool
    invalid_because: list[str]
