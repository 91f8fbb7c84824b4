"""Allocation lists through the services on SQLite and PostgreSQL (RAND-3, RAND-6): generate,
import, test vs live, extension, low-slot warning, who may do what, concealment at rest."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests import journey as j
from tests.conftest import DEMO_USERS, START, Database, Trial, flagship
from tests.conftest import test_settings as settings_for
from tests.fakes import FakeClock
from trialdesk.bootstrap import Runtime, bootstrap
from trialdesk.domain.errors import (
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)
from trialdesk.domain.randomization import Slot, derive_seed, fingerprint, generate_blocks
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.allocation import randomization
from trialdesk.services.allocation.lists import (
    ListImportRefused,
    active_list,
    check_low_slots,
    decode_slot,
    extend,
    extend_stratum,
    generate_list,
    import_list,
    list_info,
    stratum_status,
)
from trialdesk.services.setup import initialize_study
from trialdesk.store.database import make_engine
from trialdesk.store.tables import (
    AllocationListRow,
    AllocationSlotRow,
    AuditEntryRow,
    NotificationRow,
    RandomizationRow,
    StratumCursorRow,
)

SEED = 20270125  # the conftest live list
ARMS = [("INT", 1), ("CTRL", 1)]
SIZES = (2, 4)
SITES = sorted(site.code for site in flagship().protocol.sites)
LABELS = [arm.label for arm in flagship().protocol.arms]
HEADER = "stratum,sequence,block,block_size,arm"
ARM_WORD = re.compile(r"(?<![A-Za-z0-9])(INT|CTRL)(?![A-Za-z0-9])")
OTHERS = [name for name, _, _ in DEMO_USERS if name != "statistician"]


# --- helpers ----------------------------------------------------------------------------------


def stat(t: Trial) -> Actor:
    return t.actor("statistician")


def list_slots(seed: int, per_site: int) -> dict[str, list[Slot]]:
    """The list a seed gives, computed here from the domain functions alone."""
    return {
        f"site={code}": generate_blocks(
            ARMS, SIZES, per_site, random.Random(derive_seed(seed, f"site={code}"))
        )
        for code in SITES
    }


def csv_rows(slots: dict[str, list[Slot]]) -> list[list[str]]:
    return [
        [stratum, str(s.sequence), str(s.block_number), str(s.block_size), s.arm]
        for stratum, members in slots.items()
        for s in members
    ]


def csv_text(rows: list[list[str]], header: str = HEADER) -> str:
    return "\n".join([header, *(",".join(r) for r in rows)]) + "\n"


def row_of(rows: list[list[str]], stratum: str, sequence: int) -> int:
    """The file row (header is row 1) of a slot, and its index in ``rows``."""
    for index, r in enumerate(rows):
        if r[0] == stratum and r[1] == str(sequence):
            return index
    raise AssertionError(f"{stratum} {sequence} not in rows")


def counts(t: Trial) -> dict[str, int]:
    tables = [AllocationListRow, AllocationSlotRow, StratumCursorRow, NotificationRow]
    with t.ctx.uow(readonly=True) as uow:
        out = {
            table.__tablename__: uow.session.scalar(select(func.count()).select_from(table)) or 0
            for table in tables
        }
        out["audit_entries"] = uow.session.scalar(select(func.count(AuditEntryRow.id))) or 0
        return out


def stored_slots(t: Trial, list_id: int, stratum: str) -> list[Slot]:
    with t.ctx.uow(readonly=True) as uow:
        return [decode_slot(t.ctx, r) for r in uow.lists.slots(list_id, stratum)]


def list_audit(t: Trial, list_id: int) -> list[tuple[str, dict[str, Any], str]]:
    with t.ctx.uow(readonly=True) as uow:
        rows = uow.session.scalars(
            select(AuditEntryRow)
            .where(AuditEntryRow.stream == f"list:{list_id}")
            .order_by(AuditEntryRow.seq)
        ).all()
        return [(r.action, json.loads(r.new), r.new) for r in rows]


def live_list_id(t: Trial) -> int:
    with t.ctx.uow(readonly=True) as uow:
        lst = active_list(uow, t.study_id, "live")
        assert lst is not None
        return lst.id


def simulate_draws(t: Trial, stratum: str, draws: int) -> list[str]:
    """Take ``draws`` slots the way randomization does and run the low-slot check after each."""
    made: list[str] = []
    with t.ctx.uow() as uow:
        lst = active_list(uow, t.study_id, "live")
        assert lst is not None
        cursor = uow.lists.cursor(lst.id, stratum, lock=True)
        assert cursor is not None
        for _ in range(draws):
            cursor = uow.lists.update_cursor(cursor, {"next_sequence": cursor.next_sequence + 1})
            note = check_low_slots(uow, t.ctx, cursor, flagship())
            if note is not None:
                made.append(note)
        uow.commit()
    return made


def notes(t: Trial) -> list[tuple[str, int | None, str]]:
    """(recipient role, subject id, text) of every notification."""
    with t.ctx.uow(readonly=True) as uow:
        rows = uow.session.scalars(select(NotificationRow).order_by(NotificationRow.id))
        return [(n.recipient_role, n.subject_id, n.text) for n in rows]


@pytest.fixture
def fresh(make_trial: Callable[..., Trial]) -> Trial:
    """The flagship demo study with users but no allocation list."""
    return make_trial(flagship(), with_list=False)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[tuple[Runtime, int]]:
    """A second, independent installation (its own SQLite file and key) with the flagship, as
    a sandbox: a live study refuses a live list from a chosen seed (RAND-3 custody), so the
    seed is re-played where nothing is allocated for real."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    url = f"sqlite:///{folder / 'other.db'}"
    engine = make_engine(url)
    settings = settings_for(Database("sqlite", url, engine), folder)
    runtime = bootstrap(settings, clock=FakeClock(START), engine=engine)
    info = initialize_study(
        runtime.context, operator_actor(), flagship(), code="OTHER", mode="sandbox"
    )
    yield runtime, info.id
    runtime.close()
    engine.dispose()


