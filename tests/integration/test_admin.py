"""User and site administration through the services, on SQLite and PostgreSQL: the
administrator's changes take effect and are audited in the user's stream; every refusal (not
an administrator, unknown user/site/role, the last administrator grant) writes nothing. The
administrator never sets a password: a reset is a link mailed to the user (issue 12)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.mailbox import outbox_link, token_of
from trialdesk.domain.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TrialError,
    ValidationFailed,
)
from trialdesk.domain.roles import Role
from trialdesk.services import accounts, admin, screening
from trialdesk.services.access import operator_actor
from trialdesk.services.auth import MIN_PASSWORD_LENGTH, authenticate
from trialdesk.services.sessions import issue_token, resolve_token
from trialdesk.services.setup import create_user
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import (
    AuditEntryRow,
    AuthTokenRow,
    GrantApprovalRow,
    InvitationRow,
    MailOutboxRow,
    PasswordResetRow,
    RoleGrantRow,
    SiteRow,
    UserRow,
)

NEW_PASSWORD = "a brand new passphrase"


def _snapshot(t: Trial) -> list[Any]:
    """Every row an administration change could touch, to prove a refusal changed nothing."""
    with t.ctx.uow(readonly=True) as uow:
        out: list[Any] = []
        for table in (
            UserRow, RoleGrantRow, SiteRow, AuthTokenRow, AuditEntryRow, InvitationRow,
            GrantApprovalRow, PasswordResetRow, MailOutboxRow,
        ):  # fmt: skip
            rows = uow.session.scalars(select(table).order_by(table.id)).all()
            out.append([tuple(getattr(r, c.key) for c in table.__table__.columns) for r in rows])
        return out


def _entries(t: Trial, username: str) -> list[AuditEntryRow]:
    with t.ctx.uow(readonly=True) as uow:
        user_id = uow.session.scalars(select(UserRow.id).where(UserRow.username == username)).one()
        rows = uow.session.scalars(
            select(AuditEntryRow)
            .where(AuditEntryRow.stream == f"user:{user_id}")
            .order_by(AuditEntryRow.seq)
        ).all()
        uow.session.expunge_all()
        return list(rows)


def _user(t: Trial, username: str) -> admin.UserInfo:
    found = [
        u for u in admin.list_users(t.ctx, t.actor("admin"), t.study_id) if u.username == username
    ]
    assert len(found) == 1
    return found[0]


def test_acc_list_users_shows_roles_with_sites_and_locks(trial: Trial) -> None:
    """The administrator's list: every demo user, site-scoped roles with their site, and a
    sign-in lock while it lasts."""
    users = {
        u.username: u for u in admin.list_users(trial.ctx, trial.actor("admin"), trial.study_id)
    }
    assert {"admin", "manager", "coordinator", "statistician"} <= users.keys()
    assert users["coordinator"].roles == [admin.RoleHeld("coordinator", "S101")]
    assert users["manager"].roles == [admin.RoleHeld("manager", None)]
    assert all(u.active and u.locked_until is None for u in users.values())
    for _ in range(trial.ctx.settings.lockout_attempts):
        with pytest.raises(AuthenticationFailed):
            authenticate(trial.ctx, "monitor", "wrong password!")
    assert _user(trial, "monitor").locked_until is not None


def test_acc_deactivated_user_cannot_sign_in_and_its_session_ends(trial: Trial) -> None:
    """Deactivation stops sign-in (services.auth.authenticate) and ends live sessions;
    reactivation restores sign-in with the same password. Both audited in the user's stream."""
    issued = issue_token(trial.ctx, "monitor", PASSWORD, kind="web")
    info = admin.deactivate_user(trial.ctx, trial.actor("admin"), trial.study_id, "monitor")
    assert info.active is False
    with pytest.raises(AuthenticationFailed):
        authenticate(trial.ctx, "monitor", PASSWORD)
    with pytest.raises(AuthenticationFailed):
        resolve_token(trial.ctx, issued.token, kind="web")
    admin.reactivate_user(trial.ctx, trial.actor("admin"), trial.study_id, "monitor")
    assert authenticate(trial.ctx, "monitor", PASSWORD).username == "monitor"
    with pytest.raises(AuthenticationFailed):  # the old session stays ended
        resolve_token(trial.ctx, issued.token, kind="web")
    actions = [e.action for e in _entries(trial, "monitor")]
    assert "deactivate_user" in actions and "reactivate_user" in actions
    entry = next(e for e in _entries(trial, "monitor") if e.action == "deactivate_user")
    assert entry.actor == "admin" and json.loads(entry.new)["active"] is False


