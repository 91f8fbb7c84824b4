"""What every authenticated request reads before its action (issue 13, lane x13a): the
session behind a token with its user and role grants, and the study named in the path with
its current protocol and site count, each in one Core statement, so a request resolves both
in one short read transaction."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from trialdesk.store.records import StudyHead, TokenRead
from trialdesk.store.sql import Sql, table_of
from trialdesk.store.tables import (
    AuthTokenRow,
    ProtocolVersionRow,
    RoleGrantRow,
    SiteRow,
    StudyRow,
    UserRow,
)

_T = table_of(AuthTokenRow)
_U = table_of(UserRow)
_G = table_of(RoleGrantRow)
_ST = table_of(StudyRow)
_P = table_of(ProtocolVersionRow)
_SITE = table_of(SiteRow)

_TOKEN_COLUMNS = (
    _T.c.id,
    _T.c.user_id,
    _U.c.username,
    _U.c.full_name,
    _U.c.active,
    _T.c.created_at,
    _T.c.expires_at,
    _T.c.revoked_at,
    _T.c.last_used_at,
    _T.c.csrf_token,
    _T.c.study_id,
    _T.c.scope,
)
_TOKEN = (
    select(*_TOKEN_COLUMNS, _G.c.role, _G.c.study_id, _G.c.site_id)
    .select_from(_T)
    .join(_U, _U.c.id == _T.c.user_id)
    .outerjoin(_G, _G.c.user_id == _T.c.user_id)
    .where(_T.c.token_hash == bindparam("hash"), _T.c.kind == bindparam("kind"))
)
_CURRENT = (
    select(func.max(_P.c.id))
    .where(_P.c.study_id == _ST.c.id, _P.c.current.is_(True))
    .correlate(_ST)
    .scalar_subquery()
)
_SITES = (
    select(func.count()).select_from(_SITE).where(_SITE.c.study_id == _ST.c.id).correlate(_ST)
).scalar_subquery()
_STUDY = (
    select(
        _ST.c.id,
        _ST.c.code,
        _ST.c.name,
        _ST.c.mode,
        _P.c.name,
        _P.c.version,
        _P.c.sha256,
        _SITES,
    )
    .select_from(_ST)
    .outerjoin(_P, and_(_P.c.id == _CURRENT))
    .where(_ST.c.code == bindparam("code"))
)
_TOUCH = update(_T).where(_T.c.id == bindparam("token_id")).values(last_used_at=bindparam("at"))


class SqlRequests:
    """Implements :class:`trialdesk.store.ports.RequestRepository`."""

    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def token(self, token_hash: str, kind: str) -> TokenRead | None:
        rows = self._run(_TOKEN, {"hash": token_hash, "kind": kind}).all()
        if not rows:
            return None
        width = len(_TOKEN_COLUMNS)
        head: Any = rows[0]
        grants = tuple(
            (str(r[width]), int(r[width + 1]), None if r[width + 2] is None else int(r[width + 2]))
            for r in rows
            if r[width] is not None
        )
        return TokenRead(*[*head[:width], grants])

    def study(self, code: str) -> StudyHead | None:
        row = self._run(_STUDY, {"code": code}).first()
        if row is None:
            return None
        return StudyHead(
            id=row[0],
            code=row[1],
            name=row[2],
            mode=row[3],
            protocol_name=row[4] or "",
            protocol_version=row[5] or "",
            protocol_sha256=row[6] or "",
            sites=int(row[7] or 0),
        )

    def touch(self, token_id: int, at: dt.datetime) -> None:
        self._run(_TOUCH, {"token_id": token_id, "at": at})
