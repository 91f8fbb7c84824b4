"""Separation of duties for access that can reach an arm (issue 12), on SQLite and
PostgreSQL: a role that sees arms (implanting team, statistician, DSMB) or can break the code
(site coordinator) is given only after an e-signed approval by an unblinded member of the
study who is neither the requester nor the grantee; the two-person trial-level unblinding
counts only people each granted by someone else; nobody chooses another person's password."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.factory import hard_lock
from tests.mailbox import accept_from_outbox, outbox_mails
from trialdesk.domain.errors import (
    AuthenticationFailed,
    PermissionDenied,
    PreconditionFailed,
)
from trialdesk.domain.roles import Role
from trialdesk.services import accounts, admin
from trialdesk.services.access import operator_actor
from trialdesk.services.allocation import unblinding
from trialdesk.services.auth import authenticate
from trialdesk.services.blinding import may_see_arm
from trialdesk.services.setup import create_user
from trialdesk.store.tables import AuditEntryRow, RoleGrantRow, UserRow

MINE = "alt-{}@admin-mailbox.example"
"""Addresses the administrator controls in these tests (its own mailboxes)."""


def _mint(t: Trial, role: str, site: str | None = None) -> accounts.InvitationView:
    """The administrator invites a mailbox it controls to ``role``."""
    return accounts.invite(
        t.ctx, t.actor("admin"), t.study_id, email=MINE.format(role), full_name=f"Alt {role}",
        role=role, site=site,
    )  # fmt: skip


@pytest.mark.req("ACC-2")
def test_acc2_unblinded_role_waits_for_an_unblinded_approver_not_the_requester(
    trial: Trial,
) -> None:
    """An administrator's invitation to the statistician role sends no link until an
    unblinded member approves; the administrator (blinded) cannot approve, nor can the
    grantee; the approval is e-signed (name, time, meaning) and audited."""
    view = _mint(trial, "statistician")
    assert view.status == "awaiting_approval"
    assert outbox_mails(trial.ctx, MINE.format("statistician")) == []
    (request,) = accounts.list_approvals(trial.ctx, trial.actor("admin"), trial.study_id)
    for who in ("admin", "manager", "monitor", "coordinator", "crc"):
        with pytest.raises(PermissionDenied):
            accounts.decide_approval(
                trial.ctx, trial.actor(who), trial.study_id, request.id, approve=True,
                password=PASSWORD,
            )  # fmt: skip
    with pytest.raises(AuthenticationFailed):  # the e-signature needs the signer's password
        accounts.decide_approval(
            trial.ctx, trial.actor("dsmb"), trial.study_id, request.id, approve=True,
            password="not the password",
        )  # fmt: skip
    done = accounts.decide_approval(
        trial.ctx, trial.actor("dsmb"), trial.study_id, request.id, approve=True,
        password=PASSWORD,
    )  # fmt: skip
    assert done.status == "approved" and done.decided_by == "Dana DSMB"
    assert done.meaning and "statistician" in done.meaning and "admin" in done.meaning
    assert len(outbox_mails(trial.ctx, MINE.format("statistician"), "invitation")) == 1
    with trial.ctx.uow(readonly=True) as uow:
        new = uow.session.scalars(
            select(AuditEntryRow.new).where(AuditEntryRow.action == "approve_grant")
        ).one()
    signature = json.loads(new)["signature"]
    assert signature["name"] == "Dana DSMB" and signature["meaning"] == done.meaning
    assert signature["at"]


@pytest.mark.req("ACC-2")
def test_acc2_the_grantee_cannot_approve_its_own_access(trial: Trial) -> None:
    """The DSMB member asked (by the administrator) for the implanting-team role cannot
    approve it; the statistician can."""
    admin.grant_role(trial.ctx, trial.actor("admin"), trial.study_id, "dsmb", "implanter", "S101")
    (request,) = accounts.list_approvals(trial.ctx, trial.actor("dsmb"), trial.study_id)
    with pytest.raises(PermissionDenied, match="this access is for you"):
        accounts.decide_approval(
            trial.ctx, trial.actor("dsmb"), trial.study_id, request.id, approve=True,
            password=PASSWORD,
        )  # fmt: skip
    accounts.decide_approval(
        trial.ctx, trial.actor("statistician"), trial.study_id, request.id, approve=False,
        password=PASSWORD, reason="not on the delegation log",
    )  # fmt: skip
    info = next(
        u for u in admin.list_users(trial.ctx, trial.actor("admin"), trial.study_id)
        if u.username == "dsmb"
    )  # fmt: skip
    assert info.roles == [admin.RoleHeld("dsmb")] and info.pending == []


@pytest.mark.req("RAND-6")
def test_rand6_an_administrator_alone_reaches_no_arm_through_the_services(trial: Trial) -> None:
    """Every grant an administrator can make to itself or to mailboxes it controls: the
    blinded ones take effect, none of those that can reach an arm does; no account it
    controls may see the randomized subject's arm (services.blinding.may_see_arm)."""
    number, _arm = j.randomized(trial)
    boss = trial.actor("admin")
    for role in Role:
        site = "S101" if role in (Role.COORDINATOR, Role.IMPLANTER) else None
        if role is not Role.ADMIN:
            admin.grant_role(trial.ctx, boss, trial.study_id, "admin", role.value, site)
        _mint(trial, role.value, site)
    controlled = {"admin"}
    for role in Role:
        for body in outbox_mails(trial.ctx, MINE.format(role.value), "invitation"):
            assert body
            controlled.add(accept_from_outbox(trial.ctx, MINE.format(role.value), PASSWORD))
    with trial.ctx.uow(readonly=True) as uow:
        from trialdesk.store.tables import SubjectRow

        site_id = uow.session.scalars(
            select(SubjectRow.site_id).where(SubjectRow.number == number)
        ).one()
    for username in sorted(controlled):
        actor = authenticate(trial.ctx, username, PASSWORD)
        roles = actor.roles(trial.study_id)
        assert not roles & accounts.NEEDS_APPROVAL, (username, roles)
        for subject_unblinded in (False, True):
            assert not may_see_arm(
                actor, trial.study_id, site_id, subject_unblinded=subject_unblinded,
                for_procedure=True,
            ), username  # fmt: skip
    pending = accounts.list_approvals(trial.ctx, boss, trial.study_id)
    assert {p.role for p in pending} == {r.value for r in accounts.NEEDS_APPROVAL}


