"""Concurrent requests on SQLite and PostgreSQL (LIFE-1, RAND-5 first part, AUD-1).

Threads start together at a barrier and act through the service layer, each in its own
transaction, exactly as concurrent web requests would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import func, select

from tests import journey as j
from tests.conftest import Trial
from tests.factory import ready_to_randomize
from trialdesk.domain.errors import ActionNotAllowed, Conflict, TrialError
from trialdesk.services import screening
from trialdesk.services.allocation import randomization
from trialdesk.services.allocation.randomization import RandomizationResult
from trialdesk.services.views import SubjectView
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import (
    AllocationSlotRow,
    AuditEntryRow,
    RandomizationRow,
    SiteRow,
    SubjectRow,
)

T = TypeVar("T")
THREADS = 8


def race(n: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``work(i)`` in ``n`` threads released together; each result or exception."""
    barrier = threading.Barrier(n)
    results: list[T | BaseException] = [RuntimeError("did not run")] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)  # a guard against a deadlock hanging the run, not a timing
    assert not any(thread.is_alive() for thread in threads), "threads deadlocked"
    return results


def _subject(t: Trial, number: str) -> SubjectRow:
    with t.ctx.uow(readonly=True) as uow:
        row = uow.session.scalars(select(SubjectRow).where(SubjectRow.number == number)).one()
        uow.session.expunge(row)
        return row


def _actions(t: Trial, stream: str) -> list[str]:
    with t.ctx.uow(readonly=True) as uow:
        return list(
            uow.session.scalars(
                select(AuditEntryRow.action)
                .where(AuditEntryRow.stream == stream)
                .order_by(AuditEntryRow.seq)
            )
        )


def _chain_ok(t: Trial) -> None:
    with t.ctx.uow(readonly=True) as uow:
        result = verify_chain(uow.session)
    assert result.ok, result.problem


def _split(
    results: list[T | BaseException],
) -> tuple[list[T], list[BaseException]]:
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    return wins, losses


def _clear_refusal(exc: BaseException) -> bool:
    return isinstance(exc, Conflict | ActionNotAllowed)


def test_life1_concurrent_consents_on_one_subject_have_one_winner(trial: Trial) -> None:
    """LIFE-1: of 8 simultaneous consents exactly one applies; the rest are refused clearly,
    and the trail holds one state change."""
    number = j.register(trial)
    coordinator = trial.actor("coordinator")
    before = _subject(trial, number)

    def consent(_i: int) -> SubjectView:
        return screening.record_consent(
            trial.ctx,
            coordinator,
            trial.study_id,
            number,
            consent_date=j.CONSENT,
            consent_version="v1.0",
        )

    wins, losses = _split(race(THREADS, consent))
    assert len(wins) == 1 and wins[0].state == "screening"
    assert len(losses) == THREADS - 1
    assert all(_clear_refusal(exc) for exc in losses), losses
    after = _subject(trial, number)
    assert (after.state, after.version) == ("screening", before.version + 1)
    assert _actions(trial, f"subject:{after.id}") == ["register", "record_consent"]
    _chain_ok(trial)


def test_rand5_concurrent_randomizations_of_one_subject_have_one_winner(trial: Trial) -> None:
    """RAND-5: 8 simultaneous randomizations of one subject: one allocation, one slot used,
    one audited state change; the others are refused clearly."""
    number = j.anatomy_suitable(trial)
    implanter = trial.actor("implanter")

    def randomize(_i: int) -> RandomizationResult:
        return randomization.randomize(trial.ctx, implanter, trial.study_id, number)

    wins, losses = _split(race(THREADS, randomize))
    assert len(wins) == 1 and wins[0].arm in {"INT", "CTRL"}
    assert all(_clear_refusal(exc) for exc in losses), losses
    subject = _subject(trial, number)
    assert subject.state == "randomized"
    with trial.ctx.uow(readonly=True) as uow:
        rands = uow.session.scalars(
            select(RandomizationRow.number).where(RandomizationRow.subject_id == subject.id)
        ).all()
        used = uow.session.scalars(
            select(AllocationSlotRow.sequence).where(
                AllocationSlotRow.used_by_subject_id.is_not(None)
            )
        ).all()
    assert list(rands) == [wins[0].randomization_number]
    assert used == [1]
    actions = _actions(trial, f"subject:{subject.id}")
    assert (actions.count("randomize"), actions.count("allocate")) == (1, 1)
    _chain_ok(trial)


def test_rand5_concurrent_randomizations_at_one_site_use_slots_in_order(trial: Trial) -> None:
    """RAND-5: different subjects randomized at once at one site each get their own slot, the
    stratum's slots are used in order with no gap, and randomization numbers are distinct."""
    numbers = ready_to_randomize(trial, count=4)
    implanter = trial.actor("implanter")

    def randomize(i: int) -> RandomizationResult:
        return randomization.randomize(trial.ctx, implanter, trial.study_id, numbers[i])

    wins, losses = _split(race(len(numbers), randomize))
    assert losses == []
    with trial.ctx.uow(readonly=True) as uow:
        slots = uow.session.execute(
            select(AllocationSlotRow.sequence, AllocationSlotRow.used_by_subject_id).where(
                AllocationSlotRow.used_by_subject_id.is_not(None)
            )
        ).all()
        site_next = uow.session.scalars(
            select(SiteRow.next_randomization_seq).where(SiteRow.code == j.SITE)
        ).one()
    assert sorted(seq for seq, _ in slots) == [1, 2, 3, 4]
    assert len({subject for _, subject in slots}) == 4
    assert sorted(w.randomization_number for w in wins) == [
        f"{j.SITE}-R{i:03d}" for i in range(1, 5)
    ]
    assert site_next == 5
    _chain_ok(trial)


def test_life1_concurrent_registrations_at_one_site_number_without_gaps(trial: Trial) -> None:
    """LIFE-1: 30 registrations from 6 threads at one site get 30 distinct numbers, no gaps.

    A registration that loses the race for the site's counter is refused with a retryable
    conflict; the client retries, as a web client would.
    """
    coordinator = trial.actor("coordinator")
    trial.clock.set_day(j.CONSENT)
    per_thread, threads = 5, 6
    retries = [0] * threads

    def register_five(i: int) -> list[str]:
        got: list[str] = []
        attempts = 0
        while len(got) < per_thread:
            attempts += 1
            assert attempts < 1000, "registration never got through"
            try:
                view = screening.register_subject(
                    trial.ctx,
                    coordinator,
                    trial.study_id,
                    site_code=j.SITE,
                    registered_on=j.CONSENT,
                )
            except TrialError as exc:
                if exc.code != "conflict":
                    raise
                retries[i] += 1
                continue
            got.append(view.number)
        return got

    results = race(threads, register_five)
    wins, losses = _split(results)
    assert losses == []
    numbers = sorted(n for batch in wins for n in batch)
    assert numbers == [f"{j.SITE}-{i:04d}" for i in range(1, per_thread * threads + 1)]
    with trial.ctx.uow(readonly=True) as uow:
        stored = uow.session.scalar(select(func.count()).select_from(SubjectRow))
        registered = uow.session.scalar(
            select(func.count())
            .select_from(AuditEntryRow)
            .where(AuditEntryRow.action == "register")
        )
        site_next = uow.session.scalars(
            select(SiteRow.next_subject_seq).where(SiteRow.code == j.SITE)
        ).one()
    assert stored == registered == per_thread * threads
    assert site_next == per_thread * threads + 1
    _chain_ok(trial)
