"""Device accountability through the adapters (SUP-1, SUP-2, RAND-6): the API routes, the
`trialdesk devices` commands and the pages call the same services, refuse the same way and
show blinded users no per-arm usage."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.e2e.test_api_support import Api, problem_code
from tests.e2e.test_web_pages import csrf_of, signed_in, web_values
from trialdesk.cli.main import build_app
from trialdesk.services import supply
from trialdesk.services.queries import get_subject

LOT = {
    "lot_number": "LOTW",
    "model": "Coronary-sinus implant XE",
    "gtin": supply.DEMO_GTIN,
    "manufacturer": "Example Devices Inc.",
    "expiry": "2030-06-30",
    "serials": ["W1", "W2", "W3"],
}


def _int_subject(t: Trial) -> str:
    for _ in range(12):
        number, arm = j.randomized(t)
        if arm == "INT":
            return number
    raise AssertionError("no INT subject in 12 randomizations")


def test_sup1_sup2_api_lot_ship_receive_inventory_and_recall(trial: Trial) -> None:
    """SUP-1/2 over HTTP: the manager registers and ships, the site coordinator receives;
    the coordinator's inventory has no per-arm usage, the statistician's does; the recall
    list is refused to the coordinator and signed by the manager."""
    api = Api(trial)
    trial.clock.set_day(j.CONSENT)
    made = api.post("manager", "/devices/lots", LOT)
    assert made.status_code == 201, made.text
    assert made.json()["counts"] == {"at_depot": 3}
    bad = api.post("manager", "/devices/lots", {**LOT, "lot_number": "LOTV", "serials": ["W1"]})
    assert bad.status_code == 422 and problem_code(bad) == "validation-failed"
    refused = api.post("coordinator", "/devices/shipments", {"site": "S101", "serials": ["W1"]})
    assert refused.status_code == 403
    shipped = api.post("manager", "/devices/shipments", {"site": "S101", "serials": ["W1", "W2"]})
    assert shipped.status_code == 201, shipped.text
    number = shipped.json()["number"]
    received = api.post("coordinator", f"/devices/shipments/{number}/receive", {})
    assert received.json()["status"] == "received", received.text

    subject = _int_subject(trial)
    (values,) = fd.implant_procedure_forms(udi="W3").values()
    wrong = api.post("implanter", f"/subjects/{subject}/procedure", {"values": values})
    assert wrong.status_code == 409 and problem_code(wrong) == "device-unavailable"
    values["device_udi"] = "W1"
    done = api.post("implanter", f"/subjects/{subject}/procedure", {"values": values})
    assert done.json()["procedure_done"] is True, done.text

    blinded = api.get("coordinator", "/devices/inventory", site="S101").json()
    (site,) = blinded["sites"]
    assert (site["by_status"], site["used"], site["on_hand"], site["left_stock"]) == (
        None,
        None,
        None,
        None,
    )
    assert (site["received"], site["devices"]) == (12, [])
    assert subject not in json.dumps(blinded)
    stat = api.get("statistician", "/devices/inventory", site="S101").json()
    assert [u["subject"] for u in stat["sites"][0]["used"]] == [subject]
    assert api.post("coordinator", "/devices/lots/LOTW/recall", {}).status_code == 403
    unsigned = api.post("manager", "/devices/lots/LOTW/recall", {"reason": "FSCA"})
    assert unsigned.status_code == 422
    signed = api.post(
        "manager", "/devices/lots/LOTW/recall", {"reason": "FSCA", "password": PASSWORD}
    )
    assert [e["subject"] for e in signed.json()["subjects"]] == [subject], signed.text
    assert api.get("manager", "/devices/stock-warnings").json() == []  # blinded: none
    warnings = api.get("implanter", "/devices/stock-warnings").json()
    assert {w["site"] for w in warnings} == set()  # S101 still holds the demo stock


def test_sup1_web_procedure_page_lists_stock_and_refuses_an_unavailable_device(
    trial: Trial,
) -> None:
    """SUP-1 on the pages: the implant form lists the site's devices; naming one in transit
    is shown on the form with nothing saved; the coordinator receives on the Devices page;
    the manager's supply page has no per-arm usage."""
    trial.clock.set_day(j.CONSENT)
    supply.register_lot(
        trial.ctx,
        trial.actor("manager"),
        trial.study_id,
        lot_number="LOTW",
        model="M",
        gtin=supply.DEMO_GTIN,
        manufacturer="Maker",
        expiry=fd_date("2030-06-30"),
        serials=["W1"],
    )
    shipment = supply.ship_devices(
        trial.ctx, trial.actor("manager"), trial.study_id, "S101", ["W1"]
    )
    number = _int_subject(trial)
    c = signed_in(trial, "implanter")
    page = c.get(f"/subjects/{number}/procedure")
    assert fd.DEMO_UDI in page.text and 'id="device-stock"' in page.text
    forms = fd.implant_procedure_forms(udi="W1")
    response = c.post(
        f"/subjects/{number}/procedure",
        data={**web_values(forms), "csrf_token": csrf_of(c)},
    )
    assert response.status_code == 409 and "in transit" in response.text
    coordinator = trial.actor("coordinator")
    assert not get_subject(trial.ctx, coordinator, trial.study_id, number).procedure_done

    coord = signed_in(trial, "coordinator")
    inventory = coord.get("/devices")
    assert shipment.number in inventory.text
    done = coord.post(
        "/devices/receive", data={"shipment": shipment.number, "csrf_token": csrf_of(coord)}
    )
    assert done.status_code == 303
    response = c.post(
        f"/subjects/{number}/procedure",
        data={**web_values(forms), "csrf_token": csrf_of(c)},
    )
    assert response.status_code == 303, response.text
    assert number not in coord.get("/devices").text
    manager = signed_in(trial, "manager")
    page = manager.get("/supply")
    assert page.status_code == 200 and "LOTW" in page.text and number not in page.text
    assert coord.get("/supply").status_code == 403
    form = {"lot_number": "LOTW", "reason": "FSCA 2027-02", "csrf_token": csrf_of(manager)}
    wrong = manager.post("/supply/recall", data={**form, "password": "wrong"})
    assert wrong.status_code == 422 and number not in wrong.text
    signed = manager.post("/supply/recall", data={**form, "password": PASSWORD})
    assert signed.status_code == 200 and f"{number}, site S101" in signed.text


