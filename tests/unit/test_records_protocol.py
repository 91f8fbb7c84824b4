"""The protocol's records sections (consent, data_quality, sdv, sign_off, freeze, queries,
exits): read as written in the flagship and in a second trial's file, optional, and every
cross-file mistake reported at its line (REC-1, REC-2, REC-4, REC-6..REC-9)."""

from __future__ import annotations

import pytest

from tests.conftest import flagship
from tests.protocol_variants import RECORDS_MARKER, records_text, records_variant
from trialdesk.protocol.checks import dq_rule_reads, single_instance
from trialdesk.protocol.diff import diff_protocols
from trialdesk.protocol.loader import ProtocolInvalid, parse_protocol
from trialdesk.protocol.models import (
    CasebookScope,
    DqKind,
    LateRecords,
    ResponseChange,
    SdvLevel,
    UnblindingKind,
)

SECTIONS = ("consent", "data_quality", "sdv", "sign_off", "freeze", "queries", "exits")


def _mutated(old: str, new: str, text: str | None = None) -> str:
    base = flagship().text if text is None else text
    assert base.count(old) == 1, f"{old!r} is not unique"
    return base.replace(old, new)


def _problems(text: str) -> list[str]:
    with pytest.raises(ProtocolInvalid) as info:
        parse_protocol(text, "records.yaml")
    problems = info.value.problems
    assert all(p.line is not None for p in problems), [str(p) for p in problems]
    return [str(p) for p in problems]


def _line_of(text: str, fragment: str) -> int:
    return text[: text.index(fragment)].count("\n") + 1


def test_rec6_flagship_records_sections_read_as_written() -> None:
    """REC-1, REC-2, REC-4, REC-7, REC-8, REC-9: the flagship's assumptions, one per section."""
    p = flagship().protocol
    assert p.consent is not None and [d.code for d in p.consent.documents] == ["ICF"]
    assert [v.version for v in p.consent.documents[0].versions] == ["v1.0"]
    assert p.consent.documents[0].versions[0].effective_from is None
    assert p.data_quality is not None
    assert [r.id for r in p.data_quality.rules] == [f"DQ-{n}" for n in range(1, 12)]
    assert {r.kind for r in p.data_quality.rules} == set(DqKind)
    assert all(r.assumption for r in p.data_quality.rules)
    assert p.sdv is not None and p.sdv.default_level is SdvLevel.SAMPLE
    assert (p.sdv.sample_rate, p.sdv.seed, p.sdv.first_subjects_full) == (0.25, 20270104, 2)
    assert p.sign_off is not None and p.sign_off.casebooks_for is CasebookScope.RANDOMIZED
    assert p.sign_off.meaning == "I attest the data are accurate and complete."
    assert p.freeze is not None
    assert p.freeze.unblinding == [UnblindingKind.SCHEDULED, UnblindingKind.EMERGENCY]
    assert (p.freeze.visits_through, p.freeze.late_records) == ("M24", LateRecords.FLAG)
    assert p.freeze.forms == ["kccq", "adverse_event", "additional_therapy", "death"]
    assert p.queries is not None
    assert [(r.code, r.change) for r in p.queries.responses] == [
        ("corrected", ResponseChange.REQUIRED),
        ("confirmed", ResponseChange.FORBIDDEN),
        ("not_available", ResponseChange.FORBIDDEN),
        ("other", ResponseChange.OPTIONAL),
    ]
    assert p.exits is not None and p.exits.death is not None and p.exits.withdrawal is not None
    assert (p.exits.death.form, p.exits.withdrawal.form) == ("death", "withdrawal")
    kinds = {k.code: k for k in p.exits.withdrawal.kinds}
    assert kinds["further_data"].contact_allowed
    assert kinds["further_data"].contact_forms == ["annual_contact", "death"]
    assert not kinds["all_contact"].contact_allowed


