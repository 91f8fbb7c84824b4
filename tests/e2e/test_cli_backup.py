"""`trialdesk backup` and `trialdesk restore` as an operator types them (issue 7, AUD-1): the
restored database verifies with the same root digest; a wrong file or a database holding data
gets one line on stderr and exit 1, and nothing changes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from trialdesk.cli.main import build_app


def _run(tmp: Path, db: str, *args: str) -> Result:
    env = {
        "TRIALDESK_DATABASE_URL": f"sqlite:///{tmp / db}",
        "TRIALDESK_ALLOCATION_KEY_FILE": str(tmp / "k.key"),
    }
    return CliRunner().invoke(build_app(), list(args), env=env)


def test_aud1_backup_and_restore_through_the_cli(tmp_path: Path) -> None:
    assert _run(tmp_path, "a.db", "init", "--demo").exit_code == 0
    made = _run(tmp_path, "a.db", "backup", "--out", str(tmp_path / "a.backup"), "--json")
    assert made.exit_code == 0, made.stderr
    manifest = json.loads(made.stdout)
    assert manifest["format"] == "trialdesk-backup" and manifest["study_codes"] == ["FLAGSHIP"]

    restored = _run(tmp_path, "b.db", "restore", "--from", str(tmp_path / "a.backup"))
    assert restored.exit_code == 0, restored.stderr
    assert manifest["audit_root"] in restored.stdout
    verified = _run(tmp_path, "b.db", "audit", "verify", "--json")
    assert json.loads(verified.stdout)["ok"] is True

    again = _run(tmp_path, "b.db", "restore", "--from", str(tmp_path / "a.backup"))
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == [
        "error: the database already holds data; restore into an empty database, or give "
        "--force to replace everything in it [database-not-empty]"
    ]
    forced = _run(tmp_path, "b.db", "restore", "--from", str(tmp_path / "a.backup"), "--force")
    assert forced.exit_code == 0, forced.stderr


def test_aud1_restore_of_a_foreign_file_creates_no_database(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a backup\n")
    refused = _run(tmp_path, "new.db", "restore", "--from", str(tmp_path / "notes.txt"))
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'notes.txt'} is not a trialdesk backup (not a SQLite file) "
        "[validation-failed]"
    ]
    assert not (tmp_path / "new.db").exists()


def test_aud1_restore_with_another_allocation_key_is_refused_before_opening(
    tmp_path: Path,
) -> None:
    assert _run(tmp_path, "a.db", "init", "--demo").exit_code == 0
    assert _run(tmp_path, "a.db", "backup", "--out", str(tmp_path / "a.backup")).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    assert _run(other, "x.db", "init", "--demo").exit_code == 0  # its own key, k.key
    refused = _run(other, "new.db", "restore", "--from", str(tmp_path / "a.backup"))
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines() == [
        "error: an allocation could not be decrypted with this key file [allocation-key-wrong]"
    ]
    assert not (other / "new.db").exists()
    missing = _run(tmp_path / "nowhere", "n.db", "restore", "--from", str(tmp_path / "a.backup"))
    assert missing.exit_code == 1
    assert "allocation key file" in missing.stderr and "is missing" in missing.stderr
