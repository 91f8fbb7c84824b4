"""Bad input at the shell: one line on stderr starting with "error:", a non-zero exit, never a
traceback, and nothing changed in the database (LIFE-1, DATA-1, AUD-1).

Each test works on its own copy of a database prepared once per module (a demo study with one
consented subject, or a live study with one coordinator), so the tests stay independent.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests import flagship_data as fd
from tests.mailbox import accept_from_outbox
from trialdesk.bootstrap import bootstrap
from trialdesk.cli.main import build_app
from trialdesk.config import Settings
from trialdesk.domain.roles import Role
from trialdesk.services.access import operator_actor
from trialdesk.services.accounts import invite

PASSWORD = "errors-demo-password"
SUBJECT = "S101-0001"
LIVE_USER = "lee.live@site.example"
TODAY = f"{fd.SCREENING_DATE}T12:00:00Z"

Dump = dict[str, list[tuple[Any, ...]]]


@dataclass
class Shell:
    folder: Path
    clock: str | None = TODAY

    @property
    def db(self) -> Path:
        return self.folder / "t.db"

    def env(self, **overrides: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "TRIALDESK_DATABASE_URL": f"sqlite:///{self.db}",
            "TRIALDESK_ALLOCATION_KEY_FILE": str(self.folder / "k.key"),
            "TRIALDESK_PASSWORD": PASSWORD,
            "TRIALDESK_USER": "coordinator",
            "TRIALDESK_CLOCK": self.clock,
        }
        env.update(overrides)
        return env

    def run(self, *args: str, **env: str | None) -> Result:
        return CliRunner().invoke(build_app(), list(args), env=self.env(**env))

    def dump(self) -> Dump:
        """Every row of every table, to prove a failed command changed nothing."""
        with sqlite3.connect(self.db) as conn:
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            return {t: sorted(conn.execute(f'SELECT * FROM "{t}"'), key=repr) for t in tables}


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """The CLI's contract for any refusal; returns the message line."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _copy(template: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("t.db", "k.key"):
        shutil.copy(template / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    sh = Shell(folder, clock=f"{fd.CONSENT_DATE}T12:00:00Z")
    steps = [
        ("init", "--demo", "--demo-password", PASSWORD),
        ("subject", "register", "--site", "S101", "--date", fd.CONSENT_DATE),
        ("subject", "consent", SUBJECT, "--date", fd.CONSENT_DATE, "--version", "v1.0"),
    ]
    for step in steps:
        result = sh.run(*step)
        assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def live_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("live")
    sh = Shell(folder, clock=None)
    result = sh.run("init")
    assert result.exit_code == 0, result.output
    settings = Settings(
        database_url=f"sqlite:///{sh.db}",
        allocation_key_file=folder / "k.key",
        argon2_time_cost=1,
        argon2_memory_kib=1024,
    )
    runtime = bootstrap(settings, run_migrations=False)
    try:  # a live study's user is invited and chooses the password (issue 12)
        invite(
            runtime.context, operator_actor(), 1, email=LIVE_USER, full_name="Lee Live",
            role=Role.COORDINATOR.value, site="S101",
        )  # fmt: skip
        assert accept_from_outbox(runtime.context, LIVE_USER, PASSWORD) == LIVE_USER
    finally:
        runtime.close()
    return folder


@pytest.fixture
def demo(demo_template: Path, tmp_path: Path) -> Shell:
    return Shell(_copy(demo_template, tmp_path / "demo"))


@pytest.fixture
def live(live_template: Path, tmp_path: Path) -> Shell:
    return Shell(_copy(live_template, tmp_path / "live"), clock=None)


def _unchanged(sh: Shell, before: Dump) -> None:
    """Nothing changed but the sign-in's own memory of this client (issue 12: a client that
    signed in as a name is not held back with strangers), which is not trial data."""
    after = sh.dump()
    after.pop("signin_throttle", None)
    assert after == {k: v for k, v in before.items() if k != "signin_throttle"}


# --- the database itself -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("subject", "show", SUBJECT), ("audit", "verify"), ("subject", "register", "--site", "S101")],
)
def test_uninitialised_database_is_named_with_the_way_out(tmp_path: Path, args: list[str]) -> None:
    """§13 (bad input changes nothing): a database without a schema is named, with the fix."""
    sh = Shell(tmp_path)
    result = sh.run(*args)
    assert_one_line_error(result, "run 'trialdesk init' first")


