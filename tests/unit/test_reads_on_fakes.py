"""Read services moved onto repositories in wave 2 of issue 13 (study information, the
viewer's time zone, subject history, the enrolment dashboard and screening log), on the
in-memory unit of work: the rules without a database (the storage is tested on both
databases in tests/integration)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests import flagship_data as fd
from tests.conftest import START
from tests.unit.test_services_on_fakes import STUDY, World, _randomized
from tests.unit.test_services_on_fakes import world as world  # the fixture
from trialdesk.domain.errors import PermissionDenied, PreconditionFailed, ValidationFailed
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.roles import Role
from trialdesk.services import (
    audit_trail,
    dashboard,
    endpoints,
    followup,
    history,
    mail,
    maintenance,
    preferences,
    report_views,
    screening,
    study_info,
    supply,
)
from trialdesk.services.access import operator_actor
from trialdesk.store.records import User

CONSENT = dt.date.fromisoformat(fd.CONSENT_DATE)
PROCEDURE = dt.date.fromisoformat(fd.PROCEDURE_DATE)


def _user(world: World, user_id: int, *, active: bool = True) -> None:
    world.store.tables.users[user_id] = User(
        user_id, f"user{user_id}", "A Person", active, START, None, None
    )


def test_time1_a_chosen_zone_is_stored_audited_and_read_back(world: World) -> None:
    """TIME-1: the zone a person reads timestamps in is theirs; a bad zone changes nothing."""
    coord = world.actor(Role.COORDINATOR)
    assert coord.user_id is not None
    _user(world, coord.user_id)
    site_zone = world.sites["S101"].timezone
    assert preferences.viewer_zone(world.ctx, coord, STUDY) == site_zone  # the site's own
    with pytest.raises(ValidationFailed, match="not an IANA time zone"):
        preferences.set_time_zone(world.ctx, coord, "Mars/Olympus")
    assert world.store.commits == 0
    assert preferences.set_time_zone(world.ctx, coord, "Asia/Tokyo") == "Asia/Tokyo"
    (entry,) = world.store.tables.audit
    assert (entry.stream, entry.action, entry.new) == (
        f"user:{coord.user_id}", "set_time_zone", {"timezone": "Asia/Tokyo"}
    )  # fmt: skip
    assert preferences.viewer_zone(world.ctx, coord, STUDY) == "Asia/Tokyo"


def test_time1_an_inactive_account_cannot_store_a_zone(world: World) -> None:
    coord = world.actor(Role.COORDINATOR)
    assert coord.user_id is not None
    _user(world, coord.user_id, active=False)
    with pytest.raises(PermissionDenied, match="not active"):
        preferences.set_time_zone(world.ctx, coord, "UTC")


def test_aud1_history_lists_the_subject_stream_in_order(world: World) -> None:
    """AUD-1: the subject's history is its audit stream in chain order."""
    coord = world.actor(Role.COORDINATOR)
    number = screening.register_subject(world.ctx, coord, STUDY, site_code="S101").number
    entries = history.subject_history(world.ctx, coord, STUDY, number)
    assert [(e.seq, e.action) for e in entries] == [(1, "register")]
    assert entries[0].at.microsecond == 0  # the blinded coordinator reads whole seconds


def test_acc1_sites_and_my_sites_follow_the_callers_scope(world: World) -> None:
    """ACC-1: a site-scoped user sees only its own site; study-wide roles every site."""
    coord = world.actor(Role.COORDINATOR)
    assert [s.code for s in study_info.list_sites(world.ctx, coord, STUDY)] == ["S101"]
    assert dashboard.my_sites(world.ctx, coord, STUDY) == ["S101"]
    manager = world.actor(Role.MANAGER, None)
    assert [s.code for s in study_info.list_sites(world.ctx, manager, STUDY)] == sorted(world.sites)


def test_rep1_enrolment_and_screening_log_count_live_subjects(world: World) -> None:
    """REP-1, REP-3: registered and randomized by site, country and region; the screening
    log lists registered subjects with their state, never an arm."""
    world.put(SubjectState.SCREENING)
    _randomized(world, site="S102")
    view = dashboard.enrolment(world.ctx, world.actor(Role.MANAGER, None), STUDY)
    assert (view.registered, view.randomized) == (2, 1)
    by_site = {row.key: (row.registered, row.randomized) for row in view.by_site}
    assert by_site["S101"] == (1, 0) and by_site["S102"] == (1, 1)
    before = dashboard.enrolment(
        world.ctx, world.actor(Role.MANAGER, None), STUDY, as_of=dt.date(2000, 1, 1)
    )
    assert (before.registered, before.randomized) == (0, 0)
    log = dashboard.screening_log(world.ctx, world.actor(Role.MONITOR, None), STUDY)
    assert sorted((line.site, line.state) for line in log) == [
        ("S101", "screening"), ("S102", "randomized")
    ]  # fmt: skip


