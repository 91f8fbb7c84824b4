"""The API and CLI of issue 15's data quality, queries, consent and exits (REC-6..REC-10):
each route and command calls its service; bad input is one clear message (a problem
document, or one line on stderr with exit 1) and changes nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_api_support import Api, problem_code
from trialdesk.cli.main import build_app

PASSWORD = "records-demo-pw"


def test_rec6_rec7_api_rule_query_assigned_answered_with_a_code_and_verified(
    trial: Trial,
) -> None:
    """REC-6, REC-7 through the API: a visit saved with an impossible echo opens the rule's
    query; the monitor assigns it, the coordinator confirms it with a code, the monitor
    verifies; the report, the exclusion and the missing-data report answer."""
    api = Api(trial)
    number, _ = j.procedure_done(trial)
    on = j.visit_dates()["M1"]
    trial.clock.set_day(on)
    forms = fd.follow_up_forms(on.isoformat())
    forms["follow_up"]["lvesd_mm"] = 70.0
    saved = api.post(
        "coordinator",
        f"/subjects/{number}/visits/M1",
        {"visit_date": on.isoformat(), "forms": forms},
    )
    assert saved.status_code == 200, saved.text
    [query] = api.get("monitor", "/queries").json()["items"]
    assert (query["rule"], query["assigned_to"], query["origin"]) == ("DQ-8", "site S101", "rule")

    bad = api.post("monitor", f"/queries/{query['id']}/assign", {"assignee": "statistician"})
    assert bad.status_code == 422 and problem_code(bad) == "validation-failed"
    assigned = api.post("monitor", f"/queries/{query['id']}/assign", {"assignee": "coordinator"})
    assert assigned.json()["assignee"] == "coordinator"
    wrong = api.post(
        "coordinator", f"/queries/{query['id']}/answer", {"text": "ok", "response": "maybe"}
    )
    assert wrong.status_code == 422 and "unknown response 'maybe'" in wrong.json()["detail"]
    answered = api.post(
        "coordinator",
        f"/queries/{query['id']}/answer",
        {"text": "dilated ventricle, confirmed on source", "response": "confirmed"},
    )
    assert answered.json()["response"] == "confirmed"
    verified = api.post("monitor", f"/queries/{query['id']}/verify")
    assert verified.json()["status"] == "verified"
    again = api.post("monitor", f"/queries/{query['id']}/verify")
    assert again.status_code == 409 and problem_code(again) == "query-verified"

    report = api.get("monitor", "/quality").json()["items"]
    assert [d["rule"] for d in report] == ["DQ-8"]
    excluded = api.post(
        "monitor",
        f"/subjects/{number}/quality-exclusions",
        {"rule": "DQ-8", "form": "follow_up", "visit": "M1", "reason": "core lab confirmed"},
    )
    assert excluded.status_code == 201, excluded.text
    run = api.post("monitor", "/quality/run", {}).json()
    assert run["opened"] == [] and run["discrepancies"][0]["excluded"] == "core lab confirmed"
    missing = api.get("coordinator", "/reports/missing-data").json()["items"]
    assert any(r["visit"] == "M1" and r["complete"] == 1 for r in missing)
    assert api.post("coordinator", "/quality/run", {}).status_code == 403


def test_rec8_rec9_api_consents_and_exit_form(trial: Trial) -> None:
    """REC-8, REC-9 through the API: an unknown consent version is a 422 naming the versions;
    the subject's consents are listed; a withdrawal on its form needs its kind."""
    api = Api(trial)
    number = j.register(trial)
    bad = api.post(
        "coordinator",
        f"/subjects/{number}/consent",
        {"consent_date": fd.CONSENT_DATE, "consent_version": "NO-SUCH-ICF v99"},
    )
    assert bad.status_code == 422 and "versions: v1.0" in bad.json()["detail"]
    ok = api.post(
        "coordinator",
        f"/subjects/{number}/consent",
        {"consent_date": fd.CONSENT_DATE, "consent_version": "v1.0", "document": "ICF"},
    )
    assert ok.status_code == 200, ok.text
    consents = api.get("coordinator", f"/subjects/{number}/consents").json()
    assert consents["consents"][0]["version"] == "v1.0" and consents["due"] == []
    twice = api.post(
        "coordinator",
        f"/subjects/{number}/reconsent",
        {"signed_on": fd.CONSENT_DATE, "version": "v1.0"},
    )
    assert twice.status_code == 409 and problem_code(twice) == "consent-already-signed"
    assert api.get("monitor", "/consent-worklist").json()["items"] == []

    values = {"withdrawal_date": fd.CONSENT_DATE, "reason": "subject_decision"}
    no_kind = api.post(
        "coordinator", f"/subjects/{number}/exit-form", {"exit": "withdrawal", "values": values}
    )
    assert no_kind.status_code == 422 and "withdraws from" in no_kind.json()["detail"]
    withdrawn = api.post(
        "coordinator",
        f"/subjects/{number}/exit-form",
        {"exit": "withdrawal", "values": values, "kind": "all_contact"},
    )
    assert withdrawn.json()["state"] == "withdrawn"


