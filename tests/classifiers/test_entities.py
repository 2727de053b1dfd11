"""Entities pulled out of messages, emails, documents and EDI, against hand-written cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from classifiers.entities import EntityContext, extract_entities, load_nlp

GOLDEN = Path(__file__).parent.parent / "data" / "entities_golden.jsonl"


def _golden() -> list[Any]:
    cases = []
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        if line.strip():
            case = json.loads(line)
            cases.append(pytest.param(case, id=case.get("note") or case["text"][:40]))
    return cases


@pytest.mark.parametrize("case", _golden())
def test_golden(case: dict[str, Any]) -> None:
    context = EntityContext(case["kind"], case.get("language", "fr"), case.get("sender_name"))
    assert extract_entities(case["text"], context) == case["expected"]


def test_golden_file_covers_every_key() -> None:
    keys: set[str] = set()
    for case in _golden():
        keys.update(case.values[0]["expected"])
    assert keys == {
        "amount_total",
        "contract_no",
        "currency",
        "date",
        "dossier_ref",
        "iban",
        "person",
        "phone",
    }


@pytest.mark.parametrize("text", ["", "   \n\t ", "\n\n"])
def test_empty_text_has_no_entities(text: str) -> None:
    assert extract_entities(text, EntityContext("message")) == {}


def test_text_without_facts_has_no_entities() -> None:
    text = "Bonjour, merci beaucoup pour votre aide hier, tout s'est bien passé."
    assert extract_entities(text, EntityContext("message")) == {}


def test_currency_present_exactly_with_amount() -> None:
    for text in ["Total : 89,90", "J'ai payé 120 pour le taxi", "Total TTC : 89,90 €"]:
        found = extract_entities(text, EntityContext("document"))
        assert ("amount_total" in found) == ("currency" in found)


def test_invalid_iban_is_never_output() -> None:
    # Valid layout, one digit changed: mod-97 fails and no repair may invent a valid one.
    text = "IBAN : FR76 3000 6000 0112 3456 7890 198\nBIC : AGRIFRPP"
    assert "iban" not in extract_entities(text, EntityContext("document"))


def test_email_sender_beats_signature_and_quoted_lines() -> None:
    text = (
        "Re: dossier AS-2026-000777\n\nBonjour,\n\nVoici le RIB.\n\n"
        "> Le service Dossiers\n> Mistral Assistance\n"
    )
    found = extract_entities(text, EntityContext("email", "fr", "Lucas Perrin"))
    assert found == {"dossier_ref": "AS-2026-000777", "person": "Lucas Perrin"}


def test_provider_email_names_the_beneficiary_not_the_sender() -> None:
    text = (
        "Facture 77 - dossier AS2026001111\n\nMadame, Monsieur,\n\nVeuillez trouver notre "
        "facture pour votre bénéficiaire Mme Inès Lopez, d'un montant de 180,00 € TTC.\n\n"
        "Cordialement,\nService facturation\nTaxis du Port"
    )
    found = extract_entities(text, EntityContext("email", "fr", "Taxis du Port"))
    assert found["person"] == "Inès Lopez"
    assert (found["amount_total"], found["currency"]) == ("180.00", "EUR")


def test_very_long_text_is_processed() -> None:
    filler = "Ligne de texte sans intérêt particulier, numéro 12 du lot. " * 1800
    text = "Dossier AS-2026-004512\n" + filler + "\nTotal TTC : 1 250,40 €\n"
    assert len(text) > 100_000
    found = extract_entities(text, EntityContext("document"))
    assert found["dossier_ref"] == "AS-2026-004512"
    assert (found["amount_total"], found["currency"]) == ("1250.40", "EUR")


def test_html_body_is_read_as_text() -> None:
    text = (
        "<html><body><p>Bonjour,</p>"
        "<p>Mon t&eacute;l : 06&nbsp;12&nbsp;34&nbsp;56&nbsp;78</p></body></html>"
    )
    assert extract_entities(text, EntityContext("email")) == {"phone": "+33612345678"}


def test_edi_segments_on_separate_lines_with_release_character() -> None:
    text = (
        "UNA:+.? '\nUNB+UNOC:3+1:14+MISTRAL:ZZZ+260305:0900+7'\nUNH+1+INVOIC:D:96A:UN'\n"
        "BGM+380+F9+9'\nDTM+137:20260305:102'\nRFF+ON:AS-2026-000123'\n"
        "NAD+SU+1::9++GARAGE DE L?'EST'\nCUX+2:EUR:4'\nMOA+125:100.00'\nMOA+77:120.00'\n"
        "UNT+9+1'\nUNZ+1+7'\n"
    )
    assert extract_entities(text, EntityContext("edi")) == {
        "amount_total": "120.00",
        "currency": "EUR",
        "date": "2026-03-05",
        "dossier_ref": "AS-2026-000123",
    }


def test_nlp_pipeline_is_loaded_once_with_ner() -> None:
    nlp = load_nlp()
    assert load_nlp() is nlp
    assert "ner" in nlp.pipe_names
    assert "parser" not in nlp.pipe_names
