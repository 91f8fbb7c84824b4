"""Returning or destroying a device (SUP-1, SUP-2): a role that may never do either is
refused by role before the device's state is looked at, on both databases (found by the
authorisation sweep: a monitor was told 'device ... is returned'). The blinded site
coordinator is one of them: whether a device on the shelf can still be returned tells whether
it was implanted."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.errors import PermissionDenied, PreconditionFailed
from trialdesk.services import exports, supply
from trialdesk.services.access import operator_actor


@pytest.mark.parametrize("role", ["coordinator", "monitor", "crc", "statistician", "dsmb", "admin"])
def test_sup1_removal_by_a_role_outside_the_supply_chain_is_refused_by_role(
    trial: Trial, role: str
) -> None:
    supply.stock_demo_site(trial.ctx, operator_actor(), trial.study_id)
    serial = supply.DEMO_SERIALS[0]
    implanter = trial.actor("implanter")
    supply.return_device(trial.ctx, implanter, trial.study_id, serial, "damaged packaging")
    with pytest.raises(PreconditionFailed):  # the implanting team is told the state
        supply.return_device(trial.ctx, implanter, trial.study_id, serial, "again")
    for remove in (supply.return_device, supply.destroy_device):
        for device in (serial, supply.DEMO_SERIALS[1]):  # returned, and held at the site
            with pytest.raises(PermissionDenied):
                remove(trial.ctx, trial.actor(role), trial.study_id, device, "no business here")


def test_sup2_the_blinded_manager_learns_no_site_devices_state(trial: Trial) -> None:
    """SUP-2: the manager destroys only at the depot; for a device at a site the answer is the
    same refusal whatever its state (held or implanted), so it tells no usage."""
    while not any(arm == "INT" for _n, arm in [j.procedure_done(trial)]):
        pass  # until one device is implanted
    manager = trial.actor("manager")
    stock = supply.site_inventory(trial.ctx, trial.actor("implanter"), trial.study_id, "S101")
    states = {d.serial: d.status for d in stock.sites[0].devices}
    assert "implanted" not in states.values()  # implanted devices are listed under 'used'
    used = stock.sites[0].used
    assert used is not None and len(used) == 1
    for serial in [used[0].serial, *states]:
        for remove in (supply.return_device, supply.destroy_device):
            with pytest.raises(PermissionDenied, match="implanting"):
                remove(trial.ctx, manager, trial.study_id, serial, "scrap")


def test_sup2_blinded_csv_export_has_lot_level_supply_entries_without_values(
    trial: Trial, tmp_path: Path
) -> None:
    """SUP-2/RAND-6: supply audit entries name device statuses and sites, and a lot
    quarantine writes one entry per device still on a shelf (the implanted one is missing):
    the blinded export keeps lot- and shipment-level entries without their values and no
    per-device entry; the unblinded statistician's export keeps every entry with values."""
    supply.stock_demo_site(trial.ctx, operator_actor(), trial.study_id)
    supply.quarantine_lot(trial.ctx, trial.actor("manager"), trial.study_id, "LOT2701", "recall")

    def supply_rows(actor_name: str, unblinded: bool) -> list[dict[str, str]]:
        out = tmp_path / f"{actor_name}-{unblinded}"
        exports.export_csv(
            trial.ctx, trial.actor(actor_name), trial.study_id, out, unblinded=unblinded
        )
        (path,) = out.rglob("audit_entries.csv")
        with path.open(newline="", encoding="utf-8") as handle:
            return [r for r in csv.DictReader(handle) if r["stream"].startswith("supply:")]

    blinded = supply_rows("monitor", False)
    assert blinded and all(r["old"] == r["new"] == "" for r in blinded)
    assert {r["entity"] for r in blinded} == {"device_lot", "device_shipment"}
    assert "quarantine_device_lot" in {r["action"] for r in blinded}
    assert not {"hash", "prev_hash", "id", "seq"} & set(blinded[0])
    unblinded = supply_rows("statistician", True)
    per_device = [r for r in unblinded if r["entity"] == "device"]
    assert len(unblinded) == len(blinded) + len(per_device)
    assert {"quarantine_device", "ship_device", "register_device"} <= {
        r["action"] for r in per_device
    }
    assert all(r["new"] for r in unblinded)
