"""Encryption at rest for provider secrets (Stripe keys, webhook secrets).

``BILLING_SECRET_KEY`` may list several keys separated by commas: the first encrypts, all
decrypt, so keys can be rotated without losing stored secrets.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"billing:secrets-at-rest:v1"


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def _fernet_key(secret: str) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())
    return base64.urlsafe_b64encode(derived)


class SecretBox:
    def __init__(self, secret_keys: Sequence[str]) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is required")
        self._fernet = MultiFernet([Fernet(_fernet_key(key)) for key in secret_keys])

    def __repr__(self) -> str:
        return "SecretBox(<redacted>)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise SecretDecryptionError("stored secret cannot be decrypted with BILLING_SECRET_KEY") from exc
