"""`trialdesk simulate` from the shell (issue 7): a demo database gets a synthetic trial and a
summary; a live one is refused with one message and left as it was."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner, Result

from trialdesk.cli.main import build_app
from trialdesk.store.tables import AuditEntryRow, SubjectRow, UserRow


def _run(tmp: Path, *args: str) -> Result:
    env = {
        "TRIALDESK_DATABASE_URL": f"sqlite:///{tmp / 't.db'}",
        "TRIALDESK_ALLOCATION_KEY_FILE": str(tmp / "k.key"),
        "TRIALDESK_CLOCK": None,
        "TRIALDESK_PASSWORD": None,
        "TRIALDESK_USER": None,
    }
    return CliRunner().invoke(build_app(), list(args), env=env)


def _counts(tmp: Path) -> tuple[int, int, int]:
    engine = create_engine(f"sqlite:///{tmp / 't.db'}")
    with engine.connect() as conn:
        out = tuple(
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (SubjectRow, AuditEntryRow, UserRow)
        )
    engine.dispose()
    return out  # type: ignore[return-value]


def test_cli_simulate_fills_a_demo_study_once_and_prints_a_summary(tmp_path: Path) -> None:
    assert _run(tmp_path, "init", "--demo", "--demo-password", "demo-password").exit_code == 0
    done = _run(
        tmp_path, "simulate", "--subjects", "6", "--sites", "2", "--seed", "3",
        "--screened-per-site-month", "4",
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert "simulated study FLAGSHIP from 2027-01-04" in done.stdout
    assert "randomized 6" in done.stdout
    assert "excluded:" in done.stdout and "states:" in done.stdout
    subjects = _counts(tmp_path)[0]
    assert subjects > 6
    # a second run (as `make run` does) says so and simulates nothing
    before = _counts(tmp_path)
    again = _run(tmp_path, "simulate", "--subjects", "6", "--sites", "2")
    assert again.exit_code == 0, again.stderr
    assert f"already has {subjects} subjects" in again.stdout
    assert _counts(tmp_path) == before
    verify = _run(tmp_path, "audit", "verify")
    assert verify.exit_code == 0 and "audit chain ok" in verify.stdout


def test_cli_simulate_json_summary_matches_the_consort_report(tmp_path: Path) -> None:
    """The simulator's counts are the CONSORT report's (REP-2), through the CLI."""
    assert _run(tmp_path, "init", "--demo", "--demo-password", "demo-password").exit_code == 0
    done = _run(
        tmp_path, "simulate", "--subjects", "4", "--sites", "2", "--as-of", "2027-03-31",
        "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["end"] == "2027-03-31"
    assert summary["registered"] == _counts(tmp_path)[0]


def test_cli_simulate_refuses_a_live_database_and_writes_nothing(tmp_path: Path) -> None:
    assert _run(tmp_path, "init").exit_code == 0
    before = _counts(tmp_path)
    refused = _run(tmp_path, "simulate", "--subjects", "5", "--sites", "2")
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert "study FLAGSHIP is a live study" in refused.stderr
    assert "only on a study created as demo or sandbox" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert _counts(tmp_path) == before


def test_cli_simulate_bad_option_is_one_message(tmp_path: Path) -> None:
    assert _run(tmp_path, "init", "--demo", "--demo-password", "demo-password").exit_code == 0
    before = _counts(tmp_path)
    bad = _run(tmp_path, "simulate", "--subjects", "400", "--sites", "2")
    assert bad.exit_code == 1
    assert "subjects: at most the enrolment cap (352)" in bad.stderr
    assert _counts(tmp_path) == before
    no_as_of = _run(
        tmp_path, "simulate", "--subjects", "4", "--sites", "2", "--enrolment-years", "2"
    )
    assert no_as_of.exit_code == 1 and "--enrolment-years needs --as-of" in no_as_of.stderr
