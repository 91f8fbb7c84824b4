"""The audit trail is append-only and hash-chained (AUD-1, DATA-2), on SQLite and PostgreSQL.

The attacker in these tests has direct write access to the database: on SQLite they open the
file with the plain ``sqlite3`` module and drop the guard triggers, on PostgreSQL they disable
the table's user triggers. Whatever they change, ``verify_chain`` must name the first bad entry.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import Trial
from trialdesk.cli.main import build_app
from trialdesk.domain.audit import HASHED_FIELDS, entry_hash
from trialdesk.domain.errors import (
    ActionNotAllowed,
    PermissionDenied,
    TrialError,
    ValidationFailed,
)
from trialdesk.services import followup, screening
from trialdesk.services.allocation import randomization
from trialdesk.store.audit import VerifyResult, utc_iso, verify_chain
from trialdesk.store.tables import AuditEntryRow, AuditHeadRow, SubjectRow

Row = dict[str, Any]


@dataclass
class Trail:
    """A trial with several subjects walked part of the way: many entries in many streams."""

    trial: Trial
    randomized: str
    awaiting: str
    consented: str
    stream: str
    """The stream of the randomized subject, the longest subject stream."""


@pytest.fixture
def trail(trial: Trial) -> Trail:
    randomized, _arm = j.procedure_done(trial)
    awaiting = j.awaiting_procedure(trial)
    consented = j.consented(trial)
    with trial.ctx.uow(readonly=True) as uow:
        subject_id = uow.session.scalars(
            select(SubjectRow.id).where(SubjectRow.number == randomized)
        ).one()
    return Trail(trial, randomized, awaiting, consented, f"subject:{subject_id}")


class Attacker:
    """Raw write access that bypasses trialdesk and the database's append-only guard."""

    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.backend = trial.backend
        self._sqlite: sqlite3.Connection | None = None
        if self.backend == "sqlite":
            path = trial.runtime.engine.url.database
            assert path is not None
            self._sqlite = sqlite3.connect(path, isolation_level=None)
            self._sqlite.row_factory = sqlite3.Row
            for name in ("audit_entries_no_update", "audit_entries_no_delete"):
                self._sqlite.execute(f"DROP TRIGGER {name}")
        else:
            self.execute("ALTER TABLE audit_entries DISABLE TRIGGER USER")

    def execute(self, sql: str, params: Row | None = None) -> None:
        if self._sqlite is not None:
            self._sqlite.execute(sql, params or {})
            return
        with self.trial.runtime.engine.begin() as conn:
            conn.execute(text(sql), params or {})

    def rows(self, sql: str, params: Row | None = None) -> list[Row]:
        if self._sqlite is not None:
            return [dict(r) for r in self._sqlite.execute(sql, params or {})]
        with self.trial.runtime.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(sql), params or {}).mappings()]

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()


@pytest.fixture
def attacker(trail: Trail) -> Iterator[Attacker]:
    tool = Attacker(trail.trial)
    yield tool
    tool.close()


def verify(trial: Trial) -> VerifyResult:
    with trial.ctx.uow(readonly=True) as uow:
        return verify_chain(uow.session)


def entries(trial: Trial, stream: str) -> list[Row]:
    """The entries of one stream in chain order, every stored column."""
    columns = [c for c in AuditEntryRow.__table__.columns]
    with trial.ctx.uow(readonly=True) as uow:
        result = uow.session.execute(
            select(*columns).where(AuditEntryRow.stream == stream).order_by(AuditEntryRow.seq)
        )
        return [dict(r) for r in result.mappings()]


def snapshot(trial: Trial) -> tuple[int, str, list[tuple[str, int, str]]]:
    """Entry count, root digest and every head: what a refused action must leave alone."""
    with trial.ctx.uow(readonly=True) as uow:
        count = uow.session.scalar(select(func.count()).select_from(AuditEntryRow))
        heads = [
            (s, int(q), str(h))
            for s, q, h in uow.session.execute(
                select(AuditHeadRow.stream, AuditHeadRow.seq, AuditHeadRow.hash).order_by(
                    AuditHeadRow.stream
                )
            )
        ]
        result = verify_chain(uow.session)
    return int(count or 0), result.root, heads


