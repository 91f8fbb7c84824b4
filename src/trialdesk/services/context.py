"""What every service function needs, passed in (never global)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from trialdesk.config import Settings
from trialdesk.protocol.loader import LoadedProtocol, parse_protocol
from trialdesk.services.crypto import AllocationCipher
from trialdesk.store.ports import UnitOfWorkFactory


class Waker(Protocol):
    def wake(self) -> None: ...


@dataclass
class ServiceContext:
    uow: UnitOfWorkFactory
    clock: Callable[[], dt.datetime]
    cipher: AllocationCipher
    settings: Settings
    _protocols: dict[str, LoadedProtocol] = field(default_factory=dict)
    memo: dict[str, object] = field(default_factory=dict)
    """Per-process facts read once from the database (e.g. its connection limit)."""
    mail: Waker | None = None
    """Delivers the mail outbox after commits (services.mail.MailDispatcher), when SMTP is
    configured; None: mails wait for the local operator."""

    def now(self) -> dt.datetime:
        moment = self.clock()
        if moment.tzinfo is None:
            raise ValueError("the clock must return timezone-aware datetimes")
        return moment

    def remember_protocol(self, loaded: LoadedProtocol) -> None:
        """Keep a protocol parsed elsewhere (a file just loaded, a test's flagship) so that it
        is not parsed again."""
        self._protocols.setdefault(loaded.sha256, loaded)

    def cached_protocol(self, sha256: str) -> LoadedProtocol | None:
        """A protocol this process has parsed already, so its text need not be read again."""
        return self._protocols.get(sha256)

    def protocol(self, sha256: str, text: str) -> LoadedProtocol:
        """Parse a stored protocol once per process (keyed by its SHA-256)."""
        loaded = self._protocols.get(sha256)
        if loaded is None:
            loaded = parse_protocol(text, source=f"stored protocol {sha256[:12]}")
            self._protocols[sha256] = loaded
        return loaded
