"""Guarantee checks: required documents, the documents checklist, and what a contract covers."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from classifiers.corpus import DOC_TYPES
from models.reference import ReferenceDataError

__all__ = [
    "DEFAULT_DOC_THRESHOLD",
    "DEFAULT_REFUND_DAYS",
    "CheckItem",
    "Checklist",
    "ClaimFacts",
    "ClaimType",
    "Condition",
    "Coverage",
    "CoverageInputs",
    "DocumentNeed",
    "ExchangeRates",
    "GuaranteeTerms",
    "Money",
    "RateUsed",
    "Reason",
    "ReceivedDocument",
    "ReferenceDataError",
    "UnknownCurrencyError",
    "check_coverage",
    "checklist",
    "load_claim_types",
    "load_rates",
    "required_documents",
]

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
# Cross rates are shown to six places and the conversion uses the shown rate, so that a
# gestionnaire can redo the sum by hand and get the same cents.
RATE_PLACES = Decimal("0.000001")
DEFAULT_REFUND_DAYS = 730  # two-year prescription (Code des assurances, art. L114-1)
DEFAULT_DOC_THRESHOLD = 0.45  # same default as the classify step's review threshold
CONTRACT_CLAUSE = "contrat"
CONDITION_KEYS = frozenset({"cause", "amount_claimed_over"})


# --- reference data -------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentNeed:
    """A document a claim type may require, in plain words for the missing-documents reply."""

    doc_type: str
    description_fr: str
    description_en: str


@dataclass(frozen=True)
class Condition:
    """Extra documents required when every given fact holds (None = fact not tested)."""

    require: tuple[str, ...]
    causes: frozenset[str] | None = None
    amount_claimed_over: Decimal | None = None


@dataclass(frozen=True)
class ClaimType:
    code: str
    label_fr: str
    label_en: str
    require: tuple[str, ...]
    conditional: tuple[Condition, ...] = ()
    documents: Mapping[str, DocumentNeed] = field(default_factory=dict)

    def describe(self, doc_type: str, language: str = "fr") -> str:
        need = self.documents[doc_type]
        return need.description_en if language == "en" else need.description_fr


@dataclass(frozen=True)
class ExchangeRates:
    """Value in EUR of one unit of each currency, on ``as_of``."""

    as_of: date
    to_eur: Mapping[str, Decimal]

    def rate(self, from_currency: str, to_currency: str) -> RateUsed:
        for code in (from_currency, to_currency):
            if code not in self.to_eur:
                raise UnknownCurrencyError(code)
        value = (self.to_eur[from_currency] / self.to_eur[to_currency]).quantize(
            RATE_PLACES, ROUND_HALF_UP
        )
        return RateUsed(from_currency, to_currency, value, self.as_of)


class UnknownCurrencyError(KeyError):
    """A currency that the rates table does not list."""

    def __init__(self, currency: str) -> None:
        super().__init__(currency)
        self.currency = currency


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ReferenceDataError(f"{path}: {exc}") from exc


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ReferenceDataError(f"{where}: missing {key!r} (a non-empty string)")
    return value.strip()


def _amount(value: Any, where: str) -> Decimal:
    # Floats are refused: 0.1 in TOML is already inexact before it reaches Decimal.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ReferenceDataError(f"{where}: not an amount (write it as a string): {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ReferenceDataError(f"{where}: not an amount: {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise ReferenceDataError(f"{where}: not an amount: {value!r}")
    return amount


def _doc_types(value: Any, where: str, *, allow_empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise ReferenceDataError(f"{where}: expected a list of document types")
    for n, doc_type in enumerate(value):
        if doc_type not in DOC_TYPES:
            raise ReferenceDataError(
                f"{where}[{n}]: unknown document type {doc_type!r} (one of {', '.join(DOC_TYPES)})"
            )
    return tuple(dict.fromkeys(value))


def _condition(entry: Any, where: str) -> Condition:
    if not isinstance(entry, dict):
        raise ReferenceDataError(f"{where}: expected a table with 'when' and 'require'")
    when = entry.get("when")
    if not isinstance(when, dict) or not when:
        raise ReferenceDataError(f"{where}: missing 'when' (a table of facts)")
    unknown = set(when) - CONDITION_KEYS
    if unknown:
        raise ReferenceDataError(
            f"{where}.when: unknown fact {sorted(unknown)[0]!r} "
            f"(one of {', '.join(sorted(CONDITION_KEYS))})"
        )
    causes: frozenset[str] | None = None
    if "cause" in when:
        raw = when["cause"]
        values = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v.strip() for v in values)
        ):
            raise ReferenceDataError(f"{where}.when.cause: expected a list of causes")
        causes = frozenset(v.strip().lower() for v in values)
    over = (
        _amount(when["amount_claimed_over"], f"{where}.when.amount_claimed_over")
        if "amount_claimed_over" in when
        else None
    )
    require = _doc_types(entry.get("require"), f"{where}.require", allow_empty=False)
    return Condition(require=require, causes=causes, amount_claimed_over=over)


def _claim_type(code: str, entry: Any, where: str) -> ClaimType:
    if not isinstance(entry, dict):
        raise ReferenceDataError(f"{where}: expected a table")
    unknown = set(entry) - {"label_fr", "label_en", "require", "documents", "conditional"}
    if unknown:
        raise ReferenceDataError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    require = _doc_types(entry.get("require"), f"{where}.require", allow_empty=True)
    raw_conditions = entry.get("conditional", [])
    if not isinstance(raw_conditions, list):
        raise ReferenceDataError(f"{where}.conditional: expected [[{where}.conditional]] tables")
    conditions = tuple(
        _condition(c, f"{where}.conditional[{n}]") for n, c in enumerate(raw_conditions)
    )
    raw_docs = entry.get("documents", {})
    if not isinstance(raw_docs, dict):
        raise ReferenceDataError(f"{where}.documents: expected a table per document type")
    documents: dict[str, DocumentNeed] = {}
    for doc_type, words in raw_docs.items():
        doc_where = f"{where}.documents.{doc_type}"
        if doc_type not in DOC_TYPES:
            raise ReferenceDataError(f"{doc_where}: unknown document type {doc_type!r}")
        if not isinstance(words, dict):
            raise ReferenceDataError(f"{doc_where}: expected a table with 'fr' and 'en'")
        documents[doc_type] = DocumentNeed(
            doc_type, _text(words, "fr", doc_where), _text(words, "en", doc_where)
        )
    # The missing-documents reply must be able to name every document it may ask for.
    for doc_type in (*require, *(d for c in conditions for d in c.require)):
        if doc_type not in documents:
            raise ReferenceDataError(
                f"{where}.documents: missing a description (fr, en) of {doc_type!r}"
            )
    return ClaimType(
        code=code,
        label_fr=_text(entry, "label_fr", where),
        label_en=_text(entry, "label_en", where),
        require=require,
        conditional=conditions,
        documents=documents,
    )


def load_claim_types(path: Path) -> dict[str, ClaimType]:
    """Read ``claim_types.toml``; any mistake raises ReferenceDataError naming file and entry."""
    data = _read(path)
    table = data.get("claim_types")
    if not isinstance(table, dict) or not table:
        raise ReferenceDataError(f"{path}: missing the [claim_types.<code>] tables")
    return {
        code: _claim_type(code, entry, f"{path}: claim_types.{code}")
        for code, entry in table.items()
    }


def load_rates(path: Path) -> ExchangeRates:
    """Read ``exchange_rates.toml``; any mistake raises ReferenceDataError naming file and entry."""
    data = _read(path)
    as_of = data.get("as_of")
    # A datetime is a date subclass; a rate table is dated by day, so it is refused.
    if not isinstance(as_of, date) or hasattr(as_of, "hour"):
        raise ReferenceDataError(f"{path}: as_of: missing or not a date (as_of = 2026-11-01)")
    table = data.get("to_eur")
    if not isinstance(table, dict) or not table:
        raise ReferenceDataError(f"{path}: missing the [to_eur] table")
    rates: dict[str, Decimal] = {}
    for code, value in table.items():
        where = f"{path}: to_eur.{code}"
        if not (len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()):
            raise ReferenceDataError(f"{where}: not an ISO 4217 currency code")
        rate = _amount(value, where)
        if rate == 0:
            raise ReferenceDataError(f"{where}: a rate must be above zero")
        rates[code] = rate
    if rates.get("EUR") != 1:
        raise ReferenceDataError(f'{path}: to_eur.EUR: must be "1" (rates are to EUR)')
    return ExchangeRates(as_of=as_of, to_eur=rates)


# --- required documents and checklist -------------------------------------------------------


@dataclass(frozen=True)
class ClaimFacts:
    """What is known of the claim; None = not known yet, which never triggers a condition."""

    cause: str | None = None
    amount_claimed: Decimal | None = None  # in the contract currency


def _holds(condition: Condition, facts: ClaimFacts) -> bool:
    if condition.causes is not None and (
        facts.cause is None or facts.cause.strip().lower() not in condition.causes
    ):
        return False
    return condition.amount_claimed_over is None or (
        facts.amount_claimed is not None and facts.amount_claimed > condition.amount_claimed_over
    )


def required_documents(claim_type: ClaimType, facts: ClaimFacts | None = None) -> list[str]:
    """The claim type's documents, then those of every condition that holds, each once."""
    facts = facts or ClaimFacts()
    needed = list(claim_type.require)
    for condition in claim_type.conditional:
        if _holds(condition, facts):
            needed.extend(condition.require)
    return list(dict.fromkeys(needed))


