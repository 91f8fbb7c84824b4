"""Allocation: lists, their strata and slots, randomizations, trial-level unblinding
(issue 13, lane x13a). Every dialect difference of the allocation family lives here.

The randomization's statements are Core statements built once at import. On PostgreSQL the
draw of a slot (advance the stratum's cursor, mark its slot used) and the numbering of a
randomization (advance the site's counter, insert the record) are one statement each, with
data-modifying CTEs, so a randomization is a dozen round trips; SQLite, which has no such
CTEs and whose writers are serialized anyway, runs the same steps one statement at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    bindparam,
    case,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trialdesk.domain.errors import Conflict
from trialdesk.store.protocols import VERSION
from trialdesk.store.records import (
    AllocationList,
    AllocationSlot,
    CapCounts,
    ProtocolVersion,
    Randomization,
    StratumCursor,
    SubjectRead,
    TakenSlot,
    TrialUnblinding,
)
from trialdesk.store.sites import SITE
from trialdesk.store.sql import Columns, Sql, for_update, guarded_update, plain_update, table_of
from trialdesk.store.subjects import READ_WIDTH, read_select, subject_read
from trialdesk.store.tables import (
    AllocationListRow,
    AllocationSlotRow,
    RandomizationRow,
    RoleGrantRow,
    StratumCursorRow,
    StudyRow,
    SubjectRow,
    TrialUnblindingRow,
    UserRow,
)

LIST = Columns(table_of(AllocationListRow), AllocationList)
CURSOR = Columns(table_of(StratumCursorRow), StratumCursor)
SLOT = Columns(table_of(AllocationSlotRow), AllocationSlot)
RANDOMIZATION = Columns(table_of(RandomizationRow), Randomization)
UNBLINDING = Columns(table_of(TrialUnblindingRow), TrialUnblinding)

_L = LIST.table
_C = CURSOR.table
_SL = SLOT.table
_R = RANDOMIZATION.table
_U = UNBLINDING.table
_S = table_of(SubjectRow)
_SITE = SITE.table
_STUDY = table_of(StudyRow)
_USER = table_of(UserRow)
_GRANT = table_of(RoleGrantRow)

# --- lists ----------------------------------------------------------------------------------

_ACTIVE_ID = (
    select(_L.c.id)
    .where(
        _L.c.study_id == bindparam("study_id"),
        _L.c.mode == bindparam("mode"),
        _L.c.active.is_(True),
    )
    .order_by(_L.c.id.desc())
    .limit(1)
    .correlate(None)
    .scalar_subquery()
)
_ACTIVE = LIST.select().where(_L.c.id == _ACTIVE_ID)
_LIST = LIST.select().where(_L.c.id == bindparam("id"))
_CURSOR = CURSOR.select().where(
    _C.c.list_id == bindparam("list_id"), _C.c.stratum == bindparam("s")
)
_SLOT_AT = SLOT.select().where(
    _SL.c.list_id == bindparam("list_id"),
    _SL.c.stratum == bindparam("s"),
    _SL.c.sequence == bindparam("seq"),
)
_ADVANCE = (
    update(_C)
    .where(
        _C.c.list_id == _ACTIVE_ID,
        _C.c.stratum == bindparam("s"),
        _C.c.next_sequence <= _C.c.size,
    )
    .values(next_sequence=_C.c.next_sequence + 1)
    .returning(*CURSOR.columns)
)
_USE_SLOT = (
    update(_SL)
    .where(
        _SL.c.list_id == bindparam("b_list"),
        _SL.c.stratum == bindparam("s"),
        _SL.c.sequence == bindparam("seq"),
        _SL.c.used_by_subject_id.is_(None),
    )
    .values(used_by_subject_id=bindparam("subject_id"), used_at=bindparam("at"))
    .returning(*SLOT.columns)
)
_ACTIVE_CURSOR = CURSOR.select().where(_C.c.list_id == _ACTIVE_ID, _C.c.stratum == bindparam("s"))


def _draw_cte() -> Any:
    """PostgreSQL: advance the cursor of the active list's stratum and mark its slot used,
    in one statement; no row when there is no list, no stratum or no slot left."""
    advanced = _ADVANCE.cte("advanced")
    used = (
        update(_SL)
        .where(
            _SL.c.list_id == advanced.c.list_id,
            _SL.c.stratum == advanced.c.stratum,
            _SL.c.sequence == advanced.c.next_sequence - 1,
        )
        .values(used_by_subject_id=bindparam("subject_id"), used_at=bindparam("at"))
        .returning(*SLOT.columns, *(c.label(f"c_{c.name}") for c in advanced.c))
    )
    return used


_DRAW_PG = _draw_cte()


class SqlLists:
    """Implements :class:`trialdesk.store.ports.ListRepository`."""

    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def site_codes(self, study_id: int) -> list[str]:
        stmt = select(_SITE.c.code).where(_SITE.c.study_id == study_id).order_by(_SITE.c.code)
        return [str(code) for code in self._run(stmt).scalars()]

    def active(self, study_id: int, mode: str) -> AllocationList | None:
        return LIST.maybe(self._run(_ACTIVE, {"study_id": study_id, "mode": mode}).first())

    def get(self, list_id: int) -> AllocationList | None:
        return LIST.maybe(self._run(_LIST, {"id": list_id}).first())

    def of_study(self, study_id: int, mode: str | None = None) -> list[AllocationList]:
        stmt = LIST.select().where(_L.c.study_id == study_id).order_by(_L.c.id)
        if mode is not None:
            stmt = stmt.where(_L.c.mode == mode)
        return [LIST.of(row) for row in self._run(stmt)]

    def add(
        self,
        *,
        study_id: int,
        mode: str,
        method: str,
        source: str,
        seed_enc: bytes | None,
        fingerprint: str,
        at: dt.datetime,
        by: str,
    ) -> AllocationList:
        stmt = insert(_L).returning(*LIST.columns)
        values = {
            "study_id": study_id,
            "mode": mode,
            "method": method,
            "source": source,
            "seed_enc": seed_enc,
            "fingerprint": fingerprint,
            "created_at": at,
            "created_by": by,
            "active": True,
        }
        return LIST.of(self._run(stmt, values).one())

    def deactivate(self, lst: AllocationList) -> AllocationList:
        return plain_update(self._run, LIST, lst.id, {"active": False})

    def cursor(self, list_id: int, stratum: str, *, lock: bool = False) -> StratumCursor | None:
        stmt = for_update(self._run, _CURSOR) if lock else _CURSOR
        return CURSOR.maybe(self._run(stmt, {"list_id": list_id, "s": stratum}).first())

    def cursors(self, list_id: int) -> list[StratumCursor]:
        stmt = CURSOR.select().where(_C.c.list_id == list_id).order_by(_C.c.stratum)
        return [CURSOR.of(row) for row in self._run(stmt)]

    def add_cursor(self, list_id: int, stratum: str, size: int) -> StratumCursor:
        stmt = insert(_C).returning(*CURSOR.columns)
        values = {
            "list_id": list_id,
            "stratum": stratum,
            "next_sequence": 1,
            "size": size,
            "extensions": 0,
        }
        return CURSOR.of(self._run(stmt, values).one())

    def update_cursor(self, cursor: StratumCursor, values: Mapping[str, Any]) -> StratumCursor:
        return plain_update(self._run, CURSOR, cursor.id, values)

    def add_slots(self, list_id: int, stratum: str, slots: Sequence[tuple[int, bytes]]) -> None:
        if not slots:
            return
        rows = [
            {"list_id": list_id, "stratum": stratum, "sequence": seq, "payload_enc": payload}
            for seq, payload in slots
        ]
        self._run(insert(_SL), rows)

    def slots(self, list_id: int, stratum: str | None = None) -> list[AllocationSlot]:
        stmt = SLOT.select().where(_SL.c.list_id == list_id)
        if stratum is not None:
            stmt = stmt.where(_SL.c.stratum == stratum)
        stmt = stmt.order_by(_SL.c.stratum, _SL.c.sequence)
        return [SLOT.of(row) for row in self._run(stmt)]

    def last_slot(self, list_id: int, stratum: str) -> AllocationSlot | None:
        stmt = (
            SLOT.select()
            .where(_SL.c.list_id == list_id, _SL.c.stratum == stratum)
            .order_by(_SL.c.sequence.desc())
            .limit(1)
        )
        return SLOT.maybe(self._run(stmt).first())

    def sizes(self, list_id: int) -> tuple[int, int]:
        strata = select(func.count()).select_from(_C).where(_C.c.list_id == list_id)
        slots = select(func.count()).select_from(_SL).where(_SL.c.list_id == list_id)
        row = self._run(select(strata.scalar_subquery(), slots.scalar_subquery())).one()
        return int(row[0] or 0), int(row[1] or 0)

    def used(self, list_id: int) -> int:
        stmt = (
            select(func.count())
            .select_from(_SL)
            .where(_SL.c.list_id == list_id, _SL.c.used_by_subject_id.is_not(None))
        )
        return int(self._run(stmt).scalar() or 0)

    def draw(
        self, study_id: int, mode: str, stratum: str, *, subject_id: int, at: dt.datetime
    ) -> TakenSlot | None:
        """Take the next unused slot of ``stratum`` in the active list of ``mode``, under the
        cursor row's lock (each slot at most once and in order, RAND-5). None when there is
        no such list or stratum or the stratum has no slot left: the caller looks why."""
        params = {"study_id": study_id, "mode": mode, "s": stratum, "subject_id": subject_id}
        params["at"] = at
        if self._run.postgres:
            row = self._run(_DRAW_PG, params).first()
            if row is None:
                return self._after_wait(params)
            slot = SLOT.of(row)
            cursor = CURSOR.of(row, SLOT.width)
        else:
            cursor_row = self._run(_ADVANCE, params).first()
            if cursor_row is None:
                return None
            cursor = CURSOR.of(cursor_row)
            seq = cursor.next_sequence - 1
            slot = SLOT.of(
                self._run(_USE_SLOT, {**params, "b_list": cursor.list_id, "seq": seq}).one()
            )
        return TakenSlot(slot=slot, cursor=cursor)

    def _after_wait(self, params: dict[str, Any]) -> TakenSlot | None:
        """PostgreSQL, no slot drawn. Usually there is none to draw. But when the cursor's
        lock was waited for while another transaction extended the stratum, the cursor was
        advanced past slots that the statement's snapshot could not see yet: then the slot
        just before the cursor is unused (every other advance marks its slot in the same
        transaction), and it is this draw's."""
        cursor = CURSOR.maybe(self._run(for_update(self._run, _ACTIVE_CURSOR), params).first())
        if cursor is None or cursor.next_sequence <= 1:
            return None
        seq = cursor.next_sequence - 1
        row = self._run(_USE_SLOT, {**params, "b_list": cursor.list_id, "seq": seq}).first()
        return None if row is None else TakenSlot(slot=SLOT.of(row), cursor=cursor)

    def take_slot(self, cursor: StratumCursor, *, subject_id: int, at: dt.datetime) -> TakenSlot:
        """Draw from a cursor the caller holds locked (the slow path: after an extension)."""
        params = {
            "b_list": cursor.list_id,
            "s": cursor.stratum,
            "seq": cursor.next_sequence,
            "subject_id": subject_id,
            "at": at,
        }
        slot = SLOT.of(self._run(_USE_SLOT, params).one())
        after = self.update_cursor(cursor, {"next_sequence": cursor.next_sequence + 1})
        return TakenSlot(slot=slot, cursor=after)


