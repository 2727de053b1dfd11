"""Provider invoices against negotiated tariffs: the rules (pure) and the step applying them."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from models.clock import utcnow
from models.reference import ReferenceDataError
from models.store import Store, audit
from models.tables import Contact, Dossier, EdiInterchange, ProviderInvoice

CENT = Decimal("0.01")
#: VAT computed per rate may differ by a cent from VAT rounded line by line.
VAT_TOLERANCE = Decimal("0.01")
#: Invoices that count as received: a rejected message was never accepted.
COUNTED = ("received", "valid", "to_review")


# --- tariffs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tariff:
    service: str
    unit_price: Decimal
    unit: str = ""
    label: str = ""
    #: The most one dossier may be billed for this service; None for no limit.
    max_quantity: Decimal | None = None
    #: Claim types the service belongs to; empty for any.
    claim_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Provider:
    id: str
    name: str
    currency: str = "EUR"
    siret: str = ""
    services: Mapping[str, Tariff] = field(default_factory=dict)


@dataclass(frozen=True)
class Tariffs:
    """Providers by their EDI id and by their SIRET."""

    providers: Mapping[str, Provider] = field(default_factory=dict)

    def provider(self, identifier: str) -> Provider | None:
        if not identifier:
            return None
        found = self.providers.get(identifier)
        if found is not None:
            return found
        return next((p for p in self.providers.values() if p.siret == identifier), None)


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, float | bool):
        raise ReferenceDataError(f'{where}: write amounts as strings ("12.50"), not {value!r}')
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ReferenceDataError(f"{where}: {value!r} is not a decimal amount") from exc


def tariffs_from_mapping(data: Mapping[str, Any], source: str = "tariffs") -> Tariffs:
    """Build the tariffs from the parsed TOML; any mistake names the entry and the field."""
    table = data.get("providers")
    if not isinstance(table, dict):
        raise ReferenceDataError(f"{source}: missing the [providers.<id>] tables")
    providers: dict[str, Provider] = {}
    for identifier, entry in table.items():
        where = f"{source}: providers.{identifier}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ReferenceDataError(f"{where}: needs a name")
        services: dict[str, Tariff] = {}
        for code, service in (entry.get("services") or {}).items():
            at = f"{where}.services.{code}"
            if not isinstance(service, dict) or "unit_price" not in service:
                raise ReferenceDataError(f"{at}: needs a unit_price")
            claim_types = service.get("claim_types", [])
            if not isinstance(claim_types, list):
                raise ReferenceDataError(f"{at}: claim_types must be a list")
            maximum = service.get("max_quantity")
            services[code] = Tariff(
                service=code,
                unit_price=_decimal(service["unit_price"], f"{at}.unit_price"),
                unit=str(service.get("unit", "")),
                label=str(service.get("label", "")),
                max_quantity=None if maximum is None else _decimal(maximum, f"{at}.max_quantity"),
                claim_types=tuple(str(c) for c in claim_types),
            )
        providers[str(identifier)] = Provider(
            id=str(identifier),
            name=entry["name"],
            currency=str(entry.get("currency", "EUR")).upper(),
            siret=str(entry.get("siret", "")),
            services=services,
        )
    return Tariffs(providers)


def load_tariffs(path: Path) -> Tariffs:
    """Read ``config/tariffs.toml`` once, at start-up."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ReferenceDataError(f"{path}: {exc}") from exc
    return tariffs_from_mapping(data, str(path))


# --- the check -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    number: str
    service: str
    quantity: Decimal | None
    unit_price: Decimal | None
    amount: Decimal | None
    vat_rate: Decimal | None = None
    unit: str = ""


@dataclass(frozen=True)
class InvoiceFacts:
    provider_id: str
    number: str
    currency: str
    dossier_ref: str
    lines: tuple[Line, ...]
    total_lines: Decimal | None
    taxable: Decimal | None
    vat: Decimal | None
    total: Decimal | None


