"""The device list (issue 14, SUP-2, RAND-6): search, filters, sorting and pages done by the
service in the repository; a blinded role is offered and accepted only the state it may see
(in transit), so neither a filter nor a count tells it what was implanted."""

from __future__ import annotations

import datetime as dt
import re

from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_web_pages import signed_in
from trialdesk.services import supply

SERIALS = [f"W{n:02d}" for n in range(1, 31)]
ROW = re.compile(r"<tr><td>(W\d\d|SN\d+)</td>")


def _stock(trial: Trial) -> None:
    """30 devices of lot LOTW in transit to S101, next to the 10 demo devices held there."""
    trial.clock.set_day(j.CONSENT)
    manager = trial.actor("manager")
    supply.register_lot(
        trial.ctx,
        manager,
        trial.study_id,
        lot_number="LOTW",
        model="M",
        gtin=supply.DEMO_GTIN,
        manufacturer="Maker",
        expiry=dt.date(2030, 6, 30),
        serials=SERIALS,
    )
    supply.ship_devices(trial.ctx, manager, trial.study_id, "S101", SERIALS)


def _serials(html: str) -> list[str]:
    return ROW.findall(html)


def test_sup2_device_list_search_filter_sort_and_page_two(trial: Trial) -> None:
    """SUP-2, RAND-6: the coordinator (blinded) lists only devices in transit, by serial, 25 a
    page (page 2 holds the last 5); search by part of a serial, sort descending, filter by
    lot; a state it may not see is not offered and is refused with one message. The
    implanting team sees the site's shelf too and may filter by it."""
    _stock(trial)
    coord = signed_in(trial, "coordinator")
    first = coord.get("/devices", params={"per_page": "25"})
    assert first.status_code == 200
    assert _serials(first.text) == SERIALS[:25]
    assert "Showing 1–25 of 30" in first.text
    assert 'value="at_site"' not in first.text and 'value="in_transit"' in first.text
    second = coord.get("/devices", params={"per_page": "25", "page": "2"})
    assert _serials(second.text) == SERIALS[25:] and "Showing 26–30 of 30" in second.text
    found = coord.get("/devices", params={"q": "W0"})
    assert _serials(found.text) == SERIALS[:9]
    backwards = coord.get("/devices", params={"order": "serial", "dir": "desc"})
    assert _serials(backwards.text) == SERIALS[::-1]
    assert _serials(coord.get("/devices", params={"lot": supply.DEMO_LOT}).text) == []
    assert _serials(coord.get("/devices", params={"lot": "LOTW"}).text) == SERIALS
    for hidden in ("at_site", "quarantined", "implanted"):
        refused = coord.get("/devices", params={"status": hidden})
        assert refused.status_code == 422 and "status must be one of in_transit" in refused.text

    implanter = signed_in(trial, "implanter")
    shelf = implanter.get("/devices", params={"status": "at_site", "per_page": "100"})
    assert shelf.status_code == 200
    assert _serials(shelf.text) == list(supply.DEMO_SERIALS)
    everything = implanter.get("/devices", params={"order": "lot", "per_page": "100"})
    assert _serials(everything.text) == [*supply.DEMO_SERIALS, *SERIALS]
    by_lot = implanter.get("/devices", params={"q": "LOT27", "per_page": "100"})
    assert _serials(by_lot.text) == list(supply.DEMO_SERIALS)
