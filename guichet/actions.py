"""What a gestionnaire does to contacts and dossiers: plain async functions over one transaction,
each writing its audit event with the person as actor (shared by the pages and the JSON API)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from guichet.parts import mail_identity, reference_rules
from guichet.settings import Settings
from intake.closing import UnknownDossier, close_dossier
from intake.dossiers import beneficiaries_for, next_reference
from intake.evaluate import SETTLED, ReferenceRules, _evaluate_dossier
from models import jobs
from models.clock import utcnow
from models.corrections import correct_contact, correct_document
from models.jobs import CONTACT_JOB
from models.store import audit
from models.tables import Contact, ContactTriage, Document, Dossier, OutboundMessage, User
from responders import decide
from responders.acknowledge import MailIdentity, ReplyRoute, reply_route
from responders.compose import ReplyInputs, build_reply
from responders.outbox import NotHeld, approve, queue_reply, reject
from responders.render import TemplateMissing, TemplateRenderer

#: Replies a gestionnaire may write from a template (an attestation needs its PDF: the
#: pipeline writes those, and the gestionnaire approves them).
REPLY_PURPOSES = (
    decide.STATUS_ANSWER,
    decide.MISSING_DOCUMENTS,
    decide.COMPLETION,
    decide.ACKNOWLEDGEMENT,
    decide.REFUSAL,
)
MAX_TEXT = 20_000


class ActionError(Exception):
    """An action that cannot be done, with the HTTP status that says why."""

    status = 400


class NotFound(ActionError):
    status = 404


class Conflict(ActionError):
    status = 409


@dataclass(frozen=True)
class Workspace:
    """What the actions need beyond the database: templates, our identity, the rules."""

    renderer: TemplateRenderer
    identity: MailIdentity
    rules: ReferenceRules
    sla: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Workspace:
        return cls(
            renderer=TemplateRenderer(settings.templates_dir, settings.default_language),
            identity=mail_identity(settings),
            rules=reference_rules(settings),
            sla=timedelta(hours=settings.inbox_sla_hours),
        )


async def load_contact(session: AsyncSession, contact_id: int, *, lock: bool = False) -> Contact:
    query = (
        select(Contact)
        .where(Contact.id == contact_id)
        .options(
            selectinload(Contact.documents),
            selectinload(Contact.replies),
            selectinload(Contact.dossier).selectinload(Dossier.beneficiary),
            selectinload(Contact.dossier).selectinload(Dossier.contract),
        )
    )
    if lock:
        query = query.with_for_update()
    contact = await session.scalar(query)
    if contact is None:
        raise NotFound(f"no contact {contact_id}")
    return contact


async def load_dossier(session: AsyncSession, ref: str) -> Dossier:
    dossier = await session.scalar(
        select(Dossier)
        .where(Dossier.ref == ref.strip().upper())
        .options(selectinload(Dossier.beneficiary), selectinload(Dossier.contract))
    )
    if dossier is None:
        raise NotFound(f"no dossier {ref.strip()[:40]}")
    return dossier


async def reevaluate(session: AsyncSession, ws: Workspace, dossier_id: int | None) -> None:
    """A person changed what the dossier holds: its checklist and cover follow at once."""
    if dossier_id is None:
        return
    dossier = await session.get_one(Dossier, dossier_id)
    if dossier.status not in SETTLED:
        await session.flush()
        await _evaluate_dossier(session, dossier, ws.rules)


def respond_again(session: AsyncSession, contact: Contact) -> None:
    """After a person changed what a dossier holds, its replies follow as if the contact had
    just arrived: the pipeline's respond step runs again, through a durable job, and its keys
    (contact + purpose, dossier + round) keep it from repeating what was already sent."""
    if contact.step == "done":
        contact.step = "respond"
        lock = None if contact.dossier_id is None else jobs.dossier_lock(contact.dossier_id)
        jobs.enqueue(session, CONTACT_JOB, contact.id, lock=lock)


def _ref(contact: Contact) -> str | None:
    return contact.dossier.ref if contact.dossier else None


async def attach(
    session: AsyncSession, ws: Workspace, contact_id: int, ref: str, actor: str
) -> dict[str, Any]:
    contact = await load_contact(session, contact_id, lock=True)
    dossier = await load_dossier(session, ref)
    before, previous = _ref(contact), contact.dossier_id
    if previous == dossier.id:
        return {"contact": contact.id, "dossier": dossier.ref, "changed": False}
    contact.dossier_id = dossier.id
    contact.dossier = dossier
    contact.match_rule = f"attached by {actor}"[:200]
    for document in contact.documents:
        document.dossier_id = dossier.id
    audit(
        session,
        actor,
        "contact.attached",
        "contact",
        contact.id,
        before={"dossier": before},
        after={"dossier": dossier.ref, "rule": contact.match_rule},
    )
    await reevaluate(session, ws, previous)
    await reevaluate(session, ws, dossier.id)
    respond_again(session, contact)
    return {"contact": contact.id, "dossier": dossier.ref, "changed": True}


async def detach(
    session: AsyncSession, ws: Workspace, contact_id: int, actor: str
) -> dict[str, Any]:
    contact = await load_contact(session, contact_id, lock=True)
    previous, before = contact.dossier_id, _ref(contact)
    if previous is None:
        return {"contact": contact.id, "dossier": None, "changed": False}
    contact.dossier_id = None
    contact.dossier = None
    contact.match_rule = f"detached by {actor}"[:200]
    for document in contact.documents:
        if document.dossier_id == previous:
            document.dossier_id = None
    audit(
        session,
        actor,
        "contact.detached",
        "contact",
        contact.id,
        before={"dossier": before},
        after={"dossier": None},
    )
    await reevaluate(session, ws, previous)
    return {"contact": contact.id, "dossier": None, "changed": True}


async def open_dossier(
    session: AsyncSession,
    ws: Workspace,
    contact_id: int,
    claim_type: str,
    actor: str,
    *,
    event_date: date | None = None,
) -> dict[str, Any]:
    """Open a dossier after the fact for the contact's beneficiary, and attach the contact."""
    if claim_type not in ws.rules.claim_types:
        raise ActionError(f"claim type must be one of {sorted(ws.rules.claim_types)}")
    contact = await load_contact(session, contact_id, lock=True)
    people = await beneficiaries_for(session, contact.sender)
    person = people[0] if people else None
    dossier = Dossier(
        ref=await next_reference(session, utcnow().year),
        beneficiary_id=person.id if person else None,
        contract_id=None,
        claim_type=claim_type,
        event_date=event_date,
        status="awaiting_documents",
        opened_after_the_fact=True,
        summary=f"Ouvert a posteriori par {actor} depuis le contact {contact.id}.",
    )
    session.add(dossier)
    await session.flush()
    audit(
        session,
        actor,
        "dossier.opened",
        "dossier",
        dossier.ref,
        after={
            "ref": dossier.ref,
            "claim_type": claim_type,
            "beneficiary": person.name if person else None,
            "contact": contact.id,
            "opened_after_the_fact": True,
        },
    )
    await attach(session, ws, contact_id, dossier.ref, actor)
    return {"contact": contact.id, "dossier": dossier.ref, "changed": True}


