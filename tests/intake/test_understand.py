"""The classify step with the shipped models: intent, document types, entities, review threshold."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from classifiers.qualify import Qualifier
from intake.understand import Understanding, classify
from models.inbound import InboundAttachment, InboundContact
from models.store import Store
from models.tables import AuditEvent, Contact, Document

RIB = """RELEVE D'IDENTITE BANCAIRE
Titulaire : M. Jean DUPONT
Banque : Crédit Exemple, agence de Lyon
IBAN : FR76 3000 6000 0112 3456 7890 189
BIC : AGRIFRPP"""


@pytest.fixture(scope="module")
def qualifier() -> Qualifier:
    return Qualifier()


async def _contact(store: Store, text: str) -> int:
    accepted = await store.accept_contact(
        InboundContact(
            channel="email",
            natural_key="email:u1@x",
            sender="jean.dupont@example.org",
            sender_name="Jean Dupont",
            subject="Remboursement dossier AS-2026-000001",
            text=text,
            attachments=(InboundAttachment("rib.txt", "text/plain", RIB.encode()),),
        ),
        b"raw",
    )
    async with store.sessions() as session, session.begin():
        # As the extract step leaves them: processing, document text read.
        await session.execute(update(Contact).values(status="processing", step="classify"))
        await session.execute(
            update(Document).values(status="ok", text=RIB, text_source="text_layer")
        )
    return accepted.contact_id


async def test_contact_and_documents_are_qualified(store: Store, qualifier: Qualifier) -> None:
    contact_id = await _contact(
        store,
        "Bonjour, je vous prie de me rembourser les 250,00 € de frais de taxi avancés. "
        "Ci-joint mon RIB. Cordialement, Jean Dupont",
    )
    await classify(store, Understanding(qualifier), contact_id, "match")
    async with store.sessions() as session:
        contact = await session.get_one(Contact, contact_id)
        assert (contact.intent, contact.language, contact.step, contact.status) == (
            "refund_request",
            "fr",
            "match",
            "processing",
        )
        assert contact.intent_confidence is not None and 0.45 <= contact.intent_confidence <= 1
        assert contact.entities["dossier_ref"] == "AS-2026-000001"
        assert contact.entities["amount_total"] == "250.00"
        document = await session.scalar(select(Document))
        assert document is not None and document.doc_type == "bank_details"
        assert document.language == "fr"
        assert document.entities["iban"] == "FR7630006000011234567890189"
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "contact.classified")
        )
        assert event is not None and event.after is not None
        assert event.after["intent"] == "refund_request"


async def test_below_the_threshold_the_contact_goes_to_review(
    store: Store, qualifier: Qualifier
) -> None:
    contact_id = await _contact(store, "hmm")
    await classify(store, Understanding(qualifier, intent_threshold=0.999), contact_id, "match")
    async with store.sessions() as session:
        contact = await session.get_one(Contact, contact_id)
        assert contact.status == "needs_review"
        assert contact.status_reason is not None
        assert contact.status_reason.startswith("intent uncertain: ")
        assert "(threshold 1.00)" in contact.status_reason


async def test_opt_out_keyword_is_decided_by_rule(qualifier: Qualifier) -> None:
    [stop] = qualifier.messages(["Arrêt"], kind="message")
    assert (stop.label, stop.confidence, stop.rule) == ("opt_out", 1.0, "opt-out keyword")
    [edi] = qualifier.messages(["UNA:+.? 'UNH+1+INVOIC:D:96A:UN'BGM+380+F1+9'"], kind="edi")
    assert (edi.label, edi.rule) == ("provider_invoice", "EDIFACT INVOIC message")
    [empty] = qualifier.documents([""])
    assert (empty.label, empty.confidence, empty.rule) == (None, None, "no text")
