"""The first language guess used to pick a reply's language."""

from __future__ import annotations

import pytest

from classifiers.language import guess_language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Bonjour, je vous envoie la facture pour mon dossier. Cordialement", "fr"),
        ("Hello, please find attached the invoice for my claim. Kind regards", "en"),
        ("Hola, le envío la factura de mi hospitalización. Gracias y saludos", "es"),
        ("Buongiorno, le invio la fattura per il mio rimborso. Grazie e saluti", "it"),
        ("Hallo, ich sende Ihnen die Rechnung für meine Behandlung. Danke und Grüße", "de"),
    ],
)
def test_guesses_the_language(text: str, language: str) -> None:
    assert guess_language(text) == language


def test_unsure_falls_back_to_the_default() -> None:
    assert guess_language("") == "fr"
    assert guess_language("AS-2026-000001 OK") == "fr"
    assert guess_language("STOP", default="en") == "en"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Stop sending me messages", "en"),
        ("wrong number", "en"),
        ("Unsubscribe", "en"),
        ("STOP SMS", "fr"),
        ("stop stop stop", "fr"),
        ("Oui", "fr"),
        ("👍", "fr"),
        ("ou en est mon rembourssement??", "fr"),
        ("jvous envoi la facture demain", "fr"),
    ],
)
def test_short_texts(text: str, language: str) -> None:
    assert guess_language(text) == language
