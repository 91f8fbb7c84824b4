"""The converted services on the in-memory unit of work (tests/fakes.py): screening, consent,
visits, therapies, the CRC queue, data queries and the permission checks, in milliseconds and
without a database. The same behaviours are tested on SQLite and PostgreSQL in
tests/integration; these pin the rules, those the storage."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests import flagship_data as fd
from tests.conftest import START, flagship
from tests.fakes import FakeClock, FakeStore, FakeUnitOfWorkFactory
from trialdesk.config import Settings
from trialdesk.domain.errors import (
    ActionNotAllowed,
    Conflict,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Refusal,
    ValidationFailed,
)
from trialdesk.domain.lifecycle import Action, SubjectState
from trialdesk.domain.roles import Role
from trialdesk.services import crc, data_queries, followup, queries, screening, visits
from trialdesk.services.access import Actor, Grant
from trialdesk.services.common import acting_on
from trialdesk.services.context import ServiceContext
from trialdesk.services.crypto import AllocationCipher, create_key_file
from trialdesk.services.forms import correct_form
from trialdesk.store.records import Allocation, ProtocolVersion, Site, Study, Subject

STUDY = 1
CONSENT = dt.date.fromisoformat(fd.CONSENT_DATE)
PROCEDURE = dt.date.fromisoformat(fd.PROCEDURE_DATE)


@dataclass
class World:
    store: FakeStore
    ctx: ServiceContext
    clock: FakeClock
    sites: dict[str, Site]
    version: ProtocolVersion

    def actor(self, role: Role, site: str | None = "S101") -> Actor:
        site_id = (
            self.sites[site].id if site and role in (Role.COORDINATOR, Role.IMPLANTER) else None
        )
        return Actor(
            username=f"{role.value}-{site or 'all'}",
            full_name=role.value.title(),
            user_id=100 + list(Role).index(role),
            grants=frozenset({Grant(role, STUDY, site_id)}),
        )

    def subject(self, number: str) -> Subject:
        with self.ctx.uow(readonly=True) as uow:
            found = uow.subjects.get(STUDY, number)
        assert found is not None
        return found

    def put(self, state: SubjectState, *, site: str = "S101", **facts: object) -> str:
        """A subject written straight into ``state`` with ``facts`` (a randomized one gets an
        allocation, arm INT unless ``arm`` is given)."""
        arm = str(facts.pop("arm", "INT"))
        with FakeUnitOfWorkFactory(self.store)() as uow:
            seq = uow.sites.take_subject_number(self.sites[site].id)
            subject = uow.subjects.add(
                study_id=STUDY,
                site_id=self.sites[site].id,
                number=f"{site}-{seq:04d}",
                state="registered",
                protocol_version_id=self.version.id,
                registered_on=CONSENT,
                test_subject=False,
                at=self.clock(),
            )
            values: dict[str, object] = {"state": state.value, **facts}
            if state is not SubjectState.REGISTERED:
                values.setdefault("consent_date", CONSENT)
                values.setdefault("consent_version", "v1.0")
            updated = uow.subjects.update(subject, values)
            assert updated is not None
            if updated.randomized_on is not None:
                uow.tables.allocations[updated.id] = Allocation(
                    updated.id, f"{site}-R{seq:03d}", self.ctx.cipher.encrypt(arm),
                    updated.randomized_on, False,
                )  # fmt: skip
            uow.commit()
        return updated.number


@pytest.fixture
def world(tmp_path: Path) -> World:
    loaded = flagship()
    store = FakeStore()
    t = store.tables
    t.studies[STUDY] = Study(STUDY, "FLAGSHIP", loaded.protocol.name, "demo", None)
    sites: dict[str, Site] = {}
    for n, site in enumerate(loaded.protocol.sites, start=10):
        region = loaded.protocol.country(site.country).region
        sites[site.code] = t.sites[n] = Site(
            n, STUDY, site.code, site.name, site.country, region, site.timezone, site.cap, True
        )
    version = ProtocolVersion(
        2, STUDY, loaded.protocol.version, loaded.sha256, True, "signed", None
    )
    t.versions[version.id], t.texts[version.id] = version, loaded.text
    t.last_id = 1000
    key = tmp_path / "allocation.key"
    create_key_file(key)
    clock = FakeClock(START)
    ctx = ServiceContext(
        uow=FakeUnitOfWorkFactory(store),
        clock=clock,
        cipher=AllocationCipher(key),
        settings=Settings(allocation_key_file=key),
    )
    ctx.remember_protocol(loaded)
    return World(store, ctx, clock, sites, version)


# --- registration, consent, screening ------------------------------------------------------


def test_life1_registration_numbers_per_site_and_audits_once(world: World) -> None:
    coord = world.actor(Role.COORDINATOR)
    first = screening.register_subject(world.ctx, coord, STUDY, site_code="S101")
    second = screening.register_subject(world.ctx, coord, STUDY, site_code="S101")
    assert (first.number, second.number) == ("S101-0001", "S101-0002")
    assert [e.action for e in world.store.tables.audit] == ["register", "register"]
    assert world.store.tables.audit[0].protocol_sha256 == world.version.sha256


def test_acc1_registration_at_another_site_is_refused_by_permission(world: World) -> None:
    coord = world.actor(Role.COORDINATOR)
    with pytest.raises(PermissionDenied, match="'register subject' needs the role"):
        screening.register_subject(world.ctx, coord, STUDY, site_code="S102")
    with pytest.raises(PermissionDenied):
        screening.register_subject(world.ctx, world.actor(Role.MONITOR), STUDY, site_code="S101")
    assert world.store.tables.subjects == {}
    assert world.store.commits == 0


def test_life2_consent_in_the_future_changes_nothing(world: World) -> None:
    number = world.put(SubjectState.REGISTERED)
    before = world.store.tables
    with pytest.raises(ValidationFailed) as info:
        screening.record_consent(
            world.ctx,
            world.actor(Role.COORDINATOR),
            STUDY,
            number,
            consent_date=START.date() + dt.timedelta(days=1),
            consent_version="v1.0",
        )
    assert info.value.problems == {"consent_date": "in the future"}
    assert world.store.tables is before  # no commit


def test_life1_consent_moves_to_screening_with_one_timestamp(world: World) -> None:
    number = world.put(SubjectState.REGISTERED)
    view = screening.record_consent(
        world.ctx,
        world.actor(Role.COORDINATOR),
        STUDY,
        number,
        consent_date=START.date(),
        consent_version="v1.0",
    )
    assert (view.state, view.consent_date) == ("screening", START.date().isoformat())
    entry = world.store.tables.audit[-1]
    assert (entry.action, entry.old, entry.new["state"]) == (
        "record_consent",
        {"state": "registered"},
        "screening",
    )
    assert entry.at == START == world.subject(number).updated_at


def test_life1_a_stale_subject_is_refused_with_a_conflict(world: World) -> None:
    """LIFE-1: the guarded update refuses a change made on a subject someone else changed
    after it was read; the first change stays, the second writes nothing."""
    number = world.put(SubjectState.SCREENING)
    coord = world.actor(Role.COORDINATOR)
    with acting_on(world.ctx, coord, STUDY, number, Action.SCREEN_FAIL_OTHER) as act:
        current = act.subject
        act.subject = replace(current, version=current.version - 1)  # read before a change
        with pytest.raises(Conflict, match="changed by someone else"):
            act.transition(Action.SCREEN_FAIL_OTHER)
    assert world.subject(number) == current


def test_elig2_screening_forms_then_echo_gate_open_a_crc_case(world: World) -> None:
    number = world.put(SubjectState.SCREENING)
    coord = world.actor(Role.COORDINATOR)
    world.clock.set_day(fd.SCREENING_DATE)
    for code, values in fd.screening_forms().items():
        screening.record_screening_form(
            world.ctx, coord, STUDY, number, form_code=code, values=values
        )
    with world.ctx.uow() as uow:
        subject = uow.subjects.get(STUDY, number)
        assert subject is not None
        for criterion in fd.INVESTIGATOR_CRITERIA:
            uow.confirmations.save(
                subject_id=subject.id,
                criterion_id=criterion,
                confirmed=True,
                signed_by="coordinator",
                signed_name="Casey",
                signed_at=world.clock(),
                meaning="confirmed",
            )
        uow.commit()
    view = screening.complete_screening(world.ctx, coord, STUDY, number)
    assert view.state == "echo_qualified"
    (case,) = crc.crc_queue(world.ctx, world.actor(Role.CRC), STUDY)
    assert (case.subject, case.kind, case.status) == (number, "eligibility", "open")


def test_data1_a_screening_form_saved_twice_is_refused(world: World) -> None:
    number = world.put(SubjectState.SCREENING)
    coord = world.actor(Role.COORDINATOR)
    world.clock.set_day(fd.SCREENING_DATE)
    values = fd.screening_forms()["nyha"]
    screening.record_screening_form(
        world.ctx, coord, STUDY, number, form_code="nyha", values=values
    )
    with pytest.raises(ValidationFailed, match="already saved"):
        screening.record_screening_form(
            world.ctx, coord, STUDY, number, form_code="nyha", values=values
        )
    with pytest.raises(ValidationFailed, match="not a screening form"):
        screening.record_screening_form(
            world.ctx, coord, STUDY, number, form_code="follow_up", values=values
        )


def test_elig4_suitable_anatomy_keeps_the_subject_awaiting_the_procedure(world: World) -> None:
    number = world.put(SubjectState.AWAITING_PROCEDURE, crc_approved=True)
    world.clock.set_day(PROCEDURE)
    view = screening.record_anatomy(
        world.ctx, world.actor(Role.IMPLANTER), STUDY, number, forms=fd.anatomy_forms()
    )
    assert (view.state, view.anatomy_suitable) == ("awaiting_procedure", True)
    assert {e.action for e in world.store.tables.audit} == {
        "record_anatomy_form",
        "anatomy_suitable",
    }


# --- follow-up: the clinical date rules of issue 12 ----------------------------------------


def _randomized(world: World, site: str = "S101", **facts: object) -> str:
    return world.put(
        SubjectState.RANDOMIZED, site=site, randomized_on=PROCEDURE, crc_approved=True, **facts
    )


def test_sched2_a_visit_cannot_be_missed_before_its_window_opens(world: World) -> None:
    number = _randomized(world, procedure_done=True, discharged_on=PROCEDURE)
    coord = world.actor(Role.COORDINATOR)
    world.clock.set_day(PROCEDURE + dt.timedelta(days=10))
    with pytest.raises(PreconditionFailed, match="window opens on") as info:
        followup.miss_visit(world.ctx, coord, STUDY, number, visit_code="M6", reason="no contact")
    assert info.value.code == Refusal.VISIT_NOT_OPEN
    assert world.store.tables.visits == {}


def test_sched2_a_visit_can_be_missed_once_its_window_is_open(world: World) -> None:
    number = _randomized(world, procedure_done=True, discharged_on=PROCEDURE)
    world.clock.set_day(PROCEDURE + dt.timedelta(days=60))
    view = followup.miss_visit(
        world.ctx, world.actor(Role.COORDINATOR), STUDY, number, visit_code="M1", reason="away"
    )
    assert {v.code: v.status for v in view.visits}["M1"] == "missed"


def test_proc1_the_index_procedure_is_not_dated_before_randomization(world: World) -> None:
    number = _randomized(world, arm="CTRL")
    world.clock.set_day(PROCEDURE)
    (values,) = fd.sham_procedure_forms().values()
    values = {**values, "procedure_date": (PROCEDURE - dt.timedelta(days=1)).isoformat()}
    with pytest.raises(ValidationFailed, match="before randomization"):
        followup.record_procedure(
            world.ctx, world.actor(Role.IMPLANTER), STUDY, number, values=values
        )
    assert world.store.tables.forms == {}


def test_proc2_discharge_is_not_before_the_index_procedure(world: World) -> None:
    """PROC-2: discharge is refused before the procedure's own date (read from the concealed
    record), with the same words whatever the arm."""
    messages = []
    for arm, forms in (("INT", fd.implant_procedure_forms), ("CTRL", fd.sham_procedure_forms)):
        number = _randomized(world, procedure_done=True, arm=arm)
        (values,) = forms().values()
        later = PROCEDURE + dt.timedelta(days=2)
        with world.ctx.uow() as uow:
            subject = uow.subjects.get(STUDY, number)
            assert subject is not None
            payload = json.dumps(
                {"form": next(iter(forms())), "values": {**values, "procedure_date": str(later)}}
            )
            uow.forms.add(
                subject_id=subject.id,
                form_code="index_procedure",
                visit_code="",
                seq=1,
                data=world.ctx.cipher.encrypt(payload).decode("ascii"),
                protocol_version_id=world.version.id,
                at=world.clock(),
                by="implanter",
            )
            uow.commit()
        world.clock.set_day(PROCEDURE + dt.timedelta(days=3))
        with pytest.raises(ValidationFailed, match="before the index procedure") as info:
            followup.record_discharge(
                world.ctx,
                world.actor(Role.COORDINATOR),
                STUDY,
                number,
                discharged_on=PROCEDURE + dt.timedelta(days=1),
            )
        messages.append(info.value.message)
    assert messages[0] == messages[1]


def test_ther1_a_therapy_opens_a_crc_case_and_keeps_the_state(world: World) -> None:
    number = _randomized(world, procedure_done=True, discharged_on=PROCEDURE)
    on = PROCEDURE + dt.timedelta(days=40)
    world.clock.set_day(on)
    view = followup.record_therapy(
        world.ctx, world.actor(Role.COORDINATOR), STUDY, number, therapy_date=on, therapy_type="crt"
    )
    assert view.state == "randomized"
    (case,) = crc.crc_queue(world.ctx, world.actor(Role.MANAGER), STUDY)
    assert case.therapy is not None and case.therapy.early


def test_sched1_worklist_lists_due_visits_of_own_site_only(world: World) -> None:
    mine = _randomized(world)
    _randomized(world, site="S102")
    world.clock.set_day(PROCEDURE + dt.timedelta(days=30))
    items = visits.visit_worklist(world.ctx, world.actor(Role.COORDINATOR), STUDY)
    assert {(i.subject, i.visit, i.state) for i in items} == {(mine, "M1", "due")}


# --- data queries: the concealed procedure form (issue 12, RAND-6) ---------------------------


@pytest.mark.parametrize("form", ["index_procedure", "implant_procedure", "sham_procedure"])
def test_rand6_querying_the_index_procedure_is_refused_alike_for_every_subject(
    world: World, form: str
) -> None:
    """RAND-6: implant, sham, and a subject whose procedure is not recorded get one answer."""
    monitor = world.actor(Role.MONITOR)
    numbers = [
        _randomized(world, procedure_done=True, arm="INT"),
        _randomized(world, procedure_done=True, arm="CTRL"),
        _randomized(world),
    ]
    answers = []
    for number in numbers:
        with pytest.raises(ValidationFailed) as info:
            data_queries.raise_query(
                world.ctx, monitor, STUDY, number, form_code=form, field="procedure_date", text="?"
            )
        answers.append((info.value.message.replace(number, "N"), info.value.problems))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][1] == {"form": "concealed-record"}


# --- reads, permissions, offered actions -----------------------------------------------------


def test_acc1_a_subject_of_another_site_is_not_found(world: World) -> None:
    number = world.put(SubjectState.SCREENING, site="S102")
    with pytest.raises(NotFound, match=f"subject {number} not found"):
        queries.get_subject(world.ctx, world.actor(Role.COORDINATOR), STUDY, number)


def test_life1_subject_actions_offer_what_role_state_and_facts_allow(world: World) -> None:
    """LIFE-1: the coordinator is offered consent on a registered subject; the implanter,
    who may randomize and record the procedure, is offered randomization only once anatomy
    is suitable and the procedure only after randomization; the monitor nothing."""
    registered = world.put(SubjectState.REGISTERED)
    awaiting = world.put(SubjectState.AWAITING_PROCEDURE, crc_approved=True)
    ready = world.put(SubjectState.AWAITING_PROCEDURE, crc_approved=True, anatomy_suitable=True)
    randomized = _randomized(world)
    coord, implanter = world.actor(Role.COORDINATOR), world.actor(Role.IMPLANTER)
    monitor = world.actor(Role.MONITOR)

    def offered(actor: Actor, number: str) -> list[str]:
        return queries.subject_actions(world.ctx, actor, STUDY, number)

    assert offered(coord, registered) == ["record_consent", "decline_consent"]
    assert offered(implanter, awaiting) == ["anatomy_suitable", "anatomy_unsuitable"]
    assert offered(implanter, ready) == ["randomize"]
    assert offered(implanter, randomized) == ["record_procedure"]
    assert "record_discharge" not in offered(coord, randomized)
    assert offered(monitor, randomized) == []


def test_the_fake_unit_of_work_keeps_nothing_without_commit(world: World) -> None:
    with world.ctx.uow() as uow:
        uow.subjects.add(
            study_id=STUDY,
            site_id=world.sites["S101"].id,
            number="S101-0099",
            state="registered",
            protocol_version_id=world.version.id,
            registered_on=CONSENT,
            test_subject=False,
            at=world.clock(),
        )
    assert world.store.tables.subjects == {}
    with world.ctx.uow() as uow, pytest.raises(AssertionError, match="no SQL session"):
        uow.session.get  # noqa: B018


def test_life1_refused_state_names_the_allowed_actions(world: World) -> None:
    number = _randomized(world)
    with pytest.raises(ActionNotAllowed, match="allowed now"):
        screening.record_consent(
            world.ctx,
            world.actor(Role.COORDINATOR),
            STUDY,
            number,
            consent_date=CONSENT,
            consent_version="v1.0",
        )
    assert world.subject(number).state == "randomized"


# --- data queries: the status machine (DATA-2) -----------------------------------------------


def _with_nyha(world: World) -> str:
    number = world.put(SubjectState.SCREENING)
    world.clock.set_day(fd.SCREENING_DATE)
    screening.record_screening_form(
        world.ctx,
        world.actor(Role.COORDINATOR),
        STUDY,
        number,
        form_code="nyha",
        values=fd.screening_forms()["nyha"],
    )
    return number


def test_data2_a_query_is_answered_with_a_correction_closed_and_reopened(world: World) -> None:
    number = _with_nyha(world)
    monitor, coord = world.actor(Role.MONITOR), world.actor(Role.COORDINATOR)
    raised = data_queries.raise_query(
        world.ctx, monitor, STUDY, number, form_code="nyha", field="nyha_class", text="II?"
    )
    answered = data_queries.answer_query(
        world.ctx, coord, STUDY, raised.id, text="typo", new_value="II", reason="transcription"
    )
    assert (answered.status, answered.value_changed) == ("answered", True)
    (record,) = world.store.tables.forms.values()
    assert json.loads(record.data)["nyha_class"] == "II" and record.version == 2
    closed = data_queries.close_query(world.ctx, monitor, STUDY, raised.id)
    assert closed.status == "closed"
    reopened = data_queries.reopen_query(world.ctx, monitor, STUDY, raised.id, text="source?")
    assert (reopened.status, reopened.reopened, reopened.answer) == ("open", 1, None)
    actions = [e.action for e in world.store.tables.audit if e.entity == "data_query"]
    assert actions == ["raise_query", "answer_query", "close_query", "reopen_query"]


def test_data2_query_refusals_carry_their_codes(world: World) -> None:
    number = _with_nyha(world)
    monitor, coord = world.actor(Role.MONITOR), world.actor(Role.COORDINATOR)
    raised = data_queries.raise_query(
        world.ctx, monitor, STUDY, number, form_code="nyha", field="nyha_class", text="II?"
    )
    with pytest.raises(PreconditionFailed) as info:
        data_queries.close_query(world.ctx, monitor, STUDY, raised.id)
    assert info.value.code == Refusal.QUERY_OPEN
    data_queries.answer_query(world.ctx, coord, STUDY, raised.id, text="as measured")
    with pytest.raises(PreconditionFailed) as info:
        data_queries.answer_query(world.ctx, coord, STUDY, raised.id, text="again")
    assert info.value.code == Refusal.QUERY_ANSWERED
    with pytest.raises(PreconditionFailed) as info:
        data_queries.raise_query(
            world.ctx, monitor, STUDY, number, form_code="nyha", field="nyha_class", text="?"
        )
    assert info.value.code == Refusal.QUERY_IN_PROGRESS


def test_data2_a_correction_of_a_form_changed_meanwhile_is_a_conflict(world: World) -> None:
    """DATA-2: the correction's guarded update refuses a record corrected by someone else
    after it was read; the other correction stays."""
    number = _with_nyha(world)
    coord = world.actor(Role.COORDINATOR)
    with acting_on(world.ctx, coord, STUDY, number, Action.CORRECT_DATA) as act:
        record = act.uow.forms.latest(act.subject.id, "nyha", "")
        assert record is not None
        followup.correct_form_data(
            world.ctx,
            coord,
            STUDY,
            number,
            form_code="nyha",
            changes={"nyha_class": "II"},
            reason="first",
        )
        act.uow.forms.update_data(record, record.data, act.now)  # the other writer's version
        with pytest.raises(Conflict, match="corrected by someone else"):
            correct_form(act, act.protocol(), record, {"nyha_class": "IVa"}, "second")
    (stored,) = world.store.tables.forms.values()
    assert json.loads(stored.data)["nyha_class"] == "II"
