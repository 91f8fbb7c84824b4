"""E-mail through a transactional outbox (issue 12).

A mail is a row written by :func:`enqueue` in the transaction of the action that causes it
(an invitation, a reset link, a notice), so it exists exactly when the action committed. After
the commit, the runtime's :class:`MailDispatcher` delivers it over SMTP on a background
thread (the answer to the user never waits on the mail server and its time never depends on
whether a mail was written). A failure is kept with its error and retried with back-off; the
local operator lists and flushes the outbox with ``trialdesk mail``.

The body, which may hold a link, is encrypted with the installation key and dropped once the
mail is sent. Without SMTP (``TRIALDESK_SMTP_URL`` unset) mails stay in the outbox and only the
local operator reads them, through the CLI; no web page or API shows a link.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

from trialdesk.config import Settings
from trialdesk.domain.errors import NotFound, PreconditionFailed, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor
from trialdesk.services.context import ServiceContext
from trialdesk.store.records import CrcCase, Mail, Subject
from trialdesk.store.uow import UnitOfWork

MAX_ATTEMPTS = 10
CLAIM = dt.timedelta(minutes=2)
"""A sender owns a row this long, so two processes never send the same mail twice."""


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    mode: str  # plain | starttls | tls
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://host[:25]``, ``smtp+starttls://[user:pass@]host[:587]``, ``smtps://…[:465]``."""
    parts = urlsplit(url)
    modes = {"smtp": "plain", "smtp+starttls": "starttls", "smtps": "tls"}
    if parts.scheme not in modes or not parts.hostname:
        raise ValueError(
            f"TRIALDESK_SMTP_URL={url!r} is not smtp://host:port, "
            "smtp+starttls://user:pass@host:port or smtps://user:pass@host:port"
        )
    mode = modes[parts.scheme]
    try:
        port = parts.port or {"plain": 25, "starttls": 587, "tls": 465}[mode]
    except ValueError:
        raise ValueError(f"TRIALDESK_SMTP_URL={url!r} has an invalid port") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if user and mode == "plain":
        raise ValueError(
            "TRIALDESK_SMTP_URL: a user and password are sent only over TLS; "
            "use smtp+starttls:// or smtps://"
        )
    return SmtpTarget(parts.hostname, port, mode, user, password)


# --------------------------------------------------------------------------- writing


def enqueue(
    uow: UnitOfWork,
    ctx: ServiceContext,
    *,
    to: str,
    subject: str,
    body: str,
    kind: str,
    study_id: int | None = None,
) -> None:
    """Write a mail into the caller's transaction; it is sent after the commit."""
    uow.mail.add(
        study_id=study_id,
        kind=kind,
        recipient=to,
        subject=subject[:200],
        body_enc=ctx.cipher.encrypt(body),
        at=ctx.now(),
    )
    dispatcher = ctx.mail
    if dispatcher is not None:
        uow.mail.after_commit(dispatcher.wake)


def link(settings: Settings, path: str) -> str:
    return settings.base_url.rstrip("/") + path


def notify_role(
    uow: UnitOfWork,
    ctx: ServiceContext,
    study_id: int,
    role: Role,
    *,
    subject: str,
    body: str,
    kind: str,
    site_id: int | None = None,
) -> int:
    """One mail to each active holder of ``role`` with an address; how many were written."""
    sent = 0
    for address in uow.mail.addresses(study_id=study_id, role=role.value, site_id=site_id):
        enqueue(uow, ctx, to=address, subject=subject, body=body, kind=kind, study_id=study_id)
        sent += 1
    return sent


def notify_emergency_unblinding(
    uow: UnitOfWork, ctx: ServiceContext, subject_row: Subject, by: Actor
) -> int:
    """Tell the study managers that a subject was unblinded in an emergency. The mail never
    names the arm, and not the reason either (free text that could); the manager reads the
    record in trialdesk."""
    site = uow.sites.get(subject_row.site_id)
    return notify_role(
        uow,
        ctx,
        subject_row.study_id,
        Role.MANAGER,
        subject=f"trialdesk: emergency unblinding of subject {subject_row.number}",
        body=(
            f"Subject {subject_row.number} at site {site.code} was unblinded in an emergency by "
            f"{by.full_name} ({by.username}) at {ctx.now().isoformat(timespec='minutes')}.\n\n"
            "The allocation is not part of this message. The reason and the signature are in "
            f"the subject's record:\n{link(ctx.settings, '/subjects/' + subject_row.number)}\n"
        ),
        kind="emergency_unblinding",
    )


