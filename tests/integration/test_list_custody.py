"""List custody (RAND-3, AUD-1): test and live lists are made apart, a test list can be
replaced before go-live, and every full-list download is an audited disclosure.

Found as an insider: one list file was accepted as both the test and the live list, so
whoever tested the system knew the live sequence."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import select, update

from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.errors import NotFound, PermissionDenied, PreconditionFailed, ValidationFailed
from trialdesk.services.allocation import lists, randomization
from trialdesk.store.tables import AuditEntryRow, StudyRow


def _live_id(trial: Trial) -> int:
    infos = lists.list_info(trial.ctx, trial.actor("statistician"), trial.study_id)
    return next(i.id for i in infos if i.mode == "live" and i.active)


def _live_csv(trial: Trial) -> str:
    stat = trial.actor("statistician")
    return lists.download_list(trial.ctx, stat, trial.study_id, _live_id(trial)).csv


@pytest.mark.req("RAND-3")
def test_rand3_the_live_list_file_is_refused_as_the_test_list(trial: Trial) -> None:
    """RAND-3: the live list's own file, loaded as the test list, is refused and nothing is
    stored; so is the same sequence with its blocks renumbered (another fingerprint)."""
    stat = trial.actor("statistician")
    text = _live_csv(trial)
    with pytest.raises(PreconditionFailed, match="repeats the study's live list") as same:
        lists.import_list(trial.ctx, stat, trial.study_id, text, mode="test", source_name="a.csv")
    assert same.value.code == "list-custody" and "fingerprint" in same.value.message

    rows = list(csv.DictReader(io.StringIO(text)))
    renumbered = io.StringIO()
    writer = csv.DictWriter(renumbered, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:  # one block per slot pair: other block numbers and sizes, same arms
        writer.writerow({**row, "block": str(1000 + int(row["block"]))})
    with pytest.raises(PreconditionFailed, match="same arm sequence"):
        lists.import_list(
            trial.ctx,
            stat,
            trial.study_id,
            renumbered.getvalue(),
            mode="test",
            source_name="b.csv",
        )
    assert [i.mode for i in lists.list_info(trial.ctx, stat, trial.study_id)] == ["live"]


@pytest.mark.req("RAND-3")
def test_rand3_a_test_list_from_the_live_seed_is_refused(trial: Trial) -> None:
    """RAND-3: generating the test list from the live list's seed gives the live sequence:
    refused; another seed is accepted."""
    stat = trial.actor("statistician")
    with pytest.raises(PreconditionFailed, match="repeats the study's live list"):
        lists.generate_list(trial.ctx, stat, trial.study_id, mode="test", seed=20270125)
    made = lists.generate_list(trial.ctx, stat, trial.study_id, mode="test", seed=20270126)
    assert made.mode == "test"


@pytest.mark.req("RAND-3")
def test_rand3_a_live_study_draws_its_live_seed_itself(trial: Trial) -> None:
    """RAND-3: in a live study a live list cannot be generated from a seed someone chose
    (it would be known outside); without a seed it is generated."""
    stat = trial.actor("statistician")
    live = _live_id(trial)
    lists.discard_list(trial.ctx, stat, trial.study_id, live, "demo list before go-live")
    with trial.ctx.uow() as uow:
        uow.session.execute(update(StudyRow).values(mode="live"))
        uow.commit()
    with pytest.raises(ValidationFailed, match="never shows") as refused:
        lists.generate_list(trial.ctx, stat, trial.study_id, mode="live", seed=99)
    assert "seed" in refused.value.problems
    made = lists.generate_list(trial.ctx, stat, trial.study_id, mode="live")
    assert made.mode == "live" and made.active


@pytest.mark.req("RAND-3")
def test_rand3_a_test_list_is_discarded_and_replaced_a_live_list_in_use_is_not(
    trial: Trial,
) -> None:
    """RAND-3: a test list (even one test subjects drew from) is discarded and another loaded;
    a live list that allocated a subject is never replaced; blinded roles cannot discard."""
    stat = trial.actor("statistician")
    first = lists.generate_list(trial.ctx, stat, trial.study_id, mode="test", seed=5)
    test_subject = j.anatomy_suitable(trial, test=True)
    randomization.randomize(trial.ctx, trial.actor("implanter"), trial.study_id, test_subject)
    with pytest.raises(PreconditionFailed, match="active test list exists"):
        lists.generate_list(trial.ctx, stat, trial.study_id, mode="test", seed=6)
    for role in ("manager", "monitor", "coordinator", "admin"):
        with pytest.raises(PermissionDenied):
            lists.discard_list(trial.ctx, trial.actor(role), trial.study_id, first.id, "x")
    with pytest.raises(ValidationFailed):
        lists.discard_list(trial.ctx, stat, trial.study_id, first.id, "  ")
    gone = lists.discard_list(trial.ctx, stat, trial.study_id, first.id, "found a typo")
    assert not gone.active
    second = lists.generate_list(trial.ctx, stat, trial.study_id, mode="test", seed=6)
    assert second.active and second.id != first.id
    with pytest.raises(PreconditionFailed, match="already out of use"):
        lists.discard_list(trial.ctx, stat, trial.study_id, first.id, "again")

    j.randomized(trial)  # a live subject: the live list is in use
    with pytest.raises(PreconditionFailed) as in_use:
        lists.discard_list(trial.ctx, stat, trial.study_id, _live_id(trial), "replace")
    assert in_use.value.code == "list-in-use"
    with pytest.raises(NotFound):
        lists.discard_list(trial.ctx, stat, trial.study_id, 999, "no such list")


@pytest.mark.req("AUD-1")
def test_aud1_every_list_download_is_an_audited_disclosure_without_content(trial: Trial) -> None:
    """AUD-1, RAND-6: the statistician downloads the whole list in the import format (it
    re-imports cleanly elsewhere); each download writes who, which list and when, never an
    arm; blinded roles are refused."""
    text = _live_csv(trial)
    header, *rows = list(csv.reader(io.StringIO(text)))
    assert header == list(lists.CSV_COLUMNS) and rows
    assert {r[4] for r in rows} == {"INT", "CTRL"}
    _live_csv(trial)
    with trial.ctx.uow(readonly=True) as uow:
        entries = uow.session.scalars(
            select(AuditEntryRow).where(AuditEntryRow.action == "disclose_list_download")
        ).all()
        found = [(e.actor, e.entity_id, json.loads(e.new)) for e in entries]
    assert len(found) == 2
    for actor, what, new in found:
        assert actor == "statistician" and what == f"list {_live_id(trial)}"
        assert new["mode"] == "live" and "INT" not in json.dumps(new)
    for role in ("manager", "monitor", "admin", "coordinator", "crc", "dsmb"):
        with pytest.raises(PermissionDenied):
            lists.download_list(trial.ctx, trial.actor(role), trial.study_id, _live_id(trial))
