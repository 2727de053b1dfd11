"""Coverage rules, required documents, checklist and the claim-type and exchange-rate files."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from classifiers.corpus import DOC_TYPES
from intake.coverage import (
    ClaimFacts,
    ClaimType,
    Condition,
    CoverageInputs,
    DocumentNeed,
    ExchangeRates,
    GuaranteeTerms,
    Money,
    ReceivedDocument,
    ReferenceDataError,
    check_coverage,
    checklist,
    load_claim_types,
    load_rates,
    required_documents,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"
D = Decimal

# Fixed here rather than read from config/, so that a refresh of the rates breaks no case.
RATES = ExchangeRates(
    as_of=date(2026, 11, 1),
    to_eur={"EUR": D("1"), "USD": D("0.86"), "GBP": D("1.14"), "CHF": D("1.07")},
)
MEDICAL = GuaranteeTerms(
    code="FRAIS_MEDICAUX_ETRANGER",
    claim_types=("medical_costs_abroad",),
    ceiling=D("1000.00"),
    deductible=D("30.00"),
    currency="EUR",
    declaration_days=30,
    refund_days=730,
)
EARLY_RETURN = GuaranteeTerms(
    code="RETOUR_ANTICIPE",
    claim_types=("early_return",),
    ceiling=D("3000.00"),
    deductible=D("0.00"),
    currency="EUR",
)
GBP_MEDICAL = GuaranteeTerms(
    code="MEDICAL_ABROAD",
    claim_types=("medical_costs_abroad",),
    ceiling=D("1000.00"),
    deductible=D("50.00"),
    currency="GBP",
    declaration_days=30,
)
EVENT = date(2026, 6, 10)

BASE = CoverageInputs(
    starts_on=date(2026, 1, 1),
    ends_on=date(2026, 12, 31),
    contract_currency="EUR",
    guarantees=(MEDICAL,),
    claim_type="medical_costs_abroad",
    event_date=EVENT,
    declared_on=date(2026, 6, 15),
    today=date(2026, 7, 1),
    amount_claimed=Money(D("500.00"), "EUR"),
    rates=RATES,
)
GBP_CONTRACT: dict[str, Any] = {"contract_currency": "GBP", "guarantees": (GBP_MEDICAL,)}


def eur(amount: str) -> Money:
    return Money(D(amount), "EUR")


def terms(**changes: Any) -> tuple[GuaranteeTerms]:
    return (dataclasses.replace(MEDICAL, **changes),)


class Case(NamedTuple):
    changes: dict[str, Any]
    covered: bool
    decided: bool
    amount_covered: str | None
    reasons: list[str]
    guarantee: str | None = "FRAIS_MEDICAUX_ETRANGER"
    rates: Sequence[tuple[str, str, str]] = ()


CASES = {
    "plain": Case({}, True, True, "470.00", ["deductible_applied"]),
    "ceiling_caps": Case(
        {"amount_claimed": eur("1500.00")},
        True,
        True,
        "970.00",
        ["ceiling_applied", "deductible_applied"],
    ),
    "unlimited_ceiling": Case(
        {"amount_claimed": eur("250000.00"), "guarantees": terms(ceiling=None)},
        True,
        True,
        "249970.00",
        ["deductible_applied"],
    ),
    "no_deductible": Case({"guarantees": terms(deductible=D("0"))}, True, True, "500.00", []),
    "deductible_larger_than_claim_gives_zero": Case(
        {"amount_claimed": eur("20.00")}, True, True, "0.00", ["deductible_applied"]
    ),
    "refunded_by_secu_and_mutuelle": Case(
        {"already_refunded": (eur("200.00"), eur("150.00"))},
        True,
        True,
        "120.00",
        ["already_refunded", "deductible_applied"],
    ),
    "refunded_more_than_claimed_gives_zero": Case(
        {"already_refunded": (eur("400.00"), eur("200.00"))},
        True,
        True,
        "0.00",
        ["already_refunded"],
    ),
    "ceiling_applies_after_refunds": Case(
        {"amount_claimed": eur("1500.00"), "already_refunded": (eur("300.00"),)},
        True,
        True,
        "970.00",
        ["already_refunded", "ceiling_applied", "deductible_applied"],
    ),
    "refunds_bring_claim_under_ceiling": Case(
        {"amount_claimed": eur("1200.00"), "already_refunded": (eur("300.00"),)},
        True,
        True,
        "870.00",
        ["already_refunded", "deductible_applied"],
    ),
    "usd_claim_on_eur_contract": Case(
        {"amount_claimed": Money(D("100.00"), "USD")},
        True,
        True,
        "56.00",
        ["deductible_applied"],
        rates=[("USD", "EUR", "0.860000")],
    ),
    "gbp_claim_on_gbp_contract": Case(
        {**GBP_CONTRACT, "amount_claimed": Money(D("400.00"), "GBP")},
        True,
        True,
        "350.00",
        ["deductible_applied"],
        guarantee="MEDICAL_ABROAD",
    ),
    "chf_claim_on_eur_contract": Case(
        {"amount_claimed": Money(D("200.00"), "CHF")},
        True,
        True,
        "184.00",
        ["deductible_applied"],
        rates=[("CHF", "EUR", "1.070000")],
    ),
    "usd_claim_on_gbp_contract_cross_rate": Case(
        {**GBP_CONTRACT, "amount_claimed": Money(D("100.00"), "USD")},
        True,
        True,
        "25.44",  # 100 x 0.754386 = 75.44, less 50.00
        ["deductible_applied"],
        guarantee="MEDICAL_ABROAD",
        rates=[("USD", "GBP", "0.754386")],
    ),
    "guarantee_in_another_currency_than_contract": Case(
        {"guarantees": terms(ceiling=D("100.00"), deductible=D("0"), currency="GBP")},
        True,
        True,
        "114.00",
        ["ceiling_applied"],
        rates=[("GBP", "EUR", "1.140000")],
    ),
    "refund_in_another_currency": Case(
        {"already_refunded": (Money(D("100.00"), "CHF"),)},
        True,
        True,
        "363.00",
        ["already_refunded", "deductible_applied"],
        rates=[("CHF", "EUR", "1.070000")],
    ),
    "unknown_claim_currency_is_undecided": Case(
        {"amount_claimed": Money(D("100.00"), "XYZ")}, False, False, None, ["unknown_currency"]
    ),
    "unknown_refund_currency_is_undecided": Case(
        {"already_refunded": (Money(D("10.00"), "MAD"),)},
        False,
        False,
        None,
        ["unknown_currency"],
    ),
    "refusal_is_decided_even_with_unknown_currency": Case(
        {"event_date": date(2027, 1, 2), "amount_claimed": Money(D("1.00"), "XYZ")},
        False,
        True,
        "0.00",
        ["contract_not_in_force", "unknown_currency"],
    ),
    "contract_not_yet_in_force": Case(
        {"event_date": date(2025, 12, 31), "declared_on": date(2026, 1, 2)},
        False,
        True,
        "0.00",
        ["contract_not_in_force"],
    ),
    "contract_expired": Case(
        {"event_date": date(2027, 1, 1), "declared_on": date(2027, 1, 2)},
        False,
        True,
        "0.00",
        ["contract_not_in_force"],
    ),
    "event_on_first_day_in_force": Case(
        {"event_date": date(2026, 1, 1), "declared_on": date(2026, 1, 5)},
        True,
        True,
        "470.00",
        ["deductible_applied"],
    ),
    "event_on_last_day_in_force": Case(
        {
            "event_date": date(2026, 12, 31),
            "declared_on": date(2027, 1, 5),
            "today": date(2027, 1, 10),
        },
        True,
        True,
        "470.00",
        ["deductible_applied"],
    ),
    "claim_type_not_covered": Case(
        {"claim_type": "baggage"}, False, True, "0.00", ["claim_type_not_covered"], guarantee=None
    ),
    "declaration_deadline_exactly_met": Case(
        {"declared_on": EVENT + timedelta(days=30), "today": date(2026, 8, 1)},
        True,
        True,
        "470.00",
        ["deductible_applied"],
    ),
    "declaration_one_day_late": Case(
        {"declared_on": EVENT + timedelta(days=31), "today": date(2026, 8, 1)},
        False,
        True,
        "0.00",
        ["declaration_late"],
    ),
    "no_declaration_deadline": Case(
        {
            "guarantees": terms(declaration_days=None),
            "declared_on": date(2027, 6, 1),
            "today": date(2027, 6, 1),
        },
        True,
        True,
        "470.00",
        ["deductible_applied"],
    ),
    "refund_on_last_day_of_prescription": Case(
        {"today": EVENT + timedelta(days=730)}, True, True, "470.00", ["deductible_applied"]
    ),
    "refund_prescription_passed": Case(
        {"today": EVENT + timedelta(days=731)}, False, True, "0.00", ["refund_prescribed"]
    ),
    "every_refusal_reason_is_listed": Case(
        {"event_date": date(2027, 1, 1), "declared_on": date(2027, 3, 1)},
        False,
        True,
        "0.00",
        ["contract_not_in_force", "declaration_late"],
    ),
    "several_guarantees_medical_one_chosen": Case(
        {"guarantees": (EARLY_RETURN, MEDICAL)}, True, True, "470.00", ["deductible_applied"]
    ),
    "several_guarantees_early_return_chosen": Case(
        {"guarantees": (MEDICAL, EARLY_RETURN), "claim_type": "early_return"},
        True,
        True,
        "500.00",
        [],
        guarantee="RETOUR_ANTICIPE",
    ),
    "rounding_half_up_to_the_cent": Case(
        {"amount_claimed": eur("100.125"), "guarantees": terms(deductible=D("0"))},
        True,
        True,
        "100.13",  # half-even would give 100.12
        [],
    ),
    "rounding_half_up_after_conversion": Case(
        {"amount_claimed": Money(D("11.75"), "USD"), "guarantees": terms(deductible=D("0"))},
        True,
        True,
        "10.11",  # 11.75 x 0.86 = 10.105; half-even would give 10.10
        [],
        rates=[("USD", "EUR", "0.860000")],
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_coverage_rules(case: Case) -> None:
    result = check_coverage(dataclasses.replace(BASE, **case.changes))

    assert (result.covered, result.decided) == (case.covered, case.decided)
    expected = None if case.amount_covered is None else D(case.amount_covered)
    assert result.amount_covered == expected
    if result.amount_covered is not None:
        assert result.amount_covered.as_tuple().exponent == -2  # always shown in cents
    assert [r.code for r in result.reasons] == case.reasons
    assert result.guarantee == case.guarantee
    assert [(u.from_currency, u.to_currency, str(u.rate)) for u in result.rates_used] == list(
        case.rates
    )
    assert all(u.as_of == RATES.as_of for u in result.rates_used)
    assert result.currency == case.changes.get("contract_currency", "EUR")


def test_amounts_are_shown_in_the_contract_currency() -> None:
    result = check_coverage(
        dataclasses.replace(
            BASE,
            amount_claimed=Money(D("100.00"), "USD"),
            already_refunded=(eur("10.00"), eur("5.00")),
        )
    )
    assert (result.amount_claimed, result.amount_already_refunded) == (D("86.00"), D("15.00"))


def test_not_in_force_reason_names_rule_clause_and_both_languages() -> None:
    (reason,) = check_coverage(dataclasses.replace(BASE, event_date=date(2027, 2, 1))).reasons
    assert reason.code == "contract_not_in_force"
    assert reason.clause == "contrat"
    assert reason.effect == "refusal"
    assert reason.message_fr.startswith("contrat non en vigueur à la date de l'événement")
    assert "01/02/2027" in reason.message_fr
    assert reason.message_en.startswith("contract not in force on the date of the event")


def test_deadline_and_amount_reasons_name_the_guarantee() -> None:
    result = check_coverage(
        dataclasses.replace(
            BASE, amount_claimed=eur("1500.00"), declared_on=EVENT + timedelta(days=40)
        )
    )
    (late,) = result.reasons
    assert (late.clause, late.effect) == ("FRAIS_MEDICAUX_ETRANGER", "refusal")
    assert "40 jours" in late.message_fr and "30 jours" in late.message_fr
    assert "FRAIS_MEDICAUX_ETRANGER" in late.message_en

    capped = check_coverage(dataclasses.replace(BASE, amount_claimed=eur("1500.00")))
    ceiling = capped.reasons[0]
    assert (ceiling.code, ceiling.effect) == ("ceiling_applied", "adjustment")
    assert "1 000,00 EUR" in ceiling.message_fr and "1,000.00 EUR" in ceiling.message_en


def test_unknown_currency_reason_is_undecided_and_names_the_currency() -> None:
    (reason,) = check_coverage(
        dataclasses.replace(BASE, amount_claimed=Money(D("1"), "XYZ"))
    ).reasons
    assert reason.effect == "undecided"
    assert "'XYZ'" in reason.message_fr and "'XYZ'" in reason.message_en


# --- required documents ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def claim_types() -> dict[str, ClaimType]:
    return load_claim_types(CONFIG / "claim_types.toml")


@pytest.mark.parametrize(
    ("claim_type", "facts", "expected"),
    [
        pytest.param(
            "medical_costs_abroad",
            ClaimFacts(),
            ["medical_invoice", "medical_certificate", "social_security_statement", "bank_details"],
            id="medical_no_condition",
        ),
        pytest.param("towing", ClaimFacts(), ["invoice"], id="towing_cause_unknown"),
        pytest.param("towing", ClaimFacts(cause="breakdown"), ["invoice"], id="towing_breakdown"),
        pytest.param(
            "towing", ClaimFacts(cause="theft"), ["invoice", "police_report"], id="towing_theft"
        ),
        pytest.param(
            "towing",
            ClaimFacts(cause=" Vandalism "),
            ["invoice", "police_report"],
            id="towing_vandalism_any_case",
        ),
        pytest.param(
            "home_assistance",
            ClaimFacts(amount_claimed=D("1000.00")),
            ["invoice"],
            id="home_amount_at_threshold",
        ),
        pytest.param(
            "home_assistance",
            ClaimFacts(amount_claimed=D("1000.01")),
            ["invoice", "quote"],
            id="home_amount_over_threshold",
        ),
        pytest.param(
            "home_assistance",
            ClaimFacts(cause="burglary", amount_claimed=D("2500")),
            ["invoice", "police_report", "quote"],
            id="home_both_conditions",
        ),
    ],
)
def test_required_documents(
    claim_types: dict[str, ClaimType], claim_type: str, facts: ClaimFacts, expected: list[str]
) -> None:
    assert required_documents(claim_types[claim_type], facts) == expected


def test_condition_needs_every_fact_and_adds_each_document_once() -> None:
    words = {t: DocumentNeed(t, t, t) for t in ("invoice", "quote")}
    both = Condition(require=("quote", "invoice"), causes=frozenset({"fire"}))
    both = dataclasses.replace(both, amount_claimed_over=D("500"))
    claim = ClaimType("x", "x", "x", ("invoice",), (both,), words)
    assert required_documents(claim, ClaimFacts(cause="fire")) == ["invoice"]
    assert required_documents(claim, ClaimFacts(amount_claimed=D("600"))) == ["invoice"]
    met = ClaimFacts(cause="fire", amount_claimed=D("600"))
    assert required_documents(claim, met) == ["invoice", "quote"]


# --- checklist ------------------------------------------------------------------------------


REQUIRED = ["medical_invoice", "medical_certificate", "social_security_statement", "bank_details"]


def test_checklist_keeps_required_order_and_lists_missing() -> None:
    result = checklist(
        REQUIRED, [("bank_details", 0.9, "ok"), ("medical_invoice", 0.8, "ok")], threshold=0.5
    )
    assert [i.doc_type for i in result.items] == REQUIRED
    assert [i.received for i in result.items] == [True, False, False, True]
    assert result.missing == ["medical_certificate", "social_security_statement"]
    assert not result.complete
    assert result.as_json()[0] == {"doc_type": "medical_invoice", "received": True}


@pytest.mark.parametrize(
    ("received", "counted"),
    [
        pytest.param([("bank_details", 0.49, "ok")], False, id="low_confidence"),
        pytest.param([("bank_details", 0.5, "ok")], True, id="confidence_at_threshold"),
        pytest.param([("bank_details", None, "ok")], False, id="no_confidence"),
        pytest.param([("bank_details", 0.99, "failed")], False, id="status_failed"),
        pytest.param([("bank_details", 0.99, "pending")], False, id="status_pending"),
        pytest.param([(None, 0.99, "ok")], False, id="no_doc_type"),
        pytest.param(
            [("bank_details", 0.2, "ok"), ("bank_details", 0.9, "ok")],
            True,
            id="duplicate_one_sure_enough",
        ),
        pytest.param(
            [ReceivedDocument("bank_details", 0.9, "ok")], True, id="received_document_object"
        ),
    ],
)
def test_checklist_counts_only_sure_and_readable_documents(
    received: list[Any], counted: bool
) -> None:
    result = checklist(["bank_details"], received, threshold=0.5)
    assert result.items[0].received is counted
    assert result.missing == ([] if counted else ["bank_details"])


def test_checklist_duplicates_are_fine() -> None:
    result = checklist(
        ["invoice", "bank_details", "invoice"],
        [("invoice", 0.9, "ok"), ("invoice", 0.95, "ok"), ("bank_details", 0.9, "ok")],
    )
    assert [i.doc_type for i in result.items] == ["invoice", "bank_details"]
    assert result.complete and result.missing == []


def test_checklist_default_threshold() -> None:
    assert checklist(["invoice"], [("invoice", 0.45, "ok")]).complete
    assert not checklist(["invoice"], [("invoice", 0.44, "ok")]).complete


# --- the shipped files ----------------------------------------------------------------------


def _demo_claim_types() -> set[str]:
    with (CONFIG / "demo.toml").open("rb") as fh:
        demo = tomllib.load(fh)
    used = {d["claim_type"] for d in demo.get("dossiers", [])}
    for contract in demo.get("contracts", []):
        for guarantee in contract.get("guarantees", []):
            used.update(guarantee.get("claim_types", []))
    return used


def test_shipped_claim_types_cover_the_demo_and_the_trade(
    claim_types: dict[str, ClaimType],
) -> None:
    assert _demo_claim_types() <= set(claim_types)
    assert {
        "medical_costs_abroad",
        "towing",
        "replacement_vehicle",
        "hotel_extended_stay",
        "early_return",
        "taxi",
        "baggage",
        "trip_cancellation",
        "home_assistance",
    } <= set(claim_types)


def test_shipped_claim_types_name_only_corpus_documents_and_describe_them(
    claim_types: dict[str, ClaimType],
) -> None:
    for claim in claim_types.values():
        assert claim.label_fr and claim.label_en
        every = [*claim.require, *(d for c in claim.conditional for d in c.require)]
        assert every, claim.code
        for doc_type in every:
            assert doc_type in DOC_TYPES
            assert claim.describe(doc_type, "fr") and claim.describe(doc_type, "en")
    medical = claim_types["medical_costs_abroad"]
    assert medical.describe("bank_details", "en") != medical.describe("bank_details", "fr")


def test_shipped_rates() -> None:
    rates = load_rates(CONFIG / "exchange_rates.toml")
    assert rates.as_of == date(2026, 11, 1)
    assert {"EUR", "USD", "GBP", "CHF", "MAD", "CAD"} <= set(rates.to_eur)
    assert rates.to_eur["EUR"] == 1
    assert rates.rate("EUR", "EUR").rate == 1


# --- loader errors --------------------------------------------------------------------------


CLAIM_OK = """
[claim_types.taxi]
label_fr = "Taxi"
label_en = "Taxi"
require = ["invoice"]
[claim_types.taxi.documents.invoice]
fr = "la facture"
en = "the invoice"
"""


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param("", r"missing the \[claim_types", id="no_claim_types"),
        pytest.param("claim_types = [", r"bad\.toml: ", id="not_toml"),
        pytest.param(
            CLAIM_OK.replace('["invoice"]', '["facture"]'),
            r"claim_types\.taxi\.require\[0\]: unknown document type 'facture'",
            id="unknown_doc_type",
        ),
        pytest.param(
            CLAIM_OK.replace('label_en = "Taxi"\n', ""),
            r"claim_types\.taxi: missing 'label_en'",
            id="missing_label",
        ),
        pytest.param(
            CLAIM_OK.replace('en = "the invoice"\n', ""),
            r"claim_types\.taxi\.documents\.invoice: missing 'en'",
            id="missing_description_language",
        ),
        pytest.param(
            CLAIM_OK.replace('require = ["invoice"]', 'require = ["invoice", "bank_details"]'),
            r"claim_types\.taxi\.documents: missing a description .* 'bank_details'",
            id="required_doc_not_described",
        ),
        pytest.param(
            CLAIM_OK.replace('require = ["invoice"]', "require = 3"),
            r"claim_types\.taxi\.require: expected a list",
            id="require_not_a_list",
        ),
        pytest.param(
            CLAIM_OK
            + '[[claim_types.taxi.conditional]]\nwhen = { amount_claimed_over = "lots" }\n'
            + 'require = ["invoice"]\n',
            r"claim_types\.taxi\.conditional\[0\]\.when\.amount_claimed_over: not an amount",
            id="bad_amount",
        ),
        pytest.param(
            CLAIM_OK
            + "[[claim_types.taxi.conditional]]\nwhen = { amount_claimed_over = 1000.5 }\n"
            + 'require = ["invoice"]\n',
            r"amount_claimed_over: not an amount \(write it as a string\)",
            id="float_amount",
        ),
        pytest.param(
            CLAIM_OK
            + '[[claim_types.taxi.conditional]]\nwhen = { amount_claimed_over = "-1" }\n'
            + 'require = ["invoice"]\n',
            r"amount_claimed_over: not an amount",
            id="negative_amount",
        ),
        pytest.param(
            CLAIM_OK
            + '[[claim_types.taxi.conditional]]\nwhen = { weather = ["rain"] }\n'
            + 'require = ["invoice"]\n',
            r"conditional\[0\]\.when: unknown fact 'weather'",
            id="unknown_fact",
        ),
        pytest.param(
            CLAIM_OK + '[[claim_types.taxi.conditional]]\nrequire = ["invoice"]\n',
            r"conditional\[0\]: missing 'when'",
            id="condition_without_when",
        ),
        pytest.param(
            CLAIM_OK
            + '[[claim_types.taxi.conditional]]\nwhen = { cause = ["theft"] }\n'
            + 'require = ["police"]\n',
            r"conditional\[0\]\.require\[0\]: unknown document type 'police'",
            id="conditional_unknown_doc_type",
        ),
    ],
)
def test_claim_type_loader_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ReferenceDataError, match=match) as caught:
        load_claim_types(path)
    assert "bad.toml" in str(caught.value)


def test_unknown_field_in_a_claim_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    text = CLAIM_OK.replace("[claim_types.taxi.doc", 'colour = "red"\n[claim_types.taxi.doc')
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ReferenceDataError, match=r"claim_types\.taxi: unknown field 'colour'"):
        load_claim_types(path)


RATES_OK = 'as_of = 2026-11-01\n[to_eur]\nEUR = "1"\nUSD = "0.86"\n'


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param(RATES_OK.replace('"0.86"', '"abc"'), r"to_eur\.USD: not an amount", id="bad"),
        pytest.param(RATES_OK.replace('"0.86"', '"0"'), r"to_eur\.USD: .*above zero", id="zero"),
        pytest.param(RATES_OK.replace('"0.86"', "0.86"), r"to_eur\.USD: .*string", id="float"),
        pytest.param(RATES_OK.replace("as_of = 2026-11-01\n", ""), r"as_of: missing", id="no_date"),
        pytest.param(
            RATES_OK.replace("2026-11-01", '"yesterday"'), r"as_of: .*not a date", id="bad_date"
        ),
        pytest.param(RATES_OK.replace("USD", "usd"), r"to_eur\.usd: not an ISO", id="bad_code"),
        pytest.param(RATES_OK.replace('EUR = "1"', 'EUR = "2"'), r"to_eur\.EUR", id="eur_not_1"),
        pytest.param("as_of = 2026-11-01\n", r"missing the \[to_eur\]", id="no_table"),
    ],
)
def test_rates_loader_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ReferenceDataError, match=match) as caught:
        load_rates(path)
    assert "bad.toml" in str(caught.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ReferenceDataError, match=r"nowhere\.toml"):
        load_rates(tmp_path / "nowhere.toml")
