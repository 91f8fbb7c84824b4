"""Encryption of allocations at rest (RAND-6), with Fernet (AES-128-CBC + HMAC-SHA256).

Each encryption uses a fresh IV, so two equal arms never give equal ciphertexts and a
database reader learns nothing by comparing rows.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from trialdesk.domain.errors import PreconditionFailed


def create_key_file(path: Path) -> bool:
    """Create the allocation key if absent (readable by its owner only); True if created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(Fernet.generate_key())
    return True


class AllocationCipher:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fernet: Fernet | None = None

    @classmethod
    def from_file(cls, path: Path) -> AllocationCipher:
        return cls(path)

    def _get(self) -> Fernet:
        if self._fernet is None:
            try:
                key = self.path.read_bytes().strip()
                self._fernet = Fernet(key)
            except (OSError, ValueError) as exc:
                raise PreconditionFailed(
                    f"allocation key file {self.path} is missing or unreadable "
                    "(run 'trialdesk init' or set TRIALDESK_ALLOCATION_KEY_FILE)",
                    reason="allocation-key-missing",
                ) from exc
        return self._fernet

    def encrypt(self, arm: str) -> bytes:
        return self._get().encrypt(arm.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._get().decrypt(bytes(token)).decode("utf-8")
        except InvalidToken as exc:
            raise PreconditionFailed(
                "an allocation could not be decrypted with this key file",
                reason="allocation-key-wrong",
            ) from exc
