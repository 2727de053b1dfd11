"""Group commit of accepts, on SQLite and PostgreSQL: batches, duplicates, failures, twins."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from models import accept, migrate
from models.accept import Accepted, Envelope, Pending, write_batch
from models.db import create_sync_engine
from models.inbound import InboundAttachment, InboundContact
from models.jobs import CONTACT_JOB
from models.sqlite_async import write_gate
from models.store import Store
from models.tables import AuditEvent, Contact, Delivery, Job


def sms(n: int, key: str | None = None) -> InboundContact:
    return InboundContact(
        channel="sms",
        natural_key=key or f"SM{n:032d}",
        sender=f"+3361234{n:04d}",
        text=f"Bonjour, message {n}",
    )


def pending(n: int, digests: list[str] | None = None) -> Pending:
    return Pending(sms(n), "0" * 64, digests or [], Envelope(), CONTACT_JOB)


async def count(store: Store, table: type) -> int:
    async with store.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_a_flood_is_written_in_fewer_transactions_than_contacts(store: Store) -> None:
    results = await asyncio.gather(
        *(store.accept_contact(sms(n), f"raw {n}".encode()) for n in range(60))
    )
    assert len({r.contact_id for r in results}) == 60
    assert not any(r.duplicate for r in results)
    writer = store.accepts
    assert writer.written == 60
    # Those that queue while a transaction is written share the next one.
    assert writer.batches < 60
    assert await count(store, Contact) == 60
    assert await count(store, Delivery) == 60
    assert await count(store, AuditEvent) == 60
    async with store.sessions() as session:
        subjects = (
            await session.scalars(select(Job.subject_id).where(Job.kind == CONTACT_JOB))
        ).all()
        assert sorted(subjects) == sorted(r.contact_id for r in results)
        # Each contact is answered with its own row: its key, not a neighbour's.
        keys = dict((await session.execute(select(Contact.id, Contact.natural_key))).all())
    for n, result in enumerate(results):
        assert keys[result.contact_id] == f"SM{n:032d}"


async def test_the_same_message_twice_in_one_batch_is_one_contact(store: Store) -> None:
    # Queued together, before the writer runs: one batch.
    first, second, other = await asyncio.gather(
        store.accepts.submit(pending(1)),
        store.accepts.submit(pending(1)),
        store.accepts.submit(pending(2)),
    )
    assert store.accepts.batches == 1
    assert first.contact_id == second.contact_id != other.contact_id
    assert (first.duplicate, second.duplicate, other.duplicate) == (False, True, False)
    # Delivered again later: the database already knows it.
    third = await store.accept_contact(sms(1), b"one a third time")
    assert third == Accepted(first.contact_id, duplicate=True)
    async with store.sessions() as session:
        contact = await session.get_one(Contact, first.contact_id)
        assert contact.duplicate_count == 2
        deliveries = (
            await session.scalars(
                select(Delivery.duplicate).where(Delivery.contact_id == first.contact_id)
            )
        ).all()
        assert sorted(deliveries) == [False, True, True]
    assert await count(store, Job) == 2


async def test_one_contact_that_cannot_be_written_fails_alone(store: Store) -> None:
    # A contact whose attachments and blobs disagree cannot be built: its batch fails, then
    # each of the batch is written alone, and only that one is refused.
    batch = [pending(1), pending(2, ["extra-digest"]), pending(3)]
    outcomes = await asyncio.gather(
        *(store.accepts.submit(p) for p in batch), return_exceptions=True
    )
    assert isinstance(outcomes[0], Accepted) and isinstance(outcomes[2], Accepted)
    assert isinstance(outcomes[1], ValueError)
    assert await count(store, Contact) == 2
    assert await count(store, Job) == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_on_postgresql_each_contact_job_has_its_worker_twin(store: Store) -> None:
    await asyncio.gather(*(store.accept_contact(sms(n), b"raw") for n in range(20)))
    async with store.sessions() as session:
        twins = await session.scalar(text("SELECT count(*) FROM procrastinate_jobs"))
        jobs = await session.scalar(select(func.count()).select_from(Job))
    assert twins == jobs == 20


async def test_closing_the_store_waits_for_accepts_under_way(store: Store) -> None:
    waiting = [asyncio.create_task(store.accepts.submit(pending(n))) for n in range(10)]
    await asyncio.sleep(0)
    await store.accepts.close()
    assert all(task.done() and not task.cancelled() for task in waiting)
    assert await count(store, Contact) == 10


def _batch(round_: int) -> list[Pending]:
    """Fresh contacts with documents and staged bytes, a duplicate within the batch and, in
    the second round, contacts the database already knows."""
    batch = []
    for n in range(5):
        inbound = InboundContact(
            channel="email",
            natural_key=f"email:{n}@example.org",
            sender=f"assure{n}@example.org",
            recipients=("sinistres@guichet.localhost",),
            subject=f"Dossier {n}",
            text="Bonjour",
            references=("a@example.org",),
            sent_at=datetime(2026, 12, 7, 9, n, tzinfo=UTC),
            attachments=(InboundAttachment("facture.pdf", "application/pdf", b"%PDF"),),
        )
        raw = f"raw {round_} {n}".encode()
        envelope = Envelope("127.0.0.1:25", "assure@example.org", ("s@guichet.localhost",))
        digest = hashlib.sha256(raw).hexdigest()
        batch.append(Pending(inbound, digest, ["d" * 64], envelope, CONTACT_JOB, staged=raw))
    return [*batch, dataclasses.replace(batch[0])]


_WHEN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def _tables(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row the accept writes, times replaced by their format."""
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: [
                    tuple("<when>" if isinstance(v, str) and _WHEN.fullmatch(v) else v for v in row)
                    for row in connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608
                ]
                for table in (
                    "contact",
                    "document",
                    "job",
                    "audit_event",
                    "delivery",
                    "staged_blob",
                )
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("variables", [30_000, 64], ids=["one statement", "rows in slices"])
def test_sqlites_own_statements_write_the_rows_core_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: int
) -> None:
    # 64 parameters: two contact rows a statement, so the ids of a batch span statements.
    monkeypatch.setattr(accept, "_SQLITE_MAX_VARIABLES", variables)
    written = []
    for core in (True, False):
        url = f"sqlite+aiosqlite:///{tmp_path / f'core-{core}.sqlite3'}"
        migrate.upgrade(url)
        engine = create_sync_engine(url)
        with engine.begin() as connection:
            first = write_batch(connection, _batch(1), core=core)
        with engine.begin() as connection:
            settled = [hashlib.sha256(b"raw 1 1").hexdigest()]
            second = write_batch(connection, _batch(2), settled, core=core)
        engine.dispose()
        written.append((first, second, _tables(url)))
    assert written[0] == written[1]
    first, second, tables = written[1]
    assert [a.duplicate for a in first] == [False] * 5 + [True]
    assert all(a.duplicate for a in second)
    assert len(tables["contact"]) == 5 and len(tables["delivery"]) == 12
    assert len(tables["staged_blob"]) == 9


async def test_on_sqlite_the_writer_queues_with_the_process_transactions(tmp_path: Path) -> None:
    """The writer takes the database's write gate, as the workers' sessions do, instead of
    polling for SQLite's lock behind them (models/sqlite_async.py)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gate.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url)
    store = Store.open(url, tmp_path / "blobs")
    try:
        await store.accept_contact(sms(1), b"first")
        gate = write_gate(str(tmp_path / "gate.sqlite3"))
        assert gate is not None and not gate.locked()
        gate.take()
        accepting = asyncio.ensure_future(store.accept_contact(sms(2), b"second"))
        await asyncio.sleep(0.3)
        # SQLite's own lock is free: only the gate holds the writer back.
        assert not accepting.done()
        gate.release()
        async with asyncio.timeout(10):
            accepted = await accepting
        assert not accepted.duplicate
        assert not gate.locked()
        assert await count(store, Contact) == 2
    finally:
        await store.close()
