"""Investigator sign-off as pure rules (REC-2, SIG-1): what a form, visit or casebook
signature covers, and that any change, addition or removal within it invalidates it."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import flagship
from tests.protocol_variants import records_variant
from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.domain.records import RecordRef, fingerprint
from trialdesk.domain.signoff import (
    DEFAULT_MEANING,
    RecordState,
    SignLevel,
    invalidated_by,
    sign,
    signature_state,
    target,
)

AT = dt.datetime(2029, 3, 1, 15, tzinfo=dt.UTC)
S1 = "S101-0001"
REFS = [
    RecordRef(S1, "tte"),
    RecordRef(S1, "kccq"),
    RecordRef(S1, "follow_up", "M12"),
    RecordRef(S1, "follow_up", "M24"),
    RecordRef(S1, "adverse_event", seq=1),
    RecordRef("S101-0002", "tte"),
]


def states(changes: dict[RecordRef, int] | None = None) -> list[RecordState]:
    bumped = changes or {}
    return [
        RecordState(ref, 1 + bumped.get(ref, 0), fingerprint({"v": bumped.get(ref, 0)}))
        for ref in REFS
    ]


def test_sig1_meaning_comes_from_the_protocol() -> None:
    """The flagship signs the SIG-1 attestation; the second trial its own sentence."""
    a, b = flagship().protocol.sign_off, records_variant().protocol.sign_off
    assert a is not None and b is not None
    assert a.meaning == DEFAULT_MEANING == "I attest the data are accurate and complete."
    assert b.meaning == "I confirm these data are complete and correct."


@pytest.mark.parametrize(
    ("level", "kwargs", "covered"),
    [
        (SignLevel.FORM, {"ref": REFS[2]}, [REFS[2]]),
        (SignLevel.VISIT, {"visit": "M24"}, [REFS[3]]),
        (SignLevel.CASEBOOK, {}, REFS[:5]),
    ],
)
def test_rec2_what_a_signature_covers(
    level: SignLevel, kwargs: dict[str, object], covered: list[RecordRef]
) -> None:
    """REC-2: a form signature covers its record, a visit one its visit's records, a casebook
    one every record of the subject and nothing of another subject."""
    sig = sign(
        target(level, S1, **kwargs),  # type: ignore[arg-type]
        states(),
        signer="investigator",
        printed_name="Dr. Ada Lovelace",
        at=AT,
    )
    assert sorted(sig.covered) == sorted(covered)
    assert (sig.signer, sig.printed_name, sig.at, sig.meaning) == (
        "investigator",
        "Dr. Ada Lovelace",
        AT,
        DEFAULT_MEANING,
    )
    assert signature_state(sig, states()).valid


def test_rec2_a_change_after_signing_invalidates_and_names_the_record() -> None:
    sig = sign(target(SignLevel.CASEBOOK, S1), states(), signer="i", printed_name="I", at=AT)
    after = states({REFS[3]: 1})
    state = signature_state(sig, after)
    assert not state.valid and state.changed == (REFS[3],)
    assert state.reasons() == ["form follow_up at M24 of S101-0001 changed after signing"]
    assert invalidated_by([sig], REFS[3]) == [sig]
    assert invalidated_by([sig], REFS[5]) == []


def test_rec2_a_record_added_to_a_signed_casebook_invalidates_it() -> None:
    sig = sign(target(SignLevel.CASEBOOK, S1), states(), signer="i", printed_name="I", at=AT)
    extra = RecordState(RecordRef(S1, "adverse_event", seq=2), 1, fingerprint({}))
    state = signature_state(sig, [*states(), extra])
    assert not state.valid and state.added == (extra.ref,)
    assert state.reasons() == ["form adverse_event #2 of S101-0001 was added after signing"]
    gone = signature_state(sig, states()[1:])
    assert gone.removed == (REFS[0],)


def test_rec2_a_change_elsewhere_keeps_a_visit_signature() -> None:
    sig = sign(
        target(SignLevel.VISIT, S1, visit="M12"), states(), signer="i", printed_name="I", at=AT
    )
    assert signature_state(sig, states({REFS[3]: 1, REFS[0]: 2})).valid
    assert invalidated_by([sig], REFS[3]) == []


def test_rec2_nothing_to_sign_and_bad_targets_are_refused() -> None:
    with pytest.raises(PreconditionFailed, match="visit Y3 of S101-0001 has no saved data") as info:
        sign(target(SignLevel.VISIT, S1, visit="Y3"), states(), signer="i", printed_name="I", at=AT)
    assert info.value.code == "nothing-to-sign"
    with pytest.raises(ValidationFailed, match="printed name"):
        sign(target(SignLevel.CASEBOOK, S1), states(), signer="i", printed_name=" ", at=AT)
    with pytest.raises(ValidationFailed):
        target(SignLevel.VISIT, S1)
    with pytest.raises(ValidationFailed):
        target(SignLevel.FORM, S1, ref=RecordRef("S999-0001", "tte"))
    with pytest.raises(ValidationFailed):
        target(SignLevel.CASEBOOK, S1, visit="M1")


@settings(max_examples=200, derandomize=True, database=None)
@given(
    level=st.sampled_from(list(SignLevel)),
    changed=st.sets(st.sampled_from(REFS)),
)
def test_rec2_signature_holds_iff_nothing_it_covers_changed(
    level: SignLevel, changed: set[RecordRef]
) -> None:
    """REC-2 property: for any level and any set of changed records, the signature is valid
    exactly when none of the changed records is within what it covers."""
    targets: dict[SignLevel, dict[str, object]] = {
        SignLevel.FORM: {"ref": REFS[2]},
        SignLevel.VISIT: {"visit": "M24"},
        SignLevel.CASEBOOK: {},
    }
    kwargs = targets[level]
    sig = sign(target(level, S1, **kwargs), states(), signer="i", printed_name="I", at=AT)  # type: ignore[arg-type]
    state = signature_state(sig, states(dict.fromkeys(changed, 1)))
    assert state.valid is not any(sig.target.covers(ref) for ref in changed)
    assert set(state.changed) == {ref for ref in changed if sig.target.covers(ref)}
