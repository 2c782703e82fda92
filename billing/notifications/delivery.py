"""Turning a notification row into an email and handing it over: SMTP, or ``.eml`` files by default.

``BILLING_SMTP_URL`` (``smtp://`` or ``smtps://``, with optional ``user:password@``) sends
through that server; without it each email is written to ``<data dir>/outbox/<id>.eml``,
atomically (a temporary file renamed into place), so a rewrite after a crash replaces the file
instead of adding a second one. The Message-ID is derived from the notification id, so that
receivers can drop the copy that the one unavoidable window (see ``dispatch.py``) may produce.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import os
from dataclasses import dataclass
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib import SMTPStatus

from billing.core.settings import Settings

SMTP_TIMEOUT_SECONDS = 30.0
OUTBOX_DIR = "outbox"


class DeliveryError(Exception):
    """A send that failed; ``permanent`` when retrying the same email cannot help (a 5xx refusal)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Email:
    notification_id: str
    sender: str  # the envelope sender (MAIL FROM)
    recipient: str
    data: bytes  # the whole message, CRLF line ends


class Transport(Protocol):
    async def send(self, email: Email) -> None: ...

    async def close(self) -> None: ...


def message_id(notification_id: str, from_address: str) -> str:
    return f"<{notification_id}@{_address_of(from_address).rpartition('@')[2] or 'localhost'}>"


@functools.lru_cache(maxsize=1024)
def _address_of(header_value: str) -> str:
    return parseaddr(header_value)[1]


def build_email(row: Any) -> Email:
    """The email of a notification row, from the row only, so that building it again gives the
    same bytes: text and HTML alternatives, quoted-printable.

    Assembled here rather than with ``email.message.EmailMessage``, which takes about 1.5 ms of
    CPU per email (its pure-Python quoted-printable and header machinery); this takes a tenth.
    The addresses are ASCII (``queue._address`` refuses others), so only the subject may need
    RFC 2047 encoding.
    """
    boundary = f"=_{row.id}"  # "=_" cannot occur in quoted-printable text
    headers = [
        ("From", row.from_address),
        ("To", row.to_address),
        ("Reply-To", row.reply_to),
        ("Subject", _encoded(row.subject)),
        ("Date", format_datetime(row.created_at)),
        ("Message-ID", message_id(row.id, row.from_address)),
        ("MIME-Version", "1.0"),
        ("Auto-Submitted", "auto-generated"),
        ("X-Billing-Notification-Id", row.id),
        ("X-Billing-Notification-Kind", row.kind),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    lines = [f"{name}: {value}" for name, value in headers if value]
    head = "\r\n".join(lines).encode("ascii")
    body = b"".join(
        _part(boundary, subtype, content) for subtype, content in (("plain", row.text), ("html", row.html))
    )
    data = head + b"\r\n\r\n" + body + f"--{boundary}--\r\n".encode()
    return Email(row.id, _address_of(row.from_address), row.to_address, data)


def _encoded(value: str) -> str:
    """A header value as RFC 2047 encoded words when it is not ASCII: base64 of at most 45 bytes
    each (75 characters, the RFC's limit), never splitting a character, one per folded line."""
    if value.isascii():
        return value
    words, chunk = [], b""
    for char in value:
        encoded = char.encode()
        if len(chunk) + len(encoded) > 45:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(word).decode()}?=" for word in words)


def _part(boundary: str, subtype: str, content: str) -> bytes:
    text = "\r\n".join(content.splitlines()) + "\r\n"
    encoded = binascii.b2a_qp(text.encode(), istext=True)
    return (
        f"--{boundary}\r\nContent-Type: text/{subtype}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode() + encoded


def open_transport(settings: Settings) -> Transport:
    if settings.smtp_url:
        return SmtpTransport(settings.smtp_url)
    return EmlTransport(settings.data_dir / OUTBOX_DIR)


class EmlTransport:
    """Writes ``<dir>/<notification id>.eml``; the file is complete or absent, never partial."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, email: Email) -> None:
        try:
            await asyncio.to_thread(self._write, email.notification_id, email.data)
        except OSError as exc:
            raise DeliveryError(f"cannot write the .eml file: {exc.strerror or exc}") from exc

    def _write(self, notification_id: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{notification_id}.eml"
        draft = self.directory / f".{notification_id}.{os.getpid()}.tmp"
        with open(draft, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(draft, final)

    async def close(self) -> None:
        return None


class SmtpTransport:
    """One SMTP connection, opened on first use and reused; reopened after an error.

    Once connecting has failed, every later send fails at once with the same error, so that a
    server that is down costs one timeout per batch, not one per email.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._options: dict[str, Any] = {
            "hostname": parts.hostname,
            "port": parts.port or (465 if parts.scheme == "smtps" else 25),
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "use_tls": parts.scheme == "smtps",
            "timeout": SMTP_TIMEOUT_SECONDS,
        }
        self._client: aiosmtplib.SMTP | None = None
        self._unreachable: DeliveryError | None = None

    async def send(self, email: Email) -> None:
        client = await self._connected()
        try:
            await _mail_transaction(client, email)
        except aiosmtplib.SMTPException as exc:
            await self.close()
            raise _classify(exc) from exc
        except OSError as exc:
            await self.close()
            raise DeliveryError(f"SMTP connection failed: {type(exc).__name__}") from exc

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._unreachable is not None:
            raise self._unreachable
        if self._client is not None and self._client.is_connected:
            return self._client
        client = aiosmtplib.SMTP(**self._options)
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:  # connect() greets only to log in or for STARTTLS
                await _greet(client)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._unreachable = DeliveryError(f"cannot connect to the SMTP server: {_describe(exc)}")
            raise self._unreachable from exc
        self._client = client
        return client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


async def _greet(client: aiosmtplib.SMTP) -> None:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


async def _mail_transaction(client: aiosmtplib.SMTP, email: Email) -> None:
    """MAIL, RCPT and DATA: ``sendmail`` without its parsing of the addresses (twice each, a
    tenth of the CPU of a send), which were checked when the email was queued. One deadline
    for the whole exchange rather than a timer per reply."""
    sender, recipient = _envelope(email.sender), _envelope(email.recipient)
    async with asyncio.timeout(SMTP_TIMEOUT_SECONDS):
        reply = await client.execute_command(b"MAIL", b"FROM:<" + sender + b">", timeout=None)
        if reply.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, email.sender)
        reply = await client.execute_command(b"RCPT", b"TO:<" + recipient + b">", timeout=None)
        if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, email.recipient)
        await client.data(email.data, timeout=None)


def _envelope(address: str) -> bytes:
    if not address.isascii() or any(char in address for char in "<>\r\n "):
        raise DeliveryError(f"not an address for the SMTP envelope: '{address}'", permanent=True)
    return address.encode("ascii")


def _classify(exc: aiosmtplib.SMTPException) -> DeliveryError:
    """5xx refusals of this recipient or this message are permanent; anything else may pass later
    (4xx, a dropped connection, and also 5xx about the sender or login, which an operator fixes)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return DeliveryError(
            f"recipient refused: {exc.code} {exc.message}"[:500], permanent=500 <= exc.code < 600
        )
    permanent = isinstance(exc, aiosmtplib.SMTPDataError) and 500 <= exc.code < 600
    return DeliveryError(_describe(exc), permanent=permanent)


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    detail = getattr(exc, "message", None) or str(exc)
    text = f"{type(exc).__name__}: {code} {detail}" if code else f"{type(exc).__name__}: {detail}"
    return text[:500]
