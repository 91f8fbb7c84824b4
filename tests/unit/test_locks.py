"""Locks at four levels, soft and hard database locks, and the freeze of the blinded phase at
unblinding, as pure rules (REC-3, REC-4, REC-5)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import flagship
from tests.protocol_variants import RECORDS_MARKER, records_variant
from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.domain.locks import (
    LOCK_REFUSES,
    DatedRecord,
    FreezeSpec,
    Lock,
    LockKind,
    LockLevel,
    LockRequest,
    RecordLocked,
    UnblindingFlag,
    Write,
    WriteKind,
    blocking,
    check_can_lock,
    check_can_unlock,
    check_late_record,
    check_writable,
    covers,
    freeze_requests,
    frozen_visits,
    unblinding_flag,
    validate_target,
)
from trialdesk.domain.records import RecordRef
from trialdesk.protocol.loader import parse_protocol
from trialdesk.protocol.specs import freeze_spec

AT = dt.datetime(2029, 2, 1, 9, 30, tzinfo=dt.UTC)
S1, S2 = "S101-0001", "S101-0002"
VISITS = ("M1", "M6", "M12", "M18", "M24", "Y3", "Y4", "Y5")


def lock(level: LockLevel, kind: LockKind = LockKind.MANUAL, **target: object) -> Lock:
    return Lock(
        id=1,
        level=level,
        kind=kind,
        reason="data review complete",
        locked_by="dm",
        locked_at=AT,
        **target,  # type: ignore[arg-type]
    )


KCCQ_M24 = RecordRef(S1, "follow_up", "M24")
BASELINE_KCCQ = RecordRef(S1, "kccq")


@pytest.mark.parametrize(
    ("the_lock", "write", "refused"),
    [
        # a form lock: that record only
        (lock(LockLevel.FORM, subject=S1, form="kccq"), Write.data(BASELINE_KCCQ), True),
        (lock(LockLevel.FORM, subject=S1, form="kccq"), Write.data(RecordRef(S2, "kccq")), False),
        (lock(LockLevel.FORM, subject=S1, form="kccq"), Write.data(RecordRef(S1, "tte")), False),
        (
            lock(LockLevel.FORM, subject=S1, form="follow_up", visit="M24"),
            Write.data(KCCQ_M24),
            True,
        ),
        (
            lock(LockLevel.FORM, subject=S1, form="follow_up", visit="M24"),
            Write.data(RecordRef(S1, "follow_up", "M18")),
            False,
        ),
        (
            lock(LockLevel.FORM, subject=S1, form="adverse_event", seq=2),
            Write.data(RecordRef(S1, "adverse_event", seq=1)),
            False,
        ),
        (
            lock(LockLevel.FORM, subject=S1, form="adverse_event"),
            Write.data(RecordRef(S1, "adverse_event", seq=3)),
            True,
        ),
        (
            lock(LockLevel.FORM, subject=S1, form="kccq"),
            Write(WriteKind.SUBJECT, S1),
            False,
        ),
        # a visit lock: its forms and its own record
        (lock(LockLevel.VISIT, subject=S1, visit="M24"), Write.data(KCCQ_M24), True),
        (lock(LockLevel.VISIT, subject=S1, visit="M24"), Write(WriteKind.VISIT, S1, "M24"), True),
        (lock(LockLevel.VISIT, subject=S1, visit="M24"), Write(WriteKind.VISIT, S1, "Y3"), False),
        (lock(LockLevel.VISIT, subject=S1, visit="M24"), Write.data(BASELINE_KCCQ), False),
        (lock(LockLevel.VISIT, subject=S1, visit="M24"), Write(WriteKind.SUBJECT, S1), False),
        # a casebook lock: everything of the subject, nothing of others
        (lock(LockLevel.CASEBOOK, subject=S1), Write(WriteKind.SUBJECT, S1), True),
        (lock(LockLevel.CASEBOOK, subject=S1), Write(WriteKind.ENROLMENT, S1), True),
        (lock(LockLevel.CASEBOOK, subject=S1), Write.data(RecordRef(S2, "kccq")), False),
        (lock(LockLevel.CASEBOOK, subject=S1), Write(WriteKind.ENROLMENT), False),
        # the study locks: registration too
        (lock(LockLevel.STUDY, LockKind.SOFT), Write(WriteKind.ENROLMENT), True),
        (lock(LockLevel.STUDY, LockKind.SOFT), Write(WriteKind.QUERY, S1, "", "kccq"), False),
        (lock(LockLevel.STUDY, LockKind.SOFT), Write(WriteKind.REVIEW, S1, "", "kccq"), False),
        (lock(LockLevel.STUDY, LockKind.HARD), Write(WriteKind.QUERY, S1, "", "kccq"), True),
        (lock(LockLevel.STUDY, LockKind.HARD), Write(WriteKind.REVIEW, S1), True),
        # queries and reviews pass record locks: a locked form is still queried and signed
        (
            lock(LockLevel.FORM, subject=S1, form="kccq"),
            Write(WriteKind.QUERY, S1, "", "kccq"),
            False,
        ),
        (lock(LockLevel.CASEBOOK, subject=S1), Write(WriteKind.REVIEW, S1), False),
    ],
)
def test_rec3_what_each_lock_covers(the_lock: Lock, write: Write, refused: bool) -> None:
    """REC-3: form, visit, casebook and study locks each cover their own target."""
    assert covers(the_lock, write) is refused


LEVELS_AND_KINDS = st.sampled_from(
    [
        (LockLevel.FORM, LockKind.MANUAL),
        (LockLevel.FORM, LockKind.FREEZE),
        (LockLevel.VISIT, LockKind.MANUAL),
        (LockLevel.VISIT, LockKind.FREEZE),
        (LockLevel.CASEBOOK, LockKind.MANUAL),
        (LockLevel.STUDY, LockKind.SOFT),
        (LockLevel.STUDY, LockKind.HARD),
    ]
)
SUBJECTS = st.sampled_from([S1, S2])
VISIT_CODES = st.sampled_from(["", "M1", "M24"])
FORMS = st.sampled_from(["kccq", "follow_up", "adverse_event"])
SEQS = st.one_of(st.none(), st.integers(1, 3))


@st.composite
def locks(draw: st.DrawFn) -> Lock:
    level, kind = draw(LEVELS_AND_KINDS)
    target: dict[str, object] = {}
    if level is not LockLevel.STUDY:
        target["subject"] = draw(SUBJECTS)
    if level is LockLevel.VISIT:
        target["visit"] = draw(st.sampled_from(["M1", "M24"]))
    if level is LockLevel.FORM:
        target |= {"form": draw(FORMS), "visit": draw(VISIT_CODES) or None, "seq": draw(SEQS)}
    lifted = draw(st.booleans())
    return Lock(
        id=draw(st.integers(1, 99)),
        level=level,
        kind=kind,
        reason="r",
        locked_by="dm",
        locked_at=AT,
        unlocked_at=AT + dt.timedelta(days=1) if lifted else None,
        **target,  # type: ignore[arg-type]
    )


@st.composite
def writes(draw: st.DrawFn) -> Write:
    kind = draw(st.sampled_from(list(WriteKind)))
    subject = None if kind is WriteKind.ENROLMENT and draw(st.booleans()) else draw(SUBJECTS)
    return Write(kind, subject, draw(VISIT_CODES), draw(FORMS), draw(SEQS))


@settings(max_examples=400, derandomize=True, database=None)
@given(st.lists(locks(), max_size=4), writes())
def test_rec3_lock_guard_properties(all_locks: list[Lock], write: Write) -> None:
    """REC-3, REC-5 as properties over any locks and any write: emergency unblinding always
    passes; a lifted lock refuses nothing; a hard lock refuses everything else; a record lock
    never touches another subject; the refusal names the widest blocking lock."""
    found = blocking(all_locks, write)
    assert all(lock.active for lock in found)
    if write.kind is WriteKind.EMERGENCY_UNBLIND:
        assert not found
    hard = [x for x in all_locks if x.active and x.kind is LockKind.HARD]
    if hard and write.kind is not WriteKind.EMERGENCY_UNBLIND:
        assert found and found[0].level is LockLevel.STUDY
    for x in found:
        assert x.level is LockLevel.STUDY or x.subject == write.subject
        assert write.kind in LOCK_REFUSES[x.kind]
    if found:
        with pytest.raises(RecordLocked) as info:
            check_writable(all_locks, write)
        assert found[0].describe() in info.value.message
        assert info.value.locks == tuple(found)
        assert info.value.code == "record-locked"
    else:
        check_writable(all_locks, write)


def test_rec3_refusal_names_the_lock_who_when_why_and_the_way_out() -> None:
    """The KCCQ case (issue 15): the unblinded coordinator changes the frozen M24 score."""
    freeze = lock(LockLevel.VISIT, LockKind.FREEZE, subject=S1, visit="M24")
    with pytest.raises(RecordLocked) as info:
        check_writable([freeze], Write.data(KCCQ_M24))
    assert info.value.message == (
        "form follow_up at M24 of S101-0001 is locked by the freeze at unblinding of visit M24 "
        "of S101-0001, set by dm on 2029-02-01 (data review complete); the data manager may "
        "unlock it with a reason and a signature"
    )
    hard = lock(LockLevel.STUDY, LockKind.HARD)
    with pytest.raises(
        RecordLocked,
        match=r"\(data review complete\); 1 more lock covers it; the hard database lock is final$",
    ):
        check_writable([freeze, hard], Write.data(KCCQ_M24))
    with pytest.raises(RecordLocked, match=r"^the study is locked by the soft database lock"):
        check_writable([lock(LockLevel.STUDY, LockKind.SOFT)], Write(WriteKind.ENROLMENT))


def test_rec3_unlocked_lock_lets_the_change_through() -> None:
    lifted = Lock(
        id=3,
        level=LockLevel.VISIT,
        kind=LockKind.FREEZE,
        reason="frozen",
        locked_by="system",
        locked_at=AT,
        subject=S1,
        visit="M24",
        unlocked_at=AT + dt.timedelta(days=3),
        unlocked_by="dm",
        unlock_reason="transcription error on the KCCQ score",
    )
    check_writable([lifted], Write.data(KCCQ_M24))


@pytest.mark.parametrize(
    ("level", "kind", "target", "problem"),
    [
        (LockLevel.STUDY, LockKind.MANUAL, {}, "kind"),
        (LockLevel.STUDY, LockKind.HARD, {"subject": S1}, "subject"),
        (LockLevel.CASEBOOK, LockKind.SOFT, {"subject": S1}, "kind"),
        (LockLevel.CASEBOOK, LockKind.MANUAL, {}, "subject"),
        (LockLevel.CASEBOOK, LockKind.MANUAL, {"subject": S1, "visit": "M1"}, "visit"),
        (LockLevel.VISIT, LockKind.MANUAL, {"subject": S1}, "visit"),
        (LockLevel.VISIT, LockKind.MANUAL, {"subject": S1, "visit": "M1", "form": "x"}, "form"),
        (LockLevel.FORM, LockKind.MANUAL, {"subject": S1}, "form"),
        (LockLevel.FORM, LockKind.MANUAL, {"subject": S1, "form": "kccq", "seq": 0}, "seq"),
    ],
)
def test_rec3_lock_target_must_fit_its_level(
    level: LockLevel, kind: LockKind, target: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        validate_target(level, kind, **target)  # type: ignore[arg-type]
    assert problem in info.value.problems


def test_rec5_hard_lock_ends_the_soft_one_and_is_final() -> None:
    """REC-5: soft (reversible) then hard (final); nothing after the hard lock."""
    soft = lock(LockLevel.STUDY, LockKind.SOFT)
    hard = lock(LockLevel.STUDY, LockKind.HARD)
    assert check_can_lock([], soft) == []
    assert check_can_lock([soft], hard) == [soft]
    with pytest.raises(PreconditionFailed, match="already under the soft"):
        check_can_lock([soft], soft)
    with pytest.raises(PreconditionFailed, match="final") as info:
        check_can_lock([hard], soft)
    assert info.value.code == "database-locked"
    with pytest.raises(PreconditionFailed, match="final"):
        check_can_unlock(hard, "we need to fix a date")
    assert check_can_unlock(soft, "  interim look done ") == "interim look done"


def test_rec3_lock_and_unlock_need_reasons_and_no_duplicate() -> None:
    form_lock = lock(LockLevel.FORM, subject=S1, form="kccq")
    with pytest.raises(PreconditionFailed, match="already exists"):
        check_can_lock([form_lock], form_lock)
    other = lock(LockLevel.FORM, subject=S1, form="kccq", seq=2)
    assert check_can_lock([form_lock], other) == []
    blank = Lock(2, LockLevel.CASEBOOK, LockKind.MANUAL, " ", "dm", AT, subject=S1)
    with pytest.raises(ValidationFailed, match="needs a reason"):
        check_can_lock([], blank)
    with pytest.raises(ValidationFailed, match="needs a reason"):
        check_can_unlock(form_lock, "   ")
    lifted = Lock(4, LockLevel.CASEBOOK, LockKind.MANUAL, "r", "dm", AT, subject=S1, unlocked_at=AT)
    with pytest.raises(PreconditionFailed, match="already lifted"):
        check_can_unlock(lifted, "again")


# --- the freeze at unblinding (REC-4) -------------------------------------------------------

FLAGSHIP_FREEZE = FreezeSpec(
    unblinding=frozenset({"scheduled", "emergency"}),
    visits=frozen_visits(VISITS, "M24"),
    forms=frozenset({"kccq", "adverse_event", "additional_therapy", "death"}),
)
UNBLINDED = dt.date(2029, 2, 1)


def test_rec4_frozen_visits_are_those_up_to_and_including_the_last() -> None:
    assert frozen_visits(VISITS, "M24") == ("M1", "M6", "M12", "M18", "M24")
    assert frozen_visits(VISITS, "M1") == ("M1",)
    with pytest.raises(ValidationFailed):
        frozen_visits(VISITS, "M30")


def test_rec4_scheduled_unblinding_freezes_visits_and_endpoint_forms() -> None:
    """RAND-7: at the scheduled unblinding after M24, visits M1..M24 recorded and the endpoint
    forms dated up to the unblinding are locked;
    a later adverse event and a visit after M24 are not; other subjects' records never."""
    records = [
        DatedRecord(RecordRef(S1, "kccq"), dt.date(2027, 1, 20)),
        DatedRecord(RecordRef(S1, "tte"), dt.date(2027, 1, 20)),
        DatedRecord(RecordRef(S1, "adverse_event", seq=1), dt.date(2028, 5, 1)),
        DatedRecord(RecordRef(S1, "adverse_event", seq=2), dt.date(2029, 2, 2)),
        DatedRecord(RecordRef(S1, "follow_up", "M24"), dt.date(2029, 1, 25)),
        DatedRecord(RecordRef(S2, "kccq"), dt.date(2027, 1, 20)),
    ]
    got = freeze_requests(
        FLAGSHIP_FREEZE,
        "scheduled",
        S1,
        UNBLINDED,
        ["M1", "M6", "M12", "M24", "Y3"],  # M18 missing: nothing recorded, nothing locked
        records,
    )
    reason = "scheduled unblinding of S101-0001 on 2029-02-01: blinded phase frozen"
    assert got == [
        LockRequest(LockLevel.VISIT, S1, visit=v, reason=reason) for v in ("M1", "M6", "M12", "M24")
    ] + [
        LockRequest(LockLevel.FORM, S1, form="adverse_event", seq=1, reason=reason),
        LockRequest(LockLevel.FORM, S1, form="kccq", seq=1, reason=reason),
    ]


