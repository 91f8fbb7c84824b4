"""SUP-2, RAND-6: nothing a blinded role sees of device supply changes when a device is used.

Only implant-arm subjects get a device. At a site where every randomized subject is in the
implant arm, any count that drops at an implant would tell a blinded reader each subject's
arm. So every view a blinded role has of device supply (the services' results, the API's
JSON, the Devices and Supply pages) must read the same, byte for byte, before and after an
implant, and after a device used but not released; the implanting team's view, which may
show arms, changes (the control that the procedures did use devices)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_api_support import Api
from tests.e2e.test_web_pages import signed_in
from trialdesk.domain.errors import TrialError
from trialdesk.services import followup, supply
from trialdesk.services.access import Actor

BLINDED = ("coordinator", "manager", "monitor", "admin")
SITES = ("S102", "S103", "S104", "S105")
Snapshot = dict[str, str]


def _first_implant_site(t: Trial) -> tuple[str, str]:
    """A site whose only randomized subject is in the implant arm (all of them, so an
    implant count there would unblind every subject of the site)."""
    for site in SITES:
        number, arm = j.randomized(t, site)
        if arm == "INT":
            return site, number
    raise AssertionError(f"no site of {SITES} randomized its first subject to INT")


def _next_implant_subject(t: Trial, site: str) -> str:
    for _ in range(12):
        number, arm = j.randomized(t, site)
        if arm == "INT":
            return number
    raise AssertionError(f"no INT subject at {site} in 12 randomizations")


def _service(call: Callable[[], Any]) -> str:
    """A service result as text, or the refusal it gives (which must not change either)."""
    try:
        result = call()
    except TrialError as exc:
        return f"refused {type(exc).__name__}: {exc.message}"
    items = result if isinstance(result, list) else [result]
    return json.dumps([item.to_dict() for item in items], sort_keys=True)


def _snapshot(
    t: Trial, site: str, actor: Actor, api: Api, username: str, web: TestClient
) -> Snapshot:
    """Everything ``actor`` can read of device supply, through every adapter."""
    ctx, study = t.ctx, t.study_id
    views: Snapshot = {
        "inventory": _service(lambda: supply.site_inventory(ctx, actor, study)),
        "inventory at site": _service(lambda: supply.site_inventory(ctx, actor, study, site)),
        "lots": _service(lambda: supply.list_lots(ctx, actor, study)),
        "warnings": _service(lambda: supply.stock_warnings(ctx, actor, study)),
        "shipments": _service(lambda: supply.list_shipments(ctx, actor, study)),
    }
    for path, params in (
        ("/devices/inventory", {}),
        ("/devices/inventory", {"site": site}),
        ("/devices/lots", {}),
        ("/devices/stock-warnings", {}),
        ("/devices/shipments", {}),
    ):
        response = api.get(username, path, **params)
        views[f"api {path} {params}"] = f"{response.status_code} {response.text}"
    for page in ("/devices", "/supply"):
        response = web.get(page)
        views[f"page {page}"] = f"{response.status_code} {response.text}"
    return views


def _changed(before: Snapshot, after: Snapshot) -> list[str]:
    return [name for name in before if before[name] != after[name]]


def test_sup2_rand6_blinded_device_views_identical_before_and_after_an_implant(
    trial: Trial,
) -> None:
    """SUP-2, RAND-6: at a site whose randomized subjects are all implant-arm, an implant
    and a device used but not released leave every blinded role's inventory, lots,
    re-supply warnings and shipments (service, API JSON, /devices and /supply) identical;
    the site's implanting team sees its stock drop and a re-supply warning appear."""
    t = trial
    site, first = _first_implant_site(t)
    manager = t.actor("manager")
    supply.register_lot(
        t.ctx,
        manager,
        t.study_id,
        lot_number="LOTB",
        model="Coronary-sinus implant XE",
        gtin=supply.DEMO_GTIN,
        manufacturer="Example Devices Inc.",
        expiry=j.PROCEDURE.replace(year=j.PROCEDURE.year + 3),
        serials=["B1", "B2", "B3", "B4", "B5"],
    )
    coordinator = j.staff(t, "coordinator", site)
    implanter = j.staff(t, "implanter", site)
    received = supply.ship_devices(t.ctx, manager, t.study_id, site, ["B1", "B2", "B3"])
    supply.receive_shipment(t.ctx, coordinator, t.study_id, received.number)
    supply.ship_devices(t.ctx, manager, t.study_id, site, ["B4"])  # stays in transit
    t.clock.set_day(j.PROCEDURE)

    api = Api(t)
    actors = {role: t.actor(role) for role in BLINDED if role != "coordinator"}
    actors.update(coordinator=coordinator, implanter=implanter)
    readers = {
        role: (actor, actor.username, signed_in(t, actor.username))
        for role, actor in actors.items()
    }

    def everyone() -> dict[str, Snapshot]:
        t.clock.set_day(j.PROCEDURE)  # same instant, same tokens and sessions
        return {
            role: _snapshot(t, site, actor, api, username, web)
            for role, (actor, username, web) in readers.items()
        }

    def use(number: str, serial: str, *, released: bool) -> None:
        (values,) = fd.implant_procedure_forms(udi=serial, released=released).values()
        followup.record_procedure(t.ctx, implanter, t.study_id, number, values=values)

    before = everyone()
    # the blinded views are not empty: each shows what a blinded role works with
    assert '"received": 3' in before["coordinator"]["inventory at site"]
    assert "B4" in before["coordinator"]["page /devices"]
    assert '"at_sites": 3' in before["manager"]["lots"]
    assert received.number in before["manager"]["page /supply"]

    use(first, "B1", released=True)
    after = everyone()
    for role in BLINDED:
        assert _changed(before[role], after[role]) == [], role
    control = _changed(before["implanter"], after["implanter"])
    assert {"inventory at site", "warnings", "page /devices"} <= set(control), control
    assert f'"site": "{site}"' in after["implanter"]["warnings"]  # 2 left: reorder level 2

    second = _next_implant_subject(t, site)
    before = everyone()
    use(second, "B2", released=False)  # attempted, not released: quarantined at the site
    after = everyone()
    for role in BLINDED:
        assert _changed(before[role], after[role]) == [], role
    assert '"quarantined": 1' in after["implanter"]["inventory at site"]
    assert '"quarantined": 0' in before["implanter"]["inventory at site"]
