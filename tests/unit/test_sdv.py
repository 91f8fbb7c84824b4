"""Source-data verification as pure rules (REC-1): requirement from the protocol's policy, a
seeded sample that is deterministic and nested, marks, and invalidation by a later change."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import flagship
from tests.protocol_variants import records_variant
from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.records import RecordRef, ValueChange
from trialdesk.domain.sdv import (
    FormSdvSpec,
    SdvLevel,
    SdvPolicySpec,
    SdvStatus,
    mark,
    requirement,
    sample_draw,
    sdv_state,
    tally,
)
from trialdesk.protocol.specs import sdv_policy_spec

AT = dt.datetime(2028, 3, 1, 10, tzinfo=dt.UTC)
LATER = AT + dt.timedelta(days=2)
M24 = RecordRef("S101-0001", "follow_up", "M24")
FOLLOW_UP_FIELDS = (
    "visit_date",
    "nyha_class",
    "kccq_overall_score",
    "six_minute_walk_m",
    "mr_grade",
    "hf_hospitalizations",
)
VALUES: dict[str, object] = {
    "visit_date": dt.date(2029, 1, 25),
    "nyha_class": "II",
    "kccq_overall_score": 61.0,
    "six_minute_walk_m": 330,
    "mr_grade": None,
    "hf_hospitalizations": 0,
}
POLICY = SdvPolicySpec(
    default_level=SdvLevel.SAMPLE,
    sample_rate=0.25,
    seed=20270104,
    first_subjects_full=2,
    forms=(
        FormSdvSpec("tte", SdvLevel.FULL),
        FormSdvSpec("follow_up", SdvLevel.FULL, ("visit_date", "kccq_overall_score")),
        FormSdvSpec("annual_contact", SdvLevel.SAMPLE, rate=0.1),
        FormSdvSpec("discharge", SdvLevel.NONE),
    ),
)
SUBJECTS = [f"S{site}-{n:04d}" for site in (101, 102, 301, 401) for n in range(1, 251)]


def test_rec1_flagship_policy_becomes_the_domain_spec() -> None:
    """The policy is protocol data: the flagship and the second trial give different specs."""
    a = sdv_policy_spec(flagship().protocol)
    b = sdv_policy_spec(records_variant().protocol)
    assert a is not None and b is not None
    assert (a.default_level, a.sample_rate, a.seed, a.first_subjects_full) == (
        SdvLevel.SAMPLE,
        0.25,
        20270104,
        2,
    )
    assert a.for_form("tte") == FormSdvSpec("tte", SdvLevel.FULL)
    assert a.for_form("medical_history").level is SdvLevel.SAMPLE
    assert b.for_form("medical_history").level is SdvLevel.NONE
    assert b.for_form("follow_up") == FormSdvSpec(
        "follow_up", SdvLevel.SAMPLE, ("kccq_overall_score",), 0.5
    )


def test_rec1_full_none_and_named_fields() -> None:
    req = requirement(POLICY, "S101-0009", "follow_up", FOLLOW_UP_FIELDS, site_ordinal=9)
    assert req.required and req.fields == ("visit_date", "kccq_overall_score")
    tte = requirement(POLICY, "S101-0009", "tte", ("exam_date", "lvef_pct"), site_ordinal=9)
    assert tte.required and tte.fields == ("exam_date", "lvef_pct")
    assert not requirement(POLICY, "S101-0009", "discharge", ("d",), site_ordinal=1).required
    assert not requirement(None, "S101-0009", "tte", ("d",), site_ordinal=1).required


def test_rec1_first_subjects_of_a_site_are_verified_in_full() -> None:
    never = next(s for s in SUBJECTS if sample_draw(POLICY.seed, s) >= 0.25)
    assert requirement(POLICY, never, "nyha", ("c",), site_ordinal=2).required
    late = requirement(POLICY, never, "nyha", ("c",), site_ordinal=3)
    assert not late.required and late.why == "nyha: not in the 25% sample"


def test_rec1_sample_rate_is_met_over_many_subjects() -> None:
    """About the protocol's share of subjects is sampled (1,000 subjects, 25 %: 3 sigma)."""
    chosen = [
        s for s in SUBJECTS if requirement(POLICY, s, "nyha", ("c",), site_ordinal=99).required
    ]
    assert abs(len(chosen) / len(SUBJECTS) - 0.25) < 3 * (0.25 * 0.75 / len(SUBJECTS)) ** 0.5
    tenth = [
        s
        for s in SUBJECTS
        if requirement(POLICY, s, "annual_contact", ("c",), site_ordinal=99).required
    ]
    assert set(tenth) <= set(chosen)  # nested: the 10 % sample lies inside the 25 % one


