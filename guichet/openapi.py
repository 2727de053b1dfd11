"""The OpenAPI 3 description of the JSON API, served at /api/openapi.json and fuzzed in tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web

CHANNELS = ["email", "sms", "chat", "edi", "ged"]
CONTACT_STATUSES = ["received", "processing", "processed", "needs_review", "failed"]
OUTBOX_STATUSES = [
    "held",
    "queued",
    "sending",
    "sent",
    "failed",
    "uncertain",
    "cancelled",
    "rejected",
]

_ID = {"type": "integer", "minimum": 1, "maximum": 999_999_999}
_OBJECT = {"type": "object", "additionalProperties": True}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema} | (
        {"description": description} if description else {}
    )


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


PAGE = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
    _query("offset", {"type": "integer", "minimum": 0}),
]
REF = _path("ref", {"type": "string", "maxLength": 40})
ID = _path("id", _ID)
ANSWERS = {
    "200": _json(_OBJECT, "the result"),
    "400": _json(_ERROR, "a parameter or the body is wrong, with the reason"),
    "401": _json(_ERROR, "no valid session or token"),
}
NOT_FOUND = {"404": {"description": "no such object"}}
CONFLICT = {"409": {"description": "the object is not in a state that allows this"}}


def _get(summary: str, parameters: list[dict[str, Any]], *extra: dict[str, Any]) -> dict[str, Any]:
    responses = dict(ANSWERS)
    for more in extra:
        responses |= more
    return {"get": {"summary": summary, "parameters": parameters, "responses": responses}}


def _post(
    summary: str,
    parameters: list[dict[str, Any]],
    body: dict[str, Any] | None = None,
    *extra: dict[str, Any],
) -> dict[str, Any]:
    responses = dict(ANSWERS) | {"403": {"description": "this needs another role"}}
    for more in extra:
        responses |= more
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": parameters,
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body}},
        }
    return {"post": operation}


def _body(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False}


_TEXT = {"type": "string", "maxLength": 200}
_ENTITIES = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 200}}
_INBOX_FILTERS = [
    _query("channel", {"type": "string", "enum": CHANNELS}),
    _query("status", {"type": "string", "enum": CONTACT_STATUSES}),
    _query("intent", {"type": "string", "maxLength": 30}),
    _query("doc_type", {"type": "string", "maxLength": 40}),
    _query("dossier", {"type": "string", "maxLength": 40}, "a reference, or none"),
    _query("review", {"type": "string", "enum": ["1", "0"]}),
    _query("unassigned", {"type": "string", "enum": ["1", "0"]}),
    _query("mine", {"type": "string", "enum": ["1", "0"]}),
    _query("sla", {"type": "string", "enum": ["1", "0"]}),
    _query("done", {"type": "string", "enum": ["1", "0"]}),
    _query("page", {"type": "integer", "minimum": 1, "maximum": 100_000}),
]
_DATE = {"type": "string", "format": "date"}


def spec() -> dict[str, Any]:
    contact = "/api/inbox/contacts/{id}"
    paths: dict[str, Any] = {
        "/healthz": _get("Whether the service can store (public)", []),
        "/api/contacts": _get(
            "Contacts, newest first",
            [*PAGE, _query("status", {"type": "string", "enum": CONTACT_STATUSES})],
        ),
        "/api/contacts/{id}": _get(
            "One contact with its documents, replies and defects", [ID], NOT_FOUND
        ),
        "/api/dossiers/{ref}": _get(
            "A dossier: checklist, missing documents, coverage, contacts, audit trail",
            [REF],
            NOT_FOUND,
        ),
        "/api/outbox": _get(
            "Outbound messages",
            [*PAGE, _query("status", {"type": "string", "enum": OUTBOX_STATUSES})],
        ),
        "/api/outbox/{id}/approve": _post(
            "Let a held reply leave", [ID], _body(note=_TEXT), NOT_FOUND, CONFLICT
        ),
        "/api/outbox/{id}/reject": _post(
            "Stop a held reply for good", [ID], _body(note=_TEXT), NOT_FOUND, CONFLICT
        ),
        "/api/invoices": _get(
            "Provider invoices with their gaps",
            [
                _query("status", {"type": "string", "maxLength": 20}),
                _query("dossier", {"type": "string", "maxLength": 40}),
            ],
        ),
        "/api/invoices/{id}": _get("One provider invoice", [ID], NOT_FOUND),
        "/api/search": _get(
            "Full-text search over contacts and their documents",
            [
                _query("q", {"type": "string", "maxLength": 500}),
                _query("channel", {"type": "string", "enum": CHANNELS}),
                _query("status", {"type": "string", "enum": CONTACT_STATUSES}),
                _query("from", _DATE),
                _query("to", _DATE),
                *PAGE,
            ],
        ),
        "/api/reports": _get(
            "Activity report over a period (superviseur)",
            [_query("from", _DATE), _query("to", _DATE)],
            {"403": {"description": "needs the superviseur role"}},
        ),
        "/api/inbox": _get("The inbox list with its counters", _INBOX_FILTERS),
        f"{contact}/attach": _post(
            "Attach the contact to a dossier",
            [ID],
            _body(dossier={"type": "string", "maxLength": 40}),
            NOT_FOUND,
            CONFLICT,
        ),
        f"{contact}/detach": _post("Detach the contact from its dossier", [ID], None, NOT_FOUND),
        f"{contact}/open-dossier": _post(
            "Open a dossier after the fact for the sender",
            [ID],
            _body(claim_type={"type": "string", "maxLength": 50}),
            NOT_FOUND,
            CONFLICT,
        ),
        f"{contact}/correct": _post(
            "Correct the intent or entities (kept as training data)",
            [ID],
            _body(intent={"type": "string", "maxLength": 30}, entities=_ENTITIES),
            NOT_FOUND,
        ),
        f"{contact}/assign": _post(
            "Assign to a user (or `me`), or unassign with an empty user",
            [ID],
            _body(user={"type": "string", "maxLength": 100}),
            NOT_FOUND,
        ),
        f"{contact}/done": _post(
            "Mark done (or not done)", [ID], _body(done={"type": "boolean"}), NOT_FOUND
        ),
        f"{contact}/reply/preview": _post(
            "Render a reply for the contact's channel and language",
            [ID],
            _body(purpose={"type": "string", "maxLength": 30}),
            NOT_FOUND,
        ),
        f"{contact}/reply": _post(
            "Queue a reply written or edited by the user",
            [ID],
            _body(
                purpose={"type": "string", "maxLength": 30},
                body_text={"type": "string", "maxLength": 20_000},
                subject={"type": "string", "maxLength": 500},
                key={"type": "string", "maxLength": 40},
            ),
            NOT_FOUND,
            CONFLICT,
        ),
        "/api/inbox/documents/{id}/correct": _post(
            "Correct a document's type or entities (kept as training data)",
            [ID],
            _body(doc_type={"type": "string", "maxLength": 40}, entities=_ENTITIES),
            NOT_FOUND,
        ),
        "/api/inbox/replies/{id}/approve": _post(
            "Approve a held refusal or attestation", [ID], None, NOT_FOUND, CONFLICT
        ),
        "/api/inbox/replies/{id}/reject": _post(
            "Reject a held refusal or attestation",
            [ID],
            _body(note={"type": "string", "maxLength": 1000}),
            NOT_FOUND,
            CONFLICT,
        ),
        "/api/inbox/dossiers/{ref}/close": _post(
            "Close a dossier (exports it to the GED)", [REF], None, NOT_FOUND
        ),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Guichet",
            "version": "1",
            "description": "Every route but /healthz needs a session cookie (with its CSRF token "
            "on changes) or `Authorization: Bearer TOKEN` (`guichet token create USER`).",
        },
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "guichet_session"},
            }
        },
        "security": [{"token": []}, {"session": []}],
        "paths": paths,
    }


async def serve_spec(request: web.Request) -> web.Response:
    return web.json_response(spec())


def routes() -> list[web.AbstractRouteDef]:
    return [web.get("/api/openapi.json", serve_spec)]
