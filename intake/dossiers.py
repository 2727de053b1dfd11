"""Which dossier a contact belongs to (reference, thread, sender), or opening one after the fact."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import phonenumbers
from babel.dates import format_date
from babel.numbers import format_currency
from sqlalchemy import String, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.sql.elements import ColumnElement

from classifiers.claim_type import guess_cause, guess_claim_type
from classifiers.entities import EntityContext, extract_entities
from classifiers.places import find_place
from classifiers.references import find_references
from models.store import audit
from models.tables import Beneficiary, Contact, Contract, Dossier, OutboundMessage

__all__ = [
    "CONTINUING_INTENTS",
    "OPENING_INTENTS",
    "EventFacts",
    "MatchPolicy",
    "beneficiaries_for",
    "match_dossier",
    "read_event",
]

ACTOR = "intake:match"
#: Intents that carry on an existing dossier when the sender has exactly one open.
CONTINUING_INTENTS = frozenset(
    {"document_submission", "status_inquiry", "refund_request", "complaint", "attestation_request"}
)
#: Intents that open a dossier after the fact when the sender has none for that event.
OPENING_INTENTS = frozenset({"new_claim", "refund_request"})
#: A dossier in one of these is over: a new contact does not continue it.
FINISHED = frozenset({"closed", "refused", "paid"})
#: Below this, the claim type guessed from a message is no evidence of another event.
ANOTHER_EVENT_CONFIDENCE = 0.5
#: Days an SMS reply is taken to answer our last SMS about a dossier.
SMS_CONVERSATION_DAYS = 30
_REFERENCE_ATTEMPTS = 5
_DEFAULT_REGION = "FR"  # the back office's country: national numbers are French ones

_CAUSES_FR = {
    "theft": "vol",
    "burglary": "cambriolage",
    "vandalism": "vandalisme",
    "water_damage": "dégât des eaux",
    "fire": "incendie",
    "breakdown": "panne",
    "accident": "accident",
    "injury": "blessure",
    "illness": "maladie",
    "death": "décès",
    "loss": "perte",
}


@dataclass(frozen=True)
class EventFacts:
    """What a message says about the event it reports, for opening or telling events apart."""

    claim_type: str | None = None
    confidence: float = 0.0
    cause: str | None = None
    event_date: date | None = None
    place: str = ""
    amount: str | None = None
    currency: str | None = None


@dataclass(frozen=True)
class MatchPolicy:
    """What the rules need besides the store: our threading addresses, labels, the clock."""

    local_part: str
    domains: tuple[str, ...]
    claim_labels: Mapping[str, str]
    today: date
    intent_threshold: float = 0.45


def read_event(subject: str, text: str, entities: Mapping[str, Any]) -> EventFacts:
    """The event's facts from the message (CPU-bound: spaCy may run; call it off the loop)."""
    message = f"{subject}\n{text}" if subject else text
    guess = guess_claim_type(message)
    found: Mapping[str, Any] = entities
    if "date" not in found:
        found = {**extract_entities(message, EntityContext("message")), **entities}
    return EventFacts(
        claim_type=guess.claim_type,
        confidence=guess.confidence,
        cause=guess_cause(message),
        event_date=_as_date(found.get("date")),
        place=find_place(text or subject),
        amount=str(found["amount_total"]) if found.get("amount_total") else None,
        currency=str(found["currency"]) if found.get("currency") else None,
    )


def _as_date(value: object) -> date | None:
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- who is the sender


def _sender_email(sender: str) -> str | None:
    sender = sender.strip().lower()
    return sender if "@" in sender else None


