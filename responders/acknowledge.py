"""The acknowledgement of receipt: whether a contact gets one, and what it says."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from babel.dates import format_date

from models.tables import Contact, Dossier, OutboundMessage
from responders.outbox import idempotency_key
from responders.render import TemplateRenderer

PURPOSE = "acknowledgement"

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass(frozen=True)
class MailIdentity:
    """Who Guichet writes as: ``Name <local@domain>``, threading tokens under ``domain``."""

    display_name: str
    local_part: str
    domain: str
    own_domains: tuple[str, ...]

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}"


@dataclass(frozen=True)
class ReplyRoute:
    """Where the automatic replies of one contact go, and whether the contact itself is
    acknowledged (a scanned letter is not, though its dossier's replies reach the person)."""

    channel: str
    recipient: str
    acknowledge: bool = True


def reply_route(
    contact: Contact, dossier: Dossier | None, identity: MailIdentity
) -> ReplyRoute | str:
    """The route of this contact's automatic replies, or why it gets none (RFC 3834, opt-out)."""
    if contact.automatic_reason:
        return f"automatic message ({contact.automatic_reason}): never answered automatically"
    if contact.channel == "email":
        if "@" not in contact.sender:
            return "no sender address to answer"
        domain = contact.sender.rsplit("@", 1)[1].lower()
        if domain in identity.own_domains:
            return f"sender {contact.sender} is one of our own addresses: answering would loop"
        return ReplyRoute("email", contact.sender)
    if contact.channel == "sms":
        if not _E164.fullmatch(contact.sender):
            return f"sender {contact.sender!r} is not a phone number SMS can answer"
        return ReplyRoute("sms", contact.sender)
    if contact.channel == "chat":
        return ReplyRoute("chat", contact.sender)
    if contact.channel == "ged":
        # Scanned mail has no return channel of its own: the dossier's news (documents still
        # missing, complete, refused) go to the beneficiary's address on file.
        emails = dossier.beneficiary.emails if dossier and dossier.beneficiary else []
        if not emails:
            return "scanned mail: no dossier beneficiary with an email address to write to"
        return ReplyRoute("email", str(emails[0]), acknowledge=False)
    if contact.channel == "edi":
        return "EDI interchange: the CONTRL message is its only reply"
    return f"no automatic reply on channel {contact.channel}"


def acknowledgement_context(
    contact: Contact, dossier_ref: str | None, language: str, signature: str
) -> dict[str, Any]:
    return {
        "name": contact.sender_name,
        "subject": _strip_reply_prefixes(contact.subject),
        "dossier_ref": dossier_ref,
        # What the person sent, not what Guichet found inside their archives.
        "documents": [
            d.filename for d in contact.documents if not d.inline and d.parent_id is None
        ],
        "received_on": format_date(contact.received_at, "long", locale=language),
        "signature": signature,
    }


def reply_headers(contact: Contact, identity: MailIdentity, token: str) -> dict[str, Any]:
    """Headers of an automatic email reply, threaded under the contact's Message-ID."""
    headers: dict[str, Any] = {
        # RFC 3834: marks this as an automatic reply so that other robots do not answer it.
        "Auto-Submitted": "auto-replied",
        "X-Auto-Response-Suppress": "All",
        "Reply-To": f"{identity.local_part}+{token}@{identity.domain}",
    }
    if contact.message_id:
        headers["In-Reply-To"] = f"<{contact.message_id}>"
        chain = [*contact.references, contact.message_id][-20:]
        headers["References"] = " ".join(f"<{ref}>" for ref in chain)
    return headers


def build_acknowledgement(
    contact: Contact,
    dossier_ref: str | None,
    renderer: TemplateRenderer,
    identity: MailIdentity,
) -> OutboundMessage:
    """The acknowledgement email, threaded under the contact's Message-ID."""
    received_language = contact.language or renderer.default_language
    rendered = renderer.render(
        PURPOSE,
        "email",
        received_language,
        acknowledgement_context(contact, dossier_ref, received_language, identity.display_name),
    )
    token = secrets.token_hex(8)
    return OutboundMessage(
        idempotency_key=idempotency_key(contact.id, PURPOSE),
        contact_id=contact.id,
        dossier_id=contact.dossier_id,
        purpose=PURPOSE,
        template=rendered.template,
        channel="email",
        language=rendered.language,
        recipient=contact.sender,
        subject=rendered.subject,
        body_text=rendered.body_text,
        body_html=rendered.body_html,
        headers=reply_headers(contact, identity, token),
        message_id=f"{token}.{PURPOSE}@{identity.domain}",
        status="queued",
    )


def _strip_reply_prefixes(subject: str) -> str:
    prefixes = ("re:", "tr:", "fw:", "fwd:", "aw:", "rif:", "réf:")
    subject = subject.strip()
    while subject.lower().startswith(prefixes):
        subject = subject.split(":", 1)[1].strip()
    return subject[:200]
