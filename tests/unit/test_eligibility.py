"""Eligibility criteria as data with three-valued logic (ELIG-0, ELIG-1, ELIG-4, LIFE-3)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trialdesk.domain.eligibility import (
    CriterionSpec,
    CriterionStatus,
    evaluate,
    evaluate_rule,
    fields_read,
    rule_problems,
)
from trialdesk.domain.errors import ValidationFailed

MET = CriterionStatus.MET
NOT_MET = CriterionStatus.NOT_MET
AWAITING_DATA = CriterionStatus.AWAITING_DATA
AWAITING_CONFIRMATION = CriterionStatus.AWAITING_CONFIRMATION


def cond(field: str, op: str, value: Any = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"field": field, "op": op}
    if value is not None:
        rule["value"] = value
    return rule


def status_of(
    rule: dict[str, Any],
    values: dict[str, dict[str, object]],
    kind: Literal["inclusion", "exclusion"] = "inclusion",
) -> CriterionStatus:
    crit = CriterionSpec(id="C1", kind=kind, text="t", rule=rule)
    return evaluate([crit], values, {}).outcome("C1").status


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("eq", 2, 2, MET),
        ("eq", 2, 3, NOT_MET),
        ("ne", 2, 3, MET),
        ("ne", 2, 2, NOT_MET),
        ("lt", 50, 49.9, MET),
        ("lt", 50, 50, NOT_MET),
        ("le", 50, 50, MET),
        ("le", 50, 50.1, NOT_MET),
        ("gt", 60, 61, MET),
        ("gt", 60, 60, NOT_MET),
        ("ge", 60, 60, MET),
        ("ge", 60, 59, NOT_MET),
        ("in", ["II", "III", "IVa"], "IVa", MET),
        ("in", ["II", "III", "IVa"], "IVb", NOT_MET),
        ("not_in", ["I", "IVb"], "III", MET),
        ("not_in", ["I", "IVb"], "I", NOT_MET),
        ("between", [150, 450], 150, MET),
        ("between", [150, 450], 450, MET),
        ("between", [150, 450], 149, NOT_MET),
        ("between", [150, 450], 451, NOT_MET),
        ("is_true", None, True, MET),
        ("is_true", None, False, NOT_MET),
        ("is_false", None, False, MET),
        ("is_false", None, True, NOT_MET),
    ],
)
def test_elig1_each_operator(
    op: str, value: Any, actual: object, expected: CriterionStatus
) -> None:
    """ELIG-1: every operator of the rule syntax, with ``between`` inclusive at both ends."""
    assert status_of(cond("f.x", op, value), {"f": {"x": actual}}) is expected


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("ge", 1, "3", MET),  # MR grade choice code against a YAML number
        ("ge", 1, "0", NOT_MET),
        ("eq", 3, "3", MET),
        ("in", [3, 4], "4", MET),
        ("eq", "3", "3", MET),
        ("eq", "3", "3.0", NOT_MET),  # two strings compare as strings
        ("eq", 1, True, NOT_MET),  # a boolean is never a number
        ("ge", "2027-01-01", dt.date(2027, 1, 1), MET),  # dates against ISO strings
        ("lt", "2027-01-01", dt.date(2027, 1, 1), NOT_MET),
    ],
)
def test_elig1_comparison_of_choice_codes_and_dates(
    op: str, value: Any, actual: object, expected: CriterionStatus
) -> None:
    """ELIG-1: numeric strings compare as numbers against numbers, strings as strings."""
    assert status_of(cond("f.x", op, value), {"f": {"x": actual}}) is expected


def test_elig1_ordering_text_is_refused_naming_the_criterion() -> None:
    """ELIG-1: ordering a text value is a protocol error, never silently false."""
    crit = CriterionSpec("INC-NYHA", "inclusion", "NYHA >= II", rule=cond("f.nyha", "ge", 2))
    with pytest.raises(ValidationFailed) as err:
        evaluate([crit], {"f": {"nyha": "II"}}, {})
    assert "INC-NYHA" in err.value.problems
    assert "f.nyha" in err.value.problems["INC-NYHA"]


def test_elig1_missing_value_awaits_data_and_names_the_field() -> None:
    """ELIG-1: a condition on a missing or None value is unknown, not failed."""
    crit = CriterionSpec("C1", "inclusion", "LVEF <= 50", rule=cond("tte.lvef", "le", 50))
    cases: list[dict[str, dict[str, object]]] = [{}, {"tte": {}}, {"tte": {"lvef": None}}]
    for values in cases:
        outcome = evaluate([crit], values, {}).outcome("C1")
        assert outcome.status is AWAITING_DATA
        assert outcome.fields == ("tte.lvef",)
        assert outcome.missing == ("tte.lvef",)


T, F, U = True, False, None
KLEENE_AND = {
    (T, T): T, (T, F): F, (T, U): U,
    (F, T): F, (F, F): F, (F, U): F,
    (U, T): U, (U, F): F, (U, U): U,
}  # fmt: skip
KLEENE_OR = {
    (T, T): T, (T, F): T, (T, U): T,
    (F, T): T, (F, F): F, (F, U): U,
    (U, T): T, (U, F): U, (U, U): U,
}  # fmt: skip


def _flags(a: bool | None, b: bool | None) -> dict[str, dict[str, object]]:
    return {"f": {"a": a, "b": b}}


@pytest.mark.parametrize(("a", "b"), list(KLEENE_AND))
def test_elig1_all_and_any_follow_kleene_logic(a: bool | None, b: bool | None) -> None:
    """ELIG-1: ``all``/``any`` are Kleene AND/OR: a false part decides ``all``, a true ``any``."""
    parts = [cond("f.a", "is_true"), cond("f.b", "is_true")]
    assert evaluate_rule({"all": parts}, _flags(a, b)) is KLEENE_AND[(a, b)]
    assert evaluate_rule({"any": parts}, _flags(a, b)) is KLEENE_OR[(a, b)]


@pytest.mark.parametrize(("a", "expected"), [(T, F), (F, T), (U, U)])
def test_elig1_not_keeps_unknown(a: bool | None, expected: bool | None) -> None:
    """ELIG-1: ``not`` of unknown is unknown."""
    assert evaluate_rule({"not": cond("f.a", "is_true")}, _flags(a, None)) is expected


_FIELDS = ("a", "b", "c")
_leaf = st.builds(
    cond, st.sampled_from([f"f.{n}" for n in _FIELDS]), st.sampled_from(["is_true", "is_false"])
)
_rules = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=8,
)


@given(rule=_rules, partial=st.fixed_dictionaries({n: st.sampled_from([T, F, U]) for n in _FIELDS}))
def test_elig1_known_answer_never_changes_when_data_arrives(
    rule: dict[str, Any], partial: dict[str, bool | None]
) -> None:
    """ELIG-1: a MET/NOT_MET decided on partial data stays the same for every completion."""
    verdict = evaluate_rule(rule, {"f": dict(partial)})
    if verdict is None:
        return
    unknown = [n for n, v in partial.items() if v is None]
    for filling in itertools.product([True, False], repeat=len(unknown)):
        complete = dict(partial) | dict(zip(unknown, filling, strict=True))
        assert evaluate_rule(rule, {"f": complete}) is verdict


def test_elig1_exclusion_holds_means_not_met() -> None:
    """ELIG-1: an exclusion rule states the exclusion; when it holds the subject is out."""
    rule = cond("hx.mi_within_3_months", "is_true")
    assert status_of(rule, {"hx": {"mi_within_3_months": True}}, "exclusion") is NOT_MET
    assert status_of(rule, {"hx": {"mi_within_3_months": False}}, "exclusion") is MET
    assert status_of(rule, {"hx": {}}, "exclusion") is AWAITING_DATA


def test_elig1_criteria_without_rule_await_investigator_confirmation() -> None:
    """ELIG-1: no rule -> awaiting confirmation; yes is MET, no is NOT_MET, either kind."""
    inc = CriterionSpec("INC-CM", "inclusion", "cardiomyopathy")
    exc = CriterionSpec("EXC-SURG", "exclusion", "cardiac surgery expected within 1 year")
    pending = evaluate([inc, exc], {}, {})
    assert [o.status for o in pending.outcomes] == [AWAITING_CONFIRMATION] * 2
    assert pending.pending_ids == ("INC-CM", "EXC-SURG")
    assert not pending.eligible
    confirmed = evaluate([inc, exc], {}, {"INC-CM": True, "EXC-SURG": True})
    assert confirmed.eligible
    refused = evaluate([inc, exc], {}, {"INC-CM": True, "EXC-SURG": False})
    assert refused.outcome("EXC-SURG").status is NOT_MET
    assert refused.failed_ids == ("EXC-SURG",)


def test_elig1_confirmation_cannot_override_a_rule() -> None:
    """ELIG-1: for a criterion with a rule, the data decide, not a confirmation."""
    crit = CriterionSpec("INC-LVEF", "inclusion", "LVEF <= 50", rule=cond("tte.lvef", "le", 50))
    result = evaluate([crit], {"tte": {"lvef": 55}}, {"INC-LVEF": True})
    assert result.outcome("INC-LVEF").status is NOT_MET


FLAGSHIP = [
    CriterionSpec(
        "INC-MR",
        "inclusion",
        "functional MR >= 1+; 4+ only if heart team says no surgery within a year",
        rule={
            "any": [
                cond("tte.mr_grade", "between", [1, 3]),
                {
                    "all": [
                        cond("tte.mr_grade", "eq", 4),
                        cond("team.no_surgery_within_1y", "is_true"),
                    ]
                },
            ]
        },
    ),
    CriterionSpec(
        "INC-NYHA",
        "inclusion",
        "NYHA II, III or IVa",
        rule=cond("scr.nyha", "in", ["II", "III", "IVa"]),
    ),
    CriterionSpec(
        "INC-6MW", "inclusion", "6MWD 150-450 m", rule=cond("scr.walk_m", "between", [150, 450])
    ),
    CriterionSpec("INC-LVEF", "inclusion", "LVEF <= 50 %", rule=cond("tte.lvef", "le", 50)),
    CriterionSpec("INC-LVEDD", "inclusion", "LVEDD >= 60 mm", rule=cond("tte.lvedd", "ge", 60)),
    CriterionSpec("INC-CM", "inclusion", "cardiomyopathy"),
    CriterionSpec(
        "EXC-STENT",
        "exclusion",
        "coronary stent under the CS/GCV target zone",
        gate="anatomy",
        rule=cond("angio.stent_under_target", "is_true"),
    ),
    CriterionSpec(
        "INC-VENO",
        "inclusion",
        "CS/GCV suitable",
        gate="anatomy",
        rule=cond("veno.suitable", "is_true"),
    ),
]

GOOD = {
    "tte": {"mr_grade": "2", "lvef": 35.0, "lvedd": 64},
    "scr": {"nyha": "III", "walk_m": 300},
    "team": {},
}


def test_elig0_flagship_inclusions_pass_at_echo_gate() -> None:
    """ELIG-0: a typical subject meets every echo-gate inclusion once CM is confirmed."""
    result = evaluate(FLAGSHIP, GOOD, {"INC-CM": True}, gate="echo")
    assert result.eligible, result.outcomes
    assert {o.id for o in result.outcomes} == {
        "INC-MR",
        "INC-NYHA",
        "INC-6MW",
        "INC-LVEF",
        "INC-LVEDD",
        "INC-CM",
    }


@pytest.mark.parametrize(
    ("grade", "team", "expected"),
    [
        ("0", None, NOT_MET),
        ("1", None, MET),
        ("4", None, AWAITING_DATA),
        ("4", True, MET),
        ("4", False, NOT_MET),
    ],
)
def test_elig0_mr_4plus_needs_heart_team(
    grade: str, team: bool | None, expected: CriterionStatus
) -> None:
    """ELIG-0: MR 4+ qualifies only with the heart team's no-surgery decision."""
    values = GOOD | {
        "tte": GOOD["tte"] | {"mr_grade": grade},
        "team": {"no_surgery_within_1y": team},
    }
    assert evaluate(FLAGSHIP, values, {}, gate="echo").outcome("INC-MR").status is expected


