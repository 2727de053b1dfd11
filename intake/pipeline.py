"""The contact pipeline: steps declared as data, each committing its results and the next step."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from intake.children import ChildFile
from intake.coverage import ClaimType
from intake.dossiers import OPENING_INTENTS, MatchPolicy, match_dossier, read_event
from intake.evaluate import ReferenceRules, evaluate
from intake.invoices import Tariffs, check_invoices
from intake.reading import OcrPool, Reading, ReadingLimits, read_document
from intake.understand import Understanding, classify
from models import jobs
from models.accept import UNPACK_STEP, new_documents
from models.clock import utcnow
from models.inbound import InboundContact
from models.jobs import CONTACT_JOB, ClaimedJob
from models.store import Store, audit
from models.tables import Contact, Delivery, Document, Dossier, OutboundMessage, StagedBlob
from responders import decide
from responders.acknowledge import MailIdentity, ReplyRoute, reply_route
from responders.attestation import store_attestation
from responders.compose import ReplyInputs, build_reply
from responders.outbox import queue_reply
from responders.render import TemplateRenderer

log = logging.getLogger(__name__)

DONE = "done"
#: A contact's status while the pipeline works on it.
PROCESSING = "processing"


#: Raw bytes and the envelope sender in, the normalised contact out; never raises.
Unpacker = Callable[[bytes, str | None], InboundContact]


@dataclass(frozen=True)
class IntakeContext:
    """Everything the steps need, built once by the composition root and passed explicitly."""

    store: Store
    ocr: OcrPool
    limits: ReadingLimits
    renderer: TemplateRenderer
    identity: MailIdentity
    understanding: Understanding
    rules: ReferenceRules
    replies: decide.ReplyPolicy = field(default_factory=decide.ReplyPolicy)
    #: Negotiated provider tariffs (config/tariffs.toml) for the EDI invoice check.
    tariffs: Tariffs = field(default_factory=Tariffs)
    #: On PostgreSQL workers, the steps after ``match`` run under their dossier's lock
    #: (``ContactPipeline.run``); one embedded process needs no lock.
    dossier_locks: bool = False
    #: Per channel, how a contact stored raw at intake is unpacked (email: the MIME parser,
    #: given by the composition root since intake does not import channels).
    unpackers: Mapping[str, Unpacker] = field(default_factory=dict)

    @property
    def claim_types(self) -> dict[str, ClaimType]:
        return self.rules.claim_types


#: A step returns the step it recorded as next when that is not simply the following one
#: (a text email's unpacking finds nothing to extract and records ``classify``), else None.
Step = Callable[[IntakeContext, int], Awaitable[str | None]]


# The pipeline's statements are built once: building one cost more than running it.
_CONTACT_FOR_UPDATE = (
    select(Contact)
    .where(Contact.id == bindparam("contact_id"))
    .options(selectinload(Contact.documents), selectinload(Contact.dossier))
    .with_for_update()
)


async def _load_contact(session: AsyncSession, contact_id: int) -> Contact:
    contact = await session.scalar(_CONTACT_FOR_UPDATE, {"contact_id": contact_id})
    if contact is None:
        raise LookupError(f"contact {contact_id} does not exist")
    return contact


# What unpacking reads, built once (a statement costs more to build than to run): the
# channel, the raw digest, MAIL FROM of the first delivery (the parser's fallback sender and
# RFC 3834 check) and, while small raw messages are still staged in the database
# (models.accept), their bytes, so that they cost no second look.
_RAW_CONTACT = select(
    Contact.channel,
    Contact.raw_sha256,
    select(Delivery.envelope_sender)
    .where(Delivery.contact_id == Contact.id)
    .order_by(Delivery.id)
    .limit(1)
    .scalar_subquery(),
    select(StagedBlob.content).where(StagedBlob.sha256 == Contact.raw_sha256).scalar_subquery(),
).where(Contact.id == bindparam("contact_id"))


async def unpack(ctx: IntakeContext, contact_id: int) -> str | None:
    """Unpack a contact its transport stored raw (an email whose SMTP session read only the
    headers): body, attachments and the other headers, from the very bytes acknowledged."""
    async with ctx.store.sessions() as session:
        channel, raw_digest, envelope_sender, raw = (
            await session.execute(_RAW_CONTACT, {"contact_id": contact_id})
        ).one()
    unpacker = ctx.unpackers.get(channel)
    if unpacker is None or raw_digest is None:
        raise LookupError(f"contact {contact_id}: nothing unpacks raw {channel} contacts")
    if raw is None:
        raw = await asyncio.to_thread(ctx.store.blobs.get, raw_digest)
    inbound = await asyncio.to_thread(unpacker, raw, envelope_sender)
    digests = await asyncio.to_thread(ctx.store.put_attachments, inbound.attachments)
    async with ctx.store.sessions() as session, session.begin():
        contact = await session.get_one(Contact, contact_id, with_for_update=True)
        if contact.step != UNPACK_STEP:
            return contact.step
        # The identity (natural key, sender) stays as accepted: the same bytes give the same.
        contact.sender = contact.sender or inbound.sender
        contact.sender_name = contact.sender_name or inbound.sender_name
        contact.recipients = list(inbound.recipients)
        contact.subject = inbound.subject
        contact.text = inbound.text
        contact.html = inbound.html
        contact.in_reply_to = inbound.in_reply_to
        contact.references = list(inbound.references)
        contact.sent_at = inbound.sent_at
        # A reason the session found in the headers stays: in doubt, no automatic reply.
        contact.automatic_reason = contact.automatic_reason or inbound.automatic_reason
        contact.defects = list(inbound.defects)
        for document in new_documents(inbound.attachments, digests):
            document.contact_id = contact_id
            session.add(document)
        contact.step = following(UNPACK_STEP)
        if not inbound.attachments:
            # Nothing to read: what ``extract`` would do for a text message is done here, in
            # this transaction, instead of in one more of its own.
            contact.status = PROCESSING
            contact.step = following(contact.step)
        return contact.step


async def extract(ctx: IntakeContext, contact_id: int) -> None:
    """Sniff every document and read its text; each document is committed as soon as read,
    together with the files found inside it (archive members, attachments of an attached
    message) as new pending documents, so a crash resumes with whatever is still pending."""
    async with ctx.store.sessions() as session, session.begin():
        await session.execute(
            update(Contact).where(Contact.id == contact_id).values(status=PROCESSING)
        )
        pending = await _pending_documents(session, contact_id)
        if not pending:
            # A text message: nothing to read, so the step is this one transaction.
            await _advance(session, contact_id, "extract")
            return
    # Children are read in later rounds; depth and the contact's budget make this end.
    while pending:
        # The documents of one round go to the OCR pool together; each is recorded (and so
        # survives a crash) as soon as it is read.
        readings = [
            asyncio.ensure_future(_read(ctx, digest, filename, declared_type, depth))
            for _, digest, filename, declared_type, depth in pending
        ]
        try:
            for (document_id, *_), reading in zip(pending, readings, strict=True):
                await _record_reading(ctx, contact_id, document_id, await reading)
        finally:
            for reading in readings:
                reading.cancel()
        async with ctx.store.sessions() as session:
            pending = await _pending_documents(session, contact_id)
    async with ctx.store.sessions() as session, session.begin():
        await _advance(session, contact_id, "extract")


async def _advance(session: AsyncSession, contact_id: int, step: str) -> None:
    """Record, in the step's transaction, that ``step`` is done."""
    await session.execute(
        update(Contact).where(Contact.id == contact_id).values(step=following(step))
    )


