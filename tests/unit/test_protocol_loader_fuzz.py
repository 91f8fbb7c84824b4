"""Property-based check of the protocol loader (PROT-1, DATA-1): the flagship file mutated in
many ways (a key deleted, a value of another type, a duplicated list entry, a number out of
range, a random YAML scalar dropped into a line, the text cut short, a stray character) is
either a valid protocol or refused with ProtocolInvalid listing each problem with a message
(and its line where the problem is at a place in the file), never any other exception.

Derandomized with a bounded number of examples, so CI tries the same files every run.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialdesk.protocol.loader import (
    LoadedProtocol,
    ProtocolInvalid,
    flagship_path,
    parse_protocol,
)

FLAGSHIP = flagship_path().read_text(encoding="utf-8")
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
Path = tuple[str | int, ...]
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@lru_cache(maxsize=1)
def flagship_data() -> dict[str, Any]:
    data = yaml.safe_load(FLAGSHIP)
    assert isinstance(data, dict)
    return data


def _paths(node: Any, prefix: Path = ()) -> list[Path]:
    out: list[Path] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append((*prefix, index))
            out.extend(_paths(value, (*prefix, index)))
    return out


@lru_cache(maxsize=1)
def all_paths() -> list[Path]:
    """Every key and list entry of the flagship, sites after the third left out (74 more of
    the same shape add time, not cases)."""
    return [
        p
        for p in _paths(flagship_data())
        if not (p[0] == "sites" and len(p) > 1 and isinstance(p[1], int) and p[1] >= 3)
    ]


def _parent(data: Any, path: Path) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from([0, -1, 10**9, math.inf, -math.inf, math.nan, 1e308]),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@st.composite
def structural_mutation(draw: st.DrawFn) -> tuple[str, Path, str]:
    """The flagship as YAML after one change at one place: (kind, where, text)."""
    data = copy.deepcopy(flagship_data())
    path = draw(st.sampled_from(all_paths()))
    parent = _parent(data, path)
    key = path[-1]
    kind = draw(st.sampled_from(["delete", "retype", "duplicate", "out_of_range"]))
    if kind == "delete":
        del parent[key]
    elif kind == "retype":
        parent[key] = draw(SCALARS)
    elif kind == "duplicate" and isinstance(parent, list) and isinstance(key, int):
        parent.append(copy.deepcopy(parent[key]))  # the same id twice
    else:
        kind = "out_of_range"
        parent[key] = draw(st.sampled_from([-1, 0, -(10**12), 10**12, 2**63, 0.5, -0.5]))
    return kind, path, yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=True)


@st.composite
def text_mutation(draw: st.DrawFn) -> tuple[str, str]:
    """The flagship text cut short, or with a random scalar or character put into a line."""
    kind = draw(st.sampled_from(["truncate", "scalar", "character"]))
    at = draw(st.integers(min_value=0, max_value=len(FLAGSHIP)))
    if kind == "truncate":
        return kind, FLAGSHIP[:at]
    if kind == "scalar":
        scalar = draw(
            st.sampled_from(
                [
                    "~",
                    "null",
                    "yes",
                    "no",
                    "on",
                    "0x1F",
                    "1e400",
                    ".nan",
                    "-.inf",
                    "2027-13-45",
                    "!!binary AAAA",
                    "&a",
                    "*a",
                    "[",
                    "{",
                    "'",
                    '"',
                    "- ",
                    ": ",
                    "? ",
                    "%YAML 1.1",
                    "---",
                    "...",
                    "|",
                    ">",
                    "@",
                    "`",
                    "!!python/object:os.system",
                    "<<: *x",
                ]
            )
        )
        return kind, FLAGSHIP[:at] + scalar + FLAGSHIP[at:]
    char = draw(st.characters(codec="utf-8", exclude_characters="\n"))
    return kind, FLAGSHIP[:at] + char + FLAGSHIP[at:]


def outcome(text: str) -> LoadedProtocol | ProtocolInvalid:
    """The loader's answer; any other exception fails the test (it propagates)."""
    try:
        return parse_protocol(text, "fuzz.yaml")
    except ProtocolInvalid as exc:
        return exc


def check_refusal(refusal: ProtocolInvalid, text: str) -> None:
    """One message naming the count and the first problem; every problem says something and
    points into the file when it has a line."""
    assert refusal.problems, "a refusal names at least one problem"
    for problem in refusal.problems:
        assert problem.message.strip(), problem
        assert problem.line is None or 1 <= problem.line <= text.count("\n") + 1, problem
    assert refusal.message.startswith("protocol file fuzz.yaml has ")
    assert str(refusal.problems[0]) in refusal.message


@FUZZ
@given(structural_mutation())
def test_prot1_mutated_flagship_is_loaded_or_refused_with_located_problems(
    case: tuple[str, Path, str],
) -> None:
    """A structural change is a valid protocol or problems; the problem is located (a line)
    whenever the change left a place in the file to point to."""
    kind, _path, text = case
    result = outcome(text)
    if isinstance(result, ProtocolInvalid):
        check_refusal(result, text)
    if isinstance(result, ProtocolInvalid) and kind != "delete":
        assert any(p.line is not None for p in result.problems), [str(p) for p in result.problems]


@FUZZ
@given(text_mutation())
def test_prot1_damaged_flagship_text_is_loaded_or_refused(case: tuple[str, str]) -> None:
    """Cut short, or with a stray scalar or character: valid, or ProtocolInvalid, never a
    crash of the YAML reader or of the models."""
    _kind, text = case
    result = outcome(text)
    if isinstance(result, ProtocolInvalid):
        check_refusal(result, text)


@pytest.mark.parametrize("char", ["\x1b", "\x07", "\x00", "\ufffe"])
def test_prot1_control_character_is_one_problem_with_its_line(char: str) -> None:
    """Found by fuzzing (the amendment preview answered 500): a character YAML refuses, at the
    very start or further down, is one problem naming the character and its line."""
    for at, line in (
        (0, 1),
        (FLAGSHIP.index("\narms:") + 1, FLAGSHIP[: FLAGSHIP.index("\narms:")].count("\n") + 2),
    ):
        with pytest.raises(ProtocolInvalid) as caught:
            parse_protocol(FLAGSHIP[:at] + char + FLAGSHIP[at:], "fuzz.yaml")
        (problem,) = caught.value.problems
        assert problem.line == line
        assert f"U+{ord(char):04X}" in problem.message


def test_prot1_duplicate_arm_code_is_refused_at_its_line() -> None:
    """A duplicated id is named, with the line of the second one."""
    data = copy.deepcopy(flagship_data())
    data["arms"].append(copy.deepcopy(data["arms"][0]))
    with pytest.raises(ProtocolInvalid) as caught:
        parse_protocol(yaml.dump(data, Dumper=DUMPER, sort_keys=False), "fuzz.yaml")
    assert any("INT" in p.message and p.line for p in caught.value.problems), [
        str(p) for p in caught.value.problems
    ]
