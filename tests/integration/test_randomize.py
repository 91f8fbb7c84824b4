"""Randomization: preconditions and caps (RAND-4), atomicity under concurrency and retries
(RAND-5), test/live separation (RAND-3), methods wired to the service (RAND-2)."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial, flagship
from tests.factory import ready_at_sites, ready_to_randomize
from trialdesk.domain.errors import ActionNotAllowed, PreconditionFailed
from trialdesk.protocol.loader import LoadedProtocol, parse_protocol
from trialdesk.services import screening
from trialdesk.services.access import operator_actor
from trialdesk.services.allocation import randomization
from trialdesk.services.allocation.lists import generate_list
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import AllocationSlotRow, RandomizationRow, SubjectRow

SITES = [f"S1{n:02d}" for n in range(1, 11)]


def variant(replacements: list[tuple[str, str]]) -> LoadedProtocol:
    text = flagship().text
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return parse_protocol(text, source="variant")


def _randomize(t: Trial, number: str, **kwargs: Any) -> randomization.RandomizationResult:
    site = number.split("-")[0]
    return randomization.randomize(
        t.ctx, j.staff(t, "implanter", site), t.study_id, number, **kwargs
    )


def _integrity(t: Trial) -> None:
    """RAND-5: each subject at most once, each slot at most once, slots in order per stratum,
    the audit chain sound."""
    with t.ctx.uow(readonly=True) as uow:
        rands = uow.session.scalars(select(RandomizationRow)).all()
        assert len({r.subject_id for r in rands}) == len(rands)
        assert len({r.number for r in rands}) == len(rands)
        slot_ids = [r.slot_id for r in rands]
        assert len(set(slot_ids)) == len(slot_ids)
        used = uow.session.scalars(
            select(AllocationSlotRow).where(AllocationSlotRow.used_by_subject_id.is_not(None))
        ).all()
        assert len(used) == len(rands)
        per_stratum: dict[str, list[AllocationSlotRow]] = defaultdict(list)
        for slot in used:
            per_stratum[slot.stratum].append(slot)
        for slots in per_stratum.values():
            slots.sort(key=lambda s: s.sequence)
            assert [s.sequence for s in slots] == list(range(1, len(slots) + 1))
            used_at = [s.used_at for s in slots]
            assert None not in used_at
            assert used_at == sorted(u for u in used_at if u is not None)
        states = Counter(uow.session.scalars(select(SubjectRow.state)).all())
        assert states["randomized"] == len(rands)
        result = verify_chain(uow.session)
        assert result.ok, result.problem


def test_rand4_refused_until_anatomy_is_confirmed(trial: Trial) -> None:
    number = j.awaiting_procedure(trial)
    with pytest.raises(PreconditionFailed) as info:
        _randomize(trial, number)
    assert info.value.code == "anatomy-not-confirmed"


def test_rand4_refused_outside_awaiting_procedure(trial: Trial) -> None:
    number = j.echo_qualified(trial)
    with pytest.raises(ActionNotAllowed, match="state 'echo_qualified'"):
        _randomize(trial, number)


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [("consent_date", None, "consent-missing"), ("crc_approved", False, "crc-approval-missing")],
)
def test_rand4_refused_without_consent_or_crc_approval(
    trial: Trial, column: str, value: Any, code: str
) -> None:
    """RAND-4: consent and CRC approval are checked at randomization itself, not only implied
    by the state (here the record is damaged behind the services' back to prove it)."""
    number = j.anatomy_suitable(trial)
    with trial.ctx.uow() as uow:
        uow.session.execute(
            update(SubjectRow).where(SubjectRow.number == number).values({column: value})
        )
        uow.session.commit()
    with pytest.raises(PreconditionFailed) as info:
        _randomize(trial, number)
    assert info.value.code == code


def test_rand4_flagship_cap_352nd_randomized_353rd_refused(trial: Trial) -> None:
    """RAND-4: the total cap of the flagship holds at the boundary."""
    numbers = ready_at_sites(trial, SITES, 353)
    for number in numbers[:352]:
        _randomize(trial, number)
    with pytest.raises(PreconditionFailed, match="enrolment target reached") as info:
        _randomize(trial, numbers[352])
    assert info.value.code == "enrolment-closed"
    with trial.ctx.uow(readonly=True) as uow:
        assert len(uow.session.scalars(select(RandomizationRow)).all()) == 352
        still = uow.session.scalars(select(SubjectRow).where(SubjectRow.number == numbers[352]))
        assert still.one().state == "awaiting_procedure"
    _integrity(trial)


def test_rand4_site_and_country_caps(make_trial: Callable[..., Trial]) -> None:
    """RAND-4: optional per-site and per-country caps refuse at the boundary."""
    t = make_trial(
        variant(
            [
                ("  cap_total: 352", "  cap_total: 352\n  cap_per_site: 2"),
                (
                    "- {code: CA, name: Canada, region: CA}",
                    "- {code: CA, name: Canada, region: CA, cap: 1}",
                ),
            ]
        )
    )
    a = ready_to_randomize(t, "S101", count=3)
    _randomize(t, a[0])
    _randomize(t, a[1])
    with pytest.raises(PreconditionFailed) as info:
        _randomize(t, a[2])
    assert info.value.code == "site-cap-reached"
    ca_sites = [s.code for s in t.ctx.protocol(*_sha_text(t)).protocol.sites if s.country == "CA"]
    first, second = (ready_to_randomize(t, site)[0] for site in ca_sites[:2])
    _randomize(t, first)
    with pytest.raises(PreconditionFailed) as info:
        _randomize(t, second)
    assert info.value.code == "country-cap-reached"


def _sha_text(t: Trial) -> tuple[str, str]:
    from trialdesk.services.common import current_protocol_row

    with t.ctx.uow(readonly=True) as uow:
        row = current_protocol_row(uow, t.study_id)
        return row.sha256, row.text


def _run_threads(n: int, work: Callable[[int], None]) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:  # collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def test_rand5_no_double_allocation_under_concurrency(trial: Trial) -> None:
    """RAND-5: 20 threads randomize 300 subjects at 10 sites at once: integrity holds."""
    numbers = ready_at_sites(trial, SITES, 300)
    for site in SITES:  # sign every site's implanter in before the race
        j.staff(trial, "implanter", site)
    queue = list(numbers)
    lock = threading.Lock()

    def work(_i: int) -> None:
        while True:
            with lock:
                if not queue:
                    return
                number = queue.pop()
            _randomize(trial, number)

    errors = _run_threads(20, work)
    assert not errors, errors[:3]
    _integrity(trial)
    with trial.ctx.uow(readonly=True) as uow:
        assert len(uow.session.scalars(select(RandomizationRow)).all()) == 300


def test_rand5_same_subject_from_many_threads_is_randomized_once(trial: Trial) -> None:
    number = j.anatomy_suitable(trial)
    results: list[str] = []

    def work(_i: int) -> None:
        results.append(_randomize(trial, number).randomization_number)

    errors = _run_threads(8, work)
    assert len(results) == 1
    assert len(errors) == 7
    assert all(type(e).__name__ in {"Conflict", "ActionNotAllowed"} for e in errors)
    _integrity(trial)


def test_rand5_retry_with_same_idempotency_key_returns_same_answer(trial: Trial) -> None:
    number = j.anatomy_suitable(trial)
    first = _randomize(trial, number, idempotency_key="edc-req-0001")
    again = _randomize(trial, number, idempotency_key="edc-req-0001")
    assert again == first
    results: list[randomization.RandomizationResult] = []
    other = j.anatomy_suitable(trial)
    errors = _run_threads(
        6, lambda _i: results.append(_randomize(trial, other, idempotency_key="edc-req-0002"))
    )
    assert not errors, errors
    assert len({r.randomization_number for r in results}) == 1
    with pytest.raises(Exception, match="another subject"):
        _randomize(trial, j.anatomy_suitable(trial), idempotency_key="edc-req-0001")
    _integrity(trial)


def test_rand3_test_subject_draws_only_from_test_list(trial: Trial) -> None:
    """RAND-3: a test subject never takes a live slot, and without a test list is refused."""
    number = j.anatomy_suitable(trial, test=True)
    with pytest.raises(PreconditionFailed) as info:
        _randomize(trial, number)
    assert info.value.code == "no-allocation-list"
    generate_list(trial.ctx, operator_actor(), trial.study_id, mode="test", seed=7)
    _randomize(trial, number)
    with trial.ctx.uow(readonly=True) as uow:
        rand = uow.session.scalars(select(RandomizationRow)).one()
        slot = uow.session.get(AllocationSlotRow, rand.slot_id)
        assert slot is not None
        from trialdesk.store.tables import AllocationListRow

        lst = uow.session.get(AllocationListRow, slot.list_id)
        assert lst is not None and lst.mode == "test"


def test_rand2_minimization_with_probability_one_balances_each_site(
    make_trial: Callable[..., Trial],
) -> None:
    """RAND-2: minimization reads the current counts in the writing transaction; with
    p = 1 and factor site, no site's imbalance ever exceeds 1."""
    t = make_trial(
        variant(
            [
                (
                    "  method: permuted_blocks",
                    "  method: minimization\n  minimization:\n"
                    "    factors: [{factor: site, weight: 1}]\n    preferred_probability: 1.0",
                ),
            ]
        ),
        with_list=False,
    )
    arms: dict[str, list[str]] = defaultdict(list)
    for i in range(24):
        site = SITES[i % 3]
        (number,) = ready_to_randomize(t, site)
        result = _randomize(t, number)
        assert result.arm is not None
        arms[site].append(result.arm)
        counts = Counter(arms[site])
        assert abs(counts["INT"] - counts["CTRL"]) <= 1
    _integrity_minimization(t, 24)


def _integrity_minimization(t: Trial, n: int) -> None:
    with t.ctx.uow(readonly=True) as uow:
        rands = uow.session.scalars(select(RandomizationRow)).all()
        assert len(rands) == n and all(r.slot_id is None for r in rands)
        assert verify_chain(uow.session).ok


def test_rand5_minimization_under_concurrency(make_trial: Callable[..., Trial]) -> None:
    """RAND-5 with minimization: concurrent requests are serialized on the study, so with
    p = 1 the final imbalance per site is at most 1."""
    t = make_trial(
        variant(
            [
                (
                    "  method: permuted_blocks",
                    "  method: minimization\n  minimization:\n"
                    "    factors: [{factor: site, weight: 1}]\n    preferred_probability: 1.0",
                ),
            ]
        ),
        with_list=False,
    )
    numbers = ready_at_sites(t, SITES[:4], 40)
    for site in SITES[:4]:
        j.staff(t, "implanter", site)
    arms: dict[str, list[str]] = defaultdict(list)
    lock = threading.Lock()

    def work(i: int) -> None:
        for number in numbers[i::8]:
            result = _randomize(t, number)
            with lock:
                arms[number.split("-")[0]].append(result.arm or "")

    errors = _run_threads(8, work)
    assert not errors, errors[:3]
    for per_site in arms.values():
        counts = Counter(per_site)
        assert abs(counts["INT"] - counts["CTRL"]) <= 1
    _integrity_minimization(t, 40)


def test_rand2_complete_randomization_is_wired(make_trial: Callable[..., Trial]) -> None:
    t = make_trial(variant([("  method: permuted_blocks", "  method: complete")]), with_list=False)
    seen = {_randomize(t, number).arm for number in ready_to_randomize(t, count=12)}
    assert seen <= {"INT", "CTRL"} and seen
    _integrity_minimization(t, 12)


def test_rand2_blocks_stratified_by_site_and_a_form_field(
    make_trial: Callable[..., Trial],
) -> None:
    """RAND-2: strata values are read from the recorded screening form (never retyped); the
    list has a stratum per site and NYHA class, and each subject draws from its own."""
    t = make_trial(
        variant(
            [
                ("  strata: [site]", "  strata: [site, nyha.nyha_class]"),
                ("list_size_per_stratum: 24", "list_size_per_stratum: 4"),
            ]
        )
    )
    ii = j.anatomy_suitable(t)
    class_ii_forms = fd.screening_forms()
    class_ii_forms["nyha"]["nyha_class"] = "II"
    number = j.consented(t)
    j.enter_screening(t, number, class_ii_forms)
    screening.complete_screening(t.ctx, t.actor("coordinator"), t.study_id, number)
    screening.crc_eligibility_decision(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        number,
        decision="approve",
        reason="ok",
        password=PASSWORD,
    )
    t.clock.set_day(j.PROCEDURE)
    screening.record_anatomy(
        t.ctx, t.actor("implanter"), t.study_id, number, forms=fd.anatomy_forms()
    )
    first, second = _randomize(t, ii), _randomize(t, number)
    assert fd.screening_forms()["nyha"]["nyha_class"] == "III"
    assert (first.stratum, second.stratum) == (
        "site=S101|nyha.nyha_class=III",
        "site=S101|nyha.nyha_class=II",
    )
    _integrity(t)


def test_rand4_rand5_cap_holds_exactly_under_concurrency(make_trial: Callable[..., Trial]) -> None:
    """RAND-4/5: 12 threads race for the last places: exactly the cap is randomized, the rest
    refused with "enrolment target reached". On PostgreSQL the cap (110) is above the
    connection limit margin, so both the shared path and the exclusive path near the cap run."""
    t = make_trial(
        variant(
            [
                ("  target_subjects: 352", "  target_subjects: 110"),
                ("  cap_total: 352", "  cap_total: 110"),
            ]
        )
    )
    numbers = ready_at_sites(t, SITES, 118)
    for site in SITES:
        j.staff(t, "implanter", site)
    queue = list(numbers)
    lock = threading.Lock()
    refused: list[str] = []

    def work(_i: int) -> None:
        while True:
            with lock:
                if not queue:
                    return
                number = queue.pop()
            try:
                _randomize(t, number)
            except PreconditionFailed as exc:
                with lock:
                    refused.append(exc.code)

    errors = _run_threads(12, work)
    assert not errors, errors[:3]
    assert refused == ["enrolment-closed"] * 8
    with t.ctx.uow(readonly=True) as uow:
        assert len(uow.session.scalars(select(RandomizationRow)).all()) == 110
    _integrity(t)
