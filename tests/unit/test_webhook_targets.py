"""Where webhooks may go: https and public addresses in production; loopback http outside it."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from billing.core.errors import ValidationFailed
from billing.webhooks import targets
from billing.webhooks.targets import DestinationRefused, check_url, refuse_private_destination


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/billing", "https://example.com:8443/x?y=1", "https://93.184.216.34/hook"],
)
def test_public_https_urls_are_accepted_everywhere(url: str) -> None:
    assert check_url("url", url, production=True) == url
    assert check_url("url", url, production=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/billing",
        "http://127.0.0.1:8080/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://app.localhost/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://10.1.2.3/hook",
        "https://172.16.0.1/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/hook",
        "https://0.0.0.0/hook",
        "https://[fd00::1]/hook",
        "https://[fe80::1]/hook",
        "https://metadata.google.internal/",
        "https://printer.local/",
        "https://intranet/",
    ],
)
def test_production_refuses_http_and_non_public_targets(url: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_url("url", url, production=True)
    assert caught.value.errors[0].field == "url"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://localhost:3000/", "http://[::1]:9000/", "https://10.0.0.5/"]
)
def test_outside_production_loopback_http_and_private_https_are_accepted(url: str) -> None:
    assert check_url("url", url, production=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/",
        "http://10.0.0.5/",
        "ftp://127.0.0.1/",
        "127.0.0.1:8080",
        "https://",
        "https://example.com:99999/",
        "https://" + "a" * 2050 + ".com/",
    ],
)
def test_outside_production_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationFailed):
        check_url("url", url, production=False)


def fake_resolver(monkeypatch: pytest.MonkeyPatch, addresses: list[str]) -> list[str]:
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[Any]:
        asked.append(host)
        return [ipaddress.ip_address(address) for address in addresses]

    monkeypatch.setattr(targets, "resolve", resolve)
    return asked


async def test_a_host_resolving_to_a_private_address_is_refused_before_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = fake_resolver(monkeypatch, ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(DestinationRefused):
        await refuse_private_destination("https://rebinding.example.com/hook")
    assert asked == ["rebinding.example.com"]


async def test_a_host_resolving_to_public_addresses_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_resolver(monkeypatch, ["93.184.216.34"])
    await refuse_private_destination("https://hooks.example.com/hook")
    assert asked == ["hooks.example.com"]


async def test_literal_addresses_are_checked_without_resolving() -> None:
    await refuse_private_destination("https://93.184.216.34/hook")
    with pytest.raises(DestinationRefused):
        await refuse_private_destination("https://127.0.0.1/hook")