async def _read(
    ctx: IntakeContext, digest: str, filename: str, declared_type: str, depth: int
) -> Reading:
    content = await asyncio.to_thread(ctx.store.blobs.get, digest)
    return await read_document(content, filename, declared_type, ctx.ocr, ctx.limits, depth)


async def _pending_documents(
    session: AsyncSession, contact_id: int
) -> list[tuple[int, str, str, str, int]]:
    rows = await session.execute(
        select(
            Document.id,
            Document.sha256,
            Document.filename,
            Document.declared_type,
            Document.depth,
        )
        .where(Document.contact_id == contact_id, Document.status == "pending")
        .order_by(Document.position)
    )
    return [(r.id, r.sha256, r.filename, r.declared_type, r.depth) for r in rows]


async def _record_reading(
    ctx: IntakeContext, contact_id: int, document_id: int, reading: Reading
) -> None:
    children = reading.children
    over_budget = await _over_contact_budget(ctx, contact_id, children) if children else None
    if over_budget:
        children = ()
    # Blobs first, durably (and off the loop): the rows that name them commit after.
    digests = await asyncio.to_thread(_put_blobs, ctx.store, children)
    async with ctx.store.sessions() as session, session.begin():
        document = await session.get_one(Document, document_id)
        document.sniffed_type = reading.sniffed_type
        document.type_mismatch = reading.type_mismatch is not None
        document.status = reading.status
        document.reason = reading.reason
        document.text = reading.text
        document.text_source = reading.text_source
        document.pages = reading.pages
        if over_budget:
            document.status = "partial" if reading.text else "refused"
            document.reason = "; ".join(r for r in (reading.reason, over_budget) if r)
        last = await session.scalar(
            select(func.max(Document.position)).where(Document.contact_id == contact_id)
        )
        for offset, (child, digest) in enumerate(zip(children, digests, strict=True), 1):
            session.add(
                Document(
                    contact_id=contact_id,
                    dossier_id=document.dossier_id,
                    parent_id=document.id,
                    depth=document.depth + 1,
                    position=(last or 0) + offset,
                    filename=child.filename,
                    declared_type=child.declared_type[:200],
                    sha256=digest,
                    size=len(child.content),
                    status=child.status,
                    reason=child.reason,
                    text_source=None if child.status == "pending" else "none",
                )
            )


