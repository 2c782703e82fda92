"""Email rendering without a database: strictness, escaping, header safety, formatting helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2
import pytest

from billing.customers.models import Customer
from billing.notifications import content
from billing.notifications.queue import ALL_KINDS
from billing.notifications.render import TEMPLATES_DIR, languages, one_line, render
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


TRANSLATIONS = sorted(path.name for path in TEMPLATES_DIR.iterdir() if path.is_dir())


def test_each_language_has_its_layouts_and_macros_and_whole_kinds() -> None:
    assert {"de", "fr", "es"} <= set(TRANSLATIONS)
    for language in TRANSLATIONS:
        folder = TEMPLATES_DIR / language
        for name in ("layout.html", "layout.txt", "_macros.html", "_macros.txt"):
            assert (folder / name).is_file(), f"{language}/{name}"
        assert f'<html lang="{language}">' in (folder / "layout.html").read_text()
        for html in folder.glob("*.html"):
            kind = html.name.removesuffix(".html")
            if not kind.startswith(("_", "layout")):
                assert kind in ALL_KINDS, f"{language}/{html.name}"
                assert (folder / f"{kind}.subject.txt").is_file() and (folder / f"{kind}.txt").is_file()


@pytest.mark.parametrize("language", TRANSLATIONS)
def test_a_translated_email_keeps_no_english_sentence(language: str) -> None:
    for kind in ALL_KINDS:
        if language not in languages(kind):
            continue
        english = render(kind, sample_context(kind, tenant(), NOW, "en"))
        translated = render(kind, sample_context(kind, tenant(), NOW, language))
        assert translated.subject != english.subject
        sentences = {line for line in english.text.splitlines() if len(line.split()) > 2}
        assert not sentences & set(translated.text.splitlines()), (kind, language)
        assert "Hello" not in translated.html and "Or open this link" not in translated.html


def test_trial_will_end_is_written_in_every_language_of_the_templates() -> None:
    assert languages("trial_will_end") == {"en", *TRANSLATIONS}


def test_the_language_part_of_the_locale_picks_the_templates_and_others_read_english() -> None:
    assert content.written_in("trial_will_end", "de_AT") == ("de", "de_AT")
    assert content.written_in("trial_will_end", "fr-CA") == ("fr", "fr-CA")
    assert content.written_in("trial_will_end", "en_GB") == ("en", "en_GB")
    assert content.written_in("trial_will_end", None) == ("en", None)
    # No Portuguese templates: the whole email is English, dates and amounts included.
    assert content.written_in("trial_will_end", "pt_BR") == ("en", "en")
    # A kind written in English only keeps the reader's formats.
    assert content.written_in("payment_failed", "de") == ("en", "de")


@pytest.mark.parametrize(
    ("locale", "subject"),
    [
        ("en", "Acme: your Pro trial ends on November 25, 2026"),
        ("de_DE", "Acme: Ihre Testphase für Pro endet am 25. November 2026"),
        ("fr", "Acme\xa0: votre période d'essai de Pro se termine le 25 novembre 2026"),
        ("es_MX", "Acme: su período de prueba de Pro termina el 25 de noviembre de 2026"),
        ("pt_BR", "Acme: your Pro trial ends on November 25, 2026"),
    ],
)
def test_the_trial_end_is_a_day_in_the_customers_timezone_and_language(locale: str, subject: str) -> None:
    customer = Customer(
        id="cus_1", name=None, email="a@b.example", locale=locale, timezone="Pacific/Auckland"
    )
    snapshot = {"id": "sub_1", "plan": "plan_1", "plan_code": "pro", "trial_end": "2026-11-24T12:00:00Z"}
    data = {"subscription": snapshot, "plan_name": "Pro"}
    context = content.customer_context("trial_will_end", tenant(), customer, None, data)
    assert render("trial_will_end", context).subject == subject


def test_without_a_name_the_plan_code_names_the_trial_and_without_a_link_support_is_offered() -> None:
    customer = Customer(id="cus_1", name=None, email="a@b.example", locale="en", timezone=None)
    data = {"subscription": {"id": "sub_1", "plan_code": "pro-2026", "trial_end": "2026-11-24T12:00:00Z"}}
    context = content.customer_context(
        "trial_will_end", tenant(update_payment_method_url=None), customer, None, data
    )
    rendered = render("trial_will_end", context)
    assert rendered.subject == "Acme: your pro-2026 trial ends on November 24, 2026"
    assert (
        "To update your payment details, reply to this email or write to help@acme.example." in rendered.text
    )