# --- randomizations -------------------------------------------------------------------------

_R_SUBJECT = RANDOMIZATION.select().where(_R.c.subject_id == bindparam("subject_id"))
_R_KEY = RANDOMIZATION.select().where(_R.c.idempotency_key == bindparam("key"))
_COUNTS = (
    select(
        func.count(),
        func.coalesce(func.sum(case((_S.c.site_id == bindparam("site_id"), 1), else_=0)), 0),
        func.coalesce(func.sum(case((_SITE.c.country == bindparam("country"), 1), else_=0)), 0),
    )
    .select_from(_R)
    .join(_S, _S.c.id == _R.c.subject_id)
    .join(_SITE, _SITE.c.id == _S.c.site_id)
    .where(_R.c.study_id == bindparam("study_id"))
)
_ALLOCATED = select(_R.c.arm_enc, _R.c.factors).where(
    _R.c.study_id == bindparam("study_id"), _R.c.in_error.is_(False)
)
_NEXT_NUMBER = (
    update(_SITE)
    .where(_SITE.c.id == bindparam("site_id"))
    .values(next_randomization_seq=_SITE.c.next_randomization_seq + 1)
    .returning(_SITE.c.next_randomization_seq - 1)
)
_INSERT = insert(_R).returning(*RANDOMIZATION.columns)
_FIELDS = [
    "study_id",
    "subject_id",
    "slot_id",
    "stratum",
    "factors",
    "arm_enc",
    "detail_enc",
    "randomized_on",
    "randomized_at",
    "randomized_by",
    "idempotency_key",
    "in_error",
    "protocol_version_id",
]


