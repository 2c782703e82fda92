"""Rendering of the finance pages (Jinja2 templates in ``templates/finance/``).

HTML is autoescaped everywhere (customer names and descriptions come from tenants' users), and
every page is sent with a Content-Security-Policy that allows nothing from elsewhere and no
script at all: the pages work as plain HTML forms.
"""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from litestar import Response
from litestar.enums import MediaType

from billing.core import money
from billing.core.clock import format_timestamp

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates" / "finance"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def money_text(amount: int | None, currency: str) -> str:
    return "" if amount is None else money.format_money(amount, currency)


def time_text(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def date_text(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d")


def query_text(params: dict[str, Any], **changes: Any) -> str:
    """``params`` with ``changes`` applied, as a query string without empty values."""
    merged = {**params, **changes}
    return urlencode({key: value for key, value in merged.items() if value not in (None, "")})


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=money_text, time=time_text, date=date_text, iso=format_timestamp)
    env.globals["qs"] = query_text
    return env


DEFAULTS: dict[str, Any] = {"user": None, "section": "", "notice": None, "error": None}


def render(template: str, *, status_code: int = 200, **context: Any) -> Response[str]:
    html = environment().get_template(template).render({**DEFAULTS, **context})
    return Response(html, status_code=status_code, media_type=MediaType.HTML, headers=SECURITY_HEADERS)


@functools.cache
def stylesheet() -> str:
    return (TEMPLATES_DIR / "finance.css").read_text()