def test_uninitialised_database_is_left_uncreated(tmp_path: Path) -> None:
    """§13: a mistyped database path must not leave a new file behind."""
    sh = Shell(tmp_path)
    sh.run("subject", "show", SUBJECT)
    assert not sh.db.exists()


def test_unopenable_database_is_one_line(tmp_path: Path) -> None:
    """§13: a database that cannot be opened is one clear line."""
    (tmp_path / "a-directory.db").mkdir()
    url = f"sqlite:///{tmp_path / 'a-directory.db'}"
    result = Shell(tmp_path).run("audit", "verify", TRIALDESK_DATABASE_URL=url)
    assert_one_line_error(result, "cannot open the database")


def test_unreachable_postgres_is_one_line(tmp_path: Path) -> None:
    """§13: an unreachable server is one clear line."""
    url = "postgresql+psycopg://postgres@127.0.0.1:1/trialdesk"
    result = Shell(tmp_path).run("audit", "verify", TRIALDESK_DATABASE_URL=url)
    assert_one_line_error(result, "cannot open the database")


def test_database_password_is_never_printed(tmp_path: Path) -> None:
    """§13, RAND-6 spirit (nothing secret in messages): the URL's password is hidden."""
    url = "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/trialdesk"
    result = Shell(tmp_path).run("audit", "verify", TRIALDESK_DATABASE_URL=url)
    assert "s3cret-pw" not in result.output


# --- signing in ----------------------------------------------------------------------------


def _new_audit_rows(before: Dump, after: Dump) -> list[tuple[Any, ...]]:
    return [row for row in after["audit_entries"] if row not in before["audit_entries"]]


def test_wrong_password_is_refused_and_only_the_failed_sign_in_is_recorded(demo: Shell) -> None:
    """SIG-1/AUD-1: a failed sign-in is audited on the user's stream and counted; nothing else
    changes."""
    before = demo.dump()
    result = demo.run("subject", "show", SUBJECT, TRIALDESK_PASSWORD="not-the-password")
    assert_one_line_error(result, "wrong username or password", "[authentication-failed]")
    after = demo.dump()
    new = _new_audit_rows(before, after)
    assert len(new) == 1
    columns = [c[1] for c in sqlite3.connect(demo.db).execute("PRAGMA table_info(audit_entries)")]
    entry = dict(zip(columns, new[0], strict=True))
    assert (entry["action"], entry["actor"], entry["entity_id"]) == (
        "sign_in_failed",
        "coordinator",
        "coordinator",
    )
    assert entry["stream"].startswith("user:")
    new_values = json.loads(entry["new"])
    assert new_values["reason"] == "wrong password" and new_values["failures"]["pair"] == 1
    assert new_values["client"].startswith("cli:")
    changed = {t for t in after if after[t] != before[t]}
    assert changed == {"audit_entries", "audit_heads", "signin_throttle"}


def test_unknown_user_is_refused_like_a_wrong_password(demo: Shell) -> None:
    """SIG-1, AUD-1: an unknown user looks like a wrong password; the attempt is audited."""
    before = demo.dump()
    result = demo.run("subject", "show", SUBJECT, TRIALDESK_USER="nobody")
    assert_one_line_error(result, "wrong username or password")
    after = demo.dump()
    (entry,) = _new_audit_rows(before, after)
    assert "auth" in entry and "sign_in_failed" in entry
    # the failure counts for the name whether or not it exists (no enumeration, issue 12)
    assert {t for t in after if after[t] != before[t]} == {
        "audit_entries",
        "audit_heads",
        "signin_throttle",
    }


# --- bad input -----------------------------------------------------------------------------


def test_unknown_subject_is_not_found(demo: Shell) -> None:
    """ACC-1, §13: an unknown subject number is 'not found' and changes nothing."""
    before = demo.dump()
    result = demo.run("subject", "show", "S101-9999")
    assert_one_line_error(result, "subject S101-9999 not found", "[not-found]")
    _unchanged(demo, before)