def _numbered_insert_pg() -> Any:
    """PostgreSQL: take the site's next randomization number and insert the record with it,
    in one statement (the number is ``<site>-R`` and at least three digits)."""
    names = ", ".join([*_FIELDS, "number"])
    values = ", ".join(f":{name}" for name in _FIELDS if name != "in_error")
    returning = ", ".join(RANDOMIZATION.names)
    sql = (
        "WITH numbered AS (UPDATE sites SET next_randomization_seq = next_randomization_seq + 1"
        " WHERE id = :site_id RETURNING next_randomization_seq - 1 AS seq)"
        f" INSERT INTO randomizations ({names})"
        f" SELECT {values.replace(':protocol_version_id', 'false, :protocol_version_id')},"
        " :prefix || CASE WHEN seq < 1000 THEN lpad(seq::text, 3, '0') ELSE seq::text END"
        f" FROM numbered RETURNING {returning}"
    )
    binds = [bindparam(name, type_=_R.c[name].type) for name in _FIELDS if name != "in_error"]
    return (
        text(sql)
        .bindparams(*binds, bindparam("site_id", type_=Integer), bindparam("prefix", type_=String))
        .columns(*RANDOMIZATION.columns)
    )


_NUMBERED_INSERT_PG = _numbered_insert_pg()


