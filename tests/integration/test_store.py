"""The store's shared mechanics on SQLite and PostgreSQL (issue 13): timezone-aware times, the
guarded update, the study lock, and how a unit of work ends (LIFE-1, RAND-5, AUD-1)."""

from __future__ import annotations

import datetime as dt
import threading
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError, StatementError

from tests import journey as j
from tests.conftest import Trial
from trialdesk.services import screening
from trialdesk.store.tables import StudyRow


def test_life1_times_come_back_aware_and_in_utc(trial: Trial) -> None:
    """A time stored from any zone reads back as the same instant, in UTC, never naive."""
    sydney = dt.datetime(2027, 3, 1, 9, 30, tzinfo=ZoneInfo("Australia/Sydney"))
    trial.clock.now = sydney
    view = screening.register_subject(
        trial.ctx, trial.actor("coordinator"), trial.study_id, site_code=j.SITE
    )
    with trial.ctx.uow(readonly=True) as uow:
        subject = uow.subjects.get(trial.study_id, view.number)
    assert subject is not None
    assert subject.created_at == sydney
    assert subject.created_at.utcoffset() == dt.timedelta(0)


def test_life1_a_naive_time_is_refused_not_stored_as_if_utc(trial: Trial) -> None:
    with trial.ctx.uow() as uow:
        row = uow.session.get(StudyRow, trial.study_id)
        assert row is not None
        row.trial_unblinded_at = dt.datetime(2027, 1, 1, 12)  # no zone
        with pytest.raises(StatementError, match="naive datetime"):
            uow.session.flush()


def test_life1_the_guarded_update_refuses_a_stale_record(trial: Trial) -> None:
    number = j.register(trial)
    with trial.ctx.uow() as uow:
        read = uow.subjects.get(trial.study_id, number)
        assert read is not None
        first = uow.subjects.update(read, {"consent_version": "v1"})
        assert first is not None and first.version == read.version + 1
        assert uow.subjects.update(read, {"consent_version": "v2"}) is None
        uow.commit()
    with trial.ctx.uow(readonly=True) as uow:
        again = uow.subjects.get(trial.study_id, number)
    assert again is not None and again.consent_version == "v1"


def test_aud1_nothing_is_kept_without_commit(trial: Trial) -> None:
    number = j.register(trial)
    with trial.ctx.uow() as uow:
        read = uow.subjects.get(trial.study_id, number)
        assert read is not None
        assert uow.subjects.update(read, {"consent_version": "lost"}) is not None
        uow.audit.stream("test", "tester", "lost", at=trial.clock(), entity="x", entity_id="1")
    with trial.ctx.uow(readonly=True) as uow:
        again = uow.subjects.get(trial.study_id, number)
    assert again is not None and again.consent_version is None


def test_life1_units_of_work_without_pending_writes_end_with_commit(trial: Trial) -> None:
    """A read-only unit of work, and reads after a write's commit, end with COMMIT: psycopg
    drops its prepared statements on every ROLLBACK. Work left uncommitted rolls back."""
    number = j.register(trial)
    ends: list[str] = []
    engine = trial.runtime.engine
    commit = lambda _conn: ends.append("commit")  # noqa: E731
    rollback = lambda _conn: ends.append("rollback")  # noqa: E731
    event.listen(engine, "commit", commit)
    event.listen(engine, "rollback", rollback)
    try:
        with trial.ctx.uow(readonly=True) as uow:
            uow.subjects.get(trial.study_id, number)
        assert ends == ["commit"]
        ends.clear()
        with trial.ctx.uow() as uow:
            read = uow.subjects.get(trial.study_id, number)
            assert read is not None
            uow.subjects.update(read, {"consent_version": "x"})
        assert ends == ["rollback"]
    finally:
        event.remove(engine, "commit", commit)
        event.remove(engine, "rollback", rollback)


@pytest.mark.req("RAND-5")
def test_rand5_the_study_lock_excludes_a_second_holder(trial: Trial) -> None:
    """RAND-5: while one transaction holds the study lock, another cannot take it (on
    PostgreSQL a row lock, here refused at once through lock_timeout; SQLite serializes
    writers with BEGIN IMMEDIATE); two shared holders do not exclude each other."""
    if trial.backend != "postgres":
        with trial.ctx.uow() as uow:
            assert uow.lock_study(trial.study_id) is True
            assert uow.lock_study(trial.study_id + 999) is False
        return
    held, release, done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def holder(shared: bool) -> None:
        try:
            with trial.ctx.uow() as uow:
                assert uow.lock_study(trial.study_id, shared=shared)
                held.set()
                release.wait(timeout=60)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    def try_lock(shared: bool) -> bool:
        with trial.ctx.uow() as uow:
            uow.session.execute(text("SET LOCAL lock_timeout = '50ms'"))
            try:
                return uow.lock_study(trial.study_id, shared=shared)
            except OperationalError:
                return False

    for first_shared, second_shared, expected in (
        (False, False, False),
        (True, False, False),
        (True, True, True),
    ):
        for flag in (held, release, done):
            flag.clear()
        thread = threading.Thread(target=holder, args=(first_shared,))
        thread.start()
        assert held.wait(timeout=60)
        assert try_lock(second_shared) is expected, (first_shared, second_shared)
        release.set()
        assert done.wait(timeout=60)
        thread.join()
    assert not errors, errors