# --- generate ---------------------------------------------------------------------------------


@pytest.mark.req("RAND-3")
def test_rand_3_generated_list_is_reproducible_from_its_seed(
    trial: Trial, elsewhere: tuple[Runtime, int]
) -> None:
    (live,) = list_info(trial.ctx, stat(trial), trial.study_id)
    expected = list_slots(SEED, 24)
    assert live.fingerprint == fingerprint(expected)
    assert live.strata == len(SITES)
    assert live.slots == sum(len(s) for s in expected.values())
    assert stored_slots(trial, live.id, "site=S101") == expected["site=S101"]

    runtime, study_id = elsewhere
    again = generate_list(runtime.context, operator_actor(), study_id, mode="live", seed=SEED)
    assert again.fingerprint == live.fingerprint
    other = generate_list(runtime.context, operator_actor(), study_id, mode="test", seed=SEED + 1)
    assert other.fingerprint != live.fingerprint


@pytest.mark.req("RAND-3")
def test_rand_3_generate_by_statistician_is_audited_without_content(fresh: Trial) -> None:
    info = generate_list(fresh.ctx, stat(fresh), fresh.study_id, mode="test", seed=5)
    assert (info.mode, info.source, info.strata) == ("test", "generated", len(SITES))
    ((action, new, raw),) = list_audit(fresh, info.id)
    assert action == "generate_list"
    assert new["fingerprint"] == info.fingerprint
    assert not ARM_WORD.search(raw)
    with pytest.raises(PreconditionFailed) as refused:
        generate_list(fresh.ctx, stat(fresh), fresh.study_id, mode="test", seed=6)
    assert refused.value.code == "list-exists"


# --- import -----------------------------------------------------------------------------------


