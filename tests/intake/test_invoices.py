"""Provider invoices against the negotiated tariffs: each gap, the samples, and the intake step."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.edi import EdiIntake, read_interchange
from guichet.service import build_runner
from guichet.settings import PROJECT_ROOT, load_settings
from intake.invoices import (
    DossierFacts,
    InterchangeNotRecorded,
    InvoiceFacts,
    Line,
    check_invoice,
    check_invoices,
    invoice_facts,
    load_tariffs,
    tariffs_from_mapping,
)
from intake.pipeline import ContactPipeline
from intake.reading import OcrPool
from models.inbound import InboundContact
from models.jobs import CONTACT_JOB
from models.reference import ReferenceDataError
from models.store import Store
from models.tables import AuditEvent, Contact, Dossier, OutboundMessage, ProviderInvoice

EDI = Path(__file__).parent.parent / "data" / "edi"
TARIFFS = load_tariffs(PROJECT_ROOT / "config" / "tariffs.toml")
TOW = "62912910111069"  # DEPANNAGE RHONE EXPRESS: DEP01 170.55 (max 1), KM01 2.43 (max 100)
CENT = Decimal("0.01")


def invoice(
    *lines: tuple[str, str, str], provider: str = TOW, currency: str = "EUR", **totals: str
) -> InvoiceFacts:
    """An invoice whose arithmetic is right unless a total is given explicitly."""
    built = tuple(
        Line(
            number=str(n),
            service=service,
            quantity=Decimal(quantity),
            unit_price=Decimal(price),
            amount=(Decimal(quantity) * Decimal(price)).quantize(CENT, ROUND_HALF_UP),
            vat_rate=Decimal(20),
        )
        for n, (service, quantity, price) in enumerate(lines, 1)
    )
    lines_total = sum((line.amount or Decimal(0) for line in built), Decimal(0))
    vat = (lines_total * Decimal("0.2")).quantize(CENT, ROUND_HALF_UP)
    values = {
        "total_lines": lines_total,
        "taxable": lines_total,
        "vat": vat,
        "total": lines_total + vat,
    }
    values.update({k: Decimal(v) for k, v in totals.items()})
    return InvoiceFacts(
        provider_id=provider,
        number="F1",
        currency=currency,
        dossier_ref="AS-2026-010051",
        lines=built,
        **values,
    )


TOWING = DossierFacts("AS-2026-010051", "towing")
CLEAN = invoice(("DEP01", "1", "170.55"), ("KM01", "13", "2.43"))


def _wrong_line_amount() -> InvoiceFacts:
    line = dataclasses.replace(CLEAN.lines[1], amount=Decimal("35.00"))
    total = Decimal("170.55") + Decimal("35.00")
    vat = (total * Decimal("0.2")).quantize(CENT)
    return dataclasses.replace(
        CLEAN,
        lines=(CLEAN.lines[0], line),
        total_lines=total,
        taxable=total,
        vat=vat,
        total=total + vat,
    )


CASES = [
    ("clean", CLEAN, TOWING, None, set()),
    ("unknown provider", dataclasses.replace(CLEAN, provider_id="999"), TOWING, None,
     {"unknown_provider"}),
    ("provider by SIRET unknown too", dataclasses.replace(CLEAN, provider_id=""), TOWING, None,
     {"unknown_provider"}),
    ("unknown dossier", CLEAN, None, None, {"unknown_dossier"}),
    ("duplicate", CLEAN, TOWING, "provider invoice 4", {"duplicate_invoice"}),
    ("unknown service", invoice(("DEP01", "1", "170.55"), ("XX01", "1", "10.00")), TOWING,
     None, {"unknown_service"}),
    ("price above tariff", invoice(("DEP01", "1", "190.00")), TOWING, None,
     {"price_above_tariff"}),
    ("price below tariff is fine", invoice(("DEP01", "1", "150.00")), TOWING, None, set()),
    ("more km than the tariff allows", invoice(("KM01", "140", "2.43")), TOWING, None,
     {"quantity_above_tariff"}),
    ("second tow on the same dossier", invoice(("DEP01", "1", "170.55")),
     DossierFacts("AS-2026-010051", "towing", {"DEP01": Decimal(1)}), None,
     {"quantity_above_tariff"}),
    ("tow billed on a medical dossier", invoice(("DEP01", "1", "170.55")),
     DossierFacts("AS-2026-010051", "medical_costs_abroad"), None, {"claim_type_mismatch"}),
    ("line amount is not quantity x price", _wrong_line_amount(), TOWING, None,
     {"line_amount_mismatch"}),
    ("lines do not add up", dataclasses.replace(CLEAN, total_lines=Decimal("210.00")), TOWING,
     None, {"lines_total_mismatch", "taxable_mismatch"}),
    ("wrong VAT", dataclasses.replace(CLEAN, vat=Decimal("45.00"), total=Decimal("247.14")),
     TOWING, None, {"vat_mismatch"}),
    ("total is not taxable + VAT", dataclasses.replace(CLEAN, total=Decimal("250.00")), TOWING,
     None, {"total_mismatch"}),
    ("invoiced in another currency", dataclasses.replace(CLEAN, currency="CHF"), TOWING, None,
     {"currency_mismatch"}),
    ("no invoice total", dataclasses.replace(CLEAN, total=None), TOWING, None,
     {"missing_total"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "dossier", "duplicate", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_gap(
    facts: InvoiceFacts, dossier: DossierFacts | None, duplicate: str | None, expected: set[str]
) -> None:
    gaps = check_invoice(facts, TARIFFS, dossier, duplicate_of=duplicate)
    assert {gap.code for gap in gaps} == expected
    assert all(gap.reason for gap in gaps)


def test_a_gap_about_a_line_names_it() -> None:
    [gap] = check_invoice(invoice(("DEP01", "1", "190.00")), TARIFFS, TOWING)
    assert gap.to_json() == {
        "code": "price_above_tariff",
        "reason": "line 1: DEP01 at 190.00, tariff 170.55",
        "line": "1",
    }


CLAIM_TYPES = {
    "edi-0001": "towing",
    "edi-0002": "towing",
    "edi-0003": "towing",
    "edi-0004": "towing",
    "edi-0005": "medical_costs_abroad",
    "edi-0006": "medical_costs_abroad",
}


@pytest.mark.parametrize("name", sorted(CLAIM_TYPES))
def test_the_samples_agree_with_the_tariffs(name: str) -> None:
    [message] = read_interchange((EDI / f"{name}.edi").read_bytes()).messages
    row = ProviderInvoice(
        provider_id=message.provider_id,
        number=message.number,
        currency=message.currency,
        dossier_ref=message.dossier_ref,
        lines=[line.to_json() for line in message.lines],
        total_lines=message.total_lines,
        taxable=message.taxable,
        vat=message.vat,
        total=message.total,
    )
    dossier = DossierFacts(message.dossier_ref, CLAIM_TYPES[name])
    assert check_invoice(invoice_facts(row), TARIFFS, dossier) == []


def test_tariffs_refuse_float_prices_and_missing_names() -> None:
    with pytest.raises(ReferenceDataError, match=r"providers\.1\.services\.A\.unit_price"):
        tariffs_from_mapping(
            {"providers": {"1": {"name": "x", "services": {"A": {"unit_price": 1.5}}}}}
        )
    with pytest.raises(ReferenceDataError, match="needs a name"):
        tariffs_from_mapping({"providers": {"1": {}}})
    found = tariffs_from_mapping(
        {"providers": {"X1": {"name": "x", "siret": "123", "services": {}}}}
    )
    assert found.provider("123") is found.provider("X1") is not None


# --- the intake step, on SQLite and PostgreSQL ---------------------------------------------


async def _dossier(store: Store, ref: str, claim_type: str) -> None:
    async with store.sessions() as session, session.begin():
        session.add(Dossier(ref=ref, claim_type=claim_type))


async def _receive(store: Store, tmp_path: Path, raw: bytes) -> int:
    received = await EdiIntake(store, tmp_path / "edi-out").receive(raw)
    return received.contact_id


async def test_step_validates_links_and_audits(store: Store, tmp_path: Path) -> None:
    await _dossier(store, "AS-2026-010051", "towing")
    contact_id = await _receive(store, tmp_path, (EDI / "edi-0001.edi").read_bytes())
    await check_invoices(store, TARIFFS, contact_id, "match")
    async with store.sessions() as session:
        invoice_row = await session.scalar(select(ProviderInvoice))
        contact = await session.get_one(Contact, contact_id)
        dossier = await session.scalar(select(Dossier))
        events = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.object_type == "dossier", AuditEvent.object_id == "AS-2026-010051"
                )
            )
        ).all()
    assert invoice_row is not None and dossier is not None
    assert (invoice_row.status, invoice_row.gaps, invoice_row.dossier_id) == (
        "valid",
        [],
        dossier.id,
    )
    assert (contact.step, contact.dossier_id, contact.status) == ("match", dossier.id, "received")
    assert contact.entities["dossier_ref"] == "AS-2026-010051"
    assert [e.action for e in events] == ["dossier.provider_invoice"]
    assert events[0].after is not None and events[0].after["total"] == "242.57"
    # A replay changes nothing and adds no second event.
    await check_invoices(store, TARIFFS, contact_id, "match")
    async with store.sessions() as session:
        count = len(
            (
                await session.scalars(
                    select(AuditEvent).where(AuditEvent.action == "dossier.provider_invoice")
                )
            ).all()
        )
    assert count == 1


async def test_same_invoice_in_a_new_interchange_goes_to_review(
    store: Store, tmp_path: Path
) -> None:
    await _dossier(store, "AS-2026-010051", "towing")
    raw = (EDI / "edi-0001.edi").read_bytes()
    first = await _receive(store, tmp_path, raw)
    await check_invoices(store, TARIFFS, first, "match")
    second = await _receive(store, tmp_path, raw.replace(b"46782", b"46783"))
    assert second != first
    await check_invoices(store, TARIFFS, second, "match")
    async with store.sessions() as session:
        again = await session.scalar(
            select(ProviderInvoice).where(ProviderInvoice.contact_id == second)
        )
        contact = await session.get_one(Contact, second)
    assert again is not None and again.status == "to_review"
    assert {g["code"] for g in again.gaps} == {"duplicate_invoice", "quantity_above_tariff"}
    assert contact.status == "needs_review"
    assert contact.status_reason is not None and "already received" in contact.status_reason


async def test_unknown_dossier_and_rejected_interchange_go_to_review(
    store: Store, tmp_path: Path
) -> None:
    unknown = await _receive(store, tmp_path, (EDI / "edi-0002.edi").read_bytes())
    rejected = await _receive(store, tmp_path, (EDI / "bad-unz-count.edi").read_bytes())
    for contact_id in (unknown, rejected):
        await check_invoices(store, TARIFFS, contact_id, "match")
    async with store.sessions() as session:
        first = await session.get_one(Contact, unknown)
        second = await session.get_one(Contact, rejected)
        rows = (await session.scalars(select(ProviderInvoice).order_by(ProviderInvoice.id))).all()
    assert first.status == "needs_review" and "AS-2026-001078 not found" in (
        first.status_reason or ""
    )
    assert second.status == "needs_review" and "UNZ counts '2'" in (second.status_reason or "")
    assert [r.status for r in rows] == ["to_review", "rejected"]


async def test_other_channels_pass_and_a_missing_interchange_is_retried(store: Store) -> None:
    email = await store.accept_contact(
        InboundContact(channel="email", natural_key="<a@b>", sender="a@b.example"), b"raw"
    )
    edi = await store.accept_contact(
        InboundContact(channel="edi", natural_key="X:1", sender="X"), b"UNB+"
    )
    await check_invoices(store, TARIFFS, email.contact_id, "match")
    with pytest.raises(InterchangeNotRecorded):
        await check_invoices(store, TARIFFS, edi.contact_id, "match")
    async with store.sessions() as session:
        assert (await session.get_one(Contact, email.contact_id)).step == "match"
        assert (await session.get_one(Contact, edi.contact_id)).step != "match"


async def test_an_edi_contact_through_the_whole_pipeline(store: Store, tmp_path: Path) -> None:
    await _dossier(store, "AS-2026-010051", "towing")
    contact_id = await _receive(store, tmp_path, (EDI / "edi-0001.edi").read_bytes())
    settings = load_settings(environ={}, home=str(tmp_path), smtp_relay="127.0.0.1:9")
    ocr = OcrPool(1)
    try:
        runner = build_runner(settings, store, ocr)
        pipeline = runner.handlers[CONTACT_JOB]
        assert isinstance(pipeline, ContactPipeline)
        # The composition root passes the tariffs it read from config/ in the same way.
        pipeline.ctx = dataclasses.replace(pipeline.ctx, tariffs=TARIFFS)
        await runner.run_pending()
    finally:
        await asyncio.to_thread(ocr.shutdown)
    async with store.sessions() as session:
        contact = await session.get_one(Contact, contact_id)
        invoice_row = await session.scalar(select(ProviderInvoice))
        replies = (
            await session.scalars(
                select(OutboundMessage).where(OutboundMessage.contact_id == contact_id)
            )
        ).all()
    assert (contact.step, contact.status, contact.intent) == (
        "done",
        "processed",
        "provider_invoice",
    )
    assert invoice_row is not None and invoice_row.status == "valid"
    assert contact.dossier_id == invoice_row.dossier_id is not None
    assert [r.purpose for r in replies] == []