@dataclass(frozen=True)
class DossierFacts:
    ref: str
    claim_type: str
    #: Quantities of each service the same provider already billed on the dossier.
    billed: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class Gap:
    """One way the invoice differs from what was agreed; each sends it to review."""

    code: str
    reason: str
    line: str | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"code": self.code, "reason": self.reason}
        if self.line is not None:
            found["line"] = self.line
        return found


def check_invoice(
    invoice: InvoiceFacts,
    tariffs: Tariffs,
    dossier: DossierFacts | None,
    *,
    duplicate_of: str | None = None,
) -> list[Gap]:
    """Every gap between the invoice and the tariffs, the dossier and its own arithmetic."""
    gaps: list[Gap] = []
    provider = tariffs.provider(invoice.provider_id)
    if provider is None:
        gaps.append(
            Gap("unknown_provider", f"provider {invoice.provider_id or '?'} has no tariffs")
        )
    if dossier is None:
        reason = (
            f"dossier {invoice.dossier_ref} not found"
            if invoice.dossier_ref
            else "the invoice names no dossier"
        )
        gaps.append(Gap("unknown_dossier", reason))
    if duplicate_of is not None:
        gaps.append(
            Gap(
                "duplicate_invoice",
                f"invoice {invoice.number} of provider {invoice.provider_id} was already"
                f" received ({duplicate_of})",
            )
        )
    if provider is not None and invoice.currency and invoice.currency != provider.currency:
        gaps.append(
            Gap(
                "currency_mismatch",
                f"invoiced in {invoice.currency}, the tariff is in {provider.currency}",
            )
        )
    gaps += _line_gaps(invoice, provider, dossier)
    gaps += _total_gaps(invoice)
    return gaps


def _line_gaps(
    invoice: InvoiceFacts, provider: Provider | None, dossier: DossierFacts | None
) -> Iterable[Gap]:
    quantities: dict[str, Decimal] = dict(dossier.billed) if dossier else {}
    for line in invoice.lines:
        number = line.number
        if line.quantity is not None and line.unit_price is not None and line.amount is not None:
            expected = (line.quantity * line.unit_price).quantize(CENT, ROUND_HALF_UP)
            if expected != line.amount:
                yield Gap(
                    "line_amount_mismatch",
                    f"line {number}: {line.quantity} x {line.unit_price} = {expected},"
                    f" invoiced {line.amount}",
                    number,
                )
        if line.quantity is None or line.amount is None:
            yield Gap("line_incomplete", f"line {number}: no quantity or no amount", number)
        if provider is None:
            continue
        tariff = provider.services.get(line.service)
        if tariff is None:
            yield Gap(
                "unknown_service",
                f"line {number}: service {line.service or '?'} is not in the tariff of"
                f" {provider.name}",
                number,
            )
            continue
        if line.unit_price is not None and line.unit_price > tariff.unit_price:
            yield Gap(
                "price_above_tariff",
                f"line {number}: {line.service} at {line.unit_price}, tariff {tariff.unit_price}",
                number,
            )
        if line.quantity is not None:
            so_far = quantities.get(line.service, Decimal(0)) + line.quantity
            quantities[line.service] = so_far
            if tariff.max_quantity is not None and so_far > tariff.max_quantity:
                yield Gap(
                    "quantity_above_tariff",
                    f"line {number}: {so_far} {tariff.unit or 'units'} of {line.service} on"
                    f" the dossier, the tariff allows {tariff.max_quantity}",
                    number,
                )
        if (
            dossier is not None
            and tariff.claim_types
            and dossier.claim_type not in (tariff.claim_types)
        ):
            yield Gap(
                "claim_type_mismatch",
                f"line {number}: {line.service} is for {', '.join(tariff.claim_types)}, dossier"
                f" {dossier.ref} is {dossier.claim_type}",
                number,
            )