@dataclass(frozen=True)
class ReceivedDocument:
    doc_type: str | None
    confidence: float | None
    status: str


@dataclass(frozen=True)
class CheckItem:
    doc_type: str
    received: bool


@dataclass(frozen=True)
class Checklist:
    items: list[CheckItem]
    missing: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing

    def as_json(self) -> list[dict[str, Any]]:
        """The shape stored in ``Dossier.checklist``."""
        return [{"doc_type": i.doc_type, "received": i.received} for i in self.items]


def checklist(
    required: Sequence[str],
    received: Iterable[ReceivedDocument | tuple[str | None, float | None, str]],
    threshold: float = DEFAULT_DOC_THRESHOLD,
) -> Checklist:
    """Tick each required type that a readable document classified surely enough provides.

    A document whose type is unsure or whose reading failed is left for a gestionnaire: ticking
    it would stop Guichet from asking for a document it may not have.
    """
    have: set[str] = set()
    for doc in received:
        doc_type, confidence, status = (
            (doc.doc_type, doc.confidence, doc.status) if isinstance(doc, ReceivedDocument) else doc
        )
        if doc_type and status == "ok" and confidence is not None and confidence >= threshold:
            have.add(doc_type)
    items = [CheckItem(t, t in have) for t in dict.fromkeys(required)]
    return Checklist(items=items, missing=[i.doc_type for i in items if not i.received])