@settings(max_examples=200, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**63 - 1),
    subject=st.text(min_size=1, max_size=20),
    low=st.floats(0.01, 1.0),
    high=st.floats(0.01, 1.0),
)
def test_rec1_sampling_is_deterministic_and_nested(
    seed: int, subject: str, low: float, high: float
) -> None:
    """REC-1 property: the draw depends on seed and subject only and lies in [0, 1); a subject
    sampled at one rate stays sampled at any higher rate."""
    draw = sample_draw(seed, subject)
    assert draw == sample_draw(seed, subject)
    assert 0 <= draw < 1
    low, high = sorted((low, high))
    at = SdvPolicySpec(default_level=SdvLevel.SAMPLE, seed=seed, sample_rate=low)
    above = SdvPolicySpec(default_level=SdvLevel.SAMPLE, seed=seed, sample_rate=high)
    if requirement(at, subject, "f", ("x",), site_ordinal=10).required:
        assert requirement(above, subject, "f", ("x",), site_ordinal=10).required


def test_rec1_another_seed_draws_another_sample() -> None:
    a = {s for s in SUBJECTS if sample_draw(1, s) < 0.25}
    b = {s for s in SUBJECTS if sample_draw(2, s) < 0.25}
    assert a != b


def test_rec1_mark_verifies_the_required_fields() -> None:
    req = requirement(POLICY, M24.subject, "follow_up", FOLLOW_UP_FIELDS, site_ordinal=9)
    assert sdv_state(M24, req, None, VALUES).status is SdvStatus.PENDING
    m = mark(M24, VALUES, fields=None, required=req, by="monitor", at=AT)
    assert m.fields == ("visit_date", "kccq_overall_score")
    state = sdv_state(M24, req, m, VALUES)
    assert (state.status, state.missing, state.required) == (SdvStatus.VERIFIED, (), True)
    partial = mark(M24, VALUES, fields=["visit_date"], required=req, by="monitor", at=AT)
    state = sdv_state(M24, req, partial, VALUES)
    assert (state.status, state.missing) == (SdvStatus.PENDING, ("kccq_overall_score",))
    with pytest.raises(ValidationFailed, match="has no field lvef"):
        mark(M24, VALUES, fields=["lvef"], required=req, by="monitor", at=AT)


def test_rec1_a_later_change_to_a_verified_value_clears_the_mark_and_says_why() -> None:
    """The change is named: field, old and new value, when, who and the reason (DATA-2)."""
    req = requirement(POLICY, M24.subject, "follow_up", FOLLOW_UP_FIELDS, site_ordinal=9)
    m = mark(M24, VALUES, fields=None, required=req, by="monitor", at=AT)
    change = ValueChange(M24, "kccq_overall_score", 61.0, 75.0, LATER, "coordinator", "typo")
    after = {**VALUES, "kccq_overall_score": 75.0}
    state = sdv_state(M24, req, m, after, [change])
    assert state.status is SdvStatus.INVALIDATED
    assert state.invalidated_by == (
        "kccq_overall_score changed 61 -> 75 on 2028-03-03 10:00 UTC by coordinator: typo",
    )
    assert state.missing == ("visit_date", "kccq_overall_score")


def test_rec1_a_change_to_an_unverified_field_keeps_the_mark() -> None:
    req = requirement(POLICY, M24.subject, "follow_up", FOLLOW_UP_FIELDS, site_ordinal=9)
    m = mark(M24, VALUES, fields=None, required=req, by="monitor", at=AT)
    change = ValueChange(M24, "nyha_class", "II", "III", LATER, "coordinator", "source")
    state = sdv_state(M24, req, m, {**VALUES, "nyha_class": "III"}, [change])
    assert state.status is SdvStatus.VERIFIED


