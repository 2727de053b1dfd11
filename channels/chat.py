"""Web chat: page, embeddable widget, websocket and upload endpoint in; live replies out."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import BodyPartReader, WSCloseCode, WSMsgType, web
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import selectinload

from channels.base import DeliveryError
from models.blobs import BlobStoreError
from models.clock import utcnow
from models.inbound import InboundAttachment, InboundContact
from models.store import Accepted, Envelope, Store
from models.tables import ChatConversation, ChatReply, Contact, OutboundMessage

log = logging.getLogger(__name__)

CHANNEL = "chat"
STATIC = Path(__file__).with_name("chat_static")
WS_PATH = "/channels/chat/ws"
UPLOAD_PATH = "/channels/chat/upload"
TOKEN_HEADER = "X-Chat-Token"  # noqa: S105 - a header name, not a secret
MAX_TEXT_CHARS = 5000
#: A frame above this closes the socket (aiohttp's limit); below it, too long a text is only
#: refused with an error frame. Room for 5000 characters even when JSON escapes every one.
MAX_FRAME_BYTES = 64 * 1024
MAX_FILES = 10
MAX_FIELD_BYTES = 4 * MAX_TEXT_CHARS
HISTORY_LIMIT = 200
#: Seconds to wait before sending again what could not be stored (503, ``not_stored``). A
#: person is waiting, and the store's hiccups are short: a few seconds, not the minute given to
#: the machines that call the Twilio and EDI endpoints.
RETRY_AFTER_SECONDS = 5
#: PostgreSQL NOTIFY channel announcing a recorded reply (payload: its id) to every front.
NOTIFY_CHANNEL = "guichet_chat_reply"
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PHONE = re.compile(r"\+?[0-9 .()-]{6,30}")
STATIC_FILES = {
    "/chat": "chat.html",
    "/channels/chat/widget.js": "widget.js",
    "/channels/chat/chat.css": "chat.css",
}
#: The widget runs on other sites' pages; the token travels in a header, never in a cookie,
#: so any origin may call the upload endpoint.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": f"{TOKEN_HEADER}, Content-Type",
    "Access-Control-Max-Age": "600",
}


@dataclass(frozen=True)
class ChatLimits:
    messages_per_minute: int = 20
    messages_per_minute_per_address: int = 60
    max_upload_bytes: int = 10 * 1024 * 1024


class SlidingWindow:
    """At most ``limit`` events per key in any ``period`` seconds (0 or less: no limit)."""

    def __init__(
        self, limit: int, period: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self._events: dict[str, deque[float]] = {}
        self._recorded = 0

    def allows(self, key: str) -> bool:
        if self.limit <= 0:
            return True
        events = self._events.get(key)
        if events is None:
            return True
        horizon = self.clock() - self.period
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
            return True
        return len(events) < self.limit

    def record(self, key: str) -> None:
        if self.limit <= 0:
            return
        self._events.setdefault(key, deque()).append(self.clock())
        self._recorded += 1
        if self._recorded % 1000 == 0:
            # Keys that never come back would otherwise stay forever.
            horizon = self.clock() - self.period
            for stale in [k for k, events in self._events.items() if events[-1] <= horizon]:
                del self._events[stale]


class ChatRefusal(Exception):
    """A frame or upload we refuse: ``code`` for the page, ``reason`` for the person, and
    ``retry_after`` seconds when sending the same again later should work."""

    def __init__(
        self, code: str, reason: str, status: int = 400, retry_after: int | None = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def natural_key(public_id: str, client_id: str) -> str:
    return f"{public_id}:{client_id}"


def visitor_sender(conversation: ChatConversation) -> str:
    """Who the contact is from: what matching can look up (email, phone) before our own id."""
    return (
        conversation.visitor_email or conversation.visitor_phone or f"chat:{conversation.public_id}"
    )


def _text_field(frame: dict[str, Any], name: str, max_chars: int) -> str:
    value = frame.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ChatRefusal("bad_field", f"{name} must be text")
    value = value.strip()
    if len(value) > max_chars:
        raise ChatRefusal("bad_field", f"{name} is longer than {max_chars} characters")
    return value


def _visitor(frame: dict[str, Any]) -> tuple[str, str, str]:
    """Name, email and phone from the pre-chat form, each optional, each checked."""
    name = _text_field(frame, "name", 200)
    email = _text_field(frame, "email", 320).lower()
    phone = _text_field(frame, "phone", 40)
    if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise ChatRefusal("bad_email", f"{email!r} is not an email address")
    if phone and not PHONE.fullmatch(phone):
        raise ChatRefusal("bad_phone", f"{phone!r} is not a phone number")
    return name, email, phone


def _client_id(value: object) -> str:
    if not isinstance(value, str) or not CLIENT_ID.fullmatch(value):
        raise ChatRefusal("bad_id", "each message needs an id of 1 to 64 letters, digits, - or _")
    return value


def _iso(value: Any) -> str:
    return str(value.isoformat())


@dataclass
class _Window:
    """One open websocket and the conversation it has started or resumed, if any."""

    socket: web.WebSocketResponse
    peer: str
    conversation: ChatConversation | None = None


class WebChat:
    """The chat channel: adapter (routes, start, stop) and sender in one object, since both
    need the registry of open websockets."""

    name = CHANNEL
    channel = CHANNEL

    def __init__(
        self, store: Store, wake: Callable[[], None], limits: ChatLimits | None = None
    ) -> None:
        self.store = store
        self.wake = wake
        self.limits = limits or ChatLimits()
        self.per_conversation = SlidingWindow(self.limits.messages_per_minute)
        self.per_address = SlidingWindow(self.limits.messages_per_minute_per_address)
        self._open: dict[str, set[web.WebSocketResponse]] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._closing = False
        self._listener: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ adapter
    def routes(self) -> Sequence[web.RouteDef]:
        static = [web.get(path, self._static_handler(name)) for path, name in STATIC_FILES.items()]
        return [
            *static,
            web.get(WS_PATH, self._websocket),
            web.post(UPLOAD_PATH, self._upload),
            web.options(UPLOAD_PATH, self._preflight),
        ]

    async def start(self) -> None:
        self._closing = False
        if self._shared:
            self._listener = asyncio.create_task(self._listen(), name="chat replies")

    @property
    def _shared(self) -> bool:
        """On PostgreSQL, replies may be delivered by a worker in another process or on
        another host: they are announced with NOTIFY and each front pushes its own windows."""
        return self.store.engine.dialect.name == "postgresql"

    async def _listen(self) -> None:
        url = self.store.engine.url.set(drivername="postgresql")
        delay = 1.0
        while not self._closing:
            try:
                async with await psycopg.AsyncConnection.connect(
                    url.render_as_string(hide_password=False), autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = 1.0
                    async for note in connection.notifies():
                        await self._announced(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Replies recorded meanwhile are not lost: windows get them with the history
                # when they resume.
                log.warning("chat: listening for replies failed (%s); again in %.0fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _announced(self, payload: str) -> None:
        if not payload.isdigit():
            return
        async with self.store.sessions() as session:
            row = (
                await session.execute(
                    select(ChatReply, ChatConversation.public_id)
                    .join(ChatConversation, ChatConversation.id == ChatReply.conversation_id)
                    .where(ChatReply.id == int(payload))
                )
            ).one_or_none()
        if row is not None:
            await self._push(row[1], self._reply_frame(row[0]))

    async def stop(self) -> None:
        """Close every websocket: the pages reconnect to whichever process serves next."""
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        sockets = list(self._sockets)
        await asyncio.gather(
            *(s.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping") for s in sockets),
            return_exceptions=True,
        )
        self._sockets.clear()
        self._open.clear()

    @staticmethod
    def _static_handler(name: str) -> Callable[[web.Request], Any]:
        path = STATIC / name

        async def handler(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

        return handler

    # ---------------------------------------------------------------- websocket
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self._closing:
            raise web.HTTPServiceUnavailable(text="the service is stopping")
        socket = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME_BYTES)
        await socket.prepare(request)
        window = _Window(socket, request.remote or "")
        self._sockets.add(socket)
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    await self._frame(window, message.data)
                elif message.type == WSMsgType.BINARY:
                    await self._refuse(window, None, "bad_frame", "send JSON text frames")
        finally:
            self._sockets.discard(socket)
            if window.conversation is not None:
                self._open.get(window.conversation.public_id, set()).discard(socket)
        return socket

    async def _frame(self, window: _Window, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            await self._refuse(window, None, "bad_json", "the frame is not JSON")
            return
        if not isinstance(frame, dict):
            await self._refuse(window, None, "bad_frame", "the frame must be a JSON object")
            return
        kind = frame.get("type")
        client_id = frame.get("id") if isinstance(frame.get("id"), str) else None
        try:
            if kind == "start":
                await self._start_conversation(window, frame)
            elif kind == "resume":
                await self._resume(window, frame)
            elif kind == "message":
                await self._message(window, frame)
            else:
                raise ChatRefusal(
                    "unknown_type", f"unknown frame type {kind!r}: use start, resume or message"
                )
        except ChatRefusal as refusal:
            await self._refuse(window, client_id, refusal.code, refusal.reason, refusal.retry_after)

    async def _refuse(
        self,
        window: _Window,
        client_id: str | None,
        code: str,
        reason: str,
        retry_after: int | None = None,
    ) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "reason": reason}
        if client_id is not None:
            frame["id"] = client_id
        if retry_after is not None:
            frame["retry_after"] = retry_after
        await self._send(window.socket, frame)

    async def _start_conversation(self, window: _Window, frame: dict[str, Any]) -> None:
        if window.conversation is not None:
            raise ChatRefusal("already_started", "this window already has a conversation")
        name, email, phone = _visitor(frame)
        self._check_rate(window.peer, None)
        self.per_address.record(window.peer)
        token = secrets.token_urlsafe(32)
        language = "en" if frame.get("language") == "en" else "fr"
        try:
            async with self.store.sessions() as session, session.begin():
                conversation = ChatConversation(
                    public_id=secrets.token_hex(10),
                    token_sha256=token_digest(token),
                    visitor_name=name,
                    visitor_email=email,
                    visitor_phone=phone,
                    language=language,
                    peer=window.peer[:200],
                )
                session.add(conversation)
        except SQLAlchemyError as exc:
            log.error("could not store a chat conversation: %s", exc)
            raise ChatRefusal(
                "not_stored",
                "the conversation could not be opened; try again",
                503,
                RETRY_AFTER_SECONDS,
            ) from exc
        self._bind(window, conversation)
        await self._send(
            window.socket,
            {"type": "started", "token": token, **self._conversation_json(conversation)},
        )

    async def _resume(self, window: _Window, frame: dict[str, Any]) -> None:
        token = frame.get("token")
        if window.conversation is not None:
            raise ChatRefusal("already_started", "this window already has a conversation")
        conversation = await self._by_token(token)
        if conversation is None:
            # Never open a conversation on a token we did not issue: the page must ask for a
            # new one, so that nobody can plant an id and read what is written under it.
            raise ChatRefusal(
                "unknown_token", "this conversation is not known here: start a new one"
            )
        self._bind(window, conversation)
        history = await self._history(conversation)
        await self._send(
            window.socket,
            {"type": "resumed", **self._conversation_json(conversation), "history": history},
        )

    async def _message(self, window: _Window, frame: dict[str, Any]) -> None:
        conversation = window.conversation
        if conversation is None:
            raise ChatRefusal("not_started", "start or resume a conversation first")
        client_id = _client_id(frame.get("id"))
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ChatRefusal("empty", "the message has no text")
        if len(text) > MAX_TEXT_CHARS:
            raise ChatRefusal("too_long", f"the message is longer than {MAX_TEXT_CHARS} characters")
        self._check_rate(window.peer, conversation.public_id)
        self._record_rate(window.peer, conversation.public_id)
        inbound = InboundContact(
            channel=CHANNEL,
            natural_key=natural_key(conversation.public_id, client_id),
            sender=visitor_sender(conversation),
            sender_name=conversation.visitor_name,
            text=text.strip(),
        )
        raw = {"conversation": conversation.public_id, "id": client_id, "text": text}
        accepted = await self._accept(inbound, raw, window.peer)
        await self._send(
            window.socket,
            {
                "type": "ack",
                "id": client_id,
                "contact": accepted.contact_id,
                "duplicate": accepted.duplicate,
            },
        )
        if not accepted.duplicate:
            echo = {"type": "message", "id": client_id, "text": inbound.text, "files": []}
            await self._push(conversation.public_id, echo | {"at": _iso(utcnow())}, window.socket)

    def _check_rate(self, peer: str, public_id: str | None) -> None:
        if public_id is not None and not self.per_conversation.allows(public_id):
            raise ChatRefusal(
                "rate_limited",
                f"too many messages: at most {self.limits.messages_per_minute} a minute "
                "in a conversation; wait a moment and send it again",
                429,
            )
        if not self.per_address.allows(peer):
            raise ChatRefusal(
                "rate_limited",
                f"too many messages from your network: at most "
                f"{self.limits.messages_per_minute_per_address} a minute; wait a moment",
                429,
            )

    def _record_rate(self, peer: str, public_id: str) -> None:
        self.per_conversation.record(public_id)
        self.per_address.record(peer)

    async def _accept(self, inbound: InboundContact, raw: dict[str, Any], peer: str) -> Accepted:
        """Store the contact (DESIGN rule 1: before any acknowledgement), then wake the workers."""
        data = json.dumps(raw, ensure_ascii=False, sort_keys=True).encode()
        try:
            accepted = await self.store.accept_contact(inbound, data, Envelope(peer=peer))
        except (BlobStoreError, SQLAlchemyError, OSError) as exc:
            log.error("could not store a chat message from %s: %s", peer, exc)
            raise ChatRefusal(
                "not_stored",
                "your message could not be stored; send it again",
                503,
                RETRY_AFTER_SECONDS,
            ) from exc
        self.wake()
        return accepted

    def _bind(self, window: _Window, conversation: ChatConversation) -> None:
        window.conversation = conversation
        self._open.setdefault(conversation.public_id, set()).add(window.socket)

    def _conversation_json(self, conversation: ChatConversation) -> dict[str, Any]:
        return {
            "conversation": conversation.public_id,
            "visitor": {
                "name": conversation.visitor_name,
                "email": conversation.visitor_email,
                "phone": conversation.visitor_phone,
            },
            "language": conversation.language,
            "max_upload_bytes": self.limits.max_upload_bytes,
        }

    async def _by_token(self, token: object) -> ChatConversation | None:
        if not isinstance(token, str) or not token or len(token) > 200:
            return None
        async with self.store.sessions() as session:
            return await session.scalar(
                select(ChatConversation).where(ChatConversation.token_sha256 == token_digest(token))
            )

    async def _history(self, conversation: ChatConversation) -> list[dict[str, Any]]:
        """What the visitor wrote and what we answered, oldest first (the last ones only)."""
        prefix = natural_key(conversation.public_id, "")
        async with self.store.sessions() as session:
            contacts = (
                await session.scalars(
                    select(Contact)
                    .where(Contact.channel == CHANNEL, Contact.natural_key.startswith(prefix))
                    .options(selectinload(Contact.documents))
                    .order_by(Contact.id.desc())
                    .limit(HISTORY_LIMIT)
                )
            ).all()
            replies = (
                await session.scalars(
                    select(ChatReply)
                    .where(ChatReply.conversation_id == conversation.id)
                    .order_by(ChatReply.id.desc())
                    .limit(HISTORY_LIMIT)
                )
            ).all()
        entries = [
            {
                "type": "message",
                "id": contact.natural_key[len(prefix) :],
                "text": contact.text,
                "files": [d.filename for d in contact.documents if d.parent_id is None],
                "at": _iso(contact.received_at),
            }
            for contact in contacts
        ] + [self._reply_frame(reply) for reply in replies]
        entries.sort(key=lambda entry: datetime.fromisoformat(str(entry["at"])))
        return entries[-HISTORY_LIMIT:]

    @staticmethod
    def _reply_frame(reply: ChatReply) -> dict[str, Any]:
        return {"type": "reply", "id": reply.id, "text": reply.text, "at": _iso(reply.created_at)}

    async def _send(self, socket: web.WebSocketResponse, frame: dict[str, Any]) -> bool:
        if socket.closed:
            return False
        try:
            await socket.send_json(frame)
        except (ConnectionError, RuntimeError):
            # The window went away meanwhile; what it missed comes back with the history.
            return False
        return True

    async def _push(
        self,
        public_id: str,
        frame: dict[str, Any],
        skip: web.WebSocketResponse | None = None,
    ) -> int:
        sockets = [s for s in self._open.get(public_id, set()) if s is not skip]
        sent = await asyncio.gather(*(self._send(s, frame) for s in sockets))
        return sum(sent)

    # ------------------------------------------------------------------- upload
    async def _preflight(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204, headers=CORS)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._take_upload(request)
        except ChatRefusal as refusal:
            body = {"error": refusal.reason, "code": refusal.code}
            headers = dict(CORS)
            if refusal.retry_after is not None:
                headers["Retry-After"] = str(refusal.retry_after)
                # The widget reads it from another site's page: CORS hides it unless exposed.
                headers["Access-Control-Expose-Headers"] = "Retry-After"
            return web.json_response(body, status=refusal.status, headers=headers)

    async def _take_upload(self, request: web.Request) -> web.StreamResponse:
        conversation = await self._by_token(request.headers.get(TOKEN_HEADER))
        if conversation is None:
            raise ChatRefusal(
                "unknown_token", f"missing or unknown {TOKEN_HEADER}: start a conversation", 403
            )
        limit = self.limits.max_upload_bytes
        if request.content_length is not None and request.content_length > limit + 64 * 1024:
            raise self._too_large()
        peer = request.remote or ""
        self._check_rate(peer, conversation.public_id)
        client_id, text, attachments = await self._read_upload(request)
        self._record_rate(peer, conversation.public_id)
        inbound = InboundContact(
            channel=CHANNEL,
            natural_key=natural_key(conversation.public_id, client_id),
            sender=visitor_sender(conversation),
            sender_name=conversation.visitor_name,
            text=text,
            attachments=tuple(attachments),
        )
        raw = {
            "conversation": conversation.public_id,
            "id": client_id,
            "text": text,
            "files": [
                {
                    "filename": a.filename,
                    "type": a.declared_type,
                    "size": len(a.content),
                    "sha256": hashlib.sha256(a.content).hexdigest(),
                }
                for a in attachments
            ],
        }
        accepted = await self._accept(inbound, raw, peer)
        files = [a.filename for a in attachments]
        if not accepted.duplicate:
            echo = {"type": "message", "id": client_id, "text": text, "files": files}
            await self._push(conversation.public_id, echo | {"at": _iso(utcnow())})
        body = {
            "id": client_id,
            "contact": accepted.contact_id,
            "duplicate": accepted.duplicate,
            "files": files,
        }
        return web.json_response(body, headers=CORS)

    def _too_large(self) -> ChatRefusal:
        limit = self.limits.max_upload_bytes
        return ChatRefusal(
            "too_large",
            f"the files are larger than {limit} bytes ({limit / 1024 / 1024:.0f} MB) in all; "
            "send them one by one or smaller",
            413,
        )

    async def _read_upload(self, request: web.Request) -> tuple[str, str, list[InboundAttachment]]:
        """The client id, caption and files of a multipart upload, counting bytes as they come."""
        if not request.content_type.startswith("multipart/"):
            raise ChatRefusal("bad_upload", "send the files as multipart/form-data")
        reader = await request.multipart()
        client_id: str | None = None
        text = ""
        attachments: list[InboundAttachment] = []
        total = 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ChatRefusal("bad_upload", "nested multipart is not accepted")
            if part.filename is None:
                value = (await self._read_part(part, MAX_FIELD_BYTES, None)).decode(
                    "utf-8", "replace"
                )
                if part.name == "id":
                    client_id = _client_id(value)
                elif part.name == "text":
                    text = value.strip()[:MAX_TEXT_CHARS]
                continue
            if len(attachments) == MAX_FILES:
                raise ChatRefusal("too_many_files", f"at most {MAX_FILES} files at a time")
            content = await self._read_part(part, self.limits.max_upload_bytes - total, True)
            total += len(content)
            attachments.append(
                InboundAttachment(
                    filename=(Path(part.filename).name or "upload")[:255],
                    declared_type=part.headers.get("Content-Type", "application/octet-stream"),
                    content=content,
                )
            )
        if client_id is None:
            raise ChatRefusal("bad_id", "the upload needs an id field (the message id)")
        if not attachments:
            raise ChatRefusal("no_file", "the upload has no file")
        return client_id, text, attachments

    async def _read_part(self, part: BodyPartReader, budget: int, is_file: bool | None) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := await part.read_chunk(64 * 1024):
            size += len(chunk)
            if size > budget:
                if is_file:
                    raise self._too_large()
                raise ChatRefusal("bad_upload", f"the field {part.name!r} is too long")
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------- sender
    async def send(self, message: OutboundMessage) -> str:
        """Record the reply for its conversation, then push it to every open window."""
        if message.contact_id is None:
            raise DeliveryError(
                "a chat reply must answer a contact: without one there is no conversation",
                permanent=True,
            )
        async with self.store.sessions() as session, session.begin():
            contact = await session.get(Contact, message.contact_id)
            if contact is None or contact.channel != CHANNEL or ":" not in contact.natural_key:
                raise DeliveryError(
                    f"contact {message.contact_id} is not a chat message", permanent=True
                )
            public_id = contact.natural_key.split(":", 1)[0]
            conversation = await session.scalar(
                select(ChatConversation).where(ChatConversation.public_id == public_id)
            )
            if conversation is None:
                raise DeliveryError(f"chat conversation {public_id} not found", permanent=True)
            reply = await session.scalar(
                select(ChatReply).where(ChatReply.outbound_message_id == message.id)
            )
            if reply is None:
                reply = ChatReply(
                    conversation_id=conversation.id,
                    outbound_message_id=message.id,
                    text=message.body_text.strip(),
                )
                session.add(reply)
                await session.flush()
            frame = self._reply_frame(reply)
            if self._shared:
                # Delivered with the commit, to every front (this process's included).
                await session.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": NOTIFY_CHANNEL, "payload": str(reply.id)},
                )
        where = f"chat:{public_id} reply {reply.id}"
        if self._shared:
            return f"{where}: recorded, announced to the fronts' open windows"
        pushed = await self._push(public_id, frame)
        if pushed:
            return f"{where}: recorded, pushed live to {pushed} open window(s)"
        return f"{where}: recorded, no window open; shown when the visitor comes back"
