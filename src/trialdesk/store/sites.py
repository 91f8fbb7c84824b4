"""Studies and sites."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from trialdesk.store.records import Site, Study
from trialdesk.store.sql import Columns, table_of
from trialdesk.store.tables import SiteRow, StudyRow

STUDY = Columns(table_of(StudyRow), Study)
SITE = Columns(table_of(SiteRow), Site)


class SqlStudies:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, study_id: int) -> Study | None:
        row = self._session.execute(STUDY.select().where(STUDY.table.c.id == study_id)).first()
        return STUDY.maybe(row)


class SqlSites:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._seen: dict[int, Site] = {}

    def get(self, site_id: int) -> Site:
        site = self._seen.get(site_id)
        if site is None:
            row = self._session.execute(SITE.select().where(SITE.table.c.id == site_id)).one()
            site = self._seen[site_id] = SITE.of(row)
        return site

    def by_code(self, study_id: int, code: str) -> Site | None:
        t = SITE.table
        row = self._session.execute(
            SITE.select().where(t.c.study_id == study_id, t.c.code == code)
        ).first()
        return SITE.maybe(row)

    def take_subject_number(self, site_id: int) -> int:
        t = SITE.table
        taken = self._session.execute(
            update(t)
            .where(t.c.id == site_id)
            .values(next_subject_seq=t.c.next_subject_seq + 1)
            .returning(t.c.next_subject_seq)
        ).scalar_one()
        return int(taken) - 1