def test_rec4_unblinding_kind_the_protocol_does_not_freeze_locks_nothing() -> None:
    only_scheduled = FreezeSpec(frozenset({"scheduled"}), ("M1",), frozenset({"kccq"}))
    records = [DatedRecord(RecordRef(S1, "kccq"), None)]
    assert freeze_requests(only_scheduled, "emergency", S1, UNBLINDED, ["M1"], records) == []
    assert len(freeze_requests(only_scheduled, "scheduled", S1, UNBLINDED, ["M1"], records)) == 2


def test_rec4_flags_after_unblinding() -> None:
    """Changed after unblinding, entered after unblinding, assessed unblinded; nothing before
    unblinding or outside the frozen scope."""
    f = FLAGSHIP_FREEZE
    day = dt.date(2029, 1, 25)
    assert unblinding_flag(f, None, KCCQ_M24, day, new_record=False) is None
    assert unblinding_flag(None, UNBLINDED, KCCQ_M24, day, new_record=False) is None
    assert (
        unblinding_flag(f, UNBLINDED, KCCQ_M24, day, new_record=False)
        is UnblindingFlag.CHANGED_AFTER_UNBLINDING
    )
    late = RecordRef(S1, "adverse_event", seq=4)
    assert (
        unblinding_flag(f, UNBLINDED, late, dt.date(2028, 12, 1), new_record=True)
        is UnblindingFlag.ENTERED_AFTER_UNBLINDING
    )
    after_emergency = RecordRef(S1, "follow_up", "M12")
    assert (
        unblinding_flag(
            f, dt.date(2027, 9, 1), after_emergency, dt.date(2028, 1, 20), new_record=True
        )
        is UnblindingFlag.ASSESSED_UNBLINDED
    )
    assert (
        unblinding_flag(f, UNBLINDED, RecordRef(S1, "annual_contact", "Y3"), None, new_record=True)
        is None
    )


