"""SQLAlchemy 2 tables of the data model in DESIGN.md, shared by SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from models.clock import utcnow

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType

# Stable constraint names keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both back ends: SQLite keeps no zone, so it is put back on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use models.clock.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON()
Money = Numeric(14, 2)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        date: Date,
        Decimal: Money,
        dict[str, Any]: Json,
        list[Any]: Json,
    }


class Beneficiary(Base):
    __tablename__ = "beneficiary"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    emails: Mapped[list[Any]] = mapped_column(default=list)
    phones: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    contracts: Mapped[list[Contract]] = relationship(back_populates="beneficiary")


class Contract(Base):
    __tablename__ = "contract"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    product: Mapped[str] = mapped_column(String(200))
    beneficiary_id: Mapped[int] = mapped_column(ForeignKey("beneficiary.id"))
    starts_on: Mapped[date]
    ends_on: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3), default="EUR")

    beneficiary: Mapped[Beneficiary] = relationship(back_populates="contracts")
    guarantees: Mapped[list[Guarantee]] = relationship(back_populates="contract")


class Guarantee(Base):
    __tablename__ = "guarantee"
    __table_args__ = (UniqueConstraint("contract_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contract.id"))
    code: Mapped[str] = mapped_column(String(50))
    label: Mapped[str] = mapped_column(String(200), default="")
    claim_types: Mapped[list[Any]] = mapped_column(default=list)
    ceiling: Mapped[Decimal | None]
    deductible: Mapped[Decimal] = mapped_column(default=Decimal("0"))
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    declaration_days: Mapped[int | None]
    refund_days: Mapped[int] = mapped_column(default=730)

    contract: Mapped[Contract] = relationship(back_populates="guarantees")


class Dossier(Base):
    __tablename__ = "dossier"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(20), unique=True)
    contract_id: Mapped[int | None] = mapped_column(ForeignKey("contract.id"))
    beneficiary_id: Mapped[int | None] = mapped_column(ForeignKey("beneficiary.id"))
    claim_type: Mapped[str] = mapped_column(String(50))
    event_date: Mapped[date | None]
    event_place: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(30), default="open")
    opened_after_the_fact: Mapped[bool] = mapped_column(Boolean, default=False)
    summary: Mapped[str] = mapped_column(Text, default="")
    checklist: Mapped[list[Any]] = mapped_column(default=list)
    missing: Mapped[list[Any]] = mapped_column(default=list)
    coverage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    claim_type_confidence: Mapped[float | None]
    cause: Mapped[str | None] = mapped_column(String(40))
    amount_claimed: Mapped[Decimal | None]
    amount_covered: Mapped[Decimal | None]
    amount_refunded: Mapped[Decimal | None]
    amount_recoverable: Mapped[Decimal | None]
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    beneficiary: Mapped[Beneficiary | None] = relationship()
    contract: Mapped[Contract | None] = relationship()


class Contact(Base):
    """One inbound or outbound exchange on any channel, normalised."""

    __tablename__ = "contact"
    __table_args__ = (
        UniqueConstraint("channel", "natural_key"),
        Index("ix_contact_received", "received_at"),
        Index("ix_contact_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    direction: Mapped[str] = mapped_column(String(10), default="inbound")
    channel: Mapped[str] = mapped_column(String(20))
    natural_key: Mapped[str] = mapped_column(String(500))
    sender: Mapped[str] = mapped_column(String(320))
    sender_name: Mapped[str] = mapped_column(String(200), default="")
    recipients: Mapped[list[Any]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(500))
    in_reply_to: Mapped[str | None] = mapped_column(String(500))
    references: Mapped[list[Any]] = mapped_column(default=list)
    sent_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    raw_sha256: Mapped[str | None] = mapped_column(String(64))
    automatic_reason: Mapped[str | None] = mapped_column(String(200))
    defects: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default="received")
    status_reason: Mapped[str | None] = mapped_column(Text)
    step: Mapped[str | None] = mapped_column(String(30))
    language: Mapped[str | None] = mapped_column(String(5))
    intent: Mapped[str | None] = mapped_column(String(30))
    intent_confidence: Mapped[float | None]
    match_rule: Mapped[str | None] = mapped_column(String(200))
    entities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossier.id"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    duplicate_count: Mapped[int] = mapped_column(default=0)
    # A person's label from the channel (GED sidecar; migration 0011): matching obeys it.
    dossier_hint: Mapped[str | None] = mapped_column(String(20))

    dossier: Mapped[Dossier | None] = relationship()
    documents: Mapped[list[Document]] = relationship(
        back_populates="contact", order_by="Document.position"
    )
    replies: Mapped[list[OutboundMessage]] = relationship(
        back_populates="contact", order_by="OutboundMessage.id"
    )


class Delivery(Base):
    """Each time a transport handed us a contact, the first time and every duplicate after."""

    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    peer: Mapped[str] = mapped_column(String(200), default="")
    envelope_sender: Mapped[str | None] = mapped_column(String(320))
    envelope_recipients: Mapped[list[Any]] = mapped_column(default=list)
    raw_sha256: Mapped[str | None] = mapped_column(String(64))


class StagedBlob(Base):
    """The raw bytes of a small contact, committed in its accept transaction and kept here
    until the accept writer has written them to the blob store (``models.accept``): a whole
    batch of accepts then costs one fsync, the database's, instead of three a contact."""

    __tablename__ = "staged_blob"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    staged_at: Mapped[datetime] = mapped_column(default=utcnow)


