"""Email in: an aiosmtpd handler that answers 250 only once the message is safely stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy.exc import SQLAlchemyError

from channels.email_message import parse_email, read_headers, synthetic_key
from models.blobs import BlobStoreError, InsufficientStorage
from models.inbound import InboundContact
from models.store import Accepted, Envelope, Store

log = logging.getLogger(__name__)


def parse_or_keep(raw: bytes, envelope_sender: str | None) -> InboundContact:
    """Intake's unpacker of email. The parser never raises by design; should it ever, the
    bytes are still kept."""
    try:
        return parse_email(raw, envelope_sender=envelope_sender)
    except Exception as exc:
        log.exception("email parser failed; keeping the raw message")
        return InboundContact(
            channel="email",
            natural_key=synthetic_key(raw),
            sender=(envelope_sender or "").lower(),
            defects=(f"message could not be parsed: {type(exc).__name__}: {exc}",),
        )


async def ingest_email(
    store: Store, raw: bytes, envelope: Envelope | None = None
) -> tuple[Accepted, InboundContact]:
    """The one path from raw email bytes to a stored contact (SMTP, IMAP, ``guichet ingest``).

    Only the headers are read here; intake unpacks the body with ``parse_or_keep``.
    """
    sender = envelope.sender if envelope else None
    inbound = read_headers(raw, envelope_sender=sender)
    return await store.accept_contact(inbound, raw, envelope), inbound


class SmtpIntake:
    """aiosmtpd handler: refuses foreign recipients (never an open relay), stores, then 250."""

    name = "email"

    def __init__(
        self,
        store: Store,
        domains: tuple[str, ...],
        on_accepted: Callable[[Accepted], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.domains = tuple(d.lower() for d in domains)
        self.on_accepted = on_accepted

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if "@" not in address or domain not in self.domains:
            accepted = ", ".join(self.domains)
            return f"550 5.7.1 Relaying denied: this server only accepts mail for {accepted}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        peer: Any = session.peer
        transport = Envelope(
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or ""),
            # aiosmtpd reports the null return path as "<>"; the parser's RFC 3834 check wants "".
            sender="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
        )
        try:
            accepted, _ = await ingest_email(self.store, raw, transport)
        except InsufficientStorage as exc:
            # RFC 5321's code for this case; the client keeps the message and retries later.
            log.error("refusing a message from %s for now: %s", transport.peer, exc)
            return "452 4.3.1 Insufficient system storage, please try again later"
        except (BlobStoreError, SQLAlchemyError, OSError) as exc:
            # Nothing is acknowledged unless it is stored: the client keeps it and retries.
            log.error("could not store a message from %s: %s", transport.peer, exc)
            return "451 4.3.0 Temporary failure storing the message, please try again later"
        self.on_accepted(accepted)
        if accepted.duplicate:
            return f"250 2.0.0 OK: already received as contact {accepted.contact_id}"
        return f"250 2.0.0 OK: queued as contact {accepted.contact_id}"


# A lone dot ends DATA. Searching for the dot and its line end, then checking that a line end
# comes before it, also finds the lone dot of the very first line.
_DOT_LINE = b".\r\n"


class IntakeSMTP(SMTP):
    """aiosmtpd's SMTP session with the message content read in blocks, as bytes.

    Stock aiosmtpd reads DATA one line at a time, a coroutine step per line: a 20 KB message
    with a photo is about 300 of them, close to half of the intake's time at load. Here the
    stream is cut only at the candidates for the final dot (``.`` before a line end), and the
    rules stay aiosmtpd's: ``552`` past ``data_size_limit``, ``500`` for a line longer than
    ``line_length_limit``, both answered once the data is over; dot-stuffing undone; nothing
    read past the final dot, so commands a client pipelines after it are left for the session.
    """

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content, refusal = await self._read_content()
        except asyncio.CancelledError:
            # The client went away during DATA (aiosmtpd cancels the session on EOF).
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if refusal is not None:
            await self.push(refusal)
            self._next_envelope()
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._next_envelope()
        await self.push("250 OK" if status is MISSING else status)

    def _next_envelope(self) -> None:
        # aiosmtpd's own reset after DATA (untyped there), so a subclass of it keeps working.
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    async def _read_content(self) -> tuple[bytes, str | None]:
        """The message up to the lone dot, unstuffed, or the refusal to answer once it ends."""
        reader, limit = self._reader, self.data_size_limit
        parts: list[bytes] = []
        size = 0
        # The DATA command's own line end: the message's first line starts a line.
        tail = b"\r\n"
        too_much = False
        while True:
            try:
                block = await reader.readuntil(_DOT_LINE)
                candidate = True
            except asyncio.LimitOverrunError as exc:
                # No candidate within the reader's limit: take what can safely be taken.
                block = await reader.readexactly(exc.consumed)
                candidate = False
            if candidate:
                before = tail + block[:-3] if len(block) < 5 else block[-5:-3]
                if before.endswith(b"\r\n"):
                    body = block[:-3]
                    size += len(body)
                    if not too_much:
                        parts.append(body)
                    break
            size += len(block)
            tail = (tail + block)[-2:]
            if too_much:
                continue
            if limit and size > limit:
                # Keep reading to the end, as RFC 5321 4.2.5 implies, but keep nothing.
                too_much = True
                parts.clear()
            else:
                parts.append(block)
        if too_much or (limit and size > limit):
            return b"", "552 Error: Too much mail data"
        content = b"".join(parts)
        lines = content.split(b"\r\n")
        # Each line counted with its line end, as aiosmtpd counts them.
        if max(map(len, lines)) + 2 > self.line_length_limit:
            return b"", "500 Line too long (see RFC5321 4.5.3.1.6)"
        if content.startswith(b"."):
            content = content[1:]
        return content.replace(b"\r\n.", b"\r\n"), None


def smtp_factory(
    handler: object,
    hostname: str,
    max_message_bytes: int,
    session: type[SMTP] = IntakeSMTP,
) -> Callable[[], SMTP]:
    """A protocol factory for ``loop.create_server``: SMTP runs in the service's own loop.
    ``handler`` is aiosmtpd's (``SmtpIntake`` in the service); ``session`` is stock aiosmtpd
    only where a test compares the two under the service's settings."""

    def factory() -> SMTP:
        return session(
            handler,
            data_size_limit=max_message_bytes,
            hostname=hostname,
            enable_SMTPUTF8=True,
            decode_data=False,
            loop=asyncio.get_running_loop(),
        )

    return factory
