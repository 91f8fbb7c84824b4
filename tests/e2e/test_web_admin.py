"""Administration pages and the manager's screening log through the ASGI app (TestClient), on
SQLite and PostgreSQL: the administrator's forms, refusals for other roles (ACC-1), CSRF, the
screening log (REP-3, LIFE-3) and blinding on the dashboard (RAND-6)."""

from __future__ import annotations

import re

import pytest

from tests import flagship_data as fd
from tests import journey
from tests.conftest import PASSWORD, Trial
from tests.e2e.test_web_pages import ARM_TEXT, BLINDED, client, csrf_of, sign_in, signed_in
from tests.mailbox import outbox_link, token_of
from trialdesk.services import accounts, admin, screening
from trialdesk.services.access import operator_actor
from trialdesk.services.auth import authenticate
from trialdesk.services.study_info import list_sites


def _form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _users(t: Trial) -> dict[str, admin.UserInfo]:
    return {u.username: u for u in admin.list_users(t.ctx, t.actor("admin"), t.study_id)}


def test_acc_admin_users_page_lists_users_roles_and_sites(trial: Trial) -> None:
    page = signed_in(trial, "admin").get("/admin/users")
    assert page.status_code == 200
    assert 'id="user-coordinator"' in page.text and "coordinator at S101" in page.text
    assert "Casey Coordinator" in page.text
    assert '<a href="/admin/users">Users</a>' in page.text


@pytest.mark.parametrize("username", ["monitor", "manager", "coordinator", "statistician"])
def test_acc_admin_pages_refuse_other_roles(trial: Trial, username: str) -> None:
    """Monitor, manager, coordinator, statistician: /admin/users and /admin/sites are 403 pages
    with the service's refusal, no admin link in the navigation, and a POST changes nothing."""
    c = signed_in(trial, username)
    for path in ("/admin/users", "/admin/sites"):
        page = c.get(path)
        assert page.status_code == 403, path
        assert "needs the role administrator" in page.text
        assert 'href="/admin/users"' not in page.text
    response = c.post("/admin/users/crc/deactivate", data={"csrf_token": csrf_of(c)})
    assert response.status_code == 403
    assert _users(trial)["crc"].active


def test_acc_admin_invites_a_user_who_chooses_a_password_and_signs_in(trial: Trial) -> None:
    """The invitation form: no password field; the invitee's link (read here as the local
    operator, no SMTP configured) opens a page where the invitee chooses the password."""
    c = signed_in(trial, "admin")
    page = c.get("/admin/users")
    assert 'name="password"' not in page.text
    response = c.post(
        "/admin/invitations",
        data={
            "email": "Coord2@Example.org",
            "full_name": "Second Coordinator",
            "role": "monitor",
            "site": "",
            "csrf_token": csrf_of(c),
        },
    )
    assert response.status_code == 200 and "was sent" in response.text
    assert "coord2@example.org" in response.text  # the invitation list, never its link
    link = outbox_link(trial.ctx, "coord2@example.org", "invitation")
    assert token_of(link) not in response.text
    invitee = client(trial)
    form = invitee.get(f"/account/invitation/{token_of(link)}")
    assert form.status_code == 200 and "choose your password" in form.text
    done = invitee.post(
        f"/account/invitation/{token_of(link)}",
        data={"password": PASSWORD, "password2": PASSWORD, "csrf_token": _form_token(form.text)},
    )
    assert done.status_code == 200 and "Your account was created" in done.text
    assert sign_in(client(trial), "coord2@example.org").status_code == 303
    assert "monitor" in c.get("/admin/users").text


def test_acc_admin_invite_refusal_shown_and_nothing_made(trial: Trial) -> None:
    """A site-scoped role without a site, an unknown role and a bad address: the service's
    message on the page (422), no invitation made."""
    c = signed_in(trial, "admin")
    token = csrf_of(c)
    base = {"email": "x1@example.org", "full_name": "X", "csrf_token": token}
    response = c.post("/admin/invitations", data={**base, "role": "implanter", "site": ""})
    assert response.status_code == 422 and "role implanter needs a site" in response.text
    response = c.post("/admin/invitations", data={**base, "role": "overlord", "site": ""})
    assert response.status_code == 422 and "unknown role" in response.text
    response = c.post(
        "/admin/invitations", data={**base, "email": "not-an-address", "role": "crc", "site": ""}
    )
    assert response.status_code == 422 and "not an e-mail address" in response.text
    assert not accounts.list_invitations(trial.ctx, trial.actor("admin"), trial.study_id)