@pytest.mark.req("RAND-3")
def test_rand_3_import_accepts_a_good_list_and_fingerprints_it(fresh: Trial) -> None:
    slots = list_slots(77, 6)
    rows = csv_rows(slots)
    # columns in another order and capitalised, behind a byte-order mark, are still read
    text_in = csv_text(
        [[r[4], *r[:4]] for r in rows], header="Arm,Stratum,Sequence,Block,Block_Size"
    )
    info = import_list(
        fresh.ctx,
        stat(fresh),
        fresh.study_id,
        "\ufeff" + text_in,
        mode="live",
        source_name="list.csv",
    )
    assert info.fingerprint == fingerprint(slots)
    assert (info.source, info.strata, info.slots) == ("imported", len(SITES), len(rows))
    assert stored_slots(fresh, info.id, "site=S205") == slots["site=S205"]
    with fresh.ctx.uow(readonly=True) as uow:
        lst = uow.session.get(AllocationListRow, info.id)
        assert lst is not None
        assert lst.seed_enc is None
        assert lst.fingerprint == info.fingerprint
    ((action, new, raw),) = list_audit(fresh, info.id)
    assert action == "import_list"
    assert new["source_name"] == "list.csv"
    assert not ARM_WORD.search(raw)


def _defect_cases() -> dict[str, tuple[Callable[[list[list[str]]], str], str, str]]:
    """name -> (make the bad file from good rows, expected location, expected words)."""

    def header(rows: list[list[str]]) -> str:
        return csv_text(rows, header="stratum,sequence,block,block_size,treatment")

    def duplicate(rows: list[list[str]]) -> str:
        rows[row_of(rows, "site=S101", 3)][1] = "2"
        return csv_text(rows)

    def gap(rows: list[list[str]]) -> str:
        rows = [r for r in rows if not (r[0] == "site=S102" and r[1] == "2")]
        return csv_text(rows)

    def unknown_arm(rows: list[list[str]]) -> str:
        rows[row_of(rows, "site=S103", 1)][4] = "PLACEBO"
        return csv_text(rows)

    def ratio(rows: list[list[str]]) -> str:
        index = row_of(rows, "site=S104", 1)
        rows[index][4] = "CTRL" if rows[index][4] == "INT" else "INT"
        return csv_text(rows)

    def unknown_stratum(rows: list[list[str]]) -> str:
        return csv_text([*rows, ["site=S999", "1", "1", "2", "INT"]])

    def missing_site(rows: list[list[str]]) -> str:
        return csv_text([r for r in rows if r[0] != "site=S205"])

    def not_a_number(rows: list[list[str]]) -> str:
        rows[row_of(rows, "site=S101", 2)][2] = "two"
        return csv_text(rows)

    def bad_quote(rows: list[list[str]]) -> str:
        rows[row_of(rows, "site=S102", 1)][0] = '"site=S102"x'
        return csv_text(rows)

    def header_only(rows: list[list[str]]) -> str:
        return HEADER + "\n"

    def empty(rows: list[list[str]]) -> str:
        return "  \n"

    return {
        "header": (header, "row 1", "unexpected treatment"),
        "duplicate": (duplicate, "rows S101:2-S101:3", "sequence 2 appears 2 times"),
        "gap": (gap, "stratum site=S102", "sequence numbers missing: 2"),
        "unknown_arm": (unknown_arm, "row S103:1", "arm 'PLACEBO' is not an arm"),
        "ratio": (ratio, "rows S104:1-S104:4", "break the ratio 1:1"),
        "unknown_stratum": (unknown_stratum, "row END", "site S999 is not a site"),
        "missing_site": (missing_site, "strata", "no rows for site S205"),
        "not_a_number": (not_a_number, "row S101:2", "block 'two' is not a whole number"),
        "bad_quote": (bad_quote, "row S102:1", "unreadable CSV"),
        "header_only": (header_only, "file", "header but no slots"),
        "empty": (empty, "file", "the file is empty"),
    }


