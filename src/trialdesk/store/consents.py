"""Signed consent versions, withdrawal kinds and data-quality rule exclusions (issue 15,
REC-6, REC-8, REC-9)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import insert
from sqlalchemy.orm import Session

from trialdesk.store.records import Consent, DqExclusion, Withdrawal
from trialdesk.store.sql import Columns, Sql, plain_update, table_of
from trialdesk.store.tables import ConsentRow, DqExclusionRow, WithdrawalRow

CONSENT = Columns(table_of(ConsentRow), Consent)
WITHDRAWAL = Columns(table_of(WithdrawalRow), Withdrawal)
EXCLUSION = Columns(table_of(DqExclusionRow), DqExclusion)
_C, _W, _E = CONSENT.table, WITHDRAWAL.table, EXCLUSION.table


class SqlConsents:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def for_subject(self, subject_id: int) -> list[Consent]:
        stmt = CONSENT.select().where(_C.c.subject_id == subject_id).order_by(_C.c.id)
        return [CONSENT.of(row) for row in self._run(stmt)]

    def for_subjects(self, subject_ids: Collection[int]) -> dict[int, list[Consent]]:
        out: dict[int, list[Consent]] = {i: [] for i in subject_ids}
        if not subject_ids:
            return out
        stmt = CONSENT.select().where(_C.c.subject_id.in_(list(subject_ids))).order_by(_C.c.id)
        for row in self._run(stmt):
            consent = CONSENT.of(row)
            out.setdefault(consent.subject_id, []).append(consent)
        return out

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
    ) -> Consent:
        stmt = (
            insert(_C)
            .values(
                study_id=study_id,
                subject_id=subject_id,
                document=document,
                version=version,
                signed_on=signed_on,
                protocol_version_id=protocol_version_id,
                recorded_by=recorded_by,
                recorded_at=recorded_at,
            )
            .returning(*CONSENT.columns)
        )
        return CONSENT.of(self._run(stmt).one())

    def withdrawal(self, subject_id: int) -> Withdrawal | None:
        stmt = WITHDRAWAL.select().where(_W.c.subject_id == subject_id)
        return WITHDRAWAL.maybe(self._run(stmt).first())

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
    ) -> Withdrawal:
        stmt = (
            insert(_W)
            .values(
                subject_id=subject_id,
                kind=kind,
                contact_allowed=contact_allowed,
                form_record_id=form_record_id,
                withdrawn_on=withdrawn_on,
                recorded_by=recorded_by,
                recorded_at=recorded_at,
            )
            .returning(*WITHDRAWAL.columns)
        )
        return WITHDRAWAL.of(self._run(stmt).one())


class SqlQualityExclusions:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def active(self, subject_id: int) -> list[DqExclusion]:
        stmt = (
            EXCLUSION.select()
            .where(_E.c.subject_id == subject_id, _E.c.revoked_at.is_(None))
            .order_by(_E.c.id)
        )
        return [EXCLUSION.of(row) for row in self._run(stmt)]

    def get(self, study_id: int, exclusion_id: int) -> DqExclusion | None:
        stmt = EXCLUSION.select().where(_E.c.id == exclusion_id, _E.c.study_id == study_id)
        return EXCLUSION.maybe(self._run(stmt).first())

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
    ) -> DqExclusion:
        stmt = (
            insert(_E)
            .values(
                study_id=study_id,
                subject_id=subject_id,
                rule_id=rule_id,
                form_code=form_code,
                visit_code=visit_code,
                seq=seq,
                reason=reason,
                excluded_by=by,
                excluded_at=at,
            )
            .returning(*EXCLUSION.columns)
        )
        return EXCLUSION.of(self._run(stmt).one())

    def revoke(self, exclusion: DqExclusion, *, by: str, at: dt.datetime) -> DqExclusion:
        return plain_update(
            self._run, EXCLUSION, exclusion.id, {"revoked_by": by, "revoked_at": at}
        )


__all__ = ["SqlConsents", "SqlQualityExclusions"]
