"""The amendment diff (PROT-2): what a signer reads, section by section, and nothing of an arm
for a blinded reader."""

from __future__ import annotations

from tests.conftest import flagship
from tests.protocol_variants import amended, design_changed
from trialdesk.protocol.diff import diff_protocols
from trialdesk.protocol.loader import parse_protocol


def _variant(*replacements: tuple[str, str]) -> str:
    text = flagship().text.replace('version: "1.0"', 'version: "1.1"', 1)
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def test_prot2_same_protocol_has_an_empty_diff() -> None:
    diff = diff_protocols(flagship().protocol, flagship().protocol)
    assert diff.empty and diff.lines() == [] and not diff.design_changed


def test_prot2_diff_names_the_new_criterion_and_the_widened_window() -> None:
    """PROT-2: an added criterion and a changed window are each one readable line."""
    diff = diff_protocols(flagship().protocol, amended().protocol)
    assert diff.criteria_added == ("INC-19",)
    assert diff.windows_changed == ("M6",)
    assert not diff.design_changed
    assert diff.lines() == [
        "criteria:",
        "  + INC-19 (inclusion, echo): Agrees to remote heart-failure monitoring for the length "
        "of the study. [investigator confirms]",
        "visits:",
        "  ~ M6: window day 180 -30/+30 (days 150-210) -> day 180 -30/+45 (days 150-225)",
    ]
    assert diff.to_dict()["changes"][0]["key"] == "INC-19"


def test_prot2_diff_covers_criteria_forms_caps_sites_and_visits() -> None:
    """PROT-2: removed/changed criteria, form fields, caps, added sites and visits."""
    p = flagship().protocol
    site = p.sites[0]
    new_site = (
        "sites:\n"
        f"  - {{code: S999, name: New site, country: {site.country}, timezone: {site.timezone}}}\n"
    )
    text = _variant(
        ("target_subjects: 352", "target_subjects: 360"),
        ("cap_total: 352", "cap_total: 360"),
        ("sites:\n", new_site),
        ("text: NYHA class II, III or IVa.", "text: NYHA class II or III."),
        (
            "{field: nyha.nyha_class, op: in, value: [II, III, IVa]}",
            "{field: nyha.nyha_class, op: in, value: [II, III]}",
        ),
        (
            "  - {code: Y4, name: Year 4, kind: phone, target_day: 1460, window_before: 60, "
            "window_after: 60, forms: [annual_contact], assumption: true}\n",
            "",
        ),
    )
    diff = diff_protocols(p, parse_protocol(text).protocol)
    text_lines = "\n".join(diff.lines())
    assert diff.criteria_changed == ("INC-4",)
    assert "INC-4: text now: NYHA class II or III.; check" in text_lines
    assert "target subjects 352 -> 360" in text_lines
    assert diff.sites_added == ("S999",)
    assert diff.visits_removed == ("Y4",)
    assert "  - Y4 Year 4: day 1460 -60/+60 (days 1400-1520)" in text_lines
    assert "study cap 352 -> 360" in text_lines
    assert not diff.design_changed


def test_prot2_allocation_changes_are_design_changes_and_blinded_text_names_no_arm() -> None:
    """PROT-2, RAND-6: ratio, blocks and arm changes need the statistician; the blinded view
    gives the ratio but no arm code, label or procedure form."""
    full = diff_protocols(flagship().protocol, design_changed().protocol)
    blinded = diff_protocols(flagship().protocol, design_changed().protocol, hide_arms=True)
    assert full.design_changed and blinded.design_changed
    full_text = "\n".join(full.lines())
    assert "arm INT ratio 1 -> 2" in full_text
    assert "field implant_procedure.anchor_count" in full_text
    blinded_text = "\n".join(blinded.lines())
    assert "allocation ratio 1:1 -> 2:1" in blinded_text
    assert "an arm's procedure form changed" in blinded_text
    for word in ("INT", "CTRL", "Intervention", "sham", "implant_procedure"):
        assert word not in blinded_text