_NEWEST = VERSION.table.alias("newest")
_NEWEST_ID = (
    select(func.max(VERSION.table.c.id))
    .where(VERSION.table.c.study_id == _S.c.study_id, VERSION.table.c.status == "signed")
    .correlate(_S)
    .scalar_subquery()
)
_READ_FOR_RANDOMIZE = (
    read_select()
    .add_columns(*(_NEWEST.c[name] for name in VERSION.names))
    .join(_NEWEST, _NEWEST.c.id == _NEWEST_ID)
    .where(_S.c.study_id == bindparam("study_id"), _S.c.number == bindparam("number"))
)


class SqlRandomizations:
    """Implements :class:`trialdesk.store.ports.RandomizationRepository`."""

    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def for_subject(self, subject_id: int) -> Randomization | None:
        return RANDOMIZATION.maybe(self._run(_R_SUBJECT, {"subject_id": subject_id}).first())

    def by_key(self, key: str) -> Randomization | None:
        return RANDOMIZATION.maybe(self._run(_R_KEY, {"key": key}).first())

    def read(self, study_id: int, number: str) -> tuple[SubjectRead, ProtocolVersion] | None:
        """The subject read as for a view, with the study's newest signed protocol version,
        in one statement (the version in force today is that one unless it takes effect
        later: see :meth:`ProtocolRepository.in_force`)."""
        row = self._run(_READ_FOR_RANDOMIZE, {"study_id": study_id, "number": number}).first()
        if row is None:
            return None
        return subject_read(row), VERSION.of(row, READ_WIDTH)

    def parallel_writers(self) -> int | None:
        """How many randomizations may be in flight at once: PostgreSQL's connection limit;
        None where writers are serialized (SQLite)."""
        if not self._run.postgres:
            return None
        return int(self._run(text("SHOW max_connections")).scalar_one())

    def counts(self, study_id: int, *, site_id: int, country: str) -> CapCounts:
        params = {"study_id": study_id, "site_id": site_id, "country": country}
        total, site, in_country = self._run(_COUNTS, params).one()
        return CapCounts(int(total or 0), int(site or 0), int(in_country or 0))

    def allocated(self, study_id: int) -> list[tuple[bytes, str]]:
        """Encrypted arm and stratification levels of every randomization not in error."""
        return [(row[0], row[1]) for row in self._run(_ALLOCATED, {"study_id": study_id})]

    def add(
        self,
        *,
        site_id: int,
        site_code: str,
        study_id: int,
        subject_id: int,
        slot_id: int | None,
        stratum: str,
        factors: str,
        arm_enc: bytes,
        detail_enc: bytes | None,
        randomized_on: dt.date,
        randomized_at: dt.datetime,
        randomized_by: str,
        idempotency_key: str | None,
        protocol_version_id: int,
    ) -> Randomization:
        """Insert the randomization numbered from the site's atomic counter (no duplicates,
        no gaps; the site row stays locked until commit, which the site cap relies on)."""
        values: dict[str, Any] = {
            "study_id": study_id,
            "subject_id": subject_id,
            "slot_id": slot_id,
            "stratum": stratum,
            "factors": factors,
            "arm_enc": arm_enc,
            "detail_enc": detail_enc,
            "randomized_on": randomized_on,
            "randomized_at": randomized_at,
            "randomized_by": randomized_by,
            "idempotency_key": idempotency_key,
            "protocol_version_id": protocol_version_id,
        }
        try:
            if self._run.postgres:
                params = {**values, "site_id": site_id, "prefix": f"{site_code}-R"}
                return RANDOMIZATION.of(self._run(_NUMBERED_INSERT_PG, params).one())
            seq = int(self._run(_NEXT_NUMBER, {"site_id": site_id}).scalar_one())
            values.update(number=f"{site_code}-R{seq:03d}", in_error=False)
            return RANDOMIZATION.of(self._run(_INSERT, values).one())
        except IntegrityError as exc:  # a twin request (same subject or key) committed first
            raise Conflict(
                "this subject was randomized by a concurrent request; reload and try again"
            ) from exc

    def mark_in_error(self, rand: Randomization, reason: str) -> Randomization | None:
        """Guarded: None when someone else flagged it first."""
        return guarded_update(
            self._run,
            RANDOMIZATION,
            rand.id,
            {"in_error": False},
            {"in_error": True, "in_error_reason": reason},
        )