def test_aud1_audit_verification_is_the_operators_and_is_itself_audited(world: World) -> None:
    """AUD-1: only the local operator verifies the chains; a sound check is recorded."""
    with pytest.raises(PermissionDenied, match="local operator"):
        maintenance.verify_audit(world.ctx, world.actor(Role.ADMIN, None))
    assert world.store.tables.audit == []
    result = maintenance.verify_audit(world.ctx, operator_actor())
    assert result.ok
    (entry,) = world.store.tables.audit
    assert (entry.stream, entry.action) == ("maintenance", "verify_audit")


def test_aud1_the_blinded_trail_leaves_device_entries_out_and_filters_by_prefix(
    world: World,
) -> None:
    """AUD-1, RAND-6: a blinded reader's trail has no per-device entries and no supply
    values; an action prefix (``register*``) narrows it; an unknown subject matches nothing."""
    world.clock.set_day(CONSENT)
    supply.stock_demo_site(world.ctx, operator_actor(), STUDY)
    monitor = world.actor(Role.MONITOR, None)
    page = audit_trail.audit_entries(world.ctx, monitor, STUDY)
    assert page.blinded and page.total == len(page.items) > 0
    assert {e.entity for e in page.items} == {"device_lot", "device_shipment"}
    assert all(e.old is None and e.new is None for e in page.items)
    where = audit_trail.AuditFilter(action="register*")
    (lot,) = audit_trail.audit_entries(world.ctx, monitor, STUDY, where).items
    assert lot.action == "register_device_lot"
    nobody = audit_trail.AuditFilter(subject="S101-9999")
    assert audit_trail.audit_entries(world.ctx, monitor, STUDY, nobody).total == 0


def test_the_outbox_is_the_operators_and_shows_a_body_only_on_request(
    world: World,
) -> None:
    """Issue 12 outbox: mails wait encrypted; the local operator lists them without bodies
    and reads one body on request; no one else reads the outbox."""
    with world.ctx.uow() as uow:
        mail.enqueue(
            uow, world.ctx, to="a@example.org", subject="Invitation", body="the link",
            kind="invitation", study_id=STUDY,
        )  # fmt: skip
        uow.commit()
    operator = operator_actor()
    (waiting,) = mail.list_outbox(world.ctx, operator)
    assert (waiting.recipient, waiting.status, waiting.body) == ("a@example.org", "waiting", None)
    assert mail.show_mail(world.ctx, operator, waiting.id).body == "the link"
    assert world.store.tables.outbox[0]["body_enc"] != b"the link"
    with pytest.raises(PreconditionFailed, match="local operator"):
        mail.list_outbox(world.ctx, world.actor(Role.ADMIN, None))


def test_rand8_time_in_the_lab_by_arm_for_the_unblinded_statistician_only(world: World) -> None:
    """RAND-8, RAND-6: both index procedures are timed alike; the durations by arm are read
    by the unblinded statistician (a disclosure) and refused to a blinded monitor."""
    world.clock.set_day(CONSENT)
    supply.stock_demo_site(world.ctx, operator_actor(), STUDY)
    world.clock.set_day(PROCEDURE)
    implanter = world.actor(Role.IMPLANTER)
    for arm, forms in (("INT", fd.implant_procedure_forms()), ("CTRL", fd.sham_procedure_forms())):
        number = _randomized(world, arm=arm)
        (values,) = forms.values()
        followup.record_procedure(world.ctx, implanter, STUDY, number, values=values)
    with pytest.raises(endpoints.ArmsBlinded):
        endpoints.time_in_lab(world.ctx, world.actor(Role.MONITOR, None), STUDY)
    view = endpoints.time_in_lab(world.ctx, world.actor(Role.STATISTICIAN, None), STUDY)
    assert {code: arm["n"] for code, arm in view.arms.items()} == {"INT": 1, "CTRL": 1}
    assert world.store.tables.audit[-1].action == "disclose_endpoint_by_arm"


def test_rep3_a_missed_visit_is_counted_and_listed_as_a_deviation(world: World) -> None:
    """REP-3, SCHED-2: a missed visit shows in visit compliance (its site and the total) and
    in the deviations list with its reason; a coordinator sees only the own site's."""
    number = _randomized(world, procedure_done=True, discharged_on=PROCEDURE)
    world.clock.set_day(PROCEDURE + dt.timedelta(days=60))
    coord = world.actor(Role.COORDINATOR)
    followup.miss_visit(world.ctx, coord, STUDY, number, visit_code="M1", reason="away")
    monitor = world.actor(Role.MONITOR, None)
    compliance = report_views.visit_compliance(world.ctx, monitor, STUDY)
    assert [(r.visit, r.site, r.missed) for r in compliance.rows] == [("M1", "S101", 1)]
    assert [(r.visit, r.missed) for r in compliance.totals] == [("M1", 1)]
    (deviation,) = report_views.deviations(world.ctx, monitor, STUDY)
    assert (deviation.subject, deviation.kind, deviation.detail) == (number, "visit_missed", "away")
    other = world.actor(Role.COORDINATOR, "S102")
    assert report_views.deviations(world.ctx, other, STUDY) == []
