"""`trialdesk protocol validate|show` through the real Typer app (SCHED-1, RAND-1)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from trialdesk.cli.main import build_app
from trialdesk.protocol.loader import flagship_path

FLAGSHIP = flagship_path().read_text(encoding="utf-8")


def run(*args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args))


def write(tmp_path: Path, text: str, name: str = "protocol.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_clean_failure(result: Result) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_protocol_validate_flagship_prints_one_summary_line() -> None:
    result = run("protocol", "validate", str(flagship_path()))
    assert result.exit_code == 0, result.output
    sha = hashlib.sha256(flagship_path().read_bytes()).hexdigest()
    assert result.stdout == (
        f"ok: CARILLON-style FMR sham-controlled trial (flagship) v1.0 sha256 {sha[:12]}: "
        "2 arms, 8 visits, 18 criteria, 18 forms, 75 sites\n"
    )


def test_prot_validate_lists_every_problem_with_file_and_line(tmp_path: Path) -> None:
    text = FLAGSHIP.replace(
        "ratio: 1\n    procedure_form: sham", "ratio: 0\n    procedure_form: sham"
    )
    text = text.replace("target_subjects: 352", "target_subjects: many")
    text = text.replace("unblind_after_visit: M24", "unblind_after_visit: M25")
    path = write(tmp_path, text)
    result = run("protocol", "validate", str(path))
    assert_clean_failure(result)
    lines = result.stderr.splitlines()
    problems = [line for line in lines if line.startswith(f"{path}:")]
    assert len(problems) == 2  # the visit check waits until the model problems are fixed
    line_no = text[: text.index("ratio: 0")].count("\n") + 1
    assert problems[0].startswith(f"{path}:{line_no}: arms[1].ratio: ")
    assert re.match(rf"{re.escape(str(path))}:\d+: enrolment.target_subjects: ", problems[1])
    assert lines[-1] == f"error: {path}: 2 problems; the protocol was not accepted"
    assert result.stdout == ""


@pytest.mark.req("SCHED-1")
def test_sched_1_validate_reports_three_check_problems(tmp_path: Path) -> None:
    text = FLAGSHIP.replace(
        "target_day: 180, window_before: 30", "target_day: 180, window_before: 150"
    )
    text = text.replace("unblind_after_visit: M24", "unblind_after_visit: M25")
    text = text.replace("completion_visit: Y5", "completion_visit: Y6")
    path = write(tmp_path, text)
    result = run("protocol", "validate", str(path))
    assert_clean_failure(result)
    problems = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert [line.split(": ")[1] for line in problems] == [
        "visits[1].window_before",
        "blinding.unblind_after_visit",
        "follow_up.completion_visit",
    ]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "file not found"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"", "file is empty"),
        (b"name: [unclosed\n", "YAML syntax"),
        (b"- a list\n", "mapping"),
    ],
)
def test_prot_bad_files_fail_cleanly(tmp_path: Path, content: bytes | None, words: str) -> None:
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_bytes(content)
    for command in ("validate", "show"):
        result = run("protocol", command, str(path))
        assert_clean_failure(result)
        assert words in result.stderr


def test_prot_validate_a_directory_fails_cleanly(tmp_path: Path) -> None:
    result = run("protocol", "validate", str(tmp_path))
    assert_clean_failure(result)
    assert "directory" in result.stderr


@pytest.mark.req("RAND-1")
def test_rand_1_show_json_has_arms_visits_criteria() -> None:
    result = run("protocol", "show", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("name", "version", "sha256", "arms", "target_subjects", "visits", "criteria"):
        assert key in data
    assert data["sha256"] == hashlib.sha256(flagship_path().read_bytes()).hexdigest()
    assert data["version"] == "1.0"
    assert data["target_subjects"] == 352
    assert data["arms"] == [
        {"code": "INT", "label": "Intervention (CARILLON implant)", "ratio": 1},
        {"code": "CTRL", "label": "Control (sham procedure)", "ratio": 1},
    ]
    m1 = data["visits"][0]
    assert {k: m1[k] for k in ("code", "name", "kind", "target_day")} == {
        "code": "M1",
        "name": "1 month",
        "kind": "clinic",
        "target_day": 30,
    }
    assert (m1["window_before"], m1["window_after"]) == (7, 7)
    assert [v["code"] for v in data["visits"]] == [
        "M1",
        "M6",
        "M12",
        "M18",
        "M24",
        "Y3",
        "Y4",
        "Y5",
    ]


@pytest.mark.req("ELIG-1")
def test_elig_1_show_json_says_how_each_criterion_is_checked() -> None:
    data = json.loads(run("protocol", "show", "--json").stdout)
    by_id = {c["id"]: c for c in data["criteria"]}
    assert set(by_id["INC-6"]) >= {"id", "kind", "text", "check", "gate"}
    assert (by_id["INC-6"]["check"], by_id["INC-6"]["gate"]) == ("rule", "echo")
    assert by_id["INC-6"]["rule"] == "tte.lvef_pct ≤ 50"
    assert by_id["INC-8"]["check"] == "investigator"
    assert by_id["ANAT-2"]["gate"] == "anatomy"


@pytest.mark.req("SCHED-1")
def test_sched_1_show_tables_have_arms_windows_and_criteria(tmp_path: Path) -> None:
    path = write(tmp_path, FLAGSHIP)
    result = run("protocol", "show", str(path))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Intervention (CARILLON implant)" in out
    assert "23-37" in out  # M1's inclusive window in days
    assert "1765-1885" in out
    assert "INC-1" in out
    assert "ANAT-3" in out
    assert "target 352 subjects" in out


def test_protocol_show_json_of_another_file_has_its_own_fingerprint(tmp_path: Path) -> None:
    path = write(tmp_path, FLAGSHIP.replace('version: "1.0"', 'version: "1.1"'))
    data = json.loads(run("protocol", "show", str(path), "--json").stdout)
    assert data["version"] == "1.1"
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
