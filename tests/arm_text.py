"""Text that looks like an arm and is not one, for every blinding detector (RAND-6).

The CDISC TS parameter names of INTTYPE and INTMODEL ("Intervention Type", "Intervention
Model") are the same in every trial's ts.xpt and define; they happen to contain the word the
flagship's intervention arm label starts with, and name no arm. Every detector (the HTTP
report tests, the blinding sweep, the export integration tests) removes them the same way
before looking for an arm, so no detector is stricter or looser than another.
"""

from __future__ import annotations

CT_WORDING = ("Intervention Type", "Intervention Model")
"""CDISC TSPARM values of INTTYPE and INTMODEL."""


def without_ct_wording(text: str) -> str:
    """``text`` with the CDISC parameter names removed (nothing else changes)."""
    for wording in CT_WORDING:
        text = text.replace(wording, "")
    return text