async def _over_contact_budget(
    ctx: IntakeContext, contact_id: int, children: tuple[ChildFile, ...]
) -> str | None:
    """The archive limits hold for everything unpacked from one contact too: each archive
    within its limits can still nest into thousands of files."""
    async with ctx.store.sessions() as session:
        count, size = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(Document.size), 0)).where(
                    Document.contact_id == contact_id, Document.parent_id.is_not(None)
                )
            )
        ).one()
    count += len(children)
    size += sum(len(child.content) for child in children)
    limits = ctx.limits
    if count > limits.archive_max_members:
        return (
            f"archive limit: the contact would have {count} unpacked files, over the"
            f" {limits.archive_max_members}-file limit; not unpacked"
        )
    if size > limits.archive_max_total_bytes:
        return (
            f"archive limit: the contact would have {size} unpacked bytes, over the"
            f" {limits.archive_max_total_bytes}-byte limit; not unpacked"
        )
    return None


def _put_blobs(store: Store, children: tuple[ChildFile, ...]) -> list[str]:
    return [store.blobs.put(child.content) for child in children]


_MATCH_FACTS = select(
    Contact.intent, Contact.dossier_id, Contact.subject, Contact.text, Contact.entities
).where(Contact.id == bindparam("contact_id"))


async def match(ctx: IntakeContext, contact_id: int) -> None:
    """Attach the contact to its dossier, open one after the fact, or send it to review; the
    rules live in ``intake.dossiers``."""
    async with ctx.store.sessions() as session:
        intent, dossier_id, subject, text, entities = (
            await session.execute(_MATCH_FACTS, {"contact_id": contact_id})
        ).one()
    reads_event = intent in OPENING_INTENTS and dossier_id is None
    # spaCy may read the message for the event's place: CPU-bound, so off the event loop and
    # outside the transaction that locks the contact.
    event = (
        await asyncio.to_thread(read_event, subject, text, dict(entities or {}))
        if reads_event
        else None
    )
    policy = MatchPolicy(
        local_part=ctx.identity.local_part,
        domains=tuple(dict.fromkeys((ctx.identity.domain, *ctx.identity.own_domains))),
        claim_labels={code: kind.label_fr for code, kind in ctx.claim_types.items()},
        today=date.today(),
        intent_threshold=ctx.understanding.intent_threshold,
    )
    async with ctx.store.sessions() as session, session.begin():
        contact = await _load_contact(session, contact_id)
        await match_dossier(session, contact, policy, event)
        contact.step = following("match")


