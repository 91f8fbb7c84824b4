"""Sign-in and re-authentication for e-signatures (SIG-1), hardened against enumeration and
lock-out (issue 12).

- One answer for every refused sign-in: an unknown name, a wrong password, an inactive
  account and a name that is backing off after failures get the same error, message and
  status, and argon2 runs in each case (against a dummy hash with the installation's cost
  settings when there is no real one), so neither the text nor the time tells them apart.
- Failures are counted per client, per (client, name) and per name whether or not the name
  exists (:mod:`trialdesk.store.identity`). A pair backs off exponentially after
  ``lockout_attempts`` failures; a client after ``signin_client_attempts``; a name backs off
  for everyone only after ``signin_account_attempts`` failures from at least
  ``signin_account_clients`` clients, and even then not for a client that signed in as it
  before, so a stranger cannot lock the implanting team out on a procedure day.
- A TOTP second factor (pyotp) when the user enrolled one; administrators and holders of
  unblinded roles must enrol when ``totp_required`` is set (their sessions are good for
  enrolment only until they do).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from functools import lru_cache

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from trialdesk.config import Settings
from trialdesk.domain.errors import AuthenticationFailed, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, Grant
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry, utc_iso
from trialdesk.store.identity import (
    client_signed_in_before,
    failing_clients,
    peek_rows,
    prune,
    signature_failures_since,
    throttle_rows,
)
from trialdesk.store.tables import RoleGrantRow, SignInThrottleRow, UserRow
from trialdesk.store.uow import UnitOfWork

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
SIGN_IN_REFUSED = (
    "sign-in refused: wrong username or password, or too many failed attempts "
    "(wait a few minutes before trying again)"
)
"""The one message of every refused sign-in (unknown, wrong, inactive, backing off)."""
CODE_REQUIRED = "enter the current 6-digit code of your authenticator app (TOTP)"
SIGNATURE_REFUSED = "wrong username or password: the signature was not made"
UNBLINDED_ROLES: frozenset[Role] = frozenset({Role.STATISTICIAN, Role.DSMB, Role.IMPLANTER})
"""Roles that see arms (SYSTEM.md §1)."""
KNOWN_CLIENT_DAYS = 30
"""A client that signed in as a name within this many days is not held back with strangers."""


@lru_cache(maxsize=4)
def _hasher(time_cost: int = 3, memory_kib: int = 65536) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)


@lru_cache(maxsize=4)
def _dummy_hash(time_cost: int, memory_kib: int) -> str:
    """A hash of a random password with the installation's parameters: verifying against it
    costs what verifying a real one does."""
    return _hasher(time_cost, memory_kib).hash(secrets.token_urlsafe(16))


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters",
            {"password": "too short"},
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"a password has at most {MAX_PASSWORD_LENGTH} characters", {"password": "too long"}
        )


def hash_password(ctx: ServiceContext, password: str) -> str:
    """argon2id with the installation's cost settings (verification reads them from the hash)."""
    check_password_rules(password)
    s = ctx.settings
    return _hasher(s.argon2_time_cost, s.argon2_memory_kib).hash(password)


def _verify(settings: Settings, stored: str | None, password: str) -> bool:
    """argon2 always runs once: against ``stored`` or, without one, the dummy hash."""
    target = stored or _dummy_hash(settings.argon2_time_cost, settings.argon2_memory_kib)
    ok: bool
    try:
        ok = _hasher().verify(target, password[:MAX_PASSWORD_LENGTH])
    except (VerificationError, InvalidHashError):
        ok = False
    return ok and stored is not None


def load_actor(session: Session, row: UserRow) -> Actor:
    grants = frozenset(
        Grant(role=Role(g.role), study_id=g.study_id, site_id=g.site_id)
        for g in session.scalars(select(RoleGrantRow).where(RoleGrantRow.user_id == row.id))
    )
    return Actor(username=row.username, full_name=row.full_name, user_id=row.id, grants=grants)


def _as_utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def normalized_name(username: str) -> str:
    return username.strip().lower()[:254]


def totp_required_for(settings: Settings, actor: Actor) -> bool:
    """Administrators and holders of unblinded roles, when the installation requires it."""
    if not settings.totp_required or actor.operator:
        return False
    return any(g.role is Role.ADMIN or g.role in UNBLINDED_ROLES for g in actor.grants)


# --------------------------------------------------------------------------- throttling


def _keys(client: str, name: str) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (f"client:{client}", "client", client, None),
        (f"pair:{client}|{name}", "pair", client, name),
        (f"name:{name}", "name", None, name),
    ]


def _blocked_until(row: SignInThrottleRow | None, now: dt.datetime) -> dt.datetime | None:
    if row is None or row.blocked_until is None:
        return None
    until = _as_utc(row.blocked_until)
    return until if until > now else None


