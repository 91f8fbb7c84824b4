"""The audit trail through the API and the CLI (AUD-1, RAND-6): each kind of disclosure leaves
an entry a monitor can list, and the filters (action, user, subject, date range) work the same
in both adapters. The service and both databases: tests/integration/test_audit_trail.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_api_support import STUDY, Api
from tests.e2e.test_cli_export import Shell
from trialdesk.services import supply

DISCLOSED = {
    "disclose_export_csv",
    "disclose_export_odm",
    "disclose_export_sdtm",
    "disclose_endpoint_by_arm",
    "disclose_dsmb_report",
    "disclose_recall_list",
    "disclose_list_download",
}


def _audit(api: Api, reader: str, **params: Any) -> Any:
    return api.client.get(f"{STUDY}/audit", params=params, headers=api.headers(reader))


@pytest.mark.req("AUD-1", "RAND-6")
def test_aud1_api_lists_every_disclosure_kind_and_filters(trial: Trial) -> None:
    number, _arm = j.procedure_done(trial)
    api = Api(trial)
    stat = api.headers("statistician")
    for kind in ("csv", "odm", "sdtm"):
        made = api.client.post(f"{STUDY}/exports/{kind}", params={"unblinded": True}, headers=stat)
        assert made.status_code == 200, made.text
    assert api.client.get(f"{STUDY}/endpoints/safety", headers=stat).status_code == 200
    assert api.client.get(f"{STUDY}/reports/dsmb", headers=api.headers("dsmb")).status_code == 200
    recall = api.client.post(
        f"{STUDY}/devices/lots/{supply.DEMO_LOT}/recall", json={}, headers=stat
    )
    assert recall.status_code == 200, recall.text
    assert api.client.get(f"{STUDY}/lists/1/download", headers=stat).status_code == 200

    listed = _audit(api, "monitor", action="disclose_*", limit=500)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["blinded"] is True
    assert {e["action"] for e in body["items"]} == DISCLOSED
    for entry in body["items"]:
        assert entry["hash"] is None and entry["id"] is None and "." not in entry["at"]
        assert not {"INT", "CTRL"} & set(json.dumps(entry).replace('"', " ").split())

    by_dsmb = _audit(api, "monitor", user="dsmb").json()["items"]
    assert by_dsmb and {e["actor"] for e in by_dsmb} == {"dsmb"}
    own = _audit(api, "monitor", subject=number, limit=500).json()["items"]
    assert own and {e["subject"] for e in own} == {number}
    day = trial.clock.now.date().isoformat()
    today = _audit(api, "monitor", since=day, until=day, action="disclose_*").json()
    assert today["total"] == body["total"]
    assert _audit(api, "monitor", until="2000-01-01").json()["total"] == 0
    reversed_range = _audit(api, "monitor", since="2030-01-02", until="2030-01-01")
    assert reversed_range.status_code == 422
    assert _audit(api, "coordinator").status_code == 403
    full = _audit(api, "statistician", action="disclose_export_csv").json()
    assert full["blinded"] is False and full["items"][0]["hash"]


@pytest.mark.req("AUD-1")
def test_aud1_cli_audit_list_filters_and_shows_disclosures(tmp_path: Path) -> None:
    sh = Shell(tmp_path)
    made = sh.run("init", "--demo", "--demo-password", "export-demo-password", user=None)
    assert made.exit_code == 0, made.output
    out = tmp_path / "csv"
    assert (
        sh.run("export", "csv", "--out", str(out), "--unblinded", user="statistician").exit_code
        == 0
    )
    downloaded = sh.run(
        "lists", "download", "1", "--out", str(tmp_path / "list.csv"), user="statistician"
    )
    assert downloaded.exit_code == 0, downloaded.output
    assert "audited" in downloaded.stdout

    listed = sh.run("audit", "list", "--action", "disclose_*", "--json")
    assert listed.exit_code == 0, listed.output
    page = json.loads(listed.stdout)
    assert page["blinded"] is True
    assert {e["action"] for e in page["items"]} == {
        "disclose_export_csv",
        "disclose_list_download",
    }
    mine = json.loads(sh.run("audit", "list", "--by", "statistician", "--json").stdout)
    assert mine["items"] and {e["actor"] for e in mine["items"]} == {"statistician"}
    text = sh.run("audit", "list", "--action", "disclose_list_download")
    assert text.exit_code == 0 and "disclose_list_download" in text.stdout
    assert "1 of 1 entries (blinded view)" in text.stdout
    bad = sh.run("audit", "list", "--since", "yesterday")
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    refused = sh.run("audit", "list", user="coordinator")
    assert refused.exit_code == 1 and "read the audit trail" in refused.stderr
