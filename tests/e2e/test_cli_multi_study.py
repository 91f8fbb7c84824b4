"""Two studies in one installation (PROT-1) from the command line: `trialdesk study create`,
`study list` and `study grant`; every command that takes ``--study`` refuses study B to a user
of study A exactly as an unknown study, and A's reports and exports hold nothing of B.

The population is tests/multi_study.py (SQLite file: the commands open it as a shell would);
the API and the pages are swept in tests/e2e/test_multi_study_isolation.py.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from sqlalchemy import func, select
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from tests import multi_study as ms
from tests.conftest import PASSWORD, Database, build_trial, flagship
from tests.e2e.test_multi_study_isolation import _archive_text, _nothing_written, _state
from trialdesk.cli.main import build_app
from trialdesk.protocol.loader import flagship_path
from trialdesk.store.database import make_engine
from trialdesk.store.tables import RoleGrantRow, StudyRow

SCOPED = ("coordinator", "manager", "statistician")


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args), env=env)


def _cli_commands(out_dir: str) -> list[tuple[str, ...]]:
    """Every command that signs in a user and takes ``--study``, with its required values."""
    out: list[tuple[str, ...]] = []
    root = typer.main.get_command(build_app())

    def visit(command: Any, path: tuple[str, ...], parent: Any) -> None:
        ctx = command.context_class(command, info_name=path[-1] if path else "", parent=parent)
        if isinstance(command, TyperGroup):
            for name in command.list_commands(ctx):
                visit(command.get_command(ctx, name), (*path, name), ctx)
            return
        names = {p.name for p in command.params}
        if not {"study", "user"} <= names:
            return
        args = list(path)
        for param in command.params:
            if not param.required:
                continue
            value = {**CLI_VALUES, "out": out_dir}.get(param.name or "", "2027-02-15")
            if param.bare_type() == "int":
                value = "1"
            if param.param_type_name == "argument":
                args.append(value)
            elif getattr(param, "is_flag", False):
                args.append(param.opts[0])
            else:
                args += [param.opts[0], value]
        out.append(tuple(args))

    visit(root, (), None)
    return out


CLI_VALUES = {
    "number": "S101-0001",
    "date": "2027-02-15",
    "randomized": "2027-02-15",
    "site": "S101",
    "stratum": "S101",
    "form_code": "nyha",
    "field": "nyha_class",
    "values": "{}",
    "forms": "{}",
    "visit_code": "M1",
    "criterion": "INC-8",
    "decision": "approve",
    "therapy_type": "crt",
    "query_id": "1",
    "case_id": "1",
    "version": "v1.0",
    "file": str(flagship_path()),
}


@pytest.fixture
def sqlite_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ms.TwoStudies, dict[str, str]]]:
    """The two studies in a SQLite file, and a shell environment pointing at it; commands run
    in the test's folder, so reports written to the current folder stay out of the tree."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'trial.db'}"
    engine = make_engine(url)
    a = build_trial(Database("sqlite", url, engine), tmp_path, flagship())
    two = ms.two_studies(a)
    env = {
        "TRIALDESK_DATABASE_URL": url,
        "TRIALDESK_ALLOCATION_KEY_FILE": str(tmp_path / "allocation.key"),
        "TRIALDESK_PASSWORD": PASSWORD,
        "TRIALDESK_CLOCK": f"{ms.AFTER}T12:00:00Z",
    }
    yield two, env
    a.runtime.close()
    engine.dispose()


READ_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("subject", "list", "--json"),
    ("subject", "show", "S101-0001", "--json"),
    ("subject", "eligibility", "S101-0001", "--json"),
    ("lists", "show", "--json"),
    ("lists", "status", "--json"),
    ("visits", "due", "--json"),
    ("endpoints", "safety"),
    ("endpoints", "efficacy"),
    ("endpoints", "interim"),
    ("queries", "list", "--json"),
    ("crc", "queue", "--json"),
    ("forecast", "--json", "--simulations", "200"),
    ("report", "enrolment", "--json", "--simulations", "200"),
    ("report", "consort", "--json"),
    ("report", "compliance", "--json"),
    ("report", "screening", "--json"),
    ("report", "deviations", "--json"),
    ("report", "queries", "--json"),
    ("report", "crc", "--json"),
    ("report", "unblinding", "--json"),
    ("report", "dsmb"),
)


HIDDEN = f"error: study {ms.B_CODE} not found [not-found]\n"
"""The whole answer to ``--study BETA`` for a user of A: the line an unknown study gets."""