def _backing_off(
    rows: dict[str, SignInThrottleRow], client: str, name: str, now: dt.datetime, known: bool
) -> bool:
    """The pair's own back-off always applies; the client's (many names tried from one
    address, e.g. a hospital's shared one) and the name's (many clients) do not hold back a
    client that signed in as this user before (``known``)."""
    if _blocked_until(rows.get(f"pair:{client}|{name}"), now):
        return True
    if known:
        return False
    return bool(
        _blocked_until(rows.get(f"client:{client}"), now)
        or _blocked_until(rows.get(f"name:{name}"), now)
    )


def _backoff(settings: Settings, over: int) -> dt.timedelta:
    """Exponential back-off after the threshold, capped at ``lockout_minutes``."""
    seconds = settings.signin_backoff_seconds * (2 ** min(max(over, 0), 20))
    return dt.timedelta(seconds=min(seconds, settings.lockout_minutes * 60))


def _count_failure(
    uow: UnitOfWork, settings: Settings, client: str, name: str, now: dt.datetime
) -> dict[str, int]:
    window = dt.timedelta(minutes=settings.signin_window_minutes)
    prune(uow.session, now - window, now)
    rows = throttle_rows(uow.session, _keys(client, name))
    counts: dict[str, int] = {}
    for row in rows.values():
        if row.last_failure_at is None or _as_utc(row.last_failure_at) < now - window:
            row.failures = 0
            row.first_failure_at = now
        row.failures += 1
        row.last_failure_at = now
        counts[row.kind] = row.failures
        threshold = {
            "client": settings.signin_client_attempts,
            "pair": settings.lockout_attempts,
            "name": settings.signin_account_attempts,
        }[row.kind]
        if row.failures < threshold:
            continue
        if row.kind == "name":
            uow.session.flush()
            clients = failing_clients(uow.session, name, now - window)
            if clients < settings.signin_account_clients:
                continue
        row.blocked_until = now + _backoff(settings, row.failures - threshold)
    return counts


def _count_success(uow: UnitOfWork, client: str, name: str) -> None:
    """A success ends the pair's own failures; nothing is written when there were none (a
    sign-in is not a write of its own; the client is remembered by its session)."""
    key = f"pair:{client}|{name}"
    pair = peek_rows(uow.session, [key]).get(key)
    if pair is not None and (pair.failures or pair.blocked_until is not None):
        pair.failures = 0
        pair.blocked_until = None


def clear_throttle(uow: UnitOfWork, username: str) -> int:
    """Forget the back-off of a name (after a password reset, or by an administrator);
    how many records were cleared."""
    name = normalized_name(username)
    rows = uow.session.scalars(
        select(SignInThrottleRow).where(
            SignInThrottleRow.name == name, SignInThrottleRow.kind.in_(("pair", "name"))
        )
    ).all()
    for row in rows:
        row.failures = 0
        row.blocked_until = None
    return len(rows)


def throttled_until(uow: UnitOfWork, username: str, now: dt.datetime) -> dt.datetime | None:
    """The latest end of a back-off running for the name, from any client or for all new
    clients (for the administrator's list)."""
    name = normalized_name(username)
    rows = uow.session.scalars(
        select(SignInThrottleRow).where(
            SignInThrottleRow.name == name, SignInThrottleRow.kind.in_(("pair", "name"))
        )
    ).all()
    ends = [u for u in (_blocked_until(r, now) for r in rows) if u is not None]
    return max(ends) if ends else None


# --------------------------------------------------------------------------- sign-in


@dataclass(frozen=True)
class SignedIn:
    actor: Actor
    must_enrol_totp: bool = False
    """The user's roles need a second factor and none is enrolled: enrolment only."""


