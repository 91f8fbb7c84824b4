"""`trialdesk lists generate|import|show|status|extend` through the real Typer app, as the
unblinded statistician would use them from a shell (RAND-3, RAND-6)."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.conftest import flagship
from trialdesk.cli.main import build_app
from trialdesk.domain.randomization import Slot, derive_seed, fingerprint, generate_blocks

PASSWORD = "lists-demo-password"
ARMS = [("INT", 1), ("CTRL", 1)]
SITES = sorted(site.code for site in flagship().protocol.sites)
ARM_WORD = re.compile(r"(?<![A-Za-z0-9])(INT|CTRL)(?![A-Za-z0-9])")


@dataclass
class Shell:
    """A shell whose environment points at one demo trial's database and key file."""

    tmp: Path

    def run(self, *args: str, user: str | None = "statistician") -> Result:
        env = {
            "TRIALDESK_DATABASE_URL": f"sqlite:///{self.tmp / 't.db'}",
            "TRIALDESK_ALLOCATION_KEY_FILE": str(self.tmp / "k.key"),
            "TRIALDESK_PASSWORD": PASSWORD,
            "TRIALDESK_USER": user,
        }
        return CliRunner().invoke(build_app(), list(args), env=env)

    def json(self, *args: str, user: str = "statistician") -> Any:
        result = self.run(*args, "--json", user=user)
        assert result.exit_code == 0, (args, result.stderr)
        assert result.stderr == ""
        return json.loads(result.stdout)


@pytest.fixture
def sh(tmp_path: Path) -> Shell:
    """A demo installation: flagship study, demo users and a generated live list."""
    shell = Shell(tmp_path)
    result = shell.run("init", "--demo", "--demo-password", PASSWORD, user=None)
    assert result.exit_code == 0, result.output
    return shell


def list_csv(seed: int, per_site: int) -> tuple[str, dict[str, list[Slot]]]:
    slots = {
        f"site={code}": generate_blocks(
            ARMS, [2, 4], per_site, random.Random(derive_seed(seed, f"site={code}"))
        )
        for code in SITES
    }
    lines = ["stratum,sequence,block,block_size,arm"] + [
        f"{stratum},{s.sequence},{s.block_number},{s.block_size},{s.arm}"
        for stratum, members in slots.items()
        for s in members
    ]
    return "\n".join(lines) + "\n", slots


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    for word in words:
        assert word in line, line


@pytest.mark.req("RAND-3", "RAND-6")
def test_rand_3_cli_import_status_extend_show(sh: Shell, tmp_path: Path) -> None:
    text, slots = list_csv(31, 4)
    path = tmp_path / "test-list.csv"
    path.write_text(text, encoding="utf-8")
    imported = sh.json("lists", "import", str(path), "--mode", "test")
    assert imported["fingerprint"] == fingerprint(slots)
    assert (imported["mode"], imported["source"], imported["strata"]) == ("test", "imported", 75)

    status = sh.json("lists", "status", "--mode", "test")
    assert len(status) == len(SITES)
    assert {(s["used"], s["extensions"]) for s in status} == {(0, 0)}

    extended = sh.json("lists", "extend", "--stratum", "site=S101", "--blocks", "2")
    assert (extended["mode"], extended["stratum"], extended["extensions"]) == (
        "live",
        "site=S101",
        1,
    )
    assert extended["size"] >= 24 + 4

    shown = sh.json("lists", "show")
    assert [(i["mode"], i["source"], i["active"]) for i in shown] == [
        ("live", "generated", True),
        ("test", "imported", True),
    ]
    human = sh.run("lists", "status", "--mode", "live")
    assert human.exit_code == 0
    assert "live\tsite=S101\t0 used\t" in human.stdout
    for output in (json.dumps(shown), json.dumps(status), human.stdout):
        assert not ARM_WORD.search(output)


@pytest.mark.req("RAND-3")
def test_rand_3_cli_import_refusal_lists_every_row_and_stores_nothing(
    sh: Shell, tmp_path: Path
) -> None:
    text, _ = list_csv(32, 2)
    lines = text.splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",SHAM"
    lines[3] = lines[3].replace(",1,", ",x,", 1)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = sh.run("lists", "import", str(path), "--mode", "test")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = result.stderr.splitlines()
    assert errors[0] == f"{path}: row 2: arm 'SHAM' is not an arm of the protocol (INT, CTRL)"
    assert errors[1].startswith(f"{path}: row 4: ")
    assert errors[-1] == f"error: {path}: {len(errors) - 1} problems; nothing was imported"
    assert [i["mode"] for i in sh.json("lists", "show")] == ["live"]


@pytest.mark.req("RAND-3", "RAND-6")
def test_rand_3_cli_refuses_in_one_line(sh: Shell, tmp_path: Path) -> None:
    assert_one_line_error(
        sh.run("lists", "generate", "--mode", "test", user="manager"),
        "unblinded statistician",
        "[forbidden]",
    )
    assert_one_line_error(sh.run("lists", "status", user="coordinator"), "[forbidden]")
    assert_one_line_error(sh.run("lists", "generate"), "active live list exists", "[list-exists]")
    assert_one_line_error(sh.run("lists", "generate", "--mode", "prod"), "live or test")
    assert_one_line_error(
        sh.run("lists", "extend", "--stratum", "site=S999"), "no stratum 'site=S999'"
    )
    assert_one_line_error(sh.run("lists", "extend", "--stratum", "site=S101", "--blocks", "0"))
    assert_one_line_error(sh.run("lists", "import", str(tmp_path / "none.csv")), "cannot read")
    binary = tmp_path / "list.xlsx"
    binary.write_bytes(b"PK\x03\x04\xff\xfe")
    assert_one_line_error(sh.run("lists", "import", str(binary)), "not UTF-8")


@pytest.mark.req("RAND-3")
def test_rand_3_cli_generated_test_list_matches_its_seed(sh: Shell) -> None:
    info = sh.json("lists", "generate", "--mode", "test", "--seed", "99", "--size", "6")
    expected = {
        f"site={code}": generate_blocks(
            ARMS, [2, 4], 6, random.Random(derive_seed(99, f"site={code}"))
        )
        for code in SITES
    }
    assert info["fingerprint"] == fingerprint(expected)
    assert info["slots"] == sum(len(s) for s in expected.values())


def test_rand_3_cli_import_help_shows_the_file_format() -> None:
    result = CliRunner().invoke(build_app(), ["lists", "import", "--help"])
    assert result.exit_code == 0
    assert "stratum,sequence,block,block_size,arm" in result.stdout
    assert "site=S101,1,1,2,CTRL" in result.stdout
    assert "--append" in result.stdout
