"""The evaluate step on a real store: checklist converging, coverage with its reasons."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from guichet.settings import PROJECT_ROOT
from intake.coverage import load_claim_types, load_rates
from intake.evaluate import ReferenceRules, evaluate
from models.inbound import InboundAttachment, InboundContact
from models.reference import load_reference_data, read_reference_file
from models.store import Store
from models.tables import AuditEvent, Contact, Contract, Document, Dossier

RULES = ReferenceRules(
    claim_types=load_claim_types(PROJECT_ROOT / "config" / "claim_types.toml"),
    rates=load_rates(PROJECT_ROOT / "config" / "exchange_rates.toml"),
)
TODAY = date.today()  # the step counts deadlines from the local date too


@pytest.fixture
async def dossier_store(store: Store) -> Store:
    async with store.sessions() as session, session.begin():
        await load_reference_data(
            session, read_reference_file(PROJECT_ROOT / "config" / "demo.toml")
        )
        dossier = await session.scalar(select(Dossier).where(Dossier.ref == "AS-2026-000001"))
        assert dossier is not None
        # Dates relative to today, so that deadlines do not depend on when the test runs.
        dossier.event_date = TODAY - timedelta(days=10)
        dossier.created_at = datetime.now(UTC) - timedelta(days=9)
        contract = await session.get_one(Contract, dossier.contract_id)
        contract.starts_on, contract.ends_on = (
            TODAY - timedelta(days=100),
            TODAY + timedelta(days=100),
        )
    return store


async def _send(
    store: Store, key: str, documents: list[tuple[str, str, float, dict[str, Any]]]
) -> int:
    """A contact on the dossier with documents already read and classified."""
    accepted = await store.accept_contact(
        InboundContact(
            channel="email",
            natural_key=key,
            sender="jean.dupont@example.org",
            attachments=tuple(
                InboundAttachment(f"{n}.pdf", "application/pdf", f"%PDF {key} {n}".encode())
                for n in range(len(documents))
            ),
        ),
        key.encode(),
    )
    async with store.sessions() as session, session.begin():
        dossier_id = await session.scalar(select(Dossier.id).where(Dossier.ref == "AS-2026-000001"))
        contact = await session.get_one(Contact, accepted.contact_id)
        contact.dossier_id = dossier_id
        rows = (
            await session.scalars(
                select(Document)
                .where(Document.contact_id == contact.id)
                .order_by(Document.position)
            )
        ).all()
        for row, (doc_type, status, confidence, entities) in zip(rows, documents, strict=True):
            row.dossier_id, row.doc_type, row.status = dossier_id, doc_type, status
            row.doc_type_confidence, row.entities = confidence, entities
    await evaluate(store, RULES, accepted.contact_id, "respond")
    return accepted.contact_id


async def _dossier(store: Store) -> Dossier:
    async with store.sessions() as session:
        dossier = await session.scalar(select(Dossier).where(Dossier.ref == "AS-2026-000001"))
        assert dossier is not None
        return dossier


async def test_checklist_converges_and_coverage_is_computed(dossier_store: Store) -> None:
    invoice = {"amount_total": "1250.40", "currency": "EUR"}
    await _send(dossier_store, "e1", [("medical_invoice", "ok", 0.9, invoice)])
    dossier = await _dossier(dossier_store)
    assert dossier.missing == ["medical_certificate", "social_security_statement", "bank_details"]
    assert dossier.checklist[0] == {"doc_type": "medical_invoice", "received": True}
    assert dossier.coverage["covered"] is True and dossier.coverage["decided"] is True
    assert dossier.coverage["amount_claimed"] == "1250.40"
    assert dossier.coverage["amount_covered"] == "1220.40"  # minus the 30 € deductible
    assert dossier.status == "awaiting_documents"

    # A low-confidence or unreadable document does not tick the list.
    await _send(
        dossier_store,
        "e2",
        [("medical_certificate", "ok", 0.2, {}), ("bank_details", "unreadable", 0.9, {})],
    )
    assert (await _dossier(dossier_store)).missing == [
        "medical_certificate",
        "social_security_statement",
        "bank_details",
    ]

    statement = {"amount_total": "400.00", "currency": "EUR"}
    contact_id = await _send(
        dossier_store,
        "e3",
        [
            ("medical_certificate", "ok", 0.8, {}),
            ("social_security_statement", "ok", 0.9, statement),
            ("bank_details", "ok", 0.95, {}),
        ],
    )
    dossier = await _dossier(dossier_store)
    assert dossier.missing == []
    assert dossier.status == "in_review"
    assert dossier.coverage["amount_already_refunded"] == "400.00"
    assert dossier.coverage["amount_covered"] == "820.40"
    assert dossier.amount_covered == Decimal("820.40")
    async with dossier_store.sessions() as session:
        contact = await session.get_one(Contact, contact_id)
        assert contact.step == "respond"
        actions = (
            await session.scalars(
                select(AuditEvent.action).where(AuditEvent.object_type == "dossier")
            )
        ).all()
    assert actions.count("dossier.evaluated") == 2  # e1 and e3; e2 changed nothing
    assert "dossier.status" in actions


async def test_foreign_currency_is_converted_with_the_rate_shown(dossier_store: Store) -> None:
    await _send(
        dossier_store,
        "f1",
        [("medical_invoice", "ok", 0.9, {"amount_total": "100.00", "currency": "USD"})],
    )
    coverage = (await _dossier(dossier_store)).coverage
    assert coverage["currency"] == "EUR"
    assert coverage["amount_claimed"] == "86.00"
    assert coverage["rates_used"] == [
        {"from": "USD", "to": "EUR", "rate": "0.860000", "as_of": "2026-11-01"}
    ]


async def test_expired_contract_is_a_refusal_with_its_clause(dossier_store: Store) -> None:
    async with dossier_store.sessions() as session, session.begin():
        dossier = await session.scalar(select(Dossier).where(Dossier.ref == "AS-2026-000001"))
        assert dossier is not None
        dossier.event_date = TODAY - timedelta(days=400)
        dossier.created_at = datetime.now(UTC) - timedelta(days=399)
    await _send(dossier_store, "x1", [])
    coverage = (await _dossier(dossier_store)).coverage
    assert (coverage["decided"], coverage["covered"]) == (True, False)
    assert coverage["note"] == "no amount claimed yet"
    assert coverage["amount_claimed"] is None
    codes = {r["code"]: r for r in coverage["reasons"]}
    assert "contract_not_in_force" in codes
    assert codes["contract_not_in_force"]["effect"] == "refusal"


async def test_contact_without_dossier_just_moves_on(store: Store) -> None:
    accepted = await store.accept_contact(
        InboundContact(channel="email", natural_key="n1", sender="a@b.example"), b"n1"
    )
    await evaluate(store, RULES, accepted.contact_id, "respond")
    async with store.sessions() as session:
        assert (await session.get_one(Contact, accepted.contact_id)).step == "respond"
