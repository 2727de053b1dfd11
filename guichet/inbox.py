"""The gestionnaire's unified inbox: server-rendered pages, their form actions, and the JSON twin
of every action under /api/inbox (each one a function of guichet/actions.py)."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import nh3
from aiohttp import web
from markupsafe import Markup, escape
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from guichet import actions
from guichet.access import identity, language
from guichet.live import LiveFeed
from guichet.parts import web_pages
from guichet.settings import Settings
from models.clock import utcnow
from models.store import Store
from models.tables import (
    AuditEvent,
    Contact,
    ContactTriage,
    Document,
    Dossier,
    OutboundMessage,
    ProviderInvoice,
    User,
)

PAGE_SIZE = 50
CHANNELS = ("email", "sms", "chat", "edi", "ged")
STATUSES = ("received", "processing", "processed", "needs_review", "failed")

#: Every inbox page says what the browser may do, so that a sanitiser miss still cannot run a
#: script nor fetch anything from another host (the images of a hostile email, say).
CSP = (
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
#: Documents shown in the browser rather than downloaded: images and PDFs that were read
#: without trouble. Anything refused, encrypted or quarantined is only ever downloaded.
VIEWABLE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"})
READ_OK = frozenset({"ok", "partial"})
THUMBNAIL_SIZE = (240, 240)
THUMBNAIL_MAX_BYTES = 30 * 1024 * 1024

# --------------------------------------------------------------------------- sanitising

SAFE_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "div", "dl",
        "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p",
        "pre", "q", "s", "small", "span", "strong", "sub", "sup", "table", "tbody", "td",
        "tfoot", "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip
SAFE_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "*": {"lang", "dir"},
}
LINK_SCHEMES = ("http://", "https://", "mailto:")
_OWN_DOCUMENT = re.compile(r"^/inbox/documents/\d+/file(\?inline=1)?$")


def _keep_attribute(element: str, attribute: str, value: str) -> str | None:
    lowered = value.strip().lower()
    if element == "a" and attribute == "href":
        return value if lowered.startswith(LINK_SCHEMES) else None
    if element == "img" and attribute == "src":
        # No remote images: a fetched image tells the sender the message was read, and when.
        if lowered.startswith("data:image/") or _OWN_DOCUMENT.match(value.strip()):
            return value
        return None
    return value


def sanitise(html: str) -> str:
    """The HTML of a message, safe to show: an allow-list of tags and attributes, links only to
    http, https and mailto (opened without referrer), images only inline or our own."""
    return nh3.clean(
        html,
        tags=set(SAFE_TAGS),
        clean_content_tags={"script", "style", "title", "head"},
        attributes={k: set(v) for k, v in SAFE_ATTRIBUTES.items()},
        attribute_filter=_keep_attribute,
        url_schemes={"http", "https", "mailto", "data"},
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


def _entity_values(entities: Mapping[str, Any]) -> list[str]:
    values: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if len(value.strip()) >= 3:
                values.append(value.strip())
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            walk(str(value))

    walk(dict(entities))
    return sorted(set(values), key=len, reverse=True)[:50]


def highlight(text: str, entities: Mapping[str, Any]) -> Markup:
    """The text, escaped, with each entity the classifiers found marked where it appears."""
    values = _entity_values(entities)
    if not values or not text:
        return escape(text)
    pattern = re.compile("|".join(re.escape(v) for v in values))
    parts: list[str] = []
    last = 0
    for found in pattern.finditer(text):
        parts.append(str(escape(text[last : found.start()])))
        parts.append(f'<mark class="entity">{escape(found.group())}</mark>')
        last = found.end()
    parts.append(str(escape(text[last:])))
    return Markup("".join(parts))  # noqa: S704 - every piece was escaped above


# --------------------------------------------------------------------------- texts

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "inbox": "Boîte de réception", "search": "Rechercher", "logout": "Se déconnecter",
        "filters": "Filtres", "channel": "Canal", "status": "Statut", "intent": "Intention",
        "doc_type": "Type de document", "dossier": "Dossier", "any": "Tous",
        "needs_review": "À revoir", "unassigned": "Non attribués", "mine": "Les miens",
        "sla": "Délai dépassé", "apply": "Filtrer", "open": "À traiter", "done": "Traité",
        "received": "Reçu", "sender": "Expéditeur", "subject": "Objet",
        "assignee": "Attribué à", "none": "aucun", "previous": "Précédents",
        "next": "Suivants", "no_contacts": "Aucun contact.", "help": "Raccourcis clavier",
        "shortcuts": "j/k : descendre/monter · Entrée : ouvrir · a : m'attribuer · d : traité · "
        "? : aide",
        "text": "Texte", "html": "Message mis en forme", "documents": "Pièces jointes",
        "extracted": "Texte extrait", "confidence": "confiance", "rule": "Règle appliquée",
        "entities": "Entités", "attach": "Rattacher au dossier", "detach": "Détacher du dossier",
        "open_dossier": "Ouvrir un dossier", "claim_type": "Type de sinistre",
        "correct": "Corriger", "assign_me": "M'attribuer", "assign_to": "Attribuer à",
        "mark_done": "Marquer traité", "reopen": "Rouvrir", "reply": "Répondre",
        "purpose": "Modèle", "preview": "Aperçu", "send": "Envoyer", "replies": "Réponses",
        "approve": "Approuver", "reject": "Rejeter", "note": "Motif",
        "download": "Télécharger", "view": "Voir", "timeline": "Chronologie",
        "checklist": "Pièces attendues", "present": "reçue", "missing": "manquante",
        "coverage": "Couverture", "amounts": "Montants", "claimed": "Réclamé",
        "covered": "Couvert", "reasons": "Motifs", "invoices": "Factures prestataires",
        "gaps": "Écarts", "audit": "Historique", "close": "Clore le dossier",
        "beneficiary": "Bénéficiaire", "contract": "Contrat",
        "back": "Retour à la boîte de réception",
        "language": "Langue", "reason": "Motif", "total": "Total",
        "new_contacts": "Nouveaux contacts arrivés.", "actions": "Actions",
        "recipient": "Destinataire", "body": "Texte de la réponse", "held": "en attente",
        "filename": "Fichier", "type": "Type", "after_the_fact": "ouvert a posteriori",
        "event": "Événement", "reply_queued": "Réponse mise en file.",
    },
    "en": {
        "inbox": "Inbox", "search": "Search", "logout": "Sign out",
        "filters": "Filters", "channel": "Channel", "status": "Status", "intent": "Intent",
        "doc_type": "Document type", "dossier": "Dossier", "any": "Any",
        "needs_review": "Needs review", "unassigned": "Unassigned", "mine": "Mine",
        "sla": "SLA breached", "apply": "Filter", "open": "Open", "done": "Done",
        "received": "Received", "sender": "Sender", "subject": "Subject",
        "assignee": "Assignee", "none": "nobody", "previous": "Previous", "next": "Next",
        "no_contacts": "No contacts.", "help": "Keyboard shortcuts",
        "shortcuts": "j/k: down/up · Enter: open · a: assign to me · d: done · ?: help",
        "text": "Text", "html": "Formatted message", "documents": "Attachments",
        "extracted": "Extracted text", "confidence": "confidence", "rule": "Rule that fired",
        "entities": "Entities", "attach": "Attach to dossier", "detach": "Detach from dossier",
        "open_dossier": "Open a dossier", "claim_type": "Claim type",
        "correct": "Correct", "assign_me": "Assign to me", "assign_to": "Assign to",
        "mark_done": "Mark done", "reopen": "Reopen", "reply": "Reply",
        "purpose": "Template", "preview": "Preview", "send": "Send", "replies": "Replies",
        "approve": "Approve", "reject": "Reject", "note": "Reason",
        "download": "Download", "view": "View", "timeline": "Timeline",
        "checklist": "Expected documents", "present": "received", "missing": "missing",
        "coverage": "Coverage", "amounts": "Amounts", "claimed": "Claimed",
        "covered": "Covered", "reasons": "Reasons", "invoices": "Provider invoices",
        "gaps": "Gaps", "audit": "Audit trail", "close": "Close the dossier",
        "beneficiary": "Beneficiary", "contract": "Contract", "back": "Back to the inbox",
        "language": "Language", "reason": "Reason", "total": "Total",
        "new_contacts": "New contacts arrived.", "actions": "Actions",
        "recipient": "Recipient", "body": "Reply text", "held": "held",
        "filename": "File", "type": "Type", "after_the_fact": "opened after the fact",
        "event": "Event", "reply_queued": "Reply queued.",
    },
}  # fmt: skip


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    channel: str = ""
    status: str = ""
    intent: str = ""
    doc_type: str = ""
    dossier: str = ""
    review: bool = False
    unassigned: bool = False
    mine: bool = False
    sla: bool = False
    done: bool = False
    page: int = 1

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        def word(name: str, allowed: Iterable[str] | None = None) -> str:
            value = query.get(name, "").strip()
            if not value:
                return ""
            if allowed is not None and value not in allowed:
                raise actions.ActionError(f"{name} must be one of {sorted(allowed)}")
            if len(value) > 40 or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
                raise actions.ActionError(f"{name}: letters, digits, '_' and '-' only")
            return value

        def flag(name: str) -> bool:
            return query.get(name, "") in ("1", "true", "on", "yes")

        raw_page = query.get("page", "1")
        if not raw_page.isdigit() or not 1 <= int(raw_page) <= 100_000:
            raise actions.ActionError("page must be a whole number from 1")
        return cls(
            channel=word("channel", CHANNELS),
            status=word("status", STATUSES),
            intent=word("intent"),
            doc_type=word("doc_type"),
            dossier=word("dossier").upper(),
            review=flag("review"),
            unassigned=flag("unassigned"),
            mine=flag("mine"),
            sla=flag("sla"),
            done=flag("done"),
            page=int(raw_page),
        )

    def query(self, **changes: Any) -> str:
        values = {
            "channel": self.channel,
            "status": self.status,
            "intent": self.intent,
            "doc_type": self.doc_type,
            "dossier": self.dossier,
            "review": "1" if self.review else "",
            "unassigned": "1" if self.unassigned else "",
            "mine": "1" if self.mine else "",
            "sla": "1" if self.sla else "",
            "done": "1" if self.done else "",
            "page": str(self.page) if self.page > 1 else "",
        } | {k: str(v) for k, v in changes.items()}
        return urlencode({k: v for k, v in values.items() if v})


def _conditions(filters: Filters, me: int, sla_limit: datetime) -> list[Any]:
    done = ContactTriage.done_at.is_not(None)
    conditions: list[Any] = [Contact.direction == "inbound", done if filters.done else ~done]
    if filters.channel:
        conditions.append(Contact.channel == filters.channel)
    if filters.status:
        conditions.append(Contact.status == filters.status)
    if filters.intent:
        conditions.append(Contact.intent == filters.intent)
    if filters.doc_type:
        conditions.append(
            exists().where(Document.contact_id == Contact.id, Document.doc_type == filters.doc_type)
        )
    if filters.dossier == "NONE":
        conditions.append(Contact.dossier_id.is_(None))
    elif filters.dossier:
        conditions.append(Dossier.ref == filters.dossier)
    if filters.review:
        conditions.append(Contact.status == "needs_review")
    if filters.unassigned:
        conditions.append(Contact.assignee_id.is_(None))
    if filters.mine:
        conditions.append(Contact.assignee_id == me)
    if filters.sla:
        conditions.append(and_(~done, Contact.received_at < sla_limit))
    return conditions


async def inbox_rows(
    session: AsyncSession, filters: Filters, me: int, sla_limit: datetime
) -> tuple[list[Any], int, dict[str, int]]:
    """One page of contacts (newest first), how many match, and the inbox's counters."""
    joined = (
        select(Contact.id)
        .outerjoin(ContactTriage, ContactTriage.contact_id == Contact.id)
        .outerjoin(Dossier, Dossier.id == Contact.dossier_id)
        .where(*_conditions(filters, me, sla_limit))
    )
    matching = int(await session.scalar(select(func.count()).select_from(joined.subquery())) or 0)
    ids = (
        await session.scalars(
            joined.order_by(Contact.received_at.desc(), Contact.id.desc())
            .limit(PAGE_SIZE)
            .offset((filters.page - 1) * PAGE_SIZE)
        )
    ).all()
    contacts = {
        c.id: c
        for c in (
            await session.scalars(
                select(Contact)
                .where(Contact.id.in_(ids))
                .options(selectinload(Contact.dossier), selectinload(Contact.documents))
            )
        ).all()
    }
    wanted = [c.assignee_id for c in contacts.values() if c.assignee_id]
    found = await session.execute(select(User.id, User.username).where(User.id.in_(wanted)))
    assignees: dict[int, str] = {user_id: name for user_id, name in found}
    not_done = ContactTriage.done_at.is_(None)
    counts = (
        await session.execute(
            select(
                func.count().filter(not_done),
                func.count().filter(not_done, Contact.status == "needs_review"),
                func.count().filter(not_done, Contact.assignee_id.is_(None)),
                func.count().filter(not_done, Contact.assignee_id == me),
                func.count().filter(not_done, Contact.received_at < sla_limit),
            )
            .select_from(Contact)
            .outerjoin(ContactTriage, ContactTriage.contact_id == Contact.id)
            .where(Contact.direction == "inbound")
        )
    ).one()
    counters = dict(zip(("open", "needs_review", "unassigned", "mine", "sla"), counts, strict=True))
    rows = [
        {"contact": contacts[i], "assignee": assignees.get(contacts[i].assignee_id or 0)}
        for i in ids
        if i in contacts
    ]
    return rows, matching, {k: int(v or 0) for k, v in counters.items()}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def row_json(row: Mapping[str, Any], sla_limit: datetime) -> dict[str, Any]:
    contact: Contact = row["contact"]
    return {
        "id": contact.id,
        "channel": contact.channel,
        "sender": contact.sender,
        "sender_name": contact.sender_name,
        "subject": contact.subject,
        "received_at": _iso(contact.received_at),
        "status": contact.status,
        "intent": contact.intent,
        "intent_confidence": contact.intent_confidence,
        "dossier_ref": contact.dossier.ref if contact.dossier else None,
        "doc_types": sorted({d.doc_type for d in contact.documents if d.doc_type}),
        "assignee": row["assignee"],
        "sla_breached": contact.received_at < sla_limit,
    }


