"""Pure parser turning the raw bytes of one RFC 5322 email into an InboundContact."""

from __future__ import annotations

import contextlib
import email.errors
import email.header
import email.policy
import email.utils
import hashlib
import html as html_lib
import mimetypes
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

from tnefparse import TNEF

from channels import mail_policy
from models.inbound import InboundAttachment, InboundContact

__all__ = ["automatic_reason", "parse_email", "synthetic_key"]

_FORWARD_BLOCK = (
    "\n\n-------- Message transféré --------\nDe : {sender}\nObjet : {subject}\n\n{body}"
)
_MAX_FILENAME_LENGTH = 200
# Column sizes of the contact table: longer values would make the store refuse the whole message.
_MAX_ID_LENGTH = 494  # "email:" + id must fit the 500-character natural key
_MAX_ADDRESS_LENGTH = 320
_MAX_NAME_LENGTH = 200
_MAX_REASON_LENGTH = 200
_MAX_TYPE_LENGTH = 200
_MAX_HEADER_LENGTH = 32 * 1024
# A hostile message can yield one defect per part; past this, people stop reading anyway.
_MAX_DEFECTS = 100
# Real mail never nests multiparts this deep; the bound keeps hostile input off the stack limit.
_MAX_MULTIPART_NESTING = 50
# Undeclared 8-bit French mail is mostly Windows-1252: latin-1 would turn € and ’ into controls.
_TEXT_FALLBACK_CODECS = ("utf-8", "windows-1252")
_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_FORWARD_TYPES = frozenset({"message/rfc822", "message/global"})
# The built-in table only: /etc/mime.types differs between hosts and would change generated names.
_MIME_TYPES = mimetypes.MimeTypes()
# Keep the original folding when re-serialising a kept message: refolding could alter its bytes.
_SERIALIZE_POLICY = mail_policy.DEFAULT.clone(refold_source="none")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
_MSG_ID_RE = re.compile(r"<([^<>]*)>")
_COMMENT_RE = re.compile(r"\([^()]*\)")
# RFC 2047 6.2: the white space between two encoded words is not text. The policy's address
# parser keeps it in a display name (a long accented name, folded by the sender's mail
# program into several words, came out with spaces or line breaks inside it).
_ENCODED_WORD = r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?="
_BETWEEN_ENCODED_WORDS_RE = re.compile(rf"({_ENCODED_WORD})\s+(?={_ENCODED_WORD})")
# One mailbox in plain ASCII, the form nearly every sender's From takes: "Name <addr>", a
# quoted name, or the bare address. Read without the policy's header parser, which costs
# most of an SMTP session's header reading; anything else (encoded words, comments, groups,
# quoted local parts, folding) still goes through it. A property test holds both to one answer.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_MAILBOX_RE = re.compile(
    # Possessive quantifiers: no backtracking, so a long hostile header costs linear time.
    rf"[ \t]*+(?:"
    rf"(?:(?P<words>[A-Za-z0-9' \t-]*+)|\"(?P<quoted>[A-Za-z0-9 ',.-]*+)\"[ \t]*+)"
    rf"<(?P<angle>{_ADDR_SPEC})>"
    rf"|(?P<bare>{_ADDR_SPEC}))[ \t]*+"
)

_Report = Callable[[str], None]

_DEFECT_TEXT: dict[type[email.errors.MessageDefect], str] = {
    email.errors.CloseBoundaryNotFoundDefect: "missing closing boundary",
    email.errors.StartBoundaryNotFoundDefect: "multipart boundary never found in the body",
    email.errors.NoBoundaryInMultipartDefect: "multipart without boundary parameter",
    email.errors.MultipartInvariantViolationDefect: "declared multipart but no parts found",
    email.errors.FirstHeaderLineIsContinuationDefect: "first header line is a continuation line",
    email.errors.MisplacedEnvelopeHeaderDefect: "misplaced envelope 'From ' line",
    email.errors.MissingHeaderBodySeparatorDefect: "missing blank line between headers and body",
    email.errors.InvalidMultipartContentTransferEncodingDefect: (
        "invalid Content-Transfer-Encoding on a multipart"
    ),
    email.errors.InvalidBase64PaddingDefect: "broken base64 (bad padding)",
    email.errors.InvalidBase64CharactersDefect: "broken base64 (characters outside the alphabet)",
    email.errors.InvalidBase64LengthDefect: "broken base64 (impossible length, kept undecoded)",
    email.errors.UndecodableBytesDefect: "undecodable 8-bit bytes",
}