def test_rec4_late_records_refused_only_when_the_protocol_says_so() -> None:
    late = RecordRef(S1, "kccq")
    flag = UnblindingFlag.ENTERED_AFTER_UNBLINDING
    check_late_record(FLAGSHIP_FREEZE, flag, late)  # flagship: flag
    refusing = FreezeSpec(frozenset({"scheduled"}), ("M1",), frozenset({"kccq"}), "refuse")
    with pytest.raises(PreconditionFailed, match="blinded phase") as info:
        check_late_record(refusing, flag, late)
    assert info.value.code == "blinded-phase-frozen"
    check_late_record(refusing, UnblindingFlag.ASSESSED_UNBLINDED, late)
    check_late_record(refusing, None, late)


def test_rec4_freeze_scope_is_protocol_data() -> None:
    """The flagship freezes M1..M24 and its endpoint forms at either unblinding; the second
    trial only M1..M12 and the baseline KCCQ, at scheduled unblinding, refusing late records."""
    assert freeze_spec(flagship().protocol) == FLAGSHIP_FREEZE
    assert freeze_spec(records_variant().protocol) == FreezeSpec(
        unblinding=frozenset({"scheduled"}),
        visits=("M1", "M6", "M12"),
        forms=frozenset({"kccq"}),
        late_records="refuse",
    )
    text = flagship().text
    assert freeze_spec(parse_protocol(text[: text.index(RECORDS_MARKER)]).protocol) is None
