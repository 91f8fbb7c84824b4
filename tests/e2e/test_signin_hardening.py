"""Sign-in that resists enumeration and lock-out (issue 12), through the API and the web
pages on SQLite and PostgreSQL: one answer for unknown names, wrong passwords, inactive
accounts and names backing off; argon2 runs for unknown names too; back-off keyed per client,
per (client, name) and per name so a stranger cannot lock a team out; web sessions end after
8 hours or when idle; a TOTP second factor when required. Timing is measured in
bench/signin_timing.py, not here."""

from __future__ import annotations

import dataclasses
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, Trial
from tests.e2e.test_api_support import API, STUDY
from tests.e2e.test_web_pages import CSRF, client, sign_in
from trialdesk.bootstrap import Runtime, bootstrap, create_app
from trialdesk.domain.errors import AuthenticationFailed
from trialdesk.services import accounts, admin
from trialdesk.services.access import operator_actor
from trialdesk.services.auth import SIGN_IN_REFUSED, authenticate
from trialdesk.services.sessions import issue_token

IGNORED_HEADERS = {"date", "content-length"}


def _api_sign_in(c: TestClient, username: str, password: str, **extra: str) -> Any:
    return c.post(f"{API}/auth/token", json={"username": username, "password": password, **extra})


def _answer(response: Any) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in IGNORED_HEADERS}
    return response.status_code, headers, response.content


def _api(trial: Trial, client_host: str = "testclient") -> TestClient:
    return TestClient(create_app(trial.runtime), client=(client_host, 50000))


@pytest.mark.req("SIG-1")
def test_sig1_locked_known_account_and_unknown_name_get_identical_answers(trial: Trial) -> None:
    """After the same failures from one client, the known implanter (now with the right
    password) and a name nobody has get byte-identical answers (status, headers, body), and
    so do a wrong password and an unknown name before any back-off."""
    c = _api(trial)
    first_known = _api_sign_in(c, "implanter", "wrong password!")
    first_unknown = _api_sign_in(c, "no-such-user", "wrong password!")
    assert _answer(first_known) == _answer(first_unknown)
    assert first_known.status_code == 401 and first_known.json()["detail"] == SIGN_IN_REFUSED
    for _ in range(trial.ctx.settings.lockout_attempts):
        _api_sign_in(c, "implanter", "wrong password!")
        _api_sign_in(c, "no-such-user", "wrong password!")
    locked = _api_sign_in(c, "implanter", PASSWORD)
    unknown = _api_sign_in(c, "no-such-user", PASSWORD)
    assert _answer(locked) == _answer(unknown)
    assert locked.status_code == 401
    # the web page: the same message, status and page for both
    w = client(trial)
    for _ in range(trial.ctx.settings.lockout_attempts):
        sign_in(w, "crc", "wrong password!")
        sign_in(w, "nobody-at-all", "wrong password!")
    page_known = sign_in(w, "crc")
    page_unknown = sign_in(w, "nobody-at-all")
    assert page_known.status_code == page_unknown.status_code == 401
    strip = CSRF.sub("", page_known.text).replace('value="crc"', 'value="?"')
    assert strip == CSRF.sub("", page_unknown.text).replace('value="nobody-at-all"', 'value="?"')
    assert "locked" not in page_known.text