def test_rec6_flagship_records_sections_are_marked_assumptions() -> None:
    """The seed's public record says nothing of these: each section says so."""
    p = flagship().protocol
    assert p.consent is not None and p.sdv is not None and p.sign_off is not None
    assert p.freeze is not None and p.queries is not None and p.exits is not None
    assert all(d.assumption for d in p.consent.documents)
    assert all((p.sdv.assumption, p.sign_off.assumption, p.freeze.assumption))
    assert all((p.queries.assumption, p.exits.assumption))


def test_rec6_protocol_without_records_sections_still_loads() -> None:
    """Protocols stored before these sections existed keep loading (PROT-2)."""
    text = flagship().text
    plain = parse_protocol(text[: text.index(RECORDS_MARKER)])
    assert all(getattr(plain.protocol, name) is None for name in SECTIONS)


def test_rec6_second_trial_has_its_own_records_rules() -> None:
    """The records rules are data: a second file states other ones, and every section
    differs from the flagship's."""
    a, b = flagship().protocol, records_variant().protocol
    for name in SECTIONS:
        assert getattr(a, name) != getattr(b, name), name
    assert b.exits is not None and b.exits.withdrawal is not None
    assert b.exits.withdrawal.kind_field == "scope"
    assert b.consent is not None
    icf = b.consent.documents[0]
    assert [v.version for v in icf.versions] == ["A", "B"] and icf.versions[1].reconsent
    assert [a.site or a.country for a in icf.versions[1].approvals] == ["US", "DE", "S302"]


def test_rec6_rule_reads_are_derived_from_the_rule() -> None:
    """What a rule reads decides which rules run when a form is saved; it is computed from
    the rule, so it cannot drift from it."""
    rules = {r.id: r for r in (flagship().protocol.data_quality or pytest.fail("no rules")).rules}
    assert dq_rule_reads(rules["DQ-1"]) == ["follow_up.visit_date", "randomization"]
    assert dq_rule_reads(rules["DQ-4"]) == [
        "six_minute_walk.distance_m",
        "follow_up.six_minute_walk_m",
    ]
    assert dq_rule_reads(rules["DQ-9"]) == ["annual_contact.vital_status"]
    variant = {
        r.id: r for r in (records_variant().protocol.data_quality or pytest.fail("no rules")).rules
    }
    assert dq_rule_reads(variant["R-LVEF"]) == [
        "follow_up.lvef_pct",
        "medical_history.cardiomyopathy_etiology",
    ]


def test_rec6_single_instance_forms() -> None:
    """A rule may read another form only when the subject has one record of it."""
    p = flagship().protocol
    assert single_instance(p, "tte") and single_instance(p, "discharge")
    assert not single_instance(p, "follow_up")  # one per visit
    assert not single_instance(p, "adverse_event")  # repeating
    assert not single_instance(p, "no_such_form")


DQ_1 = """    - id: DQ-1
      text: Follow-up visit dated before randomization.
      kind: compare
      left: follow_up.visit_date
      op: ge
      right: randomization
"""
DQ_4 = """      series: [six_minute_walk.distance_m, follow_up.six_minute_walk_m]
      against: previous
      max_change: 150
"""
DQ_7 = """      field: follow_up.lvef_pct
      min: 10
      max: 75
"""
DQ_9 = """      when: {field: annual_contact.vital_status, op: eq, value: dead}
      form: death
"""