@pytest.mark.parametrize("value", ["2027-02-30", "25/01/2027", "yesterday"])
def test_malformed_date_names_the_option_and_value(demo: Shell, value: str) -> None:
    """TIME-1, §13: a date that is not YYYY-MM-DD is refused before anything runs."""
    before = demo.dump()
    result = demo.run("subject", "consent", SUBJECT, "--date", value, "--version", "v1.0")
    assert_one_line_error(result, f"--date: '{value}' is not a date (YYYY-MM-DD)")
    _unchanged(demo, before)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ('{"nyha_class": ', "--values: not valid JSON"),
        ("[1, 2]", "--values: expected a JSON object"),
        ("@/no/such/file.json", "--values: cannot read"),
    ],
)
def test_malformed_values_json_is_one_line(demo: Shell, values: str, fragment: str) -> None:
    """DATA-1: unparseable --values is refused before anything is signed in or saved."""
    before = demo.dump()
    result = demo.run("subject", "form", SUBJECT, "nyha", "--values", values)
    assert_one_line_error(result, fragment)
    _unchanged(demo, before)


@pytest.mark.parametrize(
    ("field", "value"),
    [("nyha_class", "V"), ("assessment_date", "2027-02-31"), ("shoe_size", 44)],
)
def test_bad_form_value_names_the_field_and_saves_nothing(
    demo: Shell, field: str, value: object
) -> None:
    """DATA-1: a wrong value, an impossible date or an unknown field: named, nothing saved."""
    values: dict[str, object] = dict(fd.screening_forms()["nyha"])
    values[field] = value
    before = demo.dump()
    result = demo.run("subject", "form", SUBJECT, "nyha", "--values", json.dumps(values))
    assert_one_line_error(result, field, "[validation-failed]")
    _unchanged(demo, before)


def test_action_not_allowed_names_the_state_and_the_allowed_actions(demo: Shell) -> None:
    """LIFE-1: randomizing a subject still in screening is refused, naming what is allowed."""
    before = demo.dump()
    result = demo.run("subject", "randomize", SUBJECT, TRIALDESK_USER="implanter")
    line = assert_one_line_error(result, "[not-allowed-in-state]")
    assert f"'randomize' is not allowed for subject {SUBJECT} in state 'screening'" in line
    allowed = line.split("allowed now: ", 1)[1].removesuffix(" [not-allowed-in-state]")
    assert {"record_screening_form", "confirm_criterion", "pass_screening"} <= set(
        allowed.split(", ")
    )
    assert "randomize" not in allowed.split(", ")
    _unchanged(demo, before)


# --- a fixed clock on a live study ---------------------------------------------------------


def test_fixed_clock_is_refused_on_a_live_study(live: Shell) -> None:
    """TIME-1: a live study refuses TRIALDESK_CLOCK (demo and sandbox only), unchanged."""
    before = live.dump()
    result = live.run(
        "subject", "register", "--site", "S101",
        TRIALDESK_USER=LIVE_USER, TRIALDESK_CLOCK="2027-03-01T12:00:00Z",
    )  # fmt: skip
    assert_one_line_error(result, "TRIALDESK_CLOCK", "only allowed for demo and sandbox studies")
    _unchanged(live, before)


def test_fixed_clock_is_refused_when_creating_a_live_study(tmp_path: Path) -> None:
    """TIME-1, AUD-1: a live study never takes timestamps from TRIALDESK_CLOCK."""
    sh = Shell(tmp_path, clock="2099-01-01T00:00:00Z")
    result = sh.run("init")
    assert_one_line_error(result, "TRIALDESK_CLOCK")


def test_fixed_clock_never_unlocks_an_account_on_a_live_study(live: Shell) -> None:
    """SIG-1, AUD-1: a fixed clock must not move a live study's lockout."""
    for _ in range(5):
        live.run("subject", "list", TRIALDESK_USER=LIVE_USER, TRIALDESK_PASSWORD="wrong-password")
    locked = live.dump()["signin_throttle"]
    result = live.run(
        "subject", "list", TRIALDESK_USER=LIVE_USER, TRIALDESK_CLOCK="2099-01-01T00:00:00Z"
    )
    assert_one_line_error(result, "TRIALDESK_CLOCK")
    assert live.dump()["signin_throttle"] == locked


def test_fixed_clock_writes_no_fake_dated_audit_entry_on_a_live_study(live: Shell) -> None:
    """AUD-1, TIME-1: no live audit entry carries a fake time."""
    before = live.dump()
    live.run(
        "subject", "list",
        TRIALDESK_USER=LIVE_USER, TRIALDESK_PASSWORD="wrong-password",
        TRIALDESK_CLOCK="2099-01-01T00:00:00Z",
    )  # fmt: skip
    assert not any("2099-01-01" in str(row) for row in _new_audit_rows(before, live.dump()))
