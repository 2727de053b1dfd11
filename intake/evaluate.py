"""The evaluate step: a dossier's required documents, checklist, missing list and coverage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from intake.coverage import (
    DEFAULT_DOC_THRESHOLD,
    ClaimFacts,
    ClaimType,
    Coverage,
    CoverageInputs,
    ExchangeRates,
    GuaranteeTerms,
    Money,
    RateUsed,
    UnknownCurrencyError,
    check_coverage,
    checklist,
    required_documents,
)
from models.clock import utcnow
from models.store import Store, audit
from models.tables import Contact, Contract, Document, Dossier

#: Documents whose total is what the beneficiary paid and asks back.
CLAIMED_TYPES = frozenset({"medical_invoice", "invoice", "transport_ticket"})
#: Documents whose total was already paid back by someone else (Sécurité sociale, mutuelle).
REFUNDED_TYPES = frozenset({"social_security_statement"})
#: Statuses in which the facts are frozen: a person decided, the machine no longer does.
SETTLED = frozenset({"approved", "refused", "paid", "closed"})


@dataclass(frozen=True)
class ReferenceRules:
    claim_types: dict[str, ClaimType]
    rates: ExchangeRates
    doc_threshold: float = DEFAULT_DOC_THRESHOLD


def _money(entities: dict[str, Any]) -> Money | None:
    amount, currency = entities.get("amount_total"), entities.get("currency")
    if not amount or not currency:
        return None
    try:
        return Money(Decimal(str(amount)), str(currency))
    except InvalidOperation:
        return None


def _counts(document: Document, threshold: float) -> bool:
    return document.status == "ok" and (document.doc_type_confidence or 0) >= threshold


def _total(
    amounts: list[Money], currency: str, rates: ExchangeRates, used: list[RateUsed]
) -> Money | None:
    """One amount in ``currency`` for several, converting with the rates table (and saying so)."""
    if not amounts:
        return None
    currencies = {m.currency for m in amounts}
    if len(currencies) == 1:
        return Money(sum((m.amount for m in amounts), Decimal("0")), amounts[0].currency)
    total = Decimal("0")
    for money in amounts:
        if money.currency == currency:
            total += money.amount
            continue
        rate = rates.rate(money.currency, currency)
        used.append(rate)
        total += (money.amount * rate.rate).quantize(Decimal("0.01"))
    return Money(total, currency)


def coverage_json(
    result: Coverage | None,
    why_not: str | None,
    extra_rates: list[RateUsed],
    *,
    amounts_known: bool = True,
) -> dict[str, Any]:
    """The coverage as stored on the dossier and read by the responders and the API."""
    if result is None:
        return {"decided": False, "covered": False, "reasons": [], "note": why_not}

    def amount(value: Decimal | None) -> str | None:
        return None if value is None or not amounts_known else f"{value:.2f}"

    rates = [*extra_rates, *result.rates_used]
    return {
        "decided": result.decided,
        "covered": result.covered,
        "guarantee": result.guarantee,
        "reasons": [
            {
                "code": r.code,
                "clause": r.clause,
                "message_fr": r.message_fr,
                "message_en": r.message_en,
                "effect": r.effect,
            }
            for r in result.reasons
        ],
        "amount_claimed": amount(result.amount_claimed),
        "amount_already_refunded": amount(result.amount_already_refunded),
        "amount_covered": amount(result.amount_covered),
        "currency": result.currency,
        "rates_used": [
            {
                "from": r.from_currency,
                "to": r.to_currency,
                "rate": str(r.rate),
                "as_of": r.as_of.isoformat(),
            }
            for r in rates
        ],
        "note": why_not,
    }


async def _evaluate_dossier(session: AsyncSession, dossier: Dossier, rules: ReferenceRules) -> None:
    documents = (
        await session.scalars(select(Document).where(Document.dossier_id == dossier.id))
    ).all()
    contacts = (
        await session.scalars(
            select(Contact).where(Contact.dossier_id == dossier.id).order_by(Contact.received_at)
        )
    ).all()
    contract = (
        await session.scalar(
            select(Contract)
            .where(Contract.id == dossier.contract_id)
            .options(selectinload(Contract.guarantees))
        )
        if dossier.contract_id
        else None
    )
    currency = contract.currency if contract else dossier.currency
    counted = [d for d in documents if _counts(d, rules.doc_threshold)]
    claimed = [m for d in counted if d.doc_type in CLAIMED_TYPES and (m := _money(d.entities))]
    if not claimed:
        # No invoice read yet: the amount the person wrote in their message is the claim.
        claimed = [m for c in contacts if (m := _money(c.entities))][-1:]
    refunded = [m for d in counted if d.doc_type in REFUNDED_TYPES and (m := _money(d.entities))]
    extra_rates: list[RateUsed] = []
    try:
        claim = _total(claimed, currency, rules.rates, extra_rates)
    except UnknownCurrencyError as exc:
        claim, extra_rates = None, []
        unknown_currency: str | None = exc.currency
    else:
        unknown_currency = None

    claim_type = rules.claim_types.get(dossier.claim_type)
    before = {
        "checklist": dossier.checklist,
        "missing": dossier.missing,
        "coverage": dossier.coverage,
    }
    if claim_type is None:
        dossier.checklist, dossier.missing = [], []
        result = None
        why_not: str | None = f"claim type {dossier.claim_type!r} has no rules in claim_types.toml"
    else:
        facts = ClaimFacts(
            cause=dossier.cause,
            amount_claimed=claim.amount if claim and claim.currency == currency else None,
        )
        required = required_documents(claim_type, facts)
        state = checklist(
            required,
            [(d.doc_type, d.doc_type_confidence, d.status) for d in documents],
            rules.doc_threshold,
        )
        dossier.checklist = [{"doc_type": i.doc_type, "received": i.received} for i in state.items]
        dossier.missing = list(state.missing)
        result, why_not = _coverage(dossier, contract, claim, refunded, rules, unknown_currency)
    dossier.coverage = coverage_json(result, why_not, extra_rates, amounts_known=claim is not None)
    if result is not None:
        dossier.amount_claimed = result.amount_claimed if claim else None
        dossier.amount_covered = result.amount_covered if claim else None
        dossier.currency = result.currency
    after = {
        "checklist": dossier.checklist,
        "missing": dossier.missing,
        "coverage": dossier.coverage,
    }
    if after != before:
        audit(
            session,
            "system",
            "dossier.evaluated",
            "dossier",
            dossier.ref,
            before=before,
            after=after,
        )
    if dossier.status == "awaiting_documents" and claim_type is not None and not dossier.missing:
        audit(
            session,
            "system",
            "dossier.status",
            "dossier",
            dossier.ref,
            before={"status": dossier.status},
            after={"status": "in_review"},
            note="every required document received",
        )
        dossier.status = "in_review"


def _coverage(
    dossier: Dossier,
    contract: Contract | None,
    claim: Money | None,
    refunded: list[Money],
    rules: ReferenceRules,
    unknown_currency: str | None,
) -> tuple[Coverage | None, str | None]:
    if contract is None:
        return None, "no contract on the dossier"
    if dossier.event_date is None:
        return None, "no event date on the dossier"
    declared_on = dossier.created_at.date() if dossier.created_at else utcnow().date()
    inputs = CoverageInputs(
        starts_on=contract.starts_on,
        ends_on=contract.ends_on,
        contract_currency=contract.currency,
        guarantees=tuple(
            GuaranteeTerms(
                code=g.code,
                claim_types=tuple(g.claim_types),
                ceiling=g.ceiling,
                deductible=g.deductible,
                currency=g.currency,
                declaration_days=g.declaration_days,
                refund_days=g.refund_days,
            )
            for g in contract.guarantees
        ),
        claim_type=dossier.claim_type,
        event_date=dossier.event_date,
        declared_on=declared_on,
        today=date.today(),
        # Eligibility (contract in force, guarantee, deadlines) is decided even before any
        # amount is known; the amounts are then shown as unknown.
        amount_claimed=claim or Money(Decimal("0"), contract.currency),
        rates=rules.rates,
        already_refunded=tuple(refunded),
    )
    result = check_coverage(inputs)
    note = None
    if unknown_currency:
        note = f"amount in {unknown_currency}, a currency missing from the rates table"
    elif claim is None:
        note = "no amount claimed yet"
    return result, note


async def evaluate(store: Store, rules: ReferenceRules, contact_id: int, next_step: str) -> None:
    """Re-evaluate the contact's dossier: each new document can complete it or change cover."""
    async with store.sessions() as session, session.begin():
        contact = await session.get_one(Contact, contact_id)
        if contact.dossier_id is not None:
            dossier = await session.get_one(Dossier, contact.dossier_id)
            if dossier.status not in SETTLED:
                await _evaluate_dossier(session, dossier, rules)
        contact.step = next_step
