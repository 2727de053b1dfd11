"""Group commit of inbound contacts: one thread writes every accept waiting in one transaction.

Every channel acknowledges only after its contact is committed (DESIGN rule 1), so the accept
transaction is on the path of every ``250`` and every webhook ``200``. Written on the event
loop through the async driver, it cost a crossing to the driver's thread per statement and,
on SQLite, a wait on the write lock per contact: the fronts topped out near 110 contacts a
second. Here the accepts that arrive while a transaction is being written queue up, and the
next transaction writes all of them with one INSERT per table and one commit (one fsync), on
a synchronous connection in a thread of its own: the loop crosses once per batch.

The raw bytes of a small contact (an email whose session read only its headers, a webhook's
form) are committed in that same transaction (``staged_blob``) instead of being written to the
blob store first: a blob costs three fsyncs of its own (file, rename, folder), several times
the database's one. Once the accept is answered, the writer writes those bytes to the blob
store on a second thread, then deletes their rows (in a later transaction). Until then
``Store.raw_content`` finds them there; after a crash, ``Store.settle_staged`` writes
what was left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from models.blobs import BlobStore, BlobStoreError
from models.clock import utcnow
from models.db import create_sync_engine
from models.dispatch import defer_twins
from models.inbound import InboundAttachment, InboundContact
from models.sqlite_async import WriteGate, write_gate
from models.tables import AuditEvent, Contact, Delivery, Document, Job, StagedBlob

log = logging.getLogger(__name__)

# The tables themselves: the accept writes Core statements (``write_batch``).
CONTACTS = cast(Table, Contact.__table__)
DOCUMENTS = cast(Table, Document.__table__)
JOBS = cast(Table, Job.__table__)
AUDIT_EVENTS = cast(Table, AuditEvent.__table__)
DELIVERIES = cast(Table, Delivery.__table__)
STAGED = cast(Table, StagedBlob.__table__)
# The same bytes may arrive twice before they leave the table (a resent message).
_STAGE = {
    "sqlite": sqlite.insert(STAGED).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(STAGED).on_conflict_do_nothing(),
}

#: The contact job's current step is kept on ``Contact.step``; this is where it starts.
FIRST_STEP = "extract"
#: Where it starts when only the identity was read at intake (``InboundContact.raw_only``).
UNPACK_STEP = "unpack"
#: Accepts written in one transaction at most: a flood is still committed in slices small
#: enough that the first of them are acknowledged while the rest are written.
MAX_BATCH = 200
#: Raw bytes up to this size are committed with their contact's rows (``staged_blob``); a
#: larger message goes to the blob store first, as attachments always do.
STAGE_MAX_BYTES = 256 * 1024
#: Rows of bytes already in the blob store are deleted with the next batch once this many
#: have gathered, or when the writer has been idle for ``SETTLE_IDLE_SECONDS``: a DELETE of
#: its own with each accept would cost more than the rows it frees.
DELETE_EVERY = 64
SETTLE_IDLE_SECONDS = 1.0
#: After a failed write to the blob store (folder unwritable, disk full), the next attempt.
SETTLE_RETRY_SECONDS = 5.0
#: Blob writes at once: concurrent fsyncs share the file system's journal commits (20 KB
#: blobs, measured: 700-860/s with one thread, 1 080-1 170 with two, 1 210-1 230 with four),
#: but each competes with the commit's own fsync, which every client waits on: at 16 SMTP
#: connections intake ran at 0.73-0.74 of the bare server with four, 0.83-0.91 with two.
SETTLE_THREADS = 2
#: Staged bytes held in memory for writing at most; past this (a flood faster than the disk)
#: they wait in the database alone for ``Store.settle_staged`` (the periodic task).
SETTLE_MAX_BYTES = 64 * 2**20


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
    #: The raw bytes when they are committed with the rows (``STAGE_MAX_BYTES``); None when
    #: they are already in the blob store.
    staged: bytes | None = None

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


class _CoreRows:
    """The accept's statements as SQLAlchemy Core, on any back end."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def known(self, channel: str, keys: set[str]) -> dict[str, int]:
        rows = self.connection.execute(
            select(Contact.natural_key, Contact.id).where(
                Contact.channel == channel, Contact.natural_key.in_(keys)
            )
        )
        return {key: contact_id for key, contact_id in rows}

    def insert_returning_ids(self, table: Table, rows: list[dict[str, Any]]) -> list[int]:
        statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(self.connection.execute(statement, rows).scalars().all())

    def insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        self.connection.execute(insert(table), rows)

    def stage(self, rows: list[dict[str, Any]]) -> None:
        self.connection.execute(_STAGE[self.connection.dialect.name], rows)

    def unstage(self, digests: Sequence[str]) -> None:
        self.connection.execute(delete(STAGED).where(STAGED.c.sha256.in_(digests)))

    def count_duplicates(self, contact_id: int, extra: int) -> None:
        self.connection.execute(
            update(Contact)
            .where(Contact.id == contact_id)
            .values(duplicate_count=Contact.duplicate_count + extra)
        )