@dataclass
class _Context:
    """Accumulates what the walk over one top-level message produces."""

    max_depth: int
    defects: list[str] = field(default_factory=list)
    attachments: list[InboundAttachment] = field(default_factory=list)
    forwards_kept: int = 0
    _seen: set[str] = field(default_factory=set, init=False)
    _dropped: int = field(default=0, init=False)

    def defect(self, text: str) -> None:
        if text in self._seen:
            return
        self._seen.add(text)
        if len(self.defects) < _MAX_DEFECTS:
            self.defects.append(text)
        else:
            self._dropped += 1

    def all_defects(self) -> tuple[str, ...]:
        more = (f"{self._dropped} more defects not listed",) if self._dropped else ()
        return tuple(_safe(d) for d in self.defects) + more

    def attach(
        self,
        filename: str | None,
        declared_type: str,
        content: bytes,
        *,
        inline: bool = False,
        content_id: str | None = None,
    ) -> None:
        name = _sanitize_filename(filename) if filename else ""
        if not name:
            name = f"part-{len(self.attachments) + 1}{_extension(declared_type)}"
        self.attachments.append(
            InboundAttachment(
                filename=name,
                declared_type=_safe(declared_type)[:_MAX_TYPE_LENGTH],
                content=content,
                inline=inline,
                content_id=_safe(content_id) if content_id is not None else None,
            )
        )


