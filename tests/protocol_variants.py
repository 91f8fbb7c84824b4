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