class Document(Base):
    __tablename__ = "document"

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), index=True)
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossier.id"), index=True)
    # A file found inside another document (archive member, attachment of an attached message).
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("document.id"), index=True)
    depth: Mapped[int] = mapped_column(default=0)
    position: Mapped[int] = mapped_column(default=0)
    filename: Mapped[str] = mapped_column(String(255))
    declared_type: Mapped[str] = mapped_column(String(200), default="")
    sniffed_type: Mapped[str | None] = mapped_column(String(200))
    type_mismatch: Mapped[bool] = mapped_column(Boolean, default=False)
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    pages: Mapped[int | None]
    text: Mapped[str] = mapped_column(Text, default="")
    text_source: Mapped[str | None] = mapped_column(String(20))
    language: Mapped[str | None] = mapped_column(String(5))
    doc_type: Mapped[str | None] = mapped_column(String(40))
    doc_type_confidence: Mapped[float | None]
    # A person's label from the channel (GED sidecar; migration 0011): classify obeys it.
    doc_type_hint: Mapped[str | None] = mapped_column(String(40))
    entities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)

    contact: Mapped[Contact] = relationship(back_populates="documents")
    dossier: Mapped[Dossier | None] = relationship()


class OutboundMessage(Base):
    __tablename__ = "outbound_message"
    __table_args__ = (
        # Replies name our Message-ID (In-Reply-To) or its token (Reply-To "local+TOKEN@"):
        # matching looks both up; the pattern operator class lets PostgreSQL's LIKE 'TOKEN.%'
        # use the index too.
        Index(
            "ix_outbound_message_message_id",
            "message_id",
            postgresql_ops={"message_id": "varchar_pattern_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"), index=True)
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossier.id"))
    purpose: Mapped[str] = mapped_column(String(30))
    template: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(5))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    body_text: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message_id: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    status_reason: Mapped[str | None] = mapped_column(Text)
    send_after: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None]
    provider_id: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    events: Mapped[list[Any]] = mapped_column(default=list)

    contact: Mapped[Contact | None] = relationship(back_populates="replies")