async def respond(ctx: IntakeContext, contact_id: int) -> None:
    """Queue (or hold) every reply the contact deserves (responders/decide.py) and finish it.

    Each reply has a key of its purpose and version, so a replayed step queues nothing twice.
    """
    async with ctx.store.sessions() as session, session.begin():
        contact = await _load_contact(session, contact_id)
        dossier = contact.dossier
        if dossier is not None:
            await session.refresh(dossier, ["beneficiary", "contract"])
        route = reply_route(contact, dossier, ctx.identity)
        skip = route if isinstance(route, str) else None
        facts = None
        if dossier is not None:
            last_request, completed = await _reply_history(session, dossier.id)
            facts = decide.DossierFacts(
                id=dossier.id,
                missing=tuple(dossier.missing),
                coverage=dossier.coverage,
                last_request=last_request,
                completed_rounds=completed,
            )
        plans = decide.decide(
            decide.ContactFacts(
                contact.id,
                contact.intent,
                skip,
                acknowledge=not isinstance(route, str) and route.acknowledge,
            ),
            facts,
            ctx.replies,
        )
        if skip is not None:
            audit(session, "responder", "reply.skipped", "contact", contact.id, note=skip)
        if isinstance(route, ReplyRoute):
            await _queue_plans(ctx, session, plans, route, contact, dossier)
        if contact.status == PROCESSING:
            contact.status = "processed"
        contact.step = following("respond")


async def _queue_plans(
    ctx: IntakeContext,
    session: AsyncSession,
    plans: list[decide.PlannedReply],
    route: ReplyRoute,
    contact: Contact,
    dossier: Dossier | None,
) -> None:
    inputs = ReplyInputs(
        contact, dossier, ctx.claim_types, ctx.renderer, ctx.identity, utcnow(), route
    )
    for plan in plans:
        attachments = None
        if plan.purpose == decide.ATTESTATION:
            # Checked before rendering so that a replay does not even build the PDF; every
            # other reply is checked by ``queue_reply`` itself.
            known = await session.scalar(
                select(OutboundMessage.id).where(OutboundMessage.idempotency_key == plan.key)
            )
            if known is not None:
                continue
            attachments = [await store_attestation(ctx.store.blobs, inputs)]
        await queue_reply(
            session,
            build_reply(plan, inputs, attachments),
            hold=plan.hold,
            cap=ctx.replies.max_automatic_per_hour,
        )


_REPLY_HISTORY = (
    select(OutboundMessage.idempotency_key, OutboundMessage.status, OutboundMessage.headers)
    .where(
        OutboundMessage.dossier_id == bindparam("dossier_id"),
        OutboundMessage.purpose.in_((decide.MISSING_DOCUMENTS, decide.COMPLETION)),
    )
    .order_by(OutboundMessage.id)
)


async def _reply_history(
    session: AsyncSession, dossier_id: int
) -> tuple[decide.RequestFacts | None, frozenset[int]]:
    """The dossier's latest missing-documents request and the rounds already completed."""
    rows = await session.execute(_REPLY_HISTORY, {"dossier_id": dossier_id})
    last: decide.RequestFacts | None = None
    completed: set[int] = set()
    for key, status, headers in rows:
        done = decide.completion_round(key)
        if done is not None:
            completed.add(done)
            continue
        found = decide.request_round(key)
        if found is None or found[1]:
            continue
        round_, _ = found
        if last is None or round_ >= last.round:
            last = decide.RequestFacts(
                round=round_,
                missing_digest=str((headers or {}).get(decide.MISSING_HEADER, "")),
                active=status in ("queued", "sending", "sent", "uncertain"),
            )
    return last, frozenset(completed)


async def evaluate_dossier(ctx: IntakeContext, contact_id: int) -> None:
    await evaluate(ctx.store, ctx.rules, contact_id, following("evaluate"))


