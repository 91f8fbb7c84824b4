"""An administrator acting alone (issue 12, Must show), on SQLite and PostgreSQL: through
every administration route of the API and every administration page, with every role, for
itself and for mailboxes it controls, the administrator ends up with no session that sees an
arm, and sets nobody's password. A new administration route or page that this test does not
drive fails it, so the class stays closed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.e2e.sweep_support import app_routes
from tests.e2e.test_api_support import API, STUDY
from tests.e2e.test_web_pages import ARM_TEXT, CSRF, client, sign_in
from tests.mailbox import links_in, outbox_mails, token_of
from trialdesk.bootstrap import create_app
from trialdesk.domain.roles import SITE_SCOPED, Role
from trialdesk.services import accounts
from trialdesk.services.access import operator_actor
from trialdesk.services.auth import authenticate

MAILBOX = re.compile(r"@admin-owns\.example$")
"""The addresses the administrator controls: only their mails are the administrator's."""

ADMIN_API = {
    ("GET", "/api/v1/studies/{study}/users"),
    ("POST", "/api/v1/studies/{study}/invitations"),
    ("GET", "/api/v1/studies/{study}/invitations"),
    ("POST", "/api/v1/studies/{study}/invitations/{invitation_id}/cancel"),
    ("POST", "/api/v1/studies/{study}/users/{username}/grants"),
    ("POST", "/api/v1/studies/{study}/users/{username}/grants/revoke"),
    ("POST", "/api/v1/studies/{study}/users/{username}/deactivate"),
    ("POST", "/api/v1/studies/{study}/users/{username}/reactivate"),
    ("POST", "/api/v1/studies/{study}/users/{username}/password-reset"),
    ("POST", "/api/v1/studies/{study}/users/{username}/clear-backoff"),
    ("GET", "/api/v1/studies/{study}/approvals"),
    ("POST", "/api/v1/studies/{study}/approvals/{approval_id}/approve"),
    ("POST", "/api/v1/studies/{study}/approvals/{approval_id}/reject"),
}
ADMIN_PAGES = {
    ("GET", "/admin/users"),
    ("POST", "/admin/invitations"),
    ("POST", "/admin/invitations/{invitation_id}/cancel"),
    ("POST", "/admin/users/{username}/{change}"),
    ("GET", "/admin/sites"),
    ("POST", "/admin/sites/{code}/{change}"),
    ("GET", "/account/approvals"),
    ("POST", "/account/approvals/{approval_id}/{decision}"),
}
ADMIN_PREFIXES = ("/admin", "/account/approvals", "/api/v1/studies/{study}/users")
ADMIN_PARTS = ("/invitations", "/approvals", "/users")


def _routes(trial: Trial) -> set[tuple[str, str]]:
    return {(e.method, e.path) for e in app_routes(create_app(trial.runtime))}


def test_acc_the_test_drives_every_administration_route_and_page(trial: Trial) -> None:
    """A route about users, invitations, approvals or the admin pages that is not in the
    lists below (and so not driven by the test that follows) fails here."""
    routes = _routes(trial)
    admin_like = {
        (m, p)
        for m, p in routes
        if p.startswith(ADMIN_PREFIXES)
        or (p.startswith("/api/v1/studies/{study}") and any(x in p for x in ADMIN_PARTS))
    }
    assert admin_like == ADMIN_API | ADMIN_PAGES