class _Insert:
    """One table's INSERT of every column but its generated key, compiled once, with what
    SQLAlchemy would do to each value (defaults for what a row leaves out, then the type's
    conversion to what the driver takes)."""

    def __init__(self, table: Table, dialect: Dialect, verb: str = "INSERT") -> None:
        columns = [c for c in table.columns if c is not table.autoincrement_column]
        compiled = insert(table).values({c.key: bindparam(c.key) for c in columns})
        sql = str(compiled.compile(dialect=dialect)).replace("INSERT", verb, 1)
        head, values, group = sql.partition(" VALUES ")
        self._head, self._group = f"{head}{values}", group
        self.columns = [
            (c.key, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in columns
        ]
        self.defaults = {c.key: c.default for c in columns if c.default is not None}
        #: Per column: its key, its conversion, its default, and what None becomes (SQL NULL,
        #: or JSON's "null" for a JSON column given None): worked out once, not per value.
        self._plan = [
            (key, convert, self.defaults.get(key), convert(None) if convert else None)
            for key, convert in self.columns
        ]

    def chunks(self, rows: list[dict[str, Any]]) -> Iterator[tuple[str, list[Any], int]]:
        """One statement of many rows (``VALUES (...), (...)``) per slice of ``rows``, with
        its parameters and its number of rows: SQLite's driver lets other threads run at
        each step of a statement, and the writer shares the interpreter with the busy event
        loop, so every step it gives away can cost it a wait of up to the interpreter's
        switch interval."""
        per_statement = max(_SQLITE_MAX_VARIABLES // len(self.columns), 1)
        for start in range(0, len(rows), per_statement):
            part = rows[start : start + per_statement]
            parameters = [value for row in part for value in self.values(row)]
            yield self._head + ", ".join([self._group] * len(part)), parameters, len(part)

    def values(self, row: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        append = out.append
        for key, convert, default, on_none in self._plan:
            value = row.get(key, _LEFT_OUT)
            if value is _LEFT_OUT:
                if default is None:
                    # Left out and no default: SQL NULL, as Core writes it (not JSON's "null").
                    append(None)
                    continue
                value = default.arg(None) if default.is_callable else default.arg  # type: ignore[attr-defined]
            if value is None:
                append(on_none)
            else:
                append(convert(value) if convert is not None else value)
        return out


#: A column a row leaves out (None is a value: SQL NULL, or JSON's "null").
_LEFT_OUT = object()


_SQLITE_INSERTS: dict[tuple[str, str], _Insert] = {}
#: Below SQLite's own limit on a statement's parameters (32 766 since 3.32).
_SQLITE_MAX_VARIABLES = 30_000


class _SqliteRows:
    """The same statements on SQLite's own driver, in the connection's transaction: compiled
    once each by SQLAlchemy (``_Insert``), then run straight on the cursor. Going through
    SQLAlchemy's execution cost six times SQLite's own work per statement, on the path of
    every acknowledgement. A test holds both to the same rows."""

    def __init__(self, connection: Connection) -> None:
        self.dialect = connection.dialect
        self.cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    def _statement(self, table: Table, verb: str = "INSERT") -> _Insert:
        found = _SQLITE_INSERTS.get((table.name, verb))
        if found is None:
            found = _SQLITE_INSERTS[(table.name, verb)] = _Insert(table, self.dialect, verb)
        return found

    def known(self, channel: str, keys: set[str]) -> dict[str, int]:
        marks = ", ".join("?" * len(keys))
        self.cursor.execute(
            f"SELECT natural_key, id FROM contact WHERE channel = ? AND natural_key IN ({marks})",  # noqa: S608 (marks only)
            (channel, *keys),
        )
        return dict(self.cursor.fetchall())

    def insert_returning_ids(self, table: Table, rows: list[dict[str, Any]]) -> list[int]:
        ids: list[int] = []
        for sql, parameters, count in self._statement(table).chunks(rows):
            self.cursor.execute(sql, parameters)
            # SQLite gives a new row one more than the table's largest id, one row after the
            # other, and the writer holds the write lock: the statement's rows have the ids
            # that end at the last one (a test holds this to what RETURNING says).
            last = int(self.cursor.lastrowid or 0)
            ids.extend(range(last - count + 1, last + 1))
        return ids

    def insert(self, table: Table, rows: list[dict[str, Any]], verb: str = "INSERT") -> None:
        for sql, parameters, _ in self._statement(table, verb).chunks(rows):
            self.cursor.execute(sql, parameters)

    def stage(self, rows: list[dict[str, Any]]) -> None:
        self.insert(STAGED, rows, "INSERT OR IGNORE")

    def unstage(self, digests: Sequence[str]) -> None:
        marks = ", ".join("?" * len(digests))
        self.cursor.execute(f"DELETE FROM staged_blob WHERE sha256 IN ({marks})", tuple(digests))  # noqa: S608 (marks only)

    def count_duplicates(self, contact_id: int, extra: int) -> None:
        self.cursor.execute(
            "UPDATE contact SET duplicate_count = duplicate_count + ? WHERE id = ?",
            (extra, contact_id),
        )


def write_batch(
    connection: Connection,
    batch: Sequence[Pending],
    settled: Sequence[str] = (),
    *,
    core: bool = False,
) -> list[Accepted]:
    """Insert ``batch`` in the caller's transaction; a known natural key (in the database, or
    earlier in the batch) only records a duplicate delivery (DESIGN rule 2). The staged rows
    of ``settled`` digests, whose bytes are now in the blob store, are deleted.

    Rows go in one INSERT per table for the whole batch, on a plain connection: the ORM's
    session and unit of work cost more than the statements. So the jobs' worker twins are
    written here (``dispatch.defer_twins``): no session flush hook sees them. On SQLite the
    statements go straight to the driver (``_SqliteRows``); ``core`` forces SQLAlchemy Core.
    """
    rows: _CoreRows | _SqliteRows = (
        _SqliteRows(connection)
        if connection.dialect.name == "sqlite" and not core
        else _CoreRows(connection)
    )
    if settled:
        rows.unstage(settled)
    if not batch:
        return []
    known: dict[tuple[str, str], int] = {}
    for channel in {p.inbound.channel for p in batch}:
        keys = {p.inbound.natural_key for p in batch if p.inbound.channel == channel}
        known.update({(channel, key): i for key, i in rows.known(channel, keys).items()})
    fresh: dict[tuple[str, str], Pending] = {}
    for pending in batch:
        if pending.key not in known and pending.key not in fresh:
            fresh[pending.key] = pending
    if fresh:
        ids = rows.insert_returning_ids(CONTACTS, [_contact_row(p) for p in fresh.values()])
        created = dict(zip(fresh, ids, strict=True))
        documents = [
            {**_document_row(attachment, digest, position), "contact_id": created[key]}
            for key, p in fresh.items()
            for position, (attachment, digest) in enumerate(
                zip(p.inbound.attachments, p.attachment_digests, strict=True)
            )
        ]
        if documents:
            rows.insert(DOCUMENTS, documents)
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
        job_ids = rows.insert_returning_ids(JOBS, job_rows)
        defer_twins(
            connection, [Job(id=i, **row) for i, row in zip(job_ids, job_rows, strict=True)]
        )
        rows.insert(
            AUDIT_EVENTS,
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
    rows.insert(DELIVERIES, deliveries)
    staged = {p.raw_digest: p.staged for p in batch if p.staged is not None}
    if staged:
        rows.stage([{"sha256": digest, "content": content} for digest, content in staged.items()])
    for contact_id, extra in duplicates.items():
        rows.count_duplicates(contact_id, extra)
    return results


class AcceptWriter:
    """Writes accepts in batches on one thread; ``submit`` returns once its batch committed.

    There is no timer: a batch is whatever queued while the previous one was written, so a
    lone contact is written at once and a flood is written a slice at a time. Staged bytes
    are written to ``blobs`` on a second thread after their batch is answered.
    """

    def __init__(self, url: str, blobs: BlobStore) -> None:
        self.url = url
        self.blobs = blobs
        self._engine: Engine | None = None
        #: On SQLite the writer keeps its connection between batches (see ``_connection``).
        self._kept: Connection | None = None
        #: On SQLite, the gate this process's transactions on the file queue on.
        self._gate: WriteGate | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._settler: ThreadPoolExecutor | None = None
        self._queue: list[tuple[Pending, asyncio.Future[Accepted]]] = []
        self._draining: asyncio.Task[None] | None = None
        #: Committed in ``staged_blob``, not yet in the blob store.
        self._to_settle: dict[str, bytes] = {}
        self._settle_bytes = 0
        self._settling: asyncio.Task[None] | None = None
        #: In the blob store; their rows are deleted with a later batch.
        self._settled: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        #: Transactions committed, and contacts in them: to see the batching at work.
        self.batches = 0
        self.written = 0

    async def submit(self, pending: Pending) -> Accepted:
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._queue.append((pending, future))
        self._start_draining()
        return await future

    async def close(self) -> None:
        """Wait for the accepts under way, write the staged bytes to the blob store and
        delete their rows (what cannot be written stays staged, safe, for the next start)."""
        self._closing = True
        while running := [
            task for task in (self._draining, self._settling) if task and not task.done()
        ]:
            for task in running:
                await asyncio.shield(task)
        if self._settled:
            # One last try if the deletes failed above (they wait for a timer otherwise).
            self._start_draining()
            await asyncio.shield(cast(asyncio.Task[None], self._draining))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        if self._executor is not None and self._engine is not None:
            # In the writer's thread: its connections were made there.
            await loop.run_in_executor(self._executor, self._release)
            self._engine = None
        for executor in (self._executor, self._settler):
            if executor is not None:
                await asyncio.to_thread(executor.shutdown, wait=True)
        self._executor = self._settler = None

    def _start_draining(self) -> None:
        if self._draining is None or self._draining.done():
            self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue or self._deletes_due():
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            settled = sorted(self._settled)[:MAX_BATCH] if self._deletes_due() else []
            outcomes: list[Accepted | Exception]
            try:
                outcomes = list(await self._in_thread([pending for pending, _ in batch], settled))
                self._settled.difference_update(settled)
            except BlobStoreError as exc:
                # The blob folder takes no writes (or has no room): every accept must wait.
                outcomes = [exc] * len(batch)
            except Exception as exc:
                if not batch:
                    # Only deletes of rows already in the blob store: harmless to leave.
                    log.warning("staged rows not deleted yet: %s", exc)
                    self._later(SETTLE_RETRY_SECONDS, self._start_draining)
                    return
                if len(batch) == 1:
                    outcomes = [exc]
                else:
                    # One bad contact must not fail the others: write each alone, and let
                    # only the ones that still fail refuse (their transport retries them).
                    log.warning("a batch of %d accepts failed; writing them one by one", len(batch))
                    outcomes = [await self._alone(pending) for pending, _ in batch]
            for (pending, future), outcome in zip(batch, outcomes, strict=True):
                if not isinstance(outcome, Exception) and pending.staged is not None:
                    self._hold(pending.raw_digest, pending.staged)
                # A caller that gave up (its client hung up) has cancelled its future.
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            if self._to_settle:
                self._start_settling()

    def _deletes_due(self) -> bool:
        """Staged rows are deleted with a batch once enough have gathered, or when idle."""
        if not self._settled:
            return False
        return self._closing or len(self._settled) >= DELETE_EVERY or self._idle()

    def _idle(self) -> bool:
        return not self._queue and self._timer is None and not self._to_settle

    def _start_settling(self) -> None:
        if self._settling is None or self._settling.done():
            self._settling = asyncio.get_running_loop().create_task(self._settle())

    def _hold(self, digest: str, content: bytes) -> None:
        """Keep committed bytes for writing to the blob store, within ``SETTLE_MAX_BYTES``."""
        if digest in self._to_settle or self._settle_bytes + len(content) > SETTLE_MAX_BYTES:
            return
        self._to_settle[digest] = content
        self._settle_bytes += len(content)

    async def _settle(self) -> None:
        """Write the staged bytes to the blob store, whatever gathered meanwhile each time."""
        loop = asyncio.get_running_loop()
        if self._settler is None:
            self._settler = ThreadPoolExecutor(SETTLE_THREADS, thread_name_prefix="guichet-settle")
        while self._to_settle:
            items, self._to_settle = self._to_settle, {}
            self._settle_bytes = 0
            outcomes = await asyncio.gather(
                *(loop.run_in_executor(self._settler, self.blobs.put, c) for c in items.values()),
                return_exceptions=True,
            )
            failed = {
                digest: outcome
                for digest, outcome in zip(items, outcomes, strict=True)
                if isinstance(outcome, BaseException)
            }
            self._settled.update(digest for digest in items if digest not in failed)
            if failed:
                # Still safe in the database, and readable there: tried again later.
                log.warning(
                    "%d staged raw messages not yet written to the blob store: %s",
                    len(failed),
                    next(iter(failed.values())),
                )
                for digest in failed:
                    self._hold(digest, items[digest])
                self._later(SETTLE_RETRY_SECONDS, self._start_settling)
                return
        if self._queue or self._deletes_due():
            self._start_draining()
        elif self._settled:
            self._later(SETTLE_IDLE_SECONDS, self._start_draining)

    def _later(self, delay: float, then: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()

        def fire() -> None:
            self._timer = None
            then()

        self._timer = asyncio.get_running_loop().call_later(delay, fire)

    async def _alone(self, pending: Pending) -> Accepted | Exception:
        try:
            (result,) = await self._in_thread([pending], ())
        except Exception as exc:
            return exc
        return result

    async def _in_thread(self, batch: list[Pending], settled: Sequence[str]) -> list[Accepted]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="guichet-accept")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._write, batch, settled
        )

    def _connection(self) -> Connection:
        """In the writer's thread: the connection for the next batch. On SQLite the same one
        each time (a file connection does not go stale): taking one from the pool and giving
        it back was a tenth of the front's work under a webhook flood. On PostgreSQL a new one
        from the pool each batch, checked there first, since the server may have cut it."""
        if self._engine is None:
            self._engine = create_sync_engine(self.url)
            if self._engine.dialect.name == "sqlite":
                self._gate = write_gate(self._engine.url.database)
        if self._engine.dialect.name != "sqlite":
            return self._engine.connect()
        if self._kept is None or self._kept.closed or self._kept.invalidated:
            self._kept = self._engine.connect()
        return self._kept

    def _release(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None
        if self._engine is not None:
            self._engine.dispose()

    def _write(self, batch: list[Pending], settled: Sequence[str]) -> list[Accepted]:
        """In the writer's thread: one transaction for the batch, retried once on a key race."""
        staged = sum(len(p.staged) for p in batch if p.staged is not None)
        if staged:
            # Staged bytes must reach the blob store soon after: a folder that takes no
            # writes, or a disk without room, refuses them now (the transport retries), not
            # once the database has filled with bytes that have nowhere to go.
            self.blobs.ensure_room(staged)
            self.blobs.ensure_writable()
        for attempt in range(2):
            try:
                connection = self._connection()
                # On SQLite, queued with the workers' transactions of this process (see
                # ``write_gate``) rather than polling for the database's lock, and ahead of
                # them: clients wait for this transaction.
                gate = self._gate.held(urgent=True) if self._gate else contextlib.nullcontext()
                try:
                    with gate, connection.begin():
                        results = write_batch(connection, batch, settled)
                finally:
                    if connection is not self._kept:
                        connection.close()
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