# --- coverage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class GuaranteeTerms:
    """One guarantee of the contract, as ``models.tables.Guarantee`` holds it."""

    code: str
    claim_types: tuple[str, ...]
    ceiling: Decimal | None  # None = unlimited
    deductible: Decimal = Decimal("0")
    currency: str = "EUR"
    declaration_days: int | None = None  # None = no declaration deadline
    refund_days: int = DEFAULT_REFUND_DAYS


@dataclass(frozen=True)
class CoverageInputs:
    starts_on: date
    ends_on: date
    contract_currency: str
    guarantees: tuple[GuaranteeTerms, ...]
    claim_type: str
    event_date: date
    declared_on: date
    today: date
    amount_claimed: Money
    rates: ExchangeRates
    already_refunded: tuple[Money, ...] = ()  # Sécurité sociale, mutuelle...


@dataclass(frozen=True)
class RateUsed:
    from_currency: str
    to_currency: str
    rate: Decimal
    as_of: date


ReasonEffect = Literal["refusal", "adjustment", "undecided"]


@dataclass(frozen=True)
class Reason:
    """Why the result is what it is: the rule (code), the clause, and words for both languages.

    ``effect`` says whether it refuses the claim, only adjusts the amount, or leaves it open.
    """

    code: str
    clause: str
    message_fr: str
    message_en: str
    effect: ReasonEffect = "refusal"