def _api_headers(c: TestClient, username: str) -> dict[str, str]:
    response = c.post(f"{API}/auth/token", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _csrf(c: TestClient) -> str:
    found = CSRF.search(c.get("/admin/users").text)
    assert found
    return found.group(1)


def _no_arm_anywhere(responses: list[Any], who: str) -> None:
    for response in responses:
        assert not ARM_TEXT.search(response.text), (who, response.request.url, response.text[:300])


@pytest.mark.req("RAND-6")
def test_rand6_an_administrator_alone_through_every_route_and_page_sees_no_arm(
    trial: Trial,
) -> None:
    """As the administrator: invite a mailbox of its own to every role (API and page), give
    itself every role (API and page), try to approve and reject the requests, send reset links
    to the unblinded users, deactivate, reactivate, revoke, clear back-offs, cancel. Then use
    every link that reached its mailboxes and sign in as every account it controls, through
    the API and the pages: no response shows an arm, no account holds a role that can reach
    one, nobody else's password changed, and the unblinded users' mails never reached it."""
    number, _arm = j.procedure_done(trial)
    accounts.set_email(trial.ctx, operator_actor(), "statistician", "sam@sponsor.example")
    accounts.set_email(trial.ctx, operator_actor(), "implanter", "ira@site.example")
    api = TestClient(create_app(trial.runtime))
    h = _api_headers(api, "admin")
    web = client(trial)
    assert sign_in(web, "admin").status_code == 303
    token = _csrf(web)
    driven: set[tuple[str, str]] = set()

    def call(method: str, template: str, path: str, **kw: Any) -> Any:
        driven.add((method, template))
        if template.startswith("/api/"):
            return api.request(method, path, headers=h, **kw)
        if method == "POST":
            kw.setdefault("data", {})["csrf_token"] = token
        return web.request(method, path, **kw)

    s = "/api/v1/studies/{study}"
    for role in Role:
        site = "S101" if role in SITE_SCOPED else None
        call("POST", f"{s}/invitations", f"{STUDY}/invitations", json={
            "email": f"api-{role.value}@admin-owns.example", "full_name": f"Api {role.value}",
            "role": role.value, "site": site,
        })  # fmt: skip
        call("POST", "/admin/invitations", "/admin/invitations", data={
            "email": f"web-{role.value}@admin-owns.example", "full_name": f"Web {role.value}",
            "role": role.value, "site": site or "",
        })  # fmt: skip
        call("POST", f"{s}/users/{{username}}/grants", f"{STUDY}/users/admin/grants",
             json={"role": role.value, "site": site})  # fmt: skip
        call("POST", "/admin/users/{username}/{change}", "/admin/users/admin/grant",
             data={"role": role.value, "site": site or ""})  # fmt: skip
    call("GET", f"{s}/users", f"{STUDY}/users")
    call("GET", f"{s}/invitations", f"{STUDY}/invitations")
    pending = call("GET", f"{s}/approvals", f"{STUDY}/approvals").json()["items"]
    assert pending
    for request in pending:
        rid = request["id"]
        refused = call("POST", f"{s}/approvals/{{approval_id}}/approve",
                       f"{STUDY}/approvals/{rid}/approve", json={"password": PASSWORD})  # fmt: skip
        assert refused.status_code == 403
        refused = call("POST", f"{s}/approvals/{{approval_id}}/reject",
                       f"{STUDY}/approvals/{rid}/reject",
                       json={"password": PASSWORD, "reason": "x"})  # fmt: skip
        assert refused.status_code == 403
        for decision in ("approve", "reject"):
            page = call("POST", "/account/approvals/{approval_id}/{decision}",
                        f"/account/approvals/{rid}/{decision}",
                        data={"password": PASSWORD, "reason": "x"})  # fmt: skip
            assert page.status_code == 403
    call("GET", "/account/approvals", "/account/approvals")
    for victim in ("statistician", "implanter"):
        assert call("POST", f"{s}/users/{{username}}/password-reset",
                    f"{STUDY}/users/{victim}/password-reset").status_code == 200  # fmt: skip
        call("POST", "/admin/users/{username}/{change}", f"/admin/users/{victim}/reset-link")
        for change in ("deactivate", "reactivate"):
            call("POST", f"{s}/users/{{username}}/{change}", f"{STUDY}/users/{victim}/{change}")
            call("POST", "/admin/users/{username}/{change}", f"/admin/users/{victim}/{change}")
        call("POST", f"{s}/users/{{username}}/clear-backoff",
             f"{STUDY}/users/{victim}/clear-backoff")  # fmt: skip
    call("POST", f"{s}/users/{{username}}/grants/revoke", f"{STUDY}/users/admin/grants/revoke",
         json={"role": "crc"})  # fmt: skip
    first = call("GET", f"{s}/invitations", f"{STUDY}/invitations").json()["items"][-1]
    call("POST", f"{s}/invitations/{{invitation_id}}/cancel",
         f"{STUDY}/invitations/{first['id']}/cancel")  # fmt: skip
    last = call("GET", f"{s}/invitations", f"{STUDY}/invitations").json()["items"][0]
    call("POST", "/admin/invitations/{invitation_id}/cancel",
         f"/admin/invitations/{last['id']}/cancel")  # fmt: skip
    call("GET", "/admin/sites", "/admin/sites")
    users_page = call("GET", "/admin/users", "/admin/users")
    assert 'type="password"' not in users_page.text  # no password for anyone else
    call("POST", "/admin/sites/{code}/{change}", "/admin/sites/S102/deactivate")
    call("POST", "/admin/sites/{code}/{change}", "/admin/sites/S102/activate")
    assert driven == ADMIN_API | ADMIN_PAGES

    # the administrator's mailboxes: every link that reached them is used
    controlled = {"admin"}
    for row in accounts.list_invitations(trial.ctx, operator_actor(), trial.study_id):
        if row.status != "sent":
            continue
        assert MAILBOX.search(row.email)
        (body,) = outbox_mails(trial.ctx, row.email, "invitation")
        (link,) = links_in(body)
        done = api.post(
            f"{API}/account/invitations/{token_of(link)}/accept", json={"password": PASSWORD}
        )
        assert done.status_code == 200, done.text
        controlled.add(done.json()["username"])
    for address in ("sam@sponsor.example", "ira@site.example"):
        assert len(outbox_mails(trial.ctx, address, "password_reset")) == 2  # not the admin's
    assert authenticate(trial.ctx, "statistician", PASSWORD)  # passwords unchanged
    assert authenticate(trial.ctx, "implanter", PASSWORD)

    # every session the administrator can have
    assert len(controlled) > 1
    for username in sorted(controlled):
        actor = authenticate(trial.ctx, username, PASSWORD)
        assert not actor.roles(trial.study_id) & accounts.NEEDS_APPROVAL, username
        hh = _api_headers(api, username)
        responses: list[Any] = [
            api.get(f"{STUDY}/subjects/{number}", headers=hh),
            api.get(f"{STUDY}/subjects/{number}/history", headers=hh),
            api.get(f"{STUDY}/subjects", headers=hh),
            api.get(f"{STUDY}/lists", headers=hh),
            api.get(f"{STUDY}/endpoints/safety", headers=hh),
            api.post(
                f"{STUDY}/subjects/{number}/emergency-unblind",
                headers=hh,
                json={"reason": "curious", "password": PASSWORD},
            ),
            api.post(f"{STUDY}/exports/csv", headers=hh),
        ]
        assert responses[5].status_code in (403, 404), (username, responses[5].text)
        w = client(trial)
        assert sign_in(w, username).status_code == 303, username
        for path in ("/home", f"/subjects/{number}", "/statistician", "/dashboard", "/devices"):
            responses.append(w.get(path))
        _no_arm_anywhere(responses, username)


def test_sig1_no_administration_route_takes_a_password_for_someone_else(trial: Trial) -> None:
    """Nobody chooses another person's password: no administration route's body has a
    password field except the approvals', where it is the approver's own e-signature; and
    a password slipped into an invitation is refused (unknown fields are errors)."""
    spec = TestClient(create_app(trial.runtime)).get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for method, path in ADMIN_API:
        op = spec["paths"][path][method.lower()]
        ref = (
            op.get("requestBody", {})
            .get("content", {})
            .get("application/json", {})
            .get("schema", {})
            .get("$ref")
        )
        fields = set(schemas[ref.rsplit("/", 1)[-1]]["properties"]) if ref else set()
        if "/approvals/" in path:
            assert "password" in fields  # the signer's own (SIG-1)
        else:
            assert not any("password" in f for f in fields), (method, path, fields)
    api = TestClient(create_app(trial.runtime))
    response = api.post(
        f"{STUDY}/invitations",
        headers=_api_headers(api, "admin"),
        json={
            "email": "x@admin-owns.example", "full_name": "X", "role": "monitor",
            "password": "chosen by the admin",
        },
    )  # fmt: skip
    assert response.status_code == 422
    assert not accounts.list_invitations(trial.ctx, operator_actor(), trial.study_id)
