"""`trialdesk report ...` from the shell (REP-2, REP-3): JSON shapes, files, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from trialdesk.cli.main import build_app

PASSWORD = "reports-demo-pw"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("reports")
    env = {
        "TRIALDESK_DATABASE_URL": f"sqlite:///{tmp / 't.db'}",
        "TRIALDESK_ALLOCATION_KEY_FILE": str(tmp / "k.key"),
        "TRIALDESK_PASSWORD": PASSWORD,
    }
    result = CliRunner().invoke(
        build_app(), ["init", "--demo", "--demo-password", PASSWORD], env=env
    )
    assert result.exit_code == 0, result.output
    return env


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args), env=env)


def test_rep2_consort_json_is_pooled_for_a_blinded_user_and_writes_figures(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = run(env, "report", "consort", "--json", "--user", "manager", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"phases", "assessed", "excluded", "randomized"}
    assert data["phases"] == ["Enrolment"]
    assert set(data["excluded"]) == {
        "criteria_not_met",
        "crc_rejected",
        "anatomy_unsuitable",
        "declined",
        "other",
    }
    assert (tmp_path / "consort.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "consort.svg").read_bytes()


def test_rep2_consort_by_arm_for_the_statistician(env: dict[str, str]) -> None:
    result = run(env, "report", "consort", "--json", "--user", "statistician")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["arms"]) == {"INT", "CTRL"}


@pytest.mark.parametrize("name", ["compliance", "screening", "deviations", "queries", "crc"])
def test_rep3_operational_reports_print_json(env: dict[str, str], name: str) -> None:
    result = run(env, "report", name, "--json", "--user", "monitor")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)
    dated = run(env, "report", name, "--json", "--as-of", "2026-01-01", "--user", "monitor")
    assert dated.exit_code == 0, dated.output
    bad = run(env, "report", name, "--as-of", "2026-02-30", "--user", "monitor")
    assert bad.exit_code == 1 and "not a date" in bad.stderr


def test_rep3_dsmb_report_is_refused_for_a_blinded_role_in_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = run(env, "report", "dsmb", "--user", "monitor", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "[blinded]" in result.stderr
    assert not (tmp_path / "dsmb-report.html").exists()
    ok = run(env, "report", "dsmb", "--user", "dsmb", "--out", str(tmp_path))
    assert ok.exit_code == 0, ok.output
    assert "<html" in (tmp_path / "dsmb-report.html").read_text().lower()
