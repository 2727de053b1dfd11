"""EDI in: UN/EDIFACT INVOIC interchanges (drop folder, HTTP upload), syntax checks, CONTRL out."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from pydifact.control.characters import Characters
from pydifact.parser import Parser
from pydifact.segments import Segment, SegmentFactory
from pydifact.serializer import Serializer
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from channels.drops import DropFolder, TryLater, move_done, move_error
from models.blobs import BlobStoreError, InsufficientStorage, write_durably
from models.clock import utcnow
from models.inbound import InboundContact
from models.store import Envelope, Store, audit
from models.tables import EdiInterchange, ProviderInvoice

log = logging.getLogger(__name__)

#: What a 503 asks the uploader to wait before sending the interchange again.
RETRY_AFTER_SECONDS = 60

CHANNEL = "edi"
#: The UNA of syntax 3 with a decimal point, used when an interchange has no UNA (and in ours).
DEFAULT_SERVICE_CHARACTERS = ":+.? '"

# Syntax error codes of the CONTRL message (UN/EDIFACT data element 0085).
INVALID_VALUE = "12"
MISSING = "13"
NOT_SUPPORTED_IN_POSITION = "15"
UNSPECIFIED = "18"
INVALID_CHARACTER = "21"
REFERENCES_DO_NOT_MATCH = "28"
COUNT_DOES_NOT_MATCH = "29"
# Action codes (data element 0083).
ACKNOWLEDGED = "7"
REJECTED = "4"

#: Character sets of the UNB syntax identifier, as Python codecs.
_CHARSETS = {
    "UNOA": "ascii",
    "UNOB": "ascii",
    "UNOC": "iso8859-1",
    "UNOD": "iso8859-2",
    "UNOE": "iso8859-5",
    "UNOF": "iso8859-7",
    "UNOW": "utf-8",
    "UNOY": "utf-8",
}
_DOSSIER_REF = re.compile(r"^AS-?(\d{4})-?(\d{6})$")
_NUMERIC = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_MAX_AMOUNT = Decimal(10) ** 12


class NotEdifact(ValueError):
    """The bytes are not a UN/EDIFACT interchange at all: nothing to store, nothing to answer."""


@dataclass(frozen=True)
class SyntaxProblem:
    """What the checks found wrong, and where, in the terms a CONTRL reports it."""

    code: str
    reason: str
    segment: str
    #: Position of the segment in its message (UNH is 1); None for the interchange envelope.
    position: int | None = None
    element: int | None = None
    component: int | None = None


@dataclass(frozen=True)
class InvoiceLine:
    number: str
    service: str
    description: str = ""
    quantity: Decimal | None = None
    unit: str = ""
    unit_price: Decimal | None = None
    amount: Decimal | None = None
    vat_rate: Decimal | None = None

    def to_json(self) -> dict[str, Any]:
        def text(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        return {
            "number": self.number,
            "service": self.service,
            "description": self.description,
            "quantity": text(self.quantity),
            "unit": self.unit,
            "unit_price": text(self.unit_price),
            "amount": text(self.amount),
            "vat_rate": text(self.vat_rate),
        }


@dataclass(frozen=True)
class InvoiceMessage:
    """One message of the interchange, read as an invoice (partly, when it is rejected)."""

    reference: str
    message_type: str
    #: The UNH message identifier: type, version, release, agency (and association code).
    identifier: tuple[str, ...] = ()
    number: str = ""
    provider_id: str = ""
    provider_name: str = ""
    invoice_date: date | None = None
    service_date: date | None = None
    dossier_ref: str = ""
    currency: str = ""
    lines: tuple[InvoiceLine, ...] = ()
    total_lines: Decimal | None = None
    taxable: Decimal | None = None
    vat: Decimal | None = None
    total: Decimal | None = None
    problem: SyntaxProblem | None = None


@dataclass(frozen=True)
class Interchange:
    sender: str
    sender_qualifier: str
    recipient: str
    recipient_qualifier: str
    reference: str
    syntax: tuple[str, str]
    messages: tuple[InvoiceMessage, ...] = ()
    problem: SyntaxProblem | None = None

    @property
    def status(self) -> str:
        if self.problem is not None:
            return "rejected"
        if any(m.problem for m in self.messages):
            return "partly_accepted" if any(not m.problem for m in self.messages) else "rejected"
        return "accepted"

    @property
    def natural_key(self) -> str:
        return f"{self.sender}:{self.reference}"


def normalise_dossier_ref(value: str) -> str:
    """``AS2026010051`` and ``AS-2026-010051`` are the same dossier; other references stay."""
    cleaned = value.strip().upper()
    found = _DOSSIER_REF.match(cleaned)
    return f"AS-{found[1]}-{found[2]}" if found else cleaned


# --- reading -------------------------------------------------------------------------------


class PlainSegmentFactory(SegmentFactory):
    """pydifact's factory validates against directories it does not ship (and warns about it):
    the checks that matter here are done below, so segments are created as they are."""

    @staticmethod
    def create_segment(
        name: str,
        *elements: Any,
        validate: bool = True,
        version: str = "",
        directory: str = "",
    ) -> Segment:
        return SegmentFactory.create_segment(
            name, *elements, validate=False, version=version, directory=directory
        )


@dataclass
class _Segment:
    tag: str
    elements: list[Any]
    #: Index in the interchange, UNB being 0.
    index: int

    def value(self, element: int, component: int = 0) -> str:
        if element >= len(self.elements):
            return ""
        found = self.elements[element]
        if isinstance(found, list):
            return str(found[component]) if component < len(found) else ""
        return str(found) if component == 0 else ""


def _characters(text: str) -> tuple[Characters, str]:
    """The service characters (UNA or the defaults) and the text from UNB on."""
    if text.startswith("UNA"):
        if len(text) < 9:
            raise NotEdifact("UNA service string advice is shorter than 6 characters")
        advice = text[3:9]
        if len(set(advice[:2] + advice[3] + advice[5])) != 4:
            raise NotEdifact(f"UNA service string advice {advice!r} repeats a separator")
        return Characters.from_str(text[:9]), text[9:].lstrip("\r\n")
    return Characters.from_str(DEFAULT_SERVICE_CHARACTERS), text


def _decode(raw: bytes) -> str:
    # The header is ASCII whatever the character set; the set itself is named in UNB.
    head = raw.lstrip(b"\xef\xbb\xbf\r\n\t ").decode("latin-1")
    if not head.startswith(("UNA", "UNB")):
        raise NotEdifact("not a UN/EDIFACT interchange: it must start with UNA or UNB")
    start = head.find("UNB")
    charset = _CHARSETS.get(head[start + 4 : start + 8], "iso8859-1") if start >= 0 else "latin-1"
    try:
        return raw.lstrip(b"\xef\xbb\xbf\r\n\t ").decode(charset)
    except UnicodeDecodeError:
        # Kept readable; the characters outside the declared set are reported by the checks.
        return head


def _release_problems(text: str, chars: Characters) -> dict[int, tuple[str, int]]:
    """Segment index (UNB = 0) -> (bad sequence, element position) for each release character
    that escapes nothing: pydifact silently takes the next character as data."""
    release, terminator = chars.escape_character, chars.segment_terminator
    escapable = {chars.component_separator, chars.data_separator, release, terminator}
    if chars.reserved_character.strip():
        escapable.add(chars.reserved_character)  # the repetition separator of syntax 4
    found: dict[int, tuple[str, int]] = {}
    segment = element = 0
    position = 0
    while position < len(text):
        char = text[position]
        if char == release:
            following = text[position + 1 : position + 2]
            if following not in escapable:
                found.setdefault(segment, (char + following, element))
            position += 2
            continue
        if char == terminator:
            segment, element = segment + 1, 0
        elif char == chars.data_separator:
            element += 1
        position += 1
    return found


def _tokenise(text: str, chars: Characters) -> tuple[list[_Segment], str | None]:
    """Every segment pydifact could read, and why it stopped early (None when it did not)."""
    parser = Parser(factory=PlainSegmentFactory(), characters=chars)
    segments: list[_Segment] = []
    try:
        for segment in parser.parse(text, characters=chars):
            segments.append(_Segment(segment.tag, list(segment.elements), len(segments)))
    except Exception as exc:  # pydifact raises several types for a broken file
        return segments, str(exc).removeprefix("EDIFACT Syntax Error: ")
    return segments, None


def read_interchange(raw: bytes) -> Interchange:
    """Parse and check one interchange. Raises ``NotEdifact`` when the bytes cannot be taken
    for EDIFACT or name no sender and reference; every other fault is reported on the result
    (interchange or message ``problem``) so that the interchange is kept and answered."""
    text = _decode(raw).strip("\r\n\t ")
    chars, body = _characters(text)
    if not body.startswith("UNB" + chars.data_separator):
        raise NotEdifact("not a UN/EDIFACT interchange: no UNB interchange header")
    segments, stopped = _tokenise(body, chars)
    if not segments or segments[0].tag != "UNB":
        raise NotEdifact(f"UNB interchange header cannot be read: {stopped or 'empty'}")
    unb = segments[0]
    sender, reference = unb.value(1), unb.value(4)
    if not sender or not reference:
        raise NotEdifact("UNB names no interchange sender or no control reference")
    bad_releases = _release_problems(body, chars)
    messages, problem = _walk(segments, chars.decimal_point, bad_releases)
    if stopped is not None:
        problem = SyntaxProblem(
            MISSING,
            f"interchange truncated or unreadable after segment {len(segments)}: {stopped}",
            "UNZ",
        )
    elif problem is None:
        try:
            body.encode(_CHARSETS.get(unb.value(0), "iso8859-1"))
        except UnicodeEncodeError as exc:
            problem = SyntaxProblem(INVALID_CHARACTER, f"character outside the set: {exc}", "UNB")
    return Interchange(
        sender=sender,
        sender_qualifier=unb.value(1, 1),
        recipient=unb.value(2),
        recipient_qualifier=unb.value(2, 1),
        reference=reference,
        syntax=(unb.value(0) or "UNOC", unb.value(0, 1) or "3"),
        messages=tuple(messages),
        problem=problem,
    )


def _walk(
    segments: list[_Segment], decimal_point: str, bad_releases: dict[int, tuple[str, int]]
) -> tuple[list[InvoiceMessage], SyntaxProblem | None]:
    """Split the interchange into messages and check the envelope: UNH/UNT, UNZ."""
    messages: list[InvoiceMessage] = []
    problem: SyntaxProblem | None = None
    reference = segments[0].value(4)
    position = 1
    seen_unz = False
    while position < len(segments):
        segment = segments[position]
        if segment.tag == "UNH":
            end = position + 1
            while end < len(segments) and segments[end].tag not in ("UNT", "UNH", "UNZ"):
                end += 1
            closed = end < len(segments) and segments[end].tag == "UNT"
            body = segments[position : end + 1] if closed else segments[position:end]
            messages.append(_message(body, closed, decimal_point, bad_releases))
            position = end + 1 if closed else end
            continue
        if segment.tag == "UNZ":
            seen_unz = True
            problem = _check_unz(segment, reference, len(messages))
            if position != len(segments) - 1:
                problem = problem or SyntaxProblem(
                    NOT_SUPPORTED_IN_POSITION,
                    f"segment {segments[position + 1].tag} after UNZ",
                    segments[position + 1].tag,
                )
            break
        return messages, SyntaxProblem(
            NOT_SUPPORTED_IN_POSITION,
            f"segment {segment.tag} outside a message (functional groups are not supported)",
            segment.tag,
        )
    if not seen_unz:
        problem = SyntaxProblem(MISSING, "interchange truncated: no UNZ trailer", "UNZ")
    return messages, problem


def _check_unz(unz: _Segment, reference: str, count: int) -> SyntaxProblem | None:
    if unz.value(1) != reference:
        return SyntaxProblem(
            REFERENCES_DO_NOT_MATCH,
            f"UNZ reference {unz.value(1)!r} does not match UNB reference {reference!r}",
            "UNZ",
            element=2,
        )
    if unz.value(0) != str(count):
        return SyntaxProblem(
            COUNT_DOES_NOT_MATCH,
            f"UNZ counts {unz.value(0)!r} messages, the interchange has {count}",
            "UNZ",
            element=1,
        )
    return None


def _message(
    body: list[_Segment], closed: bool, decimal_point: str, bad_releases: dict[int, tuple[str, int]]
) -> InvoiceMessage:
    unh = body[0]
    reference, message_type = unh.value(0), unh.value(1)
    problem: SyntaxProblem | None = None
    if not closed:
        problem = SyntaxProblem(MISSING, f"message {reference!r} has no UNT trailer", "UNT")
    else:
        unt = body[-1]
        if unt.value(1) != reference:
            problem = SyntaxProblem(
                REFERENCES_DO_NOT_MATCH,
                f"UNT reference {unt.value(1)!r} does not match UNH reference {reference!r}",
                "UNT",
                len(body),
                element=2,
            )
        elif unt.value(0) != str(len(body)):
            problem = SyntaxProblem(
                COUNT_DOES_NOT_MATCH,
                f"UNT counts {unt.value(0)!r} segments, the message has {len(body)}",
                "UNT",
                len(body),
                element=1,
            )
    for number, segment in enumerate(body, 1):
        if problem is None and segment.index in bad_releases:
            sequence, element = bad_releases[segment.index]
            problem = SyntaxProblem(
                INVALID_CHARACTER,
                f"release character in {sequence!r} escapes nothing (segment {segment.tag})",
                segment.tag,
                number,
                element=element,
            )
    if problem is None and message_type != "INVOIC":
        problem = SyntaxProblem(
            INVALID_VALUE, f"message type {message_type!r} is not supported", "UNH", 1, 2
        )
    invoice, read_problem = _read_invoice(body, decimal_point)
    identifier = unh.elements[1] if len(unh.elements) > 1 else message_type
    fields = {
        **invoice,
        "reference": reference,
        "message_type": message_type,
        "identifier": tuple(identifier) if isinstance(identifier, list) else (identifier,),
    }
    return InvoiceMessage(**fields, problem=problem or read_problem)


def _read_invoice(
    body: list[_Segment], decimal_point: str
) -> tuple[dict[str, Any], SyntaxProblem | None]:
    """The invoice's business content; an unreadable amount or date is a syntax problem."""
    found: dict[str, Any] = {}
    references: dict[str, str] = {}
    lines: list[dict[str, Any]] = []
    summary = False
    problems: list[SyntaxProblem] = []

    def amount(segment: _Segment, number: int, element: int, component: int) -> Decimal | None:
        value = segment.value(element, component)
        if not value:
            return None
        text = value.replace(decimal_point, ".")
        # Decimal also reads "NaN", "Infinity" and "1E+400": no EDIFACT numeric is one, and
        # the money columns (Numeric(14, 2)) could not hold them.
        if not _NUMERIC.fullmatch(text):
            wrong = f"{segment.tag}: {value!r} is not a number"
        elif abs(parsed := Decimal(text)) >= _MAX_AMOUNT:
            wrong = f"{segment.tag}: {value!r} is out of range"
        else:
            return parsed
        problems.append(
            SyntaxProblem(INVALID_VALUE, wrong, segment.tag, number, element + 1, component + 1)
        )
        return None

    for number, segment in enumerate(body, 1):
        tag = segment.tag
        line = lines[-1] if lines and not summary else None
        if tag == "BGM":
            found["number"] = segment.value(1)
        elif tag == "DTM":
            when = _date(segment, number, problems)
            qualifier = segment.value(0)
            if qualifier == "137":
                found["invoice_date"] = when
            elif qualifier == "35":
                found["service_date"] = when
        elif tag == "RFF" and line is None:
            references.setdefault(segment.value(0), segment.value(0, 1))
        elif tag == "NAD" and segment.value(0) == "SU":
            found["provider_id"] = segment.value(1)
            found["provider_name"] = segment.value(3) or segment.value(2)
        elif tag == "CUX":
            found["currency"] = segment.value(0, 1)
        elif tag == "LIN":
            lines.append({"number": segment.value(0), "service": segment.value(2)})
        elif tag == "IMD" and line is not None:
            line["description"] = segment.value(2, 3) or segment.value(2, 0)
        elif tag == "QTY" and line is not None:
            line["quantity"] = amount(segment, number, 0, 1)
            line["unit"] = segment.value(0, 2)
        elif tag == "PRI" and line is not None:
            line["unit_price"] = amount(segment, number, 0, 1)
        elif tag == "TAX" and segment.value(1) == "VAT":
            rate = amount(segment, number, 4, 3)
            if line is not None:
                line["vat_rate"] = rate
            else:
                found["vat_rate"] = rate
        elif tag == "MOA":
            qualifier = segment.value(0)
            if qualifier == "203" and line is not None:
                line["amount"] = amount(segment, number, 0, 1)
            elif qualifier in _TOTALS:
                found[_TOTALS[qualifier]] = amount(segment, number, 0, 1)
        elif tag == "UNS":
            summary = True
    # A line without its own rate is taxed at the invoice's rate (summary TAX).
    rate = found.pop("vat_rate", None)
    found["lines"] = tuple(InvoiceLine(**{"vat_rate": rate, **line}) for line in lines)
    reference = references.get("ON") or next(iter(references.values()), "")
    found["dossier_ref"] = normalise_dossier_ref(reference) if reference else ""
    return found, problems[0] if problems else None


