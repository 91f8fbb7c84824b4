"""`trialdesk export {csv,odm,sdtm}` through the real Typer app (EXP-1, RAND-6)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyreadstat
import pytest
from typer.testing import CliRunner, Result

from trialdesk.cli.main import build_app
from trialdesk.reports.exports import odm_problems

PASSWORD = "export-demo-password"
ARM_WORD = re.compile(r"(?<![A-Za-z0-9])(INT|CTRL)(?![A-Za-z0-9])")


@dataclass
class Shell:
    tmp: Path

    def run(self, *args: str, user: str | None = "monitor") -> Result:
        env = {
            "TRIALDESK_DATABASE_URL": f"sqlite:///{self.tmp / 't.db'}",
            "TRIALDESK_ALLOCATION_KEY_FILE": str(self.tmp / "k.key"),
            "TRIALDESK_PASSWORD": PASSWORD,
            "TRIALDESK_USER": user,
        }
        return CliRunner().invoke(build_app(), list(args), env=env)


@pytest.fixture
def sh(tmp_path: Path) -> Shell:
    shell = Shell(tmp_path)
    result = shell.run("init", "--demo", "--demo-password", PASSWORD, user=None)
    assert result.exit_code == 0, result.output
    return shell


def one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    for word in words:
        assert word in line, line


@pytest.mark.req("EXP-1", "RAND-6")
def test_exp1_cli_exports_blinded_by_default(sh: Shell, tmp_path: Path) -> None:
    """EXP-1, RAND-6: each export writes its files and reports them as JSON; the monitor's
    exports are blinded and no file names an arm."""
    for kind, expected in (
        ("csv", "randomizations.csv"),
        ("odm", "odm.xml"),
        ("sdtm", "dm.xpt"),
    ):
        out = tmp_path / f"out-{kind}"
        result = sh.run("export", kind, "--out", str(out))
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["blinded"] is True and expected in report["files"]
        assert sorted(report["files"]) == sorted(p.name for p in out.iterdir())
        for path in out.iterdir():
            assert not ARM_WORD.search(path.read_bytes().decode("latin-1")), path.name
    assert odm_problems((tmp_path / "out-odm" / "odm.xml").read_bytes()) == []
    assert odm_problems((tmp_path / "out-odm" / "odm_audit.xml").read_bytes()) == []
    assert (
        "ta.xpt"
        not in json.loads(sh.run("export", "sdtm", "--out", str(tmp_path / "again")).stdout)[
            "files"
        ]
    )


@pytest.mark.req("EXP-1", "RAND-6")
def test_exp1_cli_unblinded_only_for_the_statistician(sh: Shell, tmp_path: Path) -> None:
    """RAND-6: --unblinded is one clear line with the 'blinded' code for the monitor and the
    study manager, writes nothing; the statistician gets the trial arms dataset."""
    for user in ("monitor", "manager"):
        out = tmp_path / f"no-{user}"
        one_line_error(
            sh.run("export", "sdtm", "--out", str(out), "--unblinded", user=user),
            "unblinded statistician",
            "[blinded]",
        )
        assert not out.exists()
    one_line_error(
        sh.run("export", "csv", "--out", str(tmp_path / "x"), user="coordinator"), "[forbidden]"
    )
    out = tmp_path / "stat"
    result = sh.run("export", "sdtm", "--out", str(out), "--unblinded", user="statistician")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["blinded"] is False
    ta, meta = pyreadstat.read_xport(str(out / "ta.xpt"))
    assert set(ta["ARMCD"]) == {"INT", "CTRL"} and meta.table_name == "TA"
    one_line_error(sh.run("export", "odm", "--out", str(out)), "not empty", "[validation-failed]")
