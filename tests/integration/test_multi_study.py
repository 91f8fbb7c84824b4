"""Several studies in one installation (PROT-1), at the service level, on SQLite and
PostgreSQL: two studies with overlapping site codes and subject numbers; a user of study A
reads nothing of study B, changes nothing in it, and A's figures are A's own.

The population is in tests/multi_study.py; the same check through the API, the pages and the
command line is tests/e2e/test_multi_study_isolation.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests import journey as j
from tests import multi_study as ms
from tests.conftest import PASSWORD, Database, Trial, build_trial, flagship
from tests.integration.test_blinding_sweep import READ_CALLS, dump
from trialdesk.domain.errors import (
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)
from trialdesk.services import (
    accounts,
    admin,
    crc,
    dashboard,
    data_queries,
    followup,
    queries,
    screening,
    setup,
)
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.allocation import lists, randomization
from trialdesk.services.maintenance import verify_audit
from trialdesk.store.tables import AuditEntryRow, Base, RoleGrantRow, StudyRow, UserRow

SCOPED = ("coordinator", "manager", "statistician")
"""One user of study A per kind of scope: site-scoped, study-wide blinded, unblinded."""

PER_USER = {"preferences.viewer_zone", "accounts.totp_status"}
"""Reads of the caller's own settings, not of a study's data: they answer for any study
(the default for a study the caller has no role in), with nothing of that study."""


@pytest.fixture
def two(database: Database, tmp_path: Path) -> Iterator[ms.TwoStudies]:
    a = build_trial(database, tmp_path, flagship())
    yield ms.two_studies(a)
    a.runtime.close()


def _rows(t: Trial) -> dict[str, int]:
    """Row counts of every table but the audit trail's (checked by stream where it matters)
    and the sign-in's memory of clients (a first sign-in writes it, issue 12);
    ``audit_entries`` is the highest entry id."""
    with t.ctx.uow(readonly=True) as uow:
        counts = {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
            if table.name not in {"audit_entries", "audit_heads", "signin_throttle"}
        }
        counts["audit_entries"] = int(uow.session.scalar(select(func.max(AuditEntryRow.id))) or 0)
        return counts


def test_prot1_a_sees_its_own_subjects_figures_and_audit_streams(two: ms.TwoStudies) -> None:
    """PROT-1: with overlapping site codes and subject numbers, A's users get A's subjects and
    A's figures only; each study's audit streams are its own and verification covers both."""
    _overlapping_numbers_resolve_within_each_study(two)
    _a_figures_count_only_a(two)
    _audit_streams_are_per_study_and_verify_covers_both(two)


def test_prot1_users_of_a_change_nothing_in_b_and_its_admin_grants_only_in_a(
    two: ms.TwoStudies,
) -> None:
    """PROT-1, ACC-1: every action in B by a user of A is refused and writes nothing; A's
    administrator cannot grant roles in B."""
    _no_user_of_a_changes_anything_in_b(two)
    _an_administrator_of_a_cannot_grant_roles_in_b(two)


def _overlapping_numbers_resolve_within_each_study(two: ms.TwoStudies) -> None:
    """PROT-1: S101-0001 exists in both studies; each study's users get their own study's."""
    a, b = two.a, two.b
    mine = queries.get_subject(a.ctx, a.actor("coordinator"), a.study_id, "S101-0001")
    theirs = queries.get_subject(b.ctx, b.actor("coordinator"), b.study_id, "S101-0001")
    assert mine.protocol_version == "1.0"
    assert theirs.protocol_version == ms.B_VERSION
    assert mine.protocol_sha256 == flagship().sha256 != theirs.protocol_sha256
    listed = queries.list_subjects(a.ctx, a.actor("manager"), a.study_id, limit=500)
    assert sorted(v.number for v in listed.items) == ["S101-0001", "S102-0001"]
    assert listed.total == ms.A_REGISTERED
    listed_b = queries.list_subjects(b.ctx, b.actor("manager"), b.study_id, limit=500)
    assert sorted(v.number for v in listed_b.items) == [
        "S101-0001",
        "S101-0002",
        "S101-0003",
        "S990-0001",
    ]
    for number in ms.B_ONLY_SUBJECTS:
        with pytest.raises(NotFound):
            queries.get_subject(a.ctx, a.actor("manager"), a.study_id, number)


def _a_figures_count_only_a(two: ms.TwoStudies) -> None:
    """PROT-1: enrolment, site lists, worklists and queues of A hold A's records only."""
    a = two.a
    manager = a.actor("manager")
    totals = dashboard.enrolment(a.ctx, manager, a.study_id)
    assert (totals.registered, totals.randomized) == (ms.A_REGISTERED, ms.A_RANDOMIZED)
    s101 = next(r for r in totals.by_site if r.key == "S101")
    assert (s101.registered, s101.randomized) == (1, 1)
    assert "S990" not in {r.key for r in totals.by_site}
    assert crc.crc_queue(a.ctx, a.actor("crc"), a.study_id) == []  # B has a case waiting
    assert data_queries.open_queries(a.ctx, a.actor("monitor"), a.study_id) == []
    stat = a.actor("statistician")
    for name, call in READ_CALLS.items():
        for actor in (manager, stat, a.actor("coordinator")):
            try:
                text = dump(call(a, actor, "S101-0001"))
            except TrialError as exc:
                text = dump(exc)
            assert not ms.leaks(text), (name, actor.username, ms.leaks(text))