def test_elig1_failed_ids_feed_the_screening_log() -> None:
    """ELIG-1 / LIFE-3: every NOT_MET criterion id is reported, pending ones apart."""
    values = GOOD | {"tte": {"mr_grade": "2", "lvef": 55.0}, "scr": {"nyha": "I", "walk_m": 300}}
    result = evaluate(FLAGSHIP, values, {}, gate="echo")
    assert result.failed_ids == ("INC-NYHA", "INC-LVEF")
    assert result.pending_ids == ("INC-LVEDD", "INC-CM")
    assert not result.eligible


def test_elig4_gate_filter_evaluates_only_anatomy_criteria() -> None:
    """ELIG-4: the anatomy gate reads only angiogram and venogram; unsuitable is a failure."""
    suitable = evaluate(
        FLAGSHIP,
        {"angio": {"stent_under_target": False}, "veno": {"suitable": True}},
        {},
        gate="anatomy",
    )
    assert [o.id for o in suitable.outcomes] == ["EXC-STENT", "INC-VENO"]
    assert suitable.eligible
    unsuitable = evaluate(
        FLAGSHIP,
        {"angio": {"stent_under_target": True}, "veno": {"suitable": True}},
        {},
        gate="anatomy",
    )
    assert not unsuitable.eligible
    assert unsuitable.failed_ids == ("EXC-STENT",)
    not_yet = evaluate(FLAGSHIP, {"angio": {"stent_under_target": False}}, {}, gate="anatomy")
    assert not not_yet.eligible
    assert not_yet.pending_ids == ("INC-VENO",)


