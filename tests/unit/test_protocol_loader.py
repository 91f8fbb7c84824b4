"""The protocol loader: every problem of a file, each with its YAML line (ELIG-1, ...)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from trialdesk.domain.errors import TrialError
from trialdesk.protocol import models
from trialdesk.protocol.loader import (
    LoadedProtocol,
    Problem,
    ProtocolInvalid,
    flagship_path,
    load_protocol,
    parse_protocol,
)

FLAGSHIP = flagship_path().read_text(encoding="utf-8")


def mutate(old: str, new: str, text: str = FLAGSHIP) -> str:
    """The flagship with one unique piece of text replaced."""
    assert text.count(old) == 1, f"{old!r} is not unique in the flagship"
    return text.replace(old, new)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th ``needle`` in ``text``."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    return text.count("\n", 0, index) + 1


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ProtocolInvalid) as caught:
        parse_protocol(text, "test.yaml")
    return caught.value.problems


def only_problem(text: str) -> Problem:
    problems = problems_of(text)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# --- the flagship and the fingerprint --------------------------------------------------------


def test_protocol_flagship_loads_from_the_package() -> None:
    loaded = load_protocol()
    p = loaded.protocol
    assert isinstance(loaded, LoadedProtocol)
    assert [(a.code, a.label, a.ratio) for a in p.arms] == [
        ("INT", "Intervention (CARILLON implant)", 1),
        ("CTRL", "Control (sham procedure)", 1),
    ]
    assert p.enrolment.target_subjects == 352
    assert p.enrolment.total_cap == 352
    assert len(p.sites) == 75
    assert {r.code for r in p.regions} == {"US", "CA", "EU", "AU"}
    assert loaded.source == str(flagship_path())
    assert loaded.text == FLAGSHIP


def test_protocol_sha256_is_of_the_exact_file_bytes(tmp_path: Path) -> None:
    raw = flagship_path().read_bytes()
    assert load_protocol().sha256 == hashlib.sha256(raw).hexdigest()
    assert parse_protocol(FLAGSHIP).sha256 == hashlib.sha256(raw).hexdigest()
    # one more comment is another file: records must not point to it as the same protocol
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(raw + b"# amended\n")
    assert load_protocol(copy).sha256 != load_protocol().sha256
    assert load_protocol(copy).protocol == load_protocol().protocol


@pytest.mark.req("SCHED-1")
def test_sched_1_flagship_visits_are_the_table() -> None:
    visits = load_protocol().protocol.visits
    table = [(v.code, v.kind.value, v.target_day, v.window_before, v.window_after) for v in visits]
    assert table == [
        ("M1", "clinic", 30, 7, 7),
        ("M6", "clinic", 180, 30, 30),
        ("M12", "clinic", 365, 30, 30),
        ("M18", "clinic", 545, 30, 30),
        ("M24", "clinic", 730, 30, 30),
        ("Y3", "phone", 1095, 60, 60),
        ("Y4", "phone", 1460, 60, 60),
        ("Y5", "phone", 1825, 60, 60),
    ]
    assert all(v.assumption for v in visits)


@pytest.mark.req("ELIG-1")
def test_elig_1_flagship_has_rule_and_investigator_criteria_at_three_gates() -> None:
    criteria = load_protocol().protocol.criteria
    assert any(c.rule is None for c in criteria)
    assert {c.gate.value for c in criteria if c.rule is not None} == {"echo", "anatomy"}
    assert all(c.assumption for c in criteria if c.kind == "exclusion")


# --- problems: str, error type ----------------------------------------------------------------


def test_prot_problem_reads_line_path_message() -> None:
    assert str(Problem("visits[2].window_before", 12, "overlaps")) == (
        "line 12: visits[2].window_before: overlaps"
    )
    assert str(Problem("", None, "file not found")) == "file not found"


def test_prot_protocol_invalid_is_a_trial_error_naming_count_and_source() -> None:
    text = mutate("ratio: 1\n    procedure_form: implant", "ratio: 0\n    procedure_form: implant")
    with pytest.raises(ProtocolInvalid) as caught:
        parse_protocol(text, "amend-2.yaml")
    exc = caught.value
    assert isinstance(exc, TrialError)
    assert exc.code == "protocol-invalid"
    assert "amend-2.yaml" in exc.message
    assert "1 problem" in exc.message


# --- file-level problems ----------------------------------------------------------------------


def test_prot_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ProtocolInvalid) as caught:
        load_protocol(tmp_path / "nope.yaml")
    assert [p.message for p in caught.value.problems] == ["file not found"]


def test_prot_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolInvalid) as caught:
        load_protocol(tmp_path)
    assert "directory" in caught.value.problems[0].message


def test_prot_non_utf8_bytes_are_refused_with_their_line(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: x\nversion: '1'\ntitle: Caf\xe9\n")
    with pytest.raises(ProtocolInvalid) as caught:
        load_protocol(bad)
    (problem,) = caught.value.problems
    assert problem.line == 3
    assert "UTF-8" in problem.message


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n", "---\n"])
def test_prot_empty_file_is_refused(text: str) -> None:
    assert only_problem(text).message == "file is empty"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_prot_top_level_must_be_a_mapping(text: str) -> None:
    problem = only_problem(text)
    assert problem.line == 1
    assert "mapping" in problem.message


def test_prot_yaml_syntax_error_has_its_line() -> None:
    text = mutate("  cap_total: 352\n", "  cap_total: [352\n")
    problem = only_problem(text)
    assert problem.message.startswith("YAML syntax")
    assert problem.line is not None
    assert line_of(text, "cap_total") <= problem.line <= line_of(text, "cap_total") + 2


def test_prot_tab_indentation_is_a_syntax_error_with_line() -> None:
    text = mutate("  target_subjects: 352\n", "\ttarget_subjects: 352\n")
    problem = only_problem(text)
    assert problem.line == line_of(text, "\ttarget_subjects")


def test_prot_duplicate_key_names_both_lines() -> None:
    text = mutate("  cap_total: 352\n", "  cap_total: 352\n  cap_total: 352\n")
    problem = only_problem(text)
    first, second = line_of(text, "cap_total"), line_of(text, "cap_total", 2)
    assert problem.line == second
    assert problem.path == "enrolment.cap_total"
    assert f"first at line {first}" in problem.message


def test_prot_unsafe_yaml_tag_is_refused_with_line() -> None:
    text = mutate("  cap_total: 352\n", "  cap_total: !!python/object:os.system 352\n")
    problem = only_problem(text)
    assert problem.line == line_of(text, "cap_total")


# --- model errors, mapped to YAML lines --------------------------------------------------------


@pytest.mark.req("RAND-1")
def test_rand_1_ratio_of_zero_is_refused_at_its_line() -> None:
    text = mutate("ratio: 1\n    procedure_form: sham", "ratio: 0\n    procedure_form: sham")
    problem = only_problem(text)
    assert problem.path == "arms[1].ratio"
    assert problem.line == line_of(text, "ratio: 0")
    assert "greater than or equal to 1" in problem.message


def test_prot_unknown_key_suggests_the_right_one() -> None:
    text = mutate("  cap_total: 352\n", "  cap_total: 352\n  cap_per_sight: 20\n")
    problem = only_problem(text)
    assert problem.path == "enrolment.cap_per_sight"
    assert problem.line == line_of(text, "cap_per_sight")
    assert "unknown key" in problem.message
    assert "cap_per_site" in problem.message


@pytest.mark.req("SCHED-1")
def test_sched_1_wrong_type_in_a_visit_has_the_visit_line() -> None:
    text = mutate("target_day: 545,", "target_day: eighteen months,")
    problem = only_problem(text)
    assert problem.path == "visits[3].target_day"
    assert problem.line == line_of(text, "code: M18")
    assert "integer" in problem.message


def test_prot_unquoted_version_number_says_to_quote_it() -> None:
    text = mutate('version: "1.0"', "version: 1.0")
    problem = only_problem(text)
    assert (problem.path, problem.line) == ("version", line_of(text, "version: 1.0"))
    assert "quotes" in problem.message


@pytest.mark.req("RAND-1")
def test_rand_1_missing_key_is_reported_at_its_parent() -> None:
    text = mutate("    label: Control (sham procedure)\n", "")
    problem = only_problem(text)
    assert problem.path == "arms[1].label"
    assert problem.message == "required key missing"
    assert problem.line == line_of(text, "- code: CTRL")


@pytest.mark.req("ELIG-1")
def test_elig_1_bad_rule_is_one_problem_not_one_per_union_branch() -> None:
    text = mutate(
        "rule: {field: tte.lvef_pct, op: le, value: 50}",
        "rule: {field: tte.lvef_pct, op: below, value: 50}",
    )
    problem = only_problem(text)
    assert problem.path == "criteria[5].rule.op"
    assert problem.line == line_of(text, "op: below")


@pytest.mark.req("ELIG-1")
def test_elig_1_rule_that_is_text_is_one_problem() -> None:
    text = mutate("rule: {field: tte.lvef_pct, op: le, value: 50}", "rule: LVEF below 50")
    problem = only_problem(text)
    assert problem.path == "criteria[5].rule"
    assert "condition" in problem.message
    assert "all" in problem.message


@pytest.mark.req("ELIG-1")
def test_elig_1_error_deep_in_a_nested_rule_has_its_path_and_line() -> None:
    text = mutate(
        "- {field: heart_team.surgeon_present, op: is_true}",
        "- {field: heart_team.surgeon_present, op: is_true, value: {yes: 1}}",
    )
    problem = only_problem(text)
    assert problem.path == "criteria[2].rule.any[1].all[1].value"
    assert problem.line == line_of(text, "heart_team.surgeon_present")
    assert "a list" in problem.message


@pytest.mark.req("ELIG-1")
def test_elig_1_unknown_key_in_a_combinator_is_reported_once() -> None:
    text = mutate(
        "      any:\n        - {field: tte.mr_grade", "      anyof:\n        - {field: tte.mr_grade"
    )
    problems = problems_of(text)
    assert [p.path for p in problems] == ["criteria[2].rule"]
    assert "did you mean 'any'" in problems[0].message
    assert problems[0].line == line_of(text, "anyof") - 1


def test_prot_every_problem_is_listed_in_line_order() -> None:
    text = mutate("ratio: 1\n    procedure_form: implant", "ratio: 0\n    procedure_form: implant")
    text = mutate("target_subjects: 352", "target_subjects: many", text)
    text = mutate("target_day: 1460,", "target_day: -1,", text)
    problems = problems_of(text)
    assert [p.path for p in problems] == [
        "arms[0].ratio",
        "enrolment.target_subjects",
        "visits[6].target_day",
    ]
    assert [p.line for p in problems] == [
        line_of(text, "ratio: 0"),
        line_of(text, "target_subjects"),
        line_of(text, "code: Y4"),
    ]


def test_prot_recursive_alias_does_not_crash() -> None:
    problems = problems_of("name: &loop [*loop]\n")
    assert any(p.path == "name" for p in problems)


def test_prot_non_text_key_is_a_problem() -> None:
    text = mutate("  cap_total: 352\n", "  cap_total: 352\n  7: seven\n")
    problem = only_problem(text)
    assert problem.line == line_of(text, "7: seven")


# --- cross-file checks get their lines too ------------------------------------------------------


@pytest.mark.req("SCHED-1")
def test_sched_1_overlapping_windows_are_refused_at_the_later_visit() -> None:
    text = mutate("target_day: 180, window_before: 30", "target_day: 180, window_before: 143")
    problem = only_problem(text)
    assert problem.path == "visits[1].window_before"
    assert problem.line == line_of(text, "code: M6")
    assert "overlaps M1" in problem.message


@pytest.mark.req("TIME-1")
def test_time_1_bad_time_zone_has_the_site_line() -> None:
    text = mutate("timezone: Pacific/Honolulu", "timezone: Hawaii/Honolulu")
    problem = only_problem(text)
    assert problem.path.endswith(".timezone")
    assert problem.line == line_of(text, "Hawaii/Honolulu")


def test_prot_model_and_check_problems_are_listed_together() -> None:
    text = mutate("timezone: Pacific/Honolulu", "timezone: Hawaii/Honolulu")
    text = mutate("unblind_after_visit: M24", "unblind_after_visit: M25", text)
    text = mutate("completion_visit: Y5", "completion_visit: Y6", text)
    problems = problems_of(text)
    assert len(problems) == 3
    assert [p.path for p in problems] == [
        problems[0].path,
        "blinding.unblind_after_visit",
        "follow_up.completion_visit",
    ]
    assert all(p.line is not None for p in problems)


def test_prot_checks_wait_for_a_valid_model() -> None:
    # a check would read the broken arms; the model problem alone is reported first
    text = mutate("ratio: 1\n    procedure_form: implant", "ratio: 0\n    procedure_form: implant")
    text = mutate("unblind_after_visit: M24", "unblind_after_visit: M25", text)
    assert [p.path for p in problems_of(text)] == ["arms[0].ratio"]


# --- docs ---------------------------------------------------------------------------------------


def _model_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    keys: set[str] = set()
    if model in seen:
        return keys
    seen.add(model)
    for name, info in model.model_fields.items():
        keys.add(info.alias or name)
        for found in re.findall(r"\b[A-Z][A-Za-z]+\b", str(info.annotation)):
            sub = getattr(models, found, None)
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys |= _model_keys(sub, seen)
    return keys


@pytest.mark.req("DATA-1")
def test_data_1_every_protocol_key_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "protocol-format.md").read_text(encoding="utf-8")
    # one table row per key: "| `key` |" or "| `parent[].key` |"
    rows = re.findall(r"^\| `([^`]+)` \|", doc, flags=re.MULTILINE)
    documented = {row.rsplit(".", 1)[-1].removesuffix("[]") for row in rows}
    missing = sorted(_model_keys(models.Protocol, set()) - documented)
    assert not missing, f"docs/protocol-format.md does not describe: {missing}"
