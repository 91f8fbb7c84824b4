"""What the submission exports (SDTM, ADaM, Define-XML) read, as plain records (issue 16).

One read of a study: subjects with their site, allocation, forms, visits and therapies, and
the protocol versions. Values stay as stored: form data as its JSON dict, a concealed
procedure record and the arm as their ciphertext, so deciding what a reader may see (and
decrypting it) stays with the service (RAND-6). :mod:`trialdesk.reports.sdtm` maps these
records; it never sees the database.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trialdesk.store.tables import (
    FormRecordRow,
    ProtocolVersionRow,
    RandomizationRow,
    SiteRow,
    StudyRow,
    SubjectRow,
    TherapyRow,
    VisitRow,
)


@dataclass(frozen=True)
class StoredForm:
    form_code: str
    visit_code: str
    seq: int
    data: str
    """Canonical JSON of the values; ciphertext for the concealed procedure record."""
    protocol_version_id: int
    created_at: dt.datetime

    def values(self) -> dict[str, Any]:
        return dict(json.loads(self.data))


@dataclass(frozen=True)
class StoredVisit:
    visit_code: str
    status: str
    visit_date: dt.date | None
    missed_reason: str | None


@dataclass(frozen=True)
class StoredTherapy:
    therapy_date: dt.date
    therapy_type: str


@dataclass(frozen=True)
class StoredAllocation:
    number: str
    randomized_on: dt.date
    arm_enc: bytes
    in_error: bool


@dataclass
class StoredSubject:
    id: int
    number: str
    site_code: str
    site_name: str
    country: str
    state: str
    test_subject: bool
    registered_on: dt.date
    consent_date: dt.date | None
    consent_version: str | None
    screen_failure_reason: str | None
    randomized_on: dt.date | None
    procedure_done: bool
    discharged_on: dt.date | None
    exit_date: dt.date | None
    exit_reason: str | None
    allocation: StoredAllocation | None
    forms: list[StoredForm] = field(default_factory=list)
    visits: list[StoredVisit] = field(default_factory=list)
    therapies: list[StoredTherapy] = field(default_factory=list)


@dataclass(frozen=True)
class StoredVersion:
    id: int
    version: str
    sha256: str
    effective_from: dt.date | None
    current: bool


@dataclass
class StudySubmission:
    study_id: int
    code: str
    name: str
    versions: list[StoredVersion]
    subjects: list[StoredSubject]


class SqlSubmission:
    """Reads a study for the submission exports in a handful of statements."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def read(self, study_id: int) -> StudySubmission:
        s = self.session
        study = s.get(StudyRow, study_id)
        assert study is not None  # the caller checked the study
        versions = [
            StoredVersion(
                id=v.id,
                version=v.version,
                sha256=v.sha256,
                effective_from=v.effective_from,
                current=v.current,
            )
            for v in s.scalars(
                select(ProtocolVersionRow)
                .where(ProtocolVersionRow.study_id == study_id)
                .order_by(ProtocolVersionRow.id)
            )
        ]
        sites = {
            site.id: site for site in s.scalars(select(SiteRow).where(SiteRow.study_id == study_id))
        }
        subjects: dict[int, StoredSubject] = {}
        rows = s.execute(
            select(SubjectRow, RandomizationRow)
            .outerjoin(RandomizationRow, RandomizationRow.subject_id == SubjectRow.id)
            .where(SubjectRow.study_id == study_id)
            .order_by(SubjectRow.number)
        ).tuples()
        for row, rand in rows:
            site = sites[row.site_id]
            subjects[row.id] = StoredSubject(
                id=row.id,
                number=row.number,
                site_code=site.code,
                site_name=site.name,
                country=site.country,
                state=row.state,
                test_subject=row.test_subject,
                registered_on=row.registered_on,
                consent_date=row.consent_date,
                consent_version=row.consent_version,
                screen_failure_reason=row.screen_failure_reason,
                randomized_on=row.randomized_on,
                procedure_done=row.procedure_done,
                discharged_on=row.discharged_on,
                exit_date=row.exit_date,
                exit_reason=row.exit_reason,
                allocation=None
                if rand is None
                else StoredAllocation(rand.number, rand.randomized_on, rand.arm_enc, rand.in_error),
            )
        in_study = select(SubjectRow.id).where(SubjectRow.study_id == study_id)
        for form in s.scalars(
            select(FormRecordRow)
            .where(FormRecordRow.subject_id.in_(in_study))
            .order_by(FormRecordRow.subject_id, FormRecordRow.id)
        ):
            subjects[form.subject_id].forms.append(
                StoredForm(
                    form.form_code,
                    form.visit_code,
                    form.seq,
                    form.data,
                    form.protocol_version_id,
                    form.created_at,
                )
            )
        for visit in s.scalars(
            select(VisitRow).where(VisitRow.subject_id.in_(in_study)).order_by(VisitRow.id)
        ):
            subjects[visit.subject_id].visits.append(
                StoredVisit(visit.visit_code, visit.status, visit.visit_date, visit.missed_reason)
            )
        for therapy in s.scalars(
            select(TherapyRow).where(TherapyRow.subject_id.in_(in_study)).order_by(TherapyRow.id)
        ):
            subjects[therapy.subject_id].therapies.append(
                StoredTherapy(therapy.therapy_date, therapy.therapy_type)
            )
        return StudySubmission(
            study_id=study_id,
            code=study.code,
            name=study.name,
            versions=versions,
            subjects=list(subjects.values()),
        )