def test_prot1_every_read_service_refuses_study_b_to_a_user_of_a(two: ms.TwoStudies) -> None:
    """PROT-1: every read service asked for study B by a user of A only (site coordinator,
    study manager, unblinded statistician) is refused ('not found' or 'not permitted') and
    the refusal names nothing of B; the study list of A's user is A."""
    for role in SCOPED:
        _read_services_refuse_b(two, role)


def _read_services_refuse_b(two: ms.TwoStudies, role: str) -> None:
    a, b = two.a, two.b
    actor = a.actor(role)
    refused = 0
    for name, call in READ_CALLS.items():
        if name == "setup.list_studies":
            assert [s.code for s in setup.list_studies(a.ctx, actor)] == ["FLAGSHIP"]
            continue
        if name == "setup.resolve_study":
            assert setup.resolve_study(a.ctx, actor, None).code == "FLAGSHIP"
            with pytest.raises(NotFound) as unknown:
                setup.resolve_study(a.ctx, actor, "NOSUCH")
            with pytest.raises(NotFound) as hidden:
                setup.resolve_study(a.ctx, actor, ms.B_CODE)
            assert hidden.value.message.replace(ms.B_CODE, "?") == unknown.value.message.replace(
                "NOSUCH", "?"
            )
            continue
        try:
            answered, was_refused = dump(call(b, actor, "S101-0001")), False
        except (NotFound, PermissionDenied, PreconditionFailed) as exc:  # operator-only ones
            answered, was_refused = dump(exc), True
        if was_refused:
            assert not [m for m in ms.leaks(answered) if m != ms.B_CODE], name
            refused += 1
        else:
            assert name in PER_USER, f"{name} answered {role} of A about B: {answered[:300]}"
            assert not ms.leaks(answered), name
    assert refused >= 30


