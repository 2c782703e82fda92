"""Encryption at rest for provider secrets (Stripe keys, webhook secrets).

``BILLING_SECRET_KEY`` may list several keys separated by commas: the first encrypts, all
decrypt, so keys can be rotated without losing stored secrets.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRETS_AT_REST = b"billing:secrets-at-rest:v1"


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def _fernet_key(secret: str, purpose: bytes) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret.encode())
    return base64.urlsafe_b64encode(derived)


class SecretBox:
    """Authenticated encryption under keys derived for one ``purpose``, so that a token made for
    one use (a session cookie) never decrypts as another (a stored secret)."""

    def __init__(self, secret_keys: Sequence[str], *, purpose: bytes = SECRETS_AT_REST) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is required")
        self._fernet = MultiFernet([Fernet(_fernet_key(key, purpose)) for key in secret_keys])

    def __repr__(self) -> str:
        return "SecretBox(<redacted>)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise SecretDecryptionError("stored secret cannot be decrypted with BILLING_SECRET_KEY") from exc

    def encrypt_at(self, plaintext: str, at: datetime) -> str:
        """A token stamped with ``at`` (the service's clock, not the machine's)."""
        return self._fernet.encrypt_at_time(plaintext.encode(), int(at.timestamp())).decode("ascii")

    def decrypt_fresh(self, token: str, *, at: datetime, max_age_seconds: int) -> str:
        """The plaintext of a token stamped at most ``max_age_seconds`` before ``at``."""
        try:
            return self._fernet.decrypt_at_time(
                token.encode("ascii"), max_age_seconds, int(at.timestamp())
            ).decode()
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise SecretDecryptionError("token is invalid or expired") from exc
