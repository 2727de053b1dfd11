"""Email out: build the MIME message of an outbound record and hand it to the SMTP relay."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib

from channels import mail_policy
from channels.base import DeliveryError
from models.blobs import BlobStore
from models.clock import utcnow
from models.tables import OutboundMessage

#: Record header listing the files to attach: [{"sha256", "filename", "content_type"}, ...],
#: the content being in the blob store (written when the reply was rendered).
ATTACHMENTS_HEADER = "X-Guichet-Attachments"

# Headers the responder may set; anything else in the record is ignored rather than trusted.
_PASSED_HEADERS = (
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    "Reply-To",
)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes


def attachment_refs(message: OutboundMessage) -> list[dict[str, str]]:
    refs = message.headers.get(ATTACHMENTS_HEADER) or []
    return [dict(ref) for ref in refs if isinstance(ref, dict)]


def build_email(
    message: OutboundMessage,
    from_name: str,
    from_address: str,
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    email = EmailMessage(policy=mail_policy.DEFAULT)
    local, _, domain = from_address.partition("@")
    email["From"] = Address(from_name, local, domain)
    email["To"] = message.recipient
    email["Subject"] = message.subject
    email["Date"] = format_datetime(utcnow())
    if message.message_id:
        email["Message-ID"] = f"<{message.message_id}>"
    for name in _PASSED_HEADERS:
        value = message.headers.get(name)
        if value:
            email[name] = value
    email.set_content(message.body_text)
    if message.body_html:
        email.add_alternative(message.body_html, subtype="html")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        email.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    # Last: setting the content clears every Content-* header, and making the message
    # multipart moves them into its first part. Here it speaks for the whole message.
    email["Content-Language"] = message.language
    return email


class SmtpRelaySender:
    """Sends through the relay named by GUICHET_SMTP_RELAY.

    Automatic replies go out with an empty return path (RFC 3834 section 3.3), so a bounce of
    a bounce can never start a loop.

    With ``keep_connections`` above zero, a connection that delivered a reply is kept for the
    next one, as MTAs do: under a burst each acknowledgement then costs one SMTP transaction
    instead of a TCP connection, the greeting and EHLO as well. A kept connection is used again
    only while younger than ``idle_seconds`` (relays drop idle sessions), and ``release``
    closes every kept one: the job runner calls it when it runs out of work and when it stops.
    """

    channel = "email"

    def __init__(
        self,
        host: str,
        port: int,
        from_name: str,
        from_address: str,
        timeout: float = 30.0,
        blobs: BlobStore | None = None,
        *,
        keep_connections: int = 0,
        idle_seconds: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port
        self.from_name = from_name
        self.from_address = from_address
        self.timeout = timeout
        self.blobs = blobs
        self.keep_connections = keep_connections
        self.idle_seconds = idle_seconds
        #: Connections that delivered their last reply, with when; the newest last.
        self._kept: list[tuple[_RelayClient, float]] = []
        #: Connections opened, for the tests and the benchmarks to see the reuse.
        self.connections_opened = 0

    async def _attachments(self, message: OutboundMessage) -> list[Attachment]:
        refs = attachment_refs(message)
        if not refs:
            return []
        if self.blobs is None:
            raise DeliveryError("reply has attachments but the sender has no blob store")
        blobs = self.blobs
        try:
            contents = await asyncio.to_thread(lambda: [blobs.get(r["sha256"]) for r in refs])
        except (OSError, KeyError, ValueError) as exc:
            raise DeliveryError(f"attachment unavailable: {exc}", permanent=True) from exc
        return [
            Attachment(
                ref.get("filename", "attachment"),
                ref.get("content_type", "application/octet-stream"),
                content,
            )
            for ref, content in zip(refs, contents, strict=True)
        ]

    async def send(self, message: OutboundMessage) -> str:
        attachments = await self._attachments(message)
        email = build_email(message, self.from_name, self.from_address, attachments)
        automatic = message.headers.get("Auto-Submitted", "no") != "no"
        client = self._kept_connection()
        if client is not None:
            try:
                return await self._exchange(client, email, message, automatic)
            except _StaleConnection:
                # The relay closed the kept session before our MAIL FROM (its idle timeout, a
                # limit of messages per session): nothing was handed over, so a new connection
                # is no risk of a second copy.
                pass
        client = _RelayClient(
            hostname=self.host, port=self.port, timeout=self.timeout, start_tls=False
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise DeliveryError(f"relay {self.host}:{self.port} unreachable: {exc}") from exc
        self.connections_opened += 1
        try:
            return await self._exchange(client, email, message, automatic)
        except _StaleConnection as exc:
            raise DeliveryError(f"relay {self.host}:{self.port} unreachable: {exc}") from exc

    async def _exchange(
        self, client: _RelayClient, email: EmailMessage, message: OutboundMessage, automatic: bool
    ) -> str:
        """One SMTP transaction on an open connection; the connection is kept after a success
        and closed after anything else."""
        # Per transaction: a kept connection handed over its previous message.
        client.handed_over = False
        try:
            errors, response = await client.send_message(
                email,
                sender="" if automatic else self.from_address,
                recipients=[message.recipient],
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            client.close()
            codes = [r.code for r in exc.recipients]
            raise DeliveryError(
                f"relay refused the recipient: {exc}", permanent=all(c >= 500 for c in codes)
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            if exc.code == 421 and not client.handed_over:
                # "Closing transmission channel" before the message: the session is over (too
                # many messages on it, shutting down), not the reply refused.
                raise _StaleConnection(f"relay answered 421 {exc.message}") from exc
            # The relay answered: it did not take the message.
            raise DeliveryError(
                f"relay answered {exc.code} {exc.message}", permanent=exc.code >= 500
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            if client.handed_over:
                # The body went out and no answer came back: the relay may have queued it.
                # Sending again could mean a second copy, so a person decides (DESIGN rule 3).
                raise DeliveryError(
                    f"relay {self.host}:{self.port} did not answer after the message: {exc}",
                    uncertain=True,
                ) from exc
            raise _StaleConnection(str(exc)) from exc
        if errors:
            client.close()
            raise DeliveryError(f"relay refused: {errors}", permanent=True)
        self._keep(client)
        return response

    def _kept_connection(self) -> _RelayClient | None:
        now = time.monotonic()
        while self._kept:
            client, since = self._kept.pop()
            if now - since < self.idle_seconds and client.is_connected:
                return client
            client.close()
        return None

    def _keep(self, client: _RelayClient) -> None:
        if len(self._kept) < self.keep_connections:
            self._kept.append((client, time.monotonic()))
        else:
            client.close()

    async def release(self) -> None:
        """Say goodbye on the kept connections (the runner has no more work, or stops)."""
        kept, self._kept = self._kept, []
        for client, _ in kept:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit(timeout=2)
            client.close()


class _StaleConnection(Exception):
    """The connection failed before any of the message was handed over."""


class _RelayClient(aiosmtplib.SMTP):
    """An SMTP client that knows whether it started handing over the message body."""

    handed_over = False

    async def data(self, message: str | bytes, /, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        self.handed_over = True
        return await super().data(message, **kwargs)
