"""The store on SQLite and PostgreSQL: migrations, accepting contacts once, duplicates, clocks."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import func, select

from models import accept, migrate
from models.accept import STAGE_MAX_BYTES
from models.blobs import BlobStore, BlobStoreError
from models.clock import utcnow
from models.inbound import InboundAttachment, InboundContact
from models.jobs import CONTACT_JOB
from models.store import Envelope, Store
from models.tables import AuditEvent, Contact, Delivery, Document, Job, StagedBlob
from tests.conftest import unwritable, writable


def _inbound(key: str = "email:abc@example.org", **changes: object) -> InboundContact:
    values: dict[str, object] = {
        "channel": "email",
        "natural_key": key,
        "sender": "jean.dupont@example.org",
        "sender_name": "Jean Dupont",
        "recipients": ("sinistres@guichet.localhost",),
        "subject": "Dossier AS-2026-000001",
        "text": "Bonjour, voici ma facture.",
        "message_id": "abc@example.org",
        "sent_at": datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
        "attachments": (
            InboundAttachment("facture.pdf", "application/pdf", b"%PDF-1.4 facture"),
            InboundAttachment("photo.jpg", "image/jpeg", b"\xff\xd8\xff photo", inline=True),
        ),
    }
    values.update(changes)
    return InboundContact(**values)  # type: ignore[arg-type]


async def test_accept_persists_contact_documents_blobs_delivery_and_job(store: Store) -> None:
    raw = b"From: jean.dupont@example.org\r\n\r\nBonjour"
    accepted = await store.accept_contact(
        _inbound(), raw, Envelope(peer="127.0.0.1:4000", sender="jean.dupont@example.org")
    )
    assert not accepted.duplicate
    async with store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        assert contact.status == "received"
        assert contact.step == "extract"
        assert contact.sent_at == datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
        assert contact.received_at.tzinfo is not None
        assert await store.raw_content(contact.raw_sha256 or "", session) == raw
        documents = (
            await session.scalars(
                select(Document)
                .where(Document.contact_id == contact.id)
                .order_by(Document.position)
            )
        ).all()
        assert [(d.filename, d.status, d.inline) for d in documents] == [
            ("facture.pdf", "pending", False),
            ("photo.jpg", "pending", True),
        ]
        assert store.blobs.get(documents[0].sha256) == b"%PDF-1.4 facture"
        jobs = (await session.scalars(select(Job))).all()
        assert [(j.kind, j.subject_id, j.status) for j in jobs] == [
            (CONTACT_JOB, contact.id, "pending")
        ]
        delivery = await session.scalar(select(Delivery))
        assert delivery is not None and delivery.peer == "127.0.0.1:4000" and not delivery.duplicate
        audit = await session.scalar(select(AuditEvent))
        assert audit is not None and audit.action == "contact.received"


async def test_second_delivery_is_recorded_as_duplicate_not_a_new_contact(store: Store) -> None:
    first = await store.accept_contact(_inbound(), b"one")
    second = await store.accept_contact(_inbound(subject="changed"), b"one again")
    assert second.duplicate and second.contact_id == first.contact_id
    async with store.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Contact)) == 1
        assert await session.scalar(select(func.count()).select_from(Job)) == 1
        contact = await session.get_one(Contact, first.contact_id)
        assert contact.duplicate_count == 1
        assert contact.subject == "Dossier AS-2026-000001"
        flags = (await session.scalars(select(Delivery.duplicate).order_by(Delivery.id))).all()
        assert flags == [False, True]


async def test_concurrent_copies_of_one_message_make_one_contact(store: Store) -> None:
    results = await asyncio.gather(*(store.accept_contact(_inbound(), b"same") for _ in range(6)))
    assert len({r.contact_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    async with store.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Contact)) == 1
        assert await session.scalar(select(func.count()).select_from(Delivery)) == 6


async def test_same_natural_key_on_another_channel_is_another_contact(store: Store) -> None:
    a = await store.accept_contact(_inbound(key="x"), b"a")
    b = await store.accept_contact(_inbound(key="x", channel="sms"), b"b")
    assert a.contact_id != b.contact_id


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        await store.accept_contact(_inbound(sent_at=datetime(2026, 1, 1)), b"x")


async def test_migrations_are_at_head_and_repeatable(database_url: str, store: Store) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url)  # a second run changes nothing
    async with store.engine.connect() as conn:
        version = (
            await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
        ).scalar_one()
    assert (version,) == migrate.current_heads(database_url)


async def test_migrations_match_the_tables(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from models.tables import Base, managed_by_models

    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(
            connection,  # type: ignore[arg-type]
            opts={"include_name": managed_by_models},
        )
        return list(compare_metadata(context, Base.metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


# --- raw bytes staged with their accept (models/accept.py) ----------------------------------


class GatedBlobStore(BlobStore):
    """A blob store whose writes wait for the test to open the gate (or fail, when told)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.failures = 0

    def put(self, content: bytes) -> str:
        if not self.gate.wait(timeout=30):
            raise AssertionError("the gate was never opened")
        if self.failures:
            self.failures -= 1
            raise BlobStoreError(errno.EIO, "simulated write failure")
        return super().put(content)


@pytest.fixture
async def gated(store: Store, tmp_path: Path) -> AsyncIterator[Store]:
    blobs = GatedBlobStore(tmp_path / "gated-blobs")
    store.blobs = blobs
    yield store
    # Open before the store closes: closing writes what is still staged.
    blobs.gate.set()