async def understand(ctx: IntakeContext, contact_id: int) -> None:
    await classify(ctx.store, ctx.understanding, contact_id, following("classify"))


async def check_provider_invoices(ctx: IntakeContext, contact_id: int) -> None:
    await check_invoices(ctx.store, ctx.tariffs, contact_id, following("invoices"))


#: The pipeline as data: step name to step, in order (Mailman's pipelines are tuples too).
STEPS: dict[str, Step] = {
    UNPACK_STEP: unpack,
    "extract": extract,
    "classify": understand,
    "invoices": check_provider_invoices,
    "match": match,
    "evaluate": evaluate_dossier,
    "respond": respond,
}


#: The steps that read and change the contact's dossier (see ``ContactPipeline._hand_off``).
LOCKED_STEPS = frozenset({"evaluate", "respond"})

#: Steps that concern only some channels. Elsewhere the pipeline walks past them without a
#: transaction: the next step's commit records the progress, and a replay skips them again.
ONLY_FOR_CHANNELS: dict[str, frozenset[str]] = {"invoices": frozenset({"edi"})}


def applies(step: str, channel: str) -> bool:
    only = ONLY_FOR_CHANNELS.get(step)
    return only is None or channel in only


def following(step: str) -> str:
    """The step after ``step``; each step records it in the transaction that ends it."""
    names = list(STEPS)
    position = names.index(step) + 1
    return names[position] if position < len(names) else DONE


_STEP_AND_CHANNEL = select(Contact.step, Contact.channel).where(
    Contact.id == bindparam("contact_id")
)


class ContactPipeline:
    """Job handler that walks a contact through ``STEPS`` from wherever it stopped."""

    kind = CONTACT_JOB

    def __init__(self, ctx: IntakeContext) -> None:
        self.ctx = ctx

    async def run(self, job: ClaimedJob) -> None:
        async with self.ctx.store.sessions() as session:
            row = (
                await session.execute(_STEP_AND_CHANNEL, {"contact_id": job.subject_id})
            ).one_or_none()
        if row is None:
            return
        step, channel = row
        for _ in range(len(STEPS) + 1):
            if step is None or step == DONE:
                return
            if step not in STEPS:
                raise LookupError(f"contact {job.subject_id} is at unknown step {step!r}")
            if not applies(step, channel):
                step = following(step)
                continue
            if step in LOCKED_STEPS and self.ctx.dossier_locks and await self._hand_off(job):
                return
            log.debug("contact %s: %s", job.subject_id, step)
            recorded = await STEPS[step](self.ctx, job.subject_id)
            # Every step commits the next one in the transaction that ends it (``following``,
            # or the one it returns), so the store need not be asked again: a query less per
            # step of every contact.
            step = recorded or following(step)
        raise RuntimeError(f"contact {job.subject_id} did not finish its steps")

    async def _hand_off(self, job: ClaimedJob) -> bool:
        """Once matched, a contact's remaining steps change its dossier: they go on in a job
        holding the dossier's lock, so that two contacts of one dossier are never evaluated
        and answered at once (two documents arriving together would each see the other
        missing). True when this job handed off and ends here."""
        async with self.ctx.store.sessions() as session, session.begin():
            dossier_id = await session.scalar(
                select(Contact.dossier_id).where(Contact.id == job.subject_id)
            )
            if dossier_id is None or job.lock == jobs.dossier_lock(dossier_id):
                return False
            jobs.enqueue(session, CONTACT_JOB, job.subject_id, lock=jobs.dossier_lock(dossier_id))
        return True

    async def on_parked(self, session: AsyncSession, job: ClaimedJob, error: str) -> None:
        contact = await session.get(Contact, job.subject_id)
        if contact is None:
            return
        reason = f"step {contact.step} failed after {job.attempts} attempts: {error}"
        audit(
            session,
            "intake",
            "contact.failed",
            "contact",
            contact.id,
            before={"status": contact.status},
            after={"status": "failed"},
            note=reason,
        )
        contact.status = "failed"
        contact.status_reason = reason
