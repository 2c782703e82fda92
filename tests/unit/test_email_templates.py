"""Email rendering without a database: strictness, escaping, header safety, formatting helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2
import pytest

from billing.notifications import content
from billing.notifications.queue import ALL_KINDS
from billing.notifications.render import TEMPLATES_DIR, one_line, render
from billing.notifications.samples import sample_context
from billing.tenants.models import Tenant

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def tenant(**values: object) -> Tenant:
    defaults: dict[str, object] = {
        "id": "ten_1",
        "name": "Acme",
        "currency": "USD",
        "invoice_prefix": "ACME",
        "support_email": "help@acme.example",
        "update_payment_method_url": "https://acme.example/card",
        "billing_timezone": "UTC",
        "email_from": None,
    }
    return Tenant(**{**defaults, **values})


def test_every_kind_has_a_subject_an_html_and_a_text_template_on_one_layout() -> None:
    for kind in ALL_KINDS:
        for suffix in ("subject.txt", "html", "txt"):
            assert (TEMPLATES_DIR / f"{kind}.{suffix}").is_file(), f"{kind}.{suffix}"
        assert '{% extends "layout.html" %}' in (TEMPLATES_DIR / f"{kind}.html").read_text()
        assert '{% extends "layout.txt" %}' in (TEMPLATES_DIR / f"{kind}.txt").read_text()


def test_a_missing_value_is_an_error_not_an_empty_string() -> None:
    context = sample_context("payment_failed", tenant(), NOW, None)
    del context["invoice"]
    with pytest.raises(jinja2.UndefinedError):
        render("payment_failed", context)


def test_an_unknown_kind_has_no_template() -> None:
    with pytest.raises(jinja2.TemplateNotFound):
        render("nope", {})


def test_only_http_links_become_buttons() -> None:
    evil = tenant(update_payment_method_url="javascript:alert(1)")
    rendered = render("payment_failed", sample_context("payment_failed", evil, NOW, None))
    assert "javascript:" not in rendered.html and "javascript:" not in rendered.text
    assert "write to help@acme.example" in rendered.text  # where to go instead
    assert content.web_link(" https://x.example/a?b=1 ") == "https://x.example/a?b=1"
    assert content.web_link("https:///nohost") is None


def test_one_line_removes_every_line_break_and_keeps_no_break_spaces() -> None:
    assert one_line("a\r\nBcc: x@y\u2028z\x85w\tv") == "a Bcc: x@y z w v"
    assert one_line("  123,45\xa0€ \u202fx ") == "123,45\xa0€ \u202fx"


def test_locales_fall_back_to_english_and_accept_both_separators() -> None:
    assert str(content.parse_locale("pt-BR")) == "pt_BR"
    assert str(content.parse_locale("fr_CA")) == "fr_CA"
    assert str(content.parse_locale("xx-!!")) == "en"
    assert str(content.parse_locale(None)) == "en"
    assert str(content.parse_timezone("Mars/Olympus")) == "UTC"


def test_card_details_are_tolerant_of_what_a_provider_leaves_out() -> None:
    fmt = content.Formatter.of("en", "UTC")
    full = content.card_view({"brand": "amex", "last4": "0005", "exp_month": 3, "exp_year": 2027}, fmt)
    assert (full["brand"], full["last4"], full["expiry"], full["expiry_month"]) == (
        "American Express",
        "0005",
        "03/2027",
        "March 2027",
    )
    bare = content.card_view({"id": "card_1"}, fmt)
    assert (bare["brand"], bare["last4"], bare["expiry"]) == ("Card", "????", None)


def test_a_period_ends_on_its_last_day_in_the_readers_timezone() -> None:
    berlin = content.Formatter.of("en", "Europe/Berlin")
    start = datetime(2026, 9, 30, 22, tzinfo=UTC)  # Oct 1 00:00 in Berlin
    end = datetime(2026, 10, 31, 23, tzinfo=UTC)  # Nov 1 00:00 in Berlin
    assert berlin.period(start, end) == "Oct 1\u2009\u2013\u200931, 2026"
    assert berlin.date("2026-11-24T00:30:00+01:00") == "November 24, 2026"
