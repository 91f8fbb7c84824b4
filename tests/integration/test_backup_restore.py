"""Backup and restore (issue 7): a trial backed up and restored into a fresh database gives the
same audit root digest (AUD-1) and the same reports; a file that is not a trialdesk backup, a
backup of another schema revision, a damaged backup, a wrong allocation key, or a database
that holds data (without force) are refused with one message and nothing changed."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from tests import journey as j
from tests.conftest import POSTGRES_URL, Database, Trial
from trialdesk.bootstrap import Runtime, bootstrap
from trialdesk.config import Settings
from trialdesk.domain.errors import PermissionDenied, PreconditionFailed, ValidationFailed
from trialdesk.services import report_views, reports
from trialdesk.services.access import operator_actor
from trialdesk.services.allocation import randomization
from trialdesk.services.crypto import create_key_file
from trialdesk.services.maintenance import backup_database, restore_database
from trialdesk.store.audit import verify_chain
from trialdesk.store.backup import MANIFEST_TABLE
from trialdesk.store.database import make_engine
from trialdesk.store.tables import (
    AllocationSlotRow,
    AuditEntryRow,
    Base,
    RandomizationRow,
    StratumCursorRow,
    SubjectRow,
)

OPERATOR = operator_actor("operator:test")


@pytest.fixture
def fresh(trial: Trial, database: Database, tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """Runtimes on new, empty databases of the same backend (as `trialdesk restore` opens
    them: migrated), with the trial's key file unless another one is named."""
    made: list[Runtime] = []
    schemas: list[str] = []
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")

    def make(key: Path | None = None) -> Runtime:
        name = f"r{len(made)}_{uuid.uuid4().hex[:10]}"
        if database.backend == "sqlite":
            url = f"sqlite:///{tmp_path / (name + '.db')}"
            engine = make_engine(url)
        else:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA "{name}"'))
            schemas.append(name)
            url = POSTGRES_URL
            engine = make_engine(url, connect_args={"options": f"-csearch_path={name}"})
        settings = Settings(
            database_url=url,
            allocation_key_file=key or tmp_path / "allocation.key",
            argon2_time_cost=1,
            argon2_memory_kib=1024,
        )
        runtime = bootstrap(settings, engine=engine, clock=trial.clock)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()
    with admin.connect() as conn:
        for name in schemas:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


def _populate(t: Trial) -> None:
    j.procedure_done(t)
    j.procedure_done(t, "S102")
    j.randomized(t)
    j.anatomy_suitable(t)
    j.consented(t)


def _reports(t: Trial) -> dict[str, Any]:
    manager = t.actor("manager")
    return {
        "enrolment": reports.enrolment_report(t.ctx, manager, t.study_id, simulations=50, seed=1),
        "consort": report_views.consort(t.ctx, manager, t.study_id),
        "compliance": report_views.visit_compliance(t.ctx, manager, t.study_id),
    }


def _audit_rows(runtime: Runtime) -> list[tuple[Any, ...]]:
    with runtime.context.uow(readonly=True) as uow:
        rows = uow.session.execute(
            select(AuditEntryRow.stream, AuditEntryRow.seq, AuditEntryRow.hash).order_by(
                AuditEntryRow.id
            )
        )
        return [tuple(r) for r in rows]


def _root(runtime: Runtime) -> str:
    with runtime.context.uow(readonly=True) as uow:
        result = verify_chain(uow.session)
    assert result.ok
    return result.root


def _count(runtime: Runtime, table: Any) -> int:
    with runtime.context.uow(readonly=True) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(table)) or 0)


