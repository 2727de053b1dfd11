"""The JSON API: contacts and dossiers as the gestionnaire's tools and integrations see them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import selectinload

from guichet import inbox, openapi
from guichet.access import Access, identity
from guichet.live import LiveFeed
from guichet.reports import routes as report_routes
from guichet.search import routes as search_routes
from guichet.settings import Settings
from models.store import Store
from models.tables import AuditEvent, Contact, Dossier, OutboundMessage
from responders.outbox import NotHeld, approve, reject

STORE = web.AppKey("store", Store)

CONTACT_STATUSES = frozenset({"received", "processing", "processed", "needs_review", "failed"})
MAX_LIMIT = 200
OUTBOX_STATUSES = frozenset(
    {"held", "queued", "sending", "sent", "failed", "uncertain", "cancelled", "rejected"}
)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def document_json(document: Any) -> dict[str, Any]:
    return {
        "id": document.id,
        "filename": document.filename,
        "declared_type": document.declared_type,
        "sniffed_type": document.sniffed_type,
        "type_mismatch": document.type_mismatch,
        "size": document.size,
        "sha256": document.sha256,
        "pages": document.pages,
        "text_source": document.text_source,
        "doc_type": document.doc_type,
        "doc_type_confidence": document.doc_type_confidence,
        "language": document.language,
        "entities": document.entities,
        "parent_id": document.parent_id,
        "depth": document.depth,
        "status": document.status,
        "reason": document.reason,
        "contact_id": document.contact_id,
    }


def _money(value: Any) -> str | None:
    return None if value is None else f"{value:.2f}"


def audit_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": _iso(event.at),
        "actor": event.actor,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "before": event.before,
        "after": event.after,
        "note": event.note,
    }


def reply_json(reply: OutboundMessage) -> dict[str, Any]:
    return {
        "id": reply.id,
        "purpose": reply.purpose,
        "status": reply.status,
        "status_reason": reply.status_reason,
        "channel": reply.channel,
        "recipient": reply.recipient,
        "subject": reply.subject,
        "language": reply.language,
        "message_id": reply.message_id,
        "send_after": _iso(reply.send_after),
        "sent_at": _iso(reply.sent_at),
    }


def contact_json(contact: Contact, *, full: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": contact.id,
        "channel": contact.channel,
        "direction": contact.direction,
        "status": contact.status,
        "status_reason": contact.status_reason,
        "intent": contact.intent,
        "intent_confidence": contact.intent_confidence,
        "entities": contact.entities,
        "language": contact.language,
        "dossier_ref": contact.dossier.ref if contact.dossier else None,
        "sender": contact.sender,
        "sender_name": contact.sender_name,
        "subject": contact.subject,
        "received_at": _iso(contact.received_at),
        "documents": [document_json(d) for d in contact.documents],
        "replies": [reply_json(r) for r in contact.replies],
    }
    if full:
        data |= {
            "step": contact.step,
            "match_rule": contact.match_rule,
            "recipients": contact.recipients,
            "message_id": contact.message_id,
            "in_reply_to": contact.in_reply_to,
            "references": contact.references,
            "sent_at": _iso(contact.sent_at),
            "text": contact.text,
            "automatic_reason": contact.automatic_reason,
            "defects": contact.defects,
            "duplicate_count": contact.duplicate_count,
            "raw_sha256": contact.raw_sha256,
        }
    return data


def _contact_query() -> Any:
    return select(Contact).options(
        selectinload(Contact.documents),
        selectinload(Contact.replies),
        selectinload(Contact.dossier),
    )


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise _bad_request(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise _bad_request(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=web.json_response({"error": message}).text, content_type="application/json"
    )


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(
        text=web.json_response({"error": message}).text, content_type="application/json"
    )


async def list_contacts(request: web.Request) -> web.Response:
    limit = _int_param(request, "limit", 50, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    query = _contact_query().order_by(Contact.received_at.desc(), Contact.id.desc())
    status = request.query.get("status")
    if status is not None:
        if status not in CONTACT_STATUSES:
            raise _bad_request(f"status must be one of {sorted(CONTACT_STATUSES)}")
        query = query.where(Contact.status == status)
    async with request.app[STORE].sessions() as session:
        contacts = (await session.scalars(query.limit(limit).offset(offset))).all()
        return web.json_response(
            {
                "contacts": [contact_json(c, full=False) for c in contacts],
                "limit": limit,
                "offset": offset,
            }
        )


async def get_contact(request: web.Request) -> web.Response:
    raw_id = request.match_info["id"]
    # Ids are 32-bit integers on PostgreSQL: a longer number names nothing (and must not 500).
    if not raw_id.isdigit() or len(raw_id) > 9:
        raise _not_found(f"no contact {raw_id}")
    async with request.app[STORE].sessions() as session:
        contact = await session.scalar(_contact_query().where(Contact.id == int(raw_id)))
        if contact is None:
            raise _not_found(f"no contact {raw_id}")
        return web.json_response(contact_json(contact, full=True))


async def get_dossier(request: web.Request) -> web.Response:
    ref = request.match_info["ref"].upper()
    async with request.app[STORE].sessions() as session:
        dossier = await session.scalar(
            select(Dossier)
            .where(Dossier.ref == ref)
            .options(selectinload(Dossier.beneficiary), selectinload(Dossier.contract))
        )
        if dossier is None:
            raise _not_found(f"no dossier {ref}")
        contacts = (
            await session.scalars(
                _contact_query()
                .where(Contact.dossier_id == dossier.id)
                .order_by(Contact.received_at)
            )
        ).all()
        beneficiary = dossier.beneficiary
        contact_ids = [str(c.id) for c in contacts]
        audit_events = (
            await session.scalars(
                select(AuditEvent)
                .where(
                    or_(
                        and_(
                            AuditEvent.object_type == "dossier",
                            AuditEvent.object_id == dossier.ref,
                        ),
                        and_(
                            AuditEvent.object_type == "contact",
                            AuditEvent.object_id.in_(contact_ids),
                        ),
                    )
                )
                .order_by(AuditEvent.at, AuditEvent.id)
            )
        ).all()
        return web.json_response(
            {
                "ref": dossier.ref,
                "status": dossier.status,
                "claim_type": dossier.claim_type,
                "event_date": _iso(dossier.event_date),
                "event_place": dossier.event_place,
                "opened_after_the_fact": dossier.opened_after_the_fact,
                "contract": dossier.contract.number if dossier.contract else None,
                "contract_no": dossier.contract.number if dossier.contract else None,
                "claim_type_confidence": dossier.claim_type_confidence,
                "cause": dossier.cause,
                "summary": dossier.summary,
                "checklist": dossier.checklist,
                "missing": dossier.missing,
                "coverage": dossier.coverage,
                "amount_claimed": _money(dossier.amount_claimed),
                "amount_covered": _money(dossier.amount_covered),
                "currency": dossier.currency,
                "audit": [audit_json(event) for event in audit_events],
                "beneficiary": (
                    {
                        "name": beneficiary.name,
                        "emails": beneficiary.emails,
                        "phones": beneficiary.phones,
                    }
                    if beneficiary
                    else None
                ),
                "contacts": [contact_json(c, full=False) for c in contacts],
                "documents": [
                    document_json(d)
                    for c in contacts
                    for d in c.documents
                    if d.dossier_id == dossier.id
                ],
            }
        )


def outbox_json(message: OutboundMessage, dossier_ref: str | None) -> dict[str, Any]:
    return {
        "id": message.id,
        "purpose": message.purpose,
        "channel": message.channel,
        "recipient": message.recipient,
        "dossier_ref": dossier_ref,
        "status": message.status,
        "reason": message.status_reason,
        "subject": message.subject,
        "send_after": _iso(message.send_after),
        "decided_by": message.decided_by,
        "decided_at": _iso(message.decided_at),
        "created_at": _iso(message.created_at),
    }


async def list_outbox(request: web.Request) -> web.Response:
    limit = _int_param(request, "limit", 50, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    query = (
        select(OutboundMessage, Dossier.ref)
        .outerjoin(Dossier, Dossier.id == OutboundMessage.dossier_id)
        .order_by(OutboundMessage.id.desc())
    )
    status = request.query.get("status")
    if status is not None:
        if status not in OUTBOX_STATUSES:
            raise _bad_request(f"status must be one of {sorted(OUTBOX_STATUSES)}")
        query = query.where(OutboundMessage.status == status)
    async with request.app[STORE].sessions() as session:
        rows = (await session.execute(query.limit(limit).offset(offset))).all()
        return web.json_response(
            {
                "messages": [outbox_json(message, ref) for message, ref in rows],
                "limit": limit,
                "offset": offset,
            }
        )


async def _decide_reply(request: web.Request, approved: bool) -> web.Response:
    raw_id = request.match_info["id"]
    # Ids are 32-bit integers on PostgreSQL: a longer number names nothing (and must not 500).
    if not raw_id.isdigit() or len(raw_id) > 9:
        raise _not_found(f"no outbound message {raw_id}")
    body: dict[str, Any] = {}
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise _bad_request("body must be JSON") from None
        if not isinstance(body, dict):
            raise _bad_request("body must be a JSON object")
    # The decision is the caller's: the name comes from their session or token, never the body.
    by = identity(request).username
    async with request.app[STORE].sessions() as session, session.begin():
        message = await session.scalar(
            select(OutboundMessage).where(OutboundMessage.id == int(raw_id)).with_for_update()
        )
        if message is None:
            raise _not_found(f"no outbound message {raw_id}")
        try:
            if approved:
                await approve(session, message, by)
            else:
                await reject(session, message, by, str(body.get("note") or "")[:1000])
        except NotHeld as exc:
            raise web.HTTPConflict(
                text=web.json_response({"error": str(exc)}).text, content_type="application/json"
            ) from None
        ref = None
        if message.dossier_id is not None:
            ref = await session.scalar(select(Dossier.ref).where(Dossier.id == message.dossier_id))
        return web.json_response(outbox_json(message, ref))


async def approve_reply(request: web.Request) -> web.Response:
    return await _decide_reply(request, approved=True)


async def reject_reply(request: web.Request) -> web.Response:
    return await _decide_reply(request, approved=False)


async def healthz(request: web.Request) -> web.Response:
    """Up means able to store: the database answers a query."""
    try:
        async with request.app[STORE].sessions() as session:
            await session.execute(select(1))
    except Exception as exc:
        return web.json_response({"status": "unavailable", "reason": str(exc)[:300]}, status=503)
    return web.json_response({"status": "ok"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/contacts", list_contacts)
    app.router.add_get("/api/contacts/{id}", get_contact)
    app.router.add_get("/api/dossiers/{ref}", get_dossier)
    app.router.add_get("/api/outbox", list_outbox)
    app.router.add_post("/api/outbox/{id}/approve", approve_reply)
    app.router.add_post("/api/outbox/{id}/reject", reject_reply)


def create_app(
    store: Store,
    channel_routes: Sequence[web.AbstractRouteDef] = (),
    access: Access | None = None,
    settings: Settings | None = None,
    live: LiveFeed | None = None,
) -> web.Application:
    app = web.Application(middlewares=[access.middleware] if access else [])
    app[STORE] = store
    add_routes(app)
    app.router.add_routes(openapi.routes())
    if access is not None:
        # The inbox's pages and actions act as the signed-in person: only behind the door.
        inbox.install(app, store, settings or Settings(), live)
        # Search and reports read every contact: like the inbox, only behind the door.
        templates = (settings or Settings()).templates_dir
        app.router.add_routes([*search_routes(store, templates), *report_routes(store, templates)])
    app.router.add_routes(channel_routes)
    if access is not None:
        app.router.add_routes(access.routes())
    return app
