"""The store on SQLite and PostgreSQL: migrations, accepting contacts once, duplicates, clocks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from models import migrate
from models.inbound import InboundAttachment, InboundContact
from models.jobs import CONTACT_JOB
from models.store import Envelope, Store
from models.tables import AuditEvent, Contact, Delivery, Document, Job


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
        assert store.blobs.get(contact.raw_sha256 or "") == raw
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
