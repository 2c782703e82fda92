"""Standard Webhooks signatures (https://www.standardwebhooks.com), made by its reference library."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature(signing_secrets: Sequence[str], msg_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64>`` for each secret, space separated (two while a rotated secret is still valid)."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(secret).sign(msg_id, when, body) for secret in signing_secrets)


def headers(signing_secrets: Sequence[str], msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(signing_secrets, msg_id, timestamp, body),
    }