def test_elig1_fields_read_in_first_use_order_without_repeats() -> None:
    """ELIG-1: the fields a criterion reads are known (for forms and for 'awaiting' lists)."""
    assert fields_read(FLAGSHIP[0].rule) == ("tte.mr_grade", "team.no_surgery_within_1y")
    assert fields_read({"not": cond("a.b", "is_true")}) == ("a.b",)
    assert fields_read(None) == ()


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ([], "must be a mapping"),
        ({"all": []}, "non-empty list"),
        ({"all": [cond("a.b", "is_true")], "op": "eq"}, "cannot be mixed"),
        ({"field": "nodot", "op": "eq", "value": 1}, "must be 'form.field'"),
        ({"field": "a.b", "op": "approx", "value": 1}, "'approx' is not one of"),
        ({"field": "a.b", "op": "eq"}, "'eq' needs one value"),
        ({"field": "a.b", "op": "in", "value": 3}, "non-empty list"),
        ({"field": "a.b", "op": "between", "value": [1]}, "[low, high]"),
        ({"field": "a.b", "op": "between", "value": [450, 150]}, "low 450 > high 150"),
        ({"field": "a.b", "op": "is_true", "value": 1}, "takes no value"),
        ({"field": "a.b", "op": "ge", "value": True}, "number or a date"),
        ({"field": "a.b", "op": "eq", "value": 1, "extra": 2}, "unknown keys extra"),
    ],
)
def test_elig1_malformed_rules_are_named(rule: object, fragment: str) -> None:
    """ELIG-1: every malformed rule gets a clear message (reused by protocol checks)."""
    problems = rule_problems(rule)
    assert problems
    assert any(fragment in p for p in problems), problems