def test_acc_admin_deactivates_and_reactivates_a_user(trial: Trial) -> None:
    """Deactivation through the page: the user cannot sign in and its open session ends."""
    victim = signed_in(trial, "monitor")
    c = signed_in(trial, "admin")
    token = csrf_of(c)
    assert c.post("/admin/users/monitor/deactivate", data={"csrf_token": token}).status_code == 303
    assert victim.get("/home").status_code == 303  # back to sign-in
    assert sign_in(client(trial), "monitor").status_code == 401
    assert "inactive" in c.get("/admin/users").text
    assert c.post("/admin/users/monitor/reactivate", data={"csrf_token": token}).status_code == 303
    assert sign_in(client(trial), "monitor").status_code == 303


def test_sig1_admin_mails_a_reset_link_and_never_sets_a_password(trial: Trial) -> None:
    """The page has no password field; 'Mail a reset link' sends the link to the user's own
    address (shown on the page: only the address), and the old password works meanwhile."""
    accounts.set_email(trial.ctx, operator_actor(), "crc", "crc@example.org")
    c = signed_in(trial, "admin")
    token = csrf_of(c)
    response = c.post("/admin/users/crc/password", data={"password": "x" * 12, "csrf_token": token})
    assert response.status_code == 404
    response = c.post("/admin/users/crc/reset-link", data={"csrf_token": token})
    assert response.status_code == 200 and "mailed to crc" in response.text
    link = outbox_link(trial.ctx, "crc@example.org", "password_reset")
    assert token_of(link) not in response.text
    assert authenticate(trial.ctx, "crc", PASSWORD)  # unchanged until the owner acts
    owner = client(trial)
    form = owner.get(f"/account/reset/{token_of(link)}")
    assert form.status_code == 200 and "crc" in form.text
    done = owner.post(
        f"/account/reset/{token_of(link)}",
        data={
            "password": "another long one",
            "password2": "another long one",
            "csrf_token": _form_token(form.text),
        },
    )
    assert done.status_code == 200 and "is set" in done.text
    assert sign_in(client(trial), "crc", "another long one").status_code == 303
    assert sign_in(client(trial), "crc").status_code == 401


def test_acc1_admin_grants_and_revokes_a_site_role(trial: Trial) -> None:
    """A blinded site role (none exists that cannot reach an arm, so: a study role, CRC) is
    given at once; the implanting team is only requested, shown as awaiting approval; the
    last administrator grant cannot be revoked."""
    c = signed_in(trial, "admin")
    token = csrf_of(c)
    response = c.post(
        "/admin/users/monitor/grant", data={"role": "crc", "site": "", "csrf_token": token}
    )
    assert response.status_code == 303
    response = c.post(
        "/admin/users/monitor/grant",
        data={"role": "implanter", "site": "S102", "csrf_token": token},
    )
    assert response.status_code == 200 and "awaits an unblinded member" in response.text
    page = c.get("/admin/users").text
    assert "implanter at S102 awaiting approval" in page
    assert admin.RoleHeld("implanter", "S102") not in _users(trial)["monitor"].roles
    assert admin.RoleHeld("crc", None) in _users(trial)["monitor"].roles
    response = c.post(
        "/admin/users/monitor/revoke", data={"role": "crc", "site": "", "csrf_token": token}
    )
    assert response.status_code == 303
    assert admin.RoleHeld("crc", None) not in _users(trial)["monitor"].roles
    response = c.post(
        "/admin/users/admin/revoke", data={"role": "admin", "site": "", "csrf_token": token}
    )
    assert response.status_code == 409 and "last active administrator" in response.text
    assert _users(trial)["admin"].roles == [admin.RoleHeld("admin", None)]


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_acc_csrf_admin_post_without_right_token_changes_nothing(
    trial: Trial, token: str | None
) -> None:
    c = signed_in(trial, "admin")
    data = {} if token is None else {"csrf_token": token}
    response = c.post("/admin/users/monitor/deactivate", data=data)
    assert response.status_code == 403 and "security token" in response.text
    assert _users(trial)["monitor"].active
    response = c.post("/admin/sites/S101/deactivate", data=data)
    assert response.status_code == 403
    sites = list_sites(trial.ctx, trial.actor("admin"), trial.study_id)
    assert next(s for s in sites if s.code == "S101").active