WriteCall = Callable[[ms.TwoStudies, Actor], object]
WRITES: dict[str, WriteCall] = {
    "register": lambda s, a: screening.register_subject(s.a.ctx, a, s.b.study_id, site_code="S101"),
    "consent": lambda s, a: screening.record_consent(
        s.a.ctx, a, s.b.study_id, "S101-0003", consent_date=j.CONSENT, consent_version="v1.0"
    ),
    "complete screening": lambda s, a: screening.complete_screening(
        s.a.ctx, a, s.b.study_id, "S101-0002"
    ),
    "crc decision": lambda s, a: screening.crc_eligibility_decision(
        s.a.ctx, a, s.b.study_id, "S101-0002", decision="approve", reason="fine", password=PASSWORD
    ),
    "randomize": lambda s, a: randomization.randomize(s.a.ctx, a, s.b.study_id, "S101-0002"),
    "discharge": lambda s, a: followup.record_discharge(
        s.a.ctx, a, s.b.study_id, "S101-0001", discharged_on=dt.date(2027, 3, 1)
    ),
    "withdraw": lambda s, a: followup.withdraw(
        s.a.ctx,
        a,
        s.b.study_id,
        "S101-0001",
        withdrawn_on=dt.date(2027, 3, 1),
        reason="consent withdrawn",
        follow_up_contact_allowed=False,
    ),
    "raise query": lambda s, a: data_queries.raise_query(
        s.a.ctx, a, s.b.study_id, "S101-0001", form_code="nyha", field="nyha_class", text="why?"
    ),
    "close query": lambda s, a: data_queries.close_query(s.a.ctx, a, s.b.study_id, 1),
    "generate list": lambda s, a: lists.generate_list(s.a.ctx, a, s.b.study_id, mode="test"),
    "grant role": lambda s, a: admin.grant_role(s.a.ctx, a, s.b.study_id, "coordinator", "manager"),
    "create user": lambda s, a: setup.create_user(
        s.a.ctx,
        a,
        s.b.study_id,
        username="intruder",
        full_name="Intruder",
        password=PASSWORD,
        roles=[],
    ),
    "deactivate site": lambda s, a: admin.deactivate_site(s.a.ctx, a, s.b.study_id, "S101"),
    "invite user": lambda s, a: accounts.invite(
        s.a.ctx, a, s.b.study_id, email="intruder@a.example", full_name="Intruder", role="crc"
    ),
    "send reset link": lambda s, a: accounts.send_password_reset(
        s.a.ctx, a, s.b.study_id, ms.B_PREFIX + "manager"
    ),
}


def _no_user_of_a_changes_anything_in_b(two: ms.TwoStudies) -> None:
    """PROT-1: actions in study B by users of A (the administrator included) are refused and
    write nothing; a refused CRC decision is audited in the user's own stream only, never in
    B's streams."""
    a = two.a
    before = _rows(a)
    for role in (*SCOPED, "admin", "implanter", "crc", "monitor", "dsmb"):
        actor = a.actor(role)
        for name, call in WRITES.items():
            mark = _rows(a)
            with pytest.raises((NotFound, PermissionDenied)):
                call(two, actor)
            after = _rows(a)
            assert _streams_since(a, mark) <= {f"user:{actor.user_id}"}, (role, name)
            assert {**after, "audit_entries": 0} == {**before, "audit_entries": 0}, (role, name)


def _streams_since(t: Trial, before: dict[str, int]) -> set[str]:
    with t.ctx.uow(readonly=True) as uow:
        return set(
            uow.session.scalars(
                select(AuditEntryRow.stream).where(AuditEntryRow.id > before["audit_entries"])
            )
        )


def _an_administrator_of_a_cannot_grant_roles_in_b(two: ms.TwoStudies) -> None:
    """PROT-1, ACC-1: A's administrator manages A's users only: B's users are not listed or
    found, and granting in B is refused; the local operator may add a user of A to B."""
    a, b = two.a, two.b
    boss = a.actor("admin")
    names = {u.username for u in admin.list_users(a.ctx, boss, a.study_id)}
    assert not [n for n in names if n.startswith(ms.B_PREFIX)]
    with pytest.raises(NotFound):
        admin.grant_role(a.ctx, boss, a.study_id, ms.B_PREFIX + "manager", "monitor")
    with pytest.raises(PermissionDenied):
        admin.grant_role(a.ctx, boss, b.study_id, "admin", "admin")
    # B's administrator cannot pull A's users into B either
    with pytest.raises(NotFound):
        admin.grant_role(b.ctx, b.actor("admin"), b.study_id, "manager", "manager")
    info = admin.grant_role(a.ctx, operator_actor(), b.study_id, "manager", "manager")
    assert [(r.role, r.site) for r in info.roles] == [("manager", None)]
    both = setup.list_studies(a.ctx, setup_actor(a, "manager"))
    assert [s.code for s in both] == ["FLAGSHIP", ms.B_CODE]


