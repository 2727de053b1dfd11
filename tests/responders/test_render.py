"""Templates by channel and language with a fallback chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from guichet.settings import PROJECT_ROOT
from responders.render import TemplateMissing, TemplateRenderer

CONTEXT = {
    "name": "Jean Dupont",
    "subject": "Facture",
    "dossier_ref": "AS-2026-000001",
    "documents": ["facture.pdf", "rib.pdf"],
    "received_on": "2 novembre 2026",
    "signature": "Guichet Assistance",
}


def test_french_and_english_acknowledgements() -> None:
    renderer = TemplateRenderer(PROJECT_ROOT / "templates")
    fr = renderer.render("acknowledgement", "email", "fr", CONTEXT)
    assert fr.subject == "[AS-2026-000001] Accusé de réception : Facture"
    assert fr.body_text.startswith(
        "Bonjour Jean Dupont,\n\n"
        "Nous avons bien reçu votre message du 2 novembre 2026 et 2 pièces jointes :\n"
        "  - facture.pdf\n  - rib.pdf\n"
    )
    en = renderer.render(
        "acknowledgement", "email", "en", CONTEXT | {"dossier_ref": None, "documents": []}
    )
    assert en.subject == "Acknowledgement of receipt: Facture"
    assert "We have received your message of 2 novembre 2026." in en.body_text
    assert "AS-YYYY-NNNNNN" in en.body_text


def test_unknown_language_falls_back_to_default() -> None:
    rendered = TemplateRenderer(PROJECT_ROOT / "templates").render(
        "acknowledgement", "email", "it", CONTEXT
    )
    assert (rendered.language, rendered.template) == ("fr", "email/fr/acknowledgement")


def test_missing_template_and_missing_variable_fail_loudly(tmp_path: Path) -> None:
    renderer = TemplateRenderer(tmp_path)
    with pytest.raises(TemplateMissing, match="no template 'refusal' for channel 'email'"):
        renderer.render("refusal", "email", "fr", {})
    (tmp_path / "email" / "fr").mkdir(parents=True)
    (tmp_path / "email" / "fr" / "x.txt").write_text("{{ nobody }}")
    with pytest.raises(Exception, match="nobody"):
        renderer.render("x", "email", "fr", {})
