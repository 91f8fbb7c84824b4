"""Real e-mail (issue 12) on SQLite and PostgreSQL: an aiosmtpd server on loopback (STARTTLS
with a certificate made here, and AUTH) receives invitations, reset links and notices; the
test reads them back and uses their links to activate accounts and reset passwords through
the web pages and the API. Notices never name an arm. A failed delivery stays in the outbox
and the local operator's flush sends it later."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.e2e.test_api_support import API, STUDY
from tests.e2e.test_web_pages import ARM_TEXT, CSRF, sign_in
from tests.mailbox import MailServer, links_in, smtp_server, token_of
from tests.server import free_port
from trialdesk.bootstrap import Runtime, bootstrap, create_app
from trialdesk.services import accounts, followup
from trialdesk.services.access import operator_actor
from trialdesk.services.mail import MailDispatcher, flush_outbox, list_outbox

LOGIN = ("trialdesk", "smtp secret")


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[MailServer]:
    with smtp_server(tls_folder=tmp_path, login=LOGIN) as server:
        yield server


def _runtime(trial: Trial, url: str, ca: Path | None) -> Runtime:
    settings = dataclasses.replace(
        trial.ctx.settings,
        smtp_url=url,
        smtp_ca_file=ca,
        mail_from="trial@sponsor.example",
        base_url="https://trial.sponsor.example",
        smtp_timeout_seconds=5.0,
    )
    return bootstrap(settings, clock=trial.clock, engine=trial.runtime.engine, run_migrations=False)


@pytest.fixture
def mailing(trial: Trial, mail: MailServer, tmp_path: Path) -> Iterator[Runtime]:
    """The trial's database, now with SMTP over STARTTLS with a login."""
    url = f"smtp+starttls://{LOGIN[0]}:{LOGIN[1].replace(' ', '%20')}@127.0.0.1:{mail.port}"
    runtime = _runtime(trial, url, tmp_path / "smtp.crt")
    yield runtime
    runtime.close()


def _drain(runtime: Runtime) -> None:
    assert isinstance(runtime.context.mail, MailDispatcher)
    assert runtime.context.mail.drain(20.0)


def _web(runtime: Runtime) -> TestClient:
    return TestClient(create_app(runtime), base_url="https://testserver", follow_redirects=False)