def notify_crc_case(uow: UnitOfWork, ctx: ServiceContext, case: CrcCase, number: str) -> int:
    """Tell the CRC members that a case entered their queue (never an arm)."""
    what = "eligibility review" if case.kind == "eligibility" else "additional-therapy review"
    return notify_role(
        uow,
        ctx,
        case.study_id,
        Role.CRC,
        subject=f"trialdesk: CRC case {case.id} ({what}) for subject {number}",
        body=(
            f"A {what} for subject {number} entered the CRC queue.\n\n"
            f"Review it at {link(ctx.settings, '/crc')}\n"
        ),
        kind="crc_case",
    )


# --------------------------------------------------------------------------- delivery


def _context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.smtp_ca_file is not None:
        context.load_verify_locations(cafile=str(settings.smtp_ca_file))
    return context


def send_one(settings: Settings, to: str, subject: str, body: str) -> None:
    """One SMTP conversation; raises on any failure (the caller keeps the mail)."""
    if settings.smtp_url is None:
        raise PreconditionFailed("no SMTP server is configured (TRIALDESK_SMTP_URL)")
    target = parse_smtp_url(settings.smtp_url)
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2] or None)
    message.set_content(body)
    timeout = settings.smtp_timeout_seconds
    smtp: smtplib.SMTP
    if target.mode == "tls":
        smtp = smtplib.SMTP_SSL(
            target.host, target.port, timeout=timeout, context=_context(settings)
        )
    else:
        smtp = smtplib.SMTP(target.host, target.port, timeout=timeout)
    with smtp:
        if target.mode == "starttls":
            smtp.starttls(context=_context(settings))
        if target.username:
            smtp.login(target.username, target.password or "")
        smtp.send_message(message)


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    waiting: int


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def deliver_pending(ctx: ServiceContext, *, force: bool = False) -> DeliveryReport:
    """Send every mail that is due (``force``: also those backing off or given up on)."""
    settings = ctx.settings
    if settings.smtp_url is None:
        return DeliveryReport(0, 0, _waiting(ctx))
    sent = failed = 0
    now = ctx.now()
    with ctx.uow(readonly=True) as uow:
        due = uow.mail_delivery.due(now, max_attempts=MAX_ATTEMPTS, force=force)
    for mail_id in due:
        claimed = _claim(ctx, mail_id)
        if claimed is None:
            continue
        to, subject, body = claimed
        try:
            send_one(settings, to, subject, body)
        except Exception as exc:  # any failure: the mail stays, with its error, for a retry
            _failed(ctx, mail_id, f"{exc.__class__.__name__}: {exc}"[:500])
            failed += 1
        else:
            _sent(ctx, mail_id)
            sent += 1
    return DeliveryReport(sent, failed, _waiting(ctx))


def _claim(ctx: ServiceContext, mail_id: int) -> tuple[str, str, str] | None:
    now = ctx.now()
    with ctx.uow() as uow:
        row = uow.mail_delivery.claim(mail_id, now, now + CLAIM)
        if row is None:
            return None
        assert row.body_enc is not None
        out = (row.recipient, row.subject, ctx.cipher.decrypt(row.body_enc))
        uow.commit()
        return out


def _sent(ctx: ServiceContext, mail_id: int) -> None:
    with ctx.uow() as uow:
        row = uow.mail_delivery.get(mail_id)
        assert row is not None
        uow.mail_delivery.update(
            mail_id,
            {
                "sent_at": ctx.now(),
                "attempts": row.attempts + 1,
                "body_enc": None,  # a delivered link no longer sits in the database
                "claimed_until": None,
                "last_error": None,
            },
        )
        uow.commit()


def _failed(ctx: ServiceContext, mail_id: int, error: str) -> None:
    now = ctx.now()
    with ctx.uow() as uow:
        row = uow.mail_delivery.get(mail_id)
        assert row is not None
        attempts = row.attempts + 1
        uow.mail_delivery.update(
            mail_id,
            {
                "attempts": attempts,
                "last_error": error,
                "claimed_until": None,
                "next_attempt_at": now + dt.timedelta(minutes=min(2 ** (attempts - 1), 60)),
            },
        )
        uow.commit()