BAD_RECORDS = [
    # data_quality
    (DQ_1, DQ_1.replace("visit_date", "visit_day"), "left", "has no field 'visit_day'"),
    (DQ_1, DQ_1.replace("right: randomization", "right: surgery"), "right", "subject event"),
    (DQ_1, DQ_1.replace("op: ge", "op: in"), "op", "compare takes eq, ne"),
    (
        DQ_1,
        DQ_1.replace("right: randomization", "right: follow_up.nyha_class"),
        "right",
        "follow_up.nyha_class is choice",
    ),
    (DQ_1, DQ_1 + "      offset: 1.5\n", "offset", "whole number of days"),
    (DQ_1, DQ_1 + "      offset: .nan\n", "offset", "not a finite number"),
    (DQ_1, DQ_1 + "      max_change: 3\n", "max_change", "does not use 'max_change'"),
    (
        DQ_1,
        DQ_1.replace("right: randomization", "right: adverse_event.onset_date"),
        "right",
        "several records per subject",
    ),
    (
        DQ_1,
        DQ_1.replace("right: randomization", "right: implant_procedure.procedure_date"),
        "rules[0]",
        "arm's procedure form",
    ),
    (DQ_1, DQ_1.replace("      left: follow_up.visit_date\n", ""), "left", "needs 'left'"),
    (DQ_4, DQ_4.replace("distance_m,", "test_date,"), "series[0]", "not a number"),
    (DQ_4, DQ_4.replace("      max_change: 150\n", ""), "rules[3]", "needs max_change"),
    (
        DQ_4,
        DQ_4.replace("six_minute_walk.distance_m", "adverse_event.onset_date"),
        "series[0]",
        "repeats",
    ),
    (DQ_7, DQ_7.replace("min: 10", "min: 80"), "min", "above max"),
    (DQ_7, DQ_7.replace("lvef_pct", "nyha_class"), "field", "range reads numbers"),
    (DQ_9, DQ_9.replace("form: death", "form: autopsy"), "form", "unknown form 'autopsy'"),
    (
        DQ_7,
        DQ_7 + "      when: {field: adverse_event.serious, op: is_true}\n",
        "rules[6].when.field",
        "several records per subject",
    ),
    (
        DQ_7,
        DQ_7 + "      when: {field: follow_up.nyha_class, op: eq, value: V}\n",
        "rules[6].when.value",
        "not a choice of follow_up.nyha_class",
    ),
    (
        "criteria: [INC-3, INC-4, INC-5, INC-6, INC-7]",
        "criteria: [INC-3, INC-8, INC-99]",
        "criteria[1]",
        "INC-8 has no rule",
    ),
    (
        "criteria: [INC-3, INC-4, INC-5, INC-6, INC-7]",
        "criteria: [INC-99]",
        "criteria[0]",
        "unknown criterion 'INC-99'",
    ),
    ("    - id: DQ-11\n", "    - id: DQ-10\n", "rules[10].id", "duplicate rule id 'DQ-10'"),
    # consent
    (
        "        - {version: v1.0}\n",
        "        - {version: v1.0}\n        - {version: v2.0}\n",
        "versions[1].version",
        "needs effective_from",
    ),
    (
        "        - {version: v1.0}\n",
        "        - {version: v1.0, effective_from: 2027-05-01}\n"
        "        - {version: v2.0, effective_from: 2027-04-01}\n",
        "versions[1].effective_from",
        "list versions oldest first",
    ),
    (
        "        - {version: v1.0}\n",
        "        - {version: v1.0, reconsent: true}\n",
        "reconsent",
        "no earlier one",
    ),
    (
        "        - {version: v1.0}\n",
        "        - {version: v1.0, approvals: [{site: S999, effective_from: 2027-01-01}]}\n",
        "approvals[0].site",
        "unknown site 'S999'",
    ),
    (
        "        - {version: v1.0}\n",
        "        - {version: v1.0, approvals: [{country: XX, effective_from: 2027-01-01}]}\n",
        "approvals[0].country",
        "unknown country 'XX'",
    ),
    (
        "        - {version: v1.0}\n",
        "        - {version: v1.0, approvals: [{site: S101, country: US, effective_from: "
        "2027-01-01}]}\n",
        "approvals[0]",
        "either a site or a country",
    ),
    (
        "        - {version: v1.0}\n",
        "        - {version: v1.0, approvals: [{country: DE, effective_from: 2027-01-01}, "
        "{country: DE, effective_from: 2027-02-01}]}\n",
        "approvals[1]",
        "approved twice",
    ),
    (
        "        - {version: v1.0}\n",
        "        - {version: v1.0}\n        - {version: v1.0, effective_from: 2028-01-01}\n",
        "versions[1].version",
        "duplicate version",
    ),
    # sdv
    (
        "    - {form: tte, level: full}\n",
        "    - {form: echo, level: full}\n",
        "sdv.forms[0].form",
        "unknown form 'echo'",
    ),
    (
        "    - {form: tte, level: full}\n",
        "    - {form: implant_procedure, level: full}\n",
        "sdv.forms[0].form",
        "blinded monitors",
    ),
    (
        "    - {form: tte, level: full}\n",
        "    - {form: tte, level: full, fields: [lvef]}\n",
        "sdv.forms[0].fields[0]",
        "no field 'lvef'",
    ),
    (
        "    - {form: tte, level: full}\n",
        "    - {form: tte, level: full, rate: 0.5}\n",
        "sdv.forms[0].rate",
        "level sample",
    ),
    (
        "    - {form: tte, level: full}\n",
        "    - {form: tte, level: none, fields: [lvef_pct]}\n",
        "sdv.forms[0].fields",
        "full and sample",
    ),
    (
        "    - {form: tte, level: full}\n",
        "    - {form: kccq, level: full}\n",
        "sdv.forms[2]",
        "duplicate form 'kccq'",
    ),
    ("  sample_rate: 0.25\n", "  sample_rate: 1.5\n", "sdv.sample_rate", "less than or equal"),
    # freeze
    (
        "  visits_through: M24\n",
        "  visits_through: M30\n",
        "freeze.visits_through",
        "unknown visit 'M30'",
    ),
    (
        "  visits_through: M24\n",
        "  visits_through: Y3\n",
        "freeze.visits_through",
        "comes after M24",
    ),
    (
        "  forms: [kccq, adverse_event, additional_therapy, death]\n",
        "  forms: [kccq, sham_procedure]\n",
        "freeze.forms[1]",
        "arm's procedure form",
    ),
    (
        "  forms: [kccq, adverse_event, additional_therapy, death]\n",
        "  forms: [kccq, kccq]\n",
        "freeze.forms[1]",
        "duplicate form",
    ),
    (
        "  unblinding: [scheduled, emergency]\n",
        "  unblinding: [scheduled, trial]\n",
        "freeze.unblinding[1]",
        "'scheduled' or 'emergency'",
    ),
    # queries
    (
        "    - {code: other, label: Other (explained), text_required: true}\n",
        "    - {code: corrected, label: Other (explained), text_required: true}\n",
        "queries.responses[3].code",
        "duplicate response 'corrected'",
    ),
    (
        "    - {code: corrected, label: Data corrected, change: required}\n",
        "    - {code: corrected, label: Data corrected, change: required, marks_missing: true}\n",
        "queries.responses[0].marks_missing",
        "cannot both",
    ),
    (
        "  overdue_after_days: 14\n",
        "  overdue_after_days: 0\n",
        "queries.overdue_after_days",
        "greater than or equal to 1",
    ),
    # exits
    (
        "    form: death\n    cause_field: cause\n",
        "    form: adverse_event\n",
        "exits.death.form",
        "repeats",
    ),
    (
        "    cause_field: cause\n",
        "    cause_field: death_date\n",
        "exits.death.cause_field",
        "not choice or text",
    ),
    (
        "    reason_field: reason\n",
        "    reason_field: reason\n    kind_field: reason\n",
        "exits.withdrawal.kind_field",
        "must be the withdrawal kinds",
    ),
    (
        "    reason_field: reason\n",
        "    reason_field: reason\n    kind_field: details\n",
        "exits.withdrawal.kind_field",
        "not choice",
    ),
    (
        "        contact_allowed: false\n",
        "        contact_allowed: false\n        contact_forms: [annual_contact]\n",
        "kinds[1].contact_forms",
        "allows no contact",
    ),
    (
        "        contact_forms: [annual_contact, death]\n",
        "        contact_forms: [tte, autopsy]\n",
        "kinds[0].contact_forms[0]",
        "not a follow-up contact",
    ),
    (
        "        contact_forms: [annual_contact, death]\n",
        "        contact_forms: [tte, autopsy]\n",
        "kinds[0].contact_forms[1]",
        "unknown form 'autopsy'",
    ),
]


