"""Data-quality rules from the protocol file evaluated over one subject's data (REC-6): the
flagship's rules and a second trial's, exclusions per record, which rules run on save, and the
reconciliation of reruns with the queries they opened."""

from __future__ import annotations

import datetime as dt
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import flagship
from tests.protocol_variants import records_variant
from trialdesk.domain.data_quality import (
    Discrepancy,
    DqRuleSpec,
    FormRecord,
    RuleQuery,
    SubjectData,
    evaluate,
    reconcile,
    rules_to_run,
)
from trialdesk.domain.records import RecordRef
from trialdesk.protocol.specs import dq_rule_specs

SUBJECT = "S101-0001"
VISITS = ("M1", "M6", "M12", "M18", "M24", "Y3", "Y4", "Y5")
RANDOMIZED = dt.date(2027, 1, 25)
Values = dict[str, object]


@cache
def flagship_rules() -> tuple[DqRuleSpec, ...]:
    return tuple(dq_rule_specs(flagship().protocol))


@cache
def variant_rules() -> tuple[DqRuleSpec, ...]:
    return tuple(dq_rule_specs(records_variant().protocol))


def only(rule_id: str, rules: tuple[DqRuleSpec, ...] | None = None) -> list[DqRuleSpec]:
    return [r for r in (rules or flagship_rules()) if r.id == rule_id]


def screening() -> dict[RecordRef, Values]:
    return {
        RecordRef(SUBJECT, "six_minute_walk"): {"test_date": "2027-01-10", "distance_m": 300},
        RecordRef(SUBJECT, "kccq"): {"assessment_date": "2027-01-10", "overall_score": 50.0},
        RecordRef(SUBJECT, "nyha"): {"assessment_date": "2027-01-10", "nyha_class": "III"},
        RecordRef(SUBJECT, "medical_history"): {"cardiomyopathy_etiology": "ischemic"},
        RecordRef(SUBJECT, "tte"): {
            "exam_date": "2027-01-11",
            "mr_grade": "2",
            "lvef_pct": 40.0,
            "lvedd_mm": 65.0,
            "lvesd_mm": 50.0,
        },
    }


def follow_up(visit: str, day: int, **values: object) -> tuple[RecordRef, Values]:
    base: Values = {
        "visit_date": (RANDOMIZED + dt.timedelta(days=day)).isoformat(),
        "kccq_overall_score": 55.0,
        "six_minute_walk_m": 320,
        "lvef_pct": 42.0,
        "lvedd_mm": 64.0,
        "lvesd_mm": 50.0,
    }
    return RecordRef(SUBJECT, "follow_up", visit), {**base, **values}


def subject(
    records: dict[RecordRef, Values], *, gates: frozenset[str] = frozenset({"echo"})
) -> SubjectData:
    return SubjectData(
        subject=SUBJECT,
        records=tuple(FormRecord(ref, values) for ref, values in records.items()),
        events={"randomization": RANDOMIZED, "consent": dt.date(2027, 1, 5)},
        visit_order=VISITS,
        passed_gates=gates,
    )


def found(rules: list[DqRuleSpec], data: SubjectData) -> list[tuple[str, str, str, str]]:
    return [(d.rule, d.ref.visit, d.field, d.detail) for d in evaluate(rules, data)]


def test_rec6_flagship_rules_come_from_the_protocol_file() -> None:
    rules = {r.id: r for r in flagship_rules()}
    assert list(rules) == [f"DQ-{n}" for n in range(1, 12)]
    assert (rules["DQ-4"].kind, rules["DQ-4"].series, rules["DQ-4"].max_change) == (
        "change",
        ("six_minute_walk.distance_m", "follow_up.six_minute_walk_m"),
        150,
    )
    assert [c.id for c in rules["DQ-6"].criteria] == ["INC-3", "INC-4", "INC-5", "INC-6", "INC-7"]
    assert rules["DQ-5"].run == "on_demand" and rules["DQ-1"].severity == "critical"