def _where(spec: str, rows: list[list[str]]) -> str:
    """``row S101:3`` -> ``row 5`` (the file row of that slot; END is the appended row)."""

    def one(ref: str) -> str:
        if ref.isdigit():
            return ref
        if ref == "END":
            return str(len(rows) + 2)
        site, seq = ref.split(":")
        return str(row_of(rows, f"site={site}", int(seq)) + 2)

    kind, _, refs = spec.partition(" ")
    if kind not in {"row", "rows"}:
        return spec
    parts = []
    for part in refs.split(", "):
        ends = [one(ref) for ref in part.split("-")]
        parts.append("-".join(ends))
    return f"{kind} {', '.join(parts)}"


@pytest.mark.req("RAND-3")
@pytest.mark.parametrize("defect", list(_defect_cases()))
def test_rand_3_import_refuses_each_defect_naming_its_row(trial: Trial, defect: str) -> None:
    make_bad, where, words = _defect_cases()[defect]
    slots = list_slots(11, 4)
    # a 4-slot stratum whose first block has size 4 makes the ratio case one full block
    slots["site=S104"] = [Slot(n, 1, 4, arm) for n, arm in enumerate(["INT", "CTRL"] * 2, 1)]
    rows = csv_rows(slots)
    before = counts(trial)
    bad = make_bad([list(r) for r in rows])
    with pytest.raises(ListImportRefused) as refused:
        import_list(trial.ctx, stat(trial), trial.study_id, bad, mode="test", source_name="b.csv")
    expected_where = _where(where, rows)
    assert any(
        line.startswith(f"{expected_where}: ") and words in line for line in refused.value.lines
    ), refused.value.lines
    assert refused.value.code == "validation-failed"
    assert "b.csv" in refused.value.message and words in refused.value.message
    assert counts(trial) == before


@pytest.mark.req("RAND-3")
def test_rand_3_import_lists_every_problem_at_once(fresh: Trial) -> None:
    rows = csv_rows(list_slots(3, 4))
    rows[row_of(rows, "site=S101", 1)][4] = "XX"
    rows[row_of(rows, "site=S102", 2)][1] = "1"
    rows = [r for r in rows if r[0] != "site=S301"]
    before = counts(fresh)
    with pytest.raises(ListImportRefused) as refused:
        import_list(
            fresh.ctx, stat(fresh), fresh.study_id, csv_text(rows), mode="live", source_name="x.csv"
        )
    lines = refused.value.lines
    assert len(lines) >= 3
    assert lines[0].startswith("row 2: arm 'XX'")
    assert any("sequence 1 appears 2 times" in line for line in lines)
    assert lines[-1].startswith("strata: no rows for site S301")
    assert counts(fresh) == before


# --- test vs live -----------------------------------------------------------------------------


@pytest.mark.req("RAND-3")
def test_rand_3_test_and_live_lists_are_separate(fresh: Trial) -> None:
    test_list = generate_list(fresh.ctx, stat(fresh), fresh.study_id, mode="test", seed=1)
    with fresh.ctx.uow(readonly=True) as uow:
        assert active_list(uow, fresh.study_id, "live") is None
        found = active_list(uow, fresh.study_id, "test")
        assert found is not None and found.id == test_list.id
        with pytest.raises(ValidationFailed):
            active_list(uow, fresh.study_id, "production")

    live_subject = j.anatomy_suitable(fresh)
    with pytest.raises(PreconditionFailed) as refused:
        randomization.randomize(fresh.ctx, fresh.actor("implanter"), fresh.study_id, live_subject)
    assert refused.value.code == "no-allocation-list"

    live = import_list(
        fresh.ctx,
        stat(fresh),
        fresh.study_id,
        csv_text(csv_rows(list_slots(9, 4))),
        mode="live",
        source_name="live.csv",
    )
    randomization.randomize(fresh.ctx, fresh.actor("implanter"), fresh.study_id, live_subject)
    with fresh.ctx.uow(readonly=True) as uow:
        slot_list = uow.session.scalar(
            select(AllocationSlotRow.list_id).join(
                RandomizationRow, RandomizationRow.slot_id == AllocationSlotRow.id
            )
        )
    assert slot_list == live.id
    status = {
        (s.mode, s.stratum): s for s in stratum_status(fresh.ctx, stat(fresh), fresh.study_id)
    }
    assert status[("live", "site=S101")].used == 1
    assert status[("test", "site=S101")].used == 0
    with pytest.raises(PreconditionFailed) as again:
        import_list(
            fresh.ctx,
            stat(fresh),
            fresh.study_id,
            csv_text(csv_rows(list_slots(9, 4))),
            mode="live",
            source_name="again.csv",
        )
    assert again.value.code == "list-exists"
    # what leaves the service is blinded-safe: no arm in any returned field
    returned = [
        *map(asdict, list_info(fresh.ctx, stat(fresh), fresh.study_id)),
        *map(asdict, stratum_status(fresh.ctx, stat(fresh), fresh.study_id)),
    ]
    assert not any(ARM_WORD.search(str(value)) for r in returned for value in r.values())


