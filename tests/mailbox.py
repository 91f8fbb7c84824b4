"""Reading mails in tests: from the outbox as the local operator (no SMTP configured), and
from a real SMTP server on loopback (aiosmtpd) that keeps every message it receives."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import queue
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from trialdesk.services.access import operator_actor
from trialdesk.services.context import ServiceContext
from trialdesk.services.mail import list_outbox, show_mail

LINK = re.compile(r"https?://\S+/account/(?:invitation|reset)/[A-Za-z0-9_\-]+")


def links_in(text: str) -> list[str]:
    return LINK.findall(text)


def token_of(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[-1]


def outbox_mails(ctx: ServiceContext, to: str | None = None, kind: str | None = None) -> list[str]:
    """Bodies of unsent mails (the local operator's view), oldest first."""
    op = operator_actor()
    out = []
    for row in list_outbox(ctx, op):
        if (to is None or row.recipient == to) and (kind is None or row.kind == kind):
            body = show_mail(ctx, op, row.id).body
            assert body is not None
            out.append(body)
    return out


def outbox_link(ctx: ServiceContext, to: str, kind: str) -> str:
    """The link of the newest unsent mail of ``kind`` to ``to``."""
    bodies = outbox_mails(ctx, to, kind)
    assert bodies, f"no {kind} mail to {to} in the outbox"
    found = links_in(bodies[-1])
    assert len(found) == 1, bodies[-1]
    return found[0]


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())


@dataclass
class MailServer:
    """An aiosmtpd server on 127.0.0.1 that queues every message."""

    port: int
    inbox: queue.Queue[Received] = field(default_factory=queue.Queue)
    auth: list[tuple[str, str]] = field(default_factory=list)

    def next(self, timeout: float = 20.0) -> Received:
        """The next message, waiting for it (an event, not a fixed sleep)."""
        return self.inbox.get(timeout=timeout)

    def take(self, count: int, timeout: float = 20.0) -> list[Received]:
        return [self.next(timeout) for _ in range(count)]

    def empty(self) -> bool:
        return self.inbox.empty()


class _Handler:
    def __init__(self, server: MailServer) -> None:
        self.server = server

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.server.inbox.put(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 made with ``cryptography`` (no network, no CA)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp.crt", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def smtp_server(
    *, tls_folder: Path | None = None, login: tuple[str, str] | None = None
) -> Iterator[MailServer]:
    """A real SMTP server on loopback; with ``tls_folder`` it offers STARTTLS (and AUTH, when
    ``login`` is given, only after STARTTLS)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from tests.server import free_port

    server = MailServer(port=free_port())
    kwargs: dict[str, Any] = {}
    if tls_folder is not None:
        cert, key = self_signed(tls_folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        kwargs.update(tls_context=context, require_starttls=True)
    if login is not None:

        def authenticator(_s: Any, _sess: Any, _env: Any, _mech: str, data: Any) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and (
                    data.login.decode(),
                    data.password.decode(),
                )
                == login
            )
            if ok:
                server.auth.append(login)
            return AuthResult(success=ok)

        kwargs.update(authenticator=authenticator, auth_required=True)
    controller = Controller(_Handler(server), hostname="127.0.0.1", port=server.port, **kwargs)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


def accept_from_outbox(ctx: ServiceContext, address: str, password: str) -> str:
    """Play the owner of ``address``: use the newest invitation link mailed to it."""
    from trialdesk.services.accounts import accept_invitation

    link = outbox_link(ctx, address, "invitation")
    return accept_invitation(ctx, token_of(link), password).username