@pytest.mark.parametrize(("old", "new", "where", "message"), BAD_RECORDS)
def test_rec6_bad_records_section_is_reported_where_it_is(
    old: str, new: str, where: str, message: str
) -> None:
    """REC-1, REC-4, REC-6..REC-9: each mistake is a problem naming its path and line; the
    file is refused as a whole."""
    found = _problems(_mutated(old, new))
    assert any(where in p and message in p for p in found), found


def test_rec6_problem_line_points_into_the_records_section() -> None:
    text = _mutated("  visits_through: M24\n", "  visits_through: M30\n")
    (problem,) = _problems(text)
    assert problem.startswith(f"line {_line_of(text, '  visits_through: M30')}: ")


def test_rec9_second_trial_kind_field_must_match_the_kinds() -> None:
    """The second trial reads the withdrawal kind from its form: a kind without a choice is
    refused."""
    text = records_text().replace(
        "      - {code: records, label: Visits and contact; records may be read, "
        "contact_allowed: false}\n",
        "",
    )
    found = _problems(text)
    assert any("exits.withdrawal.kind_field" in p and "records" in p for p in found), found


def test_rec6_unknown_key_in_a_rule_gets_a_hint() -> None:
    found = _problems(_mutated("      max_change: 150\n", "      max_chnage: 150\n"))
    assert any("max_chnage" in p and "did you mean 'max_change'" in p for p in found), found