def test_rec6_visit_dated_before_randomization() -> None:
    """The issue's first example: a visit date before randomization (DQ-1)."""
    records = screening() | dict([follow_up("M1", -5), follow_up("M6", 180)])
    assert found(only("DQ-1"), subject(records)) == [
        (
            "DQ-1",
            "M1",
            "visit_date",
            "follow_up.visit_date at M1 is 2027-01-20; expected ≥ randomization (2027-01-25)",
        )
    ]


def test_rec6_six_minute_walk_changed_by_more_than_the_threshold() -> None:
    """The issue's second example (DQ-4): baseline 300, M1 320, M6 500: +180 at M6."""
    records = screening() | dict([follow_up("M1", 30), follow_up("M6", 180, six_minute_walk_m=500)])
    assert found(only("DQ-4"), subject(records)) == [
        (
            "DQ-4",
            "M6",
            "six_minute_walk_m",
            "follow_up.six_minute_walk_m at M6 is 500, +180 from the previous value 320 "
            "(follow_up.six_minute_walk_m at M1); largest allowed change 150",
        )
    ]
    # from the screening test to M1 counts too; a visit without a walk is skipped
    records = screening() | dict(
        [follow_up("M1", 30, six_minute_walk_m=None), follow_up("M6", 180, six_minute_walk_m=460)]
    )
    ((rule, visit, _, detail),) = found(only("DQ-4"), subject(records))
    assert (rule, visit) == ("DQ-4", "M6")
    assert "from the previous value 300 (six_minute_walk.distance_m)" in detail


def test_rec6_echo_value_out_of_range_for_an_inclusion_already_passed() -> None:
    """The issue's third example (DQ-6): the screening LVEF corrected to 55 % after the echo
    gate passed no longer meets INC-6; before the gate passed it is screening's business."""
    records = screening()
    tte = RecordRef(SUBJECT, "tte")
    records[tte] = {**records[tte], "lvef_pct": 55.0}
    detail = "INC-6 (LVEF of 50 % or less (core laboratory).) is no longer met: tte.lvef_pct = 55"
    assert found(only("DQ-6"), subject(records)) == [("DQ-6", "", "lvef_pct", detail)]
    assert found(only("DQ-6"), subject(records, gates=frozenset())) == []
    assert found(only("DQ-6"), subject(screening())) == []


def test_rec6_same_record_and_plausibility_rules() -> None:
    records = screening() | dict(
        [follow_up("M1", 30, lvef_pct=80.0), follow_up("M6", 180, lvesd_mm=70.0)]
    )
    assert found(only("DQ-7") + only("DQ-8"), subject(records)) == [
        ("DQ-7", "M1", "lvef_pct", "follow_up.lvef_pct at M1 is 80, outside 10..75"),
        (
            "DQ-8",
            "M6",
            "lvesd_mm",
            "follow_up.lvesd_mm at M6 is 70; expected < follow_up.lvedd_mm (64)",
        ),
    ]


def test_rec6_vital_status_dead_requires_the_death_form() -> None:
    contact = RecordRef(SUBJECT, "annual_contact", "Y3")
    records = screening() | {contact: {"contact_date": "2030-01-25", "vital_status": "dead"}}
    assert found(only("DQ-9"), subject(records)) == [
        (
            "DQ-9",
            "Y3",
            "vital_status",
            "annual_contact.vital_status at Y3 is dead; no death form saved",
        )
    ]
    records[RecordRef(SUBJECT, "death")] = {"death_date": "2030-01-02", "cause": "unknown"}
    assert found(only("DQ-9"), subject(records)) == []


