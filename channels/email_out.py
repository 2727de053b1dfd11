"""Email out: build the MIME message of an outbound record and hand it to the SMTP relay."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib

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
    email = EmailMessage()
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
    email["Content-Language"] = message.language
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
    return email


class SmtpRelaySender:
    """Sends through the relay named by GUICHET_SMTP_RELAY.

    Automatic replies go out with an empty return path (RFC 3834 section 3.3), so a bounce of
    a bounce can never start a loop.
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
    ) -> None:
        self.host = host
        self.port = port
        self.from_name = from_name
        self.from_address = from_address
        self.timeout = timeout
        self.blobs = blobs

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
        client = _RelayClient(
            hostname=self.host, port=self.port, timeout=self.timeout, start_tls=False
        )
        try:
            await client.connect()
            try:
                errors, response = await client.send_message(
                    email,
                    sender="" if automatic else self.from_address,
                    recipients=[message.recipient],
                )
            finally:
                client.close()
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise DeliveryError(
                f"relay refused the recipient: {exc}", permanent=all(c >= 500 for c in codes)
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # The relay answered: it did not take the message.
            raise DeliveryError(
                f"relay answered {exc.code} {exc.message}", permanent=exc.code >= 500
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            if client.handed_over:
                # The body went out and no answer came back: the relay may have queued it.
                # Sending again could mean a second copy, so a person decides (DESIGN rule 3).
                raise DeliveryError(
                    f"relay {self.host}:{self.port} did not answer after the message: {exc}",
                    uncertain=True,
                ) from exc
            raise DeliveryError(f"relay {self.host}:{self.port} unreachable: {exc}") from exc
        if errors:
            raise DeliveryError(f"relay refused: {errors}", permanent=True)
        return response


class _RelayClient(aiosmtplib.SMTP):
    """An SMTP client that knows whether it started handing over the message body."""

    handed_over = False

    async def data(self, message: str | bytes, /, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        self.handed_over = True
        return await super().data(message, **kwargs)