async def staged_digests(store: Store) -> list[str]:
    async with store.sessions() as session:
        return list((await session.scalars(select(StagedBlob.sha256))).all())


async def test_a_small_raw_message_is_answered_before_any_blob_is_written(gated: Store) -> None:
    raw = b"From: jean.dupont@example.org\r\nSubject: panne\r\n\r\nBonjour"
    accepted = await gated.accept_contact(_inbound(attachments=()), raw)
    digest = hashlib.sha256(raw).hexdigest()
    # Every blob write is held at the gate: the accept committed the bytes with the rows.
    assert not gated.blobs.exists(digest)
    assert await staged_digests(gated) == [digest]
    assert await gated.raw_content(digest) == raw
    async with gated.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        assert contact.raw_sha256 == digest
    cast(GatedBlobStore, gated.blobs).gate.set()
    await gated.accepts.close()
    # Written to the blob store, then its row deleted: read there from now on.
    assert gated.blobs.get(digest) == raw
    assert await staged_digests(gated) == []
    assert await gated.raw_content(digest) == raw


async def test_a_large_raw_message_is_in_the_blob_store_before_the_answer(gated: Store) -> None:
    raw = b"From: jean.dupont@example.org\r\n\r\n" + b"x" * STAGE_MAX_BYTES
    blobs = cast(GatedBlobStore, gated.blobs)
    blobs.gate.set()
    await gated.accept_contact(_inbound(attachments=()), raw)
    blobs.gate.clear()
    assert gated.blobs.get(hashlib.sha256(raw).hexdigest()) == raw
    assert await staged_digests(gated) == []


async def test_written_rows_are_deleted_once_the_writer_is_idle(store: Store) -> None:
    raws = [f"From: a@example.org\r\n\r\nmessage {n}".encode() for n in range(5)]
    for n, raw in enumerate(raws):
        await store.accept_contact(_inbound(key=f"email:{n}@example.org", attachments=()), raw)
    # No close: the writer deletes the rows of what it wrote once nothing else is to do.
    for _ in range(100):
        if not await staged_digests(store):
            break
        await asyncio.sleep(0.05)
    assert await staged_digests(store) == []
    for raw in raws:
        assert store.blobs.get(hashlib.sha256(raw).hexdigest()) == raw


async def test_a_failed_blob_write_is_tried_again_and_the_bytes_stay_readable(
    gated: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accept, "SETTLE_RETRY_SECONDS", 0.05)
    blobs = cast(GatedBlobStore, gated.blobs)
    blobs.failures = 2
    raw = b"From: jean.dupont@example.org\r\n\r\nBonjour"
    digest = hashlib.sha256(raw).hexdigest()
    await gated.accept_contact(_inbound(attachments=()), raw)
    blobs.gate.set()
    for _ in range(100):
        if blobs.exists(digest):
            break
        assert await gated.raw_content(digest) == raw
        await asyncio.sleep(0.05)
    assert blobs.failures == 0 and blobs.get(digest) == raw
    await gated.accepts.close()
    assert await staged_digests(gated) == []


async def test_an_unwritable_blob_folder_refuses_even_a_staged_message(store: Store) -> None:
    unwritable(store.blobs.root)
    try:
        with pytest.raises(BlobStoreError):
            await store.accept_contact(_inbound(attachments=()), b"From: a@example.org\r\n\r\nx")
    finally:
        writable(store.blobs.root)
    async with store.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Contact)) == 0
    assert await staged_digests(store) == []


async def test_settle_staged_writes_what_a_stopped_front_left(store: Store) -> None:
    old, fresh = b"left by a front that died", b"staged a moment ago"
    async with store.sessions() as session, session.begin():
        session.add(
            StagedBlob(
                sha256=hashlib.sha256(old).hexdigest(),
                content=old,
                staged_at=utcnow() - timedelta(minutes=5),
            )
        )
        session.add(StagedBlob(sha256=hashlib.sha256(fresh).hexdigest(), content=fresh))
    # The periodic task leaves the rows a live writer is about to settle itself.
    assert await store.settle_staged(older_than=timedelta(minutes=1)) == 1
    assert store.blobs.get(hashlib.sha256(old).hexdigest()) == old
    assert await staged_digests(store) == [hashlib.sha256(fresh).hexdigest()]
    assert await store.settle_staged() == 1
    assert store.blobs.get(hashlib.sha256(fresh).hexdigest()) == fresh
    assert await staged_digests(store) == []


async def test_bytes_over_the_memory_bound_wait_in_the_database_for_the_sweep(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flood faster than the disk: what does not fit in memory is written by the sweep.
    monkeypatch.setattr(accept, "SETTLE_MAX_BYTES", 100)
    raws = [f"From: a@example.org\r\n\r\n{n}".encode() + b"x" * 60 for n in range(4)]
    await asyncio.gather(
        *(
            store.accept_contact(_inbound(key=f"email:{n}@example.org", attachments=()), raw)
            for n, raw in enumerate(raws)
        )
    )
    await store.accepts.close()
    left = await staged_digests(store)
    assert len(left) == 3
    assert await store.settle_staged() == 3
    for raw in raws:
        assert store.blobs.get(hashlib.sha256(raw).hexdigest()) == raw
