"""The documentation keeps up with the code: requirements, traceability, CLI reference, README.

The generated files are compared with a fresh rendering, so whoever adds a test or a command
only has to rerun the generator (`make docs`).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import typer
from scripts import cli_reference, traceability

from trialdesk.cli.setup_cmd import DEMO_PASSWORD
from trialdesk.services.setup import DEMO_USERS

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = ROOT.parent / "shared" / "spec" / "SYSTEM.md"
README = ROOT / "README.md"

# Requirement ids have one or two digits; this keeps "SHA-256" out.
_SYSTEM_ID = re.compile(r"(?<![\w-])([A-Z]{2,5}-\d{1,2})(?![\w.])")


def _requirements() -> list[traceability.Requirement]:
    return traceability.read_requirements(ROOT / traceability.REQUIREMENTS)


def _scan() -> traceability.Scan:
    return traceability.scan(ROOT, [r.id for r in _requirements()])


# --- docs/requirements.md -------------------------------------------------------------------


def test_requirements_table_has_unique_ids_and_known_statuses() -> None:
    rows = _requirements()
    ids = [r.id for r in rows]
    assert len(rows) >= 40, "docs/requirements.md: the requirements table was not found"
    assert len(ids) == len(set(ids)), "duplicate ids in docs/requirements.md"
    bad = {r.id: r.status for r in rows if r.status not in traceability.STATUSES}
    assert not bad, f"statuses must be one of {traceability.STATUSES}: {bad}"
    unexplained = [r.id for r in rows if r.status == "partial" and not r.notes]
    assert not unexplained, f"partial rows must say what is missing: {unexplained}"


def test_every_implemented_requirement_has_a_citing_test() -> None:
    scan = _scan()
    untested = [r.id for r in _requirements() if r.status == "implemented" and not scan.by_id[r.id]]
    assert not untested, (
        f"marked implemented in docs/requirements.md but no test cites them: {untested}; "
        "name the id in a test (test_rand5_..., a docstring or pytest.mark.req) or mark it partial"
    )


def test_every_system_requirement_is_in_the_requirements_table() -> None:
    if not SYSTEM.exists():
        pytest.skip(f"{SYSTEM} not present (only beside the project checkout)")
    wanted = set(_SYSTEM_ID.findall(SYSTEM.read_text(encoding="utf-8")))
    listed = {r.id for r in _requirements()}
    assert wanted, "no requirement ids found in SYSTEM.md"
    assert not wanted - listed, f"missing from docs/requirements.md: {sorted(wanted - listed)}"
    # the project's own ids (REC-1..) use prefixes SYSTEM.md does not; one of its prefixes
    # with an id it does not have is a typo
    prefixes = {rid.split("-")[0] for rid in wanted}
    strays = {rid for rid in listed - wanted if rid.split("-")[0] in prefixes}
    assert not strays, f"not in SYSTEM.md: {sorted(strays)}"


# --- docs/traceability.md -------------------------------------------------------------------


def test_traceability_matrix_is_up_to_date() -> None:
    on_disk = (ROOT / traceability.MATRIX).read_text(encoding="utf-8")
    assert on_disk == traceability.generate(ROOT), (
        "docs/traceability.md is stale: run python scripts/traceability.py"
    )


def test_tests_cite_only_ids_that_exist() -> None:
    """An id with a known prefix but no requirement (a RAND id past the last) is a typo."""
    unknown = {rid: [c.target for c in cs] for rid, cs in _scan().unknown.items()}
    assert not unknown, f"tests cite ids that are not requirements: {unknown}"


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")


def test_scanner_reads_names_docstrings_markers_and_ranges(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "tests/unit/test_sample.py",
        '''
        """Journey tests (LIFE-1..3, THER-1..THER-2)."""
        import pytest

        def test_rand5_elig_4_concurrent_requests():
            pass

        def test_window_end_1_day_after_rand6():
            """Cites SCHED-2 and RAND-9 in prose."""

        @pytest.mark.req("AUD-1")
        def test_plain_name():
            pass

        def helper_rand3():
            pass

        class TestSigning:
            """SIG-1 e-signatures."""

            def test_data2_correction(self):
                pass
        ''',
    )
    ids = [
        "LIFE-1", "LIFE-2", "LIFE-3", "LIFE-4", "THER-1", "THER-2", "RAND-3", "RAND-5",
        "RAND-6", "ELIG-4", "END-1", "SCHED-2", "AUD-1", "SIG-1", "DATA-2",
    ]  # fmt: skip
    scan = traceability.scan(tmp_path, ids)
    cited = {rid: [c.target.split("::", 1)[-1] for c in cs] for rid, cs in scan.by_id.items()}
    module = "tests/unit/test_sample.py"
    assert cited["LIFE-1"] == cited["LIFE-2"] == cited["LIFE-3"] == [module]
    assert cited["LIFE-4"] == []
    assert cited["THER-1"] == cited["THER-2"] == [module]
    assert cited["RAND-5"] == cited["ELIG-4"] == ["test_rand5_elig_4_concurrent_requests"]
    # compact ids count anywhere in a name, split ones only at the front
    assert cited["RAND-6"] == cited["SCHED-2"] == ["test_window_end_1_day_after_rand6"]
    assert cited["END-1"] == []
    assert cited["AUD-1"] == ["test_plain_name"]
    assert cited["RAND-3"] == [], "helpers are not tests"
    assert cited["SIG-1"] == ["TestSigning"]
    assert cited["DATA-2"] == ["TestSigning::test_data2_correction"]
    assert list(scan.unknown) == ["RAND-9"]


def test_matrix_lists_untested_requirements_and_check_mode_detects_staleness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(
        tmp_path,
        "docs/requirements.md",
        """
        | id | requirement | status | where | notes |
        |---|---|---|---|---|
        | AUD-1 | Hash-chained trail. | implemented | `domain/audit.py` | |
        | SIG-1 | Signatures. | not yet | | |
        """,
    )
    _write(tmp_path, "tests/test_audit.py", "def test_aud1_chain():\n    pass\n")
    text = traceability.generate(tmp_path)
    assert "- `tests/test_audit.py::test_aud1_chain`" in text
    untested = text.split("## Requirements with no test", 1)[1]
    assert "SIG-1" in untested and "AUD-1" not in untested

    monkeypatch.setattr(traceability, "ROOT", tmp_path)
    assert traceability.main([]) == 0
    assert traceability.main(["--check"]) == 0
    _write(tmp_path, "tests/test_signing.py", "def test_sig1_meaning():\n    pass\n")
    assert traceability.main(["--check"]) == 1
    assert "run python scripts/traceability.py" in capsys.readouterr().err


# --- docs/cli.md ----------------------------------------------------------------------------


def test_every_cli_command_is_in_the_cli_reference() -> None:
    reference = (ROOT / cli_reference.TARGET).read_text(encoding="utf-8")
    commands = [c.name for c in cli_reference.walk()]
    assert "trialdesk subject register" in commands and "trialdesk audit verify" in commands
    missing = [name for name in commands if f"\n## {name}\n" not in reference]
    assert not missing, f"docs/cli.md lacks {missing}: run python scripts/cli_reference.py"


def test_cli_reference_is_up_to_date() -> None:
    on_disk = (ROOT / cli_reference.TARGET).read_text(encoding="utf-8")
    assert on_disk == cli_reference.generate(), (
        "docs/cli.md is stale: run python scripts/cli_reference.py"
    )


def test_cli_reference_renders_a_new_command_and_its_options() -> None:
    app = typer.Typer()
    group = typer.Typer(help="Things.")

    @group.command("frobnicate")
    def frobnicate(count: int = typer.Option(3, "--count", help="how many times")) -> None:
        """Frobnicate the things."""

    app.add_typer(group, name="things")
    commands = list(cli_reference.walk(app))
    assert [c.name for c in commands] == [
        "trialdesk",
        "trialdesk things",
        "trialdesk things frobnicate",
    ]
    text = cli_reference.render(commands)
    assert "## trialdesk things frobnicate" in text
    assert "Usage: trialdesk things frobnicate [OPTIONS]" in text
    assert re.search(r"--count <int>\s+how many times", text)
    assert "\x1b[" not in text, "no terminal colour codes in the reference"


# --- README.md ------------------------------------------------------------------------------


def test_readme_names_every_demo_user_and_the_demo_password() -> None:
    readme = README.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    missing = [name for name, _, _ in DEMO_USERS if f"`{name}`" not in readme]
    assert not missing, f"README.md's demo user table lacks {missing}"
    assert f"`{DEMO_PASSWORD}`" in readme
    assert f"DEMO_PASSWORD := {DEMO_PASSWORD}" in makefile
    unprinted = [name for name, _, _ in DEMO_USERS if not re.search(rf"\b{name}\b", makefile)]
    assert not unprinted, f"make run does not print demo users {unprinted}"


def test_readme_documents_every_environment_variable() -> None:
    sources = [ROOT / "src/trialdesk/config.py", ROOT / "tests/conftest.py"]
    names = {n for p in sources for n in re.findall(r"TRIALDESK_[A-Z_]+", p.read_text("utf-8"))}
    assert "TRIALDESK_DATABASE_URL" in names
    readme = README.read_text(encoding="utf-8")
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"README.md's settings table lacks {missing}"
