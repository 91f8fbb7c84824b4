"""What a casebook should hold, the missing-data report per visit and form (REC-10), and the
database-lock checklist as a report and a refusal (REC-5)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialdesk.domain.database_lock import (
    BlockerKind,
    CasebookFacts,
    QueryFacts,
    Slot,
    SlotStatus,
    casebook_needs_signature,
    check_database_lock,
    check_trial_unblinding,
    expected_slots,
    fill,
    lock_blockers,
    missing_report,
)
from trialdesk.domain.errors import PreconditionFailed
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.queries import QueryStatus
from trialdesk.domain.records import RecordRef
from trialdesk.domain.sdv import SdvState, SdvStatus

S1, S2 = "S101-0001", "S102-0001"
TODAY = dt.date(2032, 6, 1)
SCREENING = ("demographics", "nyha", "tte")
ANATOMY = ("angiogram", "venogram")
AFTER = ("index_procedure", "discharge")


def slots_for(
    state: SubjectState, randomized: bool, visits: dict[str, tuple[str, ...]]
) -> list[Slot]:
    return expected_slots(
        S1,
        "S101",
        state=state,
        randomized=randomized,
        screening_forms=SCREENING,
        anatomy_forms=ANATOMY,
        after_randomization=AFTER,
        visits_done=visits,
    )


@pytest.mark.parametrize(
    ("state", "randomized", "count"),
    [
        (SubjectState.REGISTERED, False, 0),
        (SubjectState.SCREENING, False, 0),
        (SubjectState.SCREEN_FAILED, False, 0),
        (SubjectState.ECHO_QUALIFIED, False, 3),
        (SubjectState.AWAITING_PROCEDURE, False, 3),
        (SubjectState.RANDOMIZED, True, 3 + 2 + 2 + 2),
        (SubjectState.WITHDRAWN, True, 3 + 2 + 2 + 2),
        (SubjectState.WITHDRAWN, False, 0),
    ],
)
def test_rec10_expected_forms_follow_the_subjects_progress(
    state: SubjectState, randomized: bool, count: int
) -> None:
    """Screening forms once screening passed; anatomy, the arm-neutral procedure record,
    discharge and each done visit's forms once randomized; a missed visit expects nothing."""
    slots = slots_for(state, randomized, {"M1": ("follow_up",), "M6": ("follow_up",)})
    assert len(slots) == count
    assert all(slot.status is SlotStatus.NOT_SAVED for slot in slots)
    if randomized:
        assert RecordRef(S1, "follow_up", "M6") in [s.ref for s in slots]
        assert not {"implant_procedure", "sham_procedure"} & {s.ref.form for s in slots}


def test_rec10_missing_data_report_per_visit_and_form() -> None:
    slots = slots_for(SubjectState.RANDOMIZED, True, {"M1": ("follow_up",), "M6": ("follow_up",)})
    saved = {RecordRef(S1, f): True for f in (*SCREENING, *ANATOMY, "index_procedure", "discharge")}
    saved[RecordRef(S1, "follow_up", "M1")] = False  # a required value blank
    marked = {RecordRef(S1, "tte"): "not available: echo lost"}
    filled = fill(slots, saved, marked)
    report = missing_report(filled)
    assert report[("", "tte")].marked_missing == 1
    assert report[("", "demographics")].complete == 1
    m1, m6 = report[("M1", "follow_up")], report[("M6", "follow_up")]
    assert (m1.expected, m1.incomplete, m6.not_saved) == (1, 1, 1)
    assert next(s for s in filled if s.ref.form == "tte").reason == "not available: echo lost"


def _casebook(state: SubjectState = SubjectState.COMPLETED, **kw: object) -> CasebookFacts:
    values: dict[str, object] = {
        "subject": S1,
        "site": "S101",
        "state": state,
        "needs_signature": True,
        "signed": True,
        "signature_valid": True,
    }
    return CasebookFacts(**(values | kw))  # type: ignore[arg-type]