def fd_date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def test_sup1_cli_devices_commands(tmp_path: Path) -> None:
    """SUP-1/2 at the shell: init --demo stocks the first site; lot add, ship, receive,
    inventory, stock, return, destroy, quarantine and recall; refusals are one line."""
    env = {
        "TRIALDESK_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        "TRIALDESK_ALLOCATION_KEY_FILE": str(tmp_path / "k.key"),
        "TRIALDESK_PASSWORD": "cli-devices-demo",
        "TRIALDESK_CLOCK": "2027-01-25T12:00:00Z",
    }

    def run(*args: str, user: str | None = None) -> Result:
        return CliRunner().invoke(build_app(), list(args), env={**env, "TRIALDESK_USER": user})

    def ok(*args: str, user: str) -> Any:
        result = run(*args, "--json", user=user)
        assert result.exit_code == 0, (args, result.stderr)
        return json.loads(result.stdout)

    init = run("init", "--demo", "--demo-password", "cli-devices-demo", "--json")
    assert init.exit_code == 0, init.stderr
    assert json.loads(init.stdout)["demo_devices"] == 10
    lot = ok(
        "devices", "lot", "add", "LOTC", "--model", "M", "--gtin", supply.DEMO_GTIN,
        "--manufacturer", "Maker", "--expiry", "2030-01-31", "--serial", "C1,C2,C3",
        user="manager",
    )  # fmt: skip
    assert lot["counts"] == {"at_depot": 3}
    shipment = ok("devices", "ship", "S102", "C1", "C2", "C3", user="manager")
    refused = run("devices", "receive", shipment["number"], user="coordinator")
    assert refused.exit_code == 1 and refused.stderr.startswith("error:")
    assert "Traceback" not in refused.output
    stock = ok("devices", "inventory", "--site", "S101", user="coordinator")
    assert stock["sites"][0]["on_hand"] is None and stock["sites"][0]["used"] is None
    assert stock["sites"][0]["received"] == 10
    assert (
        ok("devices", "inventory", "--site", "S101", user="implanter")["sites"][0]["on_hand"] == 10
    )
    assert ok("devices", "stock", user="manager") == []  # blinded: no re-supply warnings
    warned = ok("devices", "stock", user="statistician")
    assert [(w["site"], w["on_hand"], w["in_transit"]) for w in warned] == [("S102", 0, 3)]
    refused = run("devices", "return", "SN000123", "--reason", "dented box", user="coordinator")
    assert refused.exit_code == 1 and "implanting" in refused.stderr  # SUP-2
    ok("devices", "return", "SN000123", "--reason", "dented box", user="implanter")
    ok("devices", "destroy", "SN000124", "--reason", "dropped", user="implanter")
    text = run("devices", "inventory", "--site", "S101", user="implanter")
    assert "on hand 8" in text.stdout and "left stock 2" in text.stdout
    text = run("devices", "inventory", "--site", "S101", user="coordinator")
    assert "received 10, in transit 0" in text.stdout and "on hand" in text.stdout
    assert "not shown to blinded roles" in text.stdout and "left stock" not in text.stdout
    quarantined = ok("devices", "quarantine", "LOTC", "--reason", "recall", user="manager")
    assert quarantined["counts"] == {"in_transit": 3}  # blinded: by place
    blind_stock = run("devices", "stock", user="coordinator")
    assert "no re-supply warning" in blind_stock.stdout
    recall = ok("devices", "recall", "LOT2701", user="statistician")
    assert recall["subjects"] == []
    blinded = run("devices", "recall", "LOT2701", user="monitor")
    assert blinded.exit_code == 1 and "[forbidden]" in blinded.stderr