_TOTALS = {"79": "total_lines", "125": "taxable", "124": "vat", "77": "total"}


def _date(segment: _Segment, number: int, problems: list[SyntaxProblem]) -> date | None:
    value, form = segment.value(0, 1), segment.value(0, 2) or "102"
    formats = {"102": "%Y%m%d", "203": "%Y%m%d%H%M"}
    try:
        return datetime.strptime(value, formats[form]).date()
    except (KeyError, ValueError):
        problems.append(
            SyntaxProblem(
                INVALID_VALUE,
                f"DTM: {value!r} is not a date in format {form}",
                "DTM",
                number,
                1,
                2,
            )
        )
        return None


# --- CONTRL --------------------------------------------------------------------------------


def contrl_for(interchange: Interchange, control_reference: str, now: datetime) -> str:
    """The CONTRL that answers ``interchange``: UCI for the interchange, UCM for each message,
    UCS/UCD pointing at the segment and element in error; sender and recipient swapped."""
    problem = interchange.problem
    uci: list[Any] = [
        interchange.reference,
        [interchange.sender, interchange.sender_qualifier],
        [interchange.recipient, interchange.recipient_qualifier],
        REJECTED if problem else ACKNOWLEDGED,
    ]
    if problem is not None:
        uci += [problem.code, problem.segment]
        if problem.element is not None:
            uci.append(_element_id(problem))
    body = [Segment("UCI", *uci)]
    for message in interchange.messages if problem is None else ():
        wrong = message.problem
        ucm: list[Any] = [
            message.reference,
            list(message.identifier[:4]) or [message.message_type],
            REJECTED if wrong else ACKNOWLEDGED,
        ]
        if wrong is not None and wrong.segment in ("UNH", "UNT") and wrong.position in (1, None):
            ucm += [wrong.code, wrong.segment]
        elif wrong is not None and wrong.segment == "UNT":
            ucm += [wrong.code, "UNT"]
        body.append(Segment("UCM", *ucm))
        if wrong is not None and wrong.segment not in ("UNH", "UNT") and wrong.position:
            body.append(Segment("UCS", str(wrong.position), wrong.code))
            if wrong.element is not None:
                body.append(Segment("UCD", wrong.code, _element_id(wrong)))
    segments = [
        Segment(
            "UNB",
            [interchange.syntax[0], interchange.syntax[1]],
            [interchange.recipient, interchange.recipient_qualifier],
            [interchange.sender, interchange.sender_qualifier],
            [f"{now:%y%m%d}", f"{now:%H%M}"],
            control_reference,
        ),
        Segment("UNH", "1", ["CONTRL", "D", "3", "UN"]),
        *body,
        Segment("UNT", str(len(body) + 2), "1"),
        Segment("UNZ", "1", control_reference),
    ]
    chars = Characters.from_str(DEFAULT_SERVICE_CHARACTERS)
    return Serializer(chars).serialize(segments, with_una_header=True, break_lines=True)


