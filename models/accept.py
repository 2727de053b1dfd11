"""Group commit of inbound contacts: one thread writes every accept waiting in one transaction.

Every channel acknowledges only after its contact is committed (DESIGN rule 1), so the accept
transaction is on the path of every ``250`` and every webhook ``200``. Written on the event
loop through the async driver, it cost a crossing to the driver's thread per statement and,
on SQLite, a wait on the write lock per contact: the fronts topped out near 110 contacts a
second. Here the accepts that arrive while a transaction is being written queue up, and the
next transaction writes all of them with one INSERT per table and one commit (one fsync), on
a synchronous connection in a thread of its own: the loop crosses once per batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from models.clock import utcnow
from models.db import create_sync_engine
from models.dispatch import defer_twins
from models.inbound import InboundAttachment, InboundContact
from models.tables import AuditEvent, Contact, Delivery, Document, Job

log = logging.getLogger(__name__)

# The tables themselves: the accept writes Core statements (``write_batch``).
CONTACTS = cast(Table, Contact.__table__)
DOCUMENTS = cast(Table, Document.__table__)
JOBS = cast(Table, Job.__table__)
AUDIT_EVENTS = cast(Table, AuditEvent.__table__)
DELIVERIES = cast(Table, Delivery.__table__)

#: The contact job's current step is kept on ``Contact.step``; this is where it starts.
FIRST_STEP = "extract"
#: Where it starts when only the identity was read at intake (``InboundContact.raw_only``).
UNPACK_STEP = "unpack"
#: Accepts written in one transaction at most: a flood is still committed in slices small
#: enough that the first of them are acknowledged while the rest are written.
MAX_BATCH = 200


@dataclass(frozen=True)
class Envelope:
    """What the transport knew beside the message itself (SMTP peer, MAIL FROM, RCPT TO)."""

    peer: str = ""
    sender: str | None = None
    recipients: tuple[str, ...] = ()

    def delivery_row(self, contact_id: int, raw_digest: str, *, duplicate: bool) -> dict[str, Any]:
        """The ``delivery`` row recording one arrival of a contact by this transport."""
        return {
            "contact_id": contact_id,
            "duplicate": duplicate,
            "peer": self.peer,
            "envelope_sender": self.sender,
            "envelope_recipients": list(self.recipients),
            "raw_sha256": raw_digest,
        }


@dataclass(frozen=True)
class Accepted:
    contact_id: int
    duplicate: bool


@dataclass
class Pending:
    """One contact whose blobs are safe, waiting for its rows to be committed."""

    inbound: InboundContact
    raw_digest: str
    attachment_digests: list[str]
    envelope: Envelope
    first_job: str

    @property
    def key(self) -> tuple[str, str]:
        return self.inbound.channel, self.inbound.natural_key


def _contact_row(pending: Pending) -> dict[str, Any]:
    inbound = pending.inbound
    return {
        "direction": "inbound",
        "channel": inbound.channel,
        "natural_key": inbound.natural_key,
        "sender": inbound.sender,
        "sender_name": inbound.sender_name,
        "recipients": list(inbound.recipients),
        "subject": inbound.subject,
        "text": inbound.text,
        "html": inbound.html,
        "message_id": inbound.message_id,
        "in_reply_to": inbound.in_reply_to,
        "references": list(inbound.references),
        "sent_at": inbound.sent_at,
        "raw_sha256": pending.raw_digest,
        "automatic_reason": inbound.automatic_reason,
        "defects": list(inbound.defects),
        "dossier_hint": inbound.dossier_hint,
        "status": "received",
        "step": UNPACK_STEP if inbound.raw_only else FIRST_STEP,
    }


def _document_row(attachment: InboundAttachment, digest: str, position: int) -> dict[str, Any]:
    return {
        "position": position,
        "filename": attachment.filename,
        "declared_type": attachment.declared_type,
        "inline": attachment.inline,
        "doc_type_hint": attachment.doc_type_hint,
        "sha256": digest,
        "size": len(attachment.content),
        "status": "pending",
    }


def new_documents(
    attachments: Sequence[InboundAttachment], digests: Sequence[str]
) -> list[Document]:
    """The pending documents of a contact's attachments, whose blobs are already stored."""
    return [
        Document(**_document_row(attachment, digest, position))
        for position, (attachment, digest) in enumerate(zip(attachments, digests, strict=True))
    ]


