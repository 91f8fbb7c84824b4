"""A study's clinical records read whole, for the endpoint analyses (issue 13, lane x13b):
randomized subjects with their allocation and site, visits, therapies, forms, and the
concealed index procedures with the encrypted arm."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from trialdesk.store.crc import CASE, THERAPY
from trialdesk.store.forms import FORM
from trialdesk.store.reading import AUDIT_ENTRY
from trialdesk.store.records import (
    Allocation,
    AuditEntry,
    CrcCase,
    FormRecord,
    InErrorRandomization,
    Site,
    Subject,
    Therapy,
    TrialUnblindingEvent,
    Visit,
)
from trialdesk.store.sites import SITE
from trialdesk.store.sql import Sql, table_of
from trialdesk.store.subjects import ALLOCATION, SUBJECT
from trialdesk.store.tables import TrialUnblindingRow
from trialdesk.store.visits import VISIT

_S = SUBJECT.table
_R = ALLOCATION.table
_F = FORM.table


class SqlStudyRecords:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def randomized(
        self, study_id: int, site_ids: Collection[int] | None
    ) -> list[tuple[Subject, Allocation, Site]]:
        """Randomized live (non-test) subjects, in ``site_ids`` when given, by number."""
        stmt = (
            select(*SUBJECT.columns, *ALLOCATION.columns, *SITE.columns)
            .select_from(_S)
            .join(_R, _R.c.subject_id == _S.c.id)
            .join(SITE.table, SITE.table.c.id == _S.c.site_id)
            .where(_S.c.study_id == study_id, _S.c.test_subject.is_(False))
            .order_by(_S.c.number)
        )
        if site_ids is not None:
            stmt = stmt.where(_S.c.site_id.in_(sorted(site_ids)))
        at = SUBJECT.width
        return [
            (SUBJECT.of(row), ALLOCATION.of(row, at), SITE.of(row, at + ALLOCATION.width))
            for row in self._run(stmt)
        ]

    def visits(self, study_id: int) -> list[Visit]:
        in_study = select(_S.c.id).where(_S.c.study_id == study_id)
        stmt = VISIT.select().where(VISIT.table.c.subject_id.in_(in_study))
        return [VISIT.of(row) for row in self._run(stmt)]

    def therapies(self, study_id: int) -> list[Therapy]:
        in_study = select(_S.c.id).where(_S.c.study_id == study_id)
        stmt = THERAPY.select().where(THERAPY.table.c.subject_id.in_(in_study))
        return [THERAPY.of(row) for row in self._run(stmt)]

    def forms(self, study_id: int) -> list[FormRecord]:
        """Every form record of the study's subjects, by subject and sequence."""
        in_study = select(_S.c.id).where(_S.c.study_id == study_id)
        stmt = (
            FORM.select().where(_F.c.subject_id.in_(in_study)).order_by(_F.c.subject_id, _F.c.seq)
        )
        return [FORM.of(row) for row in self._run(stmt)]

    def procedures_with_arm(self, study_id: int, form_code: str) -> list[tuple[FormRecord, bytes]]:
        """The live subjects' concealed procedure records (``form_code``) with their
        encrypted arm, randomizations flagged in error left out."""
        stmt = (
            select(*FORM.columns, _R.c.arm_enc)
            .select_from(_F)
            .join(_R, _R.c.subject_id == _F.c.subject_id)
            .join(_S, _S.c.id == _F.c.subject_id)
            .where(
                _S.c.study_id == study_id,
                _S.c.test_subject.is_(False),
                _R.c.in_error.is_(False),
                _F.c.form_code == form_code,
            )
        )
        return [(FORM.of(row), bytes(row[FORM.width])) for row in self._run(stmt)]

    # --- the operational reports (services/report_views.py)

    def live_subjects(self, study_id: int, site_ids: Collection[int] | None) -> list[Subject]:
        """Live (non-test) subjects, in ``site_ids`` when given, by number."""
        stmt = SUBJECT.select().where(_S.c.study_id == study_id, _S.c.test_subject.is_(False))
        if site_ids is not None:
            stmt = stmt.where(_S.c.site_id.in_(sorted(site_ids)))
        return [SUBJECT.of(row) for row in self._run(stmt.order_by(_S.c.number))]

    def allocations_of(self, subject_ids: Collection[int]) -> dict[int, Allocation]:
        stmt = ALLOCATION.select().where(_R.c.subject_id.in_(sorted(subject_ids)))
        return {a.subject_id: a for a in (ALLOCATION.of(row) for row in self._run(stmt))}

    def forms_of(self, subject_ids: Collection[int], form_code: str) -> list[FormRecord]:
        stmt = FORM.select().where(
            _F.c.subject_id.in_(sorted(subject_ids)), _F.c.form_code == form_code
        )
        return [FORM.of(row) for row in self._run(stmt)]

    def visits_of(self, subject_ids: Collection[int]) -> list[Visit]:
        stmt = VISIT.select().where(VISIT.table.c.subject_id.in_(sorted(subject_ids)))
        return [VISIT.of(row) for row in self._run(stmt)]

    def in_error(self, subject_ids: Collection[int]) -> list[InErrorRandomization]:
        stmt = select(_R.c.subject_id, _R.c.randomized_on, _R.c.in_error_reason).where(
            _R.c.subject_id.in_(sorted(subject_ids)), _R.c.in_error.is_(True)
        )
        return [InErrorRandomization(*row) for row in self._run(stmt)]

    def live_crc_cases(self, study_id: int) -> list[CrcCase]:
        live = select(_S.c.id).where(_S.c.study_id == study_id, _S.c.test_subject.is_(False))
        k = CASE.table
        stmt = CASE.select().where(k.c.study_id == study_id, k.c.subject_id.in_(live))
        return [CASE.of(row) for row in self._run(stmt)]

    def audit_actions(self, study_id: int, actions: Collection[str]) -> list[AuditEntry]:
        """The study's audit entries of ``actions``, in the order written."""
        a = AUDIT_ENTRY.table
        stmt = (
            AUDIT_ENTRY.select()
            .where(a.c.study_id == study_id, a.c.action.in_(sorted(actions)))
            .order_by(a.c.id)
        )
        return [AUDIT_ENTRY.of(row) for row in self._run(stmt)]

    def trial_unblindings(self, study_id: int) -> list[TrialUnblindingEvent]:
        t = table_of(TrialUnblindingRow)
        stmt = select(
            t.c.requested_at, t.c.requested_by, t.c.reason, t.c.confirmed_at, t.c.confirmed_by
        ).where(t.c.study_id == study_id)
        return [TrialUnblindingEvent(*row) for row in self._run(stmt)]
