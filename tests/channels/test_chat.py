"""Web chat over a real aiohttp server: websocket frames, uploads, the reply sender, e2e."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select

from channels.base import DeliveryError
from channels.chat import (
    RETRY_AFTER_SECONDS,
    TOKEN_HEADER,
    ChatLimits,
    SlidingWindow,
    WebChat,
)
from channels.delivery import OutboxDelivery
from guichet.api import create_app
from models.jobs import DELIVER_JOB, ClaimedJob
from models.store import Store
from models.tables import ChatConversation, ChatReply, Contact, Delivery, OutboundMessage
from tests.conftest import DATA, Relay, free_port, unwritable, writable
from tests.guichet.service import GuichetProcess

PHOTO = DATA / "documents" / "statement-photo.jpg"


class ChatServer:
    """The chat channel mounted on the service's own application, on a loopback port."""

    def __init__(self, store: Store, limits: ChatLimits) -> None:
        self.store = store
        self.wakes = 0
        self.chat = WebChat(store, self._wake, limits)
        self.port = free_port()
        self.runner = web.AppRunner(create_app(store, self.chat.routes()))

    def _wake(self) -> None:
        self.wakes += 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ChatServer:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        await self.chat.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.chat.stop()
        await self.runner.cleanup()

    async def contacts(self) -> list[Contact]:
        async with self.store.sessions() as session:
            rows = await session.scalars(
                select(Contact).where(Contact.channel == "chat").order_by(Contact.id)
            )
            return list(rows.all())

    async def reply_for(self, contact_id: int, text: str, key: str = "free") -> int:
        """A reply queued in the outbox for the contact, as responders or a gestionnaire do."""
        async with self.store.sessions() as session, session.begin():
            contact = await session.get_one(Contact, contact_id)
            message = OutboundMessage(
                idempotency_key=f"{contact_id}:{key}",
                contact_id=contact_id,
                purpose="free_reply",
                template="",
                channel="chat",
                language="fr",
                recipient=contact.sender,
                body_text=text,
            )
            session.add(message)
            await session.flush()
            return message.id

    async def deliver(self, message_id: int, sender: WebChat | None = None) -> OutboundMessage:
        """Run the outbox's delivery job for the message, then read back its status."""
        delivery = OutboxDelivery(self.store, {"chat": sender or self.chat})
        await delivery.run(ClaimedJob(0, DELIVER_JOB, message_id, 1))
        async with self.store.sessions() as session:
            return await session.get_one(OutboundMessage, message_id)


@pytest.fixture
async def server(store: Store) -> AsyncIterator[ChatServer]:
    limits = ChatLimits(
        messages_per_minute=5, messages_per_minute_per_address=8, max_upload_bytes=200_000
    )
    async with ChatServer(store, limits) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.receive_json(), 10)
    assert isinstance(frame, dict)
    return frame


async def start(
    ws: aiohttp.ClientWebSocketResponse, email: str = "visiteur@example.org"
) -> dict[str, Any]:
    await ws.send_json({"type": "start", "name": "Jean Visiteur", "email": email, "language": "fr"})
    started = await receive(ws)
    assert started["type"] == "started", started
    return started


async def message(ws: aiohttp.ClientWebSocketResponse, client_id: str, text: str) -> dict[str, Any]:
    await ws.send_json({"type": "message", "id": client_id, "text": text})
    return await receive(ws)


async def test_message_is_stored_then_acked_and_a_resend_is_idempotent(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        started = await start(ws, email="Visiteur@Example.org")
        ack = await message(ws, "m-1", "Bonjour, ma voiture est en panne.")
        assert (ack["type"], ack["id"], ack["duplicate"]) == ("ack", "m-1", False)
        # Re-sent after a reconnect: acknowledged again, still one contact.
        again = await message(ws, "m-1", "Bonjour, ma voiture est en panne.")
        assert (again["type"], again["contact"], again["duplicate"]) == (
            "ack",
            ack["contact"],
            True,
        )
    [contact] = await server.contacts()
    assert contact.id == ack["contact"]
    assert contact.natural_key == f"{started['conversation']}:m-1"
    assert (contact.sender, contact.sender_name) == ("visiteur@example.org", "Jean Visiteur")
    assert contact.text == "Bonjour, ma voiture est en panne."
    assert contact.duplicate_count == 1
    assert server.wakes == 2
    async with server.store.sessions() as session:
        deliveries = await session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.contact_id == contact.id)
        )
        conversation = await session.scalar(select(ChatConversation))
    assert deliveries == 2
    # Only the token's hash is kept.
    assert conversation is not None
    assert conversation.token_sha256 == hashlib.sha256(started["token"].encode()).hexdigest()
    assert started["token"] not in json.dumps(
        [conversation.public_id, conversation.visitor_email, conversation.peer]
    )


