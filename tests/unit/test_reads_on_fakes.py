"""Read services moved onto repositories in wave 2 of issue 13 (study information, the
viewer's time zone, subject history, the enrolment dashboard and screening log), on the
in-memory unit of work: the rules without a database (the storage is tested on both
databases in tests/integration)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import START
from tests.unit.test_services_on_fakes import STUDY, World, _randomized
from tests.unit.test_services_on_fakes import world as world  # the fixture
from trialdesk.domain.errors import PermissionDenied, ValidationFailed
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.roles import Role
from trialdesk.services import dashboard, history, maintenance, preferences, screening, study_info
from trialdesk.services.access import operator_actor
from trialdesk.store.records import User


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
