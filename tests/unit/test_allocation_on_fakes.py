"""The allocation family on the in-memory unit of work (tests/fakes.py): list generation,
import, extension, custody and status, and randomization (refusals, slots in order, caps,
idempotency, the study lock it takes), in milliseconds and without a database. The same
behaviours run on SQLite and PostgreSQL in tests/integration (test_randomize.py,
test_lists.py, test_list_custody.py, test_concurrency.py); these pin the rules."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pytest

from tests.unit import test_services_on_fakes as base
from tests.unit.test_services_on_fakes import PROCEDURE, STUDY, World
from trialdesk.domain.allocation_csv import CSV_COLUMNS
from trialdesk.domain.errors import (
    ActionNotAllowed,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, Grant
from trialdesk.services.allocation import lists, randomization
from trialdesk.services.allocation.lists import ListImportRefused, decode_slot

world = base.world
SEED = 20270125


def stat(w: World) -> Actor:
    return w.actor(Role.STATISTICIAN)


def with_list(w: World, *, mode: str = "live", size: int | None = None) -> lists.ListInfo:
    return lists.generate_list(w.ctx, stat(w), STUDY, mode=mode, seed=SEED, size_per_stratum=size)


def ready(w: World, site: str = "S101", /, **facts: object) -> str:
    """A subject on the procedure day with everything randomization asks for."""
    values: dict[str, object] = {"crc_approved": True, "anatomy_suitable": True, **facts}
    return w.put(SubjectState.AWAITING_PROCEDURE, site=site, **values)


def on_procedure_day(w: World) -> None:
    w.clock.set_day(PROCEDURE, hour=15)


def implanter(w: World, site: str = "S101") -> Actor:
    return w.actor(Role.IMPLANTER, site)


def coordinator(w: World, site: str = "S101") -> Actor:
    return w.actor(Role.COORDINATOR, site)


# --- lists ---------------------------------------------------------------------------------


@pytest.mark.req("RAND-3")
def test_rand3_generated_list_has_a_stratum_per_site_encrypted_and_fingerprinted(
    world: World,
) -> None:
    info = with_list(world)
    t = world.store.tables
    assert info.strata == len(world.sites) and info.slots >= 24 * len(world.sites)
    assert {c.stratum for c in t.cursors.values()} == {f"site={s}" for s in world.sites}
    slot = next(iter(t.slots.values()))
    assert b"INT" not in slot.payload_enc and b"CTRL" not in slot.payload_enc
    assert decode_slot(world.ctx, slot).arm in {"INT", "CTRL"}
    entry = t.audit[-1]
    assert (entry.action, entry.new["fingerprint"]) == ("generate_list", info.fingerprint)
    assert "INT" not in json.dumps(entry.new)


@pytest.mark.req("RAND-3")
def test_rand3_same_seed_same_list_and_a_second_active_list_is_refused(world: World) -> None:
    first = with_list(world)
    with pytest.raises(PreconditionFailed) as refused:
        with_list(world)
    assert refused.value.code == "list-exists"
    assert len(world.store.tables.lists) == 1
    lists.discard_list(world.ctx, stat(world), STUDY, first.id, "before go-live")
    again = with_list(world)
    assert again.fingerprint == first.fingerprint and again.id != first.id


@pytest.mark.req("RAND-3")
def test_rand3_lists_are_kept_by_the_unblinded_statistician_only(world: World) -> None:
    for role in (Role.MANAGER, Role.COORDINATOR, Role.DSMB):
        with pytest.raises(PermissionDenied):
            lists.generate_list(world.ctx, world.actor(role), STUDY, mode="test", seed=1)
    both = Actor(
        username="two-hats",
        full_name="Two Hats",
        user_id=500,
        grants=frozenset({Grant(Role.STATISTICIAN, STUDY, None), Grant(Role.MONITOR, STUDY, None)}),
    )
    with pytest.raises(PermissionDenied, match="blinded role wins"):
        lists.list_info(world.ctx, both, STUDY)
    assert world.store.tables.lists == {} and world.store.commits == 0


@pytest.mark.req("RAND-3")
def test_rand3_test_list_may_not_repeat_the_live_list(world: World) -> None:
    with_list(world)
    with pytest.raises(PreconditionFailed) as refused:
        with_list(world, mode="test")
    assert refused.value.code == "list-custody"
    assert [lst.mode for lst in world.store.tables.lists.values()] == ["live"]


@pytest.mark.req("RAND-3")
def test_rand3_extension_is_seeded_audited_and_counted(world: World) -> None:
    info = with_list(world)
    status = lists.extend(world.ctx, stat(world), STUDY, "site=S101", blocks=2)
    assert (status.extensions, status.used) == (1, 0)
    assert 24 + 4 <= status.size <= 24 + 8  # two blocks of size 2 or 4
    held = [s for s in world.store.tables.slots.values() if s.stratum == "site=S101"]
    assert sorted(s.sequence for s in held) == list(range(1, status.size + 1))
    entry = world.store.tables.audit[-1]
    assert (entry.action, entry.new) == (
        "extend_stratum",
        {"stratum": "site=S101", "extension": 1, "trigger": "statistician"},
    )
    assert lists.list_info(world.ctx, stat(world), STUDY)[0].slots == info.slots + len(held) - 24


def _csv(rows: list[list[str]]) -> str:
    return "\n".join(",".join(r) for r in [list(CSV_COLUMNS), *rows]) + "\n"


@pytest.mark.req("RAND-3")
def test_rand3_an_import_with_problems_stores_nothing_and_names_every_row(world: World) -> None:
    rows = [[f"site={code}", "1", "1", "2", "INT"] for code in sorted(world.sites)]
    rows += [[f"site={code}", "2", "1", "2", "CTRL"] for code in sorted(world.sites)]
    rows[0][4] = "PLACEBO"
    rows.append(["site=S999", "1", "1", "2", "INT"])
    with pytest.raises(ListImportRefused) as refused:
        lists.import_list(world.ctx, stat(world), STUDY, _csv(rows), mode="live", source_name="x")
    text = "\n".join(refused.value.lines)
    assert "row 2: arm 'PLACEBO' is not an arm" in text
    assert "site S999 is not a site of this study" in text
    assert world.store.tables.lists == {} and world.store.tables.slots == {}
    rows[0][4] = "INT"
    info = lists.import_list(
        world.ctx, stat(world), STUDY, _csv(rows[:-1]), mode="live", source_name="ok.csv"
    )
    assert (info.source, info.slots, info.strata) == ("imported", 2 * len(world.sites), 75)


@pytest.mark.req("RAND-3")
def test_rand3_status_counts_used_slots_and_warns_when_low(world: World) -> None:
    with_list(world, size=1)  # one block of 2 or 4: below the warning level of 4 from the start
    on_procedure_day(world)
    randomization.randomize(world.ctx, implanter(world), STUDY, ready(world))
    status = {s.stratum: s for s in lists.stratum_status(world.ctx, stat(world), STUDY)}
    s101 = status["site=S101"]
    assert (s101.used, s101.unused, s101.low) == (1, s101.size - 1, True)
    notes = world.store.tables.notifications
    assert [n["role"] for n in notes] == ["manager"]
    assert f"stratum site=S101: {s101.unused} unused slot" in notes[0]["text"]
    assert "INT" not in notes[0]["text"] and "CTRL" not in notes[0]["text"]


# --- randomization -------------------------------------------------------------------------


@pytest.mark.req("RAND-5")
def test_rand5_slots_are_drawn_in_order_and_numbers_run_per_site(world: World) -> None:
    with_list(world)
    on_procedure_day(world)
    numbers = [ready(world) for _ in range(3)] + [ready(world, "S102")]
    results = [
        randomization.randomize(world.ctx, implanter(world, n[:4]), STUDY, n) for n in numbers
    ]
    assert [r.randomization_number for r in results] == [
        "S101-R001",
        "S101-R002",
        "S101-R003",
        "S102-R001",
    ]
    t = world.store.tables
    used = sorted(
        (s.sequence, s.used_by_subject_id) for s in t.slots.values() if s.stratum == "site=S101"
    )[:4]
    subject_ids = [world.subject(n).id for n in numbers[:3]]
    assert used == [(1, subject_ids[0]), (2, subject_ids[1]), (3, subject_ids[2]), (4, None)]
    slots = {s.id: s for s in t.slots.values()}
    for rand in t.randomizations.values():
        assert rand.slot_id is not None
        assert (
            world.ctx.cipher.decrypt(rand.arm_enc)
            == decode_slot(world.ctx, slots[rand.slot_id]).arm
        )


@pytest.mark.req("RAND-6")
def test_rand6_the_coordinator_gets_no_arm_and_no_audit_entry_carries_one(world: World) -> None:
    with_list(world)
    on_procedure_day(world)
    result = randomization.randomize(world.ctx, coordinator(world), STUDY, ready(world))
    assert (result.arm, result.arm_label) == (None, None)
    assert "arm" not in result.to_dict()
    shown = randomization.randomize(world.ctx, implanter(world), STUDY, ready(world))
    assert shown.arm in {"INT", "CTRL"}
    entries = [e for e in world.store.tables.audit if e.action in {"randomize", "allocate"}]
    assert [e.action for e in entries] == ["randomize", "allocate"] * 2
    for entry in entries:
        assert not {"INT", "CTRL"} & set(json.dumps([entry.old, entry.new]).split('"'))
    assert entries[1].new == {
        "randomization_number": "S101-R001",
        "stratum": "site=S101",
        "list": next(iter(world.store.tables.lists)),
        "slot": 1,
    }


@pytest.mark.req("RAND-4")
@pytest.mark.parametrize(
    ("facts", "code"),
    [
        ({"crc_approved": False}, "crc-approval-missing"),
        ({"anatomy_suitable": None}, "anatomy-not-confirmed"),
    ],
)
def test_rand4_missing_preconditions_refuse_and_change_nothing(
    world: World, facts: dict[str, object], code: str
) -> None:
    with_list(world)
    on_procedure_day(world)
    number = ready(world, **facts)
    before = world.store.tables
    with pytest.raises(PreconditionFailed) as refused:
        randomization.randomize(world.ctx, implanter(world), STUDY, number)
    assert refused.value.code == code
    assert world.store.tables is before
    assert world.subject(number).state == "awaiting_procedure"


@pytest.mark.req("RAND-4")
def test_rand4_wrong_state_wrong_site_and_no_list_are_refused(world: World) -> None:
    on_procedure_day(world)
    number = ready(world)
    with pytest.raises(PreconditionFailed) as no_list:
        randomization.randomize(world.ctx, implanter(world), STUDY, number)
    assert no_list.value.code == "no-allocation-list"
    with_list(world)
    with pytest.raises(NotFound):  # another site's subject does not exist for this user
        randomization.randomize(world.ctx, implanter(world, "S102"), STUDY, number)
    with pytest.raises(PermissionDenied):
        randomization.randomize(world.ctx, world.actor(Role.MONITOR), STUDY, number)
    screening = world.put(SubjectState.SCREENING)
    with pytest.raises(ActionNotAllowed):
        randomization.randomize(world.ctx, implanter(world), STUDY, screening)
    assert world.store.tables.randomizations == {}


@pytest.mark.req("RAND-4")
def test_rand4_total_cap_refuses_the_subject_over_it(world: World) -> None:
    with_list(world)
    on_procedure_day(world)
    t = world.store.tables
    version = t.versions[world.version.id]
    loaded = world.ctx.cached_protocol(version.sha256)
    assert loaded is not None
    capped = loaded.protocol.model_copy(
        update={"enrolment": loaded.protocol.enrolment.model_copy(update={"cap_total": 2})}
    )
    world.ctx._protocols[version.sha256] = replace(loaded, protocol=capped)
    first, second, third = ready(world), ready(world), ready(world)
    for number in (first, second):
        randomization.randomize(world.ctx, implanter(world), STUDY, number)
    with pytest.raises(PreconditionFailed) as refused:
        randomization.randomize(world.ctx, implanter(world), STUDY, third)
    assert refused.value.code == "enrolment-closed"
    assert len(world.store.tables.randomizations) == 2
    assert world.subject(third).state == "awaiting_procedure"


@pytest.mark.req("RAND-5")
def test_rand5_same_key_same_answer_other_subject_refused(world: World) -> None:
    with_list(world)
    on_procedure_day(world)
    number, other = ready(world), ready(world)
    first = randomization.randomize(
        world.ctx, implanter(world), STUDY, number, idempotency_key="k-1"
    )
    again = randomization.randomize(
        world.ctx, implanter(world), STUDY, number, idempotency_key="k-1"
    )
    assert again == first and len(world.store.tables.randomizations) == 1
    with pytest.raises(ValidationFailed) as reused:
        randomization.randomize(world.ctx, implanter(world), STUDY, other, idempotency_key="k-1")
    assert reused.value.problems == {"idempotency_key": "reused"}
    with pytest.raises(ValidationFailed):
        randomization.randomize(world.ctx, implanter(world), STUDY, other, idempotency_key=" ")
    stored = next(iter(world.store.tables.randomizations.values())).idempotency_key
    assert stored == randomization.scoped_key(STUDY, implanter(world).label, "k-1")


@pytest.mark.req("RAND-5")
def test_rand5_the_study_lock_is_shared_far_from_the_cap_and_exclusive_near_it(
    world: World,
) -> None:
    """Where writers run in parallel (PostgreSQL: at most max_connections in flight), a
    randomization takes the shared study lock while committed + in-flight cannot pass the
    cap, and redoes itself under the exclusive lock once they could."""
    with_list(world)
    on_procedure_day(world)
    world.store.parallel_writers = 351  # the flagship's cap is 352
    first, second, third = ready(world), ready(world), ready(world)
    world.store.tables.row_locks.clear()
    randomization.randomize(world.ctx, implanter(world), STUDY, first)
    studies = [lock for lock in world.store.tables.row_locks if lock[0] == "study"]
    assert studies == [("study", STUDY, True)]
    randomization.randomize(world.ctx, implanter(world), STUDY, second)
    randomization.randomize(world.ctx, implanter(world), STUDY, third)  # 2 + 351 > 352
    studies = [lock for lock in world.store.tables.row_locks if lock[0] == "study"]
    assert studies[-1] == ("study", STUDY, False)
    assert len(world.store.tables.randomizations) == 3


@pytest.mark.req("RAND-5")
def test_rand5_serial_writers_take_no_study_lock(world: World) -> None:
    with_list(world)
    on_procedure_day(world)
    number = ready(world)
    world.store.tables.row_locks.clear()
    randomization.randomize(world.ctx, implanter(world), STUDY, number)
    assert not [lock for lock in world.store.tables.row_locks if lock[0] == "study"]


@pytest.mark.req("RAND-3")
def test_rand3_an_exhausted_stratum_extends_itself_when_randomizing(world: World) -> None:
    with_list(world, size=2)
    on_procedure_day(world)
    numbers = [ready(world) for _ in range(3)]
    for number in numbers:
        randomization.randomize(world.ctx, implanter(world), STUDY, number)
    t = world.store.tables
    cursor = next(c for c in t.cursors.values() if c.stratum == "site=S101")
    assert (cursor.next_sequence, cursor.extensions) == (4, 1) and cursor.size > 2
    extension = [e for e in t.audit if e.action == "extend_stratum"]
    assert [e.new["trigger"] for e in extension] == ["randomization"]
    assert sorted(r.number for r in t.randomizations.values()) == [
        "S101-R001",
        "S101-R002",
        "S101-R003",
    ]


@pytest.mark.req("RAND-3")
def test_rand3_test_subjects_draw_from_the_test_list_only(world: World) -> None:
    with_list(world)
    on_procedure_day(world)
    number = ready(world)
    t = world.store.tables
    subject = world.subject(number)
    t.subjects[subject.id] = replace(subject, test_subject=True)
    with pytest.raises(PreconditionFailed) as refused:
        randomization.randomize(world.ctx, implanter(world), STUDY, number)
    assert refused.value.code == "no-allocation-list"
    lists.generate_list(world.ctx, stat(world), STUDY, mode="test", seed=SEED + 1)
    randomization.randomize(world.ctx, implanter(world), STUDY, number)
    rand = next(iter(world.store.tables.randomizations.values()))
    slot = world.store.tables.slots[rand.slot_id or 0]
    assert world.store.tables.lists[slot.list_id].mode == "test"


def test_the_result_date_is_the_sites_local_day(world: World) -> None:
    """TIME-1: randomized late in the evening in Boston is that day in Boston, not UTC's."""
    with_list(world)
    world.clock.now = dt.datetime.combine(PROCEDURE, dt.time(23, 30), dt.UTC) + dt.timedelta(
        hours=1
    )  # 00:30 UTC the next day = 19:30 in Boston
    result = randomization.randomize(world.ctx, implanter(world), STUDY, ready(world))
    assert result.randomized_on == PROCEDURE.isoformat()
