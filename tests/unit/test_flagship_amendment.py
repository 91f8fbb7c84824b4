"""The flagship amendment (issue 16, END-2): version 2.0 dates hospitalizations."""

from __future__ import annotations

import datetime as dt

from trialdesk.protocol.diff import diff_protocols
from trialdesk.protocol.flagship_amendment import amend, flagship_v2_path
from trialdesk.protocol.loader import flagship_path, load_protocol
from trialdesk.services.endpoints import hf_admission


def test_the_shipped_v2_file_is_generated_from_the_current_flagship() -> None:
    """END-2: flagship_v2.yaml is flagship.yaml with amendment 1 applied (run `make docs`
    after changing flagship.yaml)."""
    expected = amend(flagship_path().read_text(encoding="utf-8"))
    assert flagship_v2_path().read_text(encoding="utf-8") == expected


def test_v2_differs_from_v1_only_by_the_dated_hospitalizations() -> None:
    """END-2: the amendment adds the dated hospitalization to the adverse-event form and takes
    the counts off the visit forms; criteria, visits, arms and randomization are unchanged."""
    v1, v2 = load_protocol(), load_protocol(flagship_v2_path())
    assert (v1.protocol.version, v2.protocol.version) == ("1.0", "2.0")
    diff = diff_protocols(v1.protocol, v2.protocol)
    assert not diff.design_changed
    keys = {(c.section, c.kind, c.key) for c in diff.changes}
    assert keys == {
        ("forms", "removed", "follow_up.hf_hospitalizations"),
        ("forms", "removed", "annual_contact.hf_hospitalizations"),
        ("forms", "added", "adverse_event.hospitalized"),
        ("forms", "added", "adverse_event.hospitalization_reason"),
        ("forms", "added", "adverse_event.admission_date"),
        ("forms", "added", "adverse_event.hospital_discharge_date"),
        ("records", "changed", "sdv"),
    }


def test_a_heart_failure_hospitalization_is_dated_at_its_admission() -> None:
    """END-2: the admission date, the onset when the admission is empty, nothing for other
    reasons or no hospitalization."""
    onset, admitted = dt.date(2027, 5, 1), dt.date(2027, 5, 3)
    base = {"onset_date": onset, "hospitalized": True, "hospitalization_reason": "heart_failure"}
    assert hf_admission({**base, "admission_date": admitted}) == admitted
    assert hf_admission(base) == onset
    assert hf_admission({**base, "hospitalization_reason": "non_cardiovascular"}) is None
    assert hf_admission({**base, "hospitalized": False}) is None
    assert hf_admission({"onset_date": onset}) is None
