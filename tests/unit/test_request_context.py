"""The per-request resolution of the API (issue 13): token, user grants and the path's study
in one read transaction, on the fake unit of work. The same refusals as before: one 401 for
a token that is unknown, expired, revoked or of a deactivated user; 'not found' for a study
the user holds no role in (PROT-1)."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import replace

import pytest

from tests.unit import test_services_on_fakes as base
from tests.unit.test_services_on_fakes import STUDY, World
from trialdesk.domain.errors import AuthenticationFailed, NotFound
from trialdesk.domain.roles import Role
from trialdesk.services.access import Grant
from trialdesk.services.request_context import resolve_request, study_of
from trialdesk.store.records import Study, TokenRead

world = base.world


def _token(w: World, raw: str, **changes: object) -> TokenRead:
    now = w.clock()
    token = TokenRead(
        token_id=7,
        user_id=42,
        username="coord",
        full_name="Coordinator",
        active=True,
        created_at=now,
        expires_at=now + dt.timedelta(hours=8),
        revoked_at=None,
        last_used_at=now,
        csrf_token=None,
        study_id=None,
        scope="full",
        grants=(("coordinator", STUDY, w.sites["S101"].id),),
    )
    token = replace(token, **changes)  # type: ignore[arg-type]
    digest = hashlib.sha256(raw.encode()).hexdigest()
    w.store.tables.tokens[(digest, "api")] = token
    return token


@pytest.mark.req("ACC-1")
def test_acc1_token_and_study_resolve_together(world: World) -> None:
    _token(world, "good")
    found = resolve_request(world.ctx, "good", study_code="FLAGSHIP")
    assert found.signed_in.actor.username == "coord"
    assert found.signed_in.actor.grants == {Grant(Role.COORDINATOR, STUDY, world.sites["S101"].id)}
    assert study_of(found, "FLAGSHIP").id == STUDY
    assert found.study is not None and found.study.sites == len(world.sites)
    assert world.store.commits == 0  # used a moment ago: nothing written


@pytest.mark.req("ACC-1")
@pytest.mark.parametrize(
    "changes",
    [
        {"revoked_at": dt.datetime(2027, 1, 1, tzinfo=dt.UTC)},
        {"expires_at": dt.datetime(2027, 1, 1, tzinfo=dt.UTC)},
        {"active": False},
    ],
)
def test_acc1_dead_tokens_are_one_401(world: World, changes: dict[str, object]) -> None:
    _token(world, "dead", **changes)
    for token in ("dead", "unknown"):
        with pytest.raises(AuthenticationFailed, match="not signed in"):
            resolve_request(world.ctx, token, study_code="FLAGSHIP")


@pytest.mark.req("PROT-1")
def test_prot1_a_study_without_a_role_is_not_found(world: World) -> None:
    _token(world, "good")
    world.store.tables.studies[2] = Study(2, "OTHER", "Other", "demo", None)
    found = resolve_request(world.ctx, "good", study_code="OTHER")
    assert found.study is None
    with pytest.raises(NotFound, match="study OTHER not found"):
        study_of(found, "OTHER")
    with pytest.raises(NotFound):
        study_of(resolve_request(world.ctx, "good", study_code="NOPE"), "NOPE")


def test_last_use_is_written_at_most_once_a_minute(world: World) -> None:
    old = world.clock() - dt.timedelta(minutes=5)
    _token(world, "good", last_used_at=old)
    resolve_request(world.ctx, "good")
    stored = next(iter(world.store.tables.tokens.values()))
    assert stored.last_used_at == world.clock() and world.store.commits == 1
    resolve_request(world.ctx, "good")
    assert world.store.commits == 1
