"""`trialdesk protocol amend|sign-amendment|versions` from the shell (PROT-2, PROT-3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.e2e.test_cli_journey import PASSWORD, Shell
from tests.protocol_variants import amended
from trialdesk.cli.main import build_app


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    sh = Shell(tmp_path)
    result = sh.run("init", "--demo", "--demo-password", PASSWORD, "--json", on="2027-01-20")
    assert result.exit_code == 0, result.stderr
    return sh


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "amended.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _versions(sh: Shell) -> list[dict[str, object]]:
    result = sh.run("protocol", "versions", "--json", user="monitor", on="2027-01-21")
    assert result.exit_code == 0, result.stderr
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def test_prot2_cli_amend_dry_run_shows_the_diff_and_writes_nothing(
    shell: Shell, tmp_path: Path
) -> None:
    """PROT-2: without --yes the diff and its consequences are shown; nothing is stored."""
    path = _file(tmp_path, amended().text)
    result = shell.run(
        "protocol", "amend", str(path), "--effective", "2027-02-01",
        user="manager", on="2027-01-21",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Amendment of study FLAGSHIP: 1.0" in out and "effective 2027-02-01" in out
    assert "  + INC-19 (inclusion, echo)" in out
    assert "  ~ M6: window day 180 -30/+30 (days 150-210) -> day 180 -30/+45" in out
    assert "new criterion INC-19 applies to subjects registered from 2027-02-01" in out
    assert "dry run: nothing was written" in out
    assert [v["version"] for v in _versions(shell)] == ["1.0"]


def test_prot2_cli_amend_signs_and_versions_lists_the_signer(shell: Shell, tmp_path: Path) -> None:
    """PROT-2, SIG-1: --yes signs with the re-entered password; a wrong one signs nothing."""
    path = _file(tmp_path, amended().text)
    args = ("protocol", "amend", str(path), "--effective", "2027-02-01", "--yes")
    missing = shell.run(*args, user="manager", on="2027-01-21")
    assert missing.exit_code == 1 and "--reason is required" in missing.stderr
    # signed in with the right password, the signature's password is wrong
    env = shell.env("manager", "2027-01-21T12:00:00Z", None)
    wrong = CliRunner().invoke(
        build_app(), [*args, "--reason", "wider M6"], env=env, input=f"{PASSWORD}\nnope\n"
    )
    assert wrong.exit_code == 1 and "wrong username or password" in wrong.stderr
    assert "Traceback" not in wrong.output
    assert [v["version"] for v in _versions(shell)] == ["1.0"]

    done = shell.run(*args, "--reason", "wider M6", user="manager", on="2027-01-21")
    assert done.exit_code == 0, done.stderr
    assert "amendment 1: version 1.1" in done.stdout and "signed" in done.stdout
    versions = _versions(shell)
    assert [(v["version"], v["status"], v["effective_from"]) for v in versions] == [
        ("1.0", "signed", None),
        ("1.1", "signed", "2027-02-01"),
    ]
    signatures = versions[1]["signatures"]
    assert isinstance(signatures, list) and signatures[0]["username"] == "manager"

    # PROT-3: re-initialising with the edited file is refused and points to `protocol amend`
    edit = shell.run(
        "init", "--protocol", str(_file(tmp_path, amended(version="1.2").text)),
        "--demo", "--demo-password", PASSWORD, on="2027-01-21",
    )  # fmt: skip
    assert edit.exit_code == 1 and "trialdesk protocol amend" in edit.stderr


def test_prot2_cli_amend_refuses_an_invalid_file_and_a_blinded_non_manager(
    shell: Shell, tmp_path: Path
) -> None:
    """PROT-2: a broken file is listed problem by problem; only the manager amends."""
    broken = _file(tmp_path, amended().text.replace("target_subjects: 352", "target_subjects: x"))
    result = shell.run("protocol", "amend", str(broken), user="manager", on="2027-01-21")
    assert result.exit_code == 1 and "enrolment.target_subjects" in result.stderr
    path = _file(tmp_path, amended().text)
    denied = shell.run("protocol", "amend", str(path), user="coordinator", on="2027-01-21")
    assert denied.exit_code == 1 and "study manager" in denied.stderr
