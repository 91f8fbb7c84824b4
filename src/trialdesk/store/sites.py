"""Studies and sites."""

from __future__ import annotations

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from trialdesk.store.records import Site, Study
from trialdesk.store.sql import Columns, Sql, table_of
from trialdesk.store.tables import SiteRow, StudyRow

STUDY = Columns(table_of(StudyRow), Study)
SITE = Columns(table_of(SiteRow), Site)
_SITE = SITE.table

_STUDY_BY_ID = STUDY.select().where(STUDY.table.c.id == bindparam("id"))
_SITE_BY_ID = SITE.select().where(_SITE.c.id == bindparam("id"))
_SITE_BY_CODE = SITE.select().where(
    _SITE.c.study_id == bindparam("study_id"), _SITE.c.code == bindparam("code")
)
_TAKE_NUMBER = (
    update(_SITE)
    .where(_SITE.c.id == bindparam("site_id"))
    .values(next_subject_seq=_SITE.c.next_subject_seq + 1)
    .returning(_SITE.c.next_subject_seq)
)


class SqlStudies:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def get(self, study_id: int) -> Study | None:
        return STUDY.maybe(self._run(_STUDY_BY_ID, {"id": study_id}).first())


class SqlSites:
    def __init__(self, session: Session) -> None:
        self._run = Sql(session)
        self._seen: dict[int, Site] = {}

    def get(self, site_id: int) -> Site:
        site = self._seen.get(site_id)
        if site is None:
            site = self._seen[site_id] = SITE.of(self._run(_SITE_BY_ID, {"id": site_id}).one())
        return site

    def by_code(self, study_id: int, code: str) -> Site | None:
        return SITE.maybe(self._run(_SITE_BY_CODE, {"study_id": study_id, "code": code}).first())

    def take_subject_number(self, site_id: int) -> int:
        return int(self._run(_TAKE_NUMBER, {"site_id": site_id}).scalar_one()) - 1

    def of_study(self, study_id: int) -> list[Site]:
        stmt = SITE.select().where(_SITE.c.study_id == study_id).order_by(_SITE.c.code)
        sites = [SITE.of(row) for row in self._run(stmt)]
        self._seen.update((site.id, site) for site in sites)
        return sites