class Job(Base):
    """A durable unit of work: one step of one contact, or one delivery of one reply."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_ready", "status", "run_after"),
        # Replies are claimed first (``jobs.claim``): found by kind without sorting the backlog.
        Index("ix_job_kind_ready", "kind", "status", "run_after"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    #: Jobs with the same key never run at the same time (``dossier:N``); PostgreSQL workers
    #: only (procrastinate's lock), one embedded process needs none.
    lock_key: Mapped[str | None] = mapped_column(String(100))


class AuditEvent(Base):
    __tablename__ = "audit_event"
    # The trail of one object is what is read: the inbox's history of a contact, the SLA sweep
    # and the retention purge all look events up by (object_type, object_id).
    __table_args__ = (Index("ix_audit_event_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60))
    object_type: Mapped[str] = mapped_column(String(30))
    object_id: Mapped[str] = mapped_column(String(60))
    before: Mapped[dict[str, Any] | None] = mapped_column(Json)
    after: Mapped[dict[str, Any] | None] = mapped_column(Json)
    note: Mapped[str] = mapped_column(Text, default="")


class User(Base):
    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20), default="gestionnaire")
    password_hash: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingExample(Base):
    """A labelled item in the corpus format, kept when a gestionnaire corrects the machine.

    ``label`` is the corpus line (kind, channel, language, intent or doc_type, entities) and
    ``text`` what the classifiers read, so ``guichet corrections export`` writes a corpus that
    ``guichet train`` takes as it is.
    """

    __tablename__ = "training_example"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"), index=True)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("document.id"))
    kind: Mapped[str] = mapped_column(String(20))
    label: Mapped[dict[str, Any]] = mapped_column(default=dict)
    text: Mapped[str] = mapped_column(Text, default="")


# Tables of the channels (issue 5). Each channel keeps its own tables in its own section below,
# with its own migration, so that the sections can be read (and grow) independently.

# --- IMAP mailboxes (channels/email_imap.py; migration 0007) ---


class ImapFolderState(Base):
    """How far one IMAP folder has been read: the last UID taken under its UIDVALIDITY."""

    __tablename__ = "imap_folder_state"

    mailbox: Mapped[str] = mapped_column(String(100), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ImapRefusedMail(Base):
    """A mail left on the server because it could not be fetched or was too big; recorded once."""

    __tablename__ = "imap_refused_mail"

    mailbox: Mapped[str] = mapped_column(String(100), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- SMS and MMS through Twilio (channels/twilio_sms.py; migration 0008) ---


class SmsOptOut(Base):
    """Whether a phone number said STOP (or START since): no automatic SMS goes to it while
    ``opted_out``. One row per number; every change is also an audit event."""

    __tablename__ = "sms_opt_out"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), unique=True)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=True)
    keyword: Mapped[str] = mapped_column(String(40))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The inbound SMS that made the change: a retried older keyword never undoes a newer one.
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))


# --- Web chat (channels/chat.py; migration 0009) ---


class ChatConversation(Base):
    """A web chat conversation. The browser keeps its token; only the token's sha256 is kept
    here, so reading the database is not enough to take over a visitor's conversation."""

    __tablename__ = "chat_conversation"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    visitor_name: Mapped[str] = mapped_column(String(200), default="")
    visitor_email: Mapped[str] = mapped_column(String(320), default="")
    visitor_phone: Mapped[str] = mapped_column(String(40), default="")
    language: Mapped[str] = mapped_column(String(5), default="fr")
    peer: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChatReply(Base):
    """A reply recorded for a conversation: pushed to open windows, replayed on resume."""

    __tablename__ = "chat_reply"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("chat_conversation.id"), index=True)
    outbound_message_id: Mapped[int] = mapped_column(ForeignKey("outbound_message.id"), unique=True)
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- EDI from providers (channels/edi.py; migration 0010) ---


