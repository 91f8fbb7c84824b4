"""Idempotency keys belong to the user who sent them (RAND-5, ACC-1, RAND-6): a replay is
checked for role and site like a new request, someone else's key is not a replay, and the
stored key tells a database or export reader nothing. Found as an insider: monitor, CRC and
administrator got 200 on randomize by sending the implanting team's key, and the keys sat in
the blinded export."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import select, text, update

from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.errors import ActionNotAllowed, NotFound, PermissionDenied
from trialdesk.services import exports
from trialdesk.services.allocation import randomization
from trialdesk.store.database import alembic_config
from trialdesk.store.tables import RandomizationRow

KEY = "cath-lab-0001"


def _implanter_randomizes(trial: Trial) -> tuple[str, randomization.RandomizationResult]:
    number = j.anatomy_suitable(trial)
    result = randomization.randomize(
        trial.ctx, trial.actor("implanter"), trial.study_id, number, idempotency_key=KEY
    )
    return number, result


@pytest.mark.req("RAND-5")
@pytest.mark.parametrize("role", ["monitor", "crc", "admin", "manager", "statistician", "dsmb"])
def test_rand5_a_replayed_key_is_checked_for_role_first(trial: Trial, role: str) -> None:
    """RAND-5, ACC-1: sending the implanting team's key gets the sender the refusal any
    request of theirs would get, not the implanting team's answer (and its arm)."""
    number, _ = _implanter_randomizes(trial)
    with pytest.raises(PermissionDenied):
        randomization.randomize(
            trial.ctx, trial.actor(role), trial.study_id, number, idempotency_key=KEY
        )


@pytest.mark.req("RAND-5")
def test_rand5_a_key_is_its_makers_own(trial: Trial) -> None:
    """RAND-5: the maker's retry returns the same answer; a colleague at the same site with
    the same key makes a request of their own (the subject is already randomized); another
    site's implanting team does not learn that the subject exists."""
    number, first = _implanter_randomizes(trial)
    again = randomization.randomize(
        trial.ctx, trial.actor("implanter"), trial.study_id, number, idempotency_key=KEY
    )
    assert again == first and again.arm is not None
    with pytest.raises(ActionNotAllowed):
        randomization.randomize(
            trial.ctx, trial.actor("coordinator"), trial.study_id, number, idempotency_key=KEY
        )
    with pytest.raises(NotFound):
        randomization.randomize(
            trial.ctx,
            j.staff(trial, "implanter", "S102"),
            trial.study_id,
            number,
            idempotency_key=KEY,
        )


@pytest.mark.req("RAND-6")
def test_rand6_keys_are_neither_stored_nor_exported_in_clear(trial: Trial, tmp_path: Path) -> None:
    """RAND-6: the stored value is a digest, and the blinded export has no key column."""
    _implanter_randomizes(trial)
    with trial.ctx.uow(readonly=True) as uow:
        stored = uow.session.scalars(select(RandomizationRow.idempotency_key)).one()
    assert stored is not None and KEY not in stored and len(stored) == 64
    exports.export_csv(trial.ctx, trial.actor("monitor"), trial.study_id, tmp_path / "out")
    with (tmp_path / "out" / "randomizations.csv").open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert "idempotency_key" not in header
    assert KEY not in "".join(p.read_text() for p in (tmp_path / "out").glob("*.csv"))


@pytest.mark.req("RAND-5")
def test_rand5_migration_0006_scopes_existing_keys_to_their_maker(trial: Trial) -> None:
    """RAND-5: a key stored before 0006 (``<study>:<key>``) still replays for its maker after
    the upgrade, and for nobody else."""
    number, first = _implanter_randomizes(trial)
    engine = trial.runtime.engine
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    with engine.begin() as conn:
        conn.execute(update(RandomizationRow).values(idempotency_key=f"{trial.study_id}:{KEY}"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        stored = conn.execute(text("SELECT idempotency_key FROM randomizations")).scalar_one()
    assert stored == randomization.scoped_key(trial.study_id, "implanter", KEY)
    again = randomization.randomize(
        trial.ctx, trial.actor("implanter"), trial.study_id, number, idempotency_key=KEY
    )
    assert again == first
