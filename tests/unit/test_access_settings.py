"""Settings of sign-in, sessions, mail and the second factor (issue 12): each variable read,
bad values refused with one clear message at start-up; SMTP URLs and e-mail addresses."""

from __future__ import annotations

import pytest

from trialdesk.config import load_settings
from trialdesk.domain.errors import ValidationFailed
from trialdesk.services.mail import SmtpTarget, check_address, parse_smtp_url


def test_access_settings_are_read_from_the_environment() -> None:
    s = load_settings(
        {
            "TRIALDESK_WEB_SESSION_HOURS": "6",
            "TRIALDESK_WEB_IDLE_MINUTES": "15",
            "TRIALDESK_API_TOKEN_HOURS": "2.5",
            "TRIALDESK_SIGNIN_PAIR_ATTEMPTS": "3",
            "TRIALDESK_TOTP_REQUIRED": "yes",
            "TRIALDESK_SMTP_URL": "smtp+starttls://u:p%40ss@mail.example:2587",
            "TRIALDESK_MAIL_FROM": "trial@sponsor.example",
            "TRIALDESK_BASE_URL": "https://trial.example/",
        }
    )
    assert (s.web_session_hours, s.web_idle_minutes, s.api_token_hours) == (6, 15, 2.5)
    assert s.lockout_attempts == 3 and s.totp_required is True
    assert s.smtp_url and s.mail_from == "trial@sponsor.example"
    assert s.base_url == "https://trial.example"
    defaults = load_settings({})
    assert (defaults.web_session_hours, defaults.web_idle_minutes) == (8.0, 30.0)
    assert defaults.totp_required is False and defaults.smtp_url is None


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("TRIALDESK_WEB_IDLE_MINUTES", "soon", "is not a number"),
        ("TRIALDESK_API_TOKEN_HOURS", "0", "greater than zero"),
        ("TRIALDESK_TOTP_REQUIRED", "maybe", "true or false"),
        ("TRIALDESK_SMTP_URL", "http://mail.example", "TRIALDESK_SMTP_URL"),
        ("TRIALDESK_SMTP_URL", "smtp://user:pw@mail.example", "only over TLS"),
        ("TRIALDESK_BASE_URL", "trial.example", "must start with http"),
    ],
)
def test_bad_access_settings_are_refused_at_start_up(name: str, value: str, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        load_settings({name: value})


def test_smtp_urls() -> None:
    assert parse_smtp_url("smtp://127.0.0.1:2525") == SmtpTarget("127.0.0.1", 2525, "plain")
    assert parse_smtp_url("smtp+starttls://a%20b:c%3Ad@h.example") == SmtpTarget(
        "h.example", 587, "starttls", "a b", "c:d"
    )
    assert parse_smtp_url("smtps://u:p@h.example").port == 465


@pytest.mark.parametrize(
    "bad", ["", "no-at-sign", "a@b", "two words@x.example", "é@x.example", "a<b>@x.example"]
)
def test_addresses_are_checked_and_lower_cased(bad: str) -> None:
    assert check_address("  Casey@Site.Example ") == "casey@site.example"
    with pytest.raises(ValidationFailed, match="not an e-mail address"):
        check_address(bad)