@pytest.mark.req("SIG-1")
def test_sig1_argon2_runs_for_unknown_names_and_inactive_accounts(
    trial: Trial, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every refused sign-in costs one argon2 verification, with the installation's cost
    settings, so the time does not tell a name that exists from one that does not."""
    from argon2 import PasswordHasher

    calls: list[str] = []
    real = PasswordHasher.verify

    def spy(self: PasswordHasher, hash: str, password: str | bytes) -> bool:
        calls.append(hash)
        return real(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    admin.deactivate_user(trial.ctx, operator_actor(), trial.study_id, "monitor")
    for name in ("no-such-user", "monitor", "crc"):
        calls.clear()
        with pytest.raises(AuthenticationFailed):
            authenticate(trial.ctx, name, "wrong password!", client=f"c-{name}")
        assert len(calls) == 1, name
        s = trial.ctx.settings
        assert f"m={s.argon2_memory_kib},t={s.argon2_time_cost}," in calls[0], name


@pytest.mark.req("SIG-1")
def test_sig1_a_stranger_cannot_lock_the_implanting_team_out(trial: Trial) -> None:
    """A stranger's client fails 60 times on 'implanter': it backs off, but the implanting
    team signs in from its own workstation at once, and from a workstation never used
    before too (one stranger is not enough to hold the name back for everyone)."""
    assert authenticate(trial.ctx, "implanter", PASSWORD, client="cath-lab")
    for _ in range(60):
        with pytest.raises(AuthenticationFailed):
            authenticate(trial.ctx, "implanter", "guess", client="stranger")
    with pytest.raises(AuthenticationFailed):  # the stranger is held back even when right
        authenticate(trial.ctx, "implanter", PASSWORD, client="stranger")
    assert authenticate(trial.ctx, "implanter", PASSWORD, client="cath-lab").username
    assert authenticate(trial.ctx, "implanter", PASSWORD, client="new-laptop").username


@pytest.mark.req("SIG-1")
def test_sig1_many_strangers_hold_a_name_back_only_for_new_clients_with_backoff(
    trial: Trial,
) -> None:
    """Failures from many clients make the name back off for clients that never signed in
    as it; the team's own workstation (it had a session) still signs in; the back-off ends
    by itself (no hard lock) and an administrator can clear it at once."""
    s = trial.ctx.settings
    assert issue_token(trial.ctx, "implanter", PASSWORD, kind="web", client="cath-lab")
    # each client's failures count until its own pair backs off
    per_client = s.lockout_attempts
    clients = max(s.signin_account_clients, -(-s.signin_account_attempts // per_client))
    for n in range(clients):
        for _ in range(per_client):
            with pytest.raises(AuthenticationFailed):
                authenticate(trial.ctx, "implanter", "guess", client=f"bot-{n}")
    with pytest.raises(AuthenticationFailed):
        authenticate(trial.ctx, "implanter", PASSWORD, client="new-laptop")
    assert authenticate(trial.ctx, "implanter", PASSWORD, client="cath-lab").username
    listed = next(
        u for u in admin.list_users(trial.ctx, trial.actor("admin"), trial.study_id)
        if u.username == "implanter"
    )  # fmt: skip
    assert listed.locked_until is not None
    trial.clock.advance(minutes=s.lockout_minutes + 1)
    assert authenticate(trial.ctx, "implanter", PASSWORD, client="new-laptop").username
    for n in range(clients):
        for _ in range(per_client):
            with pytest.raises(AuthenticationFailed):
                authenticate(trial.ctx, "implanter", "guess", client=f"bot2-{n}")
    with pytest.raises(AuthenticationFailed):
        authenticate(trial.ctx, "implanter", PASSWORD, client="other-laptop")
    admin.clear_signin_backoff(trial.ctx, trial.actor("admin"), trial.study_id, "implanter")
    assert authenticate(trial.ctx, "implanter", PASSWORD, client="other-laptop").username


@pytest.mark.req("SIG-1")
def test_sig1_one_client_guessing_many_names_backs_off(trial: Trial) -> None:
    """A client that fails across many names backs off as a client, also for a real user's
    right password from it (one who never signed in from there); other clients are not
    affected, nor a user who signed in from that address before (a hospital's shared one)."""
    s = trial.ctx.settings
    assert issue_token(trial.ctx, "crc", PASSWORD, kind="api", client="shared-nat")
    for n in range(s.signin_client_attempts):
        with pytest.raises(AuthenticationFailed):
            authenticate(trial.ctx, f"name-{n}", "guess", client="shared-nat")
    with pytest.raises(AuthenticationFailed):
        authenticate(trial.ctx, "monitor", PASSWORD, client="shared-nat")
    assert authenticate(trial.ctx, "monitor", PASSWORD, client="office").username
    assert authenticate(trial.ctx, "crc", PASSWORD, client="shared-nat").username


@pytest.fixture
def tight(trial: Trial) -> Runtime:
    """The trial's database with short session settings (2 h tokens, 8 h web, 30 min idle)."""
    settings = dataclasses.replace(
        trial.ctx.settings, api_token_hours=2.0, web_session_hours=8.0, web_idle_minutes=30.0
    )
    runtime = bootstrap(
        settings, clock=trial.clock, engine=trial.runtime.engine, run_migrations=False
    )
    return runtime


@pytest.mark.req("SIG-1")
def test_sig1_web_session_ends_after_8_hours_and_when_idle(trial: Trial, tight: Runtime) -> None:
    """A web session used every 20 minutes lives until its 8 hours are up, not 12; one left
    alone for the idle timeout ends; an API token lives as long as configured (2 h here)."""
    c = TestClient(create_app(tight), base_url="https://testserver", follow_redirects=False)
    assert sign_in(c, "monitor").status_code == 303
    for _ in range(23):  # 7 h 40 min of use
        trial.clock.advance(minutes=20)
        assert c.get("/home").status_code == 200
    trial.clock.advance(minutes=21)  # 8 h 1 min after sign-in
    assert c.get("/home").status_code == 303
    idle = TestClient(create_app(tight), base_url="https://testserver", follow_redirects=False)
    assert sign_in(idle, "monitor").status_code == 303
    trial.clock.advance(minutes=29)
    assert idle.get("/home").status_code == 200
    trial.clock.advance(minutes=31)
    assert idle.get("/home").status_code == 303
    api = TestClient(create_app(tight))
    token = _api_sign_in(api, "monitor", PASSWORD).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    trial.clock.advance(minutes=119)
    assert api.get(f"{STUDY}/subjects", headers=headers).status_code == 200
    trial.clock.advance(minutes=2)
    assert api.get(f"{STUDY}/subjects", headers=headers).status_code == 401


@pytest.fixture
def totp_runtime(trial: Trial) -> Runtime:
    settings = dataclasses.replace(trial.ctx.settings, totp_required=True)
    return bootstrap(settings, clock=trial.clock, engine=trial.runtime.engine, run_migrations=False)


def _code(secret: str, trial: Trial) -> str:
    return pyotp.TOTP(secret).at(trial.clock.now)


@pytest.mark.req("SIG-1")
def test_sig1_totp_required_for_unblinded_roles_and_administrators_through_the_api(
    trial: Trial, totp_runtime: Runtime
) -> None:
    """With the setting on, the statistician's token is good for enrolment only; after
    enrolment every sign-in needs a current code, a code is never accepted twice, and the
    local operator's recovery removes the factor. A blinded monitor needs none."""
    api = TestClient(create_app(totp_runtime))
    body = _api_sign_in(api, "statistician", PASSWORD).json()
    assert body["scope"] == "enrol"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    refused = api.get(f"{STUDY}/lists", headers=headers)
    assert refused.status_code == 401 and "second factor" in refused.json()["detail"]
    enrolment = api.post(f"{API}/me/totp", headers=headers).json()
    assert enrolment["uri"].startswith("otpauth://totp/")
    wrong = api.post(f"{API}/me/totp/confirm", headers=headers, json={"code": "000000"})
    assert wrong.status_code == 422
    code = _code(enrolment["secret"], trial)
    assert (
        api.post(f"{API}/me/totp/confirm", headers=headers, json={"code": code}).status_code == 200
    )
    assert api.get(f"{STUDY}/lists", headers=headers).status_code == 200
    trial.clock.advance(seconds=30)
    missing = _api_sign_in(api, "statistician", PASSWORD)
    assert missing.status_code == 401 and "6-digit code" in missing.json()["detail"]
    code = _code(enrolment["secret"], trial)
    assert _api_sign_in(api, "statistician", PASSWORD, totp=code).json()["scope"] == "full"
    replay = _api_sign_in(api, "statistician", PASSWORD, totp=code)
    assert replay.status_code == 401
    assert _api_sign_in(api, "monitor", PASSWORD).json()["scope"] == "full"
    accounts.reset_totp(totp_runtime.context, operator_actor(), "statistician")
    assert _api_sign_in(api, "statistician", PASSWORD).json()["scope"] == "enrol"


@pytest.mark.req("SIG-1")
def test_sig1_totp_enrolment_and_sign_in_through_the_web_pages(
    trial: Trial, totp_runtime: Runtime
) -> None:
    """The administrator signs in, is sent to the enrolment page, sees the secret once,
    confirms a code, and the next sign-in asks for the code."""
    c = TestClient(create_app(totp_runtime), base_url="https://testserver", follow_redirects=False)
    response = sign_in(c, "admin")
    assert response.status_code == 303 and response.headers["location"] == "/account/totp"
    assert c.get("/home").headers["location"] == "/account/totp"
    page = c.get("/account/totp")
    token = CSRF.search(page.text)
    assert token
    shown = c.post("/account/totp/begin", data={"csrf_token": token.group(1)})
    secret = shown.text.split("Secret: <code>")[1].split("</code>")[0]
    done = c.post(
        "/account/totp/confirm", data={"csrf_token": token.group(1), "code": _code(secret, trial)}
    )
    assert done.status_code == 303
    assert c.get("/home").status_code == 200
    assert secret not in c.get("/account").text  # shown once
    trial.clock.advance(seconds=30)
    fresh = TestClient(
        create_app(totp_runtime), base_url="https://testserver", follow_redirects=False
    )
    assert sign_in(fresh, "admin").status_code == 401
    signin = fresh.get("/signin")
    form_token = CSRF.search(signin.text)
    assert form_token
    ok = fresh.post(
        "/signin",
        data={
            "username": "admin", "password": PASSWORD, "csrf_token": form_token.group(1),
            "totp": _code(secret, trial),
        },
    )  # fmt: skip
    assert ok.status_code == 303 and ok.headers["location"] == "/home"