def setup_actor(t: Trial, username: str) -> Actor:
    from trialdesk.services.auth import authenticate

    return authenticate(t.ctx, username, PASSWORD)


def _audit_streams_are_per_study_and_verify_covers_both(two: ms.TwoStudies) -> None:
    """PROT-1, AUD-1: study and subject streams hold one study's entries each; verification
    covers every stream of both studies."""
    a, b = two.a, two.b
    with a.ctx.uow(readonly=True) as uow:
        rows = uow.session.execute(select(AuditEntryRow.stream, AuditEntryRow.study_id)).all()
    per_stream: dict[str, set[int]] = {}
    for stream, study_id in rows:
        if study_id is not None:
            per_stream.setdefault(stream, set()).add(study_id)
    for stream, studies in per_stream.items():
        if not stream.startswith("user:"):  # a user of several studies has one stream
            assert len(studies) == 1, stream
    assert per_stream[f"study:{a.study_id}"] == {a.study_id}
    assert per_stream[f"study:{b.study_id}"] == {b.study_id}
    b_subject_streams = {
        s for s, ids in per_stream.items() if s.startswith("subject:") and ids == {b.study_id}
    }
    assert len(b_subject_streams) == 4
    result = verify_audit(a.ctx, operator_actor())
    assert result.ok
    assert result.entries == len(rows)
    assert result.streams == len({stream for stream, _ in rows})


def test_prot1_a_second_demo_study_gives_the_demo_users_a_role_in_it(
    database: Database, tmp_path: Path
) -> None:
    """PROT-1: `study create --demo` beside a demo study: existing demo users get their demo
    role in the new study (so they can switch); running it again changes nothing."""
    a = build_trial(database, tmp_path, flagship(), with_list=False)
    try:
        operator = operator_actor()
        info = setup.initialize_study(a.ctx, operator, ms.second_protocol(), code="B2", mode="demo")
        granted = setup.create_demo_users(a.ctx, operator, info.id, PASSWORD)
        assert set(granted) == {name for name, _full, _role in setup.DEMO_USERS}
        before = _rows(a)
        assert setup.create_demo_users(a.ctx, operator, info.id, PASSWORD) == []
        assert _rows(a) == before
        coordinator = setup_actor(a, "coordinator")
        assert [s.code for s in setup.list_studies(a.ctx, coordinator)] == ["FLAGSHIP", "B2"]
        with a.ctx.uow(readonly=True) as uow:
            users = uow.session.scalar(select(func.count()).select_from(UserRow))
            grants = uow.session.scalar(
                select(func.count())
                .select_from(RoleGrantRow)
                .where(RoleGrantRow.study_id == info.id)
            )
        assert users == len(setup.DEMO_USERS)
        assert grants == len(setup.DEMO_USERS)
    finally:
        a.runtime.close()


BAD_CODES = ("", "two words", "x" * 41, "-dash", "a/b", "Ü", "BETA\n")


def test_prot1_a_bad_study_code_is_refused_and_writes_nothing(trial: Trial) -> None:
    """PROT-1: a study code goes into API paths and commands: anything but 1-40 letters,
    digits, '-' and '_' is one clear refusal and no study."""
    before = _rows(trial)
    for code in BAD_CODES:
        with pytest.raises(ValidationFailed, match="invalid study code"):
            setup.initialize_study(trial.ctx, operator_actor(), ms.second_protocol(), code=code)
    assert _rows(trial) == before
    with trial.ctx.uow(readonly=True) as uow:
        assert uow.session.scalar(select(func.count()).select_from(StudyRow)) == 1