# --- trial-level unblinding -----------------------------------------------------------------


class SqlTrialUnblindings:
    """Implements :class:`trialdesk.store.ports.TrialUnblindingRepository`."""

    def __init__(self, session: Session) -> None:
        self._run = Sql(session)

    def pending(self, study_id: int) -> TrialUnblinding | None:
        stmt = (
            UNBLINDING.select()
            .where(_U.c.study_id == study_id, _U.c.status == "pending")
            .order_by(_U.c.id)
            .limit(1)
        )
        return UNBLINDING.maybe(self._run(stmt).first())

    def latest(self, study_id: int) -> TrialUnblinding | None:
        stmt = UNBLINDING.select().where(_U.c.study_id == study_id).order_by(_U.c.id.desc())
        return UNBLINDING.maybe(self._run(stmt.limit(1)).first())

    def add(
        self,
        *,
        study_id: int,
        reason: str,
        requested_by: str,
        requested_name: str,
        requested_at: dt.datetime,
        requested_meaning: str,
    ) -> TrialUnblinding:
        values = {
            "study_id": study_id,
            "status": "pending",
            "reason": reason,
            "requested_by": requested_by,
            "requested_name": requested_name,
            "requested_at": requested_at,
            "requested_meaning": requested_meaning,
        }
        return UNBLINDING.of(self._run(insert(_U).returning(*UNBLINDING.columns), values).one())

    def confirm(
        self, pending: TrialUnblinding, values: Mapping[str, Any]
    ) -> TrialUnblinding | None:
        """Guarded on the request still pending; None when someone else got there first."""
        return guarded_update(self._run, UNBLINDING, pending.id, {"status": "pending"}, {**values})

    def unblind_study(self, study_id: int, at: dt.datetime) -> None:
        self._run(update(_STUDY).where(_STUDY.c.id == study_id).values(trial_unblinded_at=at))

    def in_state(self, study_id: int, state: str, site_ids: set[int] | None) -> int:
        """Subjects of the study in ``state`` (at ``site_ids`` only, when given)."""
        stmt = (
            select(func.count())
            .select_from(_S)
            .where(_S.c.study_id == study_id, _S.c.state == state)
        )
        if site_ids is not None:
            stmt = stmt.where(_S.c.site_id.in_(sorted(site_ids)))
        return int(self._run(stmt).scalar() or 0)

    def user_id(self, username: str) -> int | None:
        stmt = select(_USER.c.id).where(_USER.c.username == username).limit(1)
        value = self._run(stmt).scalar()
        return None if value is None else int(value)
