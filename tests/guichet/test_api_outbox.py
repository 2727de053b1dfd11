"""The outbox API: held replies listed, approved (then delivered) or rejected, each audited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from guichet.api import create_app
from intake.reading import OcrPool
from models.store import Store
from models.tables import AuditEvent, OutboundMessage
from tests.conftest import Relay, free_port
from tests.responders.flow import contact_at_respond, load_demo, runner, set_dossier
from tests.responders.test_decide import REFUSED


@pytest.fixture(scope="module")
def ocr() -> Iterator[OcrPool]:
    pool = OcrPool(1)
    yield pool
    pool.shutdown()


@pytest.fixture
async def api(store: Store) -> AsyncIterator[str]:
    await load_demo(store)
    app_runner = web.AppRunner(create_app(store))
    await app_runner.setup()
    port = free_port()
    await web.TCPSite(app_runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await app_runner.cleanup()


async def _call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client, client.request(method, url, json=body) as r:
        return r.status, await r.json()


async def _held_refusal(store: Store, ocr: OcrPool, relay: Relay, key: str) -> int:
    await set_dossier(store, coverage=REFUSED)
    await contact_at_respond(store, key)
    await runner(store, ocr, relay).run_pending()
    async with store.sessions() as session:
        held = await session.scalar(
            select(OutboundMessage.id).where(
                OutboundMessage.status == "held", OutboundMessage.purpose == "refusal"
            )
        )
    assert held is not None
    return held


async def test_approve_sends_the_held_refusal(
    api: str, store: Store, ocr: OcrPool, relay: Relay
) -> None:
    held = await _held_refusal(store, ocr, relay, "a1@example.org")
    status, body = await _call("GET", f"{api}/api/outbox?status=held")
    assert status == 200
    assert body["messages"] == [
        body["messages"][0]
        | {
            "id": held,
            "purpose": "refusal",
            "channel": "email",
            "recipient": "jean.dupont@example.org",
            "dossier_ref": "AS-2026-000001",
            "status": "held",
            "reason": "refusal awaits a gestionnaire's approval",
        }
    ]
    status, body = await _call("POST", f"{api}/api/outbox/{held}/approve", {"by": "marie"})
    assert (status, body["status"], body["decided_by"]) == (200, "queued", "marie")
    assert body["decided_at"] is not None
    await runner(store, ocr, relay).run_pending()
    subjects = [m["Subject"] for _, m in relay.received]
    assert subjects[-1] == "[AS-2026-000001] Réponse à votre demande de prise en charge"
    status, body = await _call("GET", f"{api}/api/outbox?status=sent")
    assert held in [m["id"] for m in body["messages"]]
    # Approved once: a second approval is a conflict, not a second email.
    status, body = await _call("POST", f"{api}/api/outbox/{held}/approve")
    assert status == 409 and "not held" in body["error"]
    async with store.sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "reply.approved")
        )
    assert event is not None and event.actor == "marie"
    assert (event.before, event.after) == (
        {"status": "held", "reason": "refusal awaits a gestionnaire's approval"},
        {"status": "queued", "reason": None},
    )


async def test_reject_keeps_the_refusal_from_leaving(
    api: str, store: Store, ocr: OcrPool, relay: Relay
) -> None:
    held = await _held_refusal(store, ocr, relay, "a2@example.org")
    status, body = await _call(
        "POST", f"{api}/api/outbox/{held}/reject", {"by": "paul", "note": "pièce reçue"}
    )
    assert (status, body["status"], body["reason"]) == (200, "rejected", "pièce reçue")
    await runner(store, ocr, relay).run_pending()
    assert len(relay.received) == 1  # the acknowledgement only
    assert (await _call("POST", f"{api}/api/outbox/{held}/approve"))[0] == 409
    async with store.sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "reply.rejected")
        )
    assert event is not None and (event.actor, event.after) == (
        "paul",
        {"status": "rejected", "reason": "pièce reçue"},
    )


async def test_absent_reply_and_bad_status(api: str) -> None:
    assert (await _call("POST", f"{api}/api/outbox/999/approve"))[0] == 404
    assert (await _call("POST", f"{api}/api/outbox/abc/reject"))[0] == 404
    assert (await _call("GET", f"{api}/api/outbox?status=lost"))[0] == 400
    assert await _call("GET", f"{api}/api/outbox") == (
        200,
        {"messages": [], "limit": 50, "offset": 0},
    )
