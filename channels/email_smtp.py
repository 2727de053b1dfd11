"""Email in: an aiosmtpd handler that answers 250 only once the message is safely stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP
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


def smtp_factory(handler: SmtpIntake, hostname: str, max_message_bytes: int) -> Callable[[], SMTP]:
    """A protocol factory for ``loop.create_server``: SMTP runs in the service's own loop."""

    def factory() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=max_message_bytes,
            hostname=hostname,
            enable_SMTPUTF8=True,
            decode_data=False,
            loop=asyncio.get_running_loop(),
        )

    return factory
