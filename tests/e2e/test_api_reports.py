"""Reports and exports over HTTP on SQLite and PostgreSQL: each report route for a role that
may read it (REP-1, REP-2, REP-3), the CONSORT figure as SVG and PNG, the DSMB report for
unblinded roles only, exports as zip archives (EXP-1), and no arm anywhere for a blinded
role (RAND-6), checked in every file of every archive."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from tests.conftest import Trial
from tests.e2e.test_api_blinding import BLINDED, leaks
from tests.e2e.test_api_support import STUDY, Api, problem_code
from tests.integration.test_consort import Dataset, build_dataset

JSON_REPORTS = (
    "/reports/enrolment?simulations=500&seed=1",
    "/reports/forecast?simulations=500&seed=1",
    "/reports/consort",
    "/reports/compliance",
    "/reports/screening-log",
    "/reports/deviations",
    "/reports/queries",
    "/reports/crc",
    "/reports/unblinding-events",
)


def _data(trial: Trial) -> tuple[Dataset, Api]:
    """The CONSORT dataset (14 assessed, 5 screen failures, 7 randomized, visits on time, early,
    late and missed, a query, an emergency unblinding); the clock is left after the last."""
    return trial.prepared(build_dataset), Api(trial)


def _export(api: Api, user: str, kind: str, *, unblinded: bool = False) -> Any:
    return api.client.post(
        f"{STUDY}/exports/{kind}",
        headers=api.headers(user),
        params={"unblinded": str(unblinded).lower()},
    )


def _unzipped(response: Any) -> dict[str, bytes]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_rep1_enrolment_and_forecast_for_the_manager(trial: Trial) -> None:
    _dataset, api = _data(trial)
    report = api.get("manager", "/reports/enrolment", simulations=500, seed=7)
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["registered"], body["randomized"]) == (14, 7)
    assert {"key": "S101", "registered": 13, "randomized": 6} in body["by_site"]
    assert {"key": "S102", "registered": 1, "randomized": 1} in body["by_site"]
    assert sum(r["randomized"] for r in body["by_region"]) == 7
    assert body["by_month"][-1]["cumulative_randomized"] == 7
    assert body["forecast"]["forecast"]["remaining"] == body["target"] - 7
    forecast = api.get("manager", "/reports/forecast", simulations=500, seed=7).json()
    assert forecast["forecast"] == body["forecast"]["forecast"]  # same seed, same answer
    assert {s["code"]: s["randomized"] for s in forecast["sites"]}["S101"] == 6
    refused = api.get("coordinator", "/reports/enrolment")
    assert refused.status_code == 403 and problem_code(refused) == "forbidden"
    too_many = api.get("manager", "/reports/forecast", simulations=10**7)
    assert too_many.status_code == 422 and problem_code(too_many) == "validation-failed"


def test_rep2_consort_pooled_for_blinded_by_arm_for_the_statistician(trial: Trial) -> None:
    data, api = _data(trial)
    pooled = api.get("manager", "/reports/consort").json()
    assert (pooled["assessed"], pooled["randomized"], pooled["in_screening"]) == (14, 7, 2)
    assert pooled["excluded"]["crc_rejected"] == 1 and pooled["arms"] is None
    by_arm = api.get("statistician", "/reports/consort").json()
    allocated = {a["code"]: a["allocated"] for a in by_arm["arms"]}
    # issue 16: CONSORT 2025 phases; the primary safety set on the intervention arm only
    assert pooled["phases"] == ["Enrolment"]
    assert by_arm["phases"] == ["Enrolment", "Allocation", "Follow-up", "Analysis"]
    safety = {a["code"]: a["analysed_safety"] for a in by_arm["arms"]}
    assert safety["CTRL"] is None and isinstance(safety["INT"], int)
    assert allocated == {arm: list(data.arms.values()).count(arm) for arm in ("INT", "CTRL")}
    svg = api.get("manager", "/reports/consort", format="svg")
    assert svg.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in svg.content and b"Assessed for eligibility (n=14)" in svg.content
    assert not leaks(svg.text)
    assert leaks(api.get("statistician", "/reports/consort", format="svg").text)
    png = api.get("monitor", "/reports/consort", format="png")
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    unknown = api.get("manager", "/reports/consort", format="gif")
    assert unknown.status_code == 422 and problem_code(unknown) == "validation-failed"
    refused = api.get("coordinator", "/reports/consort", format="svg")
    assert refused.status_code == 403 and problem_code(refused) == "forbidden"


def test_rep3_operational_reports_each_for_a_permitted_role(trial: Trial) -> None:
    data, api = _data(trial)
    log = api.get("monitor", "/reports/screening-log", limit=5, offset=10).json()
    assert (log["total"], len(log["items"]), log["offset"]) == (14, 4, 10)
    reasons = [
        r["screen_failure_reason"]
        for r in api.get("manager", "/reports/screening-log").json()["items"]
        if r["screen_failure_reason"]
    ]
    assert sorted(reasons) == sorted(
        ["criteria_not_met", "crc_rejected", "anatomy_unsuitable", "declined", "other"]
    )
    totals = api.get("monitor", "/reports/compliance").json()["totals"]
    m1 = next(r for r in totals if r["visit"] == "M1")
    assert (m1["site"], m1["on_time"], m1["early"], m1["late"], m1["missed"]) == ("ALL", 2, 1, 0, 1)
    own = api.get("coordinator", "/reports/compliance").json()["rows"]
    assert {r["site"] for r in own} == {"S101"}  # a coordinator sees their own site (ACC-1)
    deviations = api.get("manager", "/reports/deviations", limit=2).json()
    assert deviations["total"] == 5 and len(deviations["items"]) == 2
    kinds = {
        (d["subject"], d["kind"]) for d in api.get("monitor", "/reports/deviations").json()["items"]
    }
    assert (data.roles["in_error"], "randomized_in_error") in kinds
    assert (data.roles["s102"], "visit_early") in kinds
    (query,) = api.get("manager", "/reports/queries").json()["items"]
    assert (query["subject"], query["visit"], query["field"]) == (
        data.roles["visits"],
        "M1",
        "nyha_class",
    )
    crc = api.get("crc", "/reports/crc").json()
    assert {k["kind"]: k["decided"] for k in crc["by_kind"]}["eligibility"] == 10
    assert crc["decisions"] == {"approve": 9, "reject": 1}
    events = api.get("monitor", "/reports/unblinding-events").json()["items"]
    assert [(e["kind"], e["subject"], e["by"]) for e in events] == [
        ("emergency", data.roles["visits"], "coordinator"),
        ("trial_requested", None, "manager"),
    ]
    refused = api.get("coordinator", "/reports/crc")
    assert refused.status_code == 403 and problem_code(refused) == "forbidden"


def test_rep3_rand6_dsmb_report_for_unblinded_roles_only(trial: Trial) -> None:
    _dataset, api = _data(trial)
    for user in ("statistician", "dsmb"):
        report = api.get(user, "/reports/dsmb")
        assert report.status_code == 200, report.text
        assert report.headers["content-type"].startswith("text/html")
        assert leaks(report.text)  # by arm: the labels are the point
    for user in BLINDED:
        refused = api.get(user, "/reports/dsmb")
        assert refused.status_code == 403, (user, refused.text)
        assert problem_code(refused) == "blinded"
        assert not leaks(refused.text)


def test_exp1_exports_are_zip_archives_of_the_services_files(trial: Trial) -> None:
    _dataset, api = _data(trial)
    csv_files = _unzipped(_export(api, "monitor", "csv"))
    assert "subjects.csv" in csv_files and "randomizations.csv" in csv_files
    assert csv_files["randomizations.csv"].count(b"\n") == 8  # header + seven randomizations
    odm = _unzipped(_export(api, "manager", "odm"))
    assert list(odm) == ["odm.xml", "odm_audit.xml"] and b'ODMVersion="1.3.2"' in odm["odm.xml"]
    sdtm = _unzipped(_export(api, "statistician", "sdtm"))
    assert {"dm.xpt", "ds.xpt", "sv.xpt", "define.xml", "define.html", "acrf.html"} <= set(sdtm)
    assert "ta.xpt" not in sdtm  # blinded: no trial arms dataset
    full = _unzipped(_export(api, "statistician", "sdtm", unblinded=True))
    assert "ta.xpt" in full
    adam = _unzipped(_export(api, "statistician", "adam"))
    assert {"adsl.xpt", "admae.xpt", "adhce.xpt", "define.xml"} <= set(adam)
    arms = _unzipped(_export(api, "statistician", "csv", unblinded=True))["randomizations.csv"]
    assert arms.splitlines()[0].endswith(b",arm") and leaks(arms.decode())


def test_exp1_rand6_unblinded_export_refused_for_the_monitor(trial: Trial) -> None:
    _dataset, api = _data(trial)
    for kind in ("csv", "odm", "sdtm"):
        refused = _export(api, "monitor", kind, unblinded=True)
        assert refused.status_code == 403, refused.text
        assert problem_code(refused) == "blinded"
    coordinator = _export(api, "coordinator", "csv")
    assert coordinator.status_code == 403 and problem_code(coordinator) == "forbidden"


def test_rand6_no_report_or_export_shows_an_arm_to_a_blinded_role(trial: Trial) -> None:
    """Every JSON report, the SVG figure and every file of every export a blinded role may
    have: no arm code, label or arm-specific procedure form."""
    _dataset, api = _data(trial)
    shown = archives = 0
    for user in BLINDED:
        for path in (*JSON_REPORTS, "/reports/consort?format=svg"):
            response = api.client.get(STUDY + path, headers=api.headers(user))
            assert response.status_code in (200, 403), (user, path, response.text)
            assert not leaks(response.text), (user, path, leaks(response.text))
            shown += response.status_code == 200
            if path == "/reports/consort" and response.status_code == 200:
                assert response.json()["arms"] is None
        for kind in ("csv", "odm", "sdtm"):
            response = _export(api, user, kind)
            if response.status_code == 403:
                continue
            for name, content in _unzipped(response).items():
                text = content.decode("latin-1")  # XPORT is bytes; arm text would be ASCII
                assert not leaks(text), (user, kind, name, leaks(text))
            archives += 1
    assert shown >= 25 and archives == 6  # manager and monitor may each export all three