async def correct_intent(
    session: AsyncSession,
    ws: Workspace,
    contact_id: int,
    actor: str,
    *,
    intent: str | None = None,
    entities: dict[str, str] | None = None,
) -> dict[str, Any]:
    contact = await load_contact(session, contact_id, lock=True)
    if intent is not None and not intent.replace("_", "").isalnum():
        raise ActionError("intent: letters, digits and '_' only")
    example = await correct_contact(
        session, contact, actor, intent=intent or None, entities=entities
    )
    await reevaluate(session, ws, contact.dossier_id)
    return {"contact": contact.id, "intent": contact.intent, "entities": contact.entities} | {
        "training_example": example.label
    }


async def correct_document_type(
    session: AsyncSession,
    ws: Workspace,
    document_id: int,
    actor: str,
    *,
    doc_type: str | None = None,
    entities: dict[str, str] | None = None,
) -> dict[str, Any]:
    document = await session.get(Document, document_id, with_for_update=True)
    if document is None:
        raise NotFound(f"no document {document_id}")
    if doc_type is not None and not doc_type.replace("_", "").isalnum():
        raise ActionError("doc_type: letters, digits and '_' only")
    contact = await session.get_one(Contact, document.contact_id)
    await correct_document(
        session,
        document,
        actor,
        doc_type=doc_type or None,
        entities=entities,
        language=document.language or contact.language or "fr",
        channel=contact.channel,
    )
    await reevaluate(session, ws, document.dossier_id)
    if document.dossier_id is not None:
        respond_again(session, contact)
    return {
        "document": document.id,
        "contact": document.contact_id,
        "doc_type": document.doc_type,
        "entities": document.entities,
    }


async def assign(
    session: AsyncSession, contact_id: int, username: str | None, actor: str
) -> dict[str, Any]:
    """Give the contact to ``username`` (None: to nobody)."""
    contact = await load_contact(session, contact_id, lock=True)
    user = None
    if username:
        user = await session.scalar(
            select(User).where(User.username == username.strip().lower(), User.active)
        )
        if user is None:
            raise NotFound(f"no active user {username.strip()[:100]!r}")
    before = await _username(session, contact.assignee_id)
    contact.assignee_id = user.id if user else None
    audit(
        session,
        actor,
        "contact.assigned",
        "contact",
        contact.id,
        before={"assignee": before},
        after={"assignee": user.username if user else None},
    )
    return {"contact": contact.id, "assignee": user.username if user else None}


