"""The normalised inbound contact that every channel adapter produces and the store persists."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


def message_text(subject: str, body: str) -> str:
    """The text message classifiers read: subject, then body.

    One definition, so that corrections kept as training data are the very text that
    classification saw.
    """
    return f"{subject}\n{body}" if subject else body


@dataclass(frozen=True)
class InboundAttachment:
    """One file that came with a contact, exactly as the transport delivered it."""

    filename: str
    declared_type: str
    content: bytes
    inline: bool = False
    content_id: str | None = None
    #: The document type a person labelled it with (a GED index sidecar): wins over the machine.
    doc_type_hint: str | None = None


@dataclass(frozen=True)
class InboundContact:
    """What any transport delivers, translated into Guichet's terms.

    ``natural_key`` makes intake idempotent (DESIGN rule 2): Message-ID for email, MessageSid
    for Twilio, and so on. ``automatic_reason`` is set when the message was produced by a
    machine (auto-reply, bounce, list) so that no automatic reply is ever sent back to it.
    """

    channel: str
    natural_key: str
    sender: str
    sender_name: str = ""
    recipients: tuple[str, ...] = ()
    subject: str = ""
    text: str = ""
    html: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    sent_at: datetime | None = None
    automatic_reason: str | None = None
    attachments: tuple[InboundAttachment, ...] = ()
    defects: tuple[str, ...] = field(default_factory=tuple)
    #: The dossier reference a person labelled it with (a GED index sidecar): wins over the
    #: machine's matching rules.
    dossier_hint: str | None = None
    #: Only the identity was read (an email's headers, at SMTP time): intake's first step
    #: unpacks the raw bytes into the rest of these fields.
    raw_only: bool = False