@pytest.mark.req("RAND-7")
def test_rand7_two_person_unblinding_refuses_a_self_granted_requester(trial: Trial) -> None:
    """The administrator gives itself the study-manager role (blinded, so at once) and asks
    for trial-level unblinding: refused, its manager role was granted by itself."""
    hard_lock(trial)  # REC-5: trial unblinding needs the hard database lock
    admin.grant_role(trial.ctx, trial.actor("admin"), trial.study_id, "admin", "manager")
    boss = authenticate(trial.ctx, "admin", PASSWORD)
    with pytest.raises(PermissionDenied, match="two-person rule"):
        unblinding.request_trial_unblinding(
            trial.ctx, boss, trial.study_id, "end of study", PASSWORD
        )
    view = unblinding.trial_unblinding_status(trial.ctx, trial.actor("manager"), trial.study_id)
    assert view.status == "blinded"


@pytest.mark.req("RAND-7")
def test_rand7_two_accounts_minted_by_one_person_do_not_make_two_people(trial: Trial) -> None:
    """The administrator mints a study manager and a statistician on mailboxes it controls
    (the statistician approved by a real unblinded member who was misled): the minted manager
    may ask, but the minted statistician cannot confirm, because both roles were asked for by
    the same person. The demo statistician (granted by the local operator) can."""
    hard_lock(trial)  # REC-5: trial unblinding needs the hard database lock
    _mint(trial, "manager")
    _mint(trial, "statistician")
    (request,) = accounts.list_approvals(trial.ctx, trial.actor("admin"), trial.study_id)
    accounts.decide_approval(
        trial.ctx, trial.actor("dsmb"), trial.study_id, request.id, approve=True,
        password=PASSWORD,
    )  # fmt: skip
    alt_manager = accept_from_outbox(trial.ctx, MINE.format("manager"), PASSWORD)
    alt_stat = accept_from_outbox(trial.ctx, MINE.format("statistician"), PASSWORD)
    unblinding.request_trial_unblinding(
        trial.ctx, authenticate(trial.ctx, alt_manager, PASSWORD), trial.study_id, "end", PASSWORD
    )
    with pytest.raises(PermissionDenied, match="same person"):
        unblinding.confirm_trial_unblinding(
            trial.ctx, authenticate(trial.ctx, alt_stat, PASSWORD), trial.study_id, PASSWORD
        )
    assert (
        unblinding.trial_unblinding_status(trial.ctx, trial.actor("manager"), trial.study_id).status
        == "requested"
    )
    view = unblinding.confirm_trial_unblinding(
        trial.ctx, trial.actor("statistician"), trial.study_id, PASSWORD
    )
    assert view.status == "unblinded"