def _phone(raw: str) -> str | None:
    """E.164 form of a phone number, national numbers read as French; None if not a number."""
    try:
        number = phonenumbers.parse(raw, _DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _sender_phone(sender: str) -> str | None:
    if "@" in sender or not re.search(r"\d{6}", re.sub(r"[\s.()-]", "", sender)):
        return None
    return _phone(sender)


def is_party(beneficiary: Beneficiary | None, sender: str) -> bool:
    """Whether ``sender`` is one of the beneficiary's addresses (email any case, phone E.164)."""
    if beneficiary is None:
        return False
    email = _sender_email(sender)
    if email is not None:
        return email in {str(e).strip().lower() for e in beneficiary.emails}
    phone = _sender_phone(sender)
    return phone is not None and phone in {_phone(str(p)) for p in beneficiary.phones}


def _like_escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def beneficiaries_for(session: AsyncSession, sender: str) -> list[Beneficiary]:
    """The beneficiaries whose emails or phones hold ``sender``, on SQLite and PostgreSQL.

    The addresses are JSON lists, which neither back end indexes portably; so the database
    prefilters with LIKE on the list's JSON text (the address as JSON writes it, quotes
    included) and Python checks exactly. That is a scan of one short column: a few
    milliseconds for tens of thousands of beneficiaries. Past a few hundred thousand, give
    addresses an indexed table of their own (one row per address) and query it instead.
    Phones are matched in the E.164 form the reference data import keeps.
    """
    email = _sender_email(sender)
    column: Any
    if email is not None:
        needle, column = json.dumps(email), Beneficiary.emails
    else:
        phone = _sender_phone(sender)
        if phone is None:
            return []
        needle, column = json.dumps(phone), Beneficiary.phones
    text: ColumnElement[str] = func.lower(cast(column, String))
    candidates = await session.scalars(
        select(Beneficiary)
        .where(text.like(f"%{_like_escaped(needle.lower())}%", escape="\\"))
        .order_by(Beneficiary.id)
    )
    return [b for b in candidates if is_party(b, sender)]


# --------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class _Decision:
    rule: str
    dossier: Dossier | None = None
    review: str | None = None
    open_for: Beneficiary | None = None


async def match_dossier(
    session: AsyncSession,
    contact: Contact,
    policy: MatchPolicy,
    event: EventFacts | None,
) -> Dossier | None:
    """Apply the rules in order, record the outcome on the contact with its audit event, and
    return the dossier the contact now belongs to (None when it goes to review).

    ``contact.documents`` must be loaded. ``event`` is what ``read_event`` read off the
    message; it is needed only for the opening intents (None otherwise).
    """
    if contact.dossier_id is not None:
        # Already decided (an earlier run of this step, or a gestionnaire): never undone here.
        return await session.get(Dossier, contact.dossier_id)
    decision = await _decide(session, contact, policy, event)
    if decision.open_for is not None:
        assert event is not None
        dossier = await _open_dossier(session, contact, decision.open_for, event, policy)
        return _attach(session, contact, dossier, f"opened after the fact: {dossier.ref}")
    if decision.dossier is not None:
        return _attach(session, contact, decision.dossier, decision.rule)
    _review(session, contact, decision.rule, decision.review or "no dossier found")
    return None


async def _decide(
    session: AsyncSession, contact: Contact, policy: MatchPolicy, event: EventFacts | None
) -> _Decision:
    if contact.dossier_hint:
        return await _label_rule(session, contact)
    by_reference, not_found = await _reference_rule(session, contact)
    if by_reference is not None:
        return by_reference
    by_thread = await _thread_rule(session, contact, policy)
    if by_thread is not None:
        return by_thread
    if not_found:
        # A precise reference that does not exist is a typo or someone else's: a person
        # decides rather than the sender's other dossiers guessing for them.
        return _Decision("reference not found", review=not_found)
    return await _sender_rule(session, contact, policy, event)


def _reference_places(contact: Contact) -> dict[str, str]:
    places = [("subject", contact.subject), ("body", contact.text)]
    places += [(f"document {d.filename}", d.text) for d in contact.documents]
    found: dict[str, str] = {}
    for place, text in places:
        for ref in find_references(text):
            found.setdefault(ref, place)
    for ref in find_references(str(contact.entities.get("dossier_ref") or "")):
        found.setdefault(ref, "classified entities")
    return found


async def _label_rule(session: AsyncSession, contact: Contact) -> _Decision:
    """Rule 0: the dossier a person labelled the contact with (a GED index sidecar) wins over
    every machine rule; a label naming no dossier goes to a person, never to a guess."""
    ref = contact.dossier_hint
    dossier = await session.scalar(select(Dossier).where(Dossier.ref == ref))
    if dossier is None:
        return _Decision("label not found", review=f"labelled dossier {ref} does not exist")
    return _Decision(f"labelled {ref} by {contact.sender or 'a person'}", dossier)


async def _reference_rule(
    session: AsyncSession, contact: Contact
) -> tuple[_Decision | None, str | None]:
    """Rule 1: a quoted reference that exists, quoted by someone party to that dossier."""
    found = _reference_places(contact)
    if not found:
        return None, None
    dossiers = (
        await session.scalars(
            select(Dossier)
            .where(Dossier.ref.in_(found))
            .options(selectinload(Dossier.beneficiary))
            .order_by(Dossier.ref)
        )
    ).all()
    if not dossiers:
        return None, "quoted reference not found: " + ", ".join(found)
    party = [d for d in dossiers if is_party(d.beneficiary, contact.sender)]
    strangers = [d for d in dossiers if d not in party]
    if len(party) > 1:
        refs = ", ".join(d.ref for d in party)
        return _Decision("reference: several", review=f"several dossiers quoted: {refs}"), None
    if strangers:
        refs = ", ".join(d.ref for d in strangers)
        sender = contact.sender or "an unknown sender"
        noun = "reference" if len(strangers) == 1 else "references"
        that = "that dossier" if len(strangers) == 1 else "those dossiers"
        return (
            _Decision(
                "reference: sender not party",
                review=f"{noun} {refs} quoted by {sender} who is not party to {that}",
            ),
            None,
        )
    dossier = party[0]
    return _Decision(f"reference {dossier.ref} in {found[dossier.ref]}", dossier), None


async def _thread_rule(
    session: AsyncSession, contact: Contact, policy: MatchPolicy
) -> _Decision | None:
    """Rule 2: a reply to one of our messages, by its Message-ID or our Reply-To token; on SMS
    and chat, the conversation the message continues."""
    if contact.channel == "sms":
        return await _sms_conversation(session, contact, policy)
    if contact.channel == "chat":
        return await _chat_conversation(session, contact)
    if contact.channel != "email":
        return None
    replied = [i for i in (contact.in_reply_to, *reversed(contact.references)) if i]
    for message_id in dict.fromkeys(replied):
        ours = await session.scalar(
            select(OutboundMessage)
            .where(OutboundMessage.message_id == message_id)
            .options(selectinload(OutboundMessage.contact))
        )
        dossier = await _dossier_of(session, ours)
        if dossier is not None:
            return _Decision(f"thread: reply to our message {message_id}", dossier)
    for token in _reply_tokens(contact.recipients, policy):
        ours = await session.scalar(
            select(OutboundMessage)
            .where(_message_id_starts(session, f"{token}."))
            .options(selectinload(OutboundMessage.contact))
            .order_by(OutboundMessage.id)
            .limit(1)
        )
        dossier = await _dossier_of(session, ours)
        if dossier is not None:
            return _Decision(f"thread: reply-to token {token}", dossier)
    return None


async def _sms_conversation(
    session: AsyncSession, contact: Contact, policy: MatchPolicy
) -> _Decision | None:
    """An SMS answering ours: the latest SMS we sent this number about a dossier, recently.

    SMS has no threading header; a person answers the last message they got, so that is the
    conversation, within a window after which an old dossier is no longer assumed.
    """
    since = datetime.combine(
        policy.today - timedelta(days=SMS_CONVERSATION_DAYS), time.min, tzinfo=UTC
    )
    ours = await session.scalar(
        select(OutboundMessage)
        .where(
            OutboundMessage.channel == "sms",
            OutboundMessage.recipient == contact.sender,
            OutboundMessage.dossier_id.is_not(None),
            OutboundMessage.status == "sent",
            OutboundMessage.created_at >= since,
        )
        .order_by(OutboundMessage.id.desc())
        .limit(1)
    )
    dossier = await _dossier_of(session, ours)
    if ours is None or dossier is None:
        return None
    rule = f"thread: SMS conversation, our message {ours.id} about {dossier.ref}"
    return _Decision(rule, dossier)


async def _chat_conversation(session: AsyncSession, contact: Contact) -> _Decision | None:
    """A chat message continues its conversation: the dossier of its earlier messages."""
    conversation, sep, _ = contact.natural_key.partition(":")
    if not sep:
        return None
    earlier = await session.scalar(
        select(Contact)
        .where(
            Contact.channel == "chat",
            Contact.natural_key.startswith(f"{conversation}:", autoescape=True),
            Contact.dossier_id.is_not(None),
            Contact.id != contact.id,
        )
        .order_by(Contact.id.desc())
        .limit(1)
    )
    if earlier is None or earlier.dossier_id is None:
        return None
    dossier = await session.get(Dossier, earlier.dossier_id)
    if dossier is None:
        return None
    return _Decision(f"thread: chat conversation {conversation} about {dossier.ref}", dossier)


def _message_id_starts(session: AsyncSession, prefix: str) -> ColumnElement[bool]:
    # Both forms use the message_id index: GLOB is SQLite's case-sensitive LIKE (its LIKE
    # ignores case and so cannot), and PostgreSQL's index has the pattern operator class.
    # The prefix is hex and a dot: no wildcard to escape.
    if session.get_bind().dialect.name == "sqlite":
        return OutboundMessage.message_id.op("GLOB")(prefix + "*")
    return OutboundMessage.message_id.like(prefix + "%")


def _reply_tokens(recipients: Sequence[Any], policy: MatchPolicy) -> list[str]:
    tokens: list[str] = []
    for address in recipients:
        local, _, domain = str(address).strip().lower().rpartition("@")
        base, plus, token = local.partition("+")
        ours = plus and base == policy.local_part.lower() and domain in policy.domains
        if ours and re.fullmatch(r"[0-9a-f]{8,64}", token) and token not in tokens:
            tokens.append(token)
    return tokens


async def _dossier_of(session: AsyncSession, message: OutboundMessage | None) -> Dossier | None:
    if message is None:
        return None
    dossier_id = message.dossier_id or (message.contact.dossier_id if message.contact else None)
    return await session.get(Dossier, dossier_id) if dossier_id is not None else None


def _another_event(event: EventFacts | None, dossier: Dossier, *, by_date: bool) -> str | None:
    """Why the message reports another event than ``dossier``'s, or None if it may be the same."""
    if event is None:
        return None
    if (
        event.claim_type is not None
        and event.confidence >= ANOTHER_EVENT_CONFIDENCE
        and event.claim_type != dossier.claim_type
    ):
        return f"{event.claim_type}, not {dossier.claim_type}"
    if (
        by_date
        and event.event_date
        and dossier.event_date
        and event.event_date != dossier.event_date
    ):
        return f"event on {event.event_date.isoformat()}, not {dossier.event_date.isoformat()}"
    return None


async def _sender_rule(
    session: AsyncSession, contact: Contact, policy: MatchPolicy, event: EventFacts | None
) -> _Decision:
    """Rules 3 and 4: the sender's one open dossier, else open one after the fact, else review."""
    people = await beneficiaries_for(session, contact.sender) if contact.sender else []
    intent = contact.intent
    if not people:
        who = contact.sender or "no sender address"
        return _Decision("no match", review=f"no dossier reference found; unknown sender {who}")
    if len(people) > 1:
        names = ", ".join(p.name for p in people)
        return _Decision(
            "sender: several beneficiaries",
            review=f"no dossier reference found; {contact.sender} belongs to several"
            f" beneficiaries: {names}",
        )
    person = people[0]
    sure = contact.intent_confidence is None or contact.intent_confidence >= policy.intent_threshold
    if intent is None or not sure or intent not in CONTINUING_INTENTS | OPENING_INTENTS:
        shown = f"{intent} at {contact.intent_confidence:.2f}" if intent and not sure else intent
        return _Decision(
            "sender: intent does not continue a dossier",
            review=f"no dossier reference found; {person.name} is known but the intent"
            f" ({shown}) neither continues nor opens a dossier",
        )
    open_dossiers = (
        await session.scalars(
            select(Dossier)
            .where(Dossier.beneficiary_id == person.id, Dossier.status.not_in(FINISHED))
            .order_by(Dossier.ref)
        )
    ).all()
    # A new claim that reports another event (or a refund for another kind of claim) is not
    # the open dossier's business; a refund's date is usually the invoice's, so only a new
    # claim's date tells events apart.
    same_event = [
        d
        for d in open_dossiers
        if _another_event(event, d, by_date=intent == "new_claim") is None
        or intent not in OPENING_INTENTS
    ]
    if len(same_event) == 1:
        dossier = same_event[0]
        return _Decision(f"sender {contact.sender}: one open dossier {dossier.ref}", dossier)
    if len(same_event) > 1:
        refs = ", ".join(d.ref for d in same_event)
        return _Decision(
            "sender: several open dossiers",
            review=f"no dossier reference found; {person.name} has several open dossiers: {refs}",
        )
    if intent in OPENING_INTENTS and event is not None:
        return _Decision("opened after the fact", open_for=person)
    return _Decision(
        "sender: no open dossier",
        review=f"no dossier reference found; {person.name} has no open dossier",
    )


# --------------------------------------------------------------------------- outcomes


def _attach(session: AsyncSession, contact: Contact, dossier: Dossier, rule: str) -> Dossier:
    contact.dossier_id = dossier.id
    contact.match_rule = rule[:200]
    for document in contact.documents:
        document.dossier_id = dossier.id
    audit(
        session,
        ACTOR,
        "contact.attached",
        "contact",
        contact.id,
        before={"dossier": None},
        after={"dossier": dossier.ref, "rule": contact.match_rule},
    )
    return dossier


def _review(session: AsyncSession, contact: Contact, rule: str, reason: str) -> None:
    contact.match_rule = rule[:200]
    # Keep what the classify step already doubted: the gestionnaire needs both.
    earlier = contact.status_reason if contact.status == "needs_review" else None
    contact.status = "needs_review"
    contact.status_reason = (
        f"{earlier}; {reason}" if earlier and reason not in earlier else earlier or reason
    )
    audit(
        session,
        ACTOR,
        "contact.needs_review",
        "contact",
        contact.id,
        after={"rule": contact.match_rule},
        note=reason,
    )


async def _contract_for(
    session: AsyncSession, person: Beneficiary, on: date, claim_type: str | None
) -> Contract | None:
    """The contract in force on ``on`` covering the claim type, else any in force, else None."""
    contracts = (
        await session.scalars(
            select(Contract)
            .where(
                Contract.beneficiary_id == person.id,
                Contract.starts_on <= on,
                Contract.ends_on >= on,
            )
            .options(selectinload(Contract.guarantees))
            .order_by(Contract.starts_on.desc(), Contract.id)
        )
    ).all()
    covering = [
        c
        for c in contracts
        if claim_type and any(claim_type in g.claim_types for g in c.guarantees)
    ]
    chosen = covering or list(contracts)
    return chosen[0] if chosen else None


async def _open_dossier(
    session: AsyncSession,
    contact: Contact,
    person: Beneficiary,
    event: EventFacts,
    policy: MatchPolicy,
) -> Dossier:
    contract = await _contract_for(
        session, person, event.event_date or policy.today, event.claim_type
    )
    fields: dict[str, Any] = {
        "contract_id": contract.id if contract else None,
        "beneficiary_id": person.id,
        "claim_type": event.claim_type or "unknown",
        "claim_type_confidence": event.confidence,
        "cause": event.cause,
        "event_date": event.event_date,
        "event_place": event.place[:200],
        "status": "awaiting_documents",
        "opened_after_the_fact": True,
        "summary": situation_summary(contact, person, event, policy.claim_labels),
    }
    dossier = await _insert_with_new_reference(session, fields, policy.today.year)
    audit(
        session,
        ACTOR,
        "dossier.opened",
        "dossier",
        dossier.ref,
        before=None,
        after={
            **{k: v for k, v in fields.items() if k not in ("event_date", "contract_id")},
            "ref": dossier.ref,
            "contract": contract.number if contract else None,
            "event_date": event.event_date.isoformat() if event.event_date else None,
            "contact": contact.id,
        },
    )
    return dossier


async def next_reference(session: AsyncSession, year: int) -> str:
    """The reference after the highest of ``year`` (fixed width, so text order is number order)."""
    prefix = f"AS-{year}-"
    highest = await session.scalar(
        select(func.max(Dossier.ref)).where(Dossier.ref.like(f"{prefix}%"))
    )
    number = int(highest[len(prefix) :]) + 1 if highest else 1
    return f"{prefix}{number:06d}"


async def _insert_with_new_reference(
    session: AsyncSession, fields: dict[str, Any], year: int
) -> Dossier:
    # Two workers may read the same highest reference: the unique constraint refuses the
    # second insert, whose savepoint rolls back and reads again (the winner is committed by
    # then, since PostgreSQL made the loser wait for it).
    for _ in range(_REFERENCE_ATTEMPTS):
        dossier = Dossier(ref=await next_reference(session, year), **fields)
        try:
            async with session.begin_nested():
                session.add(dossier)
        except IntegrityError:
            continue
        return dossier
    raise RuntimeError(f"no free dossier reference for {year} after {_REFERENCE_ATTEMPTS} tries")


# --------------------------------------------------------------------------- summary


def situation_summary(
    contact: Contact, person: Beneficiary, event: EventFacts, labels: Mapping[str, str]
) -> str:
    """Two or three French sentences so a gestionnaire understands without rereading."""
    what = labels.get(event.claim_type or "", "") if event.claim_type else ""
    what = f"un sinistre « {what} »" if what else "un sinistre de nature à préciser"
    if event.cause:
        what += f" (cause : {_CAUSES_FR.get(event.cause, event.cause)})"
    when = (
        f" survenu le {format_date(event.event_date, 'd MMMM y', locale='fr')}"
        if (event.event_date)
        else ", date non précisée"
    )
    where = f" à {event.place}" if event.place else ""
    via = f"par {contact.channel}" if contact.channel != "email" else "par e-mail"
    first = f"{person.name} ({contact.sender}) déclare après coup, {via}, {what}{when}{where}."
    amount = _amount(event)
    if contact.intent == "refund_request":
        ask = f"{person.name} demande le remboursement{f' de {amount}' if amount else ''}."
    else:
        ask = f"{person.name} demande l'ouverture d'un dossier"
        ask += f" ; montant indiqué : {amount}." if amount else "."
    excerpt = " ".join((contact.text or contact.subject).split())
    if len(excerpt) > 180:
        excerpt = excerpt[:177].rsplit(" ", 1)[0] + "…"
    quoted = f" Message : « {excerpt} »" if excerpt else ""
    return f"{first} {ask}{quoted}".strip()


def _amount(event: EventFacts) -> str | None:
    if not event.amount:
        return None
    try:
        value = Decimal(event.amount)
    except InvalidOperation:
        return None
    if event.currency:
        return format_currency(value, event.currency, locale="fr")
    return f"{value}"