def test_rec6_repeating_form_is_checked_record_by_record() -> None:
    ae1 = RecordRef(SUBJECT, "adverse_event", seq=1)
    ae2 = RecordRef(SUBJECT, "adverse_event", seq=2)
    records = screening() | {
        ae1: {"onset_date": "2027-05-01", "resolved_date": "2027-05-10", "outcome": "recovered"},
        ae2: {"onset_date": "2027-06-01", "resolved_date": "2027-05-30", "outcome": "fatal"},
    }
    got = evaluate(only("DQ-10") + only("DQ-11"), subject(records))
    assert [(d.rule, d.ref) for d in got] == [("DQ-10", ae2), ("DQ-11", ae2)]


def test_rec6_exclusion_per_record_keeps_the_finding_and_its_reason() -> None:
    """A rule switched off for one record, with a reason: reported as excluded, other records
    still checked."""
    records = screening() | dict([follow_up("M1", -5), follow_up("M6", -1)])
    m1 = RecordRef(SUBJECT, "follow_up", "M1")
    got = evaluate(only("DQ-1"), subject(records), exclusions={("DQ-1", m1): "date confirmed"})
    assert [(d.ref.visit, d.excluded, d.active) for d in got] == [
        ("M1", "date confirmed", False),
        ("M6", None, True),
    ]


def test_rec6_which_rules_run_on_save() -> None:
    """On save: the on_save rules reading the saved form (or requiring it); on demand: all."""
    rules = flagship_rules()
    assert [r.id for r in rules_to_run(rules, "follow_up")] == ["DQ-1", "DQ-4", "DQ-7", "DQ-8"]
    assert [r.id for r in rules_to_run(rules, "tte")] == ["DQ-6"]
    assert [r.id for r in rules_to_run(rules, "death")] == ["DQ-9", "DQ-10"]
    assert [r.id for r in rules_to_run(rules, "kccq")] == []  # DQ-5 runs on demand only
    assert [r.id for r in rules_to_run(rules)] == [r.id for r in rules]


def test_rec6_second_trial_rules_find_other_things_in_the_same_data() -> None:
    """The same subject's data under the second trial's file: its own rules, its own
    findings; nothing of the flagship's rules."""
    records = screening() | dict(
        [
            follow_up("M1", 30, kccq_overall_score=60.0),
            follow_up("M6", 180, kccq_overall_score=80.0, lvef_pct=65.0),
        ]
    )
    records[RecordRef(SUBJECT, "discharge")] = {"discharge_date": "2027-03-01"}
    data = subject(records)
    got = found(list(variant_rules()), data)
    assert got == [
        (
            "R-DISCHARGE",
            "",
            "discharge_date",
            "discharge.discharge_date is 2027-03-01; expected ≤ randomization + 30 days "
            "(2027-02-24)",
        ),
        (
            "R-KCCQ",
            "M6",
            "kccq_overall_score",
            "follow_up.kccq_overall_score at M6 is 80, +30 from the baseline value 50 "
            "(kccq.overall_score); largest allowed change 50 %",
        ),
        ("R-LVEF", "M6", "lvef_pct", "follow_up.lvef_pct at M6 is 65, outside 20..60"),
    ]
    assert {r for r, *_ in found(list(flagship_rules()), data)}.isdisjoint(
        {r.id for r in variant_rules()}
    )
    # R-LVEF applies to ischemic cardiomyopathy only (its `when`)
    mh = RecordRef(SUBJECT, "medical_history")
    records[mh] = {"cardiomyopathy_etiology": "non_ischemic"}
    assert [r for r, *_ in found(only("R-LVEF", variant_rules()), subject(records))] == []


def test_rec6_second_trial_requires_form_with_a_combined_condition() -> None:
    ae = RecordRef(SUBJECT, "adverse_event", seq=1)
    fatal = {"onset_date": "2027-05-01", "serious": False, "outcome": "fatal"}
    rule = only("R-SAE-DEATH", variant_rules())
    assert found(rule, subject(screening() | {ae: fatal})) == []
    serious = {**fatal, "serious": True}
    assert [r for r, *_ in found(rule, subject(screening() | {ae: serious}))] == ["R-SAE-DEATH"]