def _hidden(env: dict[str, str], args: tuple[str, ...], role: str) -> None:
    hidden = run(env, *args, "--study", ms.B_CODE, "--user", role)
    assert hidden.exit_code == 1, (role, args, hidden.output)
    assert (hidden.stdout, hidden.stderr) == ("", HIDDEN), (role, args, hidden.output)


def test_prot1_commands_refuse_study_b_and_show_nothing_of_it_to_users_of_a(
    sqlite_two: tuple[ms.TwoStudies, dict[str, str]], tmp_path: Path
) -> None:
    """PROT-1: every command given ``--study BETA`` by A's coordinator (and a sample by A's
    manager and statistician) fails with the very line an unknown study gets and writes
    nothing; each read command and export of A (the default study of its
    users) prints and writes nothing of B; S101-0001 is A's."""
    two, env = sqlite_two
    unknown = run(env, "subject", "list", "--study", "NOSUCH", "--user", "coordinator")
    assert unknown.stderr.replace("NOSUCH", ms.B_CODE) == HIDDEN
    commands = _cli_commands(str(tmp_path / "out"))
    assert len(commands) > 40
    before = _state(two.a)
    for args in commands:
        _hidden(env, args, "coordinator")
    for role in ("manager", "statistician"):  # the same sign-in path; a sample per role
        for args in (
            ("subject", "list"),
            ("report", "enrolment", "--simulations", "200"),
            ("endpoints", "safety"),
            ("export", "csv", "--out", str(tmp_path / "out")),
        ):
            _hidden(env, args, role)
    _nothing_written(two.a, before)

    succeeded = 0
    for role in SCOPED:
        for args in READ_COMMANDS:
            result = run(env, *args, "--user", role)
            assert not ms.leaks(result.output), (role, args, ms.leaks(result.output))
            succeeded += result.exit_code == 0
        for kind in ("csv", "odm", "sdtm"):
            out = tmp_path / f"{role}-{kind}"
            result = run(env, "export", kind, "--out", str(out), "--user", role)
            assert result.exit_code == (1 if role == "coordinator" else 0), result.output
            files = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
            text = result.output + "".join(
                _archive_text(p.read_bytes())
                if zipfile.is_zipfile(p)
                else p.read_bytes().decode("utf-8", errors="replace")
                for p in files
            )
            assert role == "coordinator" or "S101-0001" in text
            assert not ms.leaks(text), (role, kind, ms.leaks(text))
    assert succeeded >= 25
    shown = run(env, "subject", "show", "S101-0001", "--json", "--user", "coordinator")
    assert json.loads(shown.stdout)["protocol_version"] == "1.0"
    enrolment = run(
        env, "report", "enrolment", "--json", "--simulations", "200", "--user", "manager"
    )
    totals = json.loads(enrolment.stdout)
    assert (totals["registered"], totals["randomized"]) == (ms.A_REGISTERED, ms.A_RANDOMIZED)