def _waiting(ctx: ServiceContext) -> int:
    with ctx.uow(readonly=True) as uow:
        return uow.mail_delivery.waiting()


class MailDispatcher:
    """Delivers the outbox on one daemon thread, woken after each commit that wrote a mail
    and every ``poll`` seconds for retries. :meth:`drain` waits until nothing is due."""

    def __init__(self, ctx: ServiceContext, *, poll: float = 60.0) -> None:
        self._ctx = ctx
        self._poll = poll
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors: list[str] = []

    def wake(self) -> None:
        with self._lock:
            self._idle.clear()
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="trialdesk-mail", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self._wake.clear()
            try:
                deliver_pending(self._ctx)
            except Exception as exc:  # keep delivering; the outbox keeps the mail
                self.errors.append(f"{exc.__class__.__name__}: {exc}")
            with self._lock:
                if not self._wake.is_set():
                    self._idle.set()
            self._wake.wait(self._poll)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the mails written so far were tried; False at the timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


# --------------------------------------------------------------------------- the operator


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    kind: str
    recipient: str
    subject: str
    created_at: str
    status: str  # waiting | failed | sent
    attempts: int
    last_error: str | None
    body: str | None = None
    """Shown to the local operator only (``trialdesk mail show``)."""


def _require_operator(actor: Actor, what: str) -> None:
    if not actor.operator:
        raise PreconditionFailed(f"{what} is for the local operator (trialdesk mail)")


def _entry(ctx: ServiceContext, row: Mail, *, with_body: bool) -> OutboxEntry:
    status = "sent" if row.sent_at else "failed" if row.last_error else "waiting"
    body = None
    if with_body and row.body_enc is not None:
        body = ctx.cipher.decrypt(row.body_enc)
    return OutboxEntry(
        id=row.id,
        kind=row.kind,
        recipient=row.recipient,
        subject=row.subject,
        created_at=_utc(row.created_at).isoformat(),
        status=status,
        attempts=row.attempts,
        last_error=row.last_error,
        body=body,
    )


def list_outbox(
    ctx: ServiceContext, actor: Actor, *, unsent_only: bool = True
) -> list[OutboxEntry]:
    """The outbox for the local operator, oldest first; bodies are shown by :func:`show_mail`."""
    _require_operator(actor, "the mail outbox")
    with ctx.uow(readonly=True) as uow:
        rows = uow.mail_delivery.listing(unsent_only=unsent_only)
        return [_entry(ctx, row, with_body=False) for row in rows]


def show_mail(ctx: ServiceContext, actor: Actor, mail_id: int) -> OutboxEntry:
    """One mail with its body (its link), for the local operator to pass on by hand when no
    SMTP server is configured."""
    _require_operator(actor, "reading a mail")
    with ctx.uow(readonly=True) as uow:
        row = uow.mail_delivery.get(mail_id)
        if row is None:
            raise NotFound(f"mail {mail_id} not found")
        return _entry(ctx, row, with_body=True)


def flush_outbox(ctx: ServiceContext, actor: Actor) -> DeliveryReport:
    """Send every unsent mail now, also those backing off after failures."""
    _require_operator(actor, "flushing the mail outbox")
    if ctx.settings.smtp_url is None:
        raise PreconditionFailed(
            "no SMTP server is configured (TRIALDESK_SMTP_URL); read the waiting mails with "
            "'trialdesk mail list' and 'trialdesk mail show ID'",
            reason="no-smtp",
        )
    return deliver_pending(ctx, force=True)


def check_address(value: str) -> str:
    """A plausible e-mail address, lower-cased (a person has one account per address)."""
    address = value.strip().lower()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain
        or len(address) > 80
        or not address.isascii()
        or any(c.isspace() or not c.isprintable() or c in "<>,;\"'\\()[]:" for c in address)
    ):
        raise ValidationFailed(
            f"{value.strip()!r} is not an e-mail address (up to 80 characters)",
            {"email": "not an e-mail address"},
        )
    return address
