"""Jinja2 rendering of the email templates in ``templates/emails/``.

Each kind has ``<kind>.subject.txt``, ``<kind>.html`` and ``<kind>.txt``; the bodies extend
``layout.html`` / ``layout.txt``. Those are English; a kind written in another language also has
them in ``<language>/`` (``de/``, ``fr/``...), beside that language's own layouts and macros, so
that an email is wholly in one language. HTML is autoescaped (customer names are customer-supplied),
text and subjects are not; any undefined variable is an error, not an empty string.

The templates live beside the package in the source tree, like ``migrations/``: the service
runs from its checkout (``pip install -e .``, as ``make run`` does).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates" / "emails"
DEFAULT_LANGUAGE = "en"
MAX_SUBJECT = 200
_BLANK_LINES = re.compile(r"\n{3,}")
# Any whitespace (line breaks of every kind included) but the no-break spaces that amounts use.
_BREAKING_SPACE = re.compile(r"[^\S\u00a0\u202f]+")


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


@functools.cache
def languages(kind: str) -> frozenset[str]:
    """The languages ``kind`` is written in: English, and each folder that holds its templates."""
    translated = {path.parent.name for path in TEMPLATES_DIR.glob(f"*/{kind}.html")}
    return frozenset({DEFAULT_LANGUAGE} | translated)


@functools.cache
def environment(language: str = DEFAULT_LANGUAGE) -> jinja2.Environment:
    folder = TEMPLATES_DIR if language == DEFAULT_LANGUAGE else TEMPLATES_DIR / language
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def render(kind: str, context: Mapping[str, Any]) -> Rendered:
    """Subject, HTML and text of ``kind`` in the context's ``language`` (English if it has none);
    ``jinja2.TemplateNotFound`` for an unknown kind."""
    env = environment(context.get("language", DEFAULT_LANGUAGE))
    subject = env.get_template(f"{kind}.subject.txt").render(context)
    html = env.get_template(f"{kind}.html").render(context)
    text = env.get_template(f"{kind}.txt").render(context)
    return Rendered(one_line(subject)[:MAX_SUBJECT], html.strip() + "\n", _tidy(text))


def one_line(value: str) -> str:
    """Whitespace (newlines too: a header must not be split) collapsed to single spaces."""
    return _BREAKING_SPACE.sub(" ", value).strip(" ")


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)) + "\n"