def test_rec1_a_value_that_differs_without_a_logged_change_still_clears_the_mark() -> None:
    """Whatever path changed a verified value, the mark does not survive it."""
    req = requirement(POLICY, M24.subject, "follow_up", FOLLOW_UP_FIELDS, site_ordinal=9)
    m = mark(M24, VALUES, fields=None, required=req, by="monitor", at=AT)
    state = sdv_state(M24, req, m, {**VALUES, "visit_date": dt.date(2029, 1, 26)})
    assert state.status is SdvStatus.INVALIDATED
    assert state.invalidated_by == ("visit_date differs from the value verified on 2028-03-01",)


def test_rec1_changes_before_the_mark_or_of_other_records_do_not_count() -> None:
    req = requirement(POLICY, M24.subject, "follow_up", FOLLOW_UP_FIELDS, site_ordinal=9)
    m = mark(M24, VALUES, fields=None, required=req, by="monitor", at=AT)
    before = ValueChange(M24, "kccq_overall_score", 60.0, 61.0, AT - dt.timedelta(1), "c", "r")
    other = ValueChange(
        RecordRef(M24.subject, "follow_up", "M18"), "kccq_overall_score", 1, 2, LATER, "c", "r"
    )
    same = ValueChange(M24, "kccq_overall_score", 61, 61.0, LATER, "c", "no real change")
    assert sdv_state(M24, req, m, VALUES, [before, other, same]).status is SdvStatus.VERIFIED


@settings(max_examples=150, derandomize=True, database=None)
@given(
    score=st.floats(0, 100, allow_nan=False),
    new=st.floats(0, 100, allow_nan=False),
)
def test_rec1_verified_iff_the_verified_values_are_unchanged(score: float, new: float) -> None:
    """REC-1 property: a mark holds exactly as long as the verified value is the same."""
    req = requirement(POLICY, M24.subject, "follow_up", FOLLOW_UP_FIELDS, site_ordinal=9)
    values = {**VALUES, "kccq_overall_score": score}
    m = mark(M24, values, fields=None, required=req, by="monitor", at=AT)
    state = sdv_state(M24, req, m, {**values, "kccq_overall_score": new})
    assert (state.status is SdvStatus.VERIFIED) is (score == new)


def test_rec1_tally_counts_only_required_records() -> None:
    req = requirement(POLICY, M24.subject, "follow_up", FOLLOW_UP_FIELDS, site_ordinal=9)
    none = requirement(POLICY, M24.subject, "discharge", ("discharge_date",), site_ordinal=9)
    m = mark(M24, VALUES, fields=None, required=req, by="monitor", at=AT)
    discharge = RecordRef(M24.subject, "discharge")
    extra = mark(discharge, {"discharge_date": 1}, fields=None, required=none, by="m", at=AT)
    states = [
        sdv_state(M24, req, m, VALUES),
        sdv_state(RecordRef(M24.subject, "follow_up", "M18"), req, None, VALUES),
        sdv_state(RecordRef(M24.subject, "follow_up", "M12"), req, m, {**VALUES, "visit_date": 0}),
        sdv_state(discharge, none, extra, {"discharge_date": 2}),
    ]
    counts = tally(states)
    assert (counts.required, counts.verified, counts.pending, counts.invalidated) == (3, 1, 1, 1)
    assert not counts.done
    assert counts.refs == [
        RecordRef(M24.subject, "follow_up", "M18"),
        RecordRef(M24.subject, "follow_up", "M12"),
    ]
    assert tally(states[:1]).done


def test_rec1_marking_a_form_beyond_the_policy_verifies_its_entered_values() -> None:
    """A monitor may verify a form the policy does not require: every field with a value."""
    none = requirement(
        POLICY, M24.subject, "discharge", ("discharge_date", "notes"), site_ordinal=9
    )
    ref = RecordRef(M24.subject, "discharge")
    m = mark(ref, {"discharge_date": "2027-02-01", "notes": None}, fields=None, required=none,
             by="monitor", at=AT)  # fmt: skip
    assert m.fields == ("discharge_date",)