# --------------------------------------------------------------------------- the pages


Action = Callable[[AsyncSession, str, dict[str, Any]], Awaitable[dict[str, Any]]]


class Inbox:
    """The inbox's handlers, sharing the store, the workspace, the pages and the live feed."""

    def __init__(self, store: Store, settings: Settings, live: LiveFeed) -> None:
        self.store = store
        self.ws = actions.Workspace.from_settings(settings)
        self.live = live
        self.pages = web_pages(settings.templates_dir)
        self.pages.filters["sanitise"] = lambda html: Markup(sanitise(html or ""))  # noqa: S704
        self.pages.filters["highlight"] = highlight
        self.pages.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M") if v else ""
        self.pages.filters["pct"] = lambda v: "" if v is None else f"{100 * float(v):.0f} %"
        self.thumbnails = Path(store.blobs.root) / "thumbnails"

    def routes(self) -> list[web.AbstractRouteDef]:
        c = "/inbox/contacts/{id:\\d{1,9}}"
        api = "/api/inbox/contacts/{id:\\d{1,9}}"
        return [
            web.get("/inbox", self.inbox_page),
            web.get("/inbox/events", self.live.events),
            web.get(c, self.contact_page),
            web.get(c + "/reply", self.reply_page),
            web.get("/inbox/dossiers/{ref}", self.dossier_page),
            web.get("/inbox/documents/{id:\\d{1,9}}/file", self.document_file),
            web.get("/inbox/documents/{id:\\d{1,9}}/thumbnail", self.document_thumbnail),
            *[
                web.post(f"{c}/{name}", self._form(name))
                for name in ("attach", "detach", "open-dossier", "correct", "assign", "done")
            ],
            web.post(c + "/reply", self._form("reply")),
            web.post("/inbox/documents/{id:\\d{1,9}}/correct", self._form("correct-document")),
            web.post("/inbox/replies/{id:\\d{1,9}}/approve", self._form("approve")),
            web.post("/inbox/replies/{id:\\d{1,9}}/reject", self._form("reject")),
            web.post("/inbox/dossiers/{ref}/close", self._form("close")),
            web.get("/api/inbox", self.inbox_json),
            *[
                web.post(f"{api}/{name}", self._json(name))
                for name in ("attach", "detach", "open-dossier", "correct", "assign", "done")
            ],
            web.post(api + "/reply/preview", self.preview_json),
            web.post(api + "/reply", self._json("reply")),
            web.post("/api/inbox/documents/{id:\\d{1,9}}/correct", self._json("correct-document")),
            web.post("/api/inbox/replies/{id:\\d{1,9}}/approve", self._json("approve")),
            web.post("/api/inbox/replies/{id:\\d{1,9}}/reject", self._json("reject")),
            web.post("/api/inbox/dossiers/{ref}/close", self._json("close")),
        ]

    def install(self, app: web.Application) -> None:
        app.router.add_routes(self.routes())
        app.cleanup_ctx.append(self.live.cleanup_ctx)
        app.on_shutdown.append(self.live.on_shutdown)
        app.on_response_prepare.append(_security_headers)

    # ------------------------------------------------------------------ rendering

    def _render(self, request: web.Request, name: str, **values: Any) -> web.Response:
        lang = language(request)
        who = identity(request)
        body = self.pages.get_template(name).render(
            lang=lang,
            t=TEXTS[lang],
            me=who,
            csrf_token=who.csrf_token or "",
            **values,
        )
        return web.Response(text=body, content_type="text/html")

    async def inbox_page(self, request: web.Request) -> web.Response:
        try:
            filters = Filters.parse(request.query)
        except actions.ActionError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        sla_limit = utcnow() - self.ws.sla
        async with self.store.sessions() as session:
            rows, matching, counters = await inbox_rows(
                session, filters, identity(request).user_id, sla_limit
            )
        name = "inbox_rows.html" if request.headers.get("HX-Request") else "inbox.html"
        return self._render(
            request,
            name,
            rows=rows,
            matching=matching,
            counters=counters,
            filters=filters,
            sla_limit=sla_limit,
            pages=max(1, -(-matching // PAGE_SIZE)),
            channels=CHANNELS,
            statuses=STATUSES,
        )

    async def inbox_json(self, request: web.Request) -> web.Response:
        try:
            filters = Filters.parse(request.query)
        except actions.ActionError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        sla_limit = utcnow() - self.ws.sla
        async with self.store.sessions() as session:
            rows, matching, counters = await inbox_rows(
                session, filters, identity(request).user_id, sla_limit
            )
        return web.json_response(
            {
                "contacts": [row_json(row, sla_limit) for row in rows],
                "matching": matching,
                "page": filters.page,
                "page_size": PAGE_SIZE,
                "counters": counters,
            }
        )

    async def contact_page(self, request: web.Request) -> web.Response:
        contact_id = int(request.match_info["id"])
        async with self.store.sessions() as session:
            try:
                contact = await actions.load_contact(session, contact_id)
            except actions.NotFound as exc:
                raise web.HTTPNotFound(text=str(exc)) from None
            triage = await session.get(ContactTriage, contact_id)
            assignee = None
            if contact.assignee_id:
                assignee = await session.scalar(
                    select(User.username).where(User.id == contact.assignee_id)
                )
            users = (
                await session.scalars(
                    select(User.username).where(User.active).order_by(User.username)
                )
            ).all()
            audit = await _audit_of(session, [contact], None)
        return self._render(
            request,
            "contact.html",
            contact=contact,
            done=triage is not None and triage.done_at is not None,
            assignee=assignee,
            users=users,
            audit=audit,
            claim_types=sorted(self.ws.rules.claim_types),
            purposes=actions.REPLY_PURPOSES,
            viewable=_viewable,
            thumbnailable=_thumbnailable,
            notice=request.query.get("notice", ""),
        )

    async def reply_page(self, request: web.Request) -> web.Response:
        contact_id = int(request.match_info["id"])
        purpose = request.query.get("purpose", actions.REPLY_PURPOSES[0])
        async with self.store.sessions() as session:
            try:
                draft = await actions.preview_reply(session, self.ws, contact_id, purpose)
            except actions.ActionError as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
        return self._render(
            request,
            "reply.html",
            contact_id=contact_id,
            draft=draft,
            purposes=actions.REPLY_PURPOSES,
            key=actions.new_reply_key(),
        )

    async def dossier_page(self, request: web.Request) -> web.Response:
        async with self.store.sessions() as session:
            try:
                dossier = await actions.load_dossier(session, request.match_info["ref"])
            except actions.NotFound as exc:
                raise web.HTTPNotFound(text=str(exc)) from None
            contacts = (
                await session.scalars(
                    select(Contact)
                    .where(
                        or_(
                            Contact.dossier_id == dossier.id,
                            Contact.id.in_(
                                select(OutboundMessage.contact_id).where(
                                    OutboundMessage.dossier_id == dossier.id
                                )
                            ),
                        )
                    )
                    .options(selectinload(Contact.documents), selectinload(Contact.replies))
                    .order_by(Contact.received_at)
                )
            ).all()
            replies = (
                await session.scalars(
                    select(OutboundMessage)
                    .where(OutboundMessage.dossier_id == dossier.id)
                    .order_by(OutboundMessage.id)
                )
            ).all()
            invoices = (
                await session.scalars(
                    select(ProviderInvoice)
                    .where(ProviderInvoice.dossier_id == dossier.id)
                    .order_by(ProviderInvoice.id)
                )
            ).all()
            audit = await _audit_of(session, list(contacts), dossier.ref)
        timeline: list[tuple[datetime, str, Any]] = [
            (c.received_at, "contact", c) for c in contacts if c.dossier_id == dossier.id
        ]
        timeline += [(r.sent_at or r.created_at, "reply", r) for r in replies]
        timeline.sort(key=lambda item: item[0])
        return self._render(
            request,
            "dossier.html",
            dossier=dossier,
            timeline=timeline,
            invoices=invoices,
            audit=audit,
            documents=[d for c in contacts for d in c.documents if d.dossier_id == dossier.id],
        )

    # ------------------------------------------------------------------ documents

    async def _document(self, request: web.Request) -> Document:
        async with self.store.sessions() as session:
            document = await session.get(Document, int(request.match_info["id"]))
        if document is None:
            raise web.HTTPNotFound(text="no such document")
        return document

    async def document_file(self, request: web.Request) -> web.Response:
        document = await self._document(request)
        try:
            content = await asyncio.to_thread(self.store.blobs.get, document.sha256)
        except (FileNotFoundError, ValueError):
            raise web.HTTPGone(text="the document's content is no longer stored") from None
        inline = request.query.get("inline") == "1" and _viewable(document)
        kind = document.sniffed_type if inline and document.sniffed_type else None
        disposition = "inline" if inline else "attachment"
        return web.Response(
            body=content,
            content_type=kind or "application/octet-stream",
            headers={
                "Content-Disposition": f"{disposition}; filename*=UTF-8''"
                + quote(document.filename or f"document-{document.id}", safe=""),
                # A document is someone else's file: it gets no script, even opened alone.
                "Content-Security-Policy": "default-src 'none'; img-src 'self'; "
                "style-src 'unsafe-inline'; sandbox",
                "Cache-Control": "private, no-store",
            },
        )

    async def document_thumbnail(self, request: web.Request) -> web.Response:
        document = await self._document(request)
        if not _thumbnailable(document):
            raise web.HTTPNotFound(text="no thumbnail for this document")
        try:
            png = await asyncio.to_thread(self._thumbnail, document)
        except Exception:
            raise web.HTTPNotFound(text="no thumbnail could be made") from None
        return web.Response(
            body=png, content_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
        )

    def _thumbnail(self, document: Document) -> bytes:
        cached = self.thumbnails / f"{document.sha256}.png"
        if cached.exists():
            return cached.read_bytes()
        from PIL import Image

        content = self.store.blobs.get(document.sha256)
        if document.sniffed_type == "application/pdf":
            import pypdfium2

            pdf = pypdfium2.PdfDocument(content)
            try:
                page = pdf[0]
                scale = min(THUMBNAIL_SIZE) / max(page.get_size())
                image = page.render(scale=max(scale, 0.05)).to_pil()
                page.close()
            finally:
                pdf.close()
        else:
            with Image.open(io.BytesIO(content)) as opened:
                opened.thumbnail(THUMBNAIL_SIZE)
                image = opened.convert("RGB")
        image.thumbnail(THUMBNAIL_SIZE)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        png = buffer.getvalue()
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_suffix(".tmp")
        temporary.write_bytes(png)
        temporary.replace(cached)
        return png

    # ------------------------------------------------------------------ actions

    async def _run(self, request: web.Request, name: str, values: dict[str, Any]) -> dict[str, Any]:
        actor = identity(request).username
        target = request.match_info.get("id") or request.match_info.get("ref", "")
        async with self.store.sessions() as session, session.begin():
            result = await self._dispatch(session, name, target, actor, values, request)
        self.live.publish("change", {"action": name, "target": target})
        self.live.poke()
        return result

    async def _dispatch(
        self,
        session: AsyncSession,
        name: str,
        target: str,
        actor: str,
        values: dict[str, Any],
        request: web.Request,
    ) -> dict[str, Any]:
        ws = self.ws

        def text(key: str, limit: int = 200) -> str:
            value = values.get(key)
            if value is None:
                return ""
            if not isinstance(value, str | int | float):
                raise actions.ActionError(f"{key} must be text")
            return str(value).strip()[:limit]

        if name == "attach":
            if not text("dossier"):
                raise actions.ActionError("dossier: a reference is needed")
            return await actions.attach(session, ws, int(target), text("dossier"), actor)
        if name == "detach":
            return await actions.detach(session, ws, int(target), actor)
        if name == "open-dossier":
            return await actions.open_dossier(session, ws, int(target), text("claim_type"), actor)
        if name == "correct":
            return await actions.correct_intent(
                session,
                ws,
                int(target),
                actor,
                intent=text("intent", 30) or None,
                entities=_entities(values.get("entities")),
            )
        if name == "correct-document":
            return await actions.correct_document_type(
                session,
                ws,
                int(target),
                actor,
                doc_type=text("doc_type", 40) or None,
                entities=_entities(values.get("entities")),
            )
        if name == "assign":
            user = text("user", 100)
            if user == "me":
                user = actor
            return await actions.assign(session, int(target), user or None, actor)
        if name == "done":
            done = values.get("done", True) not in (False, "0", "false", "")
            return await actions.mark_done(session, int(target), actor, done=done)
        if name == "reply":
            body = values.get("body_text")
            return await actions.send_reply(
                session,
                ws,
                int(target),
                text("purpose", 30),
                actor,
                body_text=body if isinstance(body, str) else None,
                subject=text("subject", 500) or None,
                key=text("key", 40) or None,
            )
        if name in ("approve", "reject"):
            return await actions.decide_reply(
                session, int(target), actor, approved=name == "approve", note=text("note", 1000)
            )
        if name == "close":
            return await actions.close(session, target, actor)
        raise actions.NotFound(f"no action {name}")

    def _json(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            values = await _json_body(request)
            try:
                result = await self._run(request, name, values)
            except actions.ActionError as exc:
                return web.json_response({"error": str(exc)}, status=exc.status)
            return web.json_response(result)

        return handler

    async def preview_json(self, request: web.Request) -> web.Response:
        values = await _json_body(request)
        purpose = str(values.get("purpose") or actions.REPLY_PURPOSES[0])
        async with self.store.sessions() as session:
            try:
                draft = await actions.preview_reply(
                    session, self.ws, int(request.match_info["id"]), purpose
                )
            except actions.ActionError as exc:
                return web.json_response({"error": str(exc)}, status=exc.status)
        return web.json_response(draft.as_json() | {"key": actions.new_reply_key()})

    def _form(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            form = await request.post()
            values = {k: v for k, v in form.items() if isinstance(v, str)}
            try:
                result = await self._run(request, name, values)
            except actions.ActionError as exc:
                raise _form_error(exc) from None
            if request.headers.get("HX-Request"):
                return web.json_response(result)
            raise web.HTTPSeeOther(self._back(name, request, result))

        return handler

    @staticmethod
    def _back(name: str, request: web.Request, result: dict[str, Any]) -> str:
        if name == "close":
            return f"/inbox/dossiers/{quote(str(result['dossier']))}"
        contact = result.get("contact") or request.match_info.get("id")
        if name == "reply":
            return f"/inbox/contacts/{contact}?notice=reply_queued"
        return f"/inbox/contacts/{contact}" if contact else "/inbox"


def _form_error(exc: actions.ActionError) -> web.HTTPException:
    kind: type[web.HTTPException] = {
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
    }.get(exc.status, web.HTTPBadRequest)
    return kind(text=str(exc))


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "body must be JSON"}', content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "body must be a JSON object"}', content_type="application/json"
        )
    return body


def _entities(raw: Any) -> dict[str, str] | None:
    """Entities as a JSON object, or as form lines ``name = value``."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, dict):
        return {str(k)[:40]: str(v)[:500] for k, v in raw.items()}
    if isinstance(raw, str):
        pairs = {}
        for line in raw.splitlines():
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise actions.ActionError(f"entities: 'name = value' per line, got {line!r}")
            pairs[name.strip()[:40]] = value.strip()[:500]
        return pairs
    raise actions.ActionError("entities must be an object of names and values")


def _viewable(document: Document) -> bool:
    return document.status in READ_OK and (document.sniffed_type or "") in VIEWABLE


def _thumbnailable(document: Document) -> bool:
    return _viewable(document) and document.size <= THUMBNAIL_MAX_BYTES


async def _audit_of(
    session: AsyncSession, contacts: list[Contact], dossier_ref: str | None
) -> list[AuditEvent]:
    contact_ids = [str(c.id) for c in contacts]
    reply_ids = [str(r.id) for c in contacts for r in c.replies]
    document_ids = [str(d.id) for c in contacts for d in c.documents]
    wanted = [
        and_(AuditEvent.object_type == "contact", AuditEvent.object_id.in_(contact_ids)),
        and_(AuditEvent.object_type == "outbound_message", AuditEvent.object_id.in_(reply_ids)),
        and_(AuditEvent.object_type == "document", AuditEvent.object_id.in_(document_ids)),
    ]
    if dossier_ref:
        wanted.append(
            and_(AuditEvent.object_type == "dossier", AuditEvent.object_id == dossier_ref)
        )
    return list(
        (
            await session.scalars(
                select(AuditEvent).where(or_(*wanted)).order_by(AuditEvent.at, AuditEvent.id)
            )
        ).all()
    )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(("/inbox", "/login")) and "Content-Security-Policy" not in (
        response.headers
    ):
        response.headers["Content-Security-Policy"] = CSP
    if request.path.startswith(("/inbox", "/login", "/api/inbox")):
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"


def install(
    app: web.Application, store: Store, settings: Settings, live: LiveFeed | None = None
) -> Inbox:
    """Add the inbox's routes, live feed and security headers to ``app``."""
    inbox = Inbox(store, settings, live or LiveFeed(store))
    inbox.install(app)
    return inbox
