"""The one lock guard (REC-3, REC-5) on the in-memory unit of work: it sits in the audit log
every write passes through, so a service refused by a lock writes nothing; and which audit
entries it judges as which write (domain/write_guard.py)."""

from __future__ import annotations

import pytest

from tests.fakes import FakeUnitOfWorkFactory
from tests.unit.test_services_on_fakes import STUDY, World, world  # noqa: F401  (fixture)
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.locks import RecordLocked, WriteKind
from trialdesk.domain.roles import Role
from trialdesk.domain.write_guard import GuardedWrite, write_of
from trialdesk.services import screening


def _lock(w: World, *, level: str, kind: str, subject_id: int | None = None) -> None:
    with FakeUnitOfWorkFactory(w.store)() as uow:
        uow.holds.add_lock(
            study_id=STUDY, level=level, kind=kind, subject_id=subject_id, visit_code=None,
            form_code=None, seq=None, reason="test", locked_by="monitor",
            locked_name="Monitor", locked_at=w.clock(), locked_meaning="m",
        )  # fmt: skip
        uow.commit()


def test_rec3_entries_are_judged_as_the_writes_they_record() -> None:
    """REC-3: form entries are data writes of their record; visits, enrolment, queries and
    emergency unblinding are told apart; refusals, disclosures, other streams and the lock
    services' own entries are not judged."""
    form = write_of(
        stream="subject:7", action="correct_data", entity="form", entity_id="kccq#42", new={}
    )
    assert form == GuardedWrite(WriteKind.DATA, None, "kccq", 42)
    visit = write_of(
        stream="subject:7",
        action="record_visit",
        entity="subject",
        entity_id="S",
        new={"visit": "M24"},
    )
    assert visit == GuardedWrite(WriteKind.VISIT, "M24")
    cases = {
        "register": WriteKind.ENROLMENT,
        "randomize": WriteKind.ENROLMENT,
        "answer_query": WriteKind.QUERY,
        "emergency_unblind": WriteKind.EMERGENCY_UNBLIND,
        "withdraw": WriteKind.SUBJECT,
    }
    for action, kind in cases.items():
        got = write_of(stream="subject:7", action=action, entity="subject", entity_id="S", new={})
        assert got is not None and got.kind is kind, action
    for stream, action in [
        ("subject:7", "crc_decision_refused"),
        ("subject:7", "signature_failed"),
        ("subject:7", "lock_record"),
        ("subject:7", "sdv_mark"),
        ("disclosure:1", "disclose_arm"),
        ("study:1", "request_trial_unblinding"),
    ]:
        assert write_of(stream=stream, action=action, entity="x", entity_id="x", new={}) is None


def test_rec3_a_casebook_lock_refuses_consent_and_writes_nothing(world: World) -> None:  # noqa: F811
    """REC-3: the casebook lock refuses the consent with one message naming the lock; the
    store is as before (no commit, no audit entry); another subject is not affected."""
    number = world.put(SubjectState.REGISTERED)
    other = world.put(SubjectState.REGISTERED)
    _lock(world, level="casebook", kind="manual", subject_id=world.subject(number).id)
    commits, entries = world.store.commits, len(world.store.tables.audit)
    with pytest.raises(RecordLocked, match=f"subject {number} is locked by a lock of the casebook"):
        screening.record_consent(
            world.ctx, world.actor(Role.COORDINATOR), STUDY, number,
            consent_date=world.clock().date(), consent_version="v1.0",
        )  # fmt: skip
    assert (world.store.commits, len(world.store.tables.audit)) == (commits, entries)
    assert world.subject(number).state == "registered"
    screening.record_consent(
        world.ctx, world.actor(Role.COORDINATOR), STUDY, other,
        consent_date=world.clock().date(), consent_version="v1.0",
    )  # fmt: skip
    assert world.subject(other).state == "screening"


def test_rec5_the_hard_lock_refuses_registration(world: World) -> None:  # noqa: F811
    """REC-5: under the hard database lock a registration is refused, naming the lock."""
    _lock(world, level="study", kind="hard")
    before = dict(world.store.tables.subjects)
    with pytest.raises(RecordLocked, match="hard database lock, set by monitor"):
        screening.register_subject(
            world.ctx, world.actor(Role.COORDINATOR), STUDY, site_code="S101"
        )
    assert world.store.tables.subjects == before