def test_rec8_amendment_diff_names_a_new_consent_version_and_reconsent() -> None:
    """An amendment bringing a new consent version says so, with where and from when it is in
    force and that subjects must re-consent; other records sections are named."""
    old = flagship().protocol
    text = _mutated(
        "        - {version: v1.0}\n",
        "        - {version: v1.0}\n"
        "        - version: v2.0\n"
        "          effective_from: 2028-01-01\n"
        "          reconsent: true\n"
        "          approvals: [{country: DE, effective_from: 2028-02-01}]\n",
    )
    text = _mutated("  visits_through: M24\n", "  visits_through: M18\n", text)
    diff = diff_protocols(old, parse_protocol(text).protocol)
    records = [(c.kind, c.key, c.text) for c in diff.section("records")]
    assert records == [
        (
            "added",
            "ICF v2.0",
            "consent ICF v2.0 (from 2028-01-01, approved at DE from 2028-02-01; subjects "
            "still in the study must re-consent)",
        ),
        ("changed", "freeze", "freeze changed"),
    ]
    assert not diff.design_changed


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (DQ_7, DQ_7.replace("follow_up.lvef_pct", "implant_procedure.tension_applied")),
        (DQ_9, DQ_9.replace("form: death", "form: sham_procedure")),
        ("    - {form: tte, level: full}\n", "    - {form: sham_procedure, level: full}\n"),
        ("  forms: [kccq, adverse_event, additional_therapy, death]\n",
         "  forms: [implant_procedure]\n"),
        ("        contact_forms: [annual_contact, death]\n",
         "        contact_forms: [annual_contact, implant_procedure]\n"),
    ],
)  # fmt: skip
def test_rand6_records_rules_never_depend_on_an_arms_form(old: str, new: str) -> None:
    """RAND-6: a data-quality finding, an SDV requirement, a lock or a contact form that
    exists for one arm's procedure form only would tell a blinded reader the arm; the protocol
    is refused instead."""
    found = _problems(_mutated(old, new))
    assert any("procedure form" in p for p in found), found
