"""The store: blobs plus database, and the one transaction that accepts an inbound contact."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from models import jobs
from models.blobs import BlobStore
from models.db import SessionFactory, create_engine, session_factory
from models.inbound import InboundContact
from models.jobs import CONTACT_JOB
from models.tables import AuditEvent, Contact, Delivery, Document

#: The contact job's current step is kept on ``Contact.step``; this is where it starts.
FIRST_STEP = "extract"


@dataclass(frozen=True)
class Envelope:
    """What the transport knew beside the message itself (SMTP peer, MAIL FROM, RCPT TO)."""

    peer: str = ""
    sender: str | None = None
    recipients: tuple[str, ...] = ()

    def delivery(self, contact_id: int, raw_digest: str, *, duplicate: bool) -> Delivery:
        return Delivery(
            contact_id=contact_id,
            duplicate=duplicate,
            peer=self.peer,
            envelope_sender=self.sender,
            envelope_recipients=list(self.recipients),
            raw_sha256=raw_digest,
        )


@dataclass(frozen=True)
class Accepted:
    contact_id: int
    duplicate: bool


def audit(
    session: AsyncSession,
    actor: str,
    action: str,
    object_type: str,
    object_id: object,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str = "",
) -> None:
    """Record one change in the caller's transaction (DESIGN rule 6)."""
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=str(object_id),
            before=before,
            after=after,
            note=note,
        )
    )


class Store:
    def __init__(self, engine: AsyncEngine, blobs: BlobStore) -> None:
        self.engine = engine
        self.sessions: SessionFactory = session_factory(engine)
        self.blobs = blobs

    @classmethod
    def open(cls, database_url: str, blob_root: Any, min_free_bytes: int = 0) -> Store:
        return cls(create_engine(database_url), BlobStore(blob_root, min_free_bytes))

    async def close(self) -> None:
        await self.engine.dispose()

    async def accept_contact(
        self,
        inbound: InboundContact,
        raw: bytes,
        envelope: Envelope | None = None,
        first_job: str = CONTACT_JOB,
    ) -> Accepted:
        """Persist raw bytes, attachments and the normalised contact, then say it is safe.

        ``first_job`` is the kind of job enqueued with the contact: intake by default, or a
        step that must come before it (fetching MMS media), which enqueues intake when done.

        Blobs are fsync'd first and the rows committed after, so once this returns the
        transport may acknowledge (DESIGN rule 1). A second copy of a known natural key only
        records a duplicate delivery (rule 2). Raises ``BlobStoreError`` or a database error
        when nothing could be stored: the caller must then refuse temporarily.
        """
        envelope = envelope or Envelope()
        # fsync is slow and blocking: keep it off the event loop.
        raw_digest, attachment_digests = await asyncio.to_thread(self._put_blobs, inbound, raw)
        for attempt in range(2):
            try:
                return await self._insert_contact(
                    inbound, raw_digest, attachment_digests, envelope, first_job
                )
            except IntegrityError:
                # Another delivery of the same message won the race; the next pass records
                # this one as its duplicate.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _put_blobs(self, inbound: InboundContact, raw: bytes) -> tuple[str, list[str]]:
        self.blobs.ensure_room(len(raw) + sum(len(a.content) for a in inbound.attachments))
        return self.blobs.put(raw), [self.blobs.put(a.content) for a in inbound.attachments]

    async def _insert_contact(
        self,
        inbound: InboundContact,
        raw_digest: str,
        attachment_digests: list[str],
        envelope: Envelope,
        first_job: str,
    ) -> Accepted:
        async with self.sessions() as session, session.begin():
            existing = await session.scalar(
                select(Contact.id).where(
                    Contact.channel == inbound.channel,
                    Contact.natural_key == inbound.natural_key,
                )
            )
            if existing is not None:
                await self._record_duplicate(session, existing, raw_digest, envelope)
                return Accepted(existing, duplicate=True)
            contact = self._new_contact(inbound, raw_digest, attachment_digests)
            session.add(contact)
            await session.flush()
            session.add(envelope.delivery(contact.id, raw_digest, duplicate=False))
            jobs.enqueue(session, first_job, contact.id)
            audit(
                session,
                f"channel:{inbound.channel}",
                "contact.received",
                "contact",
                contact.id,
                after={"natural_key": inbound.natural_key, "sender": inbound.sender},
            )
            return Accepted(contact.id, duplicate=False)

    @staticmethod
    def _new_contact(
        inbound: InboundContact, raw_digest: str, attachment_digests: list[str]
    ) -> Contact:
        contact = Contact(
            direction="inbound",
            channel=inbound.channel,
            natural_key=inbound.natural_key,
            sender=inbound.sender,
            sender_name=inbound.sender_name,
            recipients=list(inbound.recipients),
            subject=inbound.subject,
            text=inbound.text,
            html=inbound.html,
            message_id=inbound.message_id,
            in_reply_to=inbound.in_reply_to,
            references=list(inbound.references),
            sent_at=inbound.sent_at,
            raw_sha256=raw_digest,
            automatic_reason=inbound.automatic_reason,
            defects=list(inbound.defects),
            dossier_hint=inbound.dossier_hint,
            status="received",
            step=FIRST_STEP,
        )
        contact.documents = [
            Document(
                position=position,
                filename=attachment.filename,
                declared_type=attachment.declared_type,
                inline=attachment.inline,
                doc_type_hint=attachment.doc_type_hint,
                sha256=digest,
                size=len(attachment.content),
                status="pending",
            )
            for position, (attachment, digest) in enumerate(
                zip(inbound.attachments, attachment_digests, strict=True)
            )
        ]
        return contact

    @staticmethod
    async def _record_duplicate(
        session: AsyncSession, contact_id: int, raw_digest: str, envelope: Envelope
    ) -> None:
        session.add(envelope.delivery(contact_id, raw_digest, duplicate=True))
        await session.execute(
            update(Contact)
            .where(Contact.id == contact_id)
            .values(duplicate_count=Contact.duplicate_count + 1)
        )