async def test_visitor_without_email_or_phone_is_known_by_the_conversation(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        await ws.send_json({"type": "start", "phone": "+33 6 12 34 56 78"})
        by_phone = await receive(ws)
        await message(ws, "a", "Allô")
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        await ws.send_json({"type": "start"})
        anonymous = await receive(ws)
        await message(ws, "a", "Bonjour")
    first, second = await server.contacts()
    assert first.sender == "+33 6 12 34 56 78"
    assert second.sender == f"chat:{anonymous['conversation']}"
    assert by_phone["conversation"] != anonymous["conversation"]


async def test_resume_sends_the_history_and_continues_the_conversation(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        started = await start(ws)
        first = await message(ws, "m-1", "Premier message")
    reply_id = await server.reply_for(first["contact"], "Bien reçu.")
    delivered = await server.deliver(reply_id)
    assert delivered.status == "sent"
    assert delivered.provider_id is not None
    shared = server.store.engine.dialect.name == "postgresql"
    assert ("announced to the fronts" if shared else "no window open") in delivered.provider_id

    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        await ws.send_json({"type": "resume", "token": started["token"]})
        resumed = await receive(ws)
        assert resumed["type"] == "resumed"
        assert resumed["conversation"] == started["conversation"]
        assert resumed["visitor"]["name"] == "Jean Visiteur"
        history = [(e["type"], e["text"]) for e in resumed["history"]]
        assert history == [("message", "Premier message"), ("reply", "Bien reçu.")]
        assert resumed["history"][0]["id"] == "m-1"
        second = await message(ws, "m-2", "Deuxième message")
        assert second["duplicate"] is False
    contacts = await server.contacts()
    assert [c.natural_key for c in contacts] == [
        f"{started['conversation']}:m-1",
        f"{started['conversation']}:m-2",
    ]


FORGED_TOKENS: list[object] = ["forged-token-we-never-issued", "", 42, None, "x" * 500]

MALFORMED = [
    ("this is not json", "bad_json"),
    ("[1, 2]", "bad_frame"),
    (json.dumps({"type": "shout", "text": "hey"}), "unknown_type"),
    (json.dumps({"type": "message", "id": "m-1", "text": "x" * 5001}), "too_long"),
    (json.dumps({"type": "message", "id": "m-1", "text": "   "}), "empty"),
    (json.dumps({"type": "message", "text": "no id"}), "bad_id"),
    (json.dumps({"type": "message", "id": "bad id!", "text": "hi"}), "bad_id"),
    (json.dumps({"type": "start"}), "already_started"),
]


async def test_unknown_or_forged_token_is_refused_and_opens_nothing(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        for token in FORGED_TOKENS:
            await ws.send_json({"type": "resume", "token": token})
            refused = await receive(ws)
            assert (refused["type"], refused["code"]) == ("error", "unknown_token"), token
            assert "start a new one" in refused["reason"]
        # The connection stays, but without a conversation nothing can be written.
        not_started = await message(ws, "m-1", "Bonjour")
        assert (not_started["code"], not_started["id"]) == ("not_started", "m-1")
        # It may still start a real conversation of its own.
        await start(ws)
    async with server.store.sessions() as session:
        conversations = await session.scalar(select(func.count()).select_from(ChatConversation))
    assert conversations == 1
    assert await server.contacts() == []


async def test_malformed_frames_get_a_reason_and_store_nothing(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        await start(ws)
        for frame, code in MALFORMED:
            await ws.send_str(frame)
            refused = await receive(ws)
            assert (refused["type"], refused["code"]) == ("error", code), frame[:40]
            assert refused["reason"]
        assert await server.contacts() == []
        # The connection is kept and still works.
        ack = await message(ws, "m-2", "Toujours là")
        assert ack["type"] == "ack"
    assert len(await server.contacts()) == 1


async def test_binary_frames_and_bad_visitor_fields_are_refused(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        await ws.send_bytes(b"\x00\x01")
        assert (await receive(ws))["code"] == "bad_frame"
        await ws.send_json({"type": "start", "email": "not an address"})
        assert (await receive(ws))["code"] == "bad_email"
        await ws.send_json({"type": "start", "phone": "call me maybe"})
        assert (await receive(ws))["code"] == "bad_phone"
        await start(ws)


async def test_rate_limit_per_conversation_refuses_without_storing(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        await start(ws)
        for n in range(5):
            assert (await message(ws, f"m-{n}", f"message {n}"))["type"] == "ack"
        limited = await message(ws, "m-5", "one too many")
        assert (limited["type"], limited["code"], limited["id"]) == ("error", "rate_limited", "m-5")
        assert "5 a minute" in limited["reason"]
        assert not ws.closed
    assert len(await server.contacts()) == 5


async def test_rate_limit_per_address_spans_conversations(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    # Two conversations from one address: starts count too (8 a minute here).
    codes = []
    for _ in range(2):
        async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
            await start(ws)
            for n in range(4):
                codes.append((await message(ws, f"m-{n}", "bonjour")).get("code", "ack"))
    assert codes == ["ack"] * 4 + ["ack", "ack"] + ["rate_limited"] * 2
    limited_reason = "too many messages from your network"
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        await ws.send_json({"type": "start"})
        refused = await receive(ws)
        assert refused["code"] == "rate_limited"
        assert limited_reason in refused["reason"]
    assert len(await server.contacts()) == 6


def test_sliding_window_lets_messages_through_again_after_the_period() -> None:
    now = [0.0]
    window = SlidingWindow(2, period=60, clock=lambda: now[0])
    for _ in range(2):
        assert window.allows("a")
        window.record("a")
    assert not window.allows("a")
    assert window.allows("b")
    now[0] = 59.9
    assert not window.allows("a")
    now[0] = 60.0
    assert window.allows("a")
    assert SlidingWindow(0).allows("anyone")


async def test_upload_makes_one_contact_with_the_document(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        started = await start(ws)
        form = aiohttp.FormData()
        form.add_field("id", "u-1")
        form.add_field("text", "Le ticket")
        form.add_field("file", PHOTO.read_bytes(), filename="ticket.jpg", content_type="image/jpeg")
        headers = {TOKEN_HEADER: started["token"]}
        async with http.post(
            f"{server.url}/channels/chat/upload", data=form, headers=headers
        ) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            body = await response.json()
        assert (body["id"], body["duplicate"], body["files"]) == ("u-1", False, ["ticket.jpg"])
        # The same upload again (a retry after a lost answer) is the same contact.
        async with http.post(
            f"{server.url}/channels/chat/upload", data=form, headers=headers
        ) as response:
            again = await response.json()
        assert (again["contact"], again["duplicate"]) == (body["contact"], True)
    async with server.store.sessions() as session:
        contact = await session.get_one(Contact, body["contact"])
        await session.refresh(contact, ["documents"])
    assert contact.natural_key == f"{started['conversation']}:u-1"
    assert contact.text == "Le ticket"
    [document] = contact.documents
    assert (document.filename, document.declared_type, document.size) == (
        "ticket.jpg",
        "image/jpeg",
        PHOTO.stat().st_size,
    )
    assert server.store.blobs.get(document.sha256) == PHOTO.read_bytes()


async def test_upload_too_large_or_without_a_known_token_is_refused(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        started = await start(ws)
    url = f"{server.url}/channels/chat/upload"

    def form(size: int) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("id", "u-1")
        data.add_field("file", b"\xff" * size, filename="big.jpg", content_type="image/jpeg")
        return data

    async with http.post(url, data=form(200_001), headers={TOKEN_HEADER: started["token"]}) as r:
        assert r.status == 413
        body = await r.json()
        assert body["code"] == "too_large"
        assert "200000 bytes" in body["error"]
    async with http.post(url, data=form(10), headers={TOKEN_HEADER: "forged"}) as r:
        assert (r.status, (await r.json())["code"]) == (403, "unknown_token")
    async with http.post(url, data=form(10)) as r:
        assert r.status == 403
    empty = aiohttp.FormData(default_to_multipart=True)
    empty.add_field("id", "u-2")
    empty.add_field("text", "no file")
    async with http.post(url, data=empty, headers={TOKEN_HEADER: started["token"]}) as r:
        assert (r.status, (await r.json())["code"]) == (400, "no_file")
    async with http.options(url) as r:
        assert r.status == 204
        assert TOKEN_HEADER in r.headers["Access-Control-Allow-Headers"]
    assert await server.contacts() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_message_the_store_cannot_take_is_refused_with_a_delay_to_retry_after(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    blobs = server.store.blobs.root
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        started = await start(ws)
        unwritable(blobs)
        try:
            refused = await message(ws, "m-1", "Bonjour")
            form = aiohttp.FormData()
            form.add_field("id", "u-1")
            form.add_field("file", PHOTO.read_bytes(), filename="t.jpg", content_type="image/jpeg")
            async with http.post(
                f"{server.url}/channels/chat/upload",
                data=form,
                headers={TOKEN_HEADER: started["token"]},
            ) as response:
                status, headers, body = response.status, response.headers, await response.json()
        finally:
            writable(blobs)
        assert (refused["type"], refused["id"], refused["code"]) == ("error", "m-1", "not_stored")
        assert refused["retry_after"] == RETRY_AFTER_SECONDS
        assert (status, body["code"]) == (503, "not_stored")
        assert headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert headers["Access-Control-Expose-Headers"] == "Retry-After"
        assert await server.contacts() == []
        # Sent again once the store works: taken, as a new contact.
        ack = await message(ws, "m-1", "Bonjour")
        assert (ack["type"], ack["duplicate"]) == ("ack", False)
        assert "retry_after" not in ack
    assert [c.id for c in await server.contacts()] == [ack["contact"]]


async def test_reply_is_pushed_to_every_open_window_once(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    async with (
        http.ws_connect(f"{server.url}/channels/chat/ws") as first,
        http.ws_connect(f"{server.url}/channels/chat/ws") as second,
    ):
        started = await start(first)
        await second.send_json({"type": "resume", "token": started["token"]})
        assert (await receive(second))["type"] == "resumed"
        ack = await message(first, "m-1", "Où en est mon dossier ?")
        # The other window of the conversation sees what was written.
        echoed = await receive(second)
        assert (echoed["type"], echoed["id"]) == ("message", "m-1")
        reply_id = await server.reply_for(ack["contact"], "Votre dossier est en cours.")
        shared = server.store.engine.dialect.name == "postgresql"
        # On PostgreSQL the reply is delivered as a worker process would: by a chat sender
        # that holds no window, and that announces it to the front holding them.
        worker_side = WebChat(server.store, lambda: None) if shared else None
        delivered = await server.deliver(reply_id, worker_side)
        assert delivered.status == "sent"
        assert delivered.provider_id is not None
        expected = "announced to the fronts" if shared else "pushed live to 2 open window(s)"
        assert expected in delivered.provider_id
        for ws in (first, second):
            pushed = await receive(ws)
            assert (pushed["type"], pushed["text"]) == ("reply", "Votre dossier est en cours.")
        # Once to each window: nothing else arrives.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(first.receive_json(), 0.5)
        # Sending the record again (a replayed send) records nothing new.
        await server.chat.send(delivered)
    async with server.store.sessions() as session:
        replies = (await session.scalars(select(ChatReply))).all()
    assert [r.outbound_message_id for r in replies] == [reply_id]


async def test_reply_without_a_chat_contact_fails_permanently(
    server: ChatServer, store: Store
) -> None:
    orphan = OutboundMessage(
        id=999,
        idempotency_key="x",
        purpose="free_reply",
        template="",
        channel="chat",
        language="fr",
        recipient="someone",
    )
    with pytest.raises(DeliveryError) as raised:
        await server.chat.send(orphan)
    assert raised.value.permanent
    orphan.contact_id = 12345
    with pytest.raises(DeliveryError) as raised:
        await server.chat.send(orphan)
    assert raised.value.permanent
    assert "not a chat message" in raised.value.reason


async def test_stop_closes_every_websocket(server: ChatServer, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{server.url}/channels/chat/ws") as ws:
        await start(ws)
        await server.chat.stop()
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert (closing.data, closing.extra) == (aiohttp.WSCloseCode.GOING_AWAY, "server stopping")
    async with http.get(f"{server.url}/channels/chat/ws") as response:
        assert response.status == 503


async def test_page_widget_and_styles_are_served(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    for path, kind in [
        ("/chat", "text/html"),
        ("/channels/chat/widget.js", "javascript"),
        ("/channels/chat/chat.css", "text/css"),
    ]:
        async with http.get(server.url + path) as response:
            assert response.status == 200
            assert kind in response.headers["Content-Type"]
            assert await response.read()


async def test_end_to_end_visitor_gets_the_automatic_acknowledgement(
    tmp_path: Path, relay: Relay
) -> None:
    """Through ``guichet serve``: a demo beneficiary writes in the chat and is answered live."""
    service = GuichetProcess(tmp_path / "home", relay.port)
    service.home.mkdir()
    loaded = service.cli("demo")
    assert loaded.returncode == 0, loaded.stderr
    await service.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"http://127.0.0.1:{service.http_port}/channels/chat/ws") as ws,
        ):
            await start(ws, email="jean.dupont@example.org")
            ack = await message(
                ws, "e2e-1", "Bonjour, je voudrais des nouvelles de mon remboursement."
            )
            assert ack["type"] == "ack", ack
            pushed = await asyncio.wait_for(ws.receive_json(), 90)
            assert pushed["type"] == "reply", pushed
            assert "Nous avons bien reçu votre message" in pushed["text"]
            contact = await service.wait_contact(
                ack["contact"], ("processed", "needs_review"), timeout=60
            )
            [reply] = [r for r in contact["replies"] if r["purpose"] == "acknowledgement"]
            assert (reply["channel"], reply["status"]) == ("chat", "sent")
            assert contact["sender"] == "jean.dupont@example.org"
    finally:
        service.stop()
    assert relay.received == []