def _totp_step(
    settings: Settings, secret: str, code: str, last: int | None, now: dt.datetime
) -> int | None:
    """The time step ``code`` belongs to (now, or one step either side), never one already
    used; None when it does not match."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    step = int(now.timestamp()) // totp.interval
    for candidate in (step, step - 1, step + 1):
        if last is not None and candidate <= last:
            continue
        expected = totp.at(candidate * totp.interval)
        if secrets.compare_digest(expected, code):
            return candidate
    return None


def _refusal_entry(
    now: dt.datetime, username: str, row: UserRow | None, kind: str, new: dict[str, object]
) -> PendingEntry:
    name = (username.strip() or "?")[:80]
    return PendingEntry(
        stream=f"user:{row.id}" if row is not None else "auth",
        at=now,
        actor=row.username if row is not None else name,
        action=f"{kind}_failed",
        entity="user",
        entity_id=row.username if row is not None else name,
        new=new,
    )


def sign_in(
    ctx: ServiceContext,
    username: str,
    password: str,
    *,
    client: str | None = None,
    totp: str | None = None,
) -> SignedIn:
    """Check name, password (and code); every refusal is :data:`SIGN_IN_REFUSED`, audited as
    ``sign_in_failed`` on the user's stream (or the ``auth`` stream for an unknown name)."""
    settings = ctx.settings
    now = ctx.now()
    client = (client or "local")[:100]
    name = normalized_name(username)
    with ctx.uow() as uow:
        row = None
        if name:
            row = uow.session.scalars(  # locked: a TOTP code is accepted once, even at once
                select(UserRow).where(UserRow.username == username.strip()).with_for_update()
            ).one_or_none()
        known = client_signed_in_before(
            uow.session,
            row.id if row is not None else None,
            client,
            now - dt.timedelta(days=KNOWN_CLIENT_DAYS),
        )
        rows = peek_rows(uow.session, [k for k, *_ in _keys(client, name)])
        held = _backing_off(rows, client, name, now, known)
        usable = row is not None and row.active
        password_ok = _verify(settings, row.password_hash if usable and row else None, password)
        if held or not password_ok:
            reason = (
                "backing off" if held else "wrong password" if usable else "unknown or inactive"
            )
            new: dict[str, object] = {"reason": reason, "client": client}
            if not held:
                new["failures"] = _count_failure(uow, settings, client, name, now)
            uow.record(_refusal_entry(now, username, row if usable else None, "sign_in", new))
            uow.commit()
            raise AuthenticationFailed(SIGN_IN_REFUSED)
        assert row is not None
        if row.totp_enabled_at is not None and row.totp_secret_enc is not None:
            secret = ctx.cipher.decrypt(row.totp_secret_enc)
            step = _totp_step(settings, secret, totp or "", row.totp_last_step, now)
            if step is None:
                missing = not (totp or "").strip()
                new = {"reason": "code missing" if missing else "wrong code", "client": client}
                if not missing:
                    new["failures"] = _count_failure(uow, settings, client, name, now)
                uow.record(_refusal_entry(now, username, row, "sign_in", new))
                uow.commit()
                raise AuthenticationFailed(CODE_REQUIRED)
            row.totp_last_step = step
        actor = load_actor(uow.session, row)
        _count_success(uow, client, name)
        uow.commit()
    enrol = totp_required_for(settings, actor) and row.totp_enabled_at is None
    return SignedIn(actor=actor, must_enrol_totp=enrol)


def authenticate(
    ctx: ServiceContext,
    username: str,
    password: str,
    *,
    client: str | None = None,
    totp: str | None = None,
) -> Actor:
    """Sign in for full use; a user who must still enrol a second factor is refused with the
    way to do it (the enrolment commands use :func:`sign_in` directly)."""
    signed = sign_in(ctx, username, password, client=client, totp=totp)
    if signed.must_enrol_totp:
        raise AuthenticationFailed(
            "your roles need a second factor (TOTP): enrol one first "
            "('trialdesk me totp-enrol', or the account page after signing in)"
        )
    return signed.actor


def reauthenticate(ctx: ServiceContext, actor: Actor, password: str, *, meaning: str) -> None:
    """Re-enter the password for an e-signature (SIG-1). A wrong one is audited as
    ``signature_failed`` with the meaning; after ``lockout_attempts`` of them within the
    window the signer backs off exponentially (counted from those audit entries, so no row of
    its own; never a lock of the sign-in, so nobody is locked out by their own typing)."""
    if actor.operator:
        raise AuthenticationFailed("the local operator cannot sign records")
    settings = ctx.settings
    now = ctx.now()
    window = dt.timedelta(minutes=settings.signin_window_minutes)
    with ctx.uow() as uow:
        row = uow.session.get(UserRow, actor.user_id) if actor.user_id is not None else None
        failures = (
            sorted(signature_failures_since(uow.session, row.id, utc_iso(now - window)))
            if row is not None
            else []
        )
        over = len(failures) - settings.lockout_attempts
        held = False
        if over >= 0:
            last = dt.datetime.fromisoformat(failures[-1].replace("Z", "+00:00"))
            held = last + _backoff(settings, over) > now
        usable = row is not None and row.active
        ok = _verify(settings, row.password_hash if usable and row else None, password)
        if ok and not held:
            return
        new: dict[str, object] = {"meaning": meaning}
        if held:
            new["reason"] = "backing off"
        new["failures"] = len(failures) + 1
        uow.record(
            PendingEntry(
                stream=f"user:{actor.user_id}",
                at=now,
                actor=actor.username,
                action="signature_failed",
                entity="user",
                entity_id=actor.username,
                new=new,
            )
        )
        uow.commit()
    raise AuthenticationFailed(SIGNATURE_REFUSED)