def test_rec5_checklist_lists_every_blocker_by_site_and_subject() -> None:
    """Each of the issue's conditions, and a subject still in follow-up, is one blocker with
    a sentence a data manager can act on; resolved items block nothing."""
    ref = RecordRef(S1, "follow_up", "M24")
    blockers = lock_blockers(
        queries=[
            QueryFacts(
                7, S1, "S101", ref, "kccq_overall_score", QueryStatus.ANSWERED, dt.date(2032, 5, 1)
            ),
            QueryFacts(8, S1, "S101", ref, "nyha_class", QueryStatus.VERIFIED, dt.date(2032, 5, 1)),
        ],
        slots=[
            Slot(RecordRef(S2, "follow_up", "M12"), "S102", SlotStatus.NOT_SAVED),
            Slot(RecordRef(S1, "tte"), "S101", SlotStatus.MARKED_MISSING, "lost"),
            Slot(RecordRef(S1, "kccq"), "S101", SlotStatus.INCOMPLETE),
        ],
        casebooks=[
            _casebook(signed=False),
            _casebook(
                SubjectState.UNBLINDED,
                subject=S2,
                site="S102",
                signature_valid=False,
                invalid_because=("form follow_up at M24 of S102-0001 changed after signing",),
            ),
        ],
        sdv=[
            ("S101", SdvState(ref, SdvStatus.PENDING, True, ("visit_date",))),
            (
                "S101",
                SdvState(
                    RecordRef(S1, "tte"),
                    SdvStatus.INVALIDATED,
                    True,
                    (),
                    ("lvef_pct changed 40 -> 55",),
                ),
            ),
            ("S101", SdvState(RecordRef(S1, "nyha"), SdvStatus.VERIFIED, True)),
            ("S101", SdvState(RecordRef(S1, "demographics"), SdvStatus.INVALIDATED, False)),
        ],
        today=TODAY,
    )
    assert [(b.site, b.subject, b.kind) for b in blockers] == [
        ("S101", S1, BlockerKind.OPEN_QUERY),
        ("S101", S1, BlockerKind.FORM_INCOMPLETE),
        ("S101", S1, BlockerKind.CASEBOOK_UNSIGNED),
        ("S101", S1, BlockerKind.SDV_PENDING),
        ("S101", S1, BlockerKind.SDV_INVALIDATED),
        ("S102", S2, BlockerKind.FORM_NOT_SAVED),
        ("S102", S2, BlockerKind.SIGNATURE_INVALIDATED),
        ("S102", S2, BlockerKind.SUBJECT_ON_STUDY),
    ]
    texts = [b.text for b in blockers]
    assert texts[0] == (
        "query 7 on kccq_overall_score of form follow_up at M24 of S101-0001 is answered (31 days)"
    )
    assert texts[3] == "form follow_up at M24 of S101-0001 awaits SDV (visit_date)"
    assert (
        texts[4]
        == "form tte of S101-0001: SDV cleared by a later change (lvef_pct changed 40 -> 55)"
    )
    assert texts[6] == (
        "the casebook signature of S102-0001 no longer holds: form follow_up at M24 of "
        "S102-0001 changed after signing"
    )
    assert blockers[0].query_id == 7


def test_rec5_hard_lock_refused_while_blockers_remain_soft_lock_allowed() -> None:
    blockers = lock_blockers(
        queries=[],
        slots=[Slot(RecordRef(S1, "kccq"), "S101")] * 5,
        casebooks=[],
        sdv=[],
        today=TODAY,
    )
    with pytest.raises(PreconditionFailed) as info:
        check_database_lock("hard", blockers)
    assert info.value.code == "database-lock-blocked"
    assert info.value.message.startswith("the database cannot be locked: 5 blockers remain (")
    assert info.value.message.endswith("; and 2 more); see the lock checklist")
    check_database_lock("soft", blockers)
    check_database_lock("hard", [])


def test_rec5_trial_unblinding_needs_the_hard_lock() -> None:
    """The issue's second finding: trial unblinding with a query open went through."""
    with pytest.raises(PreconditionFailed, match="needs the hard database lock") as info:
        check_trial_unblinding(False)
    assert info.value.code == "database-not-locked"
    check_trial_unblinding(True)


def test_rec5_whose_casebook_needs_the_investigators_signature() -> None:
    assert casebook_needs_signature(randomized=True, consented=True, scope="randomized")
    assert not casebook_needs_signature(randomized=False, consented=True, scope="randomized")
    assert casebook_needs_signature(randomized=False, consented=True, scope="consented")
    assert not casebook_needs_signature(randomized=False, consented=False, scope="consented")


RESOLVED = st.sampled_from([QueryStatus.VERIFIED, QueryStatus.CLOSED])
ANY_STATUS = st.sampled_from(list(QueryStatus))


@settings(max_examples=200, derandomize=True, database=None)
@given(
    statuses=st.lists(ANY_STATUS, max_size=6),
    slot_statuses=st.lists(st.sampled_from(list(SlotStatus)), max_size=6),
    sdv_statuses=st.lists(st.sampled_from(list(SdvStatus)), max_size=6),
)
def test_rec5_no_blockers_iff_everything_is_resolved(
    statuses: list[QueryStatus], slot_statuses: list[SlotStatus], sdv_statuses: list[SdvStatus]
) -> None:
    """REC-5 property: the checklist is empty exactly when every query is verified or closed,
    every form complete or marked missing, and every required SDV verified (or not needed)."""
    ref = RecordRef(S1, "kccq")
    blockers = lock_blockers(
        queries=[QueryFacts(i, S1, "S101", ref, "f", s, TODAY) for i, s in enumerate(statuses)],
        slots=[Slot(ref, "S101", s) for s in slot_statuses],
        casebooks=[_casebook()],
        sdv=[("S101", SdvState(ref, s, s is not SdvStatus.NOT_REQUIRED)) for s in sdv_statuses],
        today=TODAY,
    )
    clean = (
        all(s in (QueryStatus.VERIFIED, QueryStatus.CLOSED) for s in statuses)
        and all(s in (SlotStatus.COMPLETE, SlotStatus.MARKED_MISSING) for s in slot_statuses)
        and all(s in (SdvStatus.VERIFIED, SdvStatus.NOT_REQUIRED) for s in sdv_statuses)
    )
    assert (blockers == []) is clean