async def _username(session: AsyncSession, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    return await session.scalar(select(User.username).where(User.id == user_id))


async def mark_done(
    session: AsyncSession, contact_id: int, actor: str, *, done: bool = True
) -> dict[str, Any]:
    contact = await load_contact(session, contact_id, lock=True)
    triage = await session.get(ContactTriage, contact.id, with_for_update=True)
    was = triage is not None and triage.done_at is not None
    if triage is None:
        triage = ContactTriage(contact_id=contact.id)
        session.add(triage)
    if was != done:
        triage.done_at, triage.done_by = (utcnow(), actor) if done else (None, None)
        audit(
            session,
            actor,
            "contact.done" if done else "contact.reopened",
            "contact",
            contact.id,
            before={"done": was},
            after={"done": done},
        )
    return {"contact": contact.id, "done": done, "changed": was != done}


# ---------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Draft:
    """A reply rendered for the contact's channel and language, before the person edits it."""

    purpose: str
    channel: str
    recipient: str
    language: str
    subject: str
    body_text: str

    def as_json(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "channel": self.channel,
            "recipient": self.recipient,
            "language": self.language,
            "subject": self.subject,
            "body_text": self.body_text,
        }


async def _compose(
    session: AsyncSession, ws: Workspace, contact: Contact, purpose: str, key: str
) -> OutboundMessage:
    if purpose not in REPLY_PURPOSES:
        raise ActionError(f"purpose must be one of {list(REPLY_PURPOSES)}")
    dossier = contact.dossier
    route = reply_route(contact, dossier, ws.identity)
    if not isinstance(route, ReplyRoute):
        # Automatic replies are refused for a reason (RFC 3834 loops): a person may still
        # answer an email sender; other channels without a route cannot be answered at all.
        if contact.channel == "email" and "@" in contact.sender:
            route = ReplyRoute("email", contact.sender)
        else:
            raise Conflict(f"this contact cannot be answered: {route}")
    inputs = ReplyInputs(
        contact, dossier, ws.rules.claim_types, ws.renderer, ws.identity, utcnow(), route
    )
    try:
        return build_reply(decide.PlannedReply(purpose, key), inputs)
    except TemplateMissing as exc:
        raise ActionError(str(exc)) from None


async def preview_reply(
    session: AsyncSession, ws: Workspace, contact_id: int, purpose: str
) -> Draft:
    contact = await load_contact(session, contact_id)
    message = await _compose(session, ws, contact, purpose, "preview")
    return Draft(
        purpose,
        message.channel,
        message.recipient,
        message.language,
        message.subject,
        message.body_text,
    )


def new_reply_key() -> str:
    """Sent with the reply form so that a double submit queues one reply, not two."""
    return secrets.token_hex(8)


async def send_reply(
    session: AsyncSession,
    ws: Workspace,
    contact_id: int,
    purpose: str,
    actor: str,
    *,
    body_text: str | None = None,
    subject: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Queue the person's reply: the template's text, or the text they edited from it."""
    contact = await load_contact(session, contact_id, lock=True)
    nonce = key if key and key.isalnum() and len(key) <= 40 else new_reply_key()
    message = await _compose(
        session, ws, contact, purpose, f"contact:{contact.id}:manual:{purpose}:{nonce}"
    )
    if body_text is not None and body_text.strip() and body_text != message.body_text:
        if len(body_text) > MAX_TEXT:
            raise ActionError(f"reply text longer than {MAX_TEXT} characters")
        message.body_text = body_text.replace("\r\n", "\n")
        # The HTML twin says what the template said, not what the person wrote: drop it.
        message.body_html = None
    if subject is not None and subject.strip() and message.channel == "email":
        message.subject = " ".join(subject.split())[:500]
    queued = await queue_reply(session, message, actor=actor)
    if queued is None:
        existing = await session.scalar(
            select(OutboundMessage).where(
                OutboundMessage.idempotency_key == message.idempotency_key
            )
        )
        assert existing is not None
        return {"reply": existing.id, "status": existing.status, "duplicate": True}
    return {"reply": queued.id, "status": queued.status, "duplicate": False}


async def decide_reply(
    session: AsyncSession, message_id: int, actor: str, *, approved: bool, note: str = ""
) -> dict[str, Any]:
    message = await session.scalar(
        select(OutboundMessage).where(OutboundMessage.id == message_id).with_for_update()
    )
    if message is None:
        raise NotFound(f"no reply {message_id}")
    try:
        if approved:
            await approve(session, message, actor)
        else:
            await reject(session, message, actor, note[:1000])
    except NotHeld as exc:
        raise Conflict(str(exc)) from None
    return {"reply": message.id, "status": message.status, "contact": message.contact_id}


async def close(session: AsyncSession, ref: str, actor: str) -> dict[str, Any]:
    try:
        dossier = await close_dossier(session, ref.strip().upper(), actor)
    except UnknownDossier as exc:
        raise NotFound(str(exc)) from None
    return {"dossier": dossier.ref, "status": dossier.status}