# --- extension --------------------------------------------------------------------------------


@pytest.mark.req("RAND-3")
def test_rand_3_extension_is_reproducible_from_the_seed_and_audited(trial: Trial) -> None:
    list_id = live_list_id(trial)
    original = stored_slots(trial, list_id, "site=S101")
    status = extend(trial.ctx, stat(trial), trial.study_id, "site=S101", blocks=3)
    after = stored_slots(trial, list_id, "site=S101")
    added = after[len(original) :]
    last = original[-1]
    rng = random.Random(derive_seed(SEED, "site=S101", 1))
    longer = generate_blocks(ARMS, SIZES, 100, rng, after=[last])
    assert added == [s for s in longer if s.block_number <= last.block_number + 3]
    assert {s.block_number for s in added} == {last.block_number + k for k in (1, 2, 3)}
    assert (status.size, status.extensions, status.used) == (len(after), 1, 0)

    extend(trial.ctx, stat(trial), trial.study_id, "site=S101")  # default: 2 x largest size
    second = stored_slots(trial, list_id, "site=S101")[len(after) :]
    rng2 = random.Random(derive_seed(SEED, "site=S101", 2))
    assert second == generate_blocks(ARMS, SIZES, 8, rng2, after=[after[-1]])

    entries = [(a, n) for a, n, raw in list_audit(trial, list_id) if a == "extend_stratum"]
    assert [n["extension"] for _, n in entries] == [1, 2]
    # no block or slot counts in the audit: blinded readers could infer block boundaries
    assert not {"blocks_added", "slots_added"} & set(entries[0][1])
    assert entries[0][1]["trigger"] == "statistician"
    assert not any(ARM_WORD.search(raw) for _, _, raw in list_audit(trial, list_id))


@pytest.mark.req("RAND-3")
def test_rand_3_exhausted_stratum_extends_itself_when_randomizing(trial: Trial) -> None:
    list_id = live_list_id(trial)
    implanter = trial.actor("implanter")  # signing in writes, so before the transaction
    with trial.ctx.uow() as uow:
        lst = active_list(uow, trial.study_id, "live")
        assert lst is not None
        cursor = uow.lists.cursor(lst.id, "site=S102", lock=True)
        assert cursor is not None
        size = cursor.size
        cursor = uow.lists.update_cursor(cursor, {"next_sequence": size + 1})
        extend_stratum(uow, trial.ctx, implanter, lst, cursor, flagship())
        uow.commit()
    slots = stored_slots(trial, list_id, "site=S102")
    rng = random.Random(derive_seed(SEED, "site=S102", 1))
    assert slots[size:] == generate_blocks(ARMS, SIZES, 8, rng, after=[slots[size - 1]])
    action, new, _ = list_audit(trial, list_id)[-1]
    assert (action, new["trigger"], new["extension"]) == ("extend_stratum", "randomization", 1)