class EdiInterchange(Base):
    """One UN/EDIFACT interchange as received, its syntax verdict and the CONTRL sent back."""

    __tablename__ = "edi_interchange"
    __table_args__ = (UniqueConstraint("sender", "reference"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), unique=True)
    sender: Mapped[str] = mapped_column(String(35))
    recipient: Mapped[str] = mapped_column(String(35))
    reference: Mapped[str] = mapped_column(String(35))
    #: accepted, partly_accepted (some messages rejected) or rejected.
    status: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(3))
    error: Mapped[str | None] = mapped_column(Text)
    error_segment: Mapped[str | None] = mapped_column(String(10))
    error_position: Mapped[int | None]
    messages: Mapped[int] = mapped_column(default=0)
    contrl_file: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProviderInvoice(Base):
    """One INVOIC message: what the provider billed, and how it compares with the tariffs."""

    __tablename__ = "provider_invoice"
    __table_args__ = (
        UniqueConstraint("interchange_id", "message_ref"),
        Index("ix_provider_invoice_number", "provider_id", "number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), index=True)
    interchange_id: Mapped[int] = mapped_column(ForeignKey("edi_interchange.id"))
    message_ref: Mapped[str] = mapped_column(String(35))
    provider_id: Mapped[str] = mapped_column(String(35), default="")
    provider_name: Mapped[str] = mapped_column(String(200), default="")
    number: Mapped[str] = mapped_column(String(35), default="")
    invoice_date: Mapped[date | None]
    service_date: Mapped[date | None]
    dossier_ref: Mapped[str] = mapped_column(String(40), default="")
    dossier_id: Mapped[int | None] = mapped_column(ForeignKey("dossier.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3), default="")
    #: Each line: number, service, description, quantity, unit, unit_price, amount, vat_rate
    #: (amounts as decimal strings, never floats).
    lines: Mapped[list[Any]] = mapped_column(default=list)
    total_lines: Mapped[Decimal | None]
    taxable: Mapped[Decimal | None]
    vat: Mapped[Decimal | None]
    total: Mapped[Decimal | None]
    #: received (not checked yet), rejected (syntax), valid or to_review.
    status: Mapped[str] = mapped_column(String(20), default="received")
    error: Mapped[str | None] = mapped_column(Text)
    #: Each gap: code and reason (and the line it concerns, when it is about one line).
    gaps: Mapped[list[Any]] = mapped_column(default=list)
    checked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- GED drops and exports (channels/ged.py; migration 0011) ---


# --- Access: sessions and API tokens (guichet/auth.py; migration 0012) ---


class WebSession(Base):
    """A gestionnaire's login: the browser keeps a random token, the store only its digest."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    #: Every unsafe request of this session must echo it (form field or header).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class ApiToken(Base):
    """A token for an integration, sent as ``Authorization: Bearer``; shown once, kept hashed."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


# --- Inbox (guichet/inbox.py; migration 0013) ---


class ContactTriage(Base):
    """A gestionnaire's "done" on a contact: kept beside the contact so that the pipeline's
    own status (processed, needs review) still says what the machine did."""

    __tablename__ = "contact_triage"

    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), primary_key=True)
    done_at: Mapped[datetime | None]
    done_by: Mapped[str | None] = mapped_column(String(100))


# --- Search (guichet/search.py; migration 0014) ---

#: Full-text objects that migration 0014 creates outside these models, one back end each:
#: SQLite FTS5 tables (kept in sync by triggers; FTS5 keeps shadow tables beside each one) and
#: PostgreSQL generated tsvector columns with their GIN indexes. The tables cannot declare them
#: (neither exists on the other back end), so the comparison of migrations with the models
#: leaves them out through ``managed_by_models``.
SEARCH_TABLES = frozenset(
    f"{table}{suffix}"
    for table in ("search_contact", "search_document")
    for suffix in ("", "_data", "_idx", "_docsize", "_config")
)
SEARCH_COLUMN = "search_vector"
SEARCH_INDEXES = frozenset({"ix_contact_search_vector", "ix_document_search_vector"})


def managed_by_models(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Alembic's ``include_name`` hook: False for the search objects that live beside the models."""
    if type_ == "table":
        # procrastinate's own tables (migration 0015) belong to procrastinate.
        return name not in SEARCH_TABLES and not (name or "").startswith("procrastinate_")
    if type_ == "column":
        return not (
            name == SEARCH_COLUMN and parent_names.get("table_name") in ("contact", "document")
        )
    if type_ == "index":
        return name not in SEARCH_INDEXES
    return True