@dataclass(frozen=True)
class Coverage:
    covered: bool
    decided: bool
    reasons: list[Reason]
    amount_claimed: Decimal | None
    amount_covered: Decimal | None
    currency: str
    rates_used: list[RateUsed]
    guarantee: str | None = None
    amount_already_refunded: Decimal | None = None


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


def _fr_date(day: date) -> str:
    return day.strftime("%d/%m/%Y")


def _fr_money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f}".replace(",", " ").replace(".", ",") + f" {currency}"


def _en_money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


class _Converter:
    """Converts into the contract currency and remembers each rate it used, once."""

    def __init__(self, rates: ExchangeRates, target: str) -> None:
        self.rates = rates
        self.target = target
        self.used: dict[str, RateUsed] = {}

    def __call__(self, money: Money) -> Decimal:
        if money.currency == self.target:
            return _cents(money.amount)
        rate = self.rates.rate(money.currency, self.target)
        self.used.setdefault(money.currency, rate)
        return _cents(money.amount * rate.rate)


def _eligibility(inputs: CoverageInputs) -> tuple[GuaranteeTerms | None, list[Reason]]:
    """The rules that refuse a claim whatever its amount, and the guarantee that applies."""
    reasons: list[Reason] = []
    if not inputs.starts_on <= inputs.event_date <= inputs.ends_on:
        reasons.append(
            Reason(
                "contract_not_in_force",
                CONTRACT_CLAUSE,
                f"contrat non en vigueur à la date de l'événement ({_fr_date(inputs.event_date)}"
                f" ; période du {_fr_date(inputs.starts_on)} au {_fr_date(inputs.ends_on)})",
                f"contract not in force on the date of the event ({inputs.event_date.isoformat()};"
                f" period {inputs.starts_on.isoformat()} to {inputs.ends_on.isoformat()})",
            )
        )
    # The first guarantee listing the claim type applies: a contract lists each claim type under
    # one guarantee, and the order of the contract decides if it ever lists it twice.
    guarantee = next((g for g in inputs.guarantees if inputs.claim_type in g.claim_types), None)
    if guarantee is None:
        reasons.append(
            Reason(
                "claim_type_not_covered",
                CONTRACT_CLAUSE,
                f"aucune garantie du contrat ne couvre ce type de sinistre ({inputs.claim_type})",
                f"no guarantee of the contract covers this type of claim ({inputs.claim_type})",
            )
        )
        return None, reasons
    clause = guarantee.code
    declared_after = (inputs.declared_on - inputs.event_date).days
    if guarantee.declaration_days is not None and declared_after > guarantee.declaration_days:
        reasons.append(
            Reason(
                "declaration_late",
                clause,
                f"déclaration hors délai : {declared_after} jours après l'événement, "
                f"délai de {guarantee.declaration_days} jours (garantie {clause})",
                f"claim declared too late: {declared_after} days after the event, "
                f"limit {guarantee.declaration_days} days (guarantee {clause})",
            )
        )
    elapsed = (inputs.today - inputs.event_date).days
    if elapsed > guarantee.refund_days:
        reasons.append(
            Reason(
                "refund_prescribed",
                clause,
                f"demande de remboursement prescrite : {elapsed} jours après l'événement, "
                f"délai de {guarantee.refund_days} jours (garantie {clause})",
                f"refund request time-barred: {elapsed} days after the event, "
                f"limit {guarantee.refund_days} days (guarantee {clause})",
            )
        )
    return guarantee, reasons


