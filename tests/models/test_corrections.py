"""Corrections by gestionnaires: applied, audited, and exported as a training corpus."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from classifiers.corpus import read_corpus
from models.corrections import correct_contact, correct_document, export_corpus
from models.inbound import InboundAttachment, InboundContact
from models.store import Store
from models.tables import AuditEvent, Contact, Document


async def test_corrections_become_a_corpus(store: Store, tmp_path: Path) -> None:
    accepted = await store.accept_contact(
        InboundContact(
            channel="sms",
            natural_key="sms:SM1",
            sender="+33612345678",
            text="jvous envoi la facture demain",
            attachments=(InboundAttachment("photo.jpg", "image/jpeg", b"\xff\xd8"),),
        ),
        b"raw",
    )
    async with store.sessions() as session, session.begin():
        contact = await session.get_one(Contact, accepted.contact_id)
        contact.intent, contact.language = "other", "fr"
        document = await session.scalar(select(Document))
        assert document is not None
        document.text, document.doc_type = "FACTURE taxi 45,00 EUR", "other"
        await correct_contact(session, contact, "user:marie", intent="status_inquiry")
        await correct_contact(session, contact, "user:marie", intent="document_submission")
        await correct_document(
            session,
            document,
            "user:marie",
            doc_type="invoice",
            entities={"amount_total": "45.00", "currency": "EUR"},
        )
    async with store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        assert (contact.intent, contact.intent_confidence) == ("document_submission", 1.0)
        events = (await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id))).all()
        assert events.count("contact.corrected") == 2 and "document.corrected" in events
        assert await export_corpus(session, tmp_path / "corrections") == 2
    items = {item.kind: item for item in read_corpus(tmp_path / "corrections")}
    message, doc = items["message"], items["document"]
    assert (message.intent, message.channel, message.language) == (
        "document_submission",
        "sms",
        "fr",
    )
    assert message.path.read_text() == "jvous envoi la facture demain"
    assert (doc.doc_type, doc.entities) == ("invoice", {"amount_total": "45.00", "currency": "EUR"})
    assert doc.path.read_text() == "FACTURE taxi 45,00 EUR"