def _total_gaps(invoice: InvoiceFacts) -> Iterable[Gap]:
    missing = [
        name
        for name, value in (
            ("lines total (MOA 79)", invoice.total_lines),
            ("taxable amount (MOA 125)", invoice.taxable),
            ("VAT (MOA 124)", invoice.vat),
            ("invoice total (MOA 77)", invoice.total),
        )
        if value is None
    ]
    if missing:
        yield Gap("missing_total", f"the invoice gives no {', '.join(missing)}")
    lines_sum = sum((line.amount or Decimal(0) for line in invoice.lines), Decimal(0))
    if invoice.total_lines is not None and lines_sum != invoice.total_lines:
        yield Gap(
            "lines_total_mismatch",
            f"the lines add up to {lines_sum}, the invoice says {invoice.total_lines}",
        )
    if (
        invoice.taxable is not None
        and invoice.total_lines is not None
        and invoice.taxable != invoice.total_lines
    ):
        yield Gap(
            "taxable_mismatch",
            f"taxable amount {invoice.taxable} differs from the lines total {invoice.total_lines}",
        )
    if invoice.vat is not None:
        by_rate: dict[Decimal, Decimal] = {}
        for line in invoice.lines:
            rate = line.vat_rate if line.vat_rate is not None else Decimal(0)
            by_rate[rate] = by_rate.get(rate, Decimal(0)) + (line.amount or Decimal(0))
        expected = sum(
            ((base * rate / 100).quantize(CENT, ROUND_HALF_UP) for rate, base in by_rate.items()),
            Decimal(0),
        )
        if abs(expected - invoice.vat) > VAT_TOLERANCE:
            yield Gap("vat_mismatch", f"VAT should be {expected}, the invoice says {invoice.vat}")
    if (
        invoice.total is not None
        and invoice.taxable is not None
        and invoice.vat is not None
        and invoice.taxable + invoice.vat != invoice.total
    ):
        yield Gap(
            "total_mismatch",
            f"{invoice.taxable} + VAT {invoice.vat} = {invoice.taxable + invoice.vat},"
            f" the invoice says {invoice.total}",
        )


# --- the intake step -----------------------------------------------------------------------


class InterchangeNotRecorded(RuntimeError):
    """The EDI adapter records the invoices just after the contact: try again shortly."""


