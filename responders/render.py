"""Render reply templates for a channel and language, falling back to the default language."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound


class TemplateMissing(LookupError):
    """No template for this purpose and channel in any language of the fallback chain."""


@dataclass(frozen=True)
class Rendered:
    template: str
    language: str
    subject: str
    body_text: str
    body_html: str | None = None


def money(amount: Decimal | str | int | None, currency: str = "EUR", lang: str = "fr") -> str:
    """``1 250,40 €`` in French, ``€1,250.40`` in English; empty for an unknown amount."""
    if amount is None or amount == "":
        return ""
    return format_currency(Decimal(str(amount)), currency, locale=lang)


def long_date(value: date | datetime | str | None, lang: str = "fr") -> str:
    """``12 mars 2026`` in French, ``12 March 2026`` in English."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    # Babel's "long" English pattern is "March 12, 2026"; the letters use day-first everywhere.
    return format_date(value, "d MMMM y", locale=lang)


class TemplateRenderer:
    """Templates live at ``templates/<channel>/<language>/<purpose>.{subject,txt,html}``.

    Like Mailman, one file per message and a language fallback chain: the contact's language,
    then the deployment's default, then French. Every template gets ``lang`` in its context
    and the ``money`` and ``long_date`` filters.
    """

    def __init__(self, root: Path, default_language: str = "fr") -> None:
        self.default_language = default_language
        options: dict[str, Any] = {
            "loader": FileSystemLoader(str(root)),
            "undefined": StrictUndefined,
            "keep_trailing_newline": True,
            "trim_blocks": True,
            "lstrip_blocks": True,
        }
        # Plain-text bodies: autoescape would turn "l'assuré" into HTML entities.
        self.env = Environment(autoescape=False, **options)  # noqa: S701
        # HTML bodies carry names and subjects the sender chose: everything is escaped.
        self.html_env = Environment(autoescape=True, **options)
        for env in (self.env, self.html_env):
            env.filters["money"] = money
            env.filters["long_date"] = long_date

    def chain(self, language: str | None) -> list[str]:
        chain: list[str] = []
        for lang in (language, self.default_language, "fr"):
            if lang and lang not in chain:
                chain.append(lang)
        return chain

    def render(
        self, purpose: str, channel: str, language: str | None, context: dict[str, Any]
    ) -> Rendered:
        for lang in self.chain(language):
            base = f"{channel}/{lang}/{purpose}"
            try:
                body = self.env.get_template(f"{base}.txt")
            except TemplateNotFound:
                continue
            values = {"lang": lang, **context}
            try:
                subject = self.env.get_template(f"{base}.subject").render(values)
            except TemplateNotFound:
                subject = ""
            try:
                html: str | None = self.html_env.get_template(f"{base}.html").render(values)
            except TemplateNotFound:
                html = None
            return Rendered(
                template=base,
                language=lang,
                subject=" ".join(subject.split()),
                body_text=body.render(values),
                body_html=html,
            )
        raise TemplateMissing(
            f"no template {purpose!r} for channel {channel!r} in {self.chain(language)}"
        )