def _api_token(c: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = c.post(f"{API}/auth/token", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.mark.req("SIG-1")
def test_invitation_mail_over_starttls_activates_an_account_through_the_web_page(
    trial: Trial, mail: MailServer, mailing: Runtime
) -> None:
    """The administrator invites through the API; the SMTP server receives the mail (after
    STARTTLS and AUTH); its link opens the page where the invitee chooses a password; the
    link works once; the outbox no longer holds the body."""
    api = TestClient(create_app(mailing))
    response = api.post(
        f"{STUDY}/invitations",
        headers=_api_token(api, "admin"),
        json={"email": "new.monitor@cro.example", "full_name": "New Monitor", "role": "monitor"},
    )
    assert response.status_code == 201 and response.json()["status"] == "sent"
    assert "token" not in response.text and "/account/" not in response.text
    received = mail.next()
    assert received.recipients == ["new.monitor@cro.example"]
    assert received.message["From"] == "trial@sponsor.example"
    assert mail.auth == [LOGIN]
    (link,) = links_in(received.body)
    assert link.startswith("https://trial.sponsor.example/account/invitation/")
    web = _web(mailing)
    form = web.get(f"/account/invitation/{token_of(link)}")
    token = CSRF.search(form.text)
    assert token and "choose your password" in form.text
    done = web.post(
        f"/account/invitation/{token_of(link)}",
        data={"password": "my own passphrase", "password2": "my own passphrase",
              "csrf_token": token.group(1)},
    )  # fmt: skip
    assert done.status_code == 200 and "Your account was created" in done.text
    assert sign_in(_web(mailing), "new.monitor@cro.example", "my own passphrase").status_code == 303
    again = web.get(f"/account/invitation/{token_of(link)}")
    assert again.status_code == 404 and "not valid" in again.text
    _drain(mailing)
    (row,) = list_outbox(mailing.context, operator_actor(), unsent_only=False)
    assert row.status == "sent"
    assert (
        accounts.list_invitations(mailing.context, operator_actor(), trial.study_id)[0].status
        == "accepted"
    )


@pytest.mark.req("SIG-1")
def test_reset_mail_is_used_through_the_api_and_nobody_else_sees_the_link(
    trial: Trial, mail: MailServer, mailing: Runtime
) -> None:
    """'Forgot password' through the API answers 202 for a known and an unknown name alike;
    the known user's mail arrives; its link sets the owner's new password through the API."""
    accounts.set_email(mailing.context, operator_actor(), "coordinator", "casey@site.example")
    api = TestClient(create_app(mailing))
    known = api.post(f"{API}/account/password-reset", json={"identifier": "coordinator"})
    unknown = api.post(f"{API}/account/password-reset", json={"identifier": "nobody-here"})
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content == b""
    received = mail.next()
    assert received.recipients == ["casey@site.example"]
    (link,) = links_in(received.body)
    done = api.post(
        f"{API}/account/password-reset/{token_of(link)}", json={"password": "casey's new one"}
    )
    assert done.status_code == 204
    assert _api_token(api, "coordinator", "casey's new one")
    reused = api.post(
        f"{API}/account/password-reset/{token_of(link)}", json={"password": "and another one"}
    )
    assert reused.status_code == 404
    _drain(mailing)
    assert mail.empty()  # nothing went anywhere for the unknown name


@pytest.mark.req("RAND-6")
def test_emergency_unblinding_and_crc_notices_are_mailed_without_an_arm(
    trial: Trial, mail: MailServer, mailing: Runtime
) -> None:
    """A case entering the CRC queue mails each CRC member; an emergency unblinding mails
    each study manager; neither names an arm (code or label), nor the free-text reason."""
    ctx = mailing.context
    accounts.set_email(ctx, operator_actor(), "crc", "riley@crc.example")
    accounts.set_email(ctx, operator_actor(), "manager", "morgan@sponsor.example")
    mt = Trial(
        runtime=mailing, clock=trial.clock, study_id=trial.study_id, backend=trial.backend,
        actors=trial.actors,
    )  # fmt: skip
    randomized, arm = j.randomized(mt)  # its eligibility case entered the CRC queue
    crc_mail = mail.next()
    assert crc_mail.recipients == ["riley@crc.example"] and randomized in crc_mail.body
    assert "https://trial.sponsor.example/crc" in crc_mail.body
    reason = "anaphylaxis; the treating team needs to know the allocation"
    view = followup.emergency_unblind(
        ctx, mt.actor("coordinator"), trial.study_id, randomized, reason=reason, password=PASSWORD
    )
    assert view.arm is not None and view.arm.code == arm
    notice = mail.next()
    assert notice.recipients == ["morgan@sponsor.example"]
    assert randomized in notice.body and "emergency" in str(notice.message["Subject"])
    for received in (crc_mail, notice):
        assert not ARM_TEXT.search(received.body + str(received.message["Subject"]))
    assert "anaphylaxis" not in notice.body
    _drain(mailing)
    assert mail.empty()


@pytest.mark.req("SIG-1")
def test_failed_delivery_stays_in_the_outbox_and_the_operator_flushes_it_later(
    trial: Trial, tmp_path: Path
) -> None:
    """With the SMTP server down, the invitation is still made (the mail is in the outbox
    with its error); once a server listens, the local operator's flush sends it."""
    port = free_port()
    down = _runtime(trial, f"smtp://127.0.0.1:{port}", None)
    try:
        accounts.invite(
            down.context, trial.actor("admin"), trial.study_id, email="late@site.example",
            full_name="Late Mail", role="crc",
        )  # fmt: skip
        _drain(down)
        (row,) = list_outbox(down.context, operator_actor())
        assert row.status == "failed" and row.attempts == 1 and row.last_error
        with smtp_server() as server:
            up = _runtime(trial, f"smtp://127.0.0.1:{server.port}", None)
            try:
                report = flush_outbox(up.context, operator_actor())
                assert (report.sent, report.failed, report.waiting) == (1, 0, 0)
                received = server.next()
                assert received.recipients == ["late@site.example"]
                assert re.search(r"/account/invitation/", received.body)
            finally:
                up.close()
    finally:
        down.close()