@pytest.mark.req("RAND-3")
def test_rand_3_imported_list_is_not_extended_but_takes_more_rows(fresh: Trial) -> None:
    slots = list_slots(4, 4)
    info = import_list(
        fresh.ctx,
        stat(fresh),
        fresh.study_id,
        csv_text(csv_rows(slots)),
        mode="live",
        source_name="a.csv",
    )
    with pytest.raises(PreconditionFailed) as refused:
        extend(fresh.ctx, stat(fresh), fresh.study_id, "site=S101", blocks=1)
    assert refused.value.code == "imported-list"
    assert "import more slots" in refused.value.message
    implanter = fresh.actor("implanter")  # signing in writes, so before the transaction
    with fresh.ctx.uow() as uow:
        lst = active_list(uow, fresh.study_id, "live")
        assert lst is not None
        cursor = uow.lists.cursor(lst.id, "site=S101", lock=True)
        assert cursor is not None
        cursor = uow.lists.update_cursor(cursor, {"next_sequence": cursor.size + 1})
        with pytest.raises(PreconditionFailed) as exhausted:
            extend_stratum(uow, fresh.ctx, implanter, lst, cursor, flagship())
    assert exhausted.value.code == "list-exhausted"
    assert not ARM_WORD.search(exhausted.value.message)

    n = len(slots["site=S101"])
    more = [["site=S101", str(n + 1), "9", "2", "CTRL"], ["site=S101", str(n + 2), "9", "2", "INT"]]
    with pytest.raises(ListImportRefused) as overlap:
        import_list(
            fresh.ctx,
            stat(fresh),
            fresh.study_id,
            csv_text([["site=S101", str(n), "9", "2", "INT"], *more[:1]]),
            mode="live",
            source_name="b.csv",
            append=True,
        )
    assert "already in the list" in overlap.value.message
    added = import_list(
        fresh.ctx,
        stat(fresh),
        fresh.study_id,
        csv_text(more),
        mode="live",
        source_name="c.csv",
        append=True,
    )
    assert (added.id, added.slots) == (info.id, 2)
    status = {s.stratum: s for s in stratum_status(fresh.ctx, stat(fresh), fresh.study_id)}
    assert status["site=S101"].size == n + 2
    assert status["site=S101"].extensions == 1


@pytest.mark.req("RAND-3")
def test_rand_3_extend_refuses_unknown_stratum_and_bad_counts(trial: Trial) -> None:
    before = counts(trial)
    with pytest.raises(NotFound):
        extend(trial.ctx, stat(trial), trial.study_id, "site=S999")
    with pytest.raises(ValidationFailed):
        extend(trial.ctx, stat(trial), trial.study_id, "site=S101", blocks=0)
    with pytest.raises(PreconditionFailed) as no_test:
        extend(trial.ctx, stat(trial), trial.study_id, "site=S101", mode="test")
    assert no_test.value.code == "no-allocation-list"
    assert counts(trial) == before


# --- low-slot warning -------------------------------------------------------------------------


@pytest.mark.req("RAND-3", "RAND-6")
def test_rand_3_low_slots_warn_the_manager_once_per_crossing_without_arms(trial: Trial) -> None:
    made = simulate_draws(trial, "site=S101", 24)  # 24 slots, warning level 4
    assert len(made) == 1
    ((role, subject_id, note),) = notes(trial)
    assert (role, subject_id) == ("manager", None)
    assert "site=S101" in note and "3 unused slots left" in note
    assert not ARM_WORD.search(note)
    assert not any(label in note for label in LABELS)

    extend(trial.ctx, stat(trial), trial.study_id, "site=S101", blocks=2)  # >= 4 slots again
    status = {s.stratum: s for s in stratum_status(trial.ctx, stat(trial), trial.study_id)}
    assert not status["site=S101"].low
    unused = status["site=S101"].unused
    assert len(simulate_draws(trial, "site=S101", unused)) == 1
    assert len(notes(trial)) == 2