def test_sig1_reset_link_is_mailed_to_the_user_and_only_the_owner_sets_the_password(
    trial: Trial,
) -> None:
    """The administrator's reset sends a single-use link to the user's own address (the
    administrator learns only the address); the old password works until the owner uses the
    link; using it sets the owner's password, clears the back-off, ends sessions, spends the
    link, and the audit trail never holds a password."""
    accounts.set_email(trial.ctx, operator_actor(), "crc", "crc@example.org")
    for _ in range(trial.ctx.settings.lockout_attempts):
        with pytest.raises(AuthenticationFailed):
            authenticate(trial.ctx, "crc", "wrong password!")
    assert _user(trial, "crc").locked_until is not None
    sent_to = accounts.send_password_reset(trial.ctx, trial.actor("admin"), trial.study_id, "crc")
    assert sent_to == "crc@example.org"
    token = token_of(outbox_link(trial.ctx, "crc@example.org", "password_reset"))
    session = issue_token(trial.ctx, "crc", PASSWORD, kind="api", client="owner-desk")
    accounts.complete_password_reset(trial.ctx, token, NEW_PASSWORD)
    assert _user(trial, "crc").locked_until is None
    assert authenticate(trial.ctx, "crc", NEW_PASSWORD).username == "crc"
    with pytest.raises(AuthenticationFailed):
        authenticate(trial.ctx, "crc", PASSWORD, client="elsewhere")
    with pytest.raises(AuthenticationFailed):
        resolve_token(trial.ctx, session.token, kind="api")
    with pytest.raises(NotFound, match="not valid"):
        accounts.complete_password_reset(trial.ctx, token, "yet another passphrase")
    entry = next(e for e in _entries(trial, "crc") if e.action == "reset_password")
    assert NEW_PASSWORD not in entry.new and entry.actor == "crc"
    assert json.loads(entry.new)["password"] == "set by its owner"


def test_acc1_grant_site_role_scopes_the_user_and_revoke_removes_it(trial: Trial) -> None:
    """A coordinator role at S102 (it may break the code for a subject, so it needs an
    unblinded member's e-signed approval) lets the user register there and only there
    (ACC-1); revoking it takes that away. Request, approval, grant and revocation audited."""
    a = trial.actor("admin")
    info = admin.grant_role(trial.ctx, a, trial.study_id, "monitor", "coordinator", "S102")
    assert admin.RoleHeld("coordinator", "S102") not in info.roles
    assert info.pending == [admin.RoleHeld("coordinator", "S102")]
    (pending,) = accounts.list_approvals(trial.ctx, a, trial.study_id)
    accounts.decide_approval(
        trial.ctx, trial.actor("statistician"), trial.study_id, pending.id, approve=True,
        password=PASSWORD,
    )  # fmt: skip
    assert admin.RoleHeld("coordinator", "S102") in _user(trial, "monitor").roles
    monitor = authenticate(trial.ctx, "monitor", PASSWORD)
    assert screening.register_subject(trial.ctx, monitor, trial.study_id, site_code="S102").number
    with pytest.raises(PermissionDenied):
        screening.register_subject(trial.ctx, monitor, trial.study_id, site_code="S101")
    admin.revoke_role(trial.ctx, a, trial.study_id, "monitor", "coordinator", "S102")
    monitor = authenticate(trial.ctx, "monitor", PASSWORD)
    with pytest.raises(PermissionDenied):
        screening.register_subject(trial.ctx, monitor, trial.study_id, site_code="S102")
    entries = {e.action: e for e in _entries(trial, "monitor")}
    granted = json.loads(entries["grant_role"].new)
    assert (granted["role"], granted["site"]) == ("coordinator", "S102")
    assert granted["approved_by_user"] == trial.actor("statistician").user_id
    assert json.loads(entries["request_grant"].new)["status"] == "pending"
    assert json.loads(entries["revoke_role"].old) == {"role": "coordinator", "site": "S102"}
    with trial.ctx.uow(readonly=True) as uow:
        assert verify_chain(uow.session).ok


def test_acc_sites_deactivate_stops_registration_and_activate_restores_it(trial: Trial) -> None:
    a = trial.actor("admin")
    assert admin.deactivate_site(trial.ctx, a, trial.study_id, "S102") is False
    with pytest.raises(PreconditionFailed, match="not active"):
        j.register(trial, "S102")
    assert admin.activate_site(trial.ctx, a, trial.study_id, "S102") is True
    assert j.register(trial, "S102").startswith("S102-")


def test_acc_local_operator_may_administer(trial: Trial) -> None:
    op = operator_actor()
    admin.deactivate_user(trial.ctx, op, trial.study_id, "dsmb")
    assert not _user(trial, "dsmb").active
    assert admin.list_users(trial.ctx, op, trial.study_id)


Refusal = tuple[str, Callable[[Trial], object], type[TrialError], str]