FIELD_VALUES = st.one_of(
    st.none(),
    st.integers(-1000, 5000),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.dates(dt.date(2020, 1, 1), dt.date(2035, 1, 1)).map(dt.date.isoformat),
)


@st.composite
def any_subject(draw: st.DrawFn) -> SubjectData:
    """A subject with screening and follow-up records whose number and date values are drawn
    at random, any of them missing."""
    records: dict[RecordRef, Values] = {}
    for ref, values in screening().items():
        records[ref] = {k: draw(FIELD_VALUES) if k != "mr_grade" else v for k, v in values.items()}
    for visit in draw(st.lists(st.sampled_from(VISITS[:5]), unique=True, max_size=5)):
        ref, values = follow_up(visit, 30)
        records[ref] = {k: draw(FIELD_VALUES) for k in values}
    return subject(records, gates=frozenset({"echo"}) if draw(st.booleans()) else frozenset())


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(any_subject())
def test_rec6_a_discrepancy_always_points_at_an_entered_value(data: SubjectData) -> None:
    """REC-6 property: over any data (values missing, out of range, dates and numbers mixed)
    the flagship's rules never fail and never report a value that was not entered."""
    values = {r.ref: r.values for r in data.records}
    for d in evaluate(flagship_rules(), data):
        assert isinstance(d, Discrepancy)
        assert d.ref.subject == SUBJECT
        assert values[d.ref].get(d.field) is not None, d


def test_rec6_rerun_opens_reopens_and_resolves_the_rules_queries() -> None:
    """A rerun opens a query per new finding, reopens a closed one whose finding is back,
    resolves an open one whose finding is gone, and leaves rules it did not run alone."""
    records = screening() | dict([follow_up("M1", -5), follow_up("M6", -1)])
    found_now = evaluate(only("DQ-1"), subject(records))
    m1_key, m6_key = (d.key for d in found_now)
    assert m1_key == "DQ-1|S101-0001|follow_up|M1|1|visit_date"
    existing = [
        RuleQuery(1, "DQ-1", m1_key, open=True),
        RuleQuery(2, "DQ-1", "DQ-1|S101-0001|follow_up|M12|1|visit_date", open=True),
        RuleQuery(3, "DQ-4", "DQ-4|S101-0001|follow_up|M6|1|six_minute_walk_m", open=True),
    ]
    plan = reconcile(found_now, existing, ran=["DQ-1"])
    assert [d.key for d in plan.to_open] == [m6_key]
    assert plan.to_reopen == () and plan.resolved == (2,)
    closed = [RuleQuery(4, "DQ-1", m6_key, open=False), RuleQuery(5, "DQ-1", m1_key, open=True)]
    plan = reconcile(found_now, closed, ran=["DQ-1"])
    assert plan.to_open == () and plan.to_reopen == (4,) and plan.resolved == ()


def test_rec6_an_excluded_finding_opens_no_query_and_resolves_its_own() -> None:
    records = screening() | dict([follow_up("M1", -5)])
    m1 = RecordRef(SUBJECT, "follow_up", "M1")
    got = evaluate(only("DQ-1"), subject(records), exclusions={("DQ-1", m1): "confirmed"})
    plan = reconcile(got, [RuleQuery(9, "DQ-1", got[0].key, open=True)], ran=["DQ-1"])
    assert plan.to_open == () and plan.resolved == (9,)


@pytest.mark.parametrize("kind", ["expression", ""])
def test_rec6_unknown_kind_is_a_programming_error(kind: str) -> None:
    """The protocol checks refuse unknown kinds; the evaluator never guesses."""
    with pytest.raises(ValueError, match="unknown data-quality rule kind"):
        evaluate([DqRuleSpec(id="X", text="x", kind=kind)], subject(screening()))
