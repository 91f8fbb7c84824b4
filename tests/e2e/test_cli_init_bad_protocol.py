"""`trialdesk init` with a damaged protocol file (PROT-1, DATA-1): a clear error naming the
problem and its line, a non-zero exit, and nothing written: no database and no key file for
a new installation, and not one row changed in an installation that already holds a study.

The file is refused before any database is opened, so SQLite stands for both backends.
"""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from trialdesk.cli.main import build_app
from trialdesk.protocol.loader import flagship_path

FLAGSHIP = flagship_path().read_text(encoding="utf-8")


def duplicated_arm() -> str:
    data = yaml.safe_load(FLAGSHIP)
    data["arms"].append(copy.deepcopy(data["arms"][0]))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


BAD_FILES = {
    "duplicate arm code": (duplicated_arm(), "INT"),
    "cut short": (FLAGSHIP[: FLAGSHIP.index("\nvisits:") + 30], "line"),
    "control character": (FLAGSHIP.replace("\narms:", "\n\x1barms:", 1), "U+001B"),
}


def run(folder: Path, *args: str) -> Result:
    env = {
        "TRIALDESK_DATABASE_URL": f"sqlite:///{folder / 't.db'}",
        "TRIALDESK_ALLOCATION_KEY_FILE": str(folder / "k.key"),
    }
    return CliRunner().invoke(build_app(), list(args), env=env)


def rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: sorted(conn.execute(f'SELECT * FROM "{n}"'), key=repr) for n in names}


def assert_refused(result: Result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: protocol file ") and "problem" in first, result.stderr
    assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_prot1_init_with_a_damaged_protocol_writes_nothing(tmp_path: Path, name: str) -> None:
    text, fragment = BAD_FILES[name]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert_refused(run(fresh, "init", "--protocol", str(bad)), fragment)
    assert sorted(p.name for p in fresh.iterdir()) == []  # no database, no key file

    installed = tmp_path / "installed"
    installed.mkdir()
    assert run(installed, "init").exit_code == 0
    before = rows(installed / "t.db")
    assert before["studies"]
    assert_refused(run(installed, "init", "--protocol", str(bad), "--study", "SECOND"), fragment)
    assert rows(installed / "t.db") == before