REFUSALS: list[Refusal] = [
    (
        "not admin",
        lambda t: admin.deactivate_user(t.ctx, t.actor("manager"), t.study_id, "monitor"),
        PermissionDenied,
        "administrator",
    ),
    (
        "not admin (grant)",
        lambda t: admin.grant_role(t.ctx, t.actor("statistician"), t.study_id, "crc", "dsmb"),
        PermissionDenied,
        "administrator",
    ),
    (
        "not admin (site)",
        lambda t: admin.deactivate_site(t.ctx, t.actor("coordinator"), t.study_id, "S101"),
        PermissionDenied,
        "administrator",
    ),
    (
        "unknown user",
        lambda t: accounts.send_password_reset(t.ctx, t.actor("admin"), t.study_id, "nobody"),
        NotFound,
        "user nobody not found",
    ),
    (
        "unknown site",
        lambda t: admin.grant_role(
            t.ctx, t.actor("admin"), t.study_id, "crc", "coordinator", "S999"
        ),
        NotFound,
        "site S999 not found",
    ),
    (
        "unknown site (activate)",
        lambda t: admin.activate_site(t.ctx, t.actor("admin"), t.study_id, "S999"),
        NotFound,
        "site S999 not found",
    ),
    (
        "unknown role",
        lambda t: admin.grant_role(t.ctx, t.actor("admin"), t.study_id, "crc", "overlord"),
        ValidationFailed,
        "unknown role 'overlord'",
    ),
    (
        "site role without site",
        lambda t: admin.grant_role(t.ctx, t.actor("admin"), t.study_id, "crc", "implanter"),
        ValidationFailed,
        "needs a site",
    ),
    (
        "role not held",
        lambda t: admin.revoke_role(t.ctx, t.actor("admin"), t.study_id, "crc", "dsmb"),
        NotFound,
        "does not hold dsmb",
    ),
    (
        "already held",
        lambda t: admin.grant_role(t.ctx, t.actor("admin"), t.study_id, "crc", "crc"),
        Conflict,
        "already holds crc",
    ),
    (
        "last admin grant",
        lambda t: admin.revoke_role(t.ctx, t.actor("admin"), t.study_id, "admin", "admin"),
        PreconditionFailed,
        "last active administrator",
    ),
    (
        "last admin deactivated",
        lambda t: admin.deactivate_user(t.ctx, operator_actor(), t.study_id, "admin"),
        PreconditionFailed,
        "last active administrator",
    ),
    (
        "no address for a reset link",
        lambda t: accounts.send_password_reset(t.ctx, t.actor("admin"), t.study_id, "crc"),
        PreconditionFailed,
        "no e-mail address on file",
    ),
    (
        "short password at acceptance",
        lambda t: accounts.accept_invitation(
            t.ctx,
            token_of(outbox_link(t.ctx, "short@example.org", "invitation")),
            "short",
        ),
        ValidationFailed,
        f"at least {MIN_PASSWORD_LENGTH} characters",
    ),
    (
        "already active site",
        lambda t: admin.activate_site(t.ctx, t.actor("admin"), t.study_id, "S101"),
        Conflict,
        "already active",
    ),
]


@pytest.mark.parametrize(("label", "call", "error", "text"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_acc_refused_change_writes_nothing(
    trial: Trial,
    label: str,
    call: Callable[[Trial], object],
    error: type[TrialError],
    text: str,
) -> None:
    """Each refusal is one clear message and leaves users, grants, sites, sessions and the
    audit trail exactly as they were."""
    for username in ("admin", "manager", "statistician", "coordinator"):
        trial.actor(username)  # sign-ins happen before the snapshot
    accounts.invite(
        trial.ctx, trial.actor("admin"), trial.study_id, email="short@example.org",
        full_name="Short Password", role="monitor",
    )  # fmt: skip
    before = _snapshot(trial)
    with pytest.raises(error, match=text):
        call(trial)
    assert _snapshot(trial) == before, label


def test_acc_last_admin_grant_may_go_once_another_admin_exists(trial: Trial) -> None:
    """The last-administrator rule counts active administrators: with a second one, the first
    grant can be revoked; the refusal above is not a blanket ban."""
    create_user(
        trial.ctx,
        operator_actor(),
        trial.study_id,
        username="admin2",
        full_name="Second Admin",
        password=PASSWORD,
        roles=[(Role.ADMIN, None)],
    )
    info = admin.revoke_role(trial.ctx, trial.actor("admin2"), trial.study_id, "admin", "admin")
    assert info.roles == []
    with pytest.raises(PreconditionFailed, match="last active administrator"):
        admin.revoke_role(trial.ctx, trial.actor("admin2"), trial.study_id, "admin2", "admin")


def test_prot1_users_of_another_study_are_not_found(trial: Trial) -> None:
    """An administrator sees and changes only users holding a role in its own study."""
    from tests.conftest import flagship
    from trialdesk.services.setup import initialize_study

    other = initialize_study(trial.ctx, operator_actor(), flagship(), code="OTHER", mode="demo")
    create_user(
        trial.ctx,
        operator_actor(),
        other.id,
        username="outsider",
        full_name="Other Study",
        password=PASSWORD,
        roles=[(Role.MANAGER, None)],
    )
    names = {u.username for u in admin.list_users(trial.ctx, trial.actor("admin"), trial.study_id)}
    assert "outsider" not in names
    with pytest.raises(NotFound):
        admin.deactivate_user(trial.ctx, trial.actor("admin"), trial.study_id, "outsider")
    assert authenticate(trial.ctx, "outsider", PASSWORD).username == "outsider"
