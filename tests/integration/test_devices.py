"""Device accountability (SUP-1, SUP-2) on SQLite and PostgreSQL: lots to sites to implants,
refusals that change nothing, recalls, re-supply warnings, and no per-arm usage for blinded
roles (RAND-6)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial, flagship
from trialdesk.domain.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)
from trialdesk.protocol.loader import parse_protocol
from trialdesk.services import exports, followup, supply
from trialdesk.services.queries import get_subject
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import AuditEntryRow, DeviceEventRow

GTIN = supply.DEMO_GTIN
EXPIRY = dt.date(2030, 6, 30)


def digest(t: Trial) -> str:
    """SHA-256 of every row of every table: a refused action must leave it unchanged."""
    meta = MetaData()
    meta.reflect(bind=t.runtime.engine)
    h = hashlib.sha256()
    with t.runtime.engine.connect() as conn:
        for table in meta.sorted_tables:
            order = [c for c in table.primary_key.columns] or list(table.columns)
            for row in conn.execute(select(table).order_by(*order)):
                h.update(repr((table.name, tuple(row))).encode())
    return h.hexdigest()


def lot(t: Trial, number: str, serials: list[str], expiry: dt.date = EXPIRY) -> None:
    supply.register_lot(
        t.ctx,
        t.actor("manager"),
        t.study_id,
        lot_number=number,
        model="Coronary-sinus implant XE",
        gtin=GTIN,
        manufacturer="Example Devices Inc.",
        expiry=expiry,
        serials=serials,
    )


def stock(t: Trial, site: str, serials: list[str], *, receive: bool = True) -> str:
    shipment = supply.ship_devices(t.ctx, t.actor("manager"), t.study_id, site, serials)
    if receive:
        supply.receive_shipment(t.ctx, j.staff(t, "coordinator", site), t.study_id, shipment.number)
    return shipment.number


def randomized_in(t: Trial, site: str, arm: str) -> str:
    """A randomized subject of ``arm`` at ``site`` (others randomized on the way get a sham
    or implant procedure recorded so they do not linger)."""
    for _ in range(12):
        number, got = j.randomized(t, site)
        if got == arm:
            return number
    raise AssertionError(f"no {arm} subject at {site} in 12 randomizations")


def implant(t: Trial, number: str, device: str, *, released: bool = True) -> None:
    site = number.split("-")[0]
    (values,) = fd.implant_procedure_forms(udi=device, released=released).values()
    t.clock.set_day(j.PROCEDURE)
    followup.record_procedure(
        t.ctx, j.staff(t, "implanter", site), t.study_id, number, values=values
    )


def udi(serial: str, lot_number: str, expiry: dt.date = EXPIRY) -> str:
    return f"(01){GTIN}(17){expiry.strftime('%y%m%d')}(10){lot_number}(21){serial}"


def refused(t: Trial, call: Callable[[], Any]) -> TrialError:
    before = digest(t)
    with pytest.raises(TrialError) as info:
        call()
    assert digest(t) == before, f"refusal changed the database: {info.value.message}"
    return info.value


# --------------------------------------------------------------------------- recall


def test_sup1_recall_lists_exactly_the_subjects_implanted_from_the_lot(trial: Trial) -> None:
    """SUP-1: implants from two lots at three sites; the recall of lot A lists exactly its
    subjects with site and procedure date; implanters see their own site's only; blinded
    roles are refused; the study manager reads it with a signed, audited disclosure."""
    t = trial
    t.clock.set_day(j.CONSENT)
    lot(t, "LOTA", [f"A{n}" for n in range(1, 7)])
    lot(t, "LOTB", [f"B{n}" for n in range(1, 4)])
    stock(t, "S101", ["A1", "B1"])
    stock(t, "S102", ["A2", "A3"])
    stock(t, "S103", ["A4", "B2"])
    plan = {"S101": ["A1", "B1"], "S102": ["A2", "A3"], "S103": ["A4", "B2"]}
    expected_a: set[tuple[str, str, str, str]] = set()
    for site, serials in plan.items():
        for serial in serials:
            number = randomized_in(t, site, "INT")
            implant(t, number, serial if serial != "A3" else udi("A3", "LOTA"))
            if serial.startswith("A"):
                expected_a.add((number, site, fd.PROCEDURE_DATE, serial))

    def rows(view: supply.RecallView) -> set[tuple[str, str, str, str]]:
        return {(e.subject, e.site, e.procedure_date, e.serial) for e in view.subjects}

    stat = supply.recall_subjects(t.ctx, t.actor("statistician"), t.study_id, "LOTA")
    assert rows(stat) == expected_a and len(stat.subjects) == 4
    assert not stat.disclosed_by_signature
    lot_b = supply.recall_subjects(t.ctx, t.actor("dsmb"), t.study_id, "LOTB")
    assert {e.serial for e in lot_b.subjects} == {"B1", "B2"}
    own = supply.recall_subjects(t.ctx, j.staff(t, "implanter", "S102"), t.study_id, "LOTA")
    assert rows(own) == {r for r in expected_a if r[1] == "S102"}

    for role in ("coordinator", "monitor", "crc", "admin"):
        actor = t.actor(role)
        error = refused(t, partial(supply.recall_subjects, t.ctx, actor, t.study_id, "LOTA"))
        assert isinstance(error, PermissionDenied)
    manager = t.actor("manager")
    missing = refused(
        t, lambda: supply.recall_subjects(t.ctx, manager, t.study_id, "LOTA", reason="recall")
    )
    assert isinstance(missing, ValidationFailed) and "password" in missing.problems
    with pytest.raises(AuthenticationFailed):
        supply.recall_subjects(
            t.ctx, manager, t.study_id, "LOTA", reason="FSCA 2027-01", password="wrong"
        )
    disclosed = supply.recall_subjects(
        t.ctx, manager, t.study_id, "LOTA", reason="FSCA 2027-01", password=PASSWORD
    )
    assert rows(disclosed) == expected_a and disclosed.disclosed_by_signature
    with t.ctx.uow(readonly=True) as uow:
        entry = uow.session.scalars(
            select(AuditEntryRow).where(
                AuditEntryRow.action == "disclose_recall_list", AuditEntryRow.actor == "manager"
            )
        ).one()
        assert entry.reason == "FSCA 2027-01" and entry.entity_id == "LOTA"
        assert "4" not in entry.new  # not how many subjects the list named
        assert not any(number in entry.new for number, *_ in expected_a)

    # the recall quarantines what is left of lot A, wherever it is
    supply.quarantine_lot(t.ctx, manager, t.study_id, "LOTA", "field safety notice")
    held = refused(t, lambda: supply.ship_devices(t.ctx, manager, t.study_id, "S101", ["A5", "B3"]))
    assert "A5 is quarantined at the depot" in held.message
    lots = {v.lot_number: v for v in supply.list_lots(t.ctx, manager, t.study_id)}
    assert lots["LOTA"].status == "quarantined"
    # the blinded manager: never-shipped devices apart, everything delivered merged
    assert lots["LOTA"].counts == {"at_sites": 4, "quarantined_at_depot": 2}
    stat_lots = {v.lot_number: v for v in supply.list_lots(t.ctx, t.actor("dsmb"), t.study_id)}
    assert stat_lots["LOTA"].counts == {"implanted": 4, "quarantined": 2}
    with pytest.raises(NotFound):
        supply.recall_subjects(t.ctx, t.actor("statistician"), t.study_id, "LOTZ")


# --------------------------------------------------------------------------- implant refusals


def test_sup1_implant_naming_an_unavailable_device_is_refused_and_changes_nothing(
    trial: Trial,
) -> None:
    """SUP-1: a device at another site, already implanted, destroyed, in transit, of a
    quarantined lot, expired, unknown, or a UDI with a wrong check digit, a bad format or a
    lot that disagrees with the record: one clear message, neither the procedure nor any
    device changes. Then a device in stock is implanted and linked to the subject."""
    t = trial
    t.clock.set_day(j.CONSENT)
    lot(t, "LOTA", ["A1", "A2", "A3", "A4", "A5"])
    lot(t, "LOTQ", ["Q1"])
    lot(t, "LOTX", ["X1"], expiry=dt.date(2027, 2, 1))
    stock(t, "S102", ["A1"])
    stock(t, "S101", ["A2", "A3", "Q1", "X1"])
    stock(t, "S101", ["A4"], receive=False)
    supply.destroy_device(t.ctx, t.actor("implanter"), t.study_id, "A3", "package seal broken")
    supply.quarantine_lot(t.ctx, t.actor("manager"), t.study_id, "LOTQ", "quality hold")
    first = randomized_in(t, "S101", "INT")
    implant(t, first, "A2")
    number = randomized_in(t, "S101", "INT")

    bad_check = udi("A5", "LOTA").replace(GTIN, GTIN[:-1] + "7")
    cases = {
        "A1": "not in stock at site S101",  # received at S102
        "A2": "is implanted",
        "A3": "is destroyed",
        "A4": "is in transit",
        "Q1": "is quarantined",
        "X1": "expired on 2027-02-01",
        "NOPE": "no device with serial number NOPE",
        bad_check: "check digit 7, expected 6",
        "(01)00812345000016(10)LOTA": "no (21) serial",
        "(01)0081234500001(21)A5": "must be 14 digits",
        udi("A5", "LOTB"): "lot LOTB (recorded LOTA)",
        "": "name the device used",
    }
    for device, message in cases.items():
        error = refused(t, partial(implant, t, number, device))
        assert message in error.message, (device, error.message)
        assert isinstance(error, ValidationFailed | PreconditionFailed)
    assert not get_subject(t.ctx, t.actor("coordinator"), t.study_id, number).procedure_done

    at_depot = refused(t, lambda: implant(t, number, udi("A5", "LOTA")))
    assert "not in stock at site S101" in at_depot.message
    stock(t, "S101", ["A5"])
    implant(t, number, udi("A5", "LOTA"))
    stat = supply.site_inventory(t.ctx, t.actor("statistician"), t.study_id, "S101")
    (site,) = stat.sites
    assert site.used is not None
    assert {(u.serial, u.subject, u.released) for u in site.used} == {
        ("A2", first, True),
        ("A5", number, True),
    }


def test_sup1_sham_names_no_device_and_not_released_quarantines_it(trial: Trial) -> None:
    """PROC-1/2 with SUP-1: the sham procedure uses no device (stock unchanged); an implant
    attempted but not released keeps the subject in its arm and quarantines the device for
    return; the recall still lists that subject (exposed)."""
    t = trial
    t.clock.set_day(j.CONSENT)
    before = supply.site_inventory(t.ctx, t.actor("statistician"), t.study_id, "S101")
    sham = randomized_in(t, "S101", "CTRL")
    (values,) = fd.sham_procedure_forms().values()
    t.clock.set_day(j.PROCEDURE)
    followup.record_procedure(t.ctx, t.actor("implanter"), t.study_id, sham, values=values)
    after = supply.site_inventory(t.ctx, t.actor("statistician"), t.study_id, "S101")
    assert after.sites[0].on_hand == before.sites[0].on_hand
    number = randomized_in(t, "S101", "INT")
    device = j.device_udi(t)
    implant(t, number, device, released=False)
    recall = supply.recall_subjects(t.ctx, t.actor("statistician"), t.study_id, "LOT2701")
    assert [(e.subject, e.released) for e in recall.subjects] == [(number, False)]
    serial = device.rsplit("(21)", 1)[1]
    view = supply.site_inventory(t.ctx, t.actor("implanter"), t.study_id, "S101").sites[0]
    assert (serial, "quarantined") in {(d.serial, d.status) for d in view.devices}
    blinded = supply.site_inventory(t.ctx, t.actor("coordinator"), t.study_id, "S101").sites[0]
    assert (blinded.quarantined, blinded.devices) == (None, [])
    returned = supply.return_device(
        t.ctx, t.actor("implanter"), t.study_id, serial, "recaptured; back to manufacturer"
    )
    assert (returned.status, returned.site) == ("returned", None)


# --------------------------------------------------------------------------- receipt


def test_sup1_only_the_receiving_sites_coordinator_receives(trial: Trial) -> None:
    """SUP-1: another site's coordinator (not found, ACC-1) and the receiving site's implanter
    are refused with nothing changed; a receipt dated before shipping is refused; the
    receiving coordinator receives once."""
    t = trial
    t.clock.set_day(j.CONSENT)
    lot(t, "LOTA", ["A1", "A2"])
    number = stock(t, "S102", ["A1", "A2"], receive=False)
    error = refused(
        t, lambda: supply.receive_shipment(t.ctx, t.actor("coordinator"), t.study_id, number)
    )
    assert isinstance(error, NotFound)
    implanter = j.staff(t, "implanter", "S102")  # made before the digest
    coordinator = j.staff(t, "coordinator", "S102")
    error = refused(t, lambda: supply.receive_shipment(t.ctx, implanter, t.study_id, number))
    assert isinstance(error, PermissionDenied)
    early = j.CONSENT - dt.timedelta(days=1)
    error = refused(
        t, lambda: supply.receive_shipment(t.ctx, coordinator, t.study_id, number, early)
    )
    assert "before the shipping date" in error.message
    view = supply.receive_shipment(t.ctx, coordinator, t.study_id, number)
    assert (view.status, view.received_by, view.serials) == (
        "received",
        coordinator.username,
        ["A1", "A2"],
    )
    again = refused(t, lambda: supply.receive_shipment(t.ctx, coordinator, t.study_id, number))
    assert isinstance(again, PreconditionFailed)
    shipping = refused(
        t,
        lambda: supply.ship_devices(t.ctx, t.actor("coordinator"), t.study_id, "S101", ["A1"]),
    )
    assert isinstance(shipping, PermissionDenied)
    twice = refused(
        t, lambda: supply.ship_devices(t.ctx, t.actor("manager"), t.study_id, "S101", ["A1"])
    )
    assert "A1 is not in depot stock (it was shipped)" in twice.message


def test_sup1_registration_refuses_bad_or_disagreeing_identifiers(trial: Trial) -> None:
    """SUP-1: registration by UDI checks each against the lot; duplicates and bad GTINs are
    refused with nothing registered."""
    t = trial
    manager = t.actor("manager")

    def register(**kw: Any) -> None:
        args: dict[str, Any] = {
            "lot_number": "LOTR",
            "model": "M",
            "gtin": GTIN,
            "manufacturer": "Maker",
            "expiry": EXPIRY,
        }
        args.update(kw)
        supply.register_lot(t.ctx, manager, t.study_id, **args)

    cases: dict[str, dict[str, Any]] = {
        "does not agree with lot LOTR": {"udis": [udi("R1", "LOTS")]},
        "expiry 2031-01-01": {"udis": [udi("R1", "LOTR", dt.date(2031, 1, 1))]},
        "listed twice": {"serials": ["R1", "R1"]},
        "already registered": {"serials": ["SN000123"]},
        "check digit": {"gtin": GTIN[:-1] + "9", "serials": ["R1"]},
        "at least one device": {},
        "1 to 20 printable": {"serials": ["has space"]},
    }
    for message, kw in cases.items():
        error = refused(t, partial(register, **kw))
        assert message in error.message, (message, error.message)
    error = refused(
        t,
        lambda: supply.register_lot(
            t.ctx,
            t.actor("coordinator"),
            t.study_id,
            lot_number="LOTR",
            model="M",
            gtin=GTIN,
            manufacturer="Maker",
            expiry=EXPIRY,
            serials=["R1"],
        ),
    )
    assert isinstance(error, PermissionDenied)
    register(udis=[udi("R1", "LOTR")], serials=["R2"])
    lots = {v.lot_number: v for v in supply.list_lots(t.ctx, manager, t.study_id)}
    assert lots["LOTR"].counts == {"at_depot": 2}


# --------------------------------------------------------------------------- SUP-2


def test_sup2_low_stock_warning_at_or_below_the_reorder_level(trial: Trial) -> None:
    """SUP-2: a supplied site is flagged when its usable stock is at or below the protocol's
    reorder level (flagship: 2), for its implanting team and the statistician; unsupplied
    sites are not flagged; blinded roles get no warning (usable stock drops with implants)."""
    t = trial
    t.clock.set_day(j.CONSENT)
    lot(t, "LOTA", ["A1", "A2", "A3"])
    spec = flagship().protocol.supply
    assert spec is not None and spec.reorder_level == 2
    stock(t, "S102", ["A1", "A2", "A3"])

    def flagged(role: str = "statistician") -> dict[str, int]:
        study_wide = ("manager", "monitor", "admin", "statistician", "dsmb")
        actor = t.actor(role) if role in study_wide else j.staff(t, role, "S102")
        return {w.site: w.on_hand for w in supply.stock_warnings(t.ctx, actor, t.study_id)}

    assert flagged() == {}
    supply.destroy_device(
        t.ctx, j.staff(t, "implanter", "S102"), t.study_id, "A1", "dropped on the floor"
    )
    assert flagged() == {"S102": 2}
    assert flagged("implanter") == {"S102": 2}
    assert flagged("dsmb") == {"S102": 2}
    for blinded in ("manager", "monitor", "admin", "coordinator"):
        assert flagged(blinded) == {}, blinded
    assert supply.stock_warnings(t.ctx, t.actor("implanter"), t.study_id) == []  # S101's
    assert "S101" not in flagged()  # 10 demo devices on hand


def test_sup2_reorder_level_per_site_and_protocol_without_supply(make_trial: Any) -> None:
    """SUP-2: a per-site reorder level overrides the default; a protocol without a supply
    section still loads, tracks no devices and warns about nothing."""
    text = flagship().text
    override = text.replace(
        "  reorder_level: 2\n", "  reorder_level: 2\n  site_reorder_levels: {S101: 25}\n"
    )
    assert override != text
    t = make_trial(parse_protocol(override))
    warnings = supply.stock_warnings(t.ctx, t.actor("implanter"), t.study_id)
    assert [(w.site, w.on_hand, w.reorder_level) for w in warnings] == [("S101", 10, 25)]
    plain = parse_protocol(text[: text.index("\nsupply:")] + "\n")
    assert plain.protocol.supply is None


def test_sup2_blinded_roles_see_received_and_in_transit_but_no_per_arm_usage(
    trial: Trial,
) -> None:
    """SUP-2, RAND-6: blinded roles see what a site received and what is in transit, no
    stock on hand, quarantine or devices that left stock (each drops with an implant), never
    which subject got a device; the statistician and the site's implanting team do."""
    t = trial
    t.clock.set_day(j.CONSENT)
    implanted = randomized_in(t, "S101", "INT")
    implant(t, implanted, j.device_udi(t))
    serial = j.device_udi(t).rsplit("(21)", 1)[1]
    supply.return_device(t.ctx, t.actor("implanter"), t.study_id, serial, "damaged box")
    lot(t, "LOTA", ["A1", "A2", "A3"])
    stock(t, "S101", ["A1", "A2"], receive=False)  # what the coordinator is to receive
    numbers = {implanted}
    for role in ("coordinator", "manager", "monitor", "admin"):
        view = supply.site_inventory(t.ctx, t.actor(role), t.study_id, "S101")
        assert not view.per_arm_usage_visible
        (site,) = view.sites
        assert (site.by_status, site.used) == (None, None)
        assert (site.on_hand, site.quarantined, site.expired) == (None, None, None)
        assert (site.left_stock, site.low_stock) == (None, None)
        assert (site.received, site.in_transit) == (10, 2)
        assert [(d.serial, d.status) for d in site.devices] == [
            ("A1", "in_transit"),
            ("A2", "in_transit"),
        ]
        text = json.dumps(view.to_dict())
        assert not any(n in text for n in numbers), role
        assert "implanted" not in text, role
    for role in ("manager", "monitor", "admin"):
        lots = supply.list_lots(t.ctx, t.actor(role), t.study_id)
        assert "implanted" not in json.dumps([dataclasses.asdict(v) for v in lots])
        assert {v.lot_number: v.counts for v in lots} == {
            "LOT2701": {"at_sites": 10},
            "LOTA": {"at_depot": 1, "in_transit": 2},
        }
    stat = supply.site_inventory(t.ctx, t.actor("statistician"), t.study_id, "S101").sites[0]
    assert stat.by_status == {"implanted": 1, "returned": 1, "destroyed": 0}
    assert (stat.on_hand, stat.left_stock, stat.received) == (8, 2, 10)
    impl = supply.site_inventory(t.ctx, t.actor("implanter"), t.study_id, "S101").sites[0]
    assert impl.used is not None and [u.subject for u in impl.used] == [implanted]
    with pytest.raises(NotFound):
        supply.site_inventory(t.ctx, t.actor("coordinator"), t.study_id, "S102")
    with pytest.raises(PermissionDenied):
        supply.site_inventory(t.ctx, t.actor("crc"), t.study_id)


