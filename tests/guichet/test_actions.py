"""The gestionnaire's actions over a real store (SQLite and PostgreSQL), each one audited."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PIL import Image
from sqlalchemy import select, update

from guichet import actions
from guichet.settings import Settings
from intake.reading import OcrPool
from models.store import Store
from models.tables import (
    AuditEvent,
    Contact,
    ContactTriage,
    Document,
    Dossier,
    Job,
    OutboundMessage,
    TrainingExample,
)
from responders.decide import HOLD_REFUSAL
from tests.conftest import Relay
from tests.guichet.site import serve_site
from tests.responders.flow import REF, load_demo, runner

HOSTILE_HTML = (
    "<p>Bonjour, voici ma facture.</p>"
    "<script>window.__pwned = 1; document.title = 'pwned';</script>"
    '<img src="x" onerror="window.__pwned = 2">'
    '<img src="https://tracker.example.net/pixel.gif" alt="pixel">'
    '<a href="javascript:window.__pwned = 3">cliquez</a>'
    '<a href="https://example.org/aide" onclick="window.__pwned = 4">aide</a>'
    '<div style="background:url(https://tracker.example.net/bg.png)" onmouseover="x()">fond</div>'
    "<iframe src='https://evil.example.net/'></iframe>"
    "<form action='https://evil.example.net/'><input name=a></form>"
)


def png(colour: str = "red", size: tuple[int, int] = (600, 400)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Seeded:
    contact_id: int
    document_id: int
    held_id: int


async def seed(store: Store, key: str = "a1", *, html: str | None = HOSTILE_HTML) -> Seeded:
    """The demo reference data, one email with a read PNG attachment, and a held refusal."""
    from models.inbound import InboundAttachment, InboundContact

    accepted = await store.accept_contact(
        InboundContact(
            channel="email",
            natural_key=f"<{key}@example.org>",
            sender="jean.dupont@example.org",
            sender_name="Jean Dupont",
            subject=f"Facture de la clinique {key}",
            text="Bonjour, voici la facture de 120,00 EUR pour mon dossier.",
            html=html,
            message_id=f"{key}@example.org",
            attachments=(InboundAttachment("facture.png", "image/png", png()),),
        ),
        b"raw message " + key.encode(),
    )
    async with store.sessions() as session, session.begin():
        # What intake would have found: the picture read, the message in need of review.
        await session.execute(
            update(Document)
            .where(Document.contact_id == accepted.contact_id)
            .values(
                status="ok",
                sniffed_type="image/png",
                doc_type="other",
                doc_type_confidence=0.31,
                text="FACTURE 120,00 EUR",
            )
        )
        await session.execute(
            update(Contact)
            .where(Contact.id == accepted.contact_id)
            .values(
                status="needs_review",
                step="done",
                intent="refund_request",
                intent_confidence=0.4,
                entities={"amount": "120,00 EUR"},
                language="fr",
            )
        )
        document_id = await session.scalar(
            select(Document.id).where(Document.contact_id == accepted.contact_id)
        )
        dossier_id = await session.scalar(select(Dossier.id).where(Dossier.ref == REF))
        held = OutboundMessage(
            idempotency_key=f"contact:{accepted.contact_id}:refusal",
            contact_id=accepted.contact_id,
            dossier_id=dossier_id,
            purpose="refusal",
            template="email/fr/refusal",
            channel="email",
            language="fr",
            recipient="jean.dupont@example.org",
            subject="Votre demande",
            body_text="Nous ne pouvons pas prendre en charge cette demande.",
            status="held",
            status_reason=HOLD_REFUSAL,
        )
        session.add(held)
        await session.flush()
        held_id = held.id
    assert document_id is not None
    return Seeded(accepted.contact_id, document_id, held_id)


@pytest.fixture
def ws() -> actions.Workspace:
    return actions.Workspace.from_settings(Settings())


async def _events(store: Store, action: str) -> list[AuditEvent]:
    async with store.sessions() as session:
        return list(
            (await session.scalars(select(AuditEvent).where(AuditEvent.action == action))).all()
        )


async def test_attach_and_detach_reevaluate_the_dossier(
    store: Store, ws: actions.Workspace
) -> None:
    await load_demo(store)
    seeded = await seed(store)
    async with store.sessions() as session, session.begin():
        result = await actions.attach(session, ws, seeded.contact_id, REF.lower(), "marie")
    assert result == {"contact": seeded.contact_id, "dossier": REF, "changed": True}
    async with store.sessions() as session:
        contact = await session.get_one(Contact, seeded.contact_id)
        document = await session.get_one(Document, seeded.document_id)
        dossier = await session.scalar(select(Dossier).where(Dossier.ref == REF))
        assert dossier is not None
        assert contact.dossier_id == dossier.id == document.dossier_id
        assert contact.match_rule == "attached by marie"
        # Evaluated at once: the checklist says what the dossier holds now.
        assert dossier.checklist
    [attached] = await _events(store, "contact.attached")
    assert (attached.actor, attached.before, attached.after) == (
        "marie",
        {"dossier": None},
        {"dossier": REF, "rule": "attached by marie"},
    )
    async with store.sessions() as session, session.begin():
        again = await actions.attach(session, ws, seeded.contact_id, REF, "marie")
        assert again["changed"] is False
        await actions.detach(session, ws, seeded.contact_id, "marie")
    async with store.sessions() as session:
        assert (await session.get_one(Contact, seeded.contact_id)).dossier_id is None
        assert (await session.get_one(Document, seeded.document_id)).dossier_id is None
    [detached] = await _events(store, "contact.detached")
    assert detached.before == {"dossier": REF} and detached.after == {"dossier": None}


@pytest.fixture(scope="module")
def ocr() -> Iterator[OcrPool]:
    pool = OcrPool(1)
    yield pool
    pool.shutdown()


async def test_a_contact_attached_by_hand_gets_its_dossier_replies(
    store: Store, ws: actions.Workspace, ocr: OcrPool, relay: Relay
) -> None:
    await load_demo(store)
    seeded = await seed(store, html=None)
    async with store.sessions() as session, session.begin():
        await actions.attach(session, ws, seeded.contact_id, REF, "marie")
    async with store.sessions() as session:
        assert (await session.get_one(Contact, seeded.contact_id)).step == "respond"
    # The pipeline's own respond step, through the durable job the action enqueued.
    await runner(store, ocr, relay).run_pending()
    async with store.sessions() as session:
        contact = await session.get_one(Contact, seeded.contact_id)
        replies = (
            await session.scalars(
                select(OutboundMessage.purpose).where(
                    OutboundMessage.contact_id == seeded.contact_id,
                    OutboundMessage.status == "sent",
                )
            )
        ).all()
    assert contact.step == "done" and contact.status == "needs_review"  # a person still decides
    # Acknowledged now that it belongs to a dossier, and asked for what that dossier misses.
    assert sorted(replies) == ["acknowledgement", "missing_documents"]
    assert len(relay.received) == 2
    # Attaching again changes nothing and sends nothing more.
    async with store.sessions() as session, session.begin():
        assert (await actions.attach(session, ws, seeded.contact_id, REF, "marie"))[
            "changed"
        ] is False
    assert await runner(store, ocr, relay).run_pending() == 0


async def test_attach_to_an_unknown_dossier_changes_nothing(
    store: Store, ws: actions.Workspace
) -> None:
    await load_demo(store)
    seeded = await seed(store)
    with pytest.raises(actions.NotFound, match="no dossier AS-1999-000001"):
        async with store.sessions() as session, session.begin():
            await actions.attach(session, ws, seeded.contact_id, "AS-1999-000001", "marie")
    assert await _events(store, "contact.attached") == []


async def test_open_a_dossier_after_the_fact(store: Store, ws: actions.Workspace) -> None:
    await load_demo(store)
    seeded = await seed(store)
    claim_type = sorted(ws.rules.claim_types)[0]
    async with store.sessions() as session, session.begin():
        result = await actions.open_dossier(session, ws, seeded.contact_id, claim_type, "marie")
    async with store.sessions() as session:
        dossier = await session.scalar(select(Dossier).where(Dossier.ref == result["dossier"]))
        assert dossier is not None
        assert dossier.opened_after_the_fact and dossier.claim_type == claim_type
        assert dossier.beneficiary_id is not None  # the sender is the demo beneficiary
        contact = await session.get_one(Contact, seeded.contact_id)
        assert contact.dossier_id == dossier.id
    [opened] = await _events(store, "dossier.opened")
    assert opened.actor == "marie" and opened.after is not None
    assert opened.after["contact"] == seeded.contact_id
    with pytest.raises(actions.ActionError, match="claim type must be one of"):
        async with store.sessions() as session, session.begin():
            await actions.open_dossier(session, ws, seeded.contact_id, "volcano", "marie")


async def test_corrections_become_training_data(store: Store, ws: actions.Workspace) -> None:
    await load_demo(store)
    seeded = await seed(store)
    async with store.sessions() as session, session.begin():
        await actions.correct_intent(
            session, ws, seeded.contact_id, "marie", intent="new_claim", entities={"ref": REF}
        )
        await actions.correct_document_type(
            session, ws, seeded.document_id, "marie", doc_type="medical_invoice"
        )
    async with store.sessions() as session:
        contact = await session.get_one(Contact, seeded.contact_id)
        document = await session.get_one(Document, seeded.document_id)
        examples = (await session.scalars(select(TrainingExample))).all()
    assert (contact.intent, contact.intent_confidence, contact.entities) == (
        "new_claim",
        1.0,
        {"ref": REF},
    )
    assert (document.doc_type, document.doc_type_confidence) == ("medical_invoice", 1.0)
    assert sorted(e.kind for e in examples) == ["document", "message"]
    assert {e.actor for e in examples} == {"marie"}
    [corrected] = await _events(store, "document.corrected")
    assert corrected.before is not None and corrected.before["doc_type"] == "other"
    with pytest.raises(actions.ActionError, match="doc_type"):
        async with store.sessions() as session, session.begin():
            await actions.correct_document_type(
                session, ws, seeded.document_id, "marie", doc_type="<b>"
            )


async def test_assign_and_mark_done(store: Store) -> None:
    await load_demo(store)
    seeded = await seed(store)
    async with serve_site(store, [("marie", "gestionnaire")]):
        pass  # creates the users
    async with store.sessions() as session, session.begin():
        assert (await actions.assign(session, seeded.contact_id, "Marie", "paul"))[
            "assignee"
        ] == "marie"
        await actions.mark_done(session, seeded.contact_id, "marie")
        again = await actions.mark_done(session, seeded.contact_id, "marie")
        assert again["changed"] is False
    async with store.sessions() as session:
        triage = await session.get_one(ContactTriage, seeded.contact_id)
        assert triage.done_by == "marie" and triage.done_at is not None
    [assigned] = await _events(store, "contact.assigned")
    assert (assigned.actor, assigned.before, assigned.after) == (
        "paul",
        {"assignee": None},
        {"assignee": "marie"},
    )
    assert len(await _events(store, "contact.done")) == 1
    with pytest.raises(actions.NotFound, match="no active user"):
        async with store.sessions() as session, session.begin():
            await actions.assign(session, seeded.contact_id, "nobody", "paul")


async def test_reply_from_a_template_is_queued_once(store: Store, ws: actions.Workspace) -> None:
    await load_demo(store)
    seeded = await seed(store)
    async with store.sessions() as session, session.begin():
        await actions.attach(session, ws, seeded.contact_id, REF, "marie")
    async with store.sessions() as session:
        draft = await actions.preview_reply(session, ws, seeded.contact_id, "status_answer")
    assert (draft.channel, draft.recipient, draft.language) == (
        "email",
        "jean.dupont@example.org",
        "fr",
    )
    assert REF in draft.body_text
    edited = draft.body_text + "\nCordialement, Marie"
    for _ in range(2):  # a double submit
        async with store.sessions() as session, session.begin():
            result = await actions.send_reply(
                session, ws, seeded.contact_id, "status_answer", "marie",
                body_text=edited, key="k1",
            )  # fmt: skip
    assert result["duplicate"] is True
    async with store.sessions() as session:
        replies = (
            await session.scalars(
                select(OutboundMessage).where(OutboundMessage.purpose == "status_answer")
            )
        ).all()
        jobs = (await session.scalars(select(Job).where(Job.kind == "deliver"))).all()
    [reply] = replies
    assert (reply.status, reply.body_text, reply.body_html) == ("queued", edited, None)
    assert [j.subject_id for j in jobs] == [reply.id]
    [queued] = await _events(store, "reply.queued")
    assert queued.actor == "marie"
    with pytest.raises(actions.ActionError, match="purpose must be one of"):
        async with store.sessions() as session:
            await actions.preview_reply(session, ws, seeded.contact_id, "attestation")


async def test_approve_reject_and_close(store: Store) -> None:
    await load_demo(store)
    seeded = await seed(store)
    async with store.sessions() as session, session.begin():
        result = await actions.decide_reply(session, seeded.held_id, "marie", approved=True)
    assert result["status"] == "queued"
    with pytest.raises(actions.Conflict, match="not held"):
        async with store.sessions() as session, session.begin():
            await actions.decide_reply(session, seeded.held_id, "marie", approved=False)
    async with store.sessions() as session, session.begin():
        closed = await actions.close(session, REF, "marie")
    assert closed == {"dossier": REF, "status": "closed"}
    [approved] = await _events(store, "reply.approved")
    assert approved.actor == "marie"
    [closing] = await _events(store, "dossier.closed")
    assert closing.actor == "marie" and closing.after == {"status": "closed"}
    with pytest.raises(actions.NotFound):
        async with store.sessions() as session, session.begin():
            await actions.close(session, "AS-1999-000009", "marie")
