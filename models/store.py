"""The store: blobs plus database, and the accept path every channel stores its contacts by."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from models.accept import STAGE_MAX_BYTES, Accepted, AcceptWriter, Envelope, Pending
from models.blobs import BlobStore
from models.clock import utcnow
from models.db import SessionFactory, create_engine, session_factory
from models.inbound import InboundAttachment, InboundContact
from models.jobs import CONTACT_JOB
from models.tables import AuditEvent, StagedBlob

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
        self.accepts = AcceptWriter(engine.url.render_as_string(hide_password=False), blobs)

    @property
    def blobs(self) -> BlobStore:
        return self.accepts.blobs

    @blobs.setter
    def blobs(self, blobs: BlobStore) -> None:
        # One blob store for the whole store: the accept writer moves staged bytes into it.
        self.accepts.blobs = blobs

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

        Attachments and large raw messages are fsync'd to the blob store first and the rows
        committed after; a small raw message (``STAGE_MAX_BYTES``) is committed with the rows
        and written to the blob store after. Either way, once this returns the transport may
        acknowledge (DESIGN rule 1). A second copy of a known natural key only
        records a duplicate delivery (rule 2). Raises ``BlobStoreError`` or a database error
        when nothing could be stored: the caller must then refuse temporarily. The rows are
        written by ``models.accept``, several contacts to a transaction under load.
        """
        envelope = envelope or Envelope()
        if len(raw) <= STAGE_MAX_BYTES:
            # The raw bytes commit with the rows (one fsync for the batch): no blob write,
            # no thread, before the answer. ``raw_content`` reads them wherever they are.
            raw_digest = hashlib.sha256(raw).hexdigest()
            attachment_digests = (
                await asyncio.to_thread(self.put_attachments, inbound.attachments)
                if inbound.attachments
                else []
            )
            pending = Pending(
                inbound, raw_digest, attachment_digests, envelope, first_job, staged=bytes(raw)
            )
        else:
            # fsync is slow and blocking: keep it off the event loop.
            raw_digest, attachment_digests = await asyncio.to_thread(self._put_blobs, inbound, raw)
            pending = Pending(inbound, raw_digest, attachment_digests, envelope, first_job)
        return await self.accepts.submit(pending)

    async def raw_content(self, digest: str, session: AsyncSession | None = None) -> bytes:
        """The bytes of a contact's raw blob, still staged in the database or in the blob store;
        read in ``session`` when the caller has one open (on SQLite a second would wait for it).

        The staged row goes only once its bytes are in the blob store, so looking there second
        never misses them.
        """
        query = select(StagedBlob.content).where(StagedBlob.sha256 == digest)
        if session is not None:
            staged = await session.scalar(query)
        else:
            async with self.sessions() as own:
                staged = await own.scalar(query)
        if staged is not None:
            return bytes(staged)
        return await asyncio.to_thread(self.blobs.get, digest)

    async def settle_staged(self, batch: int = 100, older_than: timedelta | None = None) -> int:
        """Write every raw blob still staged in the database to the blob store and delete its
        row; the count. The accept writer does so for its own within moments: this is for
        what a stopped process left (at start-up, and periodically for fronts that died:
        ``older_than`` leaves the live writers' rows to them), and for whoever needs every
        blob in the folder (an export). Only rows staged before the call are taken, so a
        flood going on meanwhile cannot keep it going. Raises ``BlobStoreError`` when the
        folder takes no writes; the rows then stay."""
        cutoff = utcnow() - (older_than or timedelta())
        total = 0
        while True:
            async with self.sessions() as session:
                rows = (
                    await session.execute(
                        select(StagedBlob.sha256, StagedBlob.content)
                        .where(StagedBlob.staged_at <= cutoff)
                        .order_by(StagedBlob.sha256)
                        .limit(batch)
                    )
                ).all()
            if not rows:
                return total
            await asyncio.to_thread(self._put_staged, [bytes(content) for _, content in rows])
            async with self.sessions() as session, session.begin():
                await session.execute(
                    delete(StagedBlob).where(StagedBlob.sha256.in_([d for d, _ in rows]))
                )
            total += len(rows)

    def _put_staged(self, contents: list[bytes]) -> None:
        for content in contents:
            self.blobs.put(content)

    def _put_blobs(self, inbound: InboundContact, raw: bytes) -> tuple[str, list[str]]:
        self.blobs.ensure_room(len(raw) + sum(len(a.content) for a in inbound.attachments))
        return self.blobs.put(raw), [self.blobs.put(a.content) for a in inbound.attachments]

    def put_attachments(self, attachments: Sequence[InboundAttachment]) -> list[str]:
        """Store attachments found after intake (unpacking a raw contact); blocking."""
        self.blobs.ensure_room(sum(len(a.content) for a in attachments))
        return [self.blobs.put(a.content) for a in attachments]