# --------------------------------------------------------------------------- audit


def test_sup1_every_movement_has_an_audit_entry_without_subject_or_arm(trial: Trial) -> None:
    """SUP-1, AUD-1: each registration, shipment, receipt, return, destruction and
    quarantine of a device has its entry in the study's supply stream; every index procedure
    (of either arm) has one contentless entry, so the trail does not tell which subjects got
    a device; the chain verifies."""
    t = trial
    t.clock.set_day(j.CONSENT)
    lot(t, "LOTA", ["A1", "A2", "A3", "A4"])
    stock(t, "S101", ["A1", "A2", "A3"])
    supply.return_device(t.ctx, t.actor("implanter"), t.study_id, "A1", "excess")
    supply.destroy_device(t.ctx, t.actor("manager"), t.study_id, "A1", "returned, scrap")
    supply.destroy_device(t.ctx, t.actor("implanter"), t.study_id, "A2", "sterility")
    supply.quarantine_lot(t.ctx, t.actor("manager"), t.study_id, "LOTA", "recall")
    numbers = [j.procedure_done(t)[0] for _ in range(3)]
    with t.ctx.uow(readonly=True) as uow:
        entries = uow.session.scalars(
            select(AuditEntryRow).where(AuditEntryRow.stream == f"supply:{t.study_id}")
        ).all()
        events = uow.session.scalars(select(DeviceEventRow)).all()
        moves = [(e.kind, e.device_id) for e in events if e.kind not in ("implanted",)]
        implants = sum(1 for e in events if e.kind == "implanted")
        assert verify_chain(uow.session).ok
        uow.session.expunge_all()  # keep loaded values after the unit of work closes
    by_action: dict[str, list[str]] = {}
    for e in entries:
        by_action.setdefault(e.action, []).append(e.entity_id)
    kinds = {
        "registered": "register_device",
        "shipped": "ship_device",
        "received": "receive_device",
        "returned": "return_device",
        "destroyed": "destroy_device",
        "quarantined": "quarantine_device",
    }
    for kind, action in kinds.items():
        assert len(by_action.get(action, [])) == sum(1 for k, _ in moves if k == kind), kind
    assert sorted(by_action["destroy_device"]) == ["A1", "A2"]
    assert sorted(by_action["quarantine_device"]) == ["A3", "A4"]
    assert len(by_action["index_procedure_device"]) == 3 >= implants
    assert set(by_action["index_procedure_device"]) == {"concealed"}
    for e in entries:
        text = " ".join([e.action, e.entity_id, e.old, e.new, e.reason or ""])
        assert not any(n in text for n in numbers), e.action
        assert e.subject_id is None


def test_sup2_blinded_csv_export_leaves_out_per_device_use(trial: Trial, tmp_path: Path) -> None:
    """SUP-2, RAND-6: the date a device left stock matches a subject's procedure, so the
    blinded CSV export has lots and shipments but no device or device-event rows; the
    statistician's unblinded export has them."""
    t = trial
    t.clock.set_day(j.CONSENT)
    number = randomized_in(t, "S101", "INT")
    implant(t, number, j.device_udi(t))
    blinded = exports.export_csv(t.ctx, t.actor("monitor"), t.study_id, tmp_path / "b")
    assert {"device_lots.csv", "device_shipments.csv"} <= set(blinded.files)
    assert not {"devices.csv", "device_events.csv"} & set(blinded.files)
    full = exports.export_csv(
        t.ctx, t.actor("statistician"), t.study_id, tmp_path / "u", unblinded=True
    )
    assert {"devices.csv", "device_events.csv"} <= set(full.files)
    assert "implanted" in (tmp_path / "u" / "devices.csv").read_text(encoding="utf-8")
