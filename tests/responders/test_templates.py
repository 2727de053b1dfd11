"""Every reply template renders in French and English for each channel; HTML is escaped."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from guichet.settings import PROJECT_ROOT
from responders.compose import SMS_MAX_SEGMENTS, render_for_channel
from responders.render import TemplateRenderer, long_date, money
from responders.sms import is_gsm7, measure

RENDERER = TemplateRenderer(PROJECT_ROOT / "templates")
PURPOSES = ("acknowledgement", "missing_documents", "completion", "refusal", "status_answer")
HOSTILE = "Jean <script>alert('x')</script> & Fils"

LONG_DOCUMENTS = [
    "les factures acquittées de l'hôpital, du médecin ou de la pharmacie",
    "le certificat médical ou le compte rendu d'hospitalisation décrivant les soins",
    "les décomptes de remboursement de la Sécurité sociale et de votre mutuelle",
    "un relevé d'identité bancaire (RIB) à votre nom",
]


def _context(next_step: str = "payment", **extra: Any) -> dict[str, Any]:
    return {
        "name": HOSTILE,
        "subject": "Remboursement <b>urgent</b>",
        "dossier_ref": "AS-2026-001234",
        "signature": "Guichet Assistance Voyage et Automobile",
        "received_on": "12 mars 2026",
        "today": date(2026, 3, 12),
        "documents": LONG_DOCUMENTS,
        "document_count": len(LONG_DOCUMENTS),
        "reminder": 1,
        "claim_label": "Frais médicaux à l'étranger",
        "status": "en attente de documents",
        "next": next_step,
        "currency": "EUR",
        "amount_claimed": "12450.40",
        "amount_covered": "11250.40",
        "reasons": [
            {
                "clause": "3.1.2",
                "message": "Le contrat n'était plus en vigueur le jour de l'événement <x>.",
            },
            {"clause": "7.4", "message": "La déclaration est arrivée après le délai de 5 jours."},
        ],
        "event_date": date(2026, 2, 28),
        "event_place": "Barcelone",
        "beneficiary": HOSTILE,
        "contract_no": "CT-2026-0042",
    } | extra


def test_money_and_dates_by_language() -> None:
    assert money(Decimal("1250.40"), "EUR", "fr") == "1\u202f250,40\xa0€"
    assert money("1250.40", "EUR", "en") == "€1,250.40"
    assert money(None, "EUR", "fr") == ""
    assert long_date(date(2026, 3, 12), "fr") == "12 mars 2026"
    assert long_date(datetime(2026, 3, 12, 23, tzinfo=UTC), "en") == "12 March 2026"
    assert long_date("2026-03-12", "en") == "12 March 2026"


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("purpose", [*PURPOSES, "attestation"])
@pytest.mark.parametrize("next_step", ["send_documents", "refused", "payment", "review"])
def test_every_email_template_renders_text_and_escaped_html(
    lang: str, purpose: str, next_step: str
) -> None:
    rendered = RENDERER.render(purpose, "email", lang, _context(next_step))
    assert rendered.template == f"email/{lang}/{purpose}"
    assert rendered.subject and "AS-2026-001234" in rendered.subject + rendered.body_text
    assert rendered.body_html is not None
    assert "<script>" not in rendered.body_html
    assert "Jean &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Fils" in rendered.body_html
    # Plain text is not HTML: nothing is escaped there.
    assert HOSTILE in rendered.body_text
    assert "&lt;" not in rendered.body_text and "&#39;" not in rendered.body_text


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_amounts_are_formatted_for_the_language(lang: str) -> None:
    refusal = RENDERER.render("refusal", "email", lang, _context()).body_text
    status = RENDERER.render("status_answer", "email", lang, _context("payment")).body_text
    if lang == "fr":
        assert "12\u202f450,40\xa0€" in refusal and "11\u202f250,40\xa0€" in status
        assert "(article 3.1.2 de vos conditions générales)" in refusal
    else:
        assert "€12,450.40" in refusal and "€11,250.40" in status
        assert "(clause 3.1.2 of your terms and conditions)" in refusal


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_status_answer_without_a_dossier(lang: str) -> None:
    context: dict[str, Any] = {"name": "", "dossier_ref": None, "signature": "Guichet"}
    context["today"] = date(2026, 3, 12)
    context |= {"status": None, "documents": [], "document_count": 0, "next": None}
    for channel in ("email", "sms", "chat"):
        text = RENDERER.render("status_answer", channel, lang, context).body_text
        assert "AS-" in text  # asks for the file number


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("next_step", ["send_documents", "refused", "payment", "review"])
def test_every_sms_fits_two_gsm7_segments(lang: str, purpose: str, next_step: str) -> None:
    for context in (_context(next_step), _context(next_step, dossier_ref=None)):
        if context["dossier_ref"] is None and purpose not in ("acknowledgement", "status_answer"):
            continue
        rendered = render_for_channel(RENDERER, purpose, "sms", lang, context)
        assert rendered.template == f"sms/{lang}/{purpose}"
        assert is_gsm7(rendered.body_text), rendered.body_text
        assert 1 <= measure(rendered.body_text).segments <= SMS_MAX_SEGMENTS, rendered.body_text


def test_a_short_missing_list_is_spelled_out_in_the_sms() -> None:
    short = _context(documents=["un RIB"], document_count=1, reminder=0)
    text = render_for_channel(RENDERER, "missing_documents", "sms", "fr", short).body_text
    assert "il manque 1 document au dossier AS-2026-001234 : un RIB." in text
    long = render_for_channel(RENDERER, "missing_documents", "sms", "fr", _context()).body_text
    assert "4 documents" in long and "la liste vous a été envoyée par email" in long


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_chat_template_renders(lang: str, purpose: str) -> None:
    rendered = RENDERER.render(purpose, "chat", lang, _context())
    assert rendered.body_html is None and rendered.body_text.strip()
    assert "{{" not in rendered.body_text


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_attestation_pdf_text(lang: str) -> None:
    rendered = RENDERER.render("attestation", "pdf", lang, _context())
    assert "CT-2026-0042" in rendered.body_text
    assert ("28 février 2026" if lang == "fr" else "28 February 2026") in rendered.body_text
