"""Amended versions of the flagship protocol for the amendment tests (PROT-2)."""

from __future__ import annotations

from tests.conftest import flagship
from trialdesk.protocol.loader import LoadedProtocol, parse_protocol

M6_OLD = (
    "{code: M6, name: 6 months, kind: clinic, target_day: 180, window_before: 30, window_after: 30"
)
M6_NEW = (
    "{code: M6, name: 6 months, kind: clinic, target_day: 180, window_before: 30, window_after: 45"
)
NEW_CRITERION = """criteria:
  - id: INC-19
    kind: inclusion
    text: Agrees to remote heart-failure monitoring for the length of the study.
"""


def _relabel(text: str, version: str) -> str:
    return text.replace('version: "1.0"', f'version: "{version}"', 1)


def amended(*, version: str = "1.1", m6: bool = True, criterion: bool = True) -> LoadedProtocol:
    """The flagship with M6's window widened to -30/+45 and an investigator-confirmed INC-19."""
    text = _relabel(flagship().text, version)
    if m6:
        assert text.count(M6_OLD) == 1
        text = text.replace(M6_OLD, M6_NEW)
    if criterion:
        text = text.replace("criteria:\n", NEW_CRITERION, 1)
    return parse_protocol(text)


def design_changed(*, version: str = "1.1") -> LoadedProtocol:
    """The flagship allocating 2:1 (blocks of 3 and 6), with the intervention arm relabelled
    and a field added to its procedure form: every part a blinded reader must not see named."""
    text = _relabel(flagship().text, version)
    text = text.replace("    ratio: 1\n", "    ratio: 2\n", 1)
    text = text.replace("block_sizes: [2, 4]", "block_sizes: [3, 6]", 1)
    text = text.replace(
        "label: Intervention (CARILLON implant)", "label: Intervention (CARILLON implant, v2)", 1
    )
    text = text.replace(
        "      - {code: tension_applied, label: Incremental tension applied, type: boolean}\n",
        "      - {code: tension_applied, label: Incremental tension applied, type: boolean}\n"
        "      - {code: anchor_count, label: Anchors used, type: integer, required: false}\n",
        1,
    )
    return parse_protocol(text)


RECORDS_MARKER = "# --- Records that hold (issue 15)"
WITHDRAWAL_REASON = (
    "        choices: [{code: subject_decision, label: Subject's decision}, "
    "{code: investigator_decision, label: Investigator's decision}, {code: other, "
    "label: Other}]\n"
)
WITHDRAWAL_SCOPE = (
    "      - code: scope\n"
    "        label: What the subject withdraws from\n"
    "        type: choice\n"
    "        choices: [{code: visits, label: Further visits}, {code: everything, label: Any "
    "contact}, {code: records, label: Visits and contact; records may be read}]\n"
)
RECORDS_SECTIONS = """# --- Records that hold (issue 15): the second trial's own rules
consent:
  documents:
    - code: ICF
      name: Main consent
      versions:
        - {version: A}
        - version: B
          effective_from: 2027-03-01
          reconsent: true
          approvals:
            - {country: US, effective_from: 2027-03-01}
            - {country: DE, effective_from: 2027-04-15}
            - {site: S302, effective_from: 2027-05-02}
    - code: GEN
      name: Optional genetic sub-study consent
      required: false
      versions:
        - {version: G1, effective_from: 2027-02-01}

data_quality:
  rules:
    - id: R-DISCHARGE
      text: Discharge more than 30 days after the procedure day.
      kind: compare
      left: discharge.discharge_date
      op: le
      right: randomization
      offset: 30
    - id: R-AE-CONSENT
      text: Adverse event with onset before consent.
      kind: compare
      left: adverse_event.onset_date
      op: ge
      right: consent
      run: on_demand
    - id: R-KCCQ
      text: KCCQ score changed by more than half from baseline.
      kind: change
      series: [kccq.overall_score, follow_up.kccq_overall_score]
      against: baseline
      max_change_pct: 50
      severity: minor
    - id: R-LVEF
      text: Follow-up LVEF outside 20-60 % in a subject with ischemic cardiomyopathy.
      kind: range
      field: follow_up.lvef_pct
      min: 20
      max: 60
      when: {field: medical_history.cardiomyopathy_etiology, op: eq, value: ischemic}
    - id: R-INC6
      text: The screening LVEF no longer meets INC-6.
      kind: criteria
      criteria: [INC-6]
    - id: R-SAE-DEATH
      text: A serious adverse event was fatal but no death form is saved.
      kind: requires_form
      when:
        all:
          - {field: adverse_event.serious, op: is_true}
          - {field: adverse_event.outcome, op: eq, value: fatal}
      form: death

sdv:
  default_level: none
  seed: 7
  forms:
    - {form: tte, level: full}
    - {form: follow_up, level: sample, rate: 0.5, fields: [kccq_overall_score]}

sign_off:
  meaning: I confirm these data are complete and correct.
  casebooks_for: consented

freeze:
  unblinding: [scheduled]
  visits_through: M12
  forms: [kccq]
  late_records: refuse

queries:
  overdue_after_days: 7
  responses:
    - {code: fixed, label: Fixed, change: required}
    - {code: as_is, label: Correct as entered, change: forbidden}

exits:
  death:
    form: death
  withdrawal:
    form: withdrawal
    kind_field: scope
    kinds:
      - code: visits
        label: Further visits
        contact_allowed: true
        contact_forms: [annual_contact]
      - {code: everything, label: Any contact, contact_allowed: false}
      - {code: records, label: Visits and contact; records may be read, contact_allowed: false}
"""


def records_text() -> str:
    """The flagship's text with its records sections (consent .. exits) replaced by a second
    trial's own, and a ``scope`` choice on the withdrawal form holding the withdrawal kind."""
    text = flagship().text
    assert text.count(RECORDS_MARKER) == 1
    text = text[: text.index(RECORDS_MARKER)] + RECORDS_SECTIONS
    assert text.count(WITHDRAWAL_REASON) == 1
    return text.replace(WITHDRAWAL_REASON, WITHDRAWAL_REASON + WITHDRAWAL_SCOPE)


def records_variant() -> LoadedProtocol:
    """A second protocol whose consent, data-quality, SDV, sign-off, freeze, query and exit
    rules all differ from the flagship's: what the records rules do comes from the file."""
    return parse_protocol(records_text(), "<records variant>")