def test_acc_admin_deactivates_a_site_then_registration_is_refused(trial: Trial) -> None:
    c = signed_in(trial, "admin")
    page = c.get("/admin/sites")
    assert page.status_code == 200 and 'id="site-S101"' in page.text
    response = c.post("/admin/sites/S101/deactivate", data={"csrf_token": csrf_of(c)})
    assert response.status_code == 303
    coord = signed_in(trial, "coordinator")
    response = coord.post("/subjects", data={"site": "S101", "csrf_token": csrf_of(coord)})
    assert response.status_code == 409 and "not active" in response.text
    response = c.post("/admin/sites/S101/deactivate", data={"csrf_token": csrf_of(c)})
    assert response.status_code == 409 and "already inactive" in response.text
    response = c.post("/admin/sites/S101/activate", data={"csrf_token": csrf_of(c)})
    assert response.status_code == 303


# --------------------------------------------------------------------------- screening log


def test_rep3_life3_manager_dashboard_shows_screening_log_with_reasons(trial: Trial) -> None:
    """The screening log lists every registered subject with site, date and state, and each
    screen failure's reason and detail (CRC rejection, anatomy criterion); no arm."""
    randomized, _arm = journey.randomized(trial)
    rejected = journey.echo_qualified(trial)
    screening.crc_eligibility_decision(
        trial.ctx,
        trial.actor("crc"),
        trial.study_id,
        rejected,
        decision="reject",
        reason="Severe MAC",
        password=PASSWORD,
    )
    anatomy = journey.awaiting_procedure(trial)
    trial.clock.set_day(journey.PROCEDURE)
    screening.record_anatomy(
        trial.ctx,
        trial.actor("implanter"),
        trial.study_id,
        anatomy,
        forms=fd.failing_anatomy_forms("ANAT-2"),
    )
    registered = journey.register(trial, "S102")
    page = signed_in(trial, "manager").get("/dashboard")
    assert page.status_code == 200
    assert 'id="screening-log"' in page.text
    for number in (randomized, rejected, anatomy, registered):  # the latest ten, linked
        assert f'<a href="/subjects/{number}">{number}</a></td>' in page.text
    assert "anatomy unsuitable" in page.text and "ANAT-2" in page.text
    assert "Severe MAC" in page.text
    assert not ARM_TEXT.search(page.text)
    log = signed_in(trial, "admin").get("/dashboard")  # admin: enrolment yes, log refused
    assert log.status_code == 200 and "needs the role" in log.text
    assert f">{registered}</a></td>" not in log.text


def test_rand6_dashboard_and_statistician_show_no_arm_to_blinded_users(trial: Trial) -> None:
    """As each blinded demo user, GET /dashboard and /statistician after randomizations: no arm
    code or label anywhere, and /statistician is a 403 refusal without the navigation link."""
    journey.randomized(trial)
    journey.procedure_done(trial)
    for username in BLINDED:
        c = signed_in(trial, username)
        for path in ("/dashboard", "/statistician"):
            response = c.get(path)
            assert response.status_code in (200, 403), (username, path)
            assert not ARM_TEXT.search(response.text), (username, path)
        page = c.get("/statistician")
        assert page.status_code == 403
        assert 'href="/statistician"' not in page.text


def test_acc2_statistician_approves_an_access_request_on_the_approvals_page(trial: Trial) -> None:
    """The administrator asks for the implanting team at S102 for the monitor; the request
    shows on the statistician's Approvals page; a wrong password signs nothing; the right one
    approves (e-signature) and the role takes effect; the administrator's page has no form
    to decide."""
    boss = signed_in(trial, "admin")
    boss.post(
        "/admin/users/monitor/grant",
        data={"role": "implanter", "site": "S102", "csrf_token": csrf_of(boss)},
    )
    assert "awaiting an unblinded member" in boss.get("/account/approvals").text
    stat = signed_in(trial, "statistician")
    page = stat.get("/account/approvals")
    assert page.status_code == 200 and "Approve (e-signature)" in page.text
    (request,) = accounts.list_approvals(trial.ctx, trial.actor("statistician"), trial.study_id)
    token = csrf_of(stat)
    wrong = stat.post(
        f"/account/approvals/{request.id}/approve",
        data={"password": "not mine", "csrf_token": token},
    )
    assert wrong.status_code == 401 and "signature was not made" in wrong.text
    done = stat.post(
        f"/account/approvals/{request.id}/approve", data={"password": PASSWORD, "csrf_token": token}
    )
    assert done.status_code == 200 and "approved" in done.text
    assert admin.RoleHeld("implanter", "S102") in _users(trial)["monitor"].roles
