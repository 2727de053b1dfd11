"""The matching rules one by one on a real store: reference, thread, sender, opening."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from guichet.settings import PROJECT_ROOT
from intake.coverage import load_claim_types
from intake.dossiers import (
    OPENING_INTENTS,
    SMS_CONVERSATION_DAYS,
    MatchPolicy,
    beneficiaries_for,
    match_dossier,
    next_reference,
    read_event,
)
from models.inbound import InboundAttachment, InboundContact
from models.reference import load_reference_data, read_reference_file
from models.store import Store
from models.tables import (
    AuditEvent,
    Beneficiary,
    Contact,
    Contract,
    Document,
    Dossier,
    Guarantee,
    OutboundMessage,
)

POLICY = MatchPolicy(
    local_part="sinistres",
    domains=("guichet.example",),
    claim_labels={
        code: kind.label_fr
        for code, kind in load_claim_types(PROJECT_ROOT / "config" / "claim_types.toml").items()
    },
    today=date(2026, 12, 1),
)
JEAN, AMINA, DAVID = (
    "jean.dupont@example.org",
    "amina.benali@example.net",
    "david.oconnor@example.co.uk",
)


@pytest.fixture
async def demo_store(store: Store) -> Store:
    async with store.sessions() as session, session.begin():
        await load_reference_data(
            session, read_reference_file(PROJECT_ROOT / "config" / "demo.toml")
        )
    return store


async def _contact(
    store: Store,
    sender: str,
    text: str = "",
    *,
    intent: str | None = "document_submission",
    channel: str = "email",
    subject: str = "",
    entities: dict[str, Any] | None = None,
    attachments: tuple[tuple[str, str], ...] = (),
    **extra: Any,
) -> int:
    """A contact as the classify step leaves it: documents read, intent and entities set."""
    accepted = await store.accept_contact(
        InboundContact(
            channel=channel,
            natural_key=f"{channel}:{sender}:{subject}:{text}:{extra}",
            sender=sender,
            subject=subject,
            text=text,
            attachments=tuple(
                InboundAttachment(name, "text/plain", body.encode()) for name, body in attachments
            ),
            **extra,
        ),
        text.encode(),
    )
    async with store.sessions() as session, session.begin():
        contact = await session.get_one(Contact, accepted.contact_id)
        contact.status, contact.intent, contact.intent_confidence = "processing", intent, 0.9
        contact.entities = entities or {}
        for document, (_, body) in zip(
            await session.scalars(select(Document).where(Document.contact_id == contact.id)),
            attachments,
            strict=True,
        ):
            document.status, document.text = "ok", body
    return accepted.contact_id


async def _match(store: Store, contact_id: int) -> Contact:
    async with store.sessions() as session, session.begin():
        contact = await session.scalar(
            select(Contact).where(Contact.id == contact_id).options(selectinload(Contact.documents))
        )
        assert contact is not None
        event = (
            read_event(contact.subject, contact.text, contact.entities)
            if contact.intent in OPENING_INTENTS
            else None
        )
        await match_dossier(session, contact, POLICY, event)
    async with store.sessions() as session:
        return await session.scalar(
            select(Contact)
            .where(Contact.id == contact_id)
            .options(selectinload(Contact.documents), selectinload(Contact.dossier))
        )  # type: ignore[return-value]


async def _events(store: Store, object_type: str, object_id: object) -> list[AuditEvent]:
    async with store.sessions() as session:
        return list(
            await session.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.actor == "intake:match",
                    AuditEvent.object_type == object_type,
                    AuditEvent.object_id == str(object_id),
                )
                .order_by(AuditEvent.id)
            )
        )


async def _dossier_id(store: Store, ref: str) -> int:
    async with store.sessions() as session:
        found = await session.scalar(select(Dossier.id).where(Dossier.ref == ref))
        assert found is not None
        return found


async def _add_dossier(store: Store, ref: str, owner: str, **values: Any) -> None:
    async with store.sessions() as session, session.begin():
        person = (await beneficiaries_for(session, owner))[0]
        fields: dict[str, Any] = {"claim_type": "towing", "status": "open", **values}
        session.add(Dossier(ref=ref, beneficiary_id=person.id, **fields))


def _attached(contact: Contact, ref: str, rule: str) -> None:
    assert contact.dossier is not None and contact.dossier.ref == ref
    assert contact.match_rule == rule
    assert contact.status == "processing"
    assert all(d.dossier_id == contact.dossier_id for d in contact.documents)


# --------------------------------------------------------------------------- rule 1: reference


async def test_reference_quoted_by_its_beneficiary_attaches_with_documents(
    demo_store: Store,
) -> None:
    contact_id = await _contact(
        demo_store,
        "Jean.Dupont@Example.ORG",
        "Voici mes factures.",
        attachments=(("facture.txt", "Dossier AS-2026-000001, facture 120 EUR"),),
    )
    contact = await _match(demo_store, contact_id)
    _attached(contact, "AS-2026-000001", "reference AS-2026-000001 in document facture.txt")
    assert len(contact.documents) == 1
    [event] = await _events(demo_store, "contact", contact_id)
    assert (event.action, event.before, event.after) == (
        "contact.attached",
        {"dossier": None},
        {"dossier": "AS-2026-000001", "rule": contact.match_rule},
    )


@pytest.mark.parametrize("sender", ["+33612345678", "06 12 34 56 78", "+33 6 12 34 56 78"])
async def test_reference_by_sms_from_the_beneficiary_phone(demo_store: Store, sender: str) -> None:
    contact_id = await _contact(
        demo_store, sender, "dossier as2026000001 ou en est mon rembt", channel="sms"
    )
    contact = await _match(demo_store, contact_id)
    _attached(contact, "AS-2026-000001", "reference AS-2026-000001 in body")


async def test_reference_from_classified_entities(demo_store: Store) -> None:
    contact_id = await _contact(
        demo_store, AMINA, "Bonjour", entities={"dossier_ref": "AS-2026-000002"}
    )
    contact = await _match(demo_store, contact_id)
    _attached(contact, "AS-2026-000002", "reference AS-2026-000002 in classified entities")


@pytest.mark.parametrize(
    ("sender", "who"),
    [
        (JEAN, JEAN),
        ("garage.dupuis@example.com", "garage.dupuis@example.com"),
        ("", "an unknown sender"),
    ],
)
async def test_reference_quoted_by_someone_not_party_goes_to_review(
    demo_store: Store, sender: str, who: str
) -> None:
    contact_id = await _contact(
        demo_store, sender, "Facture dossier AS-2026-000002", subject="Facture"
    )
    contact = await _match(demo_store, contact_id)
    reason = f"reference AS-2026-000002 quoted by {who} who is not party to that dossier"
    assert (contact.dossier_id, contact.status, contact.status_reason) == (
        None,
        "needs_review",
        reason,
    )
    assert contact.match_rule == "reference: sender not party"
    [event] = await _events(demo_store, "contact", contact_id)
    assert (event.action, event.note) == ("contact.needs_review", reason)


async def test_two_own_dossiers_quoted_go_to_review(demo_store: Store) -> None:
    await _add_dossier(demo_store, "AS-2026-000010", JEAN)
    contact_id = await _contact(demo_store, JEAN, "AS-2026-000010 et AS-2026-000001")
    contact = await _match(demo_store, contact_id)
    assert (contact.status, contact.status_reason) == (
        "needs_review",
        "several dossiers quoted: AS-2026-000001, AS-2026-000010",
    )


async def test_unknown_reference_is_reviewed_not_guessed_from_the_sender(
    demo_store: Store,
) -> None:
    contact_id = await _contact(
        demo_store, JEAN, "Mon dossier AS-2026-000999", intent="status_inquiry"
    )
    contact = await _match(demo_store, contact_id)
    assert (contact.dossier_id, contact.status_reason, contact.match_rule) == (
        None,
        "quoted reference not found: AS-2026-000999",
        "reference not found",
    )


async def test_classify_doubts_are_kept_beside_the_match_reason(demo_store: Store) -> None:
    contact_id = await _contact(demo_store, "x@example.com", "Bonjour")
    async with demo_store.sessions() as session, session.begin():
        contact = await session.get_one(Contact, contact_id)
        contact.status, contact.status_reason = "needs_review", "intent uncertain: other at 0.30"
    contact = await _match(demo_store, contact_id)
    assert contact.status_reason == (
        "intent uncertain: other at 0.30; no dossier reference found; unknown sender x@example.com"
    )


# --------------------------------------------------------------------------- rule 2: thread


async def _our_message(
    store: Store, token: str, *, dossier_ref: str | None, contact_ref: str | None
) -> str:
    """One of our outbound messages, on a dossier directly or through its contact."""
    async with store.sessions() as session, session.begin():
        earlier = None
        if contact_ref:
            earlier = Contact(
                channel="email",
                natural_key=f"email:earlier-{token}",
                sender=AMINA,
                dossier_id=await session.scalar(
                    select(Dossier.id).where(Dossier.ref == contact_ref)
                ),
            )
            session.add(earlier)
            await session.flush()
        message_id = f"{token}.acknowledgement@guichet.example"
        session.add(
            OutboundMessage(
                idempotency_key=f"key-{token}",
                contact_id=earlier.id if earlier else None,
                dossier_id=(
                    await session.scalar(select(Dossier.id).where(Dossier.ref == dossier_ref))
                    if dossier_ref
                    else None
                ),
                purpose="acknowledgement",
                template="email/fr/acknowledgement",
                channel="email",
                language="fr",
                recipient=AMINA,
                message_id=message_id,
                headers={"Reply-To": f"sinistres+{token}@guichet.example"},
            )
        )
    return message_id


async def test_reply_to_our_message_id_follows_the_thread(demo_store: Store) -> None:
    message_id = await _our_message(
        demo_store, "0123456789abcdef", dossier_ref="AS-2026-000002", contact_ref=None
    )
    # From another address of hers that we do not know: the thread is enough.
    contact_id = await _contact(
        demo_store, "amina.perso@example.com", "Merci, voici la facture", in_reply_to=message_id
    )
    contact = await _match(demo_store, contact_id)
    _attached(contact, "AS-2026-000002", f"thread: reply to our message {message_id}")


async def test_our_message_id_in_references_follows_the_thread(demo_store: Store) -> None:
    message_id = await _our_message(
        demo_store, "fedcba9876543210", dossier_ref=None, contact_ref="AS-2026-000002"
    )
    contact_id = await _contact(
        demo_store,
        "amina.perso@example.com",
        "Re",
        in_reply_to="their-own@example.com",
        references=(message_id, "their-own@example.com"),
    )
    contact = await _match(demo_store, contact_id)
    _attached(contact, "AS-2026-000002", f"thread: reply to our message {message_id}")


async def test_reply_to_token_follows_the_thread(demo_store: Store) -> None:
    await _our_message(
        demo_store, "00aa11bb22cc33dd", dossier_ref=None, contact_ref="AS-2026-000002"
    )
    contact_id = await _contact(
        demo_store,
        "amina.perso@example.com",
        "Nouveau message sans en-têtes de réponse",
        recipients=("Sinistres+00aa11bb22cc33dd@guichet.example",),
    )
    contact = await _match(demo_store, contact_id)
    _attached(contact, "AS-2026-000002", "thread: reply-to token 00aa11bb22cc33dd")


async def test_token_of_another_domain_or_unknown_token_does_not_match(demo_store: Store) -> None:
    await _our_message(
        demo_store, "00aa11bb22cc33dd", dossier_ref="AS-2026-000002", contact_ref=None
    )
    contact_id = await _contact(
        demo_store,
        "amina.perso@example.com",
        "Bonjour",
        recipients=(
            "sinistres+00aa11bb22cc33dd@ailleurs.example",
            "sinistres+0000aaaa@guichet.example",
        ),
    )
    contact = await _match(demo_store, contact_id)
    assert contact.dossier_id is None and contact.status == "needs_review"


async def _our_sms(store: Store, number: str, ref: str, status: str, created: datetime) -> None:
    async with store.sessions() as session, session.begin():
        session.add(
            OutboundMessage(
                idempotency_key=f"sms-{number}-{status}-{created.isoformat()}",
                dossier_id=await session.scalar(select(Dossier.id).where(Dossier.ref == ref)),
                purpose="missing_documents",
                template="sms/fr/missing_documents",
                channel="sms",
                language="fr",
                recipient=number,
                status=status,
                created_at=created,
            )
        )


async def test_sms_answering_our_last_sms_follows_that_conversation(demo_store: Store) -> None:
    # A number we do not know (a relative's phone): only the conversation ties it to a dossier.
    number = "+33700000001"
    recent = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    await _our_sms(demo_store, number, "AS-2026-000001", "sent", recent - timedelta(days=2))
    await _our_sms(demo_store, number, "AS-2026-000002", "sent", recent)
    # Neither a reply that never left nor one to another number is a conversation.
    await _our_sms(demo_store, number, "AS-2026-000001", "cancelled", recent + timedelta(hours=1))
    await _our_sms(demo_store, "+33700000002", "AS-2026-000001", "sent", recent)
    contact = await _match(demo_store, await _contact(demo_store, number, "voici", channel="sms"))
    assert contact.dossier is not None and contact.dossier.ref == "AS-2026-000002"
    assert contact.match_rule is not None
    assert contact.match_rule.startswith("thread: SMS conversation, our message ")


async def test_sms_conversation_ends_after_its_window(demo_store: Store) -> None:
    number = "+33700000003"
    old = datetime(2026, 12, 1, tzinfo=UTC) - timedelta(days=SMS_CONVERSATION_DAYS + 1)
    await _our_sms(demo_store, number, "AS-2026-000002", "sent", old)
    contact = await _match(demo_store, await _contact(demo_store, number, "voici", channel="sms"))
    assert contact.dossier_id is None and contact.status == "needs_review"


async def test_chat_message_continues_its_conversation_dossier(demo_store: Store) -> None:
    async def chat(key: str, text: str) -> int:
        accepted = await demo_store.accept_contact(
            # The visitor gave her email in the pre-chat form: she is party to her dossier.
            InboundContact(channel="chat", natural_key=key, sender=AMINA, text=text),
            text.encode(),
        )
        async with demo_store.sessions() as session, session.begin():
            contact = await session.get_one(Contact, accepted.contact_id)
            contact.status, contact.intent, contact.intent_confidence = "processing", "other", 0.9
        return accepted.contact_id

    first = await chat("c_7f3a:m1", "Bonjour, dossier AS-2026-000002")
    _attached(await _match(demo_store, first), "AS-2026-000002", "reference AS-2026-000002 in body")
    # Another conversation whose id shares a prefix must not count.
    await chat("c_7f3:m1", "autre conversation")
    later = await _match(demo_store, await chat("c_7f3a:m2", "et voici la photo"))
    _attached(later, "AS-2026-000002", "thread: chat conversation c_7f3a about AS-2026-000002")
    stranger = await _match(demo_store, await chat("c_other:m1", "bonjour"))
    assert stranger.dossier_id is None


# --------------------------------------------------------------------------- rule 3: sender


@pytest.mark.parametrize(
    "intent",
    ["document_submission", "status_inquiry", "refund_request", "complaint", "attestation_request"],
)
async def test_known_sender_with_one_open_dossier_continues_it(
    demo_store: Store, intent: str
) -> None:
    contact_id = await _contact(
        demo_store, "+33698765432", "ou en est le remorquage", intent=intent, channel="sms"
    )
    contact = await _match(demo_store, contact_id)
    _attached(contact, "AS-2026-000002", "sender +33698765432: one open dossier AS-2026-000002")


async def test_finished_dossiers_are_not_continued(demo_store: Store) -> None:
    async with demo_store.sessions() as session, session.begin():
        dossier = await session.get_one(Dossier, await _dossier_id(demo_store, "AS-2026-000002"))
        dossier.status = "paid"
    contact_id = await _contact(demo_store, AMINA, "Voici un document")
    contact = await _match(demo_store, contact_id)
    assert contact.status_reason == "no dossier reference found; Amina Benali has no open dossier"


async def test_several_open_dossiers_go_to_review_with_candidates(demo_store: Store) -> None:
    await _add_dossier(demo_store, "AS-2026-000011", AMINA)
    contact_id = await _contact(
        demo_store, AMINA, "Où en est mon dossier ?", intent="status_inquiry"
    )
    contact = await _match(demo_store, contact_id)
    assert (contact.dossier_id, contact.status_reason, contact.match_rule) == (
        None,
        "no dossier reference found; Amina Benali has several open dossiers:"
        " AS-2026-000002, AS-2026-000011",
        "sender: several open dossiers",
    )


async def test_other_intents_from_a_known_sender_are_reviewed(demo_store: Store) -> None:
    contact_id = await _contact(demo_store, AMINA, "Bonjour", intent="other")
    contact = await _match(demo_store, contact_id)
    assert contact.status_reason == (
        "no dossier reference found; Amina Benali is known but the intent (other) neither"
        " continues nor opens a dossier"
    )


async def test_new_claim_about_the_same_event_continues_the_dossier(demo_store: Store) -> None:
    contact_id = await _contact(
        demo_store,
        JEAN,
        "J'ai été hospitalisé à Barcelone le 2 octobre 2026, je déclare le sinistre.",
        intent="new_claim",
    )
    contact = await _match(demo_store, contact_id)
    _attached(contact, "AS-2026-000001", f"sender {JEAN}: one open dossier AS-2026-000001")


# --------------------------------------------------------------------------- opening after the fact


async def test_new_claim_about_another_event_opens_a_dossier_after_the_fact(
    demo_store: Store,
) -> None:
    async with demo_store.sessions() as session, session.begin():
        # A second contract of Jean's that covers baggage: the opening must choose it.
        contract = Contract(
            number="CT20269999",
            product="Bagages",
            beneficiary_id=(await beneficiaries_for(session, JEAN))[0].id,
            starts_on=date(2026, 6, 1),
            ends_on=date(2027, 5, 31),
        )
        session.add(contract)
        await session.flush()
        session.add(Guarantee(contract_id=contract.id, code="BAGAGES", claim_types=["baggage"]))
    text = (
        "Bonjour, on m'a volé ma valise à Nice le 20 novembre 2026. J'ai racheté des"
        " vêtements pour 350,00 EUR et je demande le remboursement."
    )
    contact_id = await _contact(demo_store, JEAN, text, intent="new_claim", subject="Vol de bagage")
    contact = await _match(demo_store, contact_id)
    dossier = contact.dossier
    assert dossier is not None and contact.match_rule == "opened after the fact: AS-2026-000004"
    async with demo_store.sessions() as session:
        chosen = await session.get_one(Contract, dossier.contract_id)
    assert chosen.number == "CT20269999"
    assert (
        dossier.ref,
        dossier.claim_type,
        dossier.cause,
        dossier.event_date,
        dossier.event_place,
        dossier.status,
        dossier.opened_after_the_fact,
    ) == (
        "AS-2026-000004",
        "baggage",
        "theft",
        date(2026, 11, 20),
        "Nice",
        "awaiting_documents",
        True,
    )
    assert dossier.claim_type_confidence is not None and dossier.claim_type_confidence >= 0.5
    assert dossier.summary.startswith(
        "Jean Dupont (jean.dupont@example.org) déclare après coup, par e-mail, un sinistre"
        " « Bagages perdus, volés ou endommagés » (cause : vol) survenu le 20 novembre 2026"
        " à Nice."
    )
    assert "350,00" in dossier.summary and "Message : « Bonjour, on m'a volé" in dossier.summary
    [opened] = await _events(demo_store, "dossier", "AS-2026-000004")
    assert (opened.action, opened.before) == ("dossier.opened", None)
    assert opened.after is not None
    assert opened.after["contract"] == "CT20269999"
    assert opened.after["claim_type"] == "baggage"
    assert opened.after["event_date"] == "2026-11-20"
    assert opened.after["opened_after_the_fact"] is True
    [attached] = await _events(demo_store, "contact", contact_id)
    assert attached.after == {"dossier": "AS-2026-000004", "rule": contact.match_rule}


async def test_new_claim_on_another_date_opens_even_for_the_same_claim_type(
    demo_store: Store,
) -> None:
    contact_id = await _contact(
        demo_store,
        JEAN,
        "Nouvelle hospitalisation à Rome le 15 novembre 2026 suite à une infection.",
        intent="new_claim",
    )
    contact = await _match(demo_store, contact_id)
    assert contact.dossier is not None and contact.dossier.ref == "AS-2026-000004"
    assert (contact.dossier.claim_type, contact.dossier.cause) == (
        "medical_costs_abroad",
        "illness",
    )
    # Jean's contract in force covering medical costs abroad.
    async with demo_store.sessions() as session:
        contract = await session.get_one(Contract, contact.dossier.contract_id)
    assert contract.number == "CT20260001"


async def test_refund_for_another_kind_of_claim_opens_with_the_contract_in_force(
    demo_store: Store,
) -> None:
    text = (
        "Hello, I took a taxi from the airport to Lisbon on 22/09/2026, fare 45.00 GBP."
        " Please refund me."
    )
    contact_id = await _contact(demo_store, DAVID, text, intent="refund_request")
    contact = await _match(demo_store, contact_id)
    dossier = contact.dossier
    assert dossier is not None and dossier.claim_type == "taxi"
    async with demo_store.sessions() as session:
        contract = await session.get_one(Contract, dossier.contract_id)
    # His only contract does not cover taxis: still the one in force, for the gestionnaire.
    assert contract.number == "CT20260003"
    assert "David O'Connor demande le remboursement de 45,00" in dossier.summary
    assert dossier.amount_claimed is None  # amounts are the evaluate step's business


async def test_refund_without_date_or_contract_in_force_still_opens(demo_store: Store) -> None:
    async with demo_store.sessions() as session, session.begin():
        dossier = await session.get_one(Dossier, await _dossier_id(demo_store, "AS-2026-000002"))
        dossier.status = "closed"
        for contract in await session.scalars(select(Contract)):
            contract.ends_on = date(2026, 3, 31)
    contact_id = await _contact(
        demo_store,
        AMINA,
        "Ma porte a été forcée, le serrurier m'a facturé 180 €.",
        intent="refund_request",
    )
    contact = await _match(demo_store, contact_id)
    assert contact.dossier is not None
    assert (
        contact.dossier.claim_type,
        contact.dossier.contract_id,
        contact.dossier.event_date,
    ) == (
        "home_assistance",
        None,
        None,
    )
    assert "date non précisée" in contact.dossier.summary


async def test_unknown_sender_never_opens(demo_store: Store) -> None:
    contact_id = await _contact(
        demo_store, "inconnu@example.com", "Ma voiture est en panne à Lyon", intent="new_claim"
    )
    contact = await _match(demo_store, contact_id)
    assert (contact.dossier_id, contact.status_reason) == (
        None,
        "no dossier reference found; unknown sender inconnu@example.com",
    )
    async with demo_store.sessions() as session:
        assert await session.scalar(select(Dossier).where(Dossier.opened_after_the_fact)) is None


async def test_uncertain_intent_does_not_open(demo_store: Store) -> None:
    contact_id = await _contact(demo_store, JEAN, "Valise volée à Nice", intent="new_claim")
    async with demo_store.sessions() as session, session.begin():
        (await session.get_one(Contact, contact_id)).intent_confidence = 0.2
    contact = await _match(demo_store, contact_id)
    assert contact.dossier_id is None
    assert contact.status_reason == (
        "no dossier reference found; Jean Dupont is known but the intent (new_claim at 0.20)"
        " neither continues nor opens a dossier"
    )


async def test_matching_again_keeps_the_dossier_and_opens_nothing_more(demo_store: Store) -> None:
    contact_id = await _contact(
        demo_store, JEAN, "Valise volée à Nice le 20/11/2026", intent="new_claim"
    )
    first = await _match(demo_store, contact_id)
    again = await _match(demo_store, contact_id)
    assert first.dossier_id == again.dossier_id is not None
    async with demo_store.sessions() as session:
        opened = (await session.scalars(select(Dossier).where(Dossier.opened_after_the_fact))).all()
    assert len(opened) == 1


# --------------------------------------------------------------------------- references


async def test_next_reference_follows_the_highest_of_the_year(demo_store: Store) -> None:
    await _add_dossier(demo_store, "AS-2026-000041", JEAN)
    await _add_dossier(demo_store, "AS-2027-000007", JEAN)
    async with demo_store.sessions() as session:
        assert await next_reference(session, 2026) == "AS-2026-000042"
        assert await next_reference(session, 2027) == "AS-2027-000008"
        assert await next_reference(session, 2028) == "AS-2028-000001"


async def test_two_workers_opening_at_once_get_distinct_references(demo_store: Store) -> None:
    if demo_store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite lets one writer at a time: there is no race to lose")
    first = await _contact(
        demo_store, JEAN, "Valise volée à Nice le 20/11/2026", intent="new_claim"
    )
    second = await _contact(
        demo_store, AMINA, "Cambriolage à Lyon le 25/11/2026, serrurier", intent="new_claim"
    )
    async with demo_store.sessions() as session_a:
        await session_a.begin()
        contact_a = await session_a.scalar(
            select(Contact).where(Contact.id == first).options(selectinload(Contact.documents))
        )
        assert contact_a is not None
        event_a = read_event("", contact_a.text, {})
        dossier_a = await match_dossier(session_a, contact_a, POLICY, event_a)
        assert dossier_a is not None and dossier_a.ref == "AS-2026-000004"
        # The second worker reads the same highest reference (the first has not committed)
        # and waits on the unique index until the first commits, then takes the next one.
        racing = asyncio.ensure_future(_match(demo_store, second))
        await asyncio.sleep(0.5)
        assert not racing.done()
        await session_a.commit()
    contact_b = await asyncio.wait_for(racing, 30)
    assert contact_b.dossier is not None and contact_b.dossier.ref == "AS-2026-000005"


# --------------------------------------------------------------------------- lookup


async def test_beneficiary_lookup_is_exact_and_case_insensitive(demo_store: Store) -> None:
    async with demo_store.sessions() as session, session.begin():
        session.add(Beneficiary(name="Homonyme", emails=["xjean.dupont@example.org"], phones=[]))
        session.add(
            Beneficiary(name="Souligné", emails=["a_b%c@example.org"], phones=["+33700000001"])
        )
    async with demo_store.sessions() as session:
        assert [b.name for b in await beneficiaries_for(session, "JEAN.DUPONT@example.org")] == [
            "Jean Dupont"
        ]
        assert [b.name for b in await beneficiaries_for(session, "A_B%C@example.org")] == [
            "Souligné"
        ]
        assert await beneficiaries_for(session, "aXb%c@example.org") == []
        assert [b.name for b in await beneficiaries_for(session, "07 00 00 00 01")] == ["Souligné"]
        assert await beneficiaries_for(session, "not a phone") == []


def test_read_event_uses_classified_date_first() -> None:
    event = read_event("", "Valise perdue à Madrid le 3 mars 2026", {"date": "2026-03-04"})
    assert (event.claim_type, event.cause, event.event_date, event.place) == (
        "baggage",
        "loss",
        date(2026, 3, 4),
        "Madrid",
    )
    assert read_event("", "Taxi payé 30 €", {}).amount == str(Decimal("30.00"))


def test_no_place_is_an_empty_place() -> None:
    assert read_event("", "ma voiture est en panne, remorquage svp", {}).place == ""
