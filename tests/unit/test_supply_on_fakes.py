"""The supply services (services/supply/) on the in-memory unit of work (tests/fakes.py):
lots, shipments, receipt, the procedure's device, quarantine, returns, destruction, stock and
recalls, without a database. tests/integration/test_devices.py holds the same behaviours on
SQLite and PostgreSQL; these pin the rules and the device lifecycle (SUP-1, SUP-2, RAND-6)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests import flagship_data as fd
from tests.fakes import FakeUnitOfWorkFactory
from tests.unit.test_services_on_fakes import STUDY, World, _randomized
from tests.unit.test_services_on_fakes import world as world  # the fixture
from trialdesk.domain.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    Refusal,
    ValidationFailed,
)
from trialdesk.domain.roles import Role
from trialdesk.domain.supply import DeviceMove
from trialdesk.services import followup, supply
from trialdesk.services.access import operator_actor
from trialdesk.services.supply.common import move

PROCEDURE = dt.date.fromisoformat(fd.PROCEDURE_DATE)


def _statuses(world: World) -> dict[str, str]:
    return {d.serial: d.status for d in world.store.tables.devices.values()}


def _supply_actions(world: World) -> list[str]:
    return [e.action for e in world.store.tables.audit if e.stream == f"supply:{STUDY}"]


def _stocked(world: World) -> None:
    """Demo stock: LOT2701's ten devices registered, shipped to S101 and received."""
    world.clock.set_day(PROCEDURE - dt.timedelta(days=5))
    assert supply.stock_demo_site(world.ctx, operator_actor(), STUDY) == 10


def test_sup1_register_ship_receive_moves_devices_by_the_lifecycle(world: World) -> None:
    """SUP-1: a lot's devices start at the depot, go in transit on shipping and to the
    site's shelf on receipt; each step is one supply audit entry per device."""
    world.clock.set_day(PROCEDURE - dt.timedelta(days=5))
    manager = world.actor(Role.MANAGER, None)
    lot = supply.register_lot(
        world.ctx, manager, STUDY, lot_number="LOTA", model="Implant", gtin=supply.DEMO_GTIN,
        manufacturer="Maker", expiry=dt.date(2029, 1, 31), serials=["A1", "A2", "A3"],
    )  # fmt: skip
    assert lot.counts == {"at_depot": 3} and [d.status for d in lot.devices] == ["at_depot"] * 3
    shipment = supply.ship_devices(world.ctx, manager, STUDY, "S101", ["A1", "A2"])
    assert (shipment.number, shipment.status, shipment.serials) == (
        "SHP-0001", "in_transit", ["A1", "A2"]
    )  # fmt: skip
    assert _statuses(world) == {"A1": "in_transit", "A2": "in_transit", "A3": "at_depot"}
    coord = world.actor(Role.COORDINATOR)
    received = supply.receive_shipment(world.ctx, coord, STUDY, shipment.number)
    assert received.status == "received" and received.received_by == coord.label
    assert _statuses(world) == {"A1": "at_site", "A2": "at_site", "A3": "at_depot"}
    assert _supply_actions(world) == [
        "register_device_lot", "register_device", "register_device", "register_device",
        "ship_devices", "ship_device", "ship_device",
        "receive_shipment", "receive_device", "receive_device",
    ]  # fmt: skip
    kinds = [e["kind"] for e in world.store.tables.device_events]
    assert kinds.count("registered") == 3 and kinds.count("received") == 2


def test_sup1_a_device_not_at_the_depot_does_not_ship_and_nothing_changes(world: World) -> None:
    """SUP-1, RAND-6: shipping a device already shipped is refused without naming what
    happened to it at the site; nothing is written."""
    _stocked(world)
    before, commits = world.store.tables, world.store.commits
    with pytest.raises(PreconditionFailed, match="not in depot stock") as info:
        supply.ship_devices(world.ctx, world.actor(Role.MANAGER, None), STUDY, "S102", ["SN000123"])
    assert info.value.code == Refusal.DEVICE_UNAVAILABLE
    assert world.store.tables is before and world.store.commits == commits


def test_sup1_the_implant_arm_uses_a_device_from_the_site_shelf(world: World) -> None:
    """SUP-1, RAND-6: the implant procedure names a device on the shelf, which becomes
    implanted with its subject only in the encrypted log; the sham procedure writes the same
    contentless supply audit entry and moves no device."""
    _stocked(world)
    world.clock.set_day(PROCEDURE)
    implanter = world.actor(Role.IMPLANTER)
    implant = _randomized(world, arm="INT")
    sham = _randomized(world, arm="CTRL")
    (values,) = fd.implant_procedure_forms().values()
    followup.record_procedure(world.ctx, implanter, STUDY, implant, values=values)
    (sham_values,) = fd.sham_procedure_forms().values()
    followup.record_procedure(world.ctx, implanter, STUDY, sham, values=sham_values)
    assert _statuses(world)["SN000123"] == "implanted"
    assert sum(s == "at_site" for s in _statuses(world).values()) == 9
    procedure_entries = [
        (e.entity_id, e.new)
        for e in world.store.tables.audit
        if e.action == "index_procedure_device"
    ]
    assert procedure_entries == [("concealed", {"concealed": True})] * 2
    (use,) = [e for e in world.store.tables.device_events if e["kind"] == "implanted"]
    assert implant.encode() not in use["detail_enc"]  # the link is encrypted
    recall = supply.recall_subjects(
        world.ctx, world.actor(Role.STATISTICIAN, None), STUDY, "LOT2701"
    )
    assert [(r.subject, r.serial, r.released) for r in recall.subjects] == [
        (implant, "SN000123", True)
    ]


