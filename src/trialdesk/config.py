"""Settings, read from the environment once at start-up by :func:`load_settings`."""

from __future__ import annotations

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
    lockout_attempts: int = 5
    lockout_minutes: int = 15
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
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
    return Settings(
        max_request_bytes=_positive_int(env, "TRIALDESK_MAX_REQUEST_BYTES", None) or 8 << 20,
        hsts_seconds=_positive_int(env, "TRIALDESK_HSTS_SECONDS", None),
        fixed_now=fixed_now,
        database_url=url,
        allocation_key_file=key_file,
        user=env.get("TRIALDESK_USER") or None,
        password=env.get("TRIALDESK_PASSWORD") or None,
    )


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