def _amount(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def invoice_facts(invoice: ProviderInvoice) -> InvoiceFacts:
    return InvoiceFacts(
        provider_id=invoice.provider_id,
        number=invoice.number,
        currency=invoice.currency,
        dossier_ref=invoice.dossier_ref,
        lines=tuple(
            Line(
                number=str(line.get("number", "")),
                service=str(line.get("service", "")),
                quantity=_amount(line.get("quantity")),
                unit_price=_amount(line.get("unit_price")),
                amount=_amount(line.get("amount")),
                vat_rate=_amount(line.get("vat_rate")),
                unit=str(line.get("unit", "")),
            )
            for line in invoice.lines
        ),
        total_lines=invoice.total_lines,
        taxable=invoice.taxable,
        vat=invoice.vat,
        total=invoice.total,
    )


async def check_invoices(store: Store, tariffs: Tariffs, contact_id: int, next_step: str) -> None:
    """For an EDI contact: check each invoice, link it to its dossier (audit event on the
    dossier), and send the contact to review when an invoice has gaps or was rejected. Other
    contacts pass through. Safe to replay: a checked invoice is not checked again."""
    async with store.sessions() as session, session.begin():
        contact = await session.get_one(Contact, contact_id, with_for_update=True)
        if contact.channel != "edi":
            contact.step = next_step
            return
        interchange = await session.scalar(
            select(EdiInterchange).where(EdiInterchange.contact_id == contact_id)
        )
        if interchange is None:
            raise InterchangeNotRecorded(f"contact {contact_id}: interchange not recorded yet")
        invoices = (
            await session.scalars(
                select(ProviderInvoice)
                .where(ProviderInvoice.contact_id == contact_id)
                .order_by(ProviderInvoice.id)
            )
        ).all()
        reviews: list[str] = []
        if interchange.status == "rejected" and interchange.error:
            reviews.append(f"EDIFACT interchange rejected: {interchange.error}")
        dossiers: set[int] = set()
        for invoice in invoices:
            if invoice.status == "received":
                await _check_one(session, tariffs, invoice)
            if invoice.dossier_id is not None:
                dossiers.add(invoice.dossier_id)
            if invoice.status == "rejected" and interchange.status != "rejected":
                reviews.append(f"invoice {invoice.number or invoice.message_ref}: {invoice.error}")
            elif invoice.status == "to_review":
                gaps = "; ".join(str(g.get("reason")) for g in invoice.gaps)
                reviews.append(f"invoice {invoice.number}: {gaps}")
        first = invoices[0] if invoices else None
        if first is not None:
            contact.entities = {
                "dossier_ref": first.dossier_ref,
                "invoice_number": first.number,
                "invoice_total": None if first.total is None else f"{first.total:.2f}",
                "currency": first.currency,
            }
        if len(dossiers) == 1 and contact.dossier_id is None:
            contact.dossier_id = dossiers.pop()
            contact.match_rule = "EDI invoice dossier reference"
        if reviews and contact.status in ("received", "processing", "needs_review"):
            before = contact.status
            contact.status = "needs_review"
            contact.status_reason = "; ".join(
                r
                for r in (contact.status_reason if before == "needs_review" else None, *reviews)
                if r
            )
        audit(
            session,
            "intake:invoices",
            "contact.invoices_checked",
            "contact",
            contact.id,
            after={"invoices": {str(i.id): i.status for i in invoices}},
            note="; ".join(reviews),
        )
        contact.step = next_step


async def _check_one(session: Any, tariffs: Tariffs, invoice: ProviderInvoice) -> None:
    dossier = None
    if invoice.dossier_ref:
        dossier = await session.scalar(select(Dossier).where(Dossier.ref == invoice.dossier_ref))
    duplicate = await session.scalar(
        select(func.min(ProviderInvoice.id)).where(
            ProviderInvoice.provider_id == invoice.provider_id,
            ProviderInvoice.number == invoice.number,
            ProviderInvoice.id < invoice.id,
            ProviderInvoice.status.in_(COUNTED),
        )
    )
    facts = None
    if dossier is not None:
        rows = await session.scalars(
            select(ProviderInvoice).where(
                ProviderInvoice.dossier_id == dossier.id,
                ProviderInvoice.provider_id == invoice.provider_id,
                ProviderInvoice.id != invoice.id,
                ProviderInvoice.status.in_(("valid", "to_review")),
            )
        )
        billed: dict[str, Decimal] = {}
        for other in rows:
            if any(g.get("code") == "duplicate_invoice" for g in other.gaps):
                continue  # a second copy does not bill the services twice
            for line in other.lines:
                quantity = _amount(line.get("quantity"))
                if quantity is not None:
                    service = str(line.get("service", ""))
                    billed[service] = billed.get(service, Decimal(0)) + quantity
        facts = DossierFacts(dossier.ref, dossier.claim_type, billed)
    gaps = check_invoice(
        invoice_facts(invoice),
        tariffs,
        facts,
        duplicate_of=None if duplicate is None else f"provider invoice {duplicate}",
    )
    invoice.gaps = [gap.to_json() for gap in gaps]
    invoice.status = "to_review" if gaps else "valid"
    invoice.checked_at = utcnow()
    if dossier is not None:
        invoice.dossier_id = dossier.id
        audit(
            session,
            "intake:invoices",
            "dossier.provider_invoice",
            "dossier",
            dossier.ref,
            after={
                "invoice_id": invoice.id,
                "provider": invoice.provider_id,
                "number": invoice.number,
                "total": None if invoice.total is None else f"{invoice.total:.2f}",
                "currency": invoice.currency,
                "status": invoice.status,
            },
            note="; ".join(gap.reason for gap in gaps),
        )
