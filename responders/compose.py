"""Turn a planned reply into an outbound record: its context, rendered for the contact's channel."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from models.tables import Contact, Dossier, OutboundMessage
from responders import decide as d
from responders.acknowledge import (
    MailIdentity,
    ReplyRoute,
    acknowledgement_context,
    reply_headers,
)
from responders.render import Rendered, TemplateRenderer
from responders.sms import measure, to_gsm7

#: An SMS reply never takes more than this many segments (each one is billed).
SMS_MAX_SEGMENTS = 2

STATUS_WORDS = {
    "fr": {
        "open": "ouvert",
        "awaiting_documents": "en attente de documents",
        "in_review": "en cours d'examen",
        "approved": "accepté",
        "refused": "refusé",
        "paid": "réglé",
        "closed": "clos",
    },
    "en": {
        "open": "open",
        "awaiting_documents": "awaiting documents",
        "in_review": "under review",
        "approved": "approved",
        "refused": "refused",
        "paid": "paid",
        "closed": "closed",
    },
}


class ClaimType(Protocol):
    """What a reply needs of a claim type (intake.coverage.ClaimType; responders do not import
    intake, which imports them)."""

    @property
    def label_fr(self) -> str: ...

    @property
    def label_en(self) -> str: ...

    def describe(self, doc_type: str, language: str = "fr") -> str: ...


@dataclass(frozen=True)
class ReplyInputs:
    """What composing any reply may read, gathered once by the respond step."""

    contact: Contact
    dossier: Dossier | None
    claim_types: Mapping[str, ClaimType]
    renderer: TemplateRenderer
    identity: MailIdentity
    now: datetime
    #: Where the replies go; by default back to the sender on the contact's own channel.
    route: ReplyRoute | None = None

    @property
    def channel(self) -> str:
        return self.route.channel if self.route else self.contact.channel

    @property
    def recipient(self) -> str:
        return self.route.recipient if self.route else self.contact.sender


def reply_language(contact: Contact, renderer: TemplateRenderer) -> str:
    return contact.language or renderer.default_language


def describe_documents(
    claim_types: Mapping[str, ClaimType], claim_type: str, doc_types: list[str], lang: str
) -> list[str]:
    """Plain words for each document type, from the claim type's configuration when it has
    them; the bare type otherwise, so that nothing missing is ever left unsaid."""
    known = claim_types.get(claim_type)
    words = []
    for doc_type in doc_types:
        try:
            words.append(known.describe(doc_type, lang) if known else "")
        except KeyError:
            words.append("")
        words[-1] = words[-1] or doc_type.replace("_", " ")
    return words


def next_step(dossier: Dossier) -> str:
    if d.is_refused(dossier.coverage):
        return "refused"
    if dossier.missing:
        return "send_documents"
    if dossier.coverage.get("decided") and dossier.coverage.get("covered"):
        return "payment"
    return "review"


def reply_context(plan: d.PlannedReply, inputs: ReplyInputs, lang: str) -> dict[str, Any]:
    contact, dossier = inputs.contact, inputs.dossier
    signature = inputs.identity.display_name
    ref = dossier.ref if dossier else None
    if plan.purpose == d.ACKNOWLEDGEMENT:
        return acknowledgement_context(contact, ref, lang, signature)
    context: dict[str, Any] = {
        "name": contact.sender_name,
        "dossier_ref": ref,
        "signature": signature,
        "today": inputs.now.date(),
    }
    if dossier is None:
        return context | {"status": None, "documents": [], "document_count": 0, "next": None}
    documents = describe_documents(
        inputs.claim_types, dossier.claim_type, list(dossier.missing), lang
    )
    claim = inputs.claim_types.get(dossier.claim_type)
    coverage = dossier.coverage
    context |= {
        "documents": documents,
        "document_count": len(documents),
        "reminder": plan.reminder,
        "claim_label": (claim.label_en if lang == "en" else claim.label_fr)
        if claim
        else dossier.claim_type.replace("_", " "),
        "status": STATUS_WORDS.get(lang, STATUS_WORDS["fr"]).get(dossier.status, dossier.status),
        "next": next_step(dossier),
        "currency": coverage.get("currency") or dossier.currency,
        "amount_claimed": coverage.get("amount_claimed"),
        "amount_covered": coverage.get("amount_covered"),
        "reasons": [
            {
                "clause": reason.get("clause") or "",
                "message": reason.get("message_en" if lang == "en" else "message_fr") or "",
            }
            for reason in d.refusal_reasons(coverage)
        ],
        "event_date": dossier.event_date,
        "event_place": dossier.event_place,
        "beneficiary": dossier.beneficiary.name if dossier.beneficiary else contact.sender_name,
        "contract_no": dossier.contract.number if dossier.contract else None,
    }
    return context


def render_for_channel(
    renderer: TemplateRenderer, purpose: str, channel: str, lang: str, context: dict[str, Any]
) -> Rendered:
    """Render, and for SMS keep to GSM-7 and to ``SMS_MAX_SEGMENTS``: a list too long for
    two segments is replaced by its count (the email says the detail)."""
    rendered = renderer.render(purpose, channel, lang, context)
    if channel != "sms":
        return rendered
    text = to_gsm7(rendered.body_text.strip())
    if measure(text).segments > SMS_MAX_SEGMENTS and context.get("documents"):
        rendered = renderer.render(purpose, channel, lang, context | {"documents": []})
        text = to_gsm7(rendered.body_text.strip())
    return Rendered(rendered.template, rendered.language, "", text)


def build_reply(
    plan: d.PlannedReply, inputs: ReplyInputs, attachments: list[dict[str, str]] | None = None
) -> OutboundMessage:
    contact, identity = inputs.contact, inputs.identity
    lang = reply_language(contact, inputs.renderer)
    rendered = render_for_channel(
        inputs.renderer, plan.purpose, inputs.channel, lang, reply_context(plan, inputs, lang)
    )
    token = secrets.token_hex(8)
    headers: dict[str, Any] = {}
    message_id = None
    if inputs.channel == "email":
        headers = reply_headers(contact, identity, token)
        message_id = f"{token}.{plan.purpose}@{identity.domain}"
    if plan.missing_digest:
        headers[d.MISSING_HEADER] = plan.missing_digest
    if attachments:
        headers["X-Guichet-Attachments"] = attachments
    return OutboundMessage(
        idempotency_key=plan.key,
        contact_id=contact.id,
        dossier_id=inputs.dossier.id if inputs.dossier else contact.dossier_id,
        purpose=plan.purpose,
        template=rendered.template,
        channel=inputs.channel,
        language=rendered.language,
        recipient=inputs.recipient,
        subject=rendered.subject,
        body_text=rendered.body_text,
        body_html=rendered.body_html,
        headers=headers,
        message_id=message_id,
        send_after=inputs.now + timedelta(days=plan.delay_days) if plan.delay_days else None,
        status="queued",
    )