def write_batch(connection: Connection, batch: Sequence[Pending]) -> list[Accepted]:
    """Insert ``batch`` in the caller's transaction; a known natural key (in the database, or
    earlier in the batch) only records a duplicate delivery (DESIGN rule 2).

    Rows go in as Core INSERTs, one per table for the whole batch, on a plain connection:
    the ORM's session and unit of work cost more than the statements. So the jobs' worker
    twins are written here (``dispatch.defer_twins``): no session flush hook sees them.
    """
    known: dict[tuple[str, str], int] = {}
    for channel in {p.inbound.channel for p in batch}:
        keys = {p.inbound.natural_key for p in batch if p.inbound.channel == channel}
        rows = connection.execute(
            select(Contact.natural_key, Contact.id).where(
                Contact.channel == channel, Contact.natural_key.in_(keys)
            )
        )
        known.update({(channel, key): contact_id for key, contact_id in rows})
    fresh: dict[tuple[str, str], Pending] = {}
    for pending in batch:
        if pending.key not in known and pending.key not in fresh:
            fresh[pending.key] = pending
    if fresh:
        ids = (
            connection.execute(
                insert(CONTACTS).returning(CONTACTS.c.id, sort_by_parameter_order=True),
                [_contact_row(p) for p in fresh.values()],
            )
            .scalars()
            .all()
        )
        created = dict(zip(fresh, ids, strict=True))
        documents = [
            {**_document_row(attachment, digest, position), "contact_id": created[key]}
            for key, p in fresh.items()
            for position, (attachment, digest) in enumerate(
                zip(p.inbound.attachments, p.attachment_digests, strict=True)
            )
        ]
        if documents:
            connection.execute(insert(DOCUMENTS), documents)
        now = utcnow()
        job_rows = [
            {
                "kind": p.first_job,
                "subject_id": created[key],
                "status": "pending",
                "run_after": now,
                "lock_key": None,
            }
            for key, p in fresh.items()
        ]
        job_ids = (
            connection.execute(
                insert(JOBS).returning(JOBS.c.id, sort_by_parameter_order=True), job_rows
            )
            .scalars()
            .all()
        )
        defer_twins(
            connection, [Job(id=i, **row) for i, row in zip(job_ids, job_rows, strict=True)]
        )
        connection.execute(
            insert(AUDIT_EVENTS),
            [
                {
                    "actor": f"channel:{p.inbound.channel}",
                    "action": "contact.received",
                    "object_type": "contact",
                    "object_id": str(created[key]),
                    "after": {"natural_key": p.inbound.natural_key, "sender": p.inbound.sender},
                    "note": "",
                }
                for key, p in fresh.items()
            ],
        )
        known.update(created)
    results: list[Accepted] = []
    deliveries: list[dict[str, Any]] = []
    duplicates: Counter[int] = Counter()
    for pending in batch:
        contact_id = known[pending.key]
        duplicate = fresh.get(pending.key) is not pending
        if duplicate:
            duplicates[contact_id] += 1
        deliveries.append(
            pending.envelope.delivery_row(contact_id, pending.raw_digest, duplicate=duplicate)
        )
        results.append(Accepted(contact_id, duplicate=duplicate))
    connection.execute(insert(DELIVERIES), deliveries)
    for contact_id, extra in duplicates.items():
        connection.execute(
            update(Contact)
            .where(Contact.id == contact_id)
            .values(duplicate_count=Contact.duplicate_count + extra)
        )
    return results


class AcceptWriter:
    """Writes accepts in batches on one thread; ``submit`` returns once its batch committed.

    There is no timer: a batch is whatever queued while the previous one was written, so a
    lone contact is written at once and a flood is written a slice at a time.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._queue: list[tuple[Pending, asyncio.Future[Accepted]]] = []
        self._draining: asyncio.Task[None] | None = None
        #: Transactions committed, and contacts in them: to see the batching at work.
        self.batches = 0
        self.written = 0

    async def submit(self, pending: Pending) -> Accepted:
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._queue.append((pending, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def close(self) -> None:
        if self._draining is not None and not self._draining.done():
            await asyncio.shield(self._draining)
        if self._executor is None:
            return
        loop = asyncio.get_running_loop()
        if self._engine is not None:
            # In the writer's thread: its connections were made there.
            await loop.run_in_executor(self._executor, self._engine.dispose)
            self._engine = None
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self._executor = None

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            outcomes: list[Accepted | Exception]
            try:
                outcomes = list(await self._in_thread([pending for pending, _ in batch]))
            except Exception as exc:
                if len(batch) == 1:
                    outcomes = [exc]
                else:
                    # One bad contact must not fail the others: write each alone, and let
                    # only the ones that still fail refuse (their transport retries them).
                    log.warning("a batch of %d accepts failed; writing them one by one", len(batch))
                    outcomes = [await self._alone(pending) for pending, _ in batch]
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                # A caller that gave up (its client hung up) has cancelled its future.
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _alone(self, pending: Pending) -> Accepted | Exception:
        try:
            (result,) = await self._in_thread([pending])
        except Exception as exc:
            return exc
        return result

    async def _in_thread(self, batch: list[Pending]) -> list[Accepted]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="guichet-accept")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)

    def _write(self, batch: list[Pending]) -> list[Accepted]:
        """In the writer's thread: one transaction for the batch, retried once on a key race."""
        if self._engine is None:
            self._engine = create_sync_engine(self.url)
        for attempt in range(2):
            try:
                with self._engine.begin() as connection:
                    results = write_batch(connection, batch)
            except IntegrityError:
                # Another process stored one of these natural keys between our look-up and
                # our insert (PostgreSQL fronts side by side): the next pass sees it as known.
                if attempt:
                    raise
                continue
            self.batches += 1
            self.written += len(batch)
            return results
        raise AssertionError("unreachable")  # pragma: no cover
