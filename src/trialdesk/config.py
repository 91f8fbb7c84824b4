"""Settings, read from the environment once at start-up by :func:`load_settings`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///./trialdesk.db"


@dataclass(frozen=True)
class Settings:
    """Everything configurable; passed down, never read from globals."""

    database_url: str = DEFAULT_DATABASE_URL
    allocation_key_file: Path = Path("./allocation.key")
    user: str | None = None
    password: str | None = None
    totp_code: str | None = None
    """The current TOTP code for a CLI sign-in (``TRIALDESK_TOTP``); prompted when needed."""
    lockout_attempts: int = 5
    """Failed sign-ins from one client for one name before that pair backs off."""
    lockout_minutes: int = 15
    """The longest back-off, in minutes (it doubles from ``signin_backoff_seconds``)."""
    signin_backoff_seconds: int = 30
    """The first back-off after the threshold; each further failure doubles it."""
    signin_client_attempts: int = 30
    """Failed sign-ins from one client (any names) before that client backs off."""
    signin_account_attempts: int = 50
    """Failed sign-ins for one name from all clients before the name backs off, and then only
    for clients that have not signed in as it before (so strangers cannot lock a team out)."""
    signin_account_clients: int = 5
    """Distinct failing clients needed as well before a name backs off for everyone new."""
    signin_window_minutes: int = 60
    """Failures older than this are forgotten."""
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    web_session_hours: float = 8.0
    """Absolute lifetime of a browser session (the user guide says 8 hours)."""
    web_idle_minutes: float = 30.0
    """A browser session unused this long ends."""
    api_token_hours: float = 8.0
    """Lifetime of an API bearer token."""
    invitation_hours: float = 72.0
    """How long an activation link in an invitation stays valid."""
    reset_minutes: float = 60.0
    """How long a password-reset link stays valid."""
    totp_required: bool = False
    """Require a TOTP second factor of administrators and holders of unblinded roles."""
    smtp_url: str | None = None
    """``smtp://host:port``, ``smtp+starttls://user:pass@host:port`` or ``smtps://…``; None:
    mails wait in the outbox and the local operator reads their links with the CLI."""
    mail_from: str = "trialdesk@localhost"
    smtp_ca_file: Path | None = None
    """A CA bundle to verify the SMTP server's certificate (default: the system's)."""
    smtp_timeout_seconds: float = 10.0
    base_url: str = "http://127.0.0.1:8000"
    """Where the web pages are reached; links in mails start with it."""
    fixed_now: dt.datetime | None = None
    """A frozen clock for demo and sandbox studies (``TRIALDESK_CLOCK``); refused on live ones."""
    max_request_bytes: int = 8 * 1024 * 1024
    """Largest request body the server reads (``TRIALDESK_MAX_REQUEST_BYTES``); larger is 413."""
    hsts_seconds: int | None = None
    """``Strict-Transport-Security`` max-age (``TRIALDESK_HSTS_SECONDS``), for a deployment
    behind TLS; unset sends no HSTS header (plain-HTTP local use would be locked out)."""


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``TRIALDESK_*`` variables (``os.environ`` by default)."""
    env = os.environ if env is None else env
    url = env.get("TRIALDESK_DATABASE_URL") or DEFAULT_DATABASE_URL
    key = env.get("TRIALDESK_ALLOCATION_KEY_FILE")
    if key:
        key_file = Path(key)
    elif url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        # Beside the database file, so one folder holds one trial.
        key_file = Path(url.removeprefix("sqlite:///")).with_suffix(".key")
    else:
        key_file = Path("./allocation.key")
    fixed_now = None
    clock = env.get("TRIALDESK_CLOCK")
    if clock:
        try:
            fixed_now = dt.datetime.fromisoformat(clock.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"TRIALDESK_CLOCK={clock!r} is not an ISO date-time") from exc
        if fixed_now.tzinfo is None:
            fixed_now = fixed_now.replace(tzinfo=dt.UTC)
    base = Settings(
        max_request_bytes=_positive_int(env, "TRIALDESK_MAX_REQUEST_BYTES", None) or 8 << 20,
        hsts_seconds=_positive_int(env, "TRIALDESK_HSTS_SECONDS", None),
        fixed_now=fixed_now,
        database_url=url,
        allocation_key_file=key_file,
        user=env.get("TRIALDESK_USER") or None,
        password=env.get("TRIALDESK_PASSWORD") or None,
        totp_code=env.get("TRIALDESK_TOTP") or None,
    )
    return dataclasses.replace(base, **_access_settings(env))  # type: ignore[arg-type]


_NUMBERS: dict[str, tuple[str, type]] = {
    "TRIALDESK_SIGNIN_PAIR_ATTEMPTS": ("lockout_attempts", int),
    "TRIALDESK_SIGNIN_MAX_BACKOFF_MINUTES": ("lockout_minutes", int),
    "TRIALDESK_SIGNIN_BACKOFF_SECONDS": ("signin_backoff_seconds", int),
    "TRIALDESK_SIGNIN_CLIENT_ATTEMPTS": ("signin_client_attempts", int),
    "TRIALDESK_SIGNIN_ACCOUNT_ATTEMPTS": ("signin_account_attempts", int),
    "TRIALDESK_SIGNIN_ACCOUNT_CLIENTS": ("signin_account_clients", int),
    "TRIALDESK_SIGNIN_WINDOW_MINUTES": ("signin_window_minutes", int),
    "TRIALDESK_WEB_SESSION_HOURS": ("web_session_hours", float),
    "TRIALDESK_WEB_IDLE_MINUTES": ("web_idle_minutes", float),
    "TRIALDESK_API_TOKEN_HOURS": ("api_token_hours", float),
    "TRIALDESK_INVITATION_HOURS": ("invitation_hours", float),
    "TRIALDESK_RESET_MINUTES": ("reset_minutes", float),
    "TRIALDESK_SMTP_TIMEOUT_SECONDS": ("smtp_timeout_seconds", float),
}


def _access_settings(env: Mapping[str, str]) -> dict[str, object]:
    """Sign-in, session, mail and second-factor settings (issue 12); a bad value is one clear
    error at start-up, never a silent default."""
    out: dict[str, object] = {}
    for name, (field, kind) in _NUMBERS.items():
        raw = env.get(name)
        if not raw:
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a number") from None
        if value <= 0:
            raise ValueError(f"{name}={raw!r} must be greater than zero")
        out[field] = value
    totp = (env.get("TRIALDESK_TOTP_REQUIRED") or "").strip().lower()
    if totp:
        if totp not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            raise ValueError(f"TRIALDESK_TOTP_REQUIRED={totp!r} is not true or false")
        out["totp_required"] = totp in {"1", "true", "yes", "on"}
    smtp = env.get("TRIALDESK_SMTP_URL") or None
    if smtp is not None:
        from trialdesk.services.mail import parse_smtp_url  # validates the URL's shape

        parse_smtp_url(smtp)
        out["smtp_url"] = smtp
    if env.get("TRIALDESK_MAIL_FROM"):
        out["mail_from"] = env["TRIALDESK_MAIL_FROM"]
    if env.get("TRIALDESK_SMTP_CA_FILE"):
        out["smtp_ca_file"] = Path(env["TRIALDESK_SMTP_CA_FILE"])
    if env.get("TRIALDESK_BASE_URL"):
        base = env["TRIALDESK_BASE_URL"].rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"TRIALDESK_BASE_URL={base!r} must start with http:// or https://")
        out["base_url"] = base
    return out


def _positive_int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be 1 or more")
    return value