def test_aud1_restored_trial_has_the_same_root_digest_and_reports(
    trial: Trial, fresh: Callable[..., Runtime], tmp_path: Path
) -> None:
    _populate(trial)
    before_root = _root(trial.runtime)
    before_rows = _audit_rows(trial.runtime)
    before = _reports(trial)
    out = tmp_path / "trial.backup"
    manifest = backup_database(trial.ctx, OPERATOR, out)
    assert manifest.audit_root == before_root
    assert manifest.study_codes == ["FLAGSHIP"]
    assert manifest.rows["randomizations"] == 3
    assert not list(tmp_path.glob(".trial.backup*")), "no partial file left behind"

    runtime = fresh()
    result = restore_database(runtime.context, OPERATOR, out)
    assert (result.root, result.replaced_data) == (before_root, False)
    restored = Trial(runtime=runtime, clock=trial.clock, study_id=trial.study_id, backend="")
    # every entry of the source, in order, then the restore's own entry, and the chain holds
    after_rows = _audit_rows(runtime)
    assert after_rows[: len(before_rows)] == before_rows
    assert [r[0] for r in after_rows[len(before_rows) :]] == ["maintenance"]
    _root(runtime)
    assert _reports(restored) == before
    # the restored database keeps working: ids continue after the restored rows
    _, arm = j.randomized(restored, "S103")
    assert arm in {"INT", "CTRL"}
    assert _count(runtime, RandomizationRow) == 4


def test_aud1_restore_refuses_a_database_with_data_unless_forced(
    trial: Trial, fresh: Callable[..., Runtime], tmp_path: Path
) -> None:
    j.randomized(trial)
    out = tmp_path / "one.backup"
    backup_database(trial.ctx, OPERATOR, out)
    j.anatomy_suitable(trial)
    rows = _audit_rows(trial.runtime)
    with pytest.raises(PreconditionFailed) as refused:
        restore_database(trial.ctx, OPERATOR, out)
    assert refused.value.code == "database-not-empty"
    assert _audit_rows(trial.runtime) == rows
    result = restore_database(trial.ctx, OPERATOR, out, force=True)
    assert result.replaced_data is True
    assert _count(trial.runtime, SubjectRow) == 1  # the subject added after the backup is gone
    _root(trial.runtime)


def test_aud1_restore_refuses_files_that_are_not_sound_backups(
    trial: Trial, fresh: Callable[..., Runtime], tmp_path: Path
) -> None:
    j.randomized(trial)
    good = tmp_path / "good.backup"
    backup_database(trial.ctx, OPERATOR, good)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello\n")
    plain_sqlite = tmp_path / "plain.db"
    with closing(sqlite3.connect(plain_sqlite)) as conn:
        conn.execute("CREATE TABLE t (x)")
    old = tmp_path / "old.backup"
    shutil.copy(good, old)
    with closing(sqlite3.connect(old)) as conn:
        conn.execute(
            f"UPDATE {MANIFEST_TABLE} SET value = '\"0001\"' WHERE key = 'schema_revision'"
        )
        conn.commit()
    damaged = tmp_path / "damaged.backup"
    shutil.copy(good, damaged)
    with closing(sqlite3.connect(damaged)) as conn:
        conn.execute("DROP TRIGGER audit_entries_no_update")
        conn.execute("UPDATE audit_entries SET actor = 'someone else' WHERE id = 3")
        conn.commit()
    runtime = fresh()
    cases = [
        (tmp_path / "missing.backup", "cannot read"),
        (text_file, "is not a trialdesk backup"),
        (plain_sqlite, "is not a trialdesk backup"),
        (old, "backup of schema revision 0001"),
        (damaged, "is damaged"),
    ]
    for path, message in cases:
        with pytest.raises(ValidationFailed) as refused:
            restore_database(runtime.context, OPERATOR, path)
        assert message in refused.value.message, (path, refused.value.message)
        with runtime.context.uow(readonly=True) as uow:
            assert not any(
                uow.session.scalar(select(func.count()).select_from(t))
                for t in Base.metadata.sorted_tables
            )
    other_key = tmp_path / "other.key"
    create_key_file(other_key)
    wrong = fresh(key=other_key)
    with pytest.raises(PreconditionFailed) as refused_key:
        restore_database(wrong.context, OPERATOR, good)
    assert refused_key.value.code == "allocation-key-wrong"
    with pytest.raises(PermissionDenied):
        restore_database(runtime.context, trial.actor("manager"), good)
    with pytest.raises(PermissionDenied):
        backup_database(trial.ctx, trial.actor("manager"), tmp_path / "x.backup")
    with pytest.raises(PreconditionFailed) as exists:
        backup_database(trial.ctx, OPERATOR, good)
    assert exists.value.code == "file-exists"


