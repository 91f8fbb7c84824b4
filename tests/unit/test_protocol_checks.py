"""Cross-file checks of a protocol (ELIG-1, SCHED-1, RAND-1, ...) and the flagship data."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests import flagship_data as fd
from trialdesk.domain.eligibility import evaluate
from trialdesk.domain.forms import validate_values
from trialdesk.protocol.checks import check_protocol, describe_rule, rule_fields
from trialdesk.protocol.loader import flagship_path, load_protocol
from trialdesk.protocol.models import Protocol
from trialdesk.protocol.specs import criterion_specs, form_spec

Data = dict[str, Any]


@functools.cache
def _flagship_data() -> Data:
    loaded = yaml.safe_load(flagship_path().read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def flagship() -> Data:
    """A fresh, mutable copy of the flagship as plain data."""
    return copy.deepcopy(_flagship_data())


def problems_after(change: Callable[[Data], object]) -> list[tuple[str, str]]:
    data = flagship()
    change(data)
    return check_protocol(Protocol.model_validate(data))


def find(data: Data, section: str, key: str, value: str) -> Data:
    for item in data[section]:
        if item[key] == value:
            assert isinstance(item, dict)
            return item
    raise AssertionError(f"no {section} with {key} {value}")


def form(data: Data, code: str) -> Data:
    return find(data, "forms", "code", code)


def field(data: Data, form_code: str, field_code: str) -> Data:
    return find(form(data, form_code), "fields", "code", field_code)


def criterion(data: Data, criterion_id: str) -> Data:
    return find(data, "criteria", "id", criterion_id)


def index_of(data: Data, section: str, key: str, value: str) -> int:
    return [item[key] for item in data[section]].index(value)


def assert_one(problems: list[tuple[str, str]], path: str, words: str) -> None:
    assert len(problems) == 1, problems
    assert problems[0][0] == path
    assert words in problems[0][1], problems[0][1]


def test_protocol_flagship_has_no_problems() -> None:
    assert check_protocol(load_protocol().protocol) == []


# --- duplicates ---------------------------------------------------------------------------------


@pytest.mark.req("RAND-1")
def test_rand_1_duplicate_arm_code() -> None:
    problems = problems_after(lambda d: d["arms"][1].update(code="INT"))
    assert_one(problems, "arms[1].code", "duplicate arm code 'INT' (first at arms[0])")


@pytest.mark.parametrize(
    ("section", "key", "what"),
    [
        ("regions", "code", "region code"),
        ("countries", "code", "country code"),
        ("sites", "code", "site code"),
        ("visits", "code", "visit code"),
    ],
)
@pytest.mark.req("REP-1")
def test_rep_1_duplicate_codes_in_a_list(section: str, key: str, what: str) -> None:
    def change(d: Data) -> None:
        d[section].append(copy.deepcopy(d[section][0]))
        # keep visits in order so only the duplicate is reported
        if section == "visits":
            d[section][-1].update(target_day=3000)

    problems = problems_after(change)
    last = len(flagship()[section])
    assert (f"{section}[{last}].{key}", f"duplicate {what}") in [
        (path, message.split(" '")[0]) for path, message in problems
    ]


@pytest.mark.req("ELIG-1")
def test_elig_1_duplicate_criterion_id() -> None:
    problems = problems_after(lambda d: criterion(d, "EXC-2").update(id="EXC-1"))
    assert_one(problems, "criteria[10].id", "duplicate criterion id 'EXC-1'")


@pytest.mark.req("DATA-1")
def test_data_1_duplicate_form_field_and_choice_codes() -> None:
    def change(d: Data) -> None:
        d["forms"].append(copy.deepcopy(form(d, "discharge")))
        field(d, "nyha", "assessment_date").update(code="nyha_class")
        field(d, "tte", "mr_grade")["choices"][4]["code"] = "3"

    paths = [path for path, _ in problems_after(change)]
    tte = index_of(flagship(), "forms", "code", "tte")
    nyha = index_of(flagship(), "forms", "code", "nyha")
    assert f"forms[{len(flagship()['forms'])}].code" in paths
    assert f"forms[{nyha}].fields[1].code" in paths
    assert f"forms[{tte}].fields[1].choices[4].code" in paths


@pytest.mark.req("THER-1")
def test_ther_1_duplicate_therapy_type() -> None:
    problems = problems_after(lambda d: d["therapies"]["types"][1].update(code="mitral_surgery"))
    assert_one(problems, "therapies.types[1].code", "duplicate therapy type")


# --- visits (SCHED-1) ---------------------------------------------------------------------------


@pytest.mark.req("SCHED-1")
def test_sched_1_visits_must_be_in_target_day_order() -> None:
    def change(d: Data) -> None:
        d["visits"][2], d["visits"][3] = d["visits"][3], d["visits"][2]

    problems = problems_after(change)
    assert problems[0][0] == "visits[3].target_day"
    assert "not after M18" in problems[0][1]


@pytest.mark.req("SCHED-1")
def test_sched_1_touching_windows_overlap_because_both_ends_count() -> None:
    # M1 ends on day 37; M6 opening on day 37 shares that day
    problems = problems_after(lambda d: d["visits"][1].update(window_before=143))
    assert_one(problems, "visits[1].window_before", "overlaps M1's window days 23-37")


@pytest.mark.req("SCHED-1")
def test_sched_1_windows_one_day_apart_are_fine() -> None:
    assert problems_after(lambda d: d["visits"][1].update(window_before=142)) == []


@pytest.mark.req("SCHED-1")
def test_sched_1_window_may_not_open_on_randomization_day() -> None:
    problems = problems_after(lambda d: d["visits"][0].update(window_before=30))
    assert_one(problems, "visits[0].window_before", "day 0")


# --- criteria and their rules (ELIG-1) ----------------------------------------------------------


def set_rule(criterion_id: str, rule: Data) -> Callable[[Data], None]:
    def change(d: Data) -> None:
        criterion(d, criterion_id)["rule"] = rule

    return change


@pytest.mark.req("ELIG-1")
@pytest.mark.parametrize(
    ("name", "words"),
    [("echo.lvef_pct", "no form 'echo'"), ("tte.lvef", "form tte has no field 'lvef'")],
)
def test_elig_1_rule_must_read_an_existing_field(name: str, words: str) -> None:
    problems = problems_after(set_rule("INC-6", {"field": name, "op": "le", "value": 50}))
    assert_one(problems, "criteria[5].rule.field", words)


@pytest.mark.req("ELIG-1")
def test_elig_1_choice_value_must_be_a_choice() -> None:
    rule = {"field": "nyha.nyha_class", "op": "in", "value": ["II", "III", "IV"]}
    problems = problems_after(set_rule("INC-4", rule))
    assert_one(problems, "criteria[3].rule.value[2]", "'IV' is not a choice of nyha.nyha_class")


@pytest.mark.req("ELIG-1")
def test_elig_1_unquoted_choice_code_is_refused() -> None:
    rule = {"field": "tte.mr_grade", "op": "eq", "value": 4}
    problems = problems_after(set_rule("INC-3", rule))
    assert_one(problems, "criteria[2].rule.value", "quote them")


@pytest.mark.req("ELIG-1")
def test_elig_1_numeric_choice_codes_may_be_ordered() -> None:
    rule = {"field": "tte.mr_grade", "op": "ge", "value": 1}
    assert problems_after(set_rule("INC-3", rule)) == []


@pytest.mark.req("ELIG-1")
@pytest.mark.parametrize("value", [[150], [150, 300, 450], 150])
def test_elig_1_between_needs_exactly_two_bounds(value: Any) -> None:
    rule = {"field": "six_minute_walk.distance_m", "op": "between", "value": value}
    problems = problems_after(set_rule("INC-5", rule))
    assert_one(problems, "criteria[4].rule.value", "exactly two bounds")


@pytest.mark.req("ELIG-1")
def test_elig_1_between_bounds_in_order() -> None:
    rule = {"field": "six_minute_walk.distance_m", "op": "between", "value": [450, 150]}
    problems = problems_after(set_rule("INC-5", rule))
    assert_one(problems, "criteria[4].rule.value", "lower bound 450 is above")


@pytest.mark.req("ELIG-1")
@pytest.mark.parametrize("value", ["ischemic", None, []])
def test_elig_1_in_needs_a_list(value: Any) -> None:
    rule = {"field": "medical_history.cardiomyopathy_etiology", "op": "in", "value": value}
    problems = problems_after(set_rule("INC-2", rule))
    assert len(problems) == 1
    assert problems[0][0] == "criteria[1].rule.value"


@pytest.mark.req("ELIG-1")
def test_elig_1_numeric_op_on_a_text_field_is_refused() -> None:
    rule = {"field": "heart_team.notes", "op": "gt", "value": 3}
    problems = problems_after(set_rule("INC-6", rule))
    assert_one(problems, "criteria[5].rule.op", "compares numbers or dates")


@pytest.mark.req("ELIG-1")
def test_elig_1_number_compared_with_text_is_refused() -> None:
    problems = problems_after(
        set_rule("INC-6", {"field": "tte.lvef_pct", "op": "le", "value": "50"})
    )
    assert_one(problems, "criteria[5].rule.value", "compare it with a number")


@pytest.mark.req("ELIG-1")
def test_elig_1_bound_outside_the_field_range_is_refused() -> None:
    problems = problems_after(
        set_rule("INC-6", {"field": "tte.lvef_pct", "op": "le", "value": 500})
    )
    assert_one(problems, "criteria[5].rule.value", "outside tte.lvef_pct's range 5..85")


@pytest.mark.req("ELIG-1")
def test_elig_1_is_true_needs_a_boolean_field_and_no_value() -> None:
    on_number = problems_after(set_rule("INC-6", {"field": "tte.lvef_pct", "op": "is_true"}))
    assert_one(on_number, "criteria[5].rule.op", "needs a boolean field")
    with_value = problems_after(
        set_rule(
            "EXC-2", {"field": "medical_history.pci_within_30_days", "op": "is_true", "value": 1}
        )
    )
    assert_one(with_value, "criteria[10].rule.value", "takes no value")


@pytest.mark.req("ELIG-1")
def test_elig_1_problem_inside_a_nested_rule_has_the_nested_path() -> None:
    def change(d: Data) -> None:
        criterion(d, "INC-3")["rule"]["any"][1]["all"][1]["field"] = "heart_team.surgeon"

    problems = problems_after(change)
    assert_one(problems, "criteria[2].rule.any[1].all[1].field", "has no field 'surgeon'")


@pytest.mark.req("ELIG-2")
def test_elig_2_a_criterion_gate_must_be_screened() -> None:
    problems = problems_after(lambda d: d["screening"].update(gates=["echo", "committee_review"]))
    anatomy = [i for i, c in enumerate(flagship()["criteria"]) if c.get("gate") == "anatomy"]
    assert [path for path, _ in problems] == [f"criteria[{i}].gate" for i in anatomy]


# --- forms (DATA-1) -----------------------------------------------------------------------------


@pytest.mark.req("DATA-1")
def test_data_1_choice_field_needs_choices() -> None:
    def change(d: Data) -> None:
        del field(d, "death", "cause")["choices"]

    death = index_of(flagship(), "forms", "code", "death")
    assert_one(problems_after(change), f"forms[{death}].fields[1]", "needs choices")


@pytest.mark.req("DATA-1")
def test_data_1_min_not_above_max() -> None:
    problems = problems_after(lambda d: field(d, "tte", "lvef_pct").update(min=90))
    tte = index_of(flagship(), "forms", "code", "tte")
    # the flagship rule "lvef ≤ 50" is now outside the range too
    assert (f"forms[{tte}].fields[4].min", "min 90 is above max 85") in problems


@pytest.mark.req("LIFE-2")
def test_life_2_date_field_must_be_a_date_of_the_form() -> None:
    discharge = index_of(flagship(), "forms", "code", "discharge")
    missing = problems_after(lambda d: form(d, "discharge").update(date_field="left_on"))
    assert_one(missing, f"forms[{discharge}].date_field", "no field 'left_on'")
    kccq = index_of(flagship(), "forms", "code", "kccq")
    wrong = problems_after(lambda d: form(d, "kccq").update(date_field="overall_score"))
    assert_one(wrong, f"forms[{kccq}].date_field", "not a date")


@pytest.mark.req("DATA-1")
@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["arms"][0].update(procedure_form="implant"), "arms[0].procedure_form"),
        (lambda d: d["screening"]["forms"].append("labs"), "screening.forms[7]"),
        (lambda d: d["screening"].update(echo_form="echo"), "screening.echo_form"),
        (lambda d: d["screening"]["anatomy_forms"].append("ct"), "screening.anatomy_forms[2]"),
        (lambda d: d["visits"][4]["forms"].append("qol"), "visits[4].forms[1]"),
        (lambda d: d["therapies"].update(form="therapy"), "therapies.form"),
    ],
)
def test_data_1_named_forms_must_exist(change: Callable[[Data], object], path: str) -> None:
    assert_one(problems_after(change), path, "unknown form")


# --- places (TIME-1, REP-1) ---------------------------------------------------------------------


@pytest.mark.req("REP-1")
def test_rep_1_site_country_and_country_region_must_exist() -> None:
    def change(d: Data) -> None:
        d["sites"][0]["country"] = "USA"
        d["countries"][2]["region"] = "Europe"

    problems = problems_after(change)
    assert [path for path, _ in problems] == ["countries[2].region", "sites[0].country"]
    assert problems[0][1] == "unknown region 'Europe' (known: AU, CA, EU, US)"
    assert problems[1][1].startswith("unknown country 'USA' (known: AU, CA, CZ, DE")


@pytest.mark.req("TIME-1")
@pytest.mark.parametrize("zone", ["EST", "America/Bostn", "", "../etc/passwd", "Europe/Berlin "])
def test_time_1_site_time_zone_must_be_iana(zone: str) -> None:
    problems = problems_after(lambda d: d["sites"][0].update(timezone=zone))
    if zone == "EST":  # a legacy IANA name: still valid
        assert problems == []
    else:
        assert_one(problems, "sites[0].timezone", "not an IANA time zone")


@pytest.mark.req("RAND-4")
def test_rand_4_total_cap_below_target_is_refused() -> None:
    problems = problems_after(lambda d: d["enrolment"].update(cap_total=300))
    assert_one(problems, "enrolment.cap_total", "below the target")


# --- randomization (RAND-1, RAND-2) -------------------------------------------------------------


@pytest.mark.req("RAND-2")
@pytest.mark.parametrize(
    ("stratum", "words"),
    [
        ("country", "neither 'site' nor 'form.field'"),
        ("demographics.sexx", "has no field 'sexx'"),
        ("tte.lvef_pct", "needs a choice or boolean field"),
        ("follow_up.nyha_class", "unknown at randomization"),
    ],
)
def test_rand_2_strata_are_site_or_a_screening_field(stratum: str, words: str) -> None:
    problems = problems_after(lambda d: d["randomization"]["strata"].append(stratum))
    assert_one(problems, "randomization.strata[1]", words)


@pytest.mark.req("RAND-2")
def test_rand_2_categorical_screening_field_is_a_valid_stratum() -> None:
    assert problems_after(lambda d: d["randomization"]["strata"].append("demographics.sex")) == []


@pytest.mark.req("RAND-2")
def test_rand_2_permuted_blocks_need_block_sizes() -> None:
    problems = problems_after(lambda d: d["randomization"].update(block_sizes=[]))
    assert_one(problems, "randomization.block_sizes", "needs block_sizes")


@pytest.mark.req("RAND-1")
def test_rand_1_block_sizes_are_multiples_of_the_ratio_sum() -> None:
    def two_to_one(d: Data) -> None:
        d["arms"][0]["ratio"] = 2
        d["randomization"].update(block_sizes=[3, 4, 6], list_size_per_stratum=24)

    assert_one(problems_after(two_to_one), "randomization.block_sizes[1]", "multiple of 3")


@pytest.mark.req("RAND-1")
def test_rand_1_list_size_fits_whole_blocks() -> None:
    problems = problems_after(lambda d: d["randomization"].update(list_size_per_stratum=25))
    assert_one(problems, "randomization.list_size_per_stratum", "whole blocks")


@pytest.mark.req("RAND-2")
def test_rand_2_minimization_needs_its_section_and_known_factors() -> None:
    problems = problems_after(lambda d: d["randomization"].update(method="minimization"))
    assert_one(problems, "randomization.minimization", "needs a minimization section")

    def with_factors(d: Data) -> None:
        d["randomization"].update(
            method="minimization",
            minimization={"factors": [{"factor": "site"}, {"factor": "nyha.class"}]},
        )

    assert_one(
        problems_after(with_factors),
        "randomization.minimization.factors[1].factor",
        "has no field 'class'",
    )


@pytest.mark.req("RAND-3")
def test_rand_3_fixed_seed_policy_needs_a_seed() -> None:
    problems = problems_after(lambda d: d["randomization"].update(seed_policy="fixed"))
    assert_one(problems, "randomization.seed", "needs a seed")


# --- blinding and named visits (RAND-6, RAND-7, SCHED-3, END-*) ---------------------------------


@pytest.mark.req("RAND-6")
@pytest.mark.parametrize(
    ("role", "words"),
    [
        ("auditor", "unknown role 'auditor'"),
        ("crc", "never sees allocation"),
        ("dsmb", "duplicate"),
    ],
)
def test_rand_6_only_roles_that_may_know_are_unblinded(role: str, words: str) -> None:
    problems = problems_after(lambda d: d["blinding"]["unblinded_roles"].append(role))
    assert_one(problems, "blinding.unblinded_roles[3]", words)


@pytest.mark.req("RAND-7")
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("blinding", "unblind_after_visit"),
        ("follow_up", "completion_visit"),
        ("endpoints", "safety_visit"),
        ("endpoints", "efficacy_visit"),
    ],
)
def test_rand_7_named_visits_must_exist(section: str, key: str) -> None:
    problems = problems_after(lambda d: d[section].update({key: "M30"}))
    assert_one(problems, f"{section}.{key}", "unknown visit 'M30'")


# --- rule helpers -------------------------------------------------------------------------------


@pytest.mark.req("ELIG-1")
def test_elig_1_rule_fields_and_description() -> None:
    rule = next(c.rule for c in load_protocol().protocol.criteria if c.id == "INC-3")
    assert rule is not None
    assert rule_fields(rule) == [
        "tte.mr_grade",
        "heart_team.surgeon_present",
        "heart_team.mitral_surgery_needed_within_1y",
    ]
    assert describe_rule(rule) == (
        "(tte.mr_grade in [1, 2, 3] or (tte.mr_grade = 4 and heart_team.surgeon_present is yes"
        " and heart_team.mitral_surgery_needed_within_1y is no))"
    )


# --- flagship data: fits the forms and the criteria (ELIG-0) ------------------------------------


def _all_form_values() -> fd.FormValues:
    values: fd.FormValues = {}
    for forms in (
        fd.screening_forms(),
        fd.anatomy_forms(),
        fd.implant_procedure_forms(),
        fd.implant_procedure_forms(released=False),
        fd.sham_procedure_forms(),
        fd.discharge_forms(),
        fd.follow_up_forms(),
        fd.annual_contact_forms(),
        fd.adverse_event_forms(mae_category="device_embolization"),
        fd.additional_therapy_forms("2027-09-01"),
        fd.death_forms("2028-01-01"),
        fd.withdrawal_forms("2028-01-01"),
    ):
        values.update(forms)
    return values


@pytest.mark.req("DATA-1")
def test_data_1_flagship_data_fits_every_form() -> None:
    protocol = load_protocol().protocol
    values = _all_form_values()
    assert set(values) == {f.code for f in protocol.forms}
    for code, raw in values.items():
        typed = validate_values(form_spec(protocol.form(code)), raw)
        assert set(typed) == {f.code for f in protocol.form(code).fields}


def _evaluate(values: fd.FormValues) -> tuple[bool, tuple[str, ...]]:
    protocol = load_protocol().protocol
    typed = {
        code: validate_values(form_spec(protocol.form(code)), raw) for code, raw in values.items()
    }
    confirmations = dict.fromkeys(fd.INVESTIGATOR_CRITERIA, True)
    result = evaluate(criterion_specs(protocol), typed, confirmations)
    assert not result.pending_ids, result.pending_ids
    return result.eligible, result.failed_ids


@pytest.mark.req("ELIG-0")
def test_elig_0_eligible_subject_meets_every_criterion() -> None:
    assert _evaluate(fd.screening_forms() | fd.anatomy_forms()) == (True, ())


@pytest.mark.req("ELIG-0")
def test_elig_0_failing_data_covers_every_rule_criterion() -> None:
    protocol = load_protocol().protocol
    with_rule = {c.id for c in protocol.criteria if c.rule is not None}
    without = {c.id for c in protocol.criteria if c.rule is None}
    assert with_rule == set(fd.SCREENING_RULE_CRITERIA) | set(fd.ANATOMY_RULE_CRITERIA)
    assert without == set(fd.INVESTIGATOR_CRITERIA)


@pytest.mark.req("ELIG-0")
@pytest.mark.parametrize("criterion_id", fd.SCREENING_RULE_CRITERIA)
def test_elig_0_failing_screening_forms_fail_exactly_one(criterion_id: str) -> None:
    values = fd.failing_screening_forms(criterion_id) | fd.anatomy_forms()
    assert _evaluate(values) == (False, (criterion_id,))


@pytest.mark.req("ELIG-4")
@pytest.mark.parametrize("criterion_id", fd.ANATOMY_RULE_CRITERIA)
def test_elig_4_failing_anatomy_forms_fail_exactly_one(criterion_id: str) -> None:
    values = fd.screening_forms() | fd.failing_anatomy_forms(criterion_id)
    assert _evaluate(values) == (False, (criterion_id,))


@pytest.mark.req("ELIG-0")
def test_elig_0_mr_4_needs_the_heart_team_to_rule_out_surgery() -> None:
    no_surgery = fd.mr_grade_4_screening_forms(surgery_needed=False) | fd.anatomy_forms()
    assert _evaluate(no_surgery) == (True, ())
    surgery = fd.mr_grade_4_screening_forms(surgery_needed=True) | fd.anatomy_forms()
    assert _evaluate(surgery) == (False, ("INC-3",))

    without_surgeon = fd.mr_grade_4_screening_forms(surgery_needed=False) | fd.anatomy_forms()
    without_surgeon["heart_team"]["surgeon_present"] = False
    assert _evaluate(without_surgeon) == (False, ("INC-3",))


@pytest.mark.req("ELIG-0")
@pytest.mark.parametrize(
    ("distance", "eligible"), [(149, False), (150, True), (450, True), (451, False)]
)
def test_elig_0_walk_distance_bounds_are_inclusive(distance: int, eligible: bool) -> None:
    values = fd.screening_forms() | fd.anatomy_forms()
    values["six_minute_walk"]["distance_m"] = distance
    assert _evaluate(values)[0] is eligible


@pytest.mark.req("ELIG-1")
def test_elig_1_flagship_data_returns_fresh_dicts() -> None:
    first = fd.screening_forms()
    first["tte"]["mr_grade"] = "0"
    assert fd.screening_forms()["tte"]["mr_grade"] == "3"
    with pytest.raises(KeyError):
        fd.failing_screening_forms("INC-8")