# --------------------------------------------------------------------------- study create


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A database made by `trialdesk init --demo` (study FLAGSHIP), shared by the tests below
    (each uses study codes of its own)."""
    tmp_path = tmp_path_factory.mktemp("studies")
    env = {
        "TRIALDESK_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        "TRIALDESK_ALLOCATION_KEY_FILE": str(tmp_path / "k.key"),
        "TRIALDESK_PASSWORD": "trialdesk-demo",
    }
    result = run(env, "init", "--demo")
    assert result.exit_code == 0, result.output
    return env


def _studies(env: dict[str, str]) -> list[dict[str, Any]]:
    result = run(env, "study", "list", "--json")
    assert result.exit_code == 0, result.output
    studies: list[dict[str, Any]] = json.loads(result.stdout)
    return studies


def _counts(env: dict[str, str]) -> tuple[int, int]:
    engine = make_engine(env["TRIALDESK_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            studies = conn.scalar(select(func.count()).select_from(StudyRow))
            grants = conn.scalar(select(func.count()).select_from(RoleGrantRow))
    finally:
        engine.dispose()
    return int(studies or 0), int(grants or 0)


def test_prot1_study_create_adds_a_study_beside_the_first_and_study_list_shows_both(
    shell: dict[str, str], tmp_path: Path
) -> None:
    """PROT-1: `study create` adds a second study (the same protocol file, or another) to the
    database `init` made; `study list` shows code, name, mode, protocol version and sites;
    the demo users get their role in a demo study and can name it with --study."""
    second = tmp_path / "second.yaml"
    second.write_text(ms.second_protocol().text, encoding="utf-8")
    made = run(shell, "study", "create", "--code", ms.B_CODE, "--protocol", str(second), "--demo")
    assert made.exit_code == 0, made.output
    assert f"study {ms.B_CODE} created (demo): {ms.B_NAME} v{ms.B_VERSION}" in made.stdout
    same = run(
        shell, "study", "create", "--code", "SANDBOX-1", "--protocol", "flagship", "--sandbox"
    )
    assert same.exit_code == 0, same.output
    listed = _studies(shell)
    rows = [(s["code"], s["mode"], s["protocol_version"], s["sites"]) for s in listed]
    assert [r for r in rows if r[0] in {"FLAGSHIP", ms.B_CODE, "SANDBOX-1"}] == [
        ("FLAGSHIP", "demo", "1.0", 75),
        (ms.B_CODE, "demo", ms.B_VERSION, 75),
        ("SANDBOX-1", "sandbox", "1.0", 75),
    ]
    assert next(s["name"] for s in listed if s["code"] == ms.B_CODE) == ms.B_TITLE
    text = run(shell, "study", "list").stdout
    assert f"{ms.B_CODE}\t{ms.B_TITLE}\tdemo\t{ms.B_NAME} v{ms.B_VERSION}\t75 sites" in text
    mine = run(
        shell,
        "subject",
        "register",
        "--site",
        "S990",
        "--study",
        ms.B_CODE,
        "--user",
        "coordinator",
    )
    assert mine.exit_code == 1  # the demo coordinator's site in B is its first, S101
    added = run(
        shell,
        "subject",
        "register",
        "--site",
        "S101",
        "--study",
        ms.B_CODE,
        "--user",
        "coordinator",
        "--json",
    )
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["number"] == "S101-0001"
    several = run(shell, "subject", "list", "--user", "coordinator")
    assert several.exit_code == 1
    assert "several studies here; name one with --study" in several.stderr
    in_a = run(shell, "subject", "list", "--json", "--study", "FLAGSHIP", "--user", "coordinator")
    assert json.loads(in_a.stdout)["total"] == 0  # B's S101-0001 is not A's


def test_prot1_study_create_refuses_bad_input_with_one_line_and_changes_nothing(
    shell: dict[str, str], tmp_path: Path
) -> None:
    """PROT-1: an existing code, a bad code, a missing or invalid protocol file, both modes,
    and a live study under a fixed clock are each one clear line; nothing is created."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    before = _counts(shell)
    cases = [
        (("--code", "FLAGSHIP", "--protocol", "flagship"), "study FLAGSHIP already exists"),
        (("--code", "two words", "--protocol", "flagship"), "invalid study code"),
        (("--code", "B2", "--protocol", str(tmp_path / "none.yaml")), "file not found"),
        (("--code", "B2", "--protocol", str(broken)), "has 1 problem"),
        (("--code", "B2", "--protocol", "flagship", "--demo", "--sandbox"), "choose one of"),
    ]
    for args, message in cases:
        result = run(shell, "study", "create", *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
    clocked = {**shell, "TRIALDESK_CLOCK": "2027-03-01T12:00:00Z"}
    result = run(clocked, "study", "create", "--code", "LIVE2", "--protocol", "flagship")
    assert result.exit_code == 1
    assert "only allowed for demo and sandbox studies" in result.stderr
    assert _counts(shell) == before


def test_prot1_study_grant_gives_a_user_of_one_study_a_role_in_another(
    shell: dict[str, str],
) -> None:
    """PROT-1: the local operator gives a user of study A a role in study B (`study grant`);
    the user then names B with --study; an unknown study, user, role or site is one line."""
    made = run(shell, "study", "create", "--code", "GRANTED", "--protocol", "flagship")
    assert made.exit_code == 0, made.output
    refused = run(shell, "subject", "list", "--study", "GRANTED", "--user", "monitor")
    assert "study GRANTED not found" in refused.stderr
    before = _counts(shell)
    for args, message in [
        (("monitor", "--study", "NOSUCH", "--role", "monitor"), "study NOSUCH not found"),
        (("nobody", "--study", "GRANTED", "--role", "monitor"), "user nobody not found"),
        (("monitor", "--study", "GRANTED", "--role", "wizard"), "unknown role"),
        (("monitor", "--study", "GRANTED", "--role", "coordinator"), "needs a site"),
        (
            ("monitor", "--study", "GRANTED", "--role", "coordinator", "--site", "S999"),
            "site S999 not found",
        ),
    ]:
        result = run(shell, "study", "grant", *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    assert _counts(shell) == before
    granted = run(shell, "study", "grant", "monitor", "--study", "GRANTED", "--role", "monitor")
    assert granted.exit_code == 0, granted.output
    assert "monitor now holds in GRANTED: monitor" in granted.stdout
    listed = run(shell, "subject", "list", "--json", "--study", "GRANTED", "--user", "monitor")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["total"] == 0