def test_aud1_backup_taken_while_randomizing_is_one_consistent_snapshot(
    trial: Trial, fresh: Callable[..., Runtime], tmp_path: Path
) -> None:
    """Backups made while another thread randomizes restore to a state where every
    randomization has its slot, the slots used are a prefix of each stratum, and the chain
    gives the manifest's root (RAND-5, AUD-1)."""
    subjects = [j.anatomy_suitable(trial, site) for site in ("S101", "S102") for _ in range(3)]
    actors = {site: j.staff(trial, "implanter", site) for site in ("S101", "S102")}
    first_done = threading.Event()
    failures: list[BaseException] = []

    def randomize_all() -> None:
        try:
            for number in subjects:
                randomization.randomize(
                    trial.ctx, actors[number.split("-")[0]], trial.study_id, number
                )
                first_done.set()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            first_done.set()

    worker = threading.Thread(target=randomize_all)
    worker.start()
    assert first_done.wait(timeout=60)
    files = [tmp_path / f"during-{i}.backup" for i in range(2)]
    for path in files:
        backup_database(trial.ctx, OPERATOR, path)
    worker.join(timeout=60)
    assert not failures, failures
    for path in files:
        runtime = fresh()
        restore_database(runtime.context, OPERATOR, path)
        with runtime.context.uow(readonly=True) as uow:
            rands = {
                (r.subject_id, r.slot_id) for r in uow.session.scalars(select(RandomizationRow))
            }
            slots = {
                s.id: (s.stratum, s.sequence, s.used_by_subject_id)
                for s in uow.session.scalars(
                    select(AllocationSlotRow).where(
                        AllocationSlotRow.used_by_subject_id.is_not(None)
                    )
                )
            }
            cursors = {
                c.stratum: c.next_sequence for c in uow.session.scalars(select(StratumCursorRow))
            }
        assert rands, "the first randomization was committed before the backup"
        # each randomization's slot is used by its subject, and no other slot is used
        assert {(used_by, slot_id) for slot_id, (_, _, used_by) in slots.items()} == rands
        per: dict[str, list[int]] = {}
        for stratum, sequence, _ in slots.values():
            per.setdefault(stratum, []).append(sequence)
        for stratum, sequences in per.items():
            assert sorted(sequences) == list(range(1, len(sequences) + 1))
            assert cursors[stratum] == len(sequences) + 1


def test_aud1_backup_refuses_a_broken_chain_and_bad_paths_leaving_no_file(
    trial: Trial, tmp_path: Path
) -> None:
    j.randomized(trial)
    with pytest.raises(PreconditionFailed) as no_folder:
        backup_database(trial.ctx, OPERATOR, tmp_path / "nope" / "x.backup")
    assert no_folder.value.code == "no-folder"
    with trial.runtime.engine.begin() as conn:
        if trial.backend == "sqlite":
            conn.execute(text("DROP TRIGGER audit_entries_no_update"))
        else:
            conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE audit_entries SET actor = 'someone else' WHERE id = 2"))
    with pytest.raises(PreconditionFailed) as broken:
        backup_database(trial.ctx, OPERATOR, tmp_path / "broken.backup")
    assert broken.value.code == "audit-chain-broken"
    assert "audit chain is broken" in broken.value.message
    assert list(tmp_path.glob("*broken.backup*")) == []