# --- the shell ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("records")
    env = {
        "TRIALDESK_DATABASE_URL": f"sqlite:///{tmp / 't.db'}",
        "TRIALDESK_ALLOCATION_KEY_FILE": str(tmp / "k.key"),
        "TRIALDESK_PASSWORD": PASSWORD,
        "TRIALDESK_CLOCK": f"{fd.CONSENT_DATE}T12:00:00Z",
    }
    result = CliRunner().invoke(
        build_app(), ["init", "--demo", "--demo-password", PASSWORD], env=env
    )
    assert result.exit_code == 0, result.output
    result = run(env, "subject", "register", "--site", "S101", "--user", "coordinator")
    assert result.exit_code == 0, result.output
    return env


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args), env=env)


def _rows(env: dict[str, str]) -> dict[str, int]:
    path = Path(env["TRIALDESK_DATABASE_URL"].removeprefix("sqlite:///"))
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def _refused(env: dict[str, str], *args: str) -> str:
    before = _rows(env)
    result = run(env, *args)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:"), result.stderr
    assert _rows(env) == before
    return result.stderr


def test_rec8_cli_consent_version_checked_then_shown(shell: dict[str, str]) -> None:
    """REC-8 at the shell: a made-up version is one line and nothing changed; the demo's
    "ICF v1.0" is recorded and shown."""
    subject = "S101-0001"
    err = _refused(
        shell, "subject", "consent", subject, "--date", fd.CONSENT_DATE, "--version",
        "NO-SUCH-ICF v99", "--user", "coordinator",
    )  # fmt: skip
    assert "has no version 'NO-SUCH-ICF v99'" in err
    ok = run(
        shell, "subject", "consent", subject, "--date", fd.CONSENT_DATE, "--version", "ICF v1.0",
        "--user", "coordinator",
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    shown = run(shell, "consent", "show", subject, "--json", "--user", "monitor")
    assert json.loads(shown.stdout)["consents"][0]["version"] == "v1.0"
    worklist = run(shell, "consent", "worklist", "--json", "--user", "monitor")
    assert worklist.exit_code == 0 and json.loads(worklist.stdout) == []


def test_rec6_cli_quality_commands(shell: dict[str, str]) -> None:
    """REC-6, REC-10 at the shell: run and report print JSON; a bad exclusion is one line."""
    ran = run(shell, "quality", "run", "--json", "--user", "monitor")
    assert ran.exit_code == 0, ran.output
    assert set(json.loads(ran.stdout)) >= {"subjects", "discrepancies", "opened"}
    report = run(shell, "quality", "report", "--json", "--user", "coordinator")
    assert report.exit_code == 0 and isinstance(json.loads(report.stdout), list)
    missing = run(shell, "quality", "missing", "--json", "--user", "monitor")
    assert missing.exit_code == 0, missing.output
    err = _refused(
        shell, "quality", "exclude", "S101-0001", "--rule", "DQ-99", "--form", "tte",
        "--reason", "x", "--user", "monitor",
    )  # fmt: skip
    assert "DQ-99" in err
    assert "[forbidden]" in _refused(shell, "quality", "run", "--user", "coordinator")


def test_rec7_rec9_cli_query_and_exit_refusals(shell: dict[str, str]) -> None:
    """REC-7, REC-9 at the shell: verifying an unknown query, an exit with a bad form or an
    unknown kind, a contact for a subject not withdrawn: one line each, nothing changed."""
    assert "not found" in _refused(shell, "queries", "verify", "999", "--user", "monitor")
    # a subject who may withdraw: consented here, or already by the REC-8 test (same shell)
    run(
        shell, "subject", "consent", "S101-0001", "--date", fd.CONSENT_DATE, "--version",
        "ICF v1.0", "--user", "coordinator",
    )  # fmt: skip
    shown = run(shell, "subject", "show", "S101-0001", "--json", "--user", "coordinator")
    assert json.loads(shown.stdout)["state"] != "registered", shown.output
    values: dict[str, Any] = {"withdrawal_date": fd.CONSENT_DATE, "reason": "subject_decision"}
    err = _refused(
        shell, "exit", "record", "S101-0001", "withdrawal", "--values", json.dumps(values),
        "--kind", "sometimes", "--user", "coordinator",
    )  # fmt: skip
    assert "unknown withdrawal kind 'sometimes'" in err
    err = _refused(
        shell, "exit", "contact", "S101-0001", "--visit", "Y3", "--date", fd.CONSENT_DATE,
        "--forms", json.dumps(fd.annual_contact_forms(fd.CONSENT_DATE)), "--user", "coordinator",
    )  # fmt: skip
    assert "contacts after a withdrawal" in err


# --- the pages ------------------------------------------------------------------------------


def test_rec6_rec8_pages_show_findings_missing_data_and_consents(trial: Trial) -> None:
    """REC-6, REC-10, REC-8 on the pages: the monitor sees a rule's finding and the
    missing-data table and may run the rules; the coordinator may not run them; a subject's
    consents page lists the consent and refuses a second v1.0 with one message."""
    from tests.e2e.test_web_pages import csrf_of, signed_in

    number, _ = j.procedure_done(trial)
    on = j.visit_dates()["M1"]
    trial.clock.set_day(on)
    forms = fd.follow_up_forms(on.isoformat())
    forms["follow_up"]["lvesd_mm"] = 70.0
    Api(trial).post(
        "coordinator",
        f"/subjects/{number}/visits/M1",
        {"visit_date": on.isoformat(), "forms": forms},
    )
    monitor = signed_in(trial, "monitor")
    page = monitor.get("/quality")
    assert page.status_code == 200 and "DQ-8" in page.text and "Missing data" in page.text
    assert 'action="/quality/run"' in page.text
    ran = monitor.post("/quality/run", data={"csrf_token": csrf_of(monitor, "/quality")})
    assert ran.status_code == 200 and "subjects checked" in ran.text
    coordinator = signed_in(trial, "coordinator")
    assert 'action="/quality/run"' not in coordinator.get("/quality").text
    consents = coordinator.get(f"/subjects/{number}/consents")
    assert consents.status_code == 200 and "v1.0" in consents.text
    twice = coordinator.post(
        f"/subjects/{number}/reconsent",
        data={
            "csrf_token": csrf_of(coordinator),
            "signed_on": on.isoformat(),
            "version": "v1.0",
        },
    )
    assert twice.status_code == 422 and "already signed ICF v1.0" in twice.text
    assert coordinator.get("/consents").status_code == 200