def test_elig1_malformed_criteria_are_all_reported_at_once() -> None:
    """ELIG-1: evaluate refuses with every bad criterion named, not the first only."""
    criteria = [
        CriterionSpec("A", "inclusion", "t", rule={"field": "x.y", "op": "bogus"}),
        CriterionSpec("B", "inclusion", "t", rule={"any": []}),
        CriterionSpec("OK", "inclusion", "t", rule=cond("x.y", "is_true")),
    ]
    with pytest.raises(ValidationFailed) as err:
        evaluate(criteria, {}, {})
    assert set(err.value.problems) == {"A", "B"}


def test_elig1_rule_dumped_from_protocol_model_evaluates() -> None:
    """ELIG-1: the documented caller path, ``rule.model_dump(by_alias=True, mode="json")``."""
    from trialdesk.protocol.models import Criterion

    model = Criterion.model_validate(
        {
            "id": "EXC-MAC",
            "kind": "exclusion",
            "text": "severe MAC or organic mitral disease",
            "rule": {
                "not": {
                    "all": [
                        {"field": "tte.mac", "op": "ne", "value": "severe"},
                        {"field": "tte.organic", "op": "is_false"},
                    ]
                }
            },
        }
    )
    assert model.rule is not None
    spec = CriterionSpec(
        model.id,
        model.kind,
        model.text,
        model.gate.value,
        model.rule.model_dump(by_alias=True, mode="json"),
    )
    assert rule_problems(spec.rule) == []
    ok = evaluate([spec], {"tte": {"mac": "mild", "organic": False}}, {})
    bad = evaluate([spec], {"tte": {"mac": "severe", "organic": False}}, {})
    assert ok.outcome("EXC-MAC").status is MET
    assert bad.outcome("EXC-MAC").status is NOT_MET
