"""Where webhooks may go. In production: https only, never a loopback, private, link-local or
otherwise non-public address. Outside production: https anywhere, plain http on loopback only.

URLs are checked when an endpoint is saved (literal IPs and local host names) and, in production,
again before each attempt, against the addresses the host name resolves to then. A name that
resolves differently between that check and the connection (DNS rebinding) is not caught.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from billing.core.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


class DestinationRefused(Exception):
    """The URL's host resolves to an address that webhooks may not reach."""


def _literal_ip(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def is_loopback(host: str) -> bool:
    address = _literal_ip(host)
    if address is not None:
        return address.is_loopback
    return host == "localhost" or host.endswith(".localhost")


def _local_name(host: str) -> bool:
    return "." not in host or host == "localhost" or host.endswith(LOCAL_SUFFIXES)


def check_url(field: str, url: str, *, production: bool) -> str:
    """``url`` if webhooks may be sent to it, else a 422 naming ``field``."""
    parts = urlsplit(url)
    try:
        host = (parts.hostname or "").rstrip(".")
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError as exc:
        raise ValidationFailed.field(field, f"is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not host or len(url) > 2048:
        raise ValidationFailed.field(field, "expected an absolute https URL")
    if production:
        _check_public(field, parts.scheme, host)
    elif parts.scheme == "http" and not is_loopback(host):
        raise ValidationFailed.field(field, "must be https (http is accepted for loopback addresses only)")
    return url


def _check_public(field: str, scheme: str, host: str) -> None:
    if scheme != "https":
        raise ValidationFailed.field(field, "must be https")
    address = _literal_ip(host)
    if (address is not None and not is_public(address)) or (address is None and _local_name(host)):
        raise ValidationFailed.field(field, "must not point to a private, loopback or link-local address")


async def refuse_private_destination(url: str) -> None:
    """Production, before each attempt: every address the host resolves to must be public."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    address = _literal_ip(host)
    addresses = [address] if address is not None else await resolve(host, parts.port or 443)
    if not addresses or not all(is_public(a) for a in addresses):
        raise DestinationRefused(f"{host} resolves to a non-public address")


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DestinationRefused(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
