"""The classify step: language, intent, document types and entities, with the review threshold."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from sqlalchemy import bindparam, select
from sqlalchemy.orm import selectinload

from classifiers.qualify import Qualification, Qualifier
from models.inbound import message_text
from models.store import Store, audit
from models.tables import Contact

#: Documents of uncertain type named in the contact's reason; past this they are only counted.
_MAX_DOUBTS_LISTED = 10


@dataclass(frozen=True)
class Understanding:
    """The classifiers and how sure they must be before Guichet acts without a person."""

    qualifier: Qualifier
    intent_threshold: float = 0.45
    doc_type_threshold: float = 0.45


def _qualify(
    understanding: Understanding, contact: Contact, texts: list[str]
) -> tuple[Qualification, list[Qualification]]:
    kind = (
        "email" if contact.channel == "email" else "edi" if contact.channel == "edi" else "message"
    )
    # A scanned letter has no message around it: the letter itself says what the person wants.
    said = "\n".join(texts) if contact.channel == "ged" else contact.text
    message = understanding.qualifier.messages(
        [message_text(contact.subject, said)],
        kind=kind,
        sender_names=[contact.sender_name or None],
    )[0]
    if contact.channel == "ged" and contact.dossier_hint:
        # The mailroom filed it to a dossier: a person already judged it a document for it.
        message = replace(
            message,
            label="document_submission",
            confidence=1.0,
            rule="GED: filed to a dossier by the mailroom",
        )
    return message, understanding.qualifier.documents(texts)


# Built once: a statement cost more to build than to run, at every contact.
_CONTACT = select(Contact).where(Contact.id == bindparam("contact_id"))
_WITH_DOCUMENTS = _CONTACT.options(selectinload(Contact.documents))


async def classify(
    store: Store, understanding: Understanding, contact_id: int, next_step: str
) -> None:
    """Qualify the contact and its documents; doubts become a review reason, never a guess
    acted upon."""
    async with store.sessions() as session:
        contact = await session.scalar(_WITH_DOCUMENTS, {"contact_id": contact_id})
        if contact is None:
            raise LookupError(f"contact {contact_id} does not exist")
        documents = [(d.id, d.text) for d in contact.documents]
        is_edi = contact.channel == "edi"
    if is_edi:
        await _edi_is_provider_invoice(store, contact_id, next_step)
        return
    # CPU-bound (models, spaCy): off the event loop so SMTP and HTTP stay responsive.
    message, qualified = await asyncio.to_thread(
        _qualify, understanding, contact, [text for _, text in documents]
    )
    doubts = []
    if message.confidence is not None and message.confidence < understanding.intent_threshold:
        doubts.append(
            f"intent uncertain: {message.label} at {message.confidence:.2f}"
            f" (threshold {understanding.intent_threshold:.2f})"
        )
    async with store.sessions() as session, session.begin():
        # A text message has no documents: no query for them.
        found = _WITH_DOCUMENTS if documents else _CONTACT
        contact = await session.scalar(found, {"contact_id": contact_id})
        assert contact is not None
        by_id = {d.id: d for d in contact.documents} if documents else {}
        contact.language = message.language
        contact.intent = message.label
        contact.intent_confidence = message.confidence
        contact.entities = message.entities
        for (document_id, _), result in zip(documents, qualified, strict=True):
            document = by_id[document_id]
            document.language = result.language if document.text else None
            # A person's label (GED index sidecar) wins: the machine does not second-guess it.
            labelled = document.doc_type_hint
            document.doc_type = labelled or result.label
            document.doc_type_confidence = 1.0 if labelled else result.confidence
            document.entities = result.entities
            if (
                not labelled
                and result.confidence is not None
                and result.confidence < understanding.doc_type_threshold
            ):
                doubts.append(
                    f"document {document.filename}: type uncertain: {result.label} at"
                    f" {result.confidence:.2f} (threshold {understanding.doc_type_threshold:.2f})"
                )
        if len(doubts) > _MAX_DOUBTS_LISTED:
            # A 3 000-part message made a 200 KB reason nobody reads; the documents keep theirs.
            more = len(doubts) - _MAX_DOUBTS_LISTED
            doubts = [*doubts[:_MAX_DOUBTS_LISTED], f"{more} more documents of uncertain type"]
        if doubts and contact.status == "processing":
            contact.status = "needs_review"
            contact.status_reason = "; ".join(doubts)
        audit(
            session,
            "intake:classify",
            "contact.classified",
            "contact",
            contact.id,
            after={
                "intent": message.label,
                "confidence": message.confidence,
                "rule": message.rule,
                "documents": {str(d): by_id[d].doc_type for d, _ in documents},
            },
        )
        contact.step = next_step


async def _edi_is_provider_invoice(store: Store, contact_id: int, next_step: str) -> None:
    """An EDIFACT interchange is a provider invoice by construction, not prose to classify:
    its facts come from its segments (the invoices step), never from the text models."""
    async with store.sessions() as session, session.begin():
        contact = await session.get_one(Contact, contact_id)
        contact.intent = "provider_invoice"
        contact.intent_confidence = 1.0
        audit(
            session,
            "intake:classify",
            "contact.classified",
            "contact",
            contact.id,
            after={"intent": "provider_invoice", "confidence": 1.0, "rule": "EDI channel"},
        )
        contact.step = next_step
