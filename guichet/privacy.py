"""Personal data: everything held about one person (GDPR access) and the retention purge.

Which table holds what is declared here, table by table (``EXPORTED``, ``NOT_PERSONAL``,
``REACHED_ELSEWHERE``, ``PURGE_LINKS``); the tests compare these lists with the models, so a
new table or a new link to a contact or dossier cannot be forgotten by the export or by the
purge.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import tempfile
import unicodedata
import zipfile
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import phonenumbers
from sqlalchemy import String, and_, cast, delete, false, func, or_, select, true, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from intake.dossiers import beneficiaries_for
from models.blobs import BlobStore
from models.clock import utcnow
from models.store import Store, audit
from models.tables import (
    AuditEvent,
    Base,
    ChatConversation,
    ChatReply,
    Contact,
    ContactTriage,
    Contract,
    Delivery,
    Document,
    Dossier,
    EdiInterchange,
    Job,
    OutboundMessage,
    ProviderInvoice,
    SmsOptOut,
    TrainingExample,
    UTCDateTime,
)

log = logging.getLogger(__name__)

#: The back office's country: a national number is a French one (as intake reads senders).
DEFAULT_REGION = "FR"
EXPORT_FORMAT = "guichet-subject-export/1"
CLOSED = "closed"
#: Outbound attachments (attestations) are blob references in this header of the reply.
ATTACHMENTS_HEADER = "X-Guichet-Attachments"

#: Tables a subject export reads, and the key of their rows in ``subject.json``.
EXPORTED: dict[str, str] = {
    "beneficiary": "beneficiaries",
    "contract": "contracts",
    "dossier": "dossiers",
    "contact": "contacts",
    "delivery": "deliveries",
    "document": "documents",
    "outbound_message": "outbound_messages",
    "sms_opt_out": "sms_opt_outs",
    "chat_conversation": "chat_conversations",
    "chat_reply": "chat_replies",
    "provider_invoice": "provider_invoices",
    "training_example": "training_examples",
    "audit_event": "audit_events",
}

#: Tables that hold nothing about the people the back office serves, and why.
NOT_PERSONAL: dict[str, str] = {
    "guarantee": "the terms of a contract's product; the contract itself is exported",
    "job": "work queue entries naming rows by id; purged with their dossier",
    "user_account": "gestionnaires' accounts, not the people the back office serves",
    "web_session": "gestionnaires' logins",
    "api_token": "integrations' tokens",
    "imap_folder_state": "how far each mailbox has been read",
    "imap_refused_mail": "mails left on the IMAP server, by UID only; nothing of them is kept",
    "edi_interchange": "providers' interchange envelopes (companies); the invoices about "
    "the subject's dossiers are exported",
    "contact_triage": "a gestionnaire's done mark; the exported contact carries its own status",
}

#: Tables whose personal content the export and the purge reach in another form, and how.
REACHED_ELSEWHERE: dict[str, str] = {
    "staged_blob": "raw messages committed with their accept, until the accept writer has "
    "written them to the blob store (moments later); the export and the purge have them "
    "written there first, then reach them as the contacts' raw files",
}

#: Columns never exported: a secret (its digest) is nobody's personal data to hand out.
SECRET_COLUMNS = frozenset({("chat_conversation", "token_sha256")})

#: Every foreign key to a row the purge deletes, and what the purge does with it: the row
#: holding it is deleted with its dossier, or the link is cleared and the row kept.
PURGE_LINKS: dict[tuple[str, str], str] = {
    ("contact", "dossier_id"): "delete",
    ("document", "contact_id"): "delete",
    ("document", "dossier_id"): "clear",  # a document of a kept contact loses the link only
    ("document", "parent_id"): "delete",  # children belong to the same contact
    ("outbound_message", "contact_id"): "delete",
    ("outbound_message", "dossier_id"): "delete",
    ("delivery", "contact_id"): "delete",
    ("training_example", "contact_id"): "delete",
    ("training_example", "document_id"): "delete",
    # A STOP must outlive the message that said it: the opt-out stays, unlinked.
    ("sms_opt_out", "contact_id"): "clear",
    ("chat_reply", "outbound_message_id"): "delete",
    ("edi_interchange", "contact_id"): "delete",
    ("provider_invoice", "contact_id"): "delete",
    ("provider_invoice", "interchange_id"): "delete",
    ("provider_invoice", "dossier_id"): "clear",  # another interchange's invoice stays
    ("contact_triage", "contact_id"): "delete",
}
#: Tables whose rows the purge deletes (the targets of the links above).
PURGED_TABLES = frozenset({"dossier", "contact", "document", "outbound_message", "edi_interchange"})

#: Job kinds and the table their ``subject_id`` names (jobs have no foreign key).
JOB_SUBJECTS: dict[str, str] = {
    "contact": "contact",
    "twilio_media": "contact",
    "deliver": "outbound_message",
    "ged_export": "dossier",
}

#: File extension of a contact's raw message in an export, by channel.
RAW_EXTENSIONS = {"email": "eml", "chat": "json", "sms": "txt", "edi": "edi"}

_CHUNK = 500


class SubjectError(ValueError):
    """What was given is neither an email address nor a phone number."""


# --------------------------------------------------------------------------- identifiers


def normalise_email(raw: str) -> str | None:
    """``raw`` as an address the store compares (trimmed, lower case), or None."""
    text = raw.strip().removeprefix("mailto:").strip("<> ").lower()
    if re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", text):
        return text
    return None


def normalise_phone(raw: str) -> str | None:
    """``raw`` in E.164, national numbers read as French; None if it is not a number."""
    try:
        number = phonenumbers.parse(raw.strip(), DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_identifier(raw: str) -> str:
    """The normalised email or E.164 phone number; SubjectError when it is neither."""
    if "@" in raw:
        email = normalise_email(raw)
        if email is None:
            raise SubjectError("not an email address")
        return email
    phone = normalise_phone(raw)
    if phone is None:
        raise SubjectError("neither an email address nor a phone number")
    return phone


def subject_key(identifier: str) -> str:
    """A name for the subject that is not their address: files and audit events use it."""
    return hashlib.sha256(identifier.encode()).hexdigest()[:16]


def safe_name(name: str, limit: int = 100) -> str:
    """A stored file name made safe as one path component: no folders, no dots first, ASCII."""
    base = re.split(r"[\\/]", name)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-")
    if len(base) > limit:
        stem, dot, ext = base.rpartition(".")
        suffix = "." + ext[:10] if dot and stem else ""
        base = base[: limit - len(suffix)].rstrip("._-") + suffix
    return base or "file"


def _chunks(values: Collection[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    items = sorted(values)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot export {type(value).__name__}")


def row_dict(row: Base) -> dict[str, Any]:
    """Every column of ``row`` by attribute name, secrets left out."""
    table = type(row).__tablename__
    return {
        attr.key: getattr(row, attr.key)
        for attr in sa_inspect(type(row)).column_attrs
        if (table, attr.key) not in SECRET_COLUMNS
    }


def attachment_refs(headers: dict[str, Any]) -> list[dict[str, Any]]:
    refs = headers.get(ATTACHMENTS_HEADER) or []
    return [
        dict(r)
        for r in refs
        if isinstance(r, dict) and re.fullmatch(r"[0-9a-f]{64}", str(r.get("sha256", "")))
    ]


# --------------------------------------------------------------------------- access (export)


@dataclass
class SubjectData:
    """The rows held about one person, by ``EXPORTED`` key, and the addresses they hold."""

    emails: set[str]
    phones: set[str]
    rows: dict[str, list[Any]] = field(default_factory=dict)

    def ids(self, key: str) -> list[Any]:
        return [getattr(r, "ref" if key == "dossiers" else "id") for r in self.rows.get(key, [])]

    @property
    def empty(self) -> bool:
        return not any(self.rows.get(k) for k in EXPORTED.values() if k != "audit_events")

    def counts(self) -> dict[str, int]:
        return {key: len(self.rows.get(key, [])) for key in EXPORTED.values()}


async def _scalars(session: AsyncSession, statement: Any) -> list[Any]:
    return list((await session.scalars(statement)).all())


def _chat_public_id(contact: Contact) -> str | None:
    # A chat contact's natural key is "<conversation public id>:<client message id>".
    if contact.channel != "chat":
        return None
    public_id, sep, _ = contact.natural_key.partition(":")
    return public_id if sep else None


async def gather_subject(session: AsyncSession, identifier: str) -> SubjectData:
    """Every row held about the person ``identifier`` (normalised email or E.164 phone) names.

    The beneficiary records holding it bring their other addresses and numbers (the same
    person), their contracts and dossiers; then every contact from one of those addresses or
    numbers or attached to one of the dossiers, with its documents, deliveries and replies;
    replies sent to them; their SMS opt-out; web chats they started; and the audit events
    about all these. Senders are compared without case on a scan of the contact table: an
    access request is rare, and no index could serve "lower(sender)" on both back ends.
    """
    data = SubjectData(emails=set(), phones=set())
    (data.emails if "@" in identifier else data.phones).add(identifier)
    beneficiaries = await beneficiaries_for(session, identifier)
    for person in beneficiaries:
        data.emails |= {e for e in map(normalise_email, map(str, person.emails)) if e}
        data.phones |= {p for p in map(normalise_phone, map(str, person.phones)) if p}
    person_ids = [b.id for b in beneficiaries]
    contracts = await _scalars(
        session, select(Contract).where(Contract.beneficiary_id.in_(person_ids))
    )
    dossiers = await _scalars(
        session,
        select(Dossier).where(
            or_(
                Dossier.beneficiary_id.in_(person_ids),
                Dossier.contract_id.in_([c.id for c in contracts]),
            )
        ),
    )
    dossier_ids = [d.id for d in dossiers]

    conversations = await _scalars(
        session,
        select(ChatConversation).where(
            or_(
                func.lower(ChatConversation.visitor_email).in_(sorted(data.emails)),
                ChatConversation.visitor_phone.in_(sorted(data.phones)),
            )
        ),
    )
    if data.phones:
        # Chat visitors type their number as they like ("06 12 34 56 78"): read each one.
        typed = await _scalars(
            session,
            select(ChatConversation).where(
                ChatConversation.visitor_phone != "",
                ChatConversation.visitor_phone.not_in(sorted(data.phones)),
            ),
        )
        conversations += [c for c in typed if normalise_phone(c.visitor_phone) in data.phones]
        conversations = list({c.id: c for c in conversations}.values())
    chat_prefixes = [f"{c.public_id}:" for c in conversations]
    chat_senders = {c.visitor_phone for c in conversations if c.visitor_phone}

    contacts = await _scalars(
        session,
        select(Contact)
        .where(
            or_(
                func.lower(Contact.sender).in_(sorted(data.emails)),
                Contact.sender.in_(sorted(data.phones | chat_senders)),
                Contact.dossier_id.in_(dossier_ids),
                *[
                    and_(
                        Contact.channel == "chat",
                        Contact.natural_key.startswith(prefix, autoescape=True),
                    )
                    for prefix in chat_prefixes
                ],
            )
        )
        .order_by(Contact.id),
    )
    # A chat contact attached to their dossier brings its conversation along.
    known = {c.public_id for c in conversations}
    more = {p for p in map(_chat_public_id, contacts) if p and p not in known}
    if more:
        conversations += await _scalars(
            session, select(ChatConversation).where(ChatConversation.public_id.in_(more))
        )
    contact_ids = [c.id for c in contacts]
    conversation_ids = [c.id for c in conversations]
    chat_replies = await _scalars(
        session, select(ChatReply).where(ChatReply.conversation_id.in_(conversation_ids))
    )
    documents = await _scalars(
        session,
        select(Document)
        .where(or_(Document.contact_id.in_(contact_ids), Document.dossier_id.in_(dossier_ids)))
        .order_by(Document.id),
    )
    document_ids = [d.id for d in documents]
    outbound = await _scalars(
        session,
        select(OutboundMessage)
        .where(
            or_(
                OutboundMessage.contact_id.in_(contact_ids),
                OutboundMessage.dossier_id.in_(dossier_ids),
                func.lower(OutboundMessage.recipient).in_(sorted(data.emails)),
                OutboundMessage.recipient.in_(sorted(data.phones)),
                OutboundMessage.id.in_([r.outbound_message_id for r in chat_replies]),
            )
        )
        .order_by(OutboundMessage.id),
    )
    opt_outs = await _scalars(
        session,
        select(SmsOptOut).where(
            or_(SmsOptOut.phone.in_(sorted(data.phones)), SmsOptOut.contact_id.in_(contact_ids))
        ),
    )
    data.rows = {
        "beneficiaries": list(beneficiaries),
        "contracts": contracts,
        "dossiers": dossiers,
        "contacts": contacts,
        "deliveries": await _scalars(
            session,
            select(Delivery).where(Delivery.contact_id.in_(contact_ids)).order_by(Delivery.id),
        ),
        "documents": documents,
        "outbound_messages": outbound,
        "sms_opt_outs": opt_outs,
        "chat_conversations": conversations,
        "chat_replies": chat_replies,
        "provider_invoices": await _scalars(
            session, select(ProviderInvoice).where(ProviderInvoice.dossier_id.in_(dossier_ids))
        ),
        "training_examples": await _scalars(
            session,
            select(TrainingExample).where(
                or_(
                    TrainingExample.contact_id.in_(contact_ids),
                    TrainingExample.document_id.in_(document_ids),
                )
            ),
        ),
    }
    data.rows["audit_events"] = await _audit_about(session, data, identifier)
    return data


async def _audit_about(session: AsyncSession, data: SubjectData, identifier: str) -> list[Any]:
    objects = {
        "beneficiary": data.ids("beneficiaries"),
        "contract": data.ids("contracts"),
        "dossier": data.ids("dossiers"),
        "contact": data.ids("contacts"),
        "document": data.ids("documents"),
        "outbound_message": data.ids("outbound_messages"),
        "sms_opt_out": data.ids("sms_opt_outs"),
        "chat_conversation": data.ids("chat_conversations"),
        "subject": [subject_key(identifier)],
    }
    events: dict[int, AuditEvent] = {}
    for object_type, ids in objects.items():
        for chunk in _chunks({str(i) for i in ids}):
            for event in await _scalars(
                session,
                select(AuditEvent).where(
                    AuditEvent.object_type == object_type, AuditEvent.object_id.in_(chunk)
                ),
            ):
                events[event.id] = event
    return [events[k] for k in sorted(events)]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    counts: dict[str, int]
    files: int
    missing_files: int

    def summary(self) -> str:
        shown = ", ".join(f"{key.replace('_', ' ')}: {n}" for key, n in self.counts.items() if n)
        missing = (
            f", {self.missing_files} missing from the blob store" if self.missing_files else ""
        )
        return f"{self.path}: {shown}; {self.files} file(s){missing}"


def _write_zip(data: SubjectData, blobs: BlobStore, output: Path) -> tuple[int, int]:
    """Write the export to ``output`` whole or not at all; returns (files, missing files)."""
    exported = {key: [row_dict(r) for r in rows] for key, rows in data.rows.items()}
    files: dict[str, str] = {}  # digest -> name in the archive: each content is copied once
    plan: list[tuple[str, str]] = []  # (name in the archive, digest)
    missing = 0

    def place(digest: str | None, name: str) -> str | None:
        nonlocal missing
        if not digest:
            return None
        if digest in files:
            return files[digest]
        try:
            present = blobs.exists(digest)
        except ValueError:  # not a digest: nothing could have been stored under it
            present = False
        if not present:
            missing += 1
            return None
        files[digest] = name
        plan.append((name, digest))
        return name

    for row in exported["documents"]:
        name = f"documents/{row['id']}-{safe_name(str(row['filename']))}"
        row["file"] = place(row["sha256"], name)
    for row in exported["contacts"]:
        ext = RAW_EXTENSIONS.get(str(row["channel"]), "bin")
        row["raw_file"] = place(row["raw_sha256"], f"messages/contact-{row['id']}.{ext}")
    for row in exported["outbound_messages"]:
        for n, ref in enumerate(attachment_refs(row["headers"]), 1):
            name = f"documents/reply-{row['id']}-{n}-{safe_name(str(ref.get('filename', '')))}"
            ref["file"] = place(ref["sha256"], name)
            row.setdefault("attachments", []).append(ref)
    document = {
        "format": EXPORT_FORMAT,
        "generated_at": utcnow().isoformat(),
        "subject": {"emails": sorted(data.emails), "phones": sorted(data.phones)},
        "counts": data.counts(),
        **exported,
    }
    text = json.dumps(document, ensure_ascii=False, indent=2, default=_json_value)
    output.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file readable by its owner only: it holds a person's whole file.
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".zip", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("subject.json", text.encode("utf-8"))
            for name, digest in plan:
                archive.writestr(name, blobs.get(digest))
        os.replace(tmp_name, output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return len(plan), missing


async def export_subject(
    store: Store, raw_identifier: str, output: Path | None = None, actor: str = "cli"
) -> ExportResult | None:
    """Write everything held about one person to a ZIP (``subject.json`` and the files).

    ``output`` defaults to ``subject-<key>.zip`` in the current folder, named by a digest of
    the identifier rather than the address itself. Returns None, writing nothing, when
    nothing is held about them; raises SubjectError for something that is neither an email
    nor a phone number. The export is audited (``subject.exported``) with ids and counts only.
    """
    identifier = parse_identifier(raw_identifier)
    key = subject_key(identifier)
    async with store.sessions() as session:
        data = await gather_subject(session, identifier)
    if data.empty:
        return None
    path = output if output is not None else Path.cwd() / f"subject-{key}.zip"
    # Raw messages accepted moments ago may still wait in the database: the archive is
    # written from the blob store.
    await store.settle_staged()
    files, missing = await asyncio.to_thread(_write_zip, data, store.blobs, path)
    counts = data.counts()
    async with store.sessions() as session, session.begin():
        audit(
            session,
            actor,
            "subject.exported",
            "subject",
            key,
            after={
                "beneficiaries": data.ids("beneficiaries"),
                "dossiers": data.ids("dossiers"),
                "contacts": data.ids("contacts"),
                "documents": data.ids("documents"),
                "outbound_messages": data.ids("outbound_messages"),
                "chat_conversations": data.ids("chat_conversations"),
                "sms_opt_outs": data.ids("sms_opt_outs"),
                "files": files,
            },
            note="access request: "
            + ", ".join(f"{k}: {n}" for k, n in counts.items() if n and k != "audit_events"),
        )
    return ExportResult(path, counts, files, missing)


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class PurgedDossier:
    ref: str
    closed_at: datetime
    #: Rows deleted per table, and links cleared (``*_unlinked``); zero counts left out.
    counts: dict[str, int]


@dataclass
class PurgeReport:
    dry_run: bool
    retention_days: int
    cutoff: datetime | None
    dossiers: list[PurgedDossier] = field(default_factory=list)
    #: Blob files removed (or, in a dry run, that would be): referenced by no row any more.
    blobs: int = 0


async def expired_dossiers(
    session: AsyncSession, cutoff: datetime, only: str | None = None
) -> list[tuple[int, str, datetime]]:
    """Closed dossiers closed before ``cutoff`` (or the dossier of ref ``only``, if it is one):
    (id, ref, closing date), oldest first.

    The closing date is the last ``dossier.closed`` audit event (a dossier may be reopened
    and closed again); a dossier closed without one (imported closed) counts from its last
    change, which is never earlier than its closing.
    """
    closings = (
        select(
            AuditEvent.object_id.label("ref"),
            func.max(AuditEvent.at, type_=UTCDateTime()).label("at"),
        )
        .where(
            AuditEvent.object_type == "dossier",
            AuditEvent.action == "dossier.closed",
            true() if only is None else AuditEvent.object_id == only,
        )
        .group_by(AuditEvent.object_id)
        .subquery()
    )
    closed_at = func.coalesce(closings.c.at, Dossier.updated_at, type_=UTCDateTime())
    rows = await session.execute(
        select(Dossier.id, Dossier.ref, closed_at)
        .outerjoin(closings, closings.c.ref == Dossier.ref)
        .where(
            Dossier.status == CLOSED,
            closed_at < cutoff,
            true() if only is None else Dossier.ref == only,
        )
        .order_by(closed_at, Dossier.id)
    )
    return [(row[0], row[1], row[2]) for row in rows]


async def _digests(session: AsyncSession, column: Any, where: Any) -> set[str]:
    return {str(d) for d in (await session.scalars(select(column).where(where))).all() if d}


async def _ids(session: AsyncSession, statement: Any) -> list[int]:
    return [int(i) for i in (await session.scalars(statement)).all()]


async def _rowcount(session: AsyncSession, statement: Any) -> int:
    """Run a DELETE or UPDATE; returns how many rows it touched."""
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def _in(column: Any, values: Collection[Any]) -> Any:
    return column.in_(sorted(values)) if values else false()


def _jobs_of(kind_table: str, ids: Collection[int]) -> Any:
    kinds = [k for k, t in JOB_SUBJECTS.items() if t == kind_table]
    return and_(Job.kind.in_(kinds), _in(Job.subject_id, ids))


async def _purge_dossier(
    session: AsyncSession, dossier_id: int, ref: str
) -> tuple[dict[str, int], set[str]]:
    """Delete one dossier and what belongs to it in the caller's transaction.

    Returns the counts and the blob digests those rows referred to (candidates for removal
    once the transaction is committed). SQLite's FTS5 triggers and PostgreSQL's generated
    search columns take the deleted contacts and documents out of the search index.
    """
    contacts = await _ids(session, select(Contact.id).where(Contact.dossier_id == dossier_id))
    digests: set[str] = set()
    rows = await session.execute(
        select(Document.id, Document.sha256).where(_in(Document.contact_id, contacts))
    )
    documents = set()
    for document_id, digest in rows:
        documents.add(int(document_id))
        digests.add(digest)
    outbound = set()
    for message_id, headers in await session.execute(
        select(OutboundMessage.id, OutboundMessage.headers).where(
            or_(
                OutboundMessage.dossier_id == dossier_id,
                _in(OutboundMessage.contact_id, contacts),
            )
        )
    ):
        outbound.add(int(message_id))
        digests |= {r["sha256"] for r in attachment_refs(headers or {})}
    digests |= await _digests(session, Contact.raw_sha256, _in(Contact.id, contacts))
    digests |= await _digests(session, Delivery.raw_sha256, _in(Delivery.contact_id, contacts))
    chat_keys = await session.scalars(
        select(Contact.natural_key).where(_in(Contact.id, contacts), Contact.channel == "chat")
    )
    public_ids = {key.partition(":")[0] for key in chat_keys if ":" in key}
    objects = {
        "contact": {str(i) for i in contacts},
        "document": {str(i) for i in documents},
        "outbound_message": {str(i) for i in outbound},
    }

    counts: dict[str, int] = {}
    counts["training_examples"] = await _rowcount(
        session,
        delete(TrainingExample).where(
            or_(
                _in(TrainingExample.contact_id, contacts),
                _in(TrainingExample.document_id, documents),
            )
        ),
    )
    counts["chat_replies"] = await _rowcount(
        session, delete(ChatReply).where(_in(ChatReply.outbound_message_id, outbound))
    )
    counts["sms_opt_outs_unlinked"] = await _rowcount(
        session,
        update(SmsOptOut).where(_in(SmsOptOut.contact_id, contacts)).values(contact_id=None),
    )
    counts["provider_invoices"] = await _rowcount(
        session, delete(ProviderInvoice).where(_in(ProviderInvoice.contact_id, contacts))
    )
    counts["provider_invoices_unlinked"] = await _rowcount(
        session,
        update(ProviderInvoice)
        .where(ProviderInvoice.dossier_id == dossier_id)
        .values(dossier_id=None),
    )
    counts["edi_interchanges"] = await _rowcount(
        session, delete(EdiInterchange).where(_in(EdiInterchange.contact_id, contacts))
    )
    counts["triage_marks"] = await _rowcount(
        session, delete(ContactTriage).where(_in(ContactTriage.contact_id, contacts))
    )
    counts["deliveries"] = await _rowcount(
        session, delete(Delivery).where(_in(Delivery.contact_id, contacts))
    )
    counts["jobs"] = await _rowcount(
        session,
        delete(Job).where(
            or_(
                _jobs_of("contact", contacts),
                _jobs_of("outbound_message", outbound),
                _jobs_of("dossier", [dossier_id]),
            )
        ),
    )
    # The audit trail of the deleted rows goes with them: it quotes senders, numbers and
    # notes; what stays is the dossier.purged event, with counts only.
    counts["audit_events"] = 0
    for object_type, ids in {**objects, "dossier": {ref}}.items():
        for chunk in _chunks(ids):
            counts["audit_events"] += await _rowcount(
                session,
                delete(AuditEvent).where(
                    AuditEvent.object_type == object_type, AuditEvent.object_id.in_(chunk)
                ),
            )
    counts["outbound_messages"] = await _rowcount(
        session, delete(OutboundMessage).where(_in(OutboundMessage.id, outbound))
    )
    counts["documents_unlinked"] = await _rowcount(
        session,
        update(Document)
        .where(Document.dossier_id == dossier_id, Document.contact_id.not_in(contacts))
        .values(dossier_id=None),
    )
    # Children before parents: one statement would do on both back ends, but the order
    # costs nothing and does not depend on when each checks its foreign keys.
    counts["documents"] = 0
    for depth in sorted(
        set(
            (
                await session.scalars(
                    select(Document.depth).where(_in(Document.id, documents)).distinct()
                )
            ).all()
        ),
        reverse=True,
    ):
        counts["documents"] += await _rowcount(
            session,
            delete(Document).where(_in(Document.id, documents), Document.depth == depth),
        )
    counts["contacts"] = await _rowcount(session, delete(Contact).where(_in(Contact.id, contacts)))
    counts["chat_conversations"] = 0
    for public_id in sorted(public_ids):
        counts["chat_conversations"] += await _delete_conversation_if_empty(session, public_id)
    counts["dossiers"] = await _rowcount(session, delete(Dossier).where(Dossier.id == dossier_id))
    return {k: n for k, n in counts.items() if n}, digests


async def _delete_conversation_if_empty(session: AsyncSession, public_id: str) -> int:
    """A chat conversation (the visitor's name, email, phone) goes once nothing refers to it."""
    conversation = await session.scalar(
        select(ChatConversation.id).where(ChatConversation.public_id == public_id)
    )
    if conversation is None:
        return 0
    still = await session.scalar(
        select(func.count())
        .select_from(Contact)
        .where(
            Contact.channel == "chat",
            Contact.natural_key.startswith(f"{public_id}:", autoescape=True),
        )
    )
    replies = await session.scalar(
        select(func.count()).select_from(ChatReply).where(ChatReply.conversation_id == conversation)
    )
    if still or replies:
        return 0
    return await _rowcount(
        session, delete(ChatConversation).where(ChatConversation.id == conversation)
    )


async def referenced_blobs(session: AsyncSession, digests: Collection[str]) -> set[str]:
    """Those of ``digests`` some row still refers to: a document, a raw message (contact or
    delivery) or a reply's attachment. Blobs are shared by content, so this decides."""
    found: set[str] = set()
    for chunk in _chunks(digests):
        for column in (Document.sha256, Contact.raw_sha256, Delivery.raw_sha256):
            found |= await _digests(session, column, column.in_(chunk))
    # Attachment references live in a JSON column: its text is searched, then read.
    for chunk in _chunks(set(digests) - found, 50):
        text = cast(OutboundMessage.headers, String)
        rows = await session.scalars(
            select(OutboundMessage.headers).where(or_(*[text.contains(d) for d in chunk]))
        )
        for headers in rows:
            found |= {r["sha256"] for r in attachment_refs(headers or {})} & set(chunk)
    return found


def _thumbnail(blobs: BlobStore, digest: str) -> Path:
    # The inbox caches a PNG of each viewable document beside the blobs (guichet/inbox.py): a
    # local cache of its own, not a blob, so it is removed here rather than by the BlobStore.
    return Path(blobs.root) / "thumbnails" / f"{digest}.png"


def _set_aside(blobs: BlobStore, digests: Iterable[str]) -> list[str]:
    return [digest for digest in digests if blobs.set_aside(digest)]


def _settle(blobs: BlobStore, moved: Iterable[str], wanted: set[str]) -> int:
    removed = 0
    for digest in moved:
        if digest in wanted:
            blobs.restore(digest)
            continue
        blobs.discard(digest)
        _thumbnail(blobs, digest).unlink(missing_ok=True)
        removed += 1
    return removed


async def remove_unreferenced_blobs(store: Store, digests: Collection[str]) -> int:
    """Delete the blob files of ``digests`` that no row refers to; returns how many went.

    Called after the rows' deletion is committed. A blob is first set aside (hidden, not yet
    deleted: ``BlobStore.set_aside``), then the references are read again: a contact stored
    meanwhile with the same content has either found the blob gone (and written it again) or
    committed its row, which the second look sees, and the blob is restored. Only a writer
    that found the blob before it was set aside and commits after the second look could still
    lose it: one transaction's time, for a blob that had no reference left.
    """
    if not digests:
        return 0
    async with store.sessions() as session:
        unreferenced = set(digests) - await referenced_blobs(session, digests)
    moved = await asyncio.to_thread(_set_aside, store.blobs, sorted(unreferenced))
    async with store.sessions() as session:
        wanted = await referenced_blobs(session, moved)
    return await asyncio.to_thread(_settle, store.blobs, moved, wanted)


async def purge_expired(
    store: Store,
    retention_days: int,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    actor: str = "retention",
) -> PurgeReport:
    """Delete the dossiers closed more than ``retention_days`` ago, with everything of theirs.

    For each dossier: its contacts, their documents, deliveries, replies, jobs, training
    examples, chat replies and audit trail, in one transaction, with a ``dossier.purged``
    audit event (reference and counts; no text). Beneficiaries and contracts are reference
    data and stay; an SMS opt-out stays, unlinked from the message that made it.

    Blob files go after the commit, and only those no remaining row refers to (blobs are
    shared by content). A crash between the commit and the removal leaves orphan files,
    never a row whose file is gone; a later run does not find them again, but they name no
    one without the rows. ``retention_days`` 0 keeps everything.

    ``dry_run`` runs the same deletions in one transaction that is rolled back: the report
    counts exactly what would go, blobs included.
    """
    now = now or utcnow()
    if retention_days <= 0:
        return PurgeReport(dry_run, retention_days, None)
    cutoff = now - timedelta(days=retention_days)
    report = PurgeReport(dry_run, retention_days, cutoff)
    async with store.sessions() as session:
        expired = await expired_dossiers(session, cutoff)
    if dry_run:
        async with store.sessions() as session:
            transaction = await session.begin()
            try:
                digests: set[str] = set()
                for dossier_id, ref, closed_at in expired:
                    counts, found = await _purge_dossier(session, dossier_id, ref)
                    report.dossiers.append(PurgedDossier(ref, closed_at, counts))
                    digests |= found
                on_disk = {d for d in digests if store.blobs.exists(d)}
                report.blobs = len(on_disk - await referenced_blobs(session, on_disk))
            finally:
                await transaction.rollback()
        return report
    # Every raw blob in the blob store first, so that the removal below finds them all.
    await store.settle_staged()
    for dossier_id, ref, _ in expired:
        async with store.sessions() as session, session.begin():
            # Locked, then read again: it may have been reopened (or closed anew) since the
            # list was made, and a contact being attached to it now waits for this commit.
            await session.execute(
                select(Dossier.id).where(Dossier.id == dossier_id).with_for_update()
            )
            current = await expired_dossiers(session, cutoff, only=ref)
            if not current:
                continue
            closed_at = current[0][2]
            counts, digests = await _purge_dossier(session, dossier_id, ref)
            audit(
                session,
                actor,
                "dossier.purged",
                "dossier",
                ref,
                after={"closed_at": closed_at.isoformat(), **counts},
                note=f"retention of {retention_days} days",
            )
        report.dossiers.append(PurgedDossier(ref, closed_at, counts))
        # After the commit, never before: see the docstring.
        removed = await remove_unreferenced_blobs(store, digests)
        report.blobs += removed
        log.info("retention: purged %s, closed %s: %s, %d blob(s)", ref, closed_at, counts, removed)
    return report


def purge_lines(report: PurgeReport) -> list[str]:
    """What ``guichet purge`` prints: one line per dossier, then the totals."""
    if report.cutoff is None:
        return ["retention_days is 0: everything is kept"]
    verb = "would purge" if report.dry_run else "purged"
    lines = []
    for dossier in report.dossiers:
        shown = ", ".join(f"{k.replace('_', ' ')}: {n}" for k, n in dossier.counts.items())
        lines.append(f"{verb} {dossier.ref} (closed {dossier.closed_at:%Y-%m-%d}): {shown}")
    files = "blob file(s) would be removed" if report.dry_run else "blob file(s) removed"
    lines.append(
        f"{len(report.dossiers)} dossier(s) closed before {report.cutoff:%Y-%m-%d} "
        f"{'would be ' if report.dry_run else ''}purged; {report.blobs} {files}"
    )
    return lines