@pytest.mark.req("RAND-7")
def test_rand7_the_confirmer_may_not_owe_its_role_to_the_requester(trial: Trial) -> None:
    """A statistician whose role was approved by the requester of the unblinding (someone who
    holds both the manager and an unblinded role) cannot confirm that request."""
    hard_lock(trial)  # REC-5: trial unblinding needs the hard database lock
    create_user(
        trial.ctx, operator_actor(), trial.study_id, username="boss2", full_name="Boss Two",
        password=PASSWORD, roles=[(Role.MANAGER, None), (Role.DSMB, None)],
    )  # fmt: skip
    _mint(trial, "statistician")
    (request,) = accounts.list_approvals(trial.ctx, trial.actor("admin"), trial.study_id)
    boss2 = authenticate(trial.ctx, "boss2", PASSWORD)
    accounts.decide_approval(
        trial.ctx, boss2, trial.study_id, request.id, approve=True, password=PASSWORD
    )
    alt_stat = accept_from_outbox(trial.ctx, MINE.format("statistician"), PASSWORD)
    unblinding.request_trial_unblinding(trial.ctx, boss2, trial.study_id, "end", PASSWORD)
    with pytest.raises(PermissionDenied, match="two-person rule"):
        unblinding.confirm_trial_unblinding(
            trial.ctx, authenticate(trial.ctx, alt_stat, PASSWORD), trial.study_id, PASSWORD
        )


def test_acc_live_study_users_are_invited_never_created_with_a_password(trial: Trial) -> None:
    """In a live study the local operator cannot create a user with a password either, and
    nobody but the operator can in any study; the first statistician of a live study is
    invited by the operator (direct, audited) and sets the password from the link."""
    from tests.conftest import flagship
    from trialdesk.services.setup import initialize_study

    with pytest.raises(PermissionDenied, match="invite"):
        create_user(
            trial.ctx, trial.actor("admin"), trial.study_id, username="x", full_name="X",
            password=PASSWORD, roles=[(Role.MONITOR, None)],
        )  # fmt: skip
    live = initialize_study(trial.ctx, operator_actor(), flagship(), code="LIVE", mode="live")
    with pytest.raises(PreconditionFailed, match="live"):
        create_user(
            trial.ctx, operator_actor(), live.id, username="x", full_name="X",
            password=PASSWORD, roles=[(Role.MONITOR, None)],
        )  # fmt: skip
    first = accounts.invite(
        trial.ctx, operator_actor(), live.id, email="stat@sponsor.example",
        full_name="Stat First", role="statistician",
    )  # fmt: skip
    assert first.status == "sent"  # no unblinded member yet: the operator's act is direct
    username = accept_from_outbox(trial.ctx, "stat@sponsor.example", PASSWORD)
    second = accounts.invite(
        trial.ctx, operator_actor(), live.id, email="dsmb@sponsor.example",
        full_name="DSMB Second", role="dsmb",
    )  # fmt: skip
    assert second.status == "awaiting_approval"  # now an unblinded member must approve
    with trial.ctx.uow(readonly=True) as uow:
        user = uow.session.scalars(select(UserRow).where(UserRow.username == username)).one()
        grant = uow.session.scalars(
            select(RoleGrantRow).where(RoleGrantRow.user_id == user.id)
        ).one()
        assert grant.granted_by_user_id is None and grant.study_id == live.id
        actions = set(
            uow.session.scalars(
                select(AuditEntryRow.action).where(AuditEntryRow.study_id == live.id)
            )
        )
    assert {"invite_user", "accept_invitation", "create_user", "grant_role"} <= actions


def test_acc_invitation_answer_is_the_same_for_an_address_with_an_account_elsewhere(
    trial: Trial,
) -> None:
    """Cross-study disclosure: the administrator of study A invites the address of a user of
    study B and an address nobody has: the two answers differ only in id, address and name;
    no error says that the first one exists. The owner attaches the role by signing in; the
    other invitee chooses a password."""
    from tests.conftest import flagship
    from trialdesk.services.setup import initialize_study

    other = initialize_study(trial.ctx, operator_actor(), flagship(), code="OTHER", mode="demo")
    create_user(
        trial.ctx, operator_actor(), other.id, username="statistician-b", full_name="Stat B",
        password=PASSWORD, roles=[(Role.STATISTICIAN, None)], email="stat@b.example",
    )  # fmt: skip
    boss = trial.actor("admin")
    known = accounts.invite(
        trial.ctx, boss, trial.study_id, email="stat@b.example", full_name="Stat B",
        role="monitor",
    )  # fmt: skip
    fresh = accounts.invite(
        trial.ctx, boss, trial.study_id, email="nobody@b.example", full_name="Stat B",
        role="monitor",
    )  # fmt: skip

    def shape(view: accounts.InvitationView) -> dict[str, object]:
        return {k: v for k, v in vars(view).items() if k not in ("id", "email")}

    assert shape(known) == shape(fresh)
    names = {u.username for u in admin.list_users(trial.ctx, boss, trial.study_id)}
    assert "statistician-b" not in names
    with pytest.raises(AuthenticationFailed):  # the owner's password, not a new one
        accept_from_outbox(trial.ctx, "stat@b.example", "a password I choose now")
    assert accept_from_outbox(trial.ctx, "stat@b.example", PASSWORD) == "statistician-b"
    actor = authenticate(trial.ctx, "statistician-b", PASSWORD)
    assert actor.roles(trial.study_id) == {Role.MONITOR}
    assert actor.roles(other.id) == {Role.STATISTICIAN}