def _element_id(problem: SyntaxProblem) -> list[str] | str:
    element = str(problem.element)
    return [element, str(problem.component)] if problem.component is not None else element


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", value)[:60]


def contrl_name(interchange: Interchange) -> str:
    return f"CONTRL-{_safe(interchange.sender)}-{_safe(interchange.reference)}.edi"


def write_contrl(folder: Path, name: str, content: str, encoding: str = "iso8859-1") -> Path:
    """Write once (tmp, fsync, rename): a redelivered interchange keeps its first answer."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if target.exists():
        return target
    write_durably(target, content.encode(encoding, errors="replace"))
    return target


# --- the contact and its records -----------------------------------------------------------


def inbound_contact(interchange: Interchange, raw: bytes) -> InboundContact:
    """One contact per interchange; the raw bytes are its raw blob, a summary its text."""
    messages = interchange.messages
    names = [m.provider_name for m in messages if m.provider_name]
    numbers = [m.number for m in messages if m.number]
    lines = [
        f"EDIFACT interchange {interchange.reference} from {interchange.sender}:"
        f" {interchange.status}"
    ]
    if interchange.problem:
        lines.append(f"Rejected: {interchange.problem.reason}")
    for m in messages:
        total = f"{m.total} {m.currency}" if m.total is not None else "no total"
        state = f"rejected: {m.problem.reason}" if m.problem else "accepted"
        lines.append(
            f"Invoice {m.number or '?'} ({m.message_type} {m.reference}), dossier"
            f" {m.dossier_ref or '?'}, {total}: {state}"
        )
    problems = [interchange.problem, *(m.problem for m in messages)]
    return InboundContact(
        channel=CHANNEL,
        natural_key=interchange.natural_key,
        sender=interchange.sender,
        sender_name=names[0] if names else "",
        recipients=(interchange.recipient,),
        subject=f"INVOIC {', '.join(numbers)}" if numbers else "EDIFACT interchange",
        text="\n".join(lines),
        defects=tuple(f"EDIFACT: {p.reason}" for p in problems if p is not None),
        automatic_reason="EDI interchange",
    )


async def record_interchange(
    store: Store, contact_id: int, interchange: Interchange, contrl_file: str
) -> int:
    """The interchange and one provider invoice per message, once (a redelivery or a retry
    after a crash between the two transactions finds them there)."""
    async with store.sessions() as session, session.begin():
        known = await session.scalar(
            select(EdiInterchange.id).where(EdiInterchange.contact_id == contact_id)
        )
        if known is not None:
            return known
        problem = interchange.problem
        row = EdiInterchange(
            contact_id=contact_id,
            sender=interchange.sender[:35],
            recipient=interchange.recipient[:35],
            reference=interchange.reference[:35],
            status=interchange.status,
            error_code=problem.code if problem else None,
            error=problem.reason if problem else None,
            error_segment=problem.segment[:10] if problem else None,
            error_position=problem.position if problem else None,
            messages=len(interchange.messages),
            contrl_file=contrl_file,
        )
        session.add(row)
        await session.flush()
        for message in interchange.messages:
            wrong = problem or message.problem
            session.add(
                ProviderInvoice(
                    contact_id=contact_id,
                    interchange_id=row.id,
                    message_ref=message.reference[:35],
                    provider_id=message.provider_id[:35],
                    provider_name=message.provider_name[:200],
                    number=message.number[:35],
                    invoice_date=message.invoice_date,
                    service_date=message.service_date,
                    dossier_ref=message.dossier_ref[:40],
                    currency=message.currency[:3],
                    lines=[line.to_json() for line in message.lines],
                    total_lines=message.total_lines,
                    taxable=message.taxable,
                    vat=message.vat,
                    total=message.total,
                    status="rejected" if wrong else "received",
                    error=_describe(wrong, message.problem is None) if wrong else None,
                )
            )
        audit(
            session,
            f"channel:{CHANNEL}",
            "edi.interchange.received",
            "contact",
            contact_id,
            after={"status": interchange.status, "messages": len(interchange.messages)},
            note=problem.reason if problem else "",
        )
        return row.id


def _describe(problem: SyntaxProblem, interchange_level: bool) -> str:
    where = f"segment {problem.segment}"
    if problem.position is not None:
        where += f" at position {problem.position}"
    scope = "interchange rejected: " if interchange_level else ""
    return f"{scope}{problem.reason} ({where}, error {problem.code})"


@dataclass(frozen=True)
class Received:
    contact_id: int
    duplicate: bool
    interchange: Interchange
    contrl: Path


class EdiIntake:
    """The one path from interchange bytes to a stored contact, its invoices and its CONTRL."""

    def __init__(
        self, store: Store, outbox: Path, on_accepted: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.on_accepted = on_accepted

    async def receive(self, raw: bytes, peer: str = "") -> Received:
        """Raises ``NotEdifact`` (nothing stored) or a store error (nothing acknowledged)."""
        interchange = await asyncio.to_thread(read_interchange, raw)
        inbound = inbound_contact(interchange, raw)
        accepted = await self.store.accept_contact(inbound, raw, Envelope(peer=peer))
        name = contrl_name(interchange)
        await record_interchange(self.store, accepted.contact_id, interchange, name)
        # The contact's job may already have run and waited for the records: wake it again.
        self.on_accepted()
        content = contrl_for(interchange, f"C{accepted.contact_id}"[:14], utcnow())
        encoding = _CHARSETS.get(interchange.syntax[0], "iso8859-1")
        path = await asyncio.to_thread(write_contrl, self.outbox, name, content, encoding)
        return Received(accepted.contact_id, accepted.duplicate, interchange, path)


# --- the adapter ---------------------------------------------------------------------------


def invoice_json(invoice: ProviderInvoice) -> dict[str, Any]:
    def money(value: Decimal | None) -> str | None:
        return None if value is None else f"{value:.2f}"

    return {
        "id": invoice.id,
        "contact_id": invoice.contact_id,
        "message_ref": invoice.message_ref,
        "provider_id": invoice.provider_id,
        "provider_name": invoice.provider_name,
        "number": invoice.number,
        "invoice_date": invoice.invoice_date.isoformat() if invoice.invoice_date else None,
        "service_date": invoice.service_date.isoformat() if invoice.service_date else None,
        "dossier_ref": invoice.dossier_ref,
        "dossier_id": invoice.dossier_id,
        "currency": invoice.currency,
        "lines": invoice.lines,
        "total_lines": money(invoice.total_lines),
        "taxable": money(invoice.taxable),
        "vat": money(invoice.vat),
        "total": money(invoice.total),
        "status": invoice.status,
        "error": invoice.error,
        "gaps": invoice.gaps,
        "checked_at": invoice.checked_at.isoformat() if invoice.checked_at else None,
    }


@dataclass
class EdiAdapter:
    """``POST /channels/edi`` (body: the interchange), the invoice API, and the drop folder."""

    intake: EdiIntake
    drop: Path | None = None
    stable_seconds: float = 2.0
    poll_seconds: float = 1.0
    max_bytes: int = 10 * 1024 * 1024
    name: str = CHANNEL
    _watcher: DropFolder | None = field(default=None, init=False)

    def routes(self) -> Sequence[web.RouteDef]:
        return (
            web.post("/channels/edi", self.upload),
            web.get("/api/invoices", self.list_invoices),
            web.get("/api/invoices/{id}", self.get_invoice),
        )

    async def start(self) -> None:
        if self.drop is not None:
            self._watcher = DropFolder(
                self.drop,
                self.handle_file,
                stable_seconds=self.stable_seconds,
                poll_seconds=self.poll_seconds,
                name="edi-drop",
            )
            await self._watcher.start()

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None

    async def handle_file(self, path: Path) -> None:
        """Stored files go to done/ (error/ with the reason when the interchange was
        rejected); a file that is not EDIFACT goes to error/ and nothing is stored. A store
        failure (disk full, database down) is not the file's fault: it stays for a later pass."""
        size = (await asyncio.to_thread(path.stat)).st_size
        if size > self.max_bytes:
            await asyncio.to_thread(
                move_error, path, f"{size} bytes, over the {self.max_bytes}-byte limit"
            )
            return
        raw = await asyncio.to_thread(path.read_bytes)
        try:
            received = await self.intake.receive(raw, peer=f"drop:{path.name}")
        except NotEdifact as exc:
            await asyncio.to_thread(move_error, path, str(exc))
            return
        except (SQLAlchemyError, OSError) as exc:
            raise TryLater(f"could not store {path.name}: {exc}") from exc
        interchange = received.interchange
        if interchange.status == "rejected":
            problem = interchange.problem or next(
                m.problem for m in interchange.messages if m.problem
            )
            reason = (
                f"stored as contact {received.contact_id} but rejected ({received.contrl.name}):"
                f" {problem.reason}"
            )
            await asyncio.to_thread(move_error, path, reason)
        else:
            await asyncio.to_thread(move_done, path)

    async def upload(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_bytes:
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.max_bytes, actual_size=request.content_length
            )
        raw = await request.content.read(self.max_bytes + 1)
        if len(raw) > self.max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_bytes, actual_size=len(raw))
        try:
            received = await self.intake.receive(raw, peer=request.remote or "")
        except NotEdifact as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except (BlobStoreError, SQLAlchemyError, OSError) as exc:
            # Temporary: the provider's system sends the same interchange again later, and a
            # copy that was stored after all becomes a duplicate, never a second contact.
            if isinstance(exc, InsufficientStorage):
                log.error("refusing an EDI upload from %s for now: %s", request.remote, exc)
                error = "insufficient storage on the server, send the interchange again later"
            else:
                log.error("could not store an EDI upload from %s: %s", request.remote, exc)
                error = "temporary failure storing the interchange, try again"
            return web.json_response(
                {"error": error},
                status=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        interchange = received.interchange
        problem = interchange.problem
        return web.json_response(
            {
                "contact_id": received.contact_id,
                "duplicate": received.duplicate,
                "interchange": interchange.reference,
                "status": interchange.status,
                "error": _describe(problem, True) if problem else None,
                "messages": [
                    {
                        "reference": m.reference,
                        "number": m.number,
                        "status": "rejected" if (problem or m.problem) else "accepted",
                        "error": _describe(m.problem, False) if m.problem else None,
                    }
                    for m in interchange.messages
                ],
                "contrl": received.contrl.name,
            },
            status=202,
        )

    async def list_invoices(self, request: web.Request) -> web.Response:
        query = select(ProviderInvoice).order_by(ProviderInvoice.id.desc()).limit(200)
        status = request.query.get("status")
        if status:
            query = query.where(ProviderInvoice.status == status)
        dossier = request.query.get("dossier")
        if dossier:
            query = query.where(ProviderInvoice.dossier_ref == normalise_dossier_ref(dossier))
        async with self.intake.store.sessions() as session:
            rows = (await session.scalars(query)).all()
            return web.json_response({"invoices": [invoice_json(row) for row in rows]})

    async def get_invoice(self, request: web.Request) -> web.Response:
        raw_id = request.match_info["id"]
        invoice = None
        if raw_id.isdigit() and len(raw_id) <= 9:
            async with self.intake.store.sessions() as session:
                invoice = await session.get(ProviderInvoice, int(raw_id))
        if invoice is None:
            return web.json_response({"error": f"no invoice {raw_id}"}, status=404)
        return web.json_response(invoice_json(invoice))