def test_sup1_a_device_in_transit_or_quarantined_is_refused_at_the_procedure(
    world: World,
) -> None:
    """SUP-1: a quarantined lot's devices cannot be implanted; the form is refused with
    nothing saved and the device stays quarantined."""
    _stocked(world)
    manager = world.actor(Role.MANAGER, None)
    lot = supply.quarantine_lot(world.ctx, manager, STUDY, "LOT2701", "field safety notice")
    assert lot.status == "quarantined"
    assert set(_statuses(world).values()) == {"quarantined"}
    world.clock.set_day(PROCEDURE)
    number = _randomized(world, arm="INT")
    (values,) = fd.implant_procedure_forms().values()
    with pytest.raises(PreconditionFailed, match="is quarantined") as info:
        followup.record_procedure(
            world.ctx, world.actor(Role.IMPLANTER), STUDY, number, values=values
        )
    assert info.value.code == Refusal.DEVICE_UNAVAILABLE
    assert world.store.tables.forms == {}
    with pytest.raises(PreconditionFailed, match="already quarantined"):
        supply.quarantine_lot(world.ctx, manager, STUDY, "LOT2701", "again")


def test_sup1_returns_and_destruction_follow_the_lifecycle(world: World) -> None:
    """SUP-1: the site's implanting team returns a device from its shelf; the study manager
    destroys it at the depot; a destroyed device cannot be returned."""
    _stocked(world)
    implanter = world.actor(Role.IMPLANTER)
    returned = supply.return_device(world.ctx, implanter, STUDY, "SN000124", "damaged box")
    assert (returned.status, returned.site) == ("returned", None)
    manager = world.actor(Role.MANAGER, None)
    destroyed = supply.destroy_device(world.ctx, manager, STUDY, "SN000124", "scrapped")
    assert destroyed.status == "destroyed"
    with pytest.raises(PreconditionFailed, match="only a device held at a site can be returned"):
        supply.return_device(world.ctx, manager, STUDY, "SN000124", "again")
    with pytest.raises(ValidationFailed, match="a reason"):
        supply.destroy_device(world.ctx, implanter, STUDY, "SN000125", " ")
    with pytest.raises(NotFound):
        supply.return_device(world.ctx, implanter, STUDY, "NOPE", "x")


def test_sup2_stock_for_the_implanting_team_and_for_blinded_roles(world: World) -> None:
    """SUP-2, RAND-6: the site's implanting team sees on hand and what left stock; the
    coordinator only what moves by shipment, unchanged by an implant."""
    _stocked(world)

    def view(role: Role) -> supply.SiteStockView:
        (site,) = supply.site_inventory(world.ctx, world.actor(role), STUDY, "S101").sites
        return site

    blinded_before = view(Role.COORDINATOR)
    world.clock.set_day(PROCEDURE)
    number = _randomized(world, arm="INT")
    (values,) = fd.implant_procedure_forms().values()
    followup.record_procedure(world.ctx, world.actor(Role.IMPLANTER), STUDY, number, values=values)
    team = view(Role.IMPLANTER)
    assert (team.on_hand, team.left_stock, team.received) == (9, 1, 10)
    assert team.used is not None and [u.subject for u in team.used] == [number]
    blinded = view(Role.COORDINATOR)
    assert blinded == blinded_before
    assert (blinded.on_hand, blinded.left_stock, blinded.used, blinded.received) == (
        None, None, None, 10
    )  # fmt: skip


def test_sup1_two_moves_of_the_same_device_cannot_both_win(world: World) -> None:
    """SUP-1: the guarded move refuses a device changed since it was read."""
    _stocked(world)
    with FakeUnitOfWorkFactory(world.store)() as uow:
        device = uow.supply.device(STUDY, "SN000123")
        assert device is not None
        first = move(uow, world.ctx, device, DeviceMove.IMPLANT)
        assert first.status == "implanted" and first.version == device.version + 1
        with pytest.raises(Conflict, match="changed by someone else"):
            move(uow, world.ctx, device, DeviceMove.RETURN)


def test_sup2_device_list_for_blinded_roles_unchanged_by_an_implant(world: World) -> None:
    """SUP-2, RAND-6 (issue 14, the device list): an implant takes the device off the
    implanting team's list; the coordinator's list, totals and offered filters are the same
    before and after, and a state it may not see is refused whether or not devices are in it."""
    _stocked(world)

    def lists(role: Role) -> list[supply.DevicePage]:
        actor = world.actor(role)
        return [
            supply.device_list(world.ctx, actor, STUDY),
            supply.device_list(world.ctx, actor, STUDY, search="SN", order="status"),
            supply.device_list(world.ctx, actor, STUDY, lot=supply.DEMO_LOT, limit=3, offset=3),
        ]

    before = lists(Role.COORDINATOR)
    assert before[0].statuses == ["in_transit"] and before[0].total == 0
    team = supply.device_list(world.ctx, world.actor(Role.IMPLANTER), STUDY, status="at_site")
    assert team.total == 10 and team.statuses == ["in_transit", "at_site", "quarantined"]
    world.clock.set_day(PROCEDURE)
    number = _randomized(world, arm="INT")
    (values,) = fd.implant_procedure_forms().values()
    followup.record_procedure(world.ctx, world.actor(Role.IMPLANTER), STUDY, number, values=values)
    team = supply.device_list(world.ctx, world.actor(Role.IMPLANTER), STUDY, status="at_site")
    assert team.total == 9 and "SN000123" not in [d.serial for d in team.items]
    assert lists(Role.COORDINATOR) == before
    with pytest.raises(ValidationFailed, match="status must be one of in_transit"):
        supply.device_list(world.ctx, world.actor(Role.COORDINATOR), STUDY, status="at_site")