def test_aud1_untouched_trail_verifies_and_counts_every_row(trail: Trail) -> None:
    """AUD-1: a trail nobody touched verifies, and verify reads every row and every stream."""
    t = trail.trial
    result = verify(t)
    assert result.ok, result.problem
    with t.ctx.uow(readonly=True) as uow:
        rows = uow.session.scalar(select(func.count()).select_from(AuditEntryRow))
        streams = set(uow.session.scalars(select(AuditEntryRow.stream).distinct()))
        heads = uow.session.scalar(select(func.count()).select_from(AuditHeadRow))
    assert result.entries == rows
    assert result.streams == heads == len(streams)
    # several kinds of stream, and the subject streams hold the journey
    prefixes = {s.split(":")[0] for s in streams}
    assert {"study", "user", "list", "subject"} <= prefixes
    assert len([s for s in streams if s.startswith("subject:")]) == 3
    chain = entries(t, trail.stream)
    assert len(chain) > 15
    assert [e["seq"] for e in chain] == list(range(1, len(chain) + 1))
    assert chain[0]["prev_hash"] == "0" * 64
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(chain))


def test_aud1_database_refuses_update_delete_and_truncate(trail: Trail) -> None:
    """AUD-1: the database itself refuses to change or remove audit entries; nothing changes."""
    t = trail.trial
    before = snapshot(t)
    victim = entries(t, trail.stream)[3]["id"]
    statements = [
        f"UPDATE audit_entries SET actor = 'mallory' WHERE id = {victim}",
        f"DELETE FROM audit_entries WHERE id = {victim}",
        "DELETE FROM audit_entries",
    ]
    if t.backend == "postgres":
        statements.append("TRUNCATE audit_entries")
    for sql in statements:
        with (
            pytest.raises(DBAPIError, match="audit entries are append-only"),
            t.runtime.engine.begin() as conn,
        ):
            conn.execute(text(sql))
    assert snapshot(t) == before
    assert verify(t).ok


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "'mallory'"),
        ("action", "'crc_reject'"),
        ("new", """'{"state":"screen_failed"}'"""),
        ("at", "'2027-01-01T00:00:00.000000Z'"),
        ("reason", "'changed my mind'"),
        ("prev_hash", "'" + "1" * 64 + "'"),
        ("hash", "'" + "2" * 64 + "'"),
    ],
)
def test_aud1_edited_field_names_exactly_that_entry(
    trail: Trail, attacker: Attacker, column: str, value: str
) -> None:
    """AUD-1: editing any field of a middle entry names that entry as edited."""
    chain = entries(trail.trial, trail.stream)
    victim = chain[len(chain) // 2]
    attacker.execute(f"UPDATE audit_entries SET {column} = {value} WHERE id = :id", victim)
    problem = verify(trail.trial).problem
    assert problem is not None
    assert (problem.entry_id, problem.kind, problem.stream) == (
        victim["id"],
        "edited",
        trail.stream,
    )
    assert f"entry {victim['id']} " in problem.message


def test_aud1_deleted_middle_entry_names_the_next_entry_of_its_stream(
    trail: Trail, attacker: Attacker
) -> None:
    """AUD-1: a deleted entry is named through its successor, which now has a gap before it."""
    chain = entries(trail.trial, trail.stream)
    middle = len(chain) // 2
    attacker.execute("DELETE FROM audit_entries WHERE id = :id", chain[middle])
    problem = verify(trail.trial).problem
    assert problem is not None
    nxt = chain[middle + 1]
    assert (problem.entry_id, problem.kind, problem.seq) == (nxt["id"], "deleted", nxt["seq"])
    assert f"expected #{chain[middle]['seq']}" in problem.message


def test_aud1_deleted_last_entry_is_caught_by_the_stream_head(
    trail: Trail, attacker: Attacker
) -> None:
    """AUD-1: deleting a stream's tail leaves a consistent chain, but its head remembers more."""
    chain = entries(trail.trial, trail.stream)
    attacker.execute("DELETE FROM audit_entries WHERE id = :id", chain[-1])
    problem = verify(trail.trial).problem
    assert problem is not None
    assert (problem.stream, problem.kind, problem.seq) == (trail.stream, "deleted", len(chain))
    assert problem.entry_id == chain[-2]["id"]
    assert f"head says #{len(chain)}" in problem.message


def test_aud1_stream_whose_only_entry_was_deleted_is_reported(
    trail: Trail, attacker: Attacker
) -> None:
    """AUD-1: a stream emptied completely is still known from its head."""
    (only,) = entries(trail.trial, "list:1")
    attacker.execute("DELETE FROM audit_entries WHERE id = :id", only)
    problem = verify(trail.trial).problem
    assert problem is not None
    assert (problem.stream, problem.kind, problem.entry_id) == ("list:1", "deleted", None)
    assert "lost all 1" in problem.message


def test_aud1_forged_entry_appended_without_the_head_is_detected(
    trail: Trail, attacker: Attacker
) -> None:
    """AUD-1: an attacker who appends a well-chained entry but cannot move the head is caught."""
    chain = entries(trail.trial, trail.stream)
    last = chain[-1]
    forged: Row = {name: last[name] for name in HASHED_FIELDS}
    forged.update(
        id=10_000_000, seq=last["seq"] + 1, prev_hash=last["hash"], action="withdraw", new="{}"
    )
    forged["hash"] = entry_hash(forged)
    names = ", ".join(forged)
    values = ", ".join(f":{n}" for n in forged)
    attacker.execute(f"INSERT INTO audit_entries ({names}) VALUES ({values})", forged)
    problem = verify(trail.trial).problem
    assert problem is not None
    assert (problem.stream, problem.entry_id) == (trail.stream, forged["id"])


@pytest.mark.parametrize("how", ["exchange_seq", "exchange_contents_keep_ids"])
def test_aud1_swapped_entries_are_detected(trail: Trail, attacker: Attacker, how: str) -> None:
    """AUD-1: reordering two entries of one stream names the first entry out of place."""
    chain = entries(trail.trial, trail.stream)
    a, b = chain[5], chain[6]
    if how == "exchange_seq":
        attacker.execute("UPDATE audit_entries SET seq = -1 WHERE id = :id", a)
        attacker.execute(
            "UPDATE audit_entries SET seq = :seq WHERE id = :id", {**b, "seq": a["seq"]}
        )
        attacker.execute(
            "UPDATE audit_entries SET seq = :seq WHERE id = :id", {**a, "seq": b["seq"]}
        )
        first_out_of_place = b["id"]  # now sits at a's position in the chain
    else:
        movable = [c.name for c in AuditEntryRow.__table__.columns if c.name not in ("id", "seq")]
        sets = ", ".join(f"{n} = :{n}" for n in movable)
        attacker.execute(f"UPDATE audit_entries SET {sets} WHERE id = :id", {**b, "id": a["id"]})
        attacker.execute(f"UPDATE audit_entries SET {sets} WHERE id = :id", {**a, "id": b["id"]})
        first_out_of_place = a["id"]  # keeps its id and position, holds b's content
    problem = verify(trail.trial).problem
    assert problem is not None
    assert (problem.stream, problem.seq, problem.entry_id) == (
        trail.stream,
        a["seq"],
        first_out_of_place,
    )


def test_aud1_rehashed_entry_breaks_the_link_to_the_next_entry(
    trail: Trail, attacker: Attacker
) -> None:
    """AUD-1: an attacker who edits an entry and recomputes its hash makes it self-consistent,
    so the next entry of the stream no longer follows it and is named (moved or replaced).

    This is the limit of in-database checking: an attacker who also recomputes every later
    entry of the stream and its head leaves a chain that verifies. Only the root digest that
    ``trialdesk audit verify`` prints, written down outside the database, catches that
    (see the next test).
    """
    chain = entries(trail.trial, trail.stream)
    victim = dict(chain[len(chain) // 2])
    victim["actor"] = "mallory"
    victim["hash"] = entry_hash(victim)
    attacker.execute("UPDATE audit_entries SET actor = :actor, hash = :hash WHERE id = :id", victim)
    problem = verify(trail.trial).problem
    assert problem is not None
    nxt = chain[len(chain) // 2 + 1]
    assert (problem.entry_id, problem.kind) == (nxt["id"], "moved")
    assert "does not follow" in problem.message


def test_aud1_fully_rewritten_stream_is_only_caught_by_the_root_digest(
    trail: Trail, attacker: Attacker
) -> None:
    """AUD-1 (limit): re-chaining a whole stream tail and its head passes verify; the root
    digest kept outside the database is what changes."""
    t = trail.trial
    root_before = verify(t).root
    chain = entries(t, trail.stream)
    start = len(chain) // 2
    prev = chain[start - 1]["hash"]
    for entry in chain[start:]:
        forged = dict(entry)
        if entry["seq"] == chain[start]["seq"]:
            forged["actor"] = "mallory"
        forged["prev_hash"] = prev
        forged["hash"] = entry_hash(forged)
        attacker.execute(
            "UPDATE audit_entries SET actor = :actor, prev_hash = :prev_hash, hash = :hash "
            "WHERE id = :id",
            forged,
        )
        prev = forged["hash"]
    attacker.execute(
        "UPDATE audit_heads SET hash = :hash WHERE stream = :stream",
        {"hash": prev, "stream": trail.stream},
    )
    result = verify(t)
    assert result.ok
    assert result.root != root_before


def _cli_env(trial: Trial) -> dict[str, str]:
    url = trial.runtime.engine.url
    if trial.backend == "postgres":
        with trial.runtime.engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        db_url = url.set(query={"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    else:
        db_url = url.render_as_string(hide_password=False)
    return {
        "TRIALDESK_DATABASE_URL": db_url,
        "TRIALDESK_ALLOCATION_KEY_FILE": str(trial.ctx.settings.allocation_key_file),
    }


def test_aud1_cli_verify_exits_1_naming_the_tampered_entry(
    trail: Trail, attacker: Attacker
) -> None:
    """AUD-1: `trialdesk audit verify` says ok with the count, then names an edited entry."""
    t = trail.trial
    env = _cli_env(t)
    count, root, heads = snapshot(t)
    ok = CliRunner().invoke(build_app(), ["audit", "verify"], env=env)
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == f"audit chain ok: {count} entries in {len(heads)} chains; root {root}\n"
    victim = entries(t, trail.stream)[4]
    attacker.execute("UPDATE audit_entries SET new = '{}' WHERE id = :id", victim)
    bad = CliRunner().invoke(build_app(), ["audit", "verify"], env=env)
    assert bad.exit_code == 1
    assert bad.stdout == ""
    assert bad.stderr.splitlines() == [
        f"error: audit chain broken: entry {victim['id']} ({trail.stream} #5) "
        "does not match its hash: edited"
    ]


def test_data2_correction_records_old_new_who_when_and_why(trail: Trail) -> None:
    """DATA-2: a change to saved data carries a reason; the trail keeps old and new values,
    the user, the time and the reason, and the chain still verifies."""
    t = trail.trial
    t.clock.set_day("2027-02-20", hour=15)
    followup.correct_form_data(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        trail.awaiting,
        form_code="nyha",
        changes={"nyha_class": "II"},
        reason="transcription error: source document says class II",
    )
    with t.ctx.uow(readonly=True) as uow:
        subject_id = uow.session.scalars(
            select(SubjectRow.id).where(SubjectRow.number == trail.awaiting)
        ).one()
    last = entries(t, f"subject:{subject_id}")[-1]
    assert last["action"] == "correct_data"
    assert (json.loads(last["old"]), json.loads(last["new"])) == (
        {"nyha_class": "III"},
        {"nyha_class": "II"},
    )
    assert last["reason"] == "transcription error: source document says class II"
    assert last["actor"] == "coordinator"
    assert last["at"] == utc_iso(t.clock.now)
    assert verify(t).ok


def _randomize_in_screening(tr: Trail) -> object:
    implanter = tr.trial.actor("implanter")
    return randomization.randomize(tr.trial.ctx, implanter, tr.trial.study_id, tr.consented)


def _bad_field_value(tr: Trail) -> object:
    values = fd.screening_forms()["nyha"]
    values["nyha_class"] = "V"
    coordinator = tr.trial.actor("coordinator")
    return screening.record_screening_form(
        tr.trial.ctx, coordinator, tr.trial.study_id, tr.consented, form_code="nyha", values=values
    )


def _dated_before_consent(tr: Trail) -> object:
    values = fd.screening_forms(on="2027-01-20")["nyha"]
    coordinator = tr.trial.actor("coordinator")
    return screening.record_screening_form(
        tr.trial.ctx, coordinator, tr.trial.study_id, tr.consented, form_code="nyha", values=values
    )


def _wrong_role(tr: Trail) -> object:
    monitor = tr.trial.actor("monitor")
    return screening.record_consent(
        tr.trial.ctx,
        monitor,
        tr.trial.study_id,
        tr.awaiting,
        consent_date=dt.date(2027, 1, 25),
        consent_version="v1.0",
    )


def _correction_without_reason(tr: Trail) -> object:
    coordinator = tr.trial.actor("coordinator")
    return followup.correct_form_data(
        tr.trial.ctx,
        coordinator,
        tr.trial.study_id,
        tr.awaiting,
        form_code="nyha",
        changes={"nyha_class": "II"},
        reason=" ",
    )


REFUSALS: dict[str, tuple[Callable[[Trail], object], type[TrialError]]] = {
    "not-allowed-in-state": (_randomize_in_screening, ActionNotAllowed),
    "bad-field-value": (_bad_field_value, ValidationFailed),
    "dated-before-consent": (_dated_before_consent, ValidationFailed),
    "wrong-role": (_wrong_role, PermissionDenied),
    "correction-without-reason": (_correction_without_reason, ValidationFailed),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_aud1_refused_action_leaves_the_trail_unchanged(trail: Trail, refusal: str) -> None:
    """AUD-1, LIFE-1, DATA-1: a refused action writes no audit entry and moves no head."""
    for user in ("coordinator", "implanter", "monitor"):
        trail.trial.actor(user)  # signed in before the snapshot
    before = snapshot(trail.trial)
    call, expected = REFUSALS[refusal]
    with pytest.raises(expected):
        call(trail)
    assert snapshot(trail.trial) == before
