"""The outbox API: held replies listed, approved (then delivered) or rejected, each audited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import select

from intake.reading import OcrPool
from models.store import Store
from models.tables import AuditEvent, OutboundMessage
from tests.conftest import Relay
from tests.guichet.site import Site, serve_site
from tests.responders.flow import contact_at_respond, load_demo, runner, set_dossier
from tests.responders.test_decide import REFUSED


@pytest.fixture(scope="module")
def ocr() -> Iterator[OcrPool]:
    pool = OcrPool(1)
    yield pool
    pool.shutdown()


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Site]:
    await load_demo(store)
    async with serve_site(store, [("marie", "gestionnaire"), ("paul", "superviseur")]) as site:
        yield site


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
    api: Site, store: Store, ocr: OcrPool, relay: Relay
) -> None:
    held = await _held_refusal(store, ocr, relay, "a1@example.org")
    status, body = await api.call("GET", "/api/outbox?status=held")
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
    status, body = await api.call("POST", f"/api/outbox/{held}/approve", user="marie")
    assert (status, body["status"], body["decided_by"]) == (200, "queued", "marie")
    assert body["decided_at"] is not None
    await runner(store, ocr, relay).run_pending()
    subjects = [m["Subject"] for _, m in relay.received]
    assert subjects[-1] == "[AS-2026-000001] Réponse à votre demande de prise en charge"
    status, body = await api.call("GET", "/api/outbox?status=sent")
    assert held in [m["id"] for m in body["messages"]]
    # Approved once: a second approval is a conflict, not a second email.
    status, body = await api.call("POST", f"/api/outbox/{held}/approve")
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
    api: Site, store: Store, ocr: OcrPool, relay: Relay
) -> None:
    held = await _held_refusal(store, ocr, relay, "a2@example.org")
    status, body = await api.call(
        "POST", f"/api/outbox/{held}/reject", {"note": "pièce reçue"}, user="paul"
    )
    assert (status, body["status"], body["reason"]) == (200, "rejected", "pièce reçue")
    await runner(store, ocr, relay).run_pending()
    assert len(relay.received) == 1  # the acknowledgement only
    assert (await api.call("POST", f"/api/outbox/{held}/approve"))[0] == 409
    async with store.sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "reply.rejected")
        )
    assert event is not None and (event.actor, event.after) == (
        "paul",
        {"status": "rejected", "reason": "pièce reçue"},
    )


async def test_absent_reply_and_bad_status(api: Site) -> None:
    assert (await api.call("POST", "/api/outbox/999/approve"))[0] == 404
    assert (await api.call("POST", "/api/outbox/abc/reject"))[0] == 404
    assert (await api.call("GET", "/api/outbox?status=lost"))[0] == 400
    assert await api.call("GET", "/api/outbox") == (
        200,
        {"messages": [], "limit": 50, "offset": 0},
    )
