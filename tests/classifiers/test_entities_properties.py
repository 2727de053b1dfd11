"""Properties of entity extraction: any text, however hostile, gives only valid normalised values
(a dossier reference of the right shape, an IBAN that validates, a real date, an E.164 phone)."""

from __future__ import annotations

import re
import time
from datetime import date
from decimal import Decimal

import phonenumbers
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schwifty import IBAN

from classifiers.entities import EntityContext, extract_entities
from classifiers.references import find_references

CI = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KINDS = ("message", "email", "document", "edi")
REFERENCE = re.compile(r"AS-\d{4}-\d{6}")
AMOUNT = re.compile(r"\d{1,9}\.\d{2}")
CONTRACT = re.compile(r"CT[0-9A-Z]+")

# Pieces that look like what the rules hunt for, to be glued together with noise: random
# characters alone almost never reach the interesting branches.
FRAGMENTS = [
    "Dossier AS-2026-000123",
    "as 2O26 OO1234",
    "AS2026 01 2524",
    "Total TTC : 1 250,40 €",
    "Net à payer",
    "1.250,40 EUR",
    "CHF 1'250.40",
    "-100,34 €",
    "45e",
    "n.º 88454",
    "IBAN FR76 3000 6000 0112 3456 7890 189",
    "IBAN FR76 3OO6 OOO1 I234 5678 9O18 9",
    "IBANDE89370400440532013000",
    "RIB 30006 00001 12345678901 89",
    "Tél. 06 12 34 56 78",
    "+33 6 12 34 56 78",
    "0033 1 23 45 67 89",
    "+1 (617) 555-0199",
    "le 31/02/2026",
    "le 1O/03/2026",
    "29 février 2025",
    "2026-13-45",
    "15 mars 2026",
    "Contrat n° 4512 8877 33",
    "Police : CT-2025-00012",
    "Madame Jeanne Martin",
    "Nom : DUPONT Jean",
    "P<FRAMARTIN<<JEANNE<<<<<<<<<<<<<<<<<<<<<<<<",
    "<html><body><p>Montant : 45,00 €</p></body></html>",
    "UNB+UNOC:3+A+B+260325:1312+1'UNH+1+INVOIC'MOA+77:12.5'RFF+ON:AS2026000001'",
    "> Total 99,99 €",
    "\u202f",
    "\u00a0",
    "\t",
    "\r\n",
    "|",
    "O",
    "l",
]


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=30)), min_size=1, max_size=12
        )
    )
    separator = draw(st.sampled_from(["", " ", "\n", " : ", "\n\n"]))
    return separator.join(parts)


def _valid(found: dict[str, str]) -> None:
    assert all(isinstance(v, str) and v for v in found.values()), found
    if "dossier_ref" in found:
        assert REFERENCE.fullmatch(found["dossier_ref"]), found
        year = int(found["dossier_ref"][3:7])
        assert 2000 <= year <= 2999, found
    if "iban" in found:
        # IBAN() raises on a wrong length, country or check digits.
        assert IBAN(found["iban"]).compact == found["iban"], found
    if "amount_total" in found:
        assert AMOUNT.fullmatch(found["amount_total"]), found
        assert Decimal(found["amount_total"]).is_finite()
        assert re.fullmatch(r"[A-Z]{3}", found.get("currency", "")), found
    if "date" in found:
        assert date.fromisoformat(found["date"]).isoformat() == found["date"], found
    if "phone" in found:
        assert found["phone"].startswith("+"), found
        number = phonenumbers.parse(found["phone"])
        assert phonenumbers.is_possible_number(number), found
        formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        assert formatted == found["phone"], found
    if "contract_no" in found:
        assert CONTRACT.fullmatch(found["contract_no"]), found
    if "person" in found:
        assert found["person"].strip() == found["person"] and "\n" not in found["person"], found


@CI
@given(st.text(max_size=400), st.sampled_from(KINDS))
@example("", "message")
@example("\x00\ud7ff\U0010ffff", "document")
def test_any_text_gives_only_valid_entities(text: str, kind: str) -> None:
    _valid(extract_entities(text, EntityContext(kind)))


@CI
@given(hostile_text(), st.sampled_from(KINDS), st.sampled_from(["fr", "en", "de", "xx"]))
@example("IBAN FR76 3OO6 OOO1 I234 5678 9O18 9", "document", "fr")
@example("le 31/02/2026 et le 29 février 2025", "message", "fr")
def test_near_misses_give_only_valid_entities(text: str, kind: str, language: str) -> None:
    found = extract_entities(text, EntityContext(kind, language, sender_name="Jeanne Martin"))
    _valid(found)
    if "dossier_ref" in found:
        assert found["dossier_ref"] in find_references(text)


@CI
@given(st.text(max_size=200))
def test_every_reference_found_is_normalised(text: str) -> None:
    for reference in find_references(text, text.upper()):
        assert REFERENCE.fullmatch(reference), reference


def test_big_adversarial_texts_stay_fast() -> None:
    # Long runs of what the patterns repeat on (digits and separators, "AS", tags, capitals,
    # slashes, label lines): a quadratic or catastrophic backtrack takes minutes on these.
    # "AS " * 60 000 as a document took 165 s before the boarding-pass name rule was bounded.
    texts = [
        "1 " * 100_000,
        "1." * 100_000,
        "AS " * 60_000,
        "<" * 200_000,
        "<html>" + "<p " * 60_000,
        "FR76 " * 40_000,
        ("Total : " + "9" * 40 + " ") * 5000,
        "AB/" * 60_000,
        "Nom\n" * 50_000,
        "DUPONT Jean " * 16_000,
    ]
    for text in texts:
        started = time.monotonic()
        _valid(extract_entities(text, EntityContext("document")))
        assert time.monotonic() - started < 20, text[:20]
