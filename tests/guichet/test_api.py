"""The JSON API served by aiohttp on loopback, over a real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from guichet.settings import PROJECT_ROOT
from models.inbound import InboundAttachment, InboundContact
from models.reference import load_reference_data, read_reference_file
from models.store import Store
from models.tables import Contact, Dossier
from tests.guichet.site import Site, serve_site


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Site]:
    async with store.sessions() as session, session.begin():
        await load_reference_data(
            session, read_reference_file(PROJECT_ROOT / "config" / "demo.toml")
        )
    async with serve_site(store) as site:
        yield site


async def _contact(store: Store, n: int, status: str = "received") -> int:
    accepted = await store.accept_contact(
        InboundContact(
            channel="email",
            natural_key=f"email:{n}@x",
            sender="jean.dupont@example.org",
            subject=f"message {n}",
            sent_at=datetime(2026, 11, n, tzinfo=UTC),
            attachments=(InboundAttachment("f.pdf", "application/pdf", b"%PDF"),),
        ),
        b"raw %d" % n,
    )
    async with store.sessions() as session, session.begin():
        await session.execute(
            update(Contact).where(Contact.id == accepted.contact_id).values(status=status)
        )
    return accepted.contact_id


async def test_health(api: Site) -> None:
    assert await api.call("GET", "/healthz") == (200, {"status": "ok"})


async def test_contacts_newest_first_paginated_and_filtered(api: Site, store: Store) -> None:
    ids = [await _contact(store, n, "failed" if n == 2 else "received") for n in (1, 2, 3)]
    status, body = await api.call("GET", "/api/contacts?limit=2")
    assert status == 200
    assert [c["id"] for c in body["contacts"]] == [ids[2], ids[1]]
    status, body = await api.call("GET", "/api/contacts?limit=2&offset=2")
    assert [c["id"] for c in body["contacts"]] == [ids[0]]
    status, body = await api.call("GET", "/api/contacts?status=failed")
    assert [c["id"] for c in body["contacts"]] == [ids[1]]
    first = body["contacts"][0]
    assert set(first) >= {"id", "channel", "status", "intent", "dossier_ref", "sender", "subject"}
    assert first["documents"][0]["filename"] == "f.pdf"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit must be between 1 and 200, got 0"),
        ("limit=abc", "limit must be a whole number, got 'abc'"),
        ("status=lost", "status must be one of"),
    ],
)
async def test_bad_parameters_are_400_with_a_reason(api: Site, query: str, message: str) -> None:
    status, body = await api.call("GET", f"/api/contacts?{query}")
    assert status == 400
    assert body["error"].startswith(message)


async def test_contact_detail_and_not_found(api: Site, store: Store) -> None:
    contact_id = await _contact(store, 4)
    status, body = await api.call("GET", f"/api/contacts/{contact_id}")
    assert status == 200
    assert body["id"] == contact_id and body["raw_sha256"] and body["replies"] == []
    assert (await api.call("GET", "/api/contacts/999999"))[0] == 404
    assert (await api.call("GET", "/api/contacts/abc"))[0] == 404


async def test_dossier_with_its_contacts(api: Site, store: Store) -> None:
    contact_id = await _contact(store, 5)
    async with store.sessions() as session, session.begin():
        dossier_id = await session.scalar(select(Dossier.id).where(Dossier.ref == "AS-2026-000001"))
        await session.execute(update(Contact).values(dossier_id=dossier_id))
    status, body = await api.call("GET", "/api/dossiers/as-2026-000001")
    assert status == 200
    assert (body["ref"], body["claim_type"], body["status"], body["contract"]) == (
        "AS-2026-000001",
        "medical_costs_abroad",
        "awaiting_documents",
        "CT20260001",
    )
    assert body["beneficiary"] == {
        "name": "Jean Dupont",
        "emails": ["jean.dupont@example.org", "j.dupont@travail.example"],
        "phones": ["+33612345678"],
    }
    assert [c["id"] for c in body["contacts"]] == [contact_id]
    assert (await api.call("GET", "/api/dossiers/AS-2026-999999"))[0] == 404
