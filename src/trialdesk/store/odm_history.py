"""What the transactional ODM export reads (issue 16, EXP-1): the study's audit trail with the
keys that place each entry (subject number and site, form record, protocol version), the
protocol versions with the dates they took effect, sites and users. Read only; the mapping to
ODM is :mod:`trialdesk.reports.odm_audit`, the blinding decision is the service's."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trialdesk.store.records import (
    HistoryEntry,
    HistoryForm,
    HistorySubject,
    HistoryVersion,
    StudyHistory,
)
from trialdesk.store.tables import (
    AuditEntryRow,
    FormRecordRow,
    ProtocolVersionRow,
    SiteRow,
    StudyRow,
    SubjectRow,
    UserRow,
)


class SqlOdmHistory:
    """Implements :class:`trialdesk.store.ports.OdmHistoryRepository`."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def study_history(self, study_id: int, *, concealed_form: str) -> StudyHistory | None:
        s = self._s
        study = s.get(StudyRow, study_id)
        if study is None:
            return None
        versions = [
            HistoryVersion(
                v.id, v.version, v.name, v.sha256, v.status, v.loaded_at.date(), v.effective_from
            )
            for v in s.scalars(
                select(ProtocolVersionRow)
                .where(ProtocolVersionRow.study_id == study_id)
                .order_by(ProtocolVersionRow.id)
            )
        ]
        sites = {
            code: name
            for code, name in s.execute(
                select(SiteRow.code, SiteRow.name)
                .where(SiteRow.study_id == study_id)
                .order_by(SiteRow.code)
            ).tuples()
        }
        subjects = {
            r.id: HistorySubject(r.id, r.number, code, r.protocol_version_id, r.test_subject)
            for r, code in s.execute(
                select(SubjectRow, SiteRow.code)
                .join(SiteRow, SiteRow.id == SubjectRow.site_id)
                .where(SubjectRow.study_id == study_id)
            ).tuples()
        }
        forms = {
            f.id: HistoryForm(
                f.id,
                f.subject_id,
                f.form_code,
                f.visit_code,
                f.seq,
                f.protocol_version_id,
                f.data if f.form_code == concealed_form else None,
            )
            for f in s.scalars(
                select(FormRecordRow)
                .join(SubjectRow, SubjectRow.id == FormRecordRow.subject_id)
                .where(SubjectRow.study_id == study_id)
            )
        }
        entries = [
            HistoryEntry(
                e.id,
                e.stream,
                e.seq,
                e.at,
                e.actor,
                e.action,
                e.entity,
                e.entity_id,
                e.subject_id,
                e.old,
                e.new,
                e.reason,
                e.protocol_sha256,
            )
            for e in s.scalars(
                select(AuditEntryRow)
                .where(AuditEntryRow.study_id == study_id)
                .order_by(AuditEntryRow.id)
            )
        ]
        actors = sorted({e.actor for e in entries})
        users = (
            dict(
                s.execute(
                    select(UserRow.username, UserRow.full_name).where(UserRow.username.in_(actors))
                )
                .tuples()
                .all()
            )
            if actors
            else {}
        )
        return StudyHistory(
            study.code, study.name, versions, sites, subjects, forms, users, entries
        )