def check_coverage(inputs: CoverageInputs) -> Coverage:
    """Apply the contract's rules to one claim; every amount is in the contract currency.

    amount covered = max(0, min(ceiling, claimed - already refunded) - deductible), in cents
    rounded half up. Eligibility rules are all checked so that a refusal lists every reason.
    """
    guarantee, reasons = _eligibility(inputs)
    target = inputs.contract_currency
    convert = _Converter(inputs.rates, target)
    unknown: list[str] = []

    def converted(money: Money) -> Decimal | None:
        try:
            return convert(money)
        except UnknownCurrencyError as exc:
            if exc.currency not in unknown:
                unknown.append(exc.currency)
            return None

    claimed = converted(inputs.amount_claimed)
    parts = [converted(m) for m in inputs.already_refunded]
    refunded: Decimal | None = sum((p or ZERO for p in parts), ZERO)
    if None in parts:
        refunded = None
    ceiling: Decimal | None = None
    deductible: Decimal | None = ZERO
    if guarantee is not None:
        if guarantee.ceiling is not None:
            ceiling = converted(Money(guarantee.ceiling, guarantee.currency))
        deductible = converted(Money(guarantee.deductible, guarantee.currency))
    for currency in unknown:
        reasons.append(
            Reason(
                "unknown_currency",
                guarantee.code if guarantee else CONTRACT_CLAUSE,
                f"devise inconnue {currency!r} : pas de taux de change au "
                f"{_fr_date(inputs.rates.as_of)}, montant à vérifier par un gestionnaire",
                f"unknown currency {currency!r}: no exchange rate as of "
                f"{inputs.rates.as_of.isoformat()}, amount to be checked by a case handler",
                effect="undecided",
            )
        )

    def result(covered: bool, decided: bool, amount_covered: Decimal | None) -> Coverage:
        return Coverage(
            covered=covered,
            decided=decided,
            reasons=reasons,
            amount_claimed=claimed,
            amount_covered=amount_covered,
            currency=target,
            rates_used=list(convert.used.values()),
            guarantee=guarantee.code if guarantee else None,
            amount_already_refunded=refunded,
        )

    if any(r.effect == "refusal" for r in reasons):
        # A refusal does not hang on the amounts, so it is decided even with a currency unknown.
        return result(False, True, ZERO)
    if guarantee is None or claimed is None or refunded is None or deductible is None or unknown:
        return result(False, False, None)
    clause = guarantee.code
    remaining = claimed - refunded
    if refunded:
        reasons.append(
            Reason(
                "already_refunded",
                clause,
                f"déjà remboursé par la Sécurité sociale et la mutuelle : "
                f"{_fr_money(refunded, target)}",
                f"already refunded by Social Security and the mutual insurer: "
                f"{_en_money(refunded, target)}",
                effect="adjustment",
            )
        )
    base = remaining if ceiling is None else min(ceiling, remaining)
    if ceiling is not None and ceiling < remaining:
        reasons.append(
            Reason(
                "ceiling_applied",
                clause,
                f"plafond de la garantie {clause} : {_fr_money(ceiling, target)}",
                f"ceiling of guarantee {clause}: {_en_money(ceiling, target)}",
                effect="adjustment",
            )
        )
    if deductible > 0 and base > 0:
        reasons.append(
            Reason(
                "deductible_applied",
                clause,
                f"franchise de la garantie {clause} : {_fr_money(deductible, target)}",
                f"deductible of guarantee {clause}: {_en_money(deductible, target)}",
                effect="adjustment",
            )
        )
    return result(True, True, _cents(max(ZERO, base - deductible)))