@pytest.mark.req("RAND-3")
def test_rand_3_a_stratum_listed_below_the_warning_level_warns_at_its_first_draw(
    fresh: Trial,
) -> None:
    generate_list(fresh.ctx, stat(fresh), fresh.study_id, mode="live", seed=2, size_per_stratum=2)
    rows = stratum_status(fresh.ctx, stat(fresh), fresh.study_id)
    assert all(r.low == (r.size < 4) for r in rows)  # 2 or 4 slots (whole blocks), level 4
    small = next(r.stratum for r in rows if r.size == 2)
    assert len(simulate_draws(fresh, small, 1)) == 1  # 1 left: never "crossed" 4, still told
    assert simulate_draws(fresh, small, 1) == []
    assert [small in text for _, _, text in notes(fresh)] == [True]


# --- who may do it ----------------------------------------------------------------------------


@pytest.mark.req("RAND-3", "RAND-6")
@pytest.mark.parametrize("username", OTHERS)
def test_rand_3_only_the_statistician_manages_lists(trial: Trial, username: str) -> None:
    actor = trial.actor(username)
    good = csv_text(csv_rows(list_slots(8, 2)))
    calls: list[Callable[[], object]] = [
        lambda: generate_list(trial.ctx, actor, trial.study_id, mode="test", seed=1),
        lambda: import_list(
            trial.ctx, actor, trial.study_id, good, mode="test", source_name="x.csv"
        ),
        lambda: extend(trial.ctx, actor, trial.study_id, "site=S101", blocks=1),
        lambda: stratum_status(trial.ctx, actor, trial.study_id),
        lambda: list_info(trial.ctx, actor, trial.study_id),
    ]
    before = counts(trial)
    for call in calls:
        with pytest.raises(PermissionDenied) as refused:
            call()
        assert "unblinded statistician" in refused.value.message
    assert counts(trial) == before
    # a blinded user sending a broken file learns nothing from it either
    with pytest.raises(PermissionDenied):
        import_list(
            trial.ctx, actor, trial.study_id, "x\nsite=S101,1,1,2,INT", mode="live", source_name="y"
        )


# --- concealment at rest ----------------------------------------------------------------------


def _decrypts(t: Trial, value: bytes) -> bool:
    try:
        t.ctx.cipher.decrypt(value)
    except TrialError:
        return False
    return True


@pytest.mark.req("RAND-6")
def test_rand_6_allocation_tables_hold_no_arm_in_plain_text(trial: Trial) -> None:
    import_list(
        trial.ctx,
        stat(trial),
        trial.study_id,
        csv_text(csv_rows(list_slots(6, 4))),
        mode="test",
        source_name="t.csv",
    )
    extend(trial.ctx, stat(trial), trial.study_id, "site=S101", blocks=2)
    simulate_draws(trial, "site=S101", 3)
    cipher_cells = plain_cells = 0
    arms_inside = set()
    with trial.ctx.uow(readonly=True) as uow:
        for table in ("allocation_lists", "allocation_slots", "stratum_cursors"):
            result = uow.session.execute(text(f"SELECT * FROM {table}"))
            columns = list(result.keys())
            for row in result:
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    if isinstance(value, bytes | memoryview):
                        raw = bytes(value)
                        assert _decrypts(trial, raw), f"{table}.{column} is not ciphertext"
                        cipher_cells += 1
                        if column == "payload_enc":
                            arms_inside.add(json.loads(trial.ctx.cipher.decrypt(raw))["arm"])
                        continue
                    cell = str(value)
                    plain_cells += 1
                    assert not ARM_WORD.search(cell), f"{table}.{column}: {cell}"
                    assert not any(label in cell for label in LABELS), f"{table}.{column}"
    assert arms_inside == {"INT", "CTRL"}  # the search terms are the ones the payloads hold
    slots_and_seed = counts(trial)["allocation_slots"] + 1  # the imported list has no seed
    assert cipher_cells == slots_and_seed
    assert plain_cells > 0
