"""The JSON API served by aiohttp on loopback, over a real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select, update

from guichet.api import create_app
from guichet.settings import PROJECT_ROOT
from models.inbound import InboundAttachment, InboundContact
from models.reference import load_reference_data, read_reference_file
from models.store import Store
from models.tables import Contact, Dossier
from tests.conftest import free_port


@pytest.fixture
async def api(store: Store) -> AsyncIterator[str]:
    async with store.sessions() as session, session.begin():
        await load_reference_data(
            session, read_reference_file(PROJECT_ROOT / "config" / "demo.toml")
        )
    runner = web.AppRunner(create_app(store))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        return response.status, await response.json()


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


async def test_health(api: str) -> None:
    assert await _get(f"{api}/healthz") == (200, {"status": "ok"})


async def test_contacts_newest_first_paginated_and_filtered(api: str, store: Store) -> None:
    ids = [await _contact(store, n, "failed" if n == 2 else "received") for n in (1, 2, 3)]
    status, body = await _get(f"{api}/api/contacts?limit=2")
    assert status == 200
    assert [c["id"] for c in body["contacts"]] == [ids[2], ids[1]]
    status, body = await _get(f"{api}/api/contacts?limit=2&offset=2")
    assert [c["id"] for c in body["contacts"]] == [ids[0]]
    status, body = await _get(f"{api}/api/contacts?status=failed")
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
async def test_bad_parameters_are_400_with_a_reason(api: str, query: str, message: str) -> None:
    status, body = await _get(f"{api}/api/contacts?{query}")
    assert status == 400
    assert body["error"].startswith(message)


async def test_contact_detail_and_not_found(api: str, store: Store) -> None:
    contact_id = await _contact(store, 4)
    status, body = await _get(f"{api}/api/contacts/{contact_id}")
    assert status == 200
    assert body["id"] == contact_id and body["raw_sha256"] and body["replies"] == []
    assert (await _get(f"{api}/api/contacts/999999"))[0] == 404
    assert (await _get(f"{api}/api/contacts/abc"))[0] == 404


async def test_dossier_with_its_contacts(api: str, store: Store) -> None:
    contact_id = await _contact(store, 5)
    async with store.sessions() as session, session.begin():
        dossier_id = await session.scalar(select(Dossier.id).where(Dossier.ref == "AS-2026-000001"))
        await session.execute(update(Contact).values(dossier_id=dossier_id))
    status, body = await _get(f"{api}/api/dossiers/as-2026-000001")
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
    assert (await _get(f"{api}/api/dossiers/AS-2026-999999"))[0] == 404
