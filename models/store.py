"""The store: blobs plus database, and the accept path every channel stores its contacts by."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from models.accept import Accepted, AcceptWriter, Envelope, Pending
from models.blobs import BlobStore
from models.db import SessionFactory, create_engine, session_factory
from models.inbound import InboundAttachment, InboundContact
from models.jobs import CONTACT_JOB
from models.tables import AuditEvent

__all__ = ["Accepted", "Envelope", "Store", "audit"]


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
        self.accepts = AcceptWriter(engine.url.render_as_string(hide_password=False))

    @classmethod
    def open(cls, database_url: str, blob_root: Any, min_free_bytes: int = 0) -> Store:
        return cls(create_engine(database_url), BlobStore(blob_root, min_free_bytes))

    async def close(self) -> None:
        await self.accepts.close()
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
        when nothing could be stored: the caller must then refuse temporarily. The rows are
        written by ``models.accept``, several contacts to a transaction under load.
        """
        envelope = envelope or Envelope()
        # fsync is slow and blocking: keep it off the event loop.
        raw_digest, attachment_digests = await asyncio.to_thread(self._put_blobs, inbound, raw)
        pending = Pending(inbound, raw_digest, attachment_digests, envelope, first_job)
        return await self.accepts.submit(pending)

    def _put_blobs(self, inbound: InboundContact, raw: bytes) -> tuple[str, list[str]]:
        self.blobs.ensure_room(len(raw) + sum(len(a.content) for a in inbound.attachments))
        return self.blobs.put(raw), [self.blobs.put(a.content) for a in inbound.attachments]

    def put_attachments(self, attachments: Sequence[InboundAttachment]) -> list[str]:
        """Store attachments found after intake (unpacking a raw contact); blocking."""
        self.blobs.ensure_room(sum(len(a.content) for a in attachments))
        return [self.blobs.put(a.content) for a in attachments]