@dataclass
class _Bodies:
    """Body texts found in one subtree, before they are assembled into the contact."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    forwards: list[str] = field(default_factory=list)
    tnef_plain: list[str] = field(default_factory=list)
    tnef_html: list[str] = field(default_factory=list)

    def extend(self, other: _Bodies) -> None:
        self.plain.extend(other.plain)
        self.html.extend(other.html)
        self.forwards.extend(other.forwards)
        self.tnef_plain.extend(other.tnef_plain)
        self.tnef_html.extend(other.tnef_html)


# --------------------------------------------------------------------------- public API


def synthetic_key(raw: bytes) -> str:
    """Natural key for a message without Message-ID, stable across CRLF/LF and trailing blanks."""
    normalised = bytes(raw).replace(b"\r\n", b"\n").rstrip()
    return "email:sha256:" + hashlib.sha256(normalised).hexdigest()


def parse_email(
    raw: bytes, *, envelope_sender: str | None = None, max_depth: int = 5
) -> InboundContact:
    """Translate one raw email into an InboundContact; never raises, oddities go to ``defects``."""
    try:
        data = bytes(raw)
    except Exception:
        data = b""
    try:
        return _parse(data, envelope_sender, max(0, max_depth))
    except Exception as exc:
        # Intake must never lose a message because of a parser bug: keep it as raw text.
        return InboundContact(
            channel="email",
            natural_key=synthetic_key(data),
            sender=_normalise_address(envelope_sender or ""),
            text=_safe(_normalise_newlines(data.decode("utf-8", "replace"))),
            defects=(_safe(f"parser failure ({_describe(exc)}), message kept as raw text"),),
        )


def read_headers(raw: bytes, *, envelope_sender: str | None = None) -> InboundContact:
    """What an SMTP session must know before it answers ``250``: the message's identity
    (natural key, sender) and subject, read from its header block only.

    The body is unpacked by intake's first step (``parse_email`` in a job): the MIME walk
    costs several times the rest of an accept, and a hostile message then spends a job's
    budget instead of holding a session. The contact is marked ``raw_only`` for that step.
    Never raises, like ``parse_email``.
    """
    data = bytes(raw)
    # The header block ends at the first empty line; the parser need not see the body.
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    block = data[: min(ends) + 2] if ends else data
    ctx = _Context(max_depth=0)
    try:
        msg = BytesParser(policy=email.policy.compat32).parsebytes(block, headersonly=True)
        message_id, natural_key, sender_name, sender = _identity(msg, data, envelope_sender, ctx)
        subject = _subject(msg, None)
        reason = _safe_automatic_reason(msg, envelope_sender)
    except Exception:
        # The full parse in intake records what went wrong; here the bytes must only be kept.
        message_id, natural_key, sender_name, subject = None, synthetic_key(data), "", ""
        sender = _normalise_address(envelope_sender or "")
        reason = "headers could not be inspected"
    return InboundContact(
        channel="email",
        natural_key=natural_key,
        sender=sender,
        sender_name=sender_name,
        subject=subject,
        message_id=message_id,
        # From the headers too: no automatic reply to a machine, even before the unpacking.
        automatic_reason=_safe(reason)[:_MAX_REASON_LENGTH] if reason is not None else None,
        raw_only=True,
    )


def automatic_reason(msg: EmailMessage, envelope_sender: str | None) -> str | None:
    """Why RFC 3834 forbids an automatic reply to ``msg``, or None for a human message."""
    return _safe_automatic_reason(msg, envelope_sender)


def _safe_automatic_reason(msg: Message, envelope_sender: str | None) -> str | None:
    try:
        return _automatic_reason(msg, envelope_sender)
    except Exception:
        # Replying to a machine can start a mail loop; in doubt, stay silent.
        return "headers could not be inspected"


# --------------------------------------------------------------------------- top level


def _parse(raw: bytes, envelope_sender: str | None, max_depth: int) -> InboundContact:
    ctx = _Context(max_depth=max_depth)
    msg = _parse_bytes(raw, ctx, "message")
    message_id, natural_key, sender_name, sender = _identity(msg, raw, envelope_sender, ctx)
    in_reply_to = _fit_id(
        _first_id(_header_text(msg, "In-Reply-To", ctx.defect)), "In-Reply-To", ctx
    )
    references = [_safe(r) for r in _all_ids(_header_text(msg, "References", ctx.defect))]

    recipients: list[str] = []
    for header in ("To", "Cc"):
        for _, address in _addresses(msg, header, ctx.defect):
            if "@" in address and address not in recipients:
                recipients.append(address)

    bodies = _collect_part(msg, "", _label(msg, ""), 0, 0, ctx, is_root=True)
    text, html = _assemble(bodies)
    reason = _safe_automatic_reason(msg, envelope_sender)

    return InboundContact(
        channel="email",
        natural_key=natural_key,
        sender=sender,
        sender_name=sender_name,
        recipients=tuple(recipients),
        subject=_subject(msg, ctx.defect),
        text=_safe(text),
        html=_safe(html) if html is not None else None,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=tuple(references),
        sent_at=_sent_at(msg, ctx.defect),
        automatic_reason=_safe(reason)[:_MAX_REASON_LENGTH] if reason is not None else None,
        attachments=tuple(ctx.attachments),
        defects=ctx.all_defects(),
    )


def _identity(
    msg: Message, raw: bytes, envelope_sender: str | None, ctx: _Context
) -> tuple[str | None, str, str, str]:
    """Message-ID, natural key, sender's name and address: from the headers alone, so that the
    SMTP session (``read_headers``) and the full parse agree on them for the same bytes."""
    message_id = _fit_id(_first_id(_header_text(msg, "Message-ID", ctx.defect)), "Message-ID", ctx)
    sender_name, sender = "", ""
    for header in ("From", "Sender"):
        found = [pair for pair in _addresses(msg, header, ctx.defect) if "@" in pair[1]]
        if found:
            sender_name, sender = found[0]
            break
    for fallback in (_header_text(msg, "Return-Path", ctx.defect), envelope_sender):
        candidate = _normalise_address(fallback or "")
        if not sender and "@" in candidate:
            sender = candidate
    if not sender:
        ctx.defect("no sender address found")
    if len(sender) > _MAX_ADDRESS_LENGTH:
        ctx.defect(f"sender address longer than {_MAX_ADDRESS_LENGTH} characters, truncated")
        sender = sender[:_MAX_ADDRESS_LENGTH]
    natural_key = f"email:{message_id}" if message_id else synthetic_key(raw)
    return message_id, natural_key, sender_name[:_MAX_NAME_LENGTH], sender


def _safe(text: str) -> str:
    """Text any store accepts: no lone surrogates, no NUL (PostgreSQL rejects both)."""
    return _fix_surrogates(text)[0].replace("\x00", "")


def _fit_id(value: str | None, header: str, ctx: _Context) -> str | None:
    if value is None:
        return None
    value = _safe(value)
    if len(value) > _MAX_ID_LENGTH:
        ctx.defect(f"{header} longer than {_MAX_ID_LENGTH} characters, ignored")
        return None
    return value or None


def _parse_bytes(raw: bytes, ctx: _Context, where: str) -> Message:
    try:
        return BytesParser(policy=mail_policy.DEFAULT).parsebytes(raw)
    except Exception as exc:
        failure = _describe(exc)
    try:
        # policy.default parses some headers while splitting the MIME tree and a few malformed
        # ones crash it; compat32 keeps headers as raw strings.
        msg = BytesParser(policy=email.policy.compat32).parsebytes(raw)
        ctx.defect(f"MIME parser failed on {where} ({failure}), parsed again in compat32 mode")
        return msg
    except Exception:
        # Absurdly deep nesting exhausts the parser's recursion: keep the headers, body as text.
        ctx.defect(f"MIME parser failed on {where} ({failure}), only its headers were parsed")
        return BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=True)


def _assemble(bodies: _Bodies) -> tuple[str, str | None]:
    html = next((h for h in bodies.html if h.strip()), bodies.html[0] if bodies.html else None)
    text = _join_texts(bodies.plain)
    if not text.strip():
        text = _html_to_text(html) if html else ""
    tnef_text = _join_texts(bodies.tnef_plain)
    if not tnef_text.strip() and bodies.tnef_html:
        tnef_text = _html_to_text(bodies.tnef_html[0])
    if tnef_text.strip():
        # Outlook usually sends the same body both in MIME and inside winmail.dat.
        if not text.strip():
            text = tnef_text
        elif _squash(tnef_text) not in _squash(text):
            text = text.rstrip("\n") + "\n\n" + tnef_text
    if html is None and bodies.tnef_html:
        html = bodies.tnef_html[0]
    for block in bodies.forwards:
        text = block.lstrip("\n") if not text.strip() else text.rstrip("\n") + block
    return text, html


def _join_texts(parts: list[str]) -> str:
    # Apple Mail splits one body into several text parts around inline images.
    parts = [p for p in parts if p.strip()] or parts[:1]
    if not parts:
        return ""
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts[:-1]) + parts[-1]


# --------------------------------------------------------------------------- MIME walk


def _collect_part(
    part: Message,
    path: str,
    label: str,
    depth: int,
    nesting: int,
    ctx: _Context,
    *,
    is_root: bool = False,
    resource: bool = False,
) -> _Bodies:
    """Collect the bodies of ``part`` and add its files to ``ctx``; defects name it ``label``."""
    bodies = _Bodies()
    try:
        _collect_part_unsafe(part, path, label, depth, nesting, ctx, bodies, is_root, resource)
    except Exception as exc:
        # One broken part must not cost the others.
        ctx.defect(f"could not process {label} ({_describe(exc)})")
    _record_defects(part, label, ctx)
    return bodies


def _collect_part_unsafe(
    part: Message,
    path: str,
    label: str,
    depth: int,
    nesting: int,
    ctx: _Context,
    bodies: _Bodies,
    is_root: bool,
    resource: bool,
) -> None:
    ctype = _content_type(part)
    maintype, _, subtype = ctype.partition("/")
    disposition = _disposition(part)
    filename = _filename(part)
    content_id = _content_id(part)

    if ctype in _FORWARD_TYPES:
        bodies.extend(_collect_forward(part, path, label, depth, ctx))
        return

    if maintype == "multipart" and part.is_multipart():
        if nesting >= _MAX_MULTIPART_NESTING:
            ctx.defect(
                f"multipart nesting deeper than {_MAX_MULTIPART_NESTING} in {label}, ignored"
            )
            return
        children = [c for c in _children(part) if isinstance(c, Message)]
        results: list[_Bodies] = []
        root_index = _related_root(part, children) if subtype == "related" else -1
        for index, child in enumerate(children, start=1):
            child_path = f"{path}.{index}" if path else str(index)
            results.append(
                _collect_part(
                    child,
                    child_path,
                    _label(child, child_path),
                    depth,
                    nesting + 1,
                    ctx,
                    resource=resource or (root_index >= 0 and index - 1 != root_index),
                )
            )
        if subtype == "alternative":
            # Each child renders the same message: take the text from the first plain one
            # and the HTML from the last (richest) one, but keep every child's files.
            plain = next((r.plain for r in results if any(p.strip() for p in r.plain)), None)
            rich = next((r.html for r in reversed(results) if r.html), [])
            bodies.plain.extend(plain or next((r.plain for r in results if r.plain), []))
            bodies.html.extend(rich)
            for result in results:
                bodies.forwards.extend(result.forwards)
                bodies.tnef_plain.extend(result.tnef_plain)
                bodies.tnef_html.extend(result.tnef_html)
        else:
            for result in results:
                bodies.extend(result)
        return

    if part.is_multipart():
        # message/delivery-status and other message/* types the parser split into blocks.
        ctx.attach(filename, ctype, _serialize_payload(part, label, ctx), content_id=content_id)
        return

    if maintype == "multipart":
        ctx.defect(f"no MIME parts found in {label}, body kept as text")
        bodies.plain.append(_part_text(part, label, ctx))
        return

    if ctype in _TNEF_TYPES or (filename or "").lower() == "winmail.dat":
        _collect_tnef(part, filename, ctype, label, ctx, bodies)
        return

    named_file = filename is not None and not is_root
    is_body = (
        maintype == "text"
        and subtype in ("plain", "html")
        and disposition != "attachment"
        and not resource
        and not named_file
    )
    if is_body:
        text = _part_text(part, label, ctx)
        (bodies.plain if subtype == "plain" else bodies.html).append(text)
        return

    inline = disposition == "inline" or (
        resource and content_id is not None and disposition != "attachment"
    )
    ctx.attach(
        filename, ctype, _payload_bytes(part, label, ctx), inline=inline, content_id=content_id
    )


def _children(part: Message) -> list[Any]:
    payload = part.get_payload()
    return list(payload) if isinstance(payload, list) else []


def _related_root(part: Message, children: list[Message]) -> int:
    """Index of the root of a multipart/related: the ``start`` parameter, else the first part."""
    start = _param(part, "content-type", "start")
    if start:
        wanted = _strip_id(start)
        for index, child in enumerate(children):
            if _content_id(child) == wanted:
                return index
    return 0


def _collect_forward(part: Message, path: str, label: str, depth: int, ctx: _Context) -> _Bodies:
    bodies = _Bodies()
    if depth >= ctx.max_depth:
        ctx.forwards_kept += 1
        name = f"forwarded-{ctx.forwards_kept}.eml"
        ctx.defect(
            f"forwarded message in {label} nested deeper than {ctx.max_depth} levels, "
            f"kept as attachment {name}"
        )
        ctx.attach(name, "message/rfc822", _serialize_payload(part, label, ctx))
        return bodies

    inner: Message | None = None
    if part.is_multipart():
        inner = next((c for c in _children(part) if isinstance(c, Message)), None)
    else:
        # A non-conforming encoded message/rfc822 arrives as an opaque leaf: decode and parse it.
        inner = _parse_bytes(_payload_bytes(part, label, ctx), ctx, label)
    if inner is None:
        ctx.defect(f"empty forwarded message in {label}")
        return bodies

    inner_label = f"forwarded {_content_type(inner)} message in {label}"
    inner_bodies = _collect_part(inner, path, inner_label, depth + 1, 0, ctx, is_root=True)
    text, _ = _assemble(inner_bodies)
    bodies.forwards.append(
        _FORWARD_BLOCK.format(sender=_from_display(inner), subject=_subject(inner, None), body=text)
    )
    return bodies


def _collect_tnef(
    part: Message,
    filename: str | None,
    ctype: str,
    label: str,
    ctx: _Context,
    bodies: _Bodies,
) -> None:
    data = _payload_bytes(part, label, ctx)
    name = filename or "winmail.dat"
    try:
        tnef = TNEF(data)
        files: list[tuple[str | None, str, bytes]] = []
        for item in tnef.attachments:
            item_name = _tnef_filename(item)
            content = item.data if isinstance(item.data, bytes) else b""
            files.append((item_name, _guess_type(item_name), content))
        plain = _tnef_text(tnef.body, tnef.codepage)
        rich = _tnef_text(tnef.htmlbody, tnef.codepage)
    except Exception as exc:
        ctx.defect(f"could not decode TNEF {name} in {label} ({_describe(exc)}), kept as is")
        ctx.attach(name, ctype, data)
        return
    if not files and not (plain or "").strip() and not (rich or "").strip():
        ctx.defect(f"nothing extractable in TNEF {name} in {label}, kept as is")
        ctx.attach(name, ctype, data)
        return
    for item_name, item_type, content in files:
        ctx.attach(item_name, item_type, content)
    if plain and plain.strip():
        bodies.tnef_plain.append(plain)
    if rich and rich.strip():
        bodies.tnef_html.append(rich)


def _tnef_filename(item: Any) -> str | None:
    try:
        value = item.long_filename()
    except Exception:
        value = getattr(item, "_name", None)
    if isinstance(value, bytes):
        value = _decode_guess(value)[0]
    if isinstance(value, str):
        return value.replace("\x00", "").strip() or None
    return None


def _tnef_text(value: Any, codepage: Any) -> str | None:
    if isinstance(value, bytes):
        text: str | None = None
        if isinstance(codepage, str):
            try:
                text = value.decode(codepage)
            except (LookupError, UnicodeDecodeError):
                text = None
        if text is None:
            text = _decode_guess(value)[0]
        return _normalise_newlines(text.rstrip("\x00"))
    if isinstance(value, str):
        return _normalise_newlines(_fix_surrogates(value)[0].rstrip("\x00"))
    return None


def _record_defects(part: Message, label: str, ctx: _Context) -> None:
    try:
        defects = list(part.defects)
    except Exception:
        return
    for defect in defects:
        kind = type(defect)
        doc = (kind.__doc__ or "").strip().split("\n", 1)[0]
        text = _DEFECT_TEXT.get(kind) or str(defect) or doc or kind.__name__
        ctx.defect(f"{text} in {label} [{kind.__name__}]")


def _label(part: Message, path: str) -> str:
    ctype = _content_type(part)
    return f"{ctype} part {path}" if path else f"{ctype} message"


# --------------------------------------------------------------------------- payloads


def _payload_bytes(part: Message, label: str, ctx: _Context) -> bytes:
    try:
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            return data
    except Exception as exc:
        ctx.defect(f"could not decode payload of {label} ({_describe(exc)}), kept raw")
    try:
        raw = part.get_payload()
    except Exception:
        return b""
    return _str_to_bytes(raw) if isinstance(raw, str) else b""


def _str_to_bytes(text: str) -> bytes:
    # The parser stores 8-bit bytes as surrogate escapes; latin-1 maps the rest back one to one.
    try:
        return text.encode("latin-1", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _part_text(part: Message, label: str, ctx: _Context) -> str:
    data = _payload_bytes(part, label, ctx)
    charset = _param(part, "content-type", "charset")
    charset = charset.strip().strip("\"'").lower() if charset else None
    text: str | None = None
    problem: str | None = None
    if charset:
        try:
            text = data.decode(charset)
        except LookupError:
            problem = f"unknown charset {charset}"
        except (UnicodeError, ValueError):
            problem = f"invalid {charset} bytes"
    if text is None:
        text, codec = _decode_guess(data)
        if problem is None and codec != "utf-8":
            problem = "undeclared 8-bit charset"
        if problem is not None:
            ctx.defect(f"{problem} in {label}, decoded as {codec}")
    return _normalise_newlines(text.removeprefix("\ufeff"))


def _decode_guess(data: bytes) -> tuple[str, str]:
    for codec in _TEXT_FALLBACK_CODECS:
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


def _serialize_payload(part: Message, label: str, ctx: _Context) -> bytes:
    """Bytes of the body of a message/* part, for keeping it as a file."""
    children = [c for c in _children(part) if isinstance(c, Message)]
    if not children:
        return _payload_bytes(part, label, ctx)
    chunks: list[bytes] = []
    for child in children:
        try:
            chunks.append(child.as_bytes(policy=_SERIALIZE_POLICY))
        except Exception:
            try:
                chunks.append(child.as_bytes(policy=email.policy.compat32))
            except Exception as exc:
                ctx.defect(f"could not serialise {label} ({_describe(exc)}), content dropped")
    return b"\n".join(chunks)


# --------------------------------------------------------------------------- headers


def _raw_header(msg: Message, name: str) -> str | None:
    """First value of header ``name`` as it came off the wire, unfolded."""
    wanted = name.lower()
    try:
        items = list(msg.raw_items())
    except Exception:
        return None
    for key, value in items:
        if str(key).lower() == wanted:
            return _LINE_BREAK_RE.sub("", str(value))
    return None


def _header_text(msg: Message, name: str, report: _Report | None) -> str | None:
    """Header value as valid str: 8-bit bytes are decoded instead of left as surrogates."""
    raw = _raw_header(msg, name)
    if raw is None:
        return None
    text, codec = _fix_surrogates(raw)
    if codec is not None and report is not None:
        report(f"8-bit bytes in {name} header, decoded as {codec}")
    if len(text) > _MAX_HEADER_LENGTH:
        # The policy's header parser is quadratic: a huge hostile header would stall intake.
        cut = text.rfind(",", 0, _MAX_HEADER_LENGTH)
        text = text[: cut if cut > _MAX_HEADER_LENGTH // 2 else _MAX_HEADER_LENGTH]
        if report is not None:
            report(f"{name} header longer than {_MAX_HEADER_LENGTH} characters, truncated")
    return text


def _fix_surrogates(text: str) -> tuple[str, str | None]:
    """Turn surrogate-escaped bytes back into text; also return the codec that had to be guessed."""
    if not _SURROGATE_RE.search(text):
        return text, None
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), "utf-8"
    if any("\x80" <= ch < "\udc80" or ch > "\udcff" for ch in text):
        # Real characters around the raw bytes: only utf-8 keeps them intact.
        return data.decode("utf-8", "replace"), "utf-8"
    return _decode_guess(data)


def _structured(name: str, text: str, report: _Report | None) -> Any:
    """The policy.default header object for ``text``, or None when the policy chokes on it."""
    factory: Callable[[str, str], Any] = mail_policy.DEFAULT.header_factory
    try:
        header = factory(name, text)
        str(header)
        return header
    except Exception as exc:
        if report is not None:
            report(f"unparseable {name} header ({_describe(exc)})")
        return None


def _decode_words(text: str) -> str:
    """RFC 2047 decoding without the policy machinery, for values the policy cannot parse."""
    try:
        decoded = str(email.header.make_header(email.header.decode_header(text)))
    except Exception:
        return text
    return _fix_surrogates(decoded)[0]


def _clean_text(text: str) -> str:
    """One line of display text: no control characters, whitespace collapsed."""
    text = _fix_surrogates(text)[0]
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return " ".join(text.split())


def _subject(msg: Message, report: _Report | None) -> str:
    text = _header_text(msg, "Subject", report)
    if text is None:
        return ""
    if _plain_text(text):
        # Nothing for the policy's parser to decode (it builds a class per call).
        return _clean_text(text)
    header = _structured("subject", text, report)
    return _clean_text(str(header) if header is not None else _decode_words(text))


def _plain_text(text: str) -> bool:
    """ASCII with no encoded word: an unstructured header whose value is its text."""
    return text.isascii() and "=?" not in text


def _from_display(msg: Message) -> str:
    text = _header_text(msg, "From", None)
    if text is None:
        return ""
    header = _structured("from", text, None)
    return _clean_text(str(header) if header is not None else _decode_words(text))


def _addresses(msg: Message, name: str, report: _Report | None) -> list[tuple[str, str]]:
    """(display name, lowercased address) pairs of an address header."""
    text = _header_text(msg, name, report)
    if text is None:
        return []
    simple = _simple_mailbox(text)
    pairs = [simple] if simple is not None else _parsed_addresses(name, text, report)
    result: list[tuple[str, str]] = []
    for display, address in pairs:
        address = _normalise_address(address)
        if address:
            result.append((_clean_text(display), address))
    return result


def _simple_mailbox(text: str) -> tuple[str, str] | None:
    """(display name, address) of a header that is one plain mailbox, else None."""
    simple = _SIMPLE_MAILBOX_RE.fullmatch(text)
    if simple is None:
        return None
    return simple["words"] or simple["quoted"] or "", simple["angle"] or simple["bare"]


def _parsed_addresses(name: str, text: str, report: _Report | None) -> list[tuple[str, str]]:
    """(display name, address) pairs as the policy's header parser reads them, or as
    ``getaddresses`` does when the policy cannot."""
    # Unfolded first, as the policy itself does before it parses a header it fetches.
    text = _BETWEEN_ENCODED_WORDS_RE.sub(r"\1", _LINE_BREAK_RE.sub("", text))
    header = _structured(name, text, report)
    if header is not None:
        # A header the policy parsed may still hold parts an Address refuses (CR, LF).
        with contextlib.suppress(Exception):
            return [(str(a.display_name), str(a.addr_spec)) for a in header.addresses]
    try:
        return [(_decode_words(n), a) for n, a in email.utils.getaddresses([text])]
    except Exception:
        return []


def _normalise_address(value: str) -> str:
    value = "".join(ch for ch in _fix_surrogates(value)[0] if unicodedata.category(ch) != "Cc")
    return "".join(value.split()).strip("<>").lower()


def _sent_at(msg: Message, report: _Report) -> datetime | None:
    text = _header_text(msg, "Date", report)
    if text is None:
        return None
    try:
        value = email.utils.parsedate_to_datetime(text.strip())
    except Exception:
        value = None
    if value is None:
        report(f"invalid Date header {text.strip()[:80]!r}")
        return None
    # RFC 5322 "-0000" means UTC with no known local offset.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _strip_id(value: str) -> str:
    return "".join(value.split()).strip("<>")


def _first_id(text: str | None) -> str | None:
    if text is None:
        return None
    ids = [_strip_id(m) for m in _MSG_ID_RE.findall(text)]
    value = next((i for i in ids if i), None) if ids else _strip_id(text)
    return value or None


def _all_ids(text: str | None) -> list[str]:
    if text is None:
        return []
    ids = [_strip_id(m) for m in _MSG_ID_RE.findall(text)]
    if not ids:
        ids = [_strip_id(t) for t in re.split(r"[\s,]+", text)]
    result: list[str] = []
    for value in ids:
        if value and value not in result:
            result.append(value)
    return result


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def _param(part: Message, header: str, param: str) -> str | None:
    """A MIME parameter decoded (RFC 2231 and stray RFC 2047), or None."""
    raw = _header_text(part, header, None)
    if raw is None:
        return None
    value: Any = None
    structured = _structured(header, raw, None)
    if structured is not None:
        try:
            value = structured.params.get(param)
        except Exception:
            value = None
    if value is None:
        try:
            value = part.get_param(param, None, header)
        except Exception:
            value = None
        if isinstance(value, tuple):
            try:
                value = email.utils.collapse_rfc2231_value(value)
            except Exception:
                value = None
    if not isinstance(value, str):
        return None
    text = _fix_surrogates(value)[0]
    return _decode_words(text) if "=?" in text else text


def _filename(part: Message) -> str | None:
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        value = _param(part, header, param)
        if value and value.strip():
            return value.strip()
    return None


def _disposition(part: Message) -> str | None:
    text = _header_text(part, "Content-Disposition", None)
    if text is None:
        return None
    value = text.split(";", 1)[0].strip().lower()
    if not value:
        return None
    # RFC 2183: an unknown disposition type must be handled as "attachment".
    return "inline" if value == "inline" else "attachment"


def _content_id(part: Message) -> str | None:
    text = _header_text(part, "Content-ID", None)
    return (_strip_id(text) or None) if text is not None else None


# --------------------------------------------------------------------------- RFC 3834


def _automatic_reason(msg: Message, envelope_sender: str | None) -> str | None:
    auto_submitted = _header_text(msg, "Auto-Submitted", None)
    if auto_submitted is not None:
        value = _COMMENT_RE.sub("", auto_submitted).split(";", 1)[0].strip().lower()
        if value != "no":
            return f"Auto-Submitted: {value or '(empty)'}"

    precedence = _header_text(msg, "Precedence", None)
    if precedence is not None:
        value = _COMMENT_RE.sub("", precedence).strip().lower()
        if value in ("bulk", "list", "junk", "auto_reply"):
            return f"Precedence: {value}"

    if envelope_sender is not None and not envelope_sender.strip().strip("<>").strip():
        return "null envelope sender"
    return_path = _header_text(msg, "Return-Path", None)
    if return_path is not None and "<" in return_path and not _strip_id(return_path):
        return "null Return-Path"

    if _content_type(msg) == "multipart/report":
        report_type = _param(msg, "content-type", "report-type")
        return f"multipart/report ({report_type})" if report_type else "multipart/report"

    for header in ("From", "Sender"):
        for _, address in _addresses(msg, header, None):
            local = address.rpartition("@")[0] if "@" in address else address
            local = local.strip('"')
            if local in ("mailer-daemon", "postmaster"):
                return f"{header} is {local}"

    for header in ("X-Autoreply", "X-Autorespond"):
        if _raw_header(msg, header) is not None:
            return f"{header} header"
    suppress = _header_text(msg, "X-Auto-Response-Suppress", None)
    if suppress is not None:
        tokens = set(re.split(r"[\s,;]+", suppress.lower()))
        if tokens & {"all", "oof", "autoreply"}:
            return f"X-Auto-Response-Suppress: {' '.join(suppress.split())}"

    for header in ("List-Id", "List-Unsubscribe"):
        if _raw_header(msg, header) is not None:
            return f"mailing list ({header})"
    return None


# --------------------------------------------------------------------------- HTML


class _HTMLText(HTMLParser):
    """Collects the readable text of an HTML document."""

    _SKIPPED = frozenset({"script", "style", "head", "title", "template", "noscript"})
    _BLOCKS = frozenset(
        {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
        | {"blockquote", "hr", "pre", "section", "article", "header", "footer", "dl", "dt", "dd"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skipping: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            # Broken HTML often never closes <head>; the body is what matters.
            self._skipping.pop("head", None)
            self._skipping.pop("title", None)
        if tag in self._SKIPPED:
            self._skipping[tag] = self._skipping.get(tag, 0) + 1
        elif tag in self._BLOCKS:
            self.chunks.append("\n")
        elif tag in ("td", "th"):
            self.chunks.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            count = self._skipping.get(tag, 0) - 1
            if count > 0:
                self._skipping[tag] = count
            else:
                self._skipping.pop(tag, None)
        elif tag in self._BLOCKS and tag != "br":
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.chunks.append(re.sub(r"\s+", " ", data))


def _html_to_text(markup: str) -> str:
    """Readable plain text of an HTML body: blocks become lines, scripts and styles vanish."""
    try:
        parser = _HTMLText()
        parser.feed(markup)
        parser.close()
        text = "".join(parser.chunks)
    except Exception:
        # HTMLParser still asserts on a few malformed declarations; strip tags crudely instead.
        stripped = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", markup)
        text = html_lib.unescape(re.sub(r"<[^>]*>", " ", stripped))
    lines = [" ".join(line.split()) for line in _normalise_newlines(text).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --------------------------------------------------------------------------- small helpers


def _sanitize_filename(name: str) -> str:
    name = unicodedata.normalize("NFC", _fix_surrogates(name)[0])
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Cf covers bidi overrides, which can disguise "fdp.exe" as "exe.pdf".
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    name = name.strip()
    if name in ("", ".", ".."):
        return ""
    if len(name) > _MAX_FILENAME_LENGTH:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext) <= 16:
            name = stem[: _MAX_FILENAME_LENGTH - len(ext) - 1].rstrip() + "." + ext
        else:
            name = name[:_MAX_FILENAME_LENGTH]
    return name


def _extension(declared_type: str) -> str:
    extension = _MIME_TYPES.guess_extension(declared_type)
    if extension:
        return extension
    return ".txt" if declared_type.split("/")[0] in ("text", "message") else ".bin"


def _guess_type(filename: str | None) -> str:
    guessed = _MIME_TYPES.guess_type(filename)[0] if filename else None
    return guessed or "application/octet-stream"


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _squash(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail[:120]}" if detail else type(exc).__name__
